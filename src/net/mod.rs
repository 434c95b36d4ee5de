//! Connections as the relay sees them: a TCP socket, or a TCP socket with rustls run inline
//! on it ([`inline`]). Both give the non-blocking, readiness-based calls the relay is built on.

pub(crate) mod inline;
pub(crate) mod tcp;
pub(crate) mod tls;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use inline::TlsConn;

/// A client or server connection.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    /// TLS, decrypted and encrypted inside the calls.
    Tls(Box<TlsConn>),
    /// Taken away for a TLS handshake that failed: every call fails.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr, $closed:expr) => {
        match $self {
            Conn::Tcp($s) => $e,
            Conn::Tls($s) => $e,
            Conn::Closed => $closed,
        }
    };
    ($self:expr, $s:ident => $e:expr) => {
        each!($self, $s => $e, Err(closed()))
    };
}

/// A non-blocking read of at most `room` bytes by `read`. When it returns less than there was
/// room for, the socket is drained: its read readiness is dropped right away instead of being
/// learnt from a failed read, which saves a system call per request. The readiness dropped is
/// the one observed before the read (`try_io`), so data that arrives meanwhile still wakes
/// the task.
pub(crate) fn read_drained(
    tcp: &TcpStream,
    room: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut got = None;
    let outcome = tcp.try_io(Interest::READABLE, || {
        let n = read()?;
        got = Some(n);
        if n > 0 && n < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match got {
        Some(n) => Ok(n),
        None => outcome.map(|()| 0),
    }
}

impl Conn {
    /// A connection whose TLS handshake is done: rustls goes on inline on the socket.
    pub(crate) fn tls(tcp: TcpStream, tls: impl Into<rustls::Connection>) -> Conn {
        Conn::Tls(Box::new(TlsConn::new(tcp, tls)))
    }
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read_ready(cx), Poll::Ready(Err(closed())))
    }
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_write_ready(cx), Poll::Ready(Err(closed())))
    }
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.readable().await,
            Conn::Tls(s) => std::future::poll_fn(|cx| s.poll_read_ready(cx)).await,
            Conn::Closed => Err(closed()),
        }
    }
    /// Send output a TLS connection still holds, registering for write readiness when the
    /// socket is full (Ready at once for TCP, whose writes keep nothing back). Every wait on
    /// a connection calls it, so that no answer stays behind in rustls.
    pub(crate) fn poll_send_pending(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Conn::Tls(s) => s.poll_write_ready(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(buf))
    }
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.try_read(buf))
    }
    /// A non-blocking read into `buf`'s spare room (see [`read_drained`]).
    pub(crate) fn read_some(&self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => {
                let room = buf.capacity() - buf.len();
                read_drained(s, room, || s.try_read_buf(buf))
            }
            // Its raw reads are drained reads themselves; plaintext may wait in rustls while
            // the socket has nothing.
            Conn::Tls(s) => s.try_read_buf(buf),
            Conn::Closed => Err(closed()),
        }
    }
    /// Write all of `buf` and see it sent: for TLS, until rustls holds none of it (the
    /// connection may be dropped next); for TCP, `write_all`.
    pub(crate) async fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.write_all(buf).await?;
        self.flush().await
    }
    /// End the session with `last` (a FATAL, or nothing), sent within a second, then for TLS
    /// close_notify: a strict TLS client (rustls) takes an end without it as an attack. The
    /// drop closes the socket.
    pub(crate) async fn close(&mut self, last: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            if !last.is_empty() {
                self.send_all(last).await?;
            }
            if self.is_tls() {
                self.shutdown().await?;
            }
            io::Result::Ok(())
        })
        .await;
    }
    /// Whether the bytes go through TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => s.poll_read(cx, buf),
            Conn::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => s.poll_write(cx, buf),
            Conn::Closed => Poll::Ready(Err(closed())),
        }
    }
    /// Sends what a TLS connection still holds (see [`Conn::poll_send_pending`]).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => s.poll_write_ready(cx),
            Conn::Closed => Poll::Ready(Err(closed())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => s.poll_shutdown(cx),
            Conn::Closed => Poll::Ready(Ok(())),
        }
    }
}
