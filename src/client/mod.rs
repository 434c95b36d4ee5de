//! Clients: the accept loop and one task per client (login, then the request loop).

mod cancel;
mod login;
mod relay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::{ScramSecret, Secret};
use crate::config::Config;
use crate::error::Error;
use crate::pool::Registry;
use crate::proto::backend;
pub use cancel::{CancelKey, CancelMap};

/// What every client task shares: the config snapshot, secrets, pools, cancel keys, counters.
pub struct Shared {
    pub config: Arc<Config>,
    /// Users' secrets, parsed once at load (plaintext passwords get their SCRAM keys here).
    pub secrets: HashMap<String, Secret>,
    pub registry: Arc<Registry>,
    pub cancels: Arc<CancelMap>,
    /// Logged-in and logging-in clients.
    pub clients: AtomicUsize,
    next_client: AtomicU64,
    /// Key for the fake SCRAM salts shown to unknown users (stable per user name, like
    /// Postgres' mock authentication, so two attempts cannot tell a user does not exist).
    mock_salt_key: [u8; 32],
}

impl Shared {
    /// Build the shared state from a validated config.
    pub fn new(config: Arc<Config>) -> Shared {
        let secrets = config
            .users
            .iter()
            .filter_map(|(name, u)| {
                let s = Secret::parse(u.password.as_deref()?).ok()?;
                Some((name.clone(), s))
            })
            .collect();
        Shared {
            config,
            secrets,
            registry: Arc::new(Registry::new()),
            cancels: Arc::new(CancelMap::default()),
            clients: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            mock_salt_key: rand::random(),
        }
    }

    /// A SCRAM secret for a user that does not exist: a salt derived from the name, keys
    /// nobody can match.
    pub fn fake_scram_secret(&self, user: &str) -> ScramSecret {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.mock_salt_key).expect("any key length");
        mac.update(user.as_bytes());
        let salt = mac.finalize().into_bytes()[..16].to_vec();
        ScramSecret {
            iterations: 4096,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

/// Accept clients forever, one task each.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let count = ClientCount::new(shared.clone());
        if shared.config.general.tcp_nodelay {
            let _ = stream.set_nodelay(true);
        }
        if shared.config.general.tcp_keepalive {
            let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        }
        tokio::spawn(login_task(stream, peer, count));
    }
}

/// Counts a client in `Shared::clients` for as long as it lives.
pub(crate) struct ClientCount(Arc<Shared>);

impl ClientCount {
    fn new(shared: Arc<Shared>) -> Self {
        shared.clients.fetch_add(1, Ordering::Relaxed);
        ClientCount(shared)
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Log a client in, then hand it to a task of its own for the request loop: the login's
/// larger state is freed, and an idle client's task holds only the request loop's state.
async fn login_task(mut stream: TcpStream, peer: std::net::SocketAddr, count: ClientCount) {
    let shared = &count.0;
    let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
    let session = match login::login(&mut stream, shared).await {
        Ok(Some(s)) => s,
        Ok(None) => return, // cancel request, or the client left before logging in
        Err(e) => {
            tracing::info!(client = id, %peer, "client login failed: {e}");
            send_fatal(&mut stream, &e).await;
            return;
        }
    };
    tracing::info!(client = id, %peer, db = %session.pool.database, user = %session.pool.user,
        "client login");
    // The request loop's future is spawned as it is (no wrapping async block, which would
    // hold a second copy of it): an idle client costs one small task.
    let relay = relay::Relay::new(stream, session, id, count);
    tokio::spawn(relay::run(relay));
}

/// Send a FATAL ErrorResponse for `e` (the server's own body when it came from Postgres).
pub(crate) async fn send_fatal(stream: &mut TcpStream, e: &Error) {
    let mut out = BytesMut::new();
    match e {
        Error::Server { raw, .. } => backend::message(&mut out, b'E', |b| b.extend_from_slice(raw)),
        _ => {
            let (code, msg) = e.sqlstate();
            backend::error_response(&mut out, "FATAL", code, &msg);
        }
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&out)).await;
}
