//! Raw protocol clients: write bytes by hand, parse what comes back.
//!
//! The functions work on a bare `TcpStream` and read exactly one message at a time; [`Raw`]
//! buffers what it reads, so it can also wait for a message that may never come.

use std::io::ErrorKind;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message: its tag and its body.
pub type Msg = (u8, Vec<u8>);

pub const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Messages to send.

/// A NUL-terminated string.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// An 8-byte request (SSLRequest, GSSENCRequest).
pub fn request(code: i32) -> Vec<u8> {
    let mut v = 8u32.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v
}

/// A StartupMessage with the given protocol code (196608 = 3.0).
pub fn startup_v(code: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut v = pgmux::proto::startup::build(params);
    v[4..8].copy_from_slice(&code.to_be_bytes());
    v
}

pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    pgmux::proto::startup::build(params)
}

/// A CancelRequest.
pub fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    let mut b = 16u32.to_be_bytes().to_vec();
    b.extend(80877102i32.to_be_bytes());
    b.extend(pid.to_be_bytes());
    b.extend(secret.to_be_bytes());
    b
}

/// A tagged message.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A simple Query.
pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

/// Parse of `sql` as statement `name`, no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend(0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Describe of statement `name`.
pub fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    b.extend(cstr(name));
    msg(b'D', &b)
}

/// Bind of `statement` to `portal`, no parameters, text results.
pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(statement));
    b.extend(0i16.to_be_bytes()); // parameter formats
    b.extend(0i16.to_be_bytes()); // parameters
    b.extend(0i16.to_be_bytes()); // result formats
    msg(b'B', &b)
}

/// Execute of `portal`, all rows.
pub fn execute(portal: &str) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(0i32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    msg(b'H', &[])
}

// ---------------------------------------------------------------------------------------------
// What comes back.

/// The tags of messages, as a string.
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.0 as char).collect()
}

/// (SQLSTATE, message, severity) of an ErrorResponse body.
pub fn fields(body: &[u8]) -> (String, String, String) {
    pgmux::proto::backend::error_fields(body)
}

/// The first ErrorResponse among `msgs`.
pub fn error_of(msgs: &[Msg]) -> Option<(String, String, String)> {
    msgs.iter().find(|m| m.0 == b'E').map(|m| fields(&m.1))
}

/// The Authentication request code of an 'R' message.
pub fn auth_code(m: &Msg) -> i32 {
    assert_eq!(
        m.0, b'R',
        "expected an authentication request, got '{}'",
        m.0 as char
    );
    i32::from_be_bytes([m.1[0], m.1[1], m.1[2], m.1[3]])
}

/// The text of a DataRow's first column.
pub fn data_row_first(body: &[u8]) -> String {
    let len = i32::from_be_bytes(body[2..6].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&body[6..6 + len]).into_owned()
}

/// ParameterStatus messages as (name, value).
pub fn parameter_status(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.0 == b'S')
        .map(|m| {
            let (k, v) =
                pgmux::server::params::parse_parameter_status(&m.1).expect("ParameterStatus");
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A bare socket.

/// Connect to 127.0.0.1:`port` (pgmux, or Postgres itself).
pub async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

pub async fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.expect("write to pgmux");
}

/// Connect and send a StartupMessage with `params`.
pub async fn start(port: u16, params: &[(&str, &str)]) -> TcpStream {
    let mut s = connect(port).await;
    send(&mut s, &startup(params)).await;
    s
}

/// Connect and send a StartupMessage with protocol code `code` and `params`.
pub async fn start_v(port: u16, code: i32, params: &[(&str, &str)]) -> TcpStream {
    let mut s = connect(port).await;
    send(&mut s, &startup_v(code, params)).await;
    s
}

/// Connect, send a StartupMessage with `params`, and read the first answer (the
/// authentication request, or an error).
pub async fn auth_request(port: u16, params: &[(&str, &str)]) -> (TcpStream, Msg) {
    let mut s = start(port, params).await;
    let m = read_msg(&mut s).await.expect("auth request");
    (s, m)
}

/// Send an 8-byte request (SSLRequest, GSSENCRequest) and read the one-byte answer.
pub async fn ask(s: &mut TcpStream, code: i32) -> u8 {
    send(s, &request(code)).await;
    read_byte(s).await
}

/// One byte (the answer to SSLRequest / GSSENCRequest).
pub async fn read_byte(s: &mut TcpStream) -> u8 {
    let mut b = [0u8; 1];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .expect("timed out waiting for one byte")
        .expect("read one byte");
    b[0]
}

/// One message, or `None` at end of stream (or reset).
pub async fn read_msg(s: &mut TcpStream) -> Option<Msg> {
    let mut hdr = [0u8; 5];
    match tokio::time::timeout(WAIT, s.read_exact(&mut hdr))
        .await
        .expect("timed out waiting for a message")
    {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return None
        }
        Err(e) => panic!("read from pgmux: {e}"),
    }
    let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    assert!(
        (4..1 << 24).contains(&len),
        "bad length {len} for '{}'",
        hdr[0] as char
    );
    let mut body = vec![0u8; len - 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut body))
        .await
        .expect("timed out reading a message body")
        .expect("read a message body");
    Some((hdr[0], body))
}

/// Messages up to and including ReadyForQuery; panics on an ErrorResponse or EOF.
pub async fn read_until_ready(s: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let m = read_msg(s)
            .await
            .unwrap_or_else(|| panic!("closed before ReadyForQuery; got {}", tags(&out)));
        let tag = m.0;
        if tag == b'E' {
            panic!("unexpected error: {:?}", fields(&m.1));
        }
        out.push(m);
        if tag == b'Z' {
            return out;
        }
    }
}

/// Messages up to and including ReadyForQuery, errors included; panics on EOF.
pub async fn read_through_ready(s: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        let m = read_msg(s).await.expect("reply");
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Every message until the connection closes.
pub async fn read_to_close(s: &mut TcpStream) -> Vec<Msg> {
    let mut out = Vec::new();
    while let Some(m) = read_msg(s).await {
        out.push(m);
    }
    out
}

/// Send a simple Query and read its answer up to ReadyForQuery (no errors allowed).
pub async fn simple_query(s: &mut TcpStream, sql: &str) -> Vec<Msg> {
    send(s, &query(sql)).await;
    read_until_ready(s).await
}

/// Connect, send the start-up packet `startup`, and read the answer up to ReadyForQuery (a
/// login that needs no password).
pub async fn startup_reply(port: u16, startup: &[u8]) -> (TcpStream, Vec<Msg>) {
    let mut s = connect(port).await;
    send(&mut s, startup).await;
    let msgs = read_until_ready(&mut s).await;
    (s, msgs)
}

/// Connect and log in (trust config: no password exchange), returning the login messages.
pub async fn login_trust(port: u16, params: &[(&str, &str)]) -> (TcpStream, Vec<Msg>) {
    let (s, msgs) = startup_reply(port, &startup(params)).await;
    assert_eq!(auth_code(&msgs[0]), 0, "trust sends AuthenticationOk first");
    (s, msgs)
}

/// [`login_trust`] on a connection already open (another address than 127.0.0.1).
pub async fn login_trust_on(mut s: TcpStream, params: &[(&str, &str)]) -> (TcpStream, Vec<Msg>) {
    send(&mut s, &startup(params)).await;
    let msgs = read_until_ready(&mut s).await;
    assert_eq!(auth_code(&msgs[0]), 0, "trust sends AuthenticationOk first");
    (s, msgs)
}

/// Start SCRAM-SHA-256 with `password` after an AuthenticationSASL request: send the
/// SASLInitialResponse and read the server's answer (SASLContinue, or an error).
pub async fn scram_begin(s: &mut TcpStream, password: &str) -> (ScramSha256, Msg) {
    let sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut out = BytesMut::new();
    frontend::sasl_initial_response("SCRAM-SHA-256", sc.message(), &mut out).unwrap();
    send(s, &out).await;
    let m = read_msg(s).await.expect("SASLContinue");
    (sc, m)
}

/// The server-first-message of a SASLContinue, as text.
pub fn server_first(m: &Msg) -> String {
    String::from_utf8(m.1[4..].to_vec()).unwrap()
}

/// Take in the server-first-message (the body of SASLContinue after its code) and send the
/// client-final-message with the proof.
pub async fn scram_proof(s: &mut TcpStream, sc: &mut ScramSha256, server_first: &[u8]) {
    sc.update(server_first).expect("server-first-message");
    let mut out = BytesMut::new();
    frontend::sasl_response(sc.message(), &mut out).unwrap();
    send(s, &out).await;
}

/// Do SCRAM-SHA-256 after an AuthenticationSASL request; returns the messages after
/// AuthenticationSASLFinal up to ReadyForQuery.
pub async fn scram(s: &mut TcpStream, password: &str) -> Vec<Msg> {
    let (mut sc, m) = scram_begin(s, password).await;
    if m.0 == b'E' {
        panic!("SCRAM failed: {:?}", fields(&m.1));
    }
    assert_eq!(auth_code(&m), 11);
    scram_proof(s, &mut sc, &m.1[4..]).await;
    let m = read_msg(s).await.expect("SASLFinal");
    if m.0 == b'E' {
        panic!("SCRAM failed: {:?}", fields(&m.1));
    }
    assert_eq!(auth_code(&m), 12);
    sc.finish(&m.1[4..]).expect("server signature verifies");
    read_until_ready(s).await
}

// ---------------------------------------------------------------------------------------------
// A buffered client.

/// A raw client that buffers what it reads.
pub struct Raw {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

/// The first complete message in `buf`, taken out of it.
fn take_msg(buf: &mut Vec<u8>) -> Option<Msg> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
    if buf.len() <= len {
        return None;
    }
    let m: Vec<u8> = buf.drain(..len + 1).collect();
    Some((m[0], m[5..].to_vec()))
}

impl Raw {
    /// Log in as app to `db` (trust) and return the client and its BackendKeyData.
    pub async fn login(port: u16, db: &str) -> (Raw, i32, i32) {
        let (s, msgs) = login_trust(port, &[("user", "app"), ("database", db)]).await;
        let (mut pid, mut secret) = (0, 0);
        for (tag, body) in msgs {
            match tag {
                b'R' => assert_eq!(&body[..4], &[0, 0, 0, 0], "trust login expected"),
                b'S' | b'Z' => {}
                b'K' => {
                    pid = i32::from_be_bytes(body[0..4].try_into().unwrap());
                    secret = i32::from_be_bytes(body[4..8].try_into().unwrap());
                }
                t => panic!(
                    "unexpected '{}' during login: {}",
                    t as char,
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        (Raw { s, buf: Vec::new() }, pid, secret)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next message, or None if nothing arrives within `wait`.
    pub async fn try_read(&mut self, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = take_msg(&mut self.buf) {
                return Some(m);
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("pgmux closed the connection"),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("read: {e}"),
            }
        }
    }

    pub async fn read(&mut self) -> Msg {
        self.try_read(WAIT)
            .await
            .expect("no message from pgmux within 5 s")
    }

    /// Messages up to and including the `n`th ReadyForQuery.
    pub async fn read_until_ready(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            let m = self.read().await;
            if m.0 == b'Z' {
                seen += 1;
            }
            out.push(m);
        }
        out
    }

    /// Send a simple Query and read its answer up to ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&query(sql)).await;
        self.read_until_ready(1).await
    }

    /// Send `bytes` in pieces while reading the answer up to the `n`th ReadyForQuery (so a
    /// server that answers early cannot deadlock the test).
    pub async fn send_and_read(&mut self, bytes: &[u8], n: usize) -> Vec<Msg> {
        let Raw { s, buf } = self;
        let (mut rd, mut wr) = s.split();
        let write = async {
            for chunk in bytes.chunks(256 * 1024) {
                wr.write_all(chunk).await.unwrap();
            }
        };
        let read = async {
            let mut got = Vec::new();
            let mut seen = 0;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while seen < n {
                    let Some(m) = take_msg(buf) else { break };
                    if m.0 == b'Z' {
                        seen += 1;
                    }
                    got.push(m);
                }
                if seen == n {
                    break;
                }
                let k = rd.read(&mut chunk).await.unwrap();
                assert!(k > 0, "pgmux closed the connection");
                buf.extend_from_slice(&chunk[..k]);
            }
            got
        };
        let ((), got) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(write, read) })
                .await
                .expect("COPY exchange stalled");
        got
    }
}
