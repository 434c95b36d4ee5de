//! Test support: a real PostgreSQL started once per test binary (initdb in a temp dir, free
//! port), pgmux started in-process on a free port in front of it, and clients.
//!
//! - [`cluster`]: the shared cluster ([`pg`]) and private ones ([`PrivatePg`]);
//! - [`config`](mod@config): pgmux configs ([`ConfigBuilder`], [`config`], [`custom_config`]);
//! - [`client`]: tokio-postgres clients and queries with time limits;
//! - [`simple`]: first-column queries without a time limit;
//! - [`raw`]: the protocol by hand.

use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pgmux::config::Config;
use tokio_postgres::NoTls;

pub mod client;
pub mod cluster;
pub mod config;
pub mod haproxy;
pub mod netns;
pub mod process;
pub mod raw;
pub mod simple;

pub use self::cluster::{pg, PrivatePg};
pub use self::config::{config, custom_config, database_section, db_entry, ConfigBuilder};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// pgmux running in this process.
pub struct Mux {
    pub running: pgmux::app::Running,
}

impl Mux {
    pub async fn start(config: Config) -> Mux {
        init_tracing();
        let running = pgmux::app::start(config).await.expect("pgmux start");
        Mux { running }
    }
    pub fn port(&self) -> u16 {
        self.running.addr.port()
    }
    /// A libpq-style connection string to pgmux.
    pub fn connstr(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port()
        )
    }
    /// Connect with tokio-postgres as app to appdb.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_as("app", "app_pw", "appdb").await
    }
    pub async fn connect_as(&self, user: &str, pw: &str, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.connstr(user, pw, db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to pgmux as {user}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
    /// Connect and keep the connection task's handle (to see how it ended, or to drop the
    /// socket).
    pub async fn connect_with_handle(
        &self,
        user: &str,
        pw: &str,
        db: &str,
    ) -> (tokio_postgres::Client, client::ConnHandle) {
        let (client, conn) = tokio_postgres::connect(&self.connstr(user, pw, db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to pgmux as {user}/{db}: {e}"));
        (client, tokio::spawn(conn))
    }
    /// The (database, user) pool.
    pub fn pool(&self, db: &str, user: &str) -> Option<Arc<pgmux::pool::Pool>> {
        self.running
            .shared
            .registry
            .all()
            .into_iter()
            .find(|p| p.database == db && p.user == user)
    }
    /// The (database, user) pool's counts.
    pub fn counts(&self, db: &str, user: &str) -> Option<pgmux::pool::PoolCounts> {
        self.pool(db, user).map(|p| p.counts())
    }
    /// Clients connected to pgmux.
    pub fn clients(&self) -> usize {
        self.running.shared.clients.count()
    }
    /// Wait (up to 5 s) until the counts of app's pool for `db` satisfy `f`: a client sees its
    /// answer a moment before pgmux has put the server back.
    pub async fn settled(
        &self,
        db: &str,
        f: impl Fn(&pgmux::pool::PoolCounts) -> bool,
    ) -> pgmux::pool::PoolCounts {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = self.counts(db, "app").expect("pool exists");
            if f(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "pool {db} did not settle: {c:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// Run a command (psql, pgbench) and return (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("spawn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `psql -h 127.0.0.1 -p PORT -U USER`, for the caller to add the rest.
pub fn psql(port: u16, user: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user]);
    cmd
}

/// Wait until `f` is true or panic after `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
