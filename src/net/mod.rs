//! Connections as the relay sees them: a TCP socket, or (for TLS) one end of a Unix socket
//! pair whose other end a bridge task pumps through rustls. Both give the non-blocking,
//! readiness-based calls the relay is built on.

pub(crate) mod tcp;
pub(crate) mod tls;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client or server connection.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    /// The plaintext end of a TLS bridge (see [`tls::bridge`]).
    Bridged(UnixStream),
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
            Conn::Bridged($s) => $e,
            Conn::Closed => $closed,
        }
    };
    ($self:expr, $s:ident => $e:expr) => {
        each!($self, $s => $e, Err(closed()))
    };
}

impl Conn {
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read_ready(cx), Poll::Ready(Err(closed())))
    }
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_write_ready(cx), Poll::Ready(Err(closed())))
    }
    pub(crate) async fn readable(&self) -> io::Result<()> {
        each!(self, s => s.readable().await)
    }
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(buf))
    }
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        each!(self, s => s.try_read(buf))
    }
    pub(crate) fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        each!(self, s => s.try_read_buf(buf))
    }
    pub(crate) fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        each!(self, s => s.try_io(interest, f))
    }
    /// Whether the bytes go through TLS.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Conn::Bridged(_))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf), Poll::Ready(Err(closed())))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf), Poll::Ready(Err(closed())))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_flush(cx), Poll::Ready(Err(closed())))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx), Poll::Ready(Ok(())))
    }
}
