//! TLS run inline on the connection's own socket: rustls encrypts and decrypts inside the
//! relay's non-blocking calls, so a TLS connection costs no extra task, socket or copy.
//!
//! The calls keep a TCP socket's meaning. A read decrypts what the socket has and returns
//! plaintext, or WouldBlock. A write takes plaintext once everything written before has gone,
//! and sends what the socket takes; the rest goes at the next call on the connection, which
//! every wait makes (`Conn::poll_send_pending`, and the readiness calls).

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP socket and the rustls connection that runs over it. The lock is taken only inside
/// the non-blocking calls, never across an await; one task drives a connection, so it is
/// never contended.
pub(crate) struct TlsConn {
    tcp: TcpStream,
    tls: Mutex<rustls::Connection>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("tcp", &self.tcp).finish()
    }
}

/// Raw bytes for rustls, read without blocking: a drained read ([`super::read_drained`]), as
/// for plaintext.
struct RawRead<'a>(&'a TcpStream);

impl Read for RawRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let sock = socket2::SockRef::from(self.0);
        super::read_drained(self.0, buf.len(), || (&*sock).read(buf))
    }
}

/// Raw bytes from rustls, written without blocking, many records in one system call.
struct RawWrite<'a>(&'a TcpStream);

impl Write for RawWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block() -> io::Error {
    ErrorKind::WouldBlock.into()
}

impl TlsConn {
    pub(crate) fn new(tcp: TcpStream, tls: impl Into<rustls::Connection>) -> Self {
        TlsConn {
            tcp,
            tls: Mutex::new(tls.into()),
        }
    }

    /// Send what rustls holds, as far as the socket takes it: true when nothing is left.
    fn send(&self, tls: &mut rustls::Connection) -> io::Result<bool> {
        while tls.wants_write() {
            match tls.write_tls(&mut RawWrite(&self.tcp)) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Send everything rustls holds; Pending (the task registered for write readiness)
    /// while the socket is full.
    fn poll_send(
        &self,
        tls: &mut rustls::Connection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match self.send(tls) {
                Ok(true) => return Poll::Ready(Ok(())),
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match self.tcp.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
    }

    /// Decrypt until there is plaintext, or the peer's end, to report; WouldBlock when the
    /// socket has no more and no whole record has come.
    fn fill(&self, tls: &mut rustls::Connection) -> io::Result<()> {
        loop {
            match tls.reader().fill_buf() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: an end like any other
                // (clients often do; a truncated message is caught by the protocol).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            tls.read_tls(&mut RawRead(&self.tcp))?;
            if let Err(e) = tls.process_new_packets() {
                // The alert rustls queued tells the peer why.
                let _ = self.send(tls);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            // Key updates and alerts have answers.
            self.send(tls)?;
        }
    }

    /// Whether rustls has plaintext or the peer's end to give (no system call).
    fn has_input(tls: &mut rustls::Connection) -> bool {
        !matches!(tls.reader().fill_buf(), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tls = self.tls.lock();
        self.fill(&mut tls)?;
        match tls.reader().read(buf) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }

    /// Plaintext into `buf`'s spare room, as much as rustls has decrypted.
    pub(crate) fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        let mut tls = self.tls.lock();
        self.fill(&mut tls)?;
        let mut reader = tls.reader();
        let mut total = 0;
        while buf.has_remaining_mut() {
            let chunk = match reader.fill_buf() {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::UnexpectedEof) => {
                    break
                }
                Err(e) => return Err(e),
            };
            let n = chunk.len().min(buf.chunk_mut().len());
            buf.put_slice(&chunk[..n]);
            reader.consume(n);
            total += n;
        }
        Ok(total)
    }

    /// Plaintext taken once all earlier output has gone (else WouldBlock, the socket being
    /// full), encrypted and sent as far as the socket takes it.
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tls = self.tls.lock();
        if !self.send(&mut tls)? {
            return Err(would_block());
        }
        let n = tls.writer().write(buf)?;
        self.send(&mut tls)?;
        Ok(n)
    }

    /// Ready when there is plaintext (or the end) to read, or the socket has bytes. Output
    /// still pending is sent first.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut tls = self.tls.lock();
        // What came is read first: a peer's last words (a FATAL) before its closed socket.
        if Self::has_input(&mut tls) {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(Err(e)) = self.poll_send(&mut tls, cx) {
            return Poll::Ready(Err(e));
        }
        self.tcp.poll_read_ready(cx)
    }

    /// Ready when plaintext can be written: every earlier byte has gone.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(&mut self.tls.lock(), cx)
    }

    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            {
                let mut tls = self.tls.lock();
                match self.fill(&mut tls) {
                    Ok(()) => {
                        let mut reader = tls.reader();
                        return Poll::Ready(match reader.fill_buf() {
                            Ok(chunk) => {
                                let n = chunk.len().min(buf.remaining());
                                buf.put_slice(&chunk[..n]);
                                reader.consume(n);
                                Ok(())
                            }
                            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(()),
                            Err(e) => Err(e),
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            std::task::ready!(self.poll_read_ready(cx))?;
        }
    }

    pub(crate) fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.try_write(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
            std::task::ready!(self.poll_write_ready(cx))?;
        }
    }

    /// close_notify, then the socket's write side.
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let tls = self.tls.get_mut();
            if !tls.is_handshaking() {
                tls.send_close_notify();
            }
        }
        std::task::ready!(self.poll_send(&mut self.tls.lock(), cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
