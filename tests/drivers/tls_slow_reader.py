"""A TLS client that asks for a large answer and then reads none of it for a while, so the
pooler's sends to it fill the socket and wait; then it reads everything. Prints the DataRows
and payload bytes it got, once the pooler has closed TLS cleanly after Terminate. Standard
library only; the pooler must use auth_type = trust.

    python3 tls_slow_reader.py PORT USER DBNAME ROWS WIDTH PAUSE_SECONDS
"""
import socket
import ssl
import struct
import sys
import time

port, user, db = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rows, width, pause = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])

sock = socket.create_connection(("127.0.0.1", port), timeout=30)
sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
assert sock.recv(1) == b"S", "no TLS"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
tls = ctx.wrap_socket(sock, suppress_ragged_eofs=False)

buf = bytearray()


def message():
    """One backend message: (tag, body)."""
    while True:
        if len(buf) >= 5:
            (length,) = struct.unpack("!i", buf[1:5])
            if len(buf) >= 1 + length:
                tag, body = bytes(buf[:1]), bytes(buf[5 : 1 + length])
                del buf[: 1 + length]
                return tag, body
        chunk = tls.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buf.extend(chunk)


def until_ready():
    rows_seen, payload = 0, 0
    while True:
        tag, body = message()
        if tag == b"E":
            sys.exit("error: %r" % body)
        if tag == b"D":
            rows_seen += 1
            (n,) = struct.unpack("!h", body[:2])
            for _ in range(n):
                (size,) = struct.unpack("!i", body[2:6])
                payload += size
        if tag == b"Z":
            return rows_seen, payload


params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
tls.sendall(struct.pack("!ii", len(params) + 8, 196608) + params)
until_ready()
query = "select repeat('x', %d) from generate_series(1, %d)" % (width, rows)
body = query.encode() + b"\0"
tls.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
time.sleep(pause)
got = until_ready()
tls.sendall(b"X\0\0\0\4")
# The pooler ends TLS cleanly (close_notify): an end without it raises SSLEOFError here.
assert tls.recv(1) == b"", "data after Terminate"
print(got[0], got[1])
tls.close()
