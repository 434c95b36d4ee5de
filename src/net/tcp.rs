//! TCP socket options for both sides, with PgBouncer's names: Nagle off, keepalive probes and
//! TCP_USER_TIMEOUT, so a peer that vanished without a RST (a cloud failover, a dropped NAT
//! flow) is noticed in seconds rather than after the kernel's two hours.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::config::General;

/// The options applied to every client and server socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpOptions {
    pub(crate) nodelay: bool,
    pub(crate) keepalive: bool,
    /// Idle time before the first probe (`None`: the kernel's).
    pub(crate) keepidle: Option<Duration>,
    /// Time between probes.
    pub(crate) keepintvl: Option<Duration>,
    /// Probes unanswered before the connection is dropped.
    pub(crate) keepcnt: Option<u32>,
    /// Longest time sent data may stay unacknowledged (also bounds keepalive probing).
    pub(crate) user_timeout: Option<Duration>,
}

impl TcpOptions {
    /// From `[general]`: tcp_nodelay, tcp_keepalive, tcp_keepidle, tcp_keepintvl, tcp_keepcnt
    /// (0: the kernel's) and tcp_user_timeout (milliseconds, as in PgBouncer; 0: the kernel's).
    pub(crate) fn from_general(g: &General) -> TcpOptions {
        let secs = |s: usize| (s > 0).then(|| Duration::from_secs(s as u64));
        TcpOptions {
            nodelay: g.tcp_nodelay,
            keepalive: g.tcp_keepalive,
            keepidle: secs(g.tcp_keepidle),
            keepintvl: secs(g.tcp_keepintvl),
            keepcnt: (g.tcp_keepcnt > 0).then(|| g.tcp_keepcnt.min(u32::MAX as usize) as u32),
            user_timeout: (g.tcp_user_timeout > 0)
                .then(|| Duration::from_millis(g.tcp_user_timeout as u64)),
        }
    }

    /// Set them on `stream`. Failures are logged, not fatal: a socket without an option still
    /// works.
    pub(crate) fn apply(&self, stream: &TcpStream) {
        if let Err(e) = self.try_apply(stream) {
            tracing::debug!("TCP socket options: {e}");
        }
    }

    fn try_apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(self.nodelay)?;
        let sock = SockRef::from(stream);
        if self.keepalive {
            let mut ka = TcpKeepalive::new();
            if let Some(t) = self.keepidle {
                ka = ka.with_time(t);
            }
            if let Some(t) = self.keepintvl {
                ka = ka.with_interval(t);
            }
            if let Some(n) = self.keepcnt {
                ka = ka.with_retries(n);
            }
            sock.set_tcp_keepalive(&ka)?;
        }
        if let Some(t) = self.user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_reach_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let opts = TcpOptions {
            nodelay: true,
            keepalive: true,
            keepidle: Some(Duration::from_secs(7)),
            keepintvl: Some(Duration::from_secs(3)),
            keepcnt: Some(4),
            user_timeout: Some(Duration::from_millis(2500)),
        };
        opts.try_apply(&s).unwrap();
        let sock = SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(sock.keepalive_retries().unwrap(), 4);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert!(s.nodelay().unwrap());
    }
}
