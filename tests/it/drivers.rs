//! Real drivers through pgmux in transaction mode: asyncpg, psycopg 3, node-postgres and JDBC
//! use protocol-level prepared statements, and each prints the same against pgmux as against
//! Postgres directly (pgbench -M prepared is in pgbench.rs).
//!
//! The scripts are in tests/drivers/ (each says what it covers); tests/drivers/setup.sh
//! installs the drivers (scripts/test.sh runs it). A missing driver fails its test: it is
//! never skipped. Each test runs its script once directly on Postgres, then through pgmux with
//! a pool smaller than the script's number of connections, so a connection's statements run on
//! several servers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::sql_super;
use crate::support::{config, database_section, pg, Mux};

/// A script that has not finished by then has hung: it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(120);

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[derive(Clone, Copy, Debug)]
enum Driver {
    Asyncpg,
    Psycopg,
    NodePg,
    Jdbc,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn scripts() -> PathBuf {
    root().join("tests/drivers")
}

/// The python of the venv that tests/drivers/setup.sh makes.
pub(crate) fn python() -> PathBuf {
    root().join("target/driver-venv/bin/python")
}

/// True when `cmd` runs and exits 0.
fn runs(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Asyncpg => "asyncpg",
            Driver::Psycopg => "psycopg",
            Driver::NodePg => "node_pg",
            Driver::Jdbc => "jdbc",
        }
    }

    /// Fail (not skip) when the driver is not installed.
    fn require(self) {
        let (present, what) = match self {
            Driver::Asyncpg | Driver::Psycopg => {
                let module = if matches!(self, Driver::Asyncpg) {
                    "asyncpg"
                } else {
                    "psycopg"
                };
                (
                    runs(Command::new(python()).args(["-c", &format!("import {module}")])),
                    format!("python module {module} in {}", python().display()),
                )
            }
            Driver::NodePg => (
                runs(Command::new("node").arg("--version"))
                    && scripts().join("node_modules/pg/package.json").exists(),
                format!(
                    "node and the npm package pg in {}/node_modules",
                    scripts().display()
                ),
            ),
            Driver::Jdbc => (
                runs(Command::new("java").arg("-version")) && Path::new(JDBC_JAR).exists(),
                format!("java and {JDBC_JAR}"),
            ),
        };
        assert!(
            present,
            "{} driver missing ({what}): run tests/drivers/setup.sh",
            self.name()
        );
    }

    /// The script, as app (SCRAM) on 127.0.0.1:`port`, database `db`.
    fn command(self, port: u16, db: &str) -> Command {
        let dir = scripts();
        let port_s = port.to_string();
        let libpq_args = ["127.0.0.1", &port_s, "app", "app_pw", db];
        let mut cmd = match self {
            Driver::Asyncpg | Driver::Psycopg => {
                let mut c = Command::new(python());
                c.arg(dir.join(format!("{}_check.py", self.name())));
                c.args(libpq_args);
                c
            }
            Driver::NodePg => {
                let mut c = Command::new("node");
                c.arg(dir.join("node_pg_check.js")).args(libpq_args);
                c
            }
            Driver::Jdbc => {
                let mut c = Command::new("java");
                c.args(["-cp", JDBC_JAR])
                    .arg(dir.join("JdbcCheck.java"))
                    .arg(format!("jdbc:postgresql://127.0.0.1:{port}/{db}"))
                    .args(["app", "app_pw"]);
                c
            }
        };
        cmd.current_dir(&dir);
        cmd
    }
}

/// How a script run ended.
pub(crate) struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Run the Python script `name` of tests/drivers (arguments: host, port, user app, its password,
/// `db`) off the runtime, killed (and failing) after `limit`.
pub(crate) async fn python_script(
    name: &str,
    port: u16,
    db: &str,
    limit: Duration,
    what: &str,
) -> Outcome {
    script(Command::new(python()), name, port, db, limit, what).await
}

/// Run the node script `name` of tests/drivers (arguments as [`python_script`]'s) off the
/// runtime, killed (and failing) after `limit`.
pub(crate) async fn node_script(
    name: &str,
    port: u16,
    db: &str,
    limit: Duration,
    what: &str,
) -> Outcome {
    script(Command::new("node"), name, port, db, limit, what).await
}

/// Run `cmd` (an interpreter) on tests/drivers/`name` (in that directory) with the arguments of
/// [`python_script`], off the runtime, killed (and failing) after `limit`.
async fn script(
    mut cmd: Command,
    name: &str,
    port: u16,
    db: &str,
    limit: Duration,
    what: &str,
) -> Outcome {
    cmd.arg(scripts().join(name))
        .args(["127.0.0.1", &port.to_string(), "app", "app_pw", db])
        .current_dir(scripts());
    let what = what.to_string();
    tokio::task::spawn_blocking(move || run_limited(cmd, limit, &what))
        .await
        .unwrap()
}

/// Run `cmd`, killing it (and failing) after `limit`.
pub(crate) fn run_limited(mut cmd: Command, limit: Duration, what: &str) -> Outcome {
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for script") {
            break Some(st);
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let Some(status) = status else {
        panic!("{what} hung: killed after {limit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Outcome {
        ok: status.success(),
        stdout,
        stderr,
        took: start.elapsed(),
    }
}

/// Run the driver's script on `port` (off the runtime's worker threads).
async fn run_driver(driver: Driver, port: u16, db: &str, what: &str) -> Outcome {
    let cmd = driver.command(port, db);
    let what = format!("{} {what}", driver.name());
    tokio::task::spawn_blocking(move || run_limited(cmd, LIMIT, &what))
        .await
        .unwrap()
}

/// The driver's script against Postgres directly, then through pgmux (transaction mode,
/// `pool_size` servers, `general` more `[general]` lines): both exit 0 and print the same.
async fn same_through_pgmux(driver: Driver, pool_size: usize, general: &str) {
    driver.require();
    let name = driver.name();
    let db = format!("drivers_{name}");
    sql_super("postgres", &format!("CREATE DATABASE {db} OWNER app")).await;

    let direct = run_driver(driver, pg().port, &db, "against Postgres directly").await;
    assert!(
        direct.ok,
        "{name} against Postgres directly failed:\n{}\n{}",
        direct.stdout, direct.stderr
    );
    assert!(
        !direct.stdout.trim().is_empty(),
        "{name} printed nothing against Postgres"
    );

    let extra = database_section(&db, pg().port, &format!("pool_size = {pool_size}"));
    let mux = Mux::start(config(
        &format!("pool_mode = \"transaction\"\n{general}"),
        &extra,
    ))
    .await;
    let via = run_driver(driver, mux.port(), &db, "through pgmux").await;
    assert!(
        via.ok,
        "{name} through pgmux (transaction mode, pool_size {pool_size}) failed:\n{}\n{}",
        via.stdout, via.stderr
    );
    assert_eq!(
        direct.stdout, via.stdout,
        "{name} printed otherwise through pgmux than against Postgres"
    );
    let counts = mux.counts(&db, "app").expect("pool exists");
    assert!(
        counts.open <= pool_size,
        "pool grew past its size: {counts:?}"
    );
    eprintln!(
        "{name}: {:.1?} against Postgres, {:.1?} through pgmux; output:\n{}",
        direct.took, via.took, via.stdout
    );
}

/// asyncpg, default statement cache: 50 concurrent connections on 5 servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_50_connections_pool_5_same_results() {
    same_through_pgmux(Driver::Asyncpg, 5, "").await;
}

/// psycopg 3 with prepare_threshold=0, executemany and pipelines: 3 connections used in turn on
/// 2 servers. pgmux keeps only 50 statements per server here, fewer than the script prepares,
/// so servers evict and re-prepare statements too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_prepared_pipeline_pool_2_same_results() {
    same_through_pgmux(Driver::Psycopg, 2, "max_prepared_statements = 50").await;
}

/// node-postgres named queries: 6 concurrent clients on 3 servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pg_named_queries_pool_3_same_results() {
    same_through_pgmux(Driver::NodePg, 3, "").await;
}

/// JDBC past prepareThreshold (and with prepareThreshold=1), batches: 3 connections used in
/// turn on 2 servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_prepared_statements_pool_2_same_results() {
    same_through_pgmux(Driver::Jdbc, 2, "").await;
}
