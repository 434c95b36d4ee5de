//! What the admin console and metrics can see of a server while a client owns it: its state,
//! the client it is linked to, and when it was last used, kept in atomics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::SystemTime;

/// A server's state, with PgBouncer's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ServerState {
    Idle = 0,
    Active = 1,
    /// Running server_reset_query or a rollback before going back to the pool.
    Tested = 2,
}

impl ServerState {
    /// The name SHOW SERVERS uses.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ServerState::Idle => "idle",
            ServerState::Active => "active",
            ServerState::Tested => "tested",
        }
    }
}

/// A connected server, as others see it.
#[derive(Debug)]
pub struct ServerInfo {
    pub id: u64,
    /// The configured host it went to.
    pub(crate) host: std::sync::Arc<super::Host>,
    /// The backend's process id (known once it has logged in).
    pid: AtomicI32,
    /// The server's address.
    pub addr: Option<SocketAddr>,
    /// pgmux's end of the connection.
    pub local: Option<SocketAddr>,
    pub(crate) connect_time: SystemTime,
    /// The pool's generation when it connected: older ones close when released
    /// (RECONNECT, or a reload that changed where servers go).
    pub(crate) generation: u64,
    state: AtomicU8,
    /// The client it serves (0: none).
    link: AtomicU64,
    /// When it was last handed to a client, µs since the Unix epoch.
    request_us: AtomicU64,
    /// Prepared statements it holds for clients.
    pub prepared: AtomicU32,
    /// Its TLS protocol, cipher and group (`net::tls::info`; 0: plaintext).
    pub(crate) tls: u64,
}

/// Microseconds since the Unix epoch now.
pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl ServerInfo {
    /// A server that is logging in.
    pub(crate) fn new(
        id: u64,
        host: std::sync::Arc<super::Host>,
        addr: Option<SocketAddr>,
        local: Option<SocketAddr>,
        generation: u64,
        tls: u64,
    ) -> ServerInfo {
        ServerInfo {
            id,
            host,
            pid: AtomicI32::new(0),
            addr,
            local,
            connect_time: SystemTime::now(),
            generation,
            state: AtomicU8::new(ServerState::Active as u8),
            link: AtomicU64::new(0),
            request_us: AtomicU64::new(0),
            prepared: AtomicU32::new(0),
            tls,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    pub(crate) fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            0 => ServerState::Idle,
            2 => ServerState::Tested,
            _ => ServerState::Active,
        }
    }

    pub(crate) fn set_state(&self, s: ServerState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Link to client `client` (0 to unlink), whose request started at `request_us`.
    pub(crate) fn link_to(&self, client: u64, request_us: u64) {
        self.link.store(client, Ordering::Relaxed);
        if client != 0 {
            self.request_us.store(request_us, Ordering::Relaxed);
        }
    }

    pub fn link(&self) -> u64 {
        self.link.load(Ordering::Relaxed)
    }

    pub(crate) fn request_us(&self) -> u64 {
        self.request_us.load(Ordering::Relaxed)
    }
}
