//! What every task of a pgmux process shares: the live config and secrets (swapped whole on
//! reload), the pools, cancel keys, the client list, process counters and the run state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::auth::{ScramSecret, Secret};
use crate::cancel::CancelMap;
use crate::clients::ClientList;
use crate::config::Config;
use crate::net::tls::{self, TlsError};
use crate::pool::Registry;

/// The config in force, the secrets parsed from it and its TLS set-up, replaced together on
/// reload (certificates are read again then).
pub struct Live {
    pub config: Arc<Config>,
    /// Users' secrets, parsed once per load (plaintext passwords' SCRAM verifiers are
    /// derived after it, off the runtime: [`Live::derive_verifiers`]).
    pub secrets: HashMap<String, Secret>,
    /// TLS toward clients.
    pub(crate) client_tls: tls::ClientSide,
    /// TLS toward servers.
    pub(crate) server_tls: tls::ServerSide,
    /// auth_hba_file's rules, when auth_type = "hba".
    pub hba: Vec<crate::auth::hba::Rule>,
}

impl Live {
    /// Derive every plaintext password's SCRAM verifier (PBKDF2) once per load. At start-up
    /// (`now`: nothing is served yet, so nothing can stall) before listening; on a reload on
    /// one blocking thread in the background, so no runtime thread runs them, and a login
    /// that comes first derives its own off the runtime too (`Secret::prepare_scram`).
    /// Without a runtime (a config checked offline) a reload derives nothing ahead.
    fn derive_verifiers(self, now: bool) -> Live {
        let plain: Vec<Secret> = self
            .secrets
            .values()
            .filter(|s| !s.scram_derived())
            .cloned()
            .collect();
        if now {
            for s in &plain {
                s.scram();
            }
        } else if !plain.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::spawn_blocking(move || {
                for s in plain {
                    s.scram();
                }
            });
        }
        self
    }
}

/// Why the files a config names (certificates, auth_file) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("general.auth_file: cannot read {path}: {source}")]
    AuthFileRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("general.auth_file: {path}: {}", .problems.join("; "))]
    AuthFile { path: String, problems: Vec<String> },
    #[error("general.auth_hba_file: cannot read {path}: {source}")]
    HbaRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("general.auth_hba_file: {path}: {}", .problems.join("; "))]
    Hba { path: String, problems: Vec<String> },
}

/// The rules of auth_hba_file.
fn hba_rules(path: &str) -> Result<Vec<crate::auth::hba::Rule>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::HbaRead {
        path: path.into(),
        source,
    })?;
    crate::auth::hba::parse(&text).map_err(|ps| LoadError::Hba {
        path: path.into(),
        problems: ps.iter().map(|p| p.to_string()).collect(),
    })
}

/// The secrets of `auth_file`, by user.
fn auth_file_secrets(path: &str) -> Result<HashMap<String, Secret>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::AuthFileRead {
        path: path.into(),
        source,
    })?;
    let entries = crate::auth::userlist::parse(&text).map_err(|ps| LoadError::AuthFile {
        path: path.into(),
        problems: ps.iter().map(|p| p.to_string()).collect(),
    })?;
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (user, secret) in entries {
        match Secret::parse(&secret) {
            // Never the secret itself in a message.
            Err(e) => problems.push(format!("user {user:?}: {e}")),
            Ok(s) => {
                out.insert(user, s);
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(LoadError::AuthFile {
            path: path.into(),
            problems,
        })
    }
}

impl Live {
    /// Parse the secrets of a validated config (its `[users]` and its auth_file) and read its
    /// certificates.
    pub fn new(config: Arc<Config>) -> Result<Live, LoadError> {
        let mut secrets = match &config.general.auth_file {
            Some(path) => auth_file_secrets(path)?,
            None => HashMap::new(),
        };
        for (name, u) in &config.users {
            if let Some(s) = u.password.as_deref().and_then(|p| Secret::parse(p).ok()) {
                secrets.insert(name.clone(), s);
            }
        }
        let hba = match (&config.general.auth_hba_file, config.general.auth_type) {
            (Some(path), crate::config::AuthType::Hba) => hba_rules(path)?,
            _ => Vec::new(),
        };
        Ok(Live {
            hba,
            client_tls: tls::client_side(&config.general)?,
            server_tls: tls::server_side(&config.general)?,
            config,
            secrets,
        })
    }
}

/// Why a client login failed, for the login failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginFailure {
    /// Wrong password or unknown user (the same answer, so users cannot be enumerated).
    Auth,
    UnknownDatabase,
    /// max_client_conn reached.
    TooManyClients,
    /// The database is disabled (DISABLE) or pgmux is shutting down.
    NotAccepting,
    /// Not allowed on the admin console.
    AdminDenied,
    /// A malformed start-up or authentication message.
    Protocol,
    /// client_login_timeout.
    Timeout,
    /// No server could be logged in for the first client of a pool.
    Server,
    Other,
}

impl LoginFailure {
    pub(crate) const ALL: [LoginFailure; 9] = [
        LoginFailure::Auth,
        LoginFailure::UnknownDatabase,
        LoginFailure::TooManyClients,
        LoginFailure::NotAccepting,
        LoginFailure::AdminDenied,
        LoginFailure::Protocol,
        LoginFailure::Timeout,
        LoginFailure::Server,
        LoginFailure::Other,
    ];

    /// The `reason` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LoginFailure::Auth => "auth_failed",
            LoginFailure::UnknownDatabase => "unknown_database",
            LoginFailure::TooManyClients => "max_client_conn",
            LoginFailure::NotAccepting => "not_accepting",
            LoginFailure::AdminDenied => "admin_denied",
            LoginFailure::Protocol => "protocol",
            LoginFailure::Timeout => "login_timeout",
            LoginFailure::Server => "server_error",
            LoginFailure::Other => "other",
        }
    }
}

/// Whether pgmux is serving, draining or stopping.
#[derive(Default)]
pub struct RunState {
    /// Stop accepting; connected clients go on until they leave or shutdown_timeout.
    shutting_down: AtomicBool,
    /// Woken when a shutdown or a reload is asked for.
    pub changed: Notify,
    /// A RELOAD or SHUTDOWN asked for by the admin console (handled by the process owner).
    pub requests: Mutex<Vec<Request>>,
    /// When a drain that closes clients at their boundaries began (SIGTERM with
    /// shutdown_clients = "boundary").
    drain_began: Mutex<Option<std::time::Instant>>,
}

/// How long a drain waits for clients to leave when idle or checked before it also closes
/// them at their next transaction boundary (a pool that neither checks its connections nor
/// lets them rest would lose a request either way).
pub(crate) const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the admin console asks of the process owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SHUTDOWN: exit now.
    Shutdown,
    /// SHUTDOWN WAIT_FOR_CLIENTS: stop accepting, exit when the clients are gone.
    ShutdownWaitForClients,
    /// SHUTDOWN WAIT_FOR_SERVERS: stop accepting, pause, exit when every server is released.
    ShutdownWaitForServers,
}

impl RunState {
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A drain that closes transaction- and statement-mode clients at their boundaries
    /// begins now.
    pub(crate) fn begin_drain(&self) {
        self.drain_began
            .lock()
            .get_or_insert_with(std::time::Instant::now);
    }

    /// Draining: `Some(now)`, where `now` says the grace is over (clients go at their next
    /// transaction boundary too).
    pub(crate) fn drain_phase(&self) -> Option<bool> {
        let began = (*self.drain_began.lock())?;
        Some(began.elapsed() >= DRAIN_GRACE)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Ask the process owner for something.
    pub fn request(&self, r: Request) {
        self.requests.lock().push(r);
        self.changed.notify_waiters();
    }
}

/// What every client task shares.
pub struct Shared {
    live: ArcSwap<Live>,
    /// The config file RELOAD and SIGHUP read (none when started from a config in memory).
    pub(crate) config_path: Mutex<Option<PathBuf>>,
    pub registry: Arc<Registry>,
    pub(crate) cancels: Arc<CancelMap>,
    pub clients: Arc<ClientList>,
    /// Client login failures, by [`LoginFailure`] in `ALL` order.
    login_failures: [AtomicU64; 9],
    pub run: RunState,
    pub started: Instant,
    /// Key for the fake SCRAM salts shown to unknown users (stable per user name, like
    /// Postgres' mock authentication, so two attempts cannot tell a user does not exist).
    mock_salt_key: [u8; 32],
    /// auth_query's answers, kept for auth_query_cache_ttl (emptied on reload).
    pub auth_cache: crate::auth::query::Cache,
    /// Admin console logins and queries: the `pgbouncer` database's row in SHOW STATS.
    pub(crate) console_logins: AtomicU64,
    pub(crate) console_queries: AtomicU64,
}

impl Shared {
    /// Build the shared state from a validated config (its certificates are read here).
    pub fn new(config: Arc<Config>) -> Result<Shared, LoadError> {
        Ok(Shared {
            live: ArcSwap::from_pointee(Live::new(config)?.derive_verifiers(true)),
            config_path: Mutex::new(None),
            registry: Arc::new(Registry::new()),
            cancels: Arc::new(CancelMap::default()),
            clients: Arc::new(ClientList::default()),
            login_failures: Default::default(),
            run: RunState::default(),
            started: Instant::now(),
            mock_salt_key: rand::random(),
            auth_cache: Default::default(),
            console_logins: AtomicU64::new(0),
            console_queries: AtomicU64::new(0),
        })
    }

    /// The config and secrets in force now.
    pub(crate) fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// Put a new config in force (validated by the caller) and apply it to the pools. Its
    /// certificates are read first: if they cannot be, nothing changes.
    pub(crate) fn set_config(&self, config: Arc<Config>) -> Result<(), LoadError> {
        let live = Live::new(config)?.derive_verifiers(false);
        self.registry
            .reconfigure(&live.config, &live.server_tls, &live.secrets);
        self.live.store(Arc::new(live));
        self.auth_cache.clear();
        Ok(())
    }

    /// The pool for (database, user) under `live`'s config, created on first use (see
    /// [`Registry::pool`]; `fetched`: the user's secret from auth_query).
    pub fn pool(
        &self,
        live: &Live,
        database: &str,
        user: &str,
        fetched: Option<&Secret>,
    ) -> crate::error::Result<Arc<crate::pool::Pool>> {
        self.registry.pool(
            &live.config,
            &live.server_tls,
            &live.secrets,
            database,
            user,
            fetched,
        )
    }

    /// Count a failed login.
    pub(crate) fn login_failed(&self, why: LoginFailure) {
        let i = LoginFailure::ALL
            .iter()
            .position(|w| *w == why)
            .expect("listed");
        self.login_failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed logins by reason.
    pub(crate) fn login_failures(&self) -> Vec<(LoginFailure, u64)> {
        LoginFailure::ALL
            .iter()
            .zip(&self.login_failures)
            .map(|(w, c)| (*w, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// A SCRAM secret for a user that does not exist: a salt derived from the name, keys
    /// nobody can match.
    pub(crate) fn fake_scram_secret(&self, user: &str) -> ScramSecret {
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
