//! PostgreSQL clusters for the tests: initdb in a temp dir, a free port, started as the
//! `postgres` user (initdb refuses root), and stopped by a watchdog when the test process exits.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, psql};

/// A running cluster: superuser `postgres`, trusted on loopback.
pub struct Pg {
    pub port: u16,
    /// The cluster's directory (logs; the data directory is `data` below it).
    pub dir: PathBuf,
    /// The directory of the Postgres binaries.
    pub bin: PathBuf,
    /// The network namespace it runs in (see `netns.rs`); the tests' own psql then reaches it
    /// through its Unix socket, which namespaces do not separate.
    pub netns: Option<String>,
    /// The tests' own psql reaches it through its Unix socket (in a namespace, or listening
    /// elsewhere than 127.0.0.1).
    pub socket_only: bool,
}

/// What [`start_cluster`] sets up.
pub struct ClusterSpec<'a> {
    /// Appended to the directory name `pgmux-it-PID` (empty for the shared cluster).
    pub suffix: &'a str,
    /// Lines for postgresql.auto.conf, after the common ones (port, loopback, no fsync...).
    pub settings: &'a str,
    /// The whole pg_hba.conf; `None` keeps initdb's (trust for everyone).
    pub hba: Option<&'a str>,
    /// Create the roles `app`/`app_pw`, `other`/`other_pw` (SCRAM), `md5user`/`md5_pw`
    /// (stored as MD5), and the databases `appdb` and `otherdb` owned by `app`.
    pub create_roles: bool,
    /// Run it in this network namespace (listen_addresses then set in `settings`).
    pub netns: Option<&'a str>,
    /// Listen on this port rather than a free one.
    pub port: Option<u16>,
    /// It does not listen on 127.0.0.1: the tests' own psql uses its Unix socket.
    pub socket_only: bool,
}

/// The shared test cluster: the roles and databases of [`ClusterSpec::create_roles`];
/// pg_hba allows `postgres` without a password, `md5user` with MD5 and the others with SCRAM.
pub const SHARED: ClusterSpec<'static> = ClusterSpec {
    suffix: "",
    settings: "max_connections = 300\npassword_encryption = 'scram-sha-256'\n",
    hba: Some(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\n\
         host all md5user 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 scram-sha-256\n",
    ),
    create_roles: true,
    netns: None,
    port: None,
    socket_only: false,
};

static PG: OnceLock<Pg> = OnceLock::new();

/// The shared cluster, started on first use; it stops when the test process exits.
pub fn pg() -> &'static Pg {
    PG.get_or_init(|| start_cluster(&SHARED))
}

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

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Run a shell command as the `postgres` user when we are root (initdb refuses root).
pub fn as_pg(cmd: &str) -> Command {
    as_pg_in(None, cmd)
}

/// [`as_pg`] inside network namespace `netns`, if given (root only).
pub fn as_pg_in(netns: Option<&str>, cmd: &str) -> Command {
    let mut c;
    if let Some(ns) = netns {
        c = Command::new("ip");
        c.args([
            "netns", "exec", ns, "runuser", "-u", "postgres", "--", "sh", "-c", cmd,
        ]);
    } else if is_root() {
        c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", cmd]);
    } else {
        c = Command::new("sh");
        c.args(["-c", cmd]);
    }
    c
}

/// `chown postgres ARGS` (a path, or `-R` and a path) when we are root.
fn chown_to_pg(args: &[&str]) {
    if is_root() {
        Command::new("chown")
            .arg("postgres")
            .args(args)
            .status()
            .unwrap();
    }
}

/// Create and start a cluster as `spec` says, with a [`watch`]dog.
pub fn start_cluster(spec: &ClusterSpec) -> Pg {
    let bin = pg_bindir();
    let base = std::env::temp_dir().join(format!("pgmux-it-{}{}", std::process::id(), spec.suffix));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    chown_to_pg(&[base.to_str().unwrap()]);
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
    let port = spec.port.unwrap_or_else(free_port);
    std::fs::write(
        data.join("postgresql.auto.conf"),
        format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             log_min_messages = warning\n{}",
            base.display(),
            spec.settings
        ),
    )
    .unwrap();
    if let Some(hba) = spec.hba {
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    }
    chown_to_pg(&["-R", data.to_str().unwrap()]);
    let pg = Pg {
        port,
        dir: base,
        bin,
        netns: spec.netns.map(str::to_string),
        socket_only: spec.socket_only || spec.netns.is_some(),
    };
    let st = as_pg_in(
        spec.netns,
        &format!(
            "{}/pg_ctl -D {} -l {}/postgres.log -w -t 60 start >/dev/null 2>&1",
            pg.bin.display(),
            data.display(),
            pg.dir.display()
        ),
    )
    .status()
    .unwrap();
    assert!(
        st.success(),
        "pg_ctl start failed, see {}/postgres.log",
        pg.dir.display()
    );
    watch(&pg);
    wait_accepting(&pg);
    if spec.create_roles {
        pg.psql_super(
            "postgres",
            "CREATE ROLE app LOGIN PASSWORD 'app_pw'; \
             CREATE ROLE other LOGIN PASSWORD 'other_pw'; \
             SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5_pw';",
        );
        pg.psql_super("postgres", "CREATE DATABASE appdb OWNER app");
        pg.psql_super("postgres", "CREATE DATABASE otherdb OWNER app");
    }
    pg
}

/// A watchdog that stops `pg` (and removes its directory) when this test process exits or
/// the data directory disappears; it follows the data directory, not a pid, so a restart does
/// not end it.
// The watchdog process outlives this function on purpose.
#[allow(clippy::zombie_processes)]
fn watch(pg: &Pg) {
    let me = std::process::id();
    let data = pg.data_dir();
    as_pg(&format!(
        "while [ -d /proc/{me} ] && [ -d {data} ]; do sleep 0.5; done; \
         {bin}/pg_ctl -D {data} -m immediate -w stop >/dev/null 2>&1; rm -rf {base}",
        bin = pg.bin.display(),
        data = data.display(),
        base = pg.dir.display(),
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
}

/// Wait until `pg` runs queries.
fn wait_accepting(pg: &Pg) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pg.psql_ok("postgres", "SELECT 1") {
        assert!(
            Instant::now() < deadline,
            "postgres did not start; see {}/postgres.log",
            pg.dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A streaming hot standby of `primary` (pg_basebackup -R), in `pgmux-it-PID-SUFFIX`, on a
/// port of its own, started and accepting queries.
pub fn start_standby(primary: &Pg, suffix: &str) -> Pg {
    assert!(primary.netns.is_none(), "standbys of namespaced clusters");
    let base = std::env::temp_dir().join(format!("pgmux-it-{}-{suffix}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    chown_to_pg(&[base.to_str().unwrap()]);
    let data = base.join("data");
    let st = as_pg(&format!(
        "{}/pg_basebackup -h 127.0.0.1 -p {} -U postgres -D {} -R -X stream -c fast \
         >{}/basebackup.log 2>&1",
        primary.bin.display(),
        primary.port,
        data.display(),
        base.display()
    ))
    .status()
    .unwrap();
    assert!(
        st.success(),
        "pg_basebackup failed, see {}/basebackup.log",
        base.display()
    );
    let port = free_port();
    // Later lines win: the primary's port and socket directory came with the copy.
    let mut auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    auto.push_str(&format!(
        "port = {port}\nunix_socket_directories = '{}'\nhot_standby = on\n",
        base.display()
    ));
    std::fs::write(data.join("postgresql.auto.conf"), auto).unwrap();
    chown_to_pg(&["-R", data.to_str().unwrap()]);
    let pg = Pg {
        port,
        dir: base,
        bin: primary.bin.clone(),
        netns: None,
        socket_only: false,
    };
    pg.start();
    watch(&pg);
    wait_accepting(&pg);
    pg
}

impl Pg {
    /// psql as the superuser, with these arguments before `-c sql db`.
    fn psql(&self, args: &[&str], sql: &str, db: &str) -> Command {
        let mut c = psql(self.port, "postgres");
        if self.socket_only {
            c.args(["-h", self.dir.to_str().unwrap()]);
        }
        c.arg("-qAtX").args(args).args(["-c", sql, db]);
        c
    }

    fn psql_ok(&self, db: &str, sql: &str) -> bool {
        self.psql(&[], sql, db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Run SQL as the superuser directly on Postgres; panics on failure; returns stdout.
    pub fn psql_super(&self, db: &str, sql: &str) -> String {
        let out = self
            .psql(&["-v", "ON_ERROR_STOP=1"], sql, db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `pg_ctl ARGS` on this cluster's data directory, as the postgres user.
    fn pg_ctl(&self, args: &str) -> Command {
        as_pg_in(
            self.netns.as_deref(),
            &format!(
                "{}/pg_ctl -D {} {args} >/dev/null 2>&1",
                self.bin.display(),
                self.data_dir().display()
            ),
        )
    }

    /// Restart Postgres (fast shutdown, start again on the same port).
    pub fn restart(&self) {
        let st = self
            .pg_ctl(&format!(
                "-m fast -w -t 30 restart -l {}/postgres.log",
                self.dir.display()
            ))
            .status()
            .unwrap();
        assert!(
            st.success(),
            "pg_ctl restart failed, see {}/postgres.log",
            self.dir.display()
        );
    }

    /// Start Postgres again after [`Pg::stop`] (same port), waiting until it accepts logins.
    pub fn start(&self) {
        let st = self
            .pg_ctl(&format!(
                "-w -t 60 start -l {}/postgres.log",
                self.dir.display()
            ))
            .status()
            .unwrap();
        assert!(
            st.success(),
            "pg_ctl start failed, see {}/postgres.log",
            self.dir.display()
        );
    }

    /// Promote a standby (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) {
        let st = self.pg_ctl("-w -t 60 promote").status().unwrap();
        assert!(st.success(), "pg_ctl promote failed");
    }

    /// Stop Postgres (fast shutdown).
    pub fn stop(&self) {
        let st = self.pg_ctl("-m fast -w stop").status().unwrap();
        assert!(st.success(), "pg_ctl stop failed");
    }
}

/// A throw-away cluster of one test's own, with trust authentication and no roles besides
/// `postgres`; stopped and removed on drop.
pub struct PrivatePg(Pg);

impl PrivatePg {
    /// A streaming standby of `primary` (see [`start_standby`]).
    pub fn standby_of(primary: &Pg, tag: &str) -> PrivatePg {
        PrivatePg(start_standby(primary, tag))
    }

    /// Start one in `pgmux-it-PID-TAG`.
    pub fn start(tag: &str) -> PrivatePg {
        PrivatePg(start_cluster(&ClusterSpec {
            suffix: &format!("-{tag}"),
            settings: "",
            hba: None,
            create_roles: false,
            netns: None,
            port: None,
            socket_only: false,
        }))
    }

    /// Start one listening on `addr:port` only (several clusters can share a port on
    /// different loopback addresses), trusting everyone.
    pub fn start_at(tag: &str, addr: &str, port: u16) -> PrivatePg {
        PrivatePg(start_cluster(&ClusterSpec {
            suffix: &format!("-{tag}"),
            settings: &format!("listen_addresses = '{addr}'\n"),
            hba: Some("local all all trust\nhost all all 0.0.0.0/0 trust\n"),
            create_roles: false,
            netns: None,
            port: Some(port),
            socket_only: true,
        }))
    }

    /// Start one in network namespace `netns`, listening on `addr` there, trusting everyone.
    pub fn start_in(tag: &str, netns: &str, addr: &str) -> PrivatePg {
        PrivatePg(start_cluster(&ClusterSpec {
            suffix: &format!("-{tag}"),
            settings: &format!("listen_addresses = '{addr}'\n"),
            hba: Some("local all all trust\nhost all all 0.0.0.0/0 trust\n"),
            create_roles: false,
            netns: Some(netns),
            port: None,
            socket_only: true,
        }))
    }
}

impl Deref for PrivatePg {
    type Target = Pg;

    fn deref(&self) -> &Pg {
        &self.0
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl("-m immediate -w stop").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
