//! Test support: a real PostgreSQL started once per test binary (initdb in a temp dir, free
//! port), and pgmux started in-process on a free port in front of it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgmux::config::Config;

/// The test cluster: superuser `postgres` (trust on loopback), role `app`/`app_pw` (SCRAM),
/// role `md5user`/`md5_pw` (stored as MD5), database `appdb` owned by `app`.
pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

static PG: OnceLock<Pg> = OnceLock::new();

/// Find the directory holding initdb/postgres/pg_ctl.
fn pg_bindir() -> PathBuf {
    if let Ok(d) = std::env::var("PG_BINDIR") {
        return d.into();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    if let Some(d) = dirs.into_iter().rev().find(|d| d.join("initdb").exists()) {
        return d;
    }
    let out = Command::new("sh")
        .args(["-c", "dirname $(command -v initdb)"])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Run a shell command as the `postgres` user when we are root (initdb refuses root).
fn as_pg(cmd: &str) -> Command {
    let mut c;
    if is_root() {
        c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", cmd]);
    } else {
        c = Command::new("sh");
        c.args(["-c", cmd]);
    }
    c
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared cluster, started on first use; it stops when the test process exits.
pub fn pg() -> &'static Pg {
    PG.get_or_init(start_pg)
}

// The watchdog process outlives this function on purpose (it stops Postgres at exit).
#[allow(clippy::zombie_processes)]
fn start_pg() -> Pg {
    let bin = pg_bindir();
    let base = std::env::temp_dir().join(format!("pgmux-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    if is_root() {
        Command::new("chown")
            .args(["postgres", base.to_str().unwrap()])
            .status()
            .unwrap();
    }
    let data = base.join("data");
    let st = as_pg(&format!(
        "{}/initdb -D {} -U postgres -A trust --nosync >{}/initdb.log 2>&1",
        bin.display(),
        data.display(),
        base.display()
    ))
    .status()
    .unwrap();
    assert!(
        st.success(),
        "initdb failed, see {}/initdb.log",
        base.display()
    );
    let port = free_port();
    std::fs::write(
        data.join("postgresql.auto.conf"),
        format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             password_encryption = 'scram-sha-256'\nlog_min_messages = warning\n",
            base.display()
        ),
    )
    .unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all md5user 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    if is_root() {
        Command::new("chown")
            .args(["-R", "postgres", data.to_str().unwrap()])
            .status()
            .unwrap();
    }
    // Postgres runs under a watchdog that stops it when this test process exits (it follows
    // the data directory, not a pid, so a restart does not end it).
    let me = std::process::id();
    as_pg(&format!(
        "{bin}/pg_ctl -D {data} -l {base}/postgres.log -w start >/dev/null 2>&1; \
         while [ -d /proc/{me} ]; do sleep 0.5; done; \
         {bin}/pg_ctl -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {base}",
        bin = bin.display(),
        data = data.display(),
        base = base.display(),
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let pg = Pg {
        port,
        dir: base,
        bin,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pg.psql_ok("postgres", "SELECT 1") {
        assert!(
            Instant::now() < deadline,
            "postgres did not start; see {}/postgres.log",
            pg.dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    pg.psql_super(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'app_pw'; \
         CREATE ROLE other LOGIN PASSWORD 'other_pw'; \
         SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5_pw';",
    );
    pg.psql_super("postgres", "CREATE DATABASE appdb OWNER app");
    pg.psql_super("postgres", "CREATE DATABASE otherdb OWNER app");
    pg
}

impl Pg {
    fn psql_ok(&self, db: &str, sql: &str) -> bool {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-qAtX",
                "-c",
                sql,
                db,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Run SQL as the superuser directly on Postgres; panics on failure; returns stdout.
    pub fn psql_super(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-qAtX",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                db,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Directory of the Postgres binaries (pgbench, pg_ctl...).
    pub fn bin(&self, name: &str) -> PathBuf {
        let p = self.bin.join(name);
        if p.exists() {
            p
        } else {
            PathBuf::from(name)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Restart Postgres (fast shutdown, start again on the same port).
    pub fn restart(&self) {
        let st = as_pg(&format!(
            "{}/pg_ctl -D {} -m fast -w restart -l {}/postgres-restart.log >/dev/null 2>&1",
            self.bin.display(),
            self.data_dir().display(),
            self.dir.display()
        ))
        .status()
        .unwrap();
        assert!(st.success(), "pg_ctl restart failed");
    }
}

/// A config for pgmux in front of the test cluster; `extra_general` is TOML for [general].
pub fn config(extra_general: &str, extra: &str) -> Config {
    let pg = pg();
    let text = format!(
        r#"
[general]
listen_addr = "127.0.0.1"
listen_port = 0
max_client_conn = 2000
default_pool_size = 5
auth_type = "scram-sha-256"
{extra_general}

[databases.appdb]
host = "127.0.0.1"
port = {port}

[databases.otherdb]
host = "127.0.0.1"
port = {port}

[databases.aliasdb]
host = "127.0.0.1"
port = {port}
dbname = "appdb"

[users.app]
password = "app_pw"

[users.md5user]
password = "md5_pw"

[users.other]
password = "other_pw"

{extra}
"#,
        port = pg.port
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("bad test config: {e}\n{text}"))
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
        let (client, conn) =
            tokio_postgres::connect(&self.connstr(user, pw, db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to pgmux as {user}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
    pub async fn try_connect(
        &self,
        user: &str,
        pw: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.connstr(user, pw, db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
    /// The (database, user) pool's counts.
    pub fn counts(&self, db: &str, user: &str) -> Option<pgmux::pool::PoolCounts> {
        self.running
            .shared
            .registry
            .all()
            .into_iter()
            .find(|p| p.database == db && p.user == user)
            .map(|p| p.counts())
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

/// Wait until `f` is true or panic after `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
