//! pgbench through pgmux: 500 clients on a pool of 20, simple, extended and prepared protocol
//! (named statements mapped across servers), no failures; and the default tpcb-like script
//! with `-M prepared` (multi-statement transactions, clients queued for servers, statements
//! evicted) at 50 and 500 clients through pools of 5 and 20.
//!
//! The duration of the 500-client runs on a pool of 20 is `PGMUX_PGBENCH_SECS` (default 10;
//! the acceptance runs use 30); the other tpcb-like runs have a number of transactions.

use std::process::Command;

use crate::support::{config, database_section, pg, run, Mux};

fn secs() -> u64 {
    std::env::var("PGMUX_PGBENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn pgbench(port: u16, args: &[&str]) -> (bool, String, String) {
    pgbench_db(port, "benchdb", args)
}

/// `pgbench_db` on a blocking thread: the test's runtime keeps serving pgmux meanwhile.
pub(crate) async fn pgbench_db_blocking(
    port: u16,
    db: &str,
    args: &[&str],
) -> (bool, String, String) {
    let db = db.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pgbench_db(port, &db, &args)
    })
    .await
    .unwrap()
}

pub(crate) fn pgbench_db(port: u16, db: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("sh");
    // pgbench opens one socket per client: make sure the open-files limit allows it.
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n $(ulimit -Hn) 2>/dev/null; exec pgbench -h 127.0.0.1 -p {port} -U app {} {db}",
            args.join(" ")
        ))
        .env("PGPASSWORD", "app_pw");
    run(&mut cmd)
}

/// Transactions processed, from pgbench's summary, when it reports no failure and no client
/// aborted; the panic message says what went wrong otherwise.
pub(crate) fn clean_run(what: &str, (ok, stdout, stderr): (bool, String, String)) -> u64 {
    assert!(ok, "{what}: pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("aborted"),
        "{what}: clients aborted:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{what}: failures:\n{stdout}\n{stderr}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("pgbench summary");
    assert!(processed > 0, "{what}: no transactions:\n{stdout}");
    eprintln!("{what}: {processed} transactions, 0 failed");
    processed
}

/// A database of its own with pgbench's tables at scale 1 (made directly on Postgres).
pub(crate) fn tpcb_database(db: &str) {
    let pg = pg();
    pg.psql_super("postgres", &format!("CREATE DATABASE {db} OWNER app"));
    let mut init = Command::new("pgbench");
    init.args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "app"])
        .args(["-i", "-s", "1", "-q", db])
        .env("PGPASSWORD", "app_pw");
    let (ok, out, err) = run(&mut init);
    assert!(ok, "pgbench -i {db}: {out}{err}");
}

/// Issue 11's reproduction: the tpcb-like script with `-M prepared` on a pool of 5 with a
/// reserve of 2, 12 clients on 2 threads. pgbench prepares each statement with the synchronous
/// PQprepare on a client's first transaction, blocking a thread whose other clients hold
/// servers inside their transactions; a Parse that waited for a server hung every client until
/// query_wait_timeout. Run on three fresh pools, since each hang needs an unlucky start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_tpcb_12_clients_on_pool_of_5_does_not_hang() {
    tpcb_database("tpcb12");
    let extra = database_section("tpcb12", pg().port, "pool_size = 5");
    let general = "reserve_pool_size = 2\nreserve_pool_timeout = 1\nquery_wait_timeout = 5";
    for round in 0..3 {
        let mux = Mux::start(config(general, &extra)).await;
        let r = pgbench_db_blocking(
            mux.port(),
            "tpcb12",
            &["-n", "-M", "prepared", "-c", "12", "-j", "2", "-T", "3"],
        )
        .await;
        clean_run(&format!("round {round}: -c 12 -M prepared, pool 5"), r);
        let counts = mux.counts("tpcb12", "app").unwrap();
        assert!(
            counts.open <= 7,
            "pool grew past size + reserve: {counts:?}"
        );
    }
}

/// pgbench `-M prepared` started twice on one pgmux, 8 clients on a pool of 2 with no reserve:
/// the second run finds every statement on the servers already, while the pool forgot them
/// with their last client. Answered from a server's cache, such a Parse once left the
/// statement unknown, so every client's PQprepare waited for a server, and a thread blocked
/// in one while its other clients held both servers in their transactions hung until
/// query_wait_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_run_again_on_warm_servers_does_not_hang() {
    tpcb_database("tpcbagain");
    let extra = database_section("tpcbagain", pg().port, "pool_size = 2");
    let mux = Mux::start(config("query_wait_timeout = 5", &extra)).await;
    for run in 0..2 {
        let r = pgbench_db_blocking(
            mux.port(),
            "tpcbagain",
            &["-n", "-M", "prepared", "-c", "8", "-j", "2", "-T", "2"],
        )
        .await;
        clean_run(&format!("run {run}: -c 8 -M prepared, pool 2"), r);
    }
}

/// tpcb-like `-M prepared` (BEGIN, three UPDATEs, SELECT, INSERT, END: each a mapped statement,
/// clients waiting in the queue) at 50 and 500 clients through pools of 5 and of 20, and with
/// `max_prepared_statements = 3` (fewer than the script's 7 statements: every transaction
/// evicts statements and prepares them again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_tpcb_50_and_500_clients_pools_of_5_and_20_with_eviction() {
    tpcb_database("tpcbmx");
    // How long each runs: transactions per client (`-t`), or for the acceptance run seconds.
    let long = format!("-T {}", secs());
    let runs: [(usize, usize, usize, &str); 6] = [
        (5, 50, 200, "-t 100"),
        (5, 500, 200, "-t 20"),
        (20, 50, 200, "-t 100"),
        (20, 500, 200, &long),
        (5, 50, 3, "-t 100"),
        (20, 500, 3, "-t 20"),
    ];
    for (pool, clients, max_ps, length) in runs {
        let extra = database_section("tpcbmx", pg().port, &format!("pool_size = {pool}"));
        let general = format!("max_prepared_statements = {max_ps}\nquery_wait_timeout = 60");
        let mux = Mux::start(config(&general, &extra)).await;
        let (c, l) = (clients.to_string(), length.to_string());
        let r = pgbench_db_blocking(
            mux.port(),
            "tpcbmx",
            &["-n", "-M", "prepared", "-c", &c, "-j", "2", &l],
        )
        .await;
        let what = format!(
            "tpcb-like -M prepared, {clients} clients, pool {pool}, max_prepared_statements {max_ps}, {length}"
        );
        clean_run(&what, r);
        let counts = mux.counts("tpcbmx", "app").unwrap();
        assert!(
            counts.open <= pool,
            "{what}: pool grew past its size: {counts:?}"
        );
        // Every server went back clean: none is left in a transaction or holding a lock.
        // (Client backends only: an autovacuum worker the updates woke shows as active.)
        let stuck = pg().psql_super(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tpcbmx' \
             AND backend_type = 'client backend' AND state <> 'idle'",
        );
        if stuck.trim() != "0" {
            let who = pg().psql_super(
                "postgres",
                "SELECT backend_type, state, left(query, 80) FROM pg_stat_activity \
                 WHERE datname = 'tpcbmx' AND state <> 'idle'",
            );
            panic!("{what}: servers not idle after the run: {who}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_500_clients_pool_20_simple_extended_prepared() {
    let pg = pg();
    pg.psql_super("postgres", "CREATE DATABASE benchdb OWNER app");
    let extra = database_section("benchdb", pg.port, "pool_size = 20");
    let mux = Mux::start(config("", &extra)).await;
    let port = mux.port();
    let t = secs().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let init = pgbench(port, &["-i", "-s", "2", "-q"]);
        assert!(init.0, "pgbench -i failed: {}", init.2);
        ["simple", "extended", "prepared"]
            .iter()
            .map(|mode| {
                let r = pgbench(
                    port,
                    &["-n", "-S", "-M", mode, "-c", "500", "-j", "2", "-T", &t],
                );
                (mode.to_string(), r)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (mode, (ok, stdout, stderr)) in out {
        assert!(ok, "pgbench -M {mode} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("number of failed transactions: 0 "),
            "pgbench -M {mode} had failures:\n{stdout}"
        );
        let processed: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.trim().parse().ok())
            .expect("pgbench summary");
        assert!(processed > 0, "no transactions:\n{stdout}");
        eprintln!("pgbench -M {mode}: {processed} transactions, 0 failed");
    }
    let counts = mux.counts("benchdb", "app").unwrap();
    assert!(counts.open <= 20, "pool grew past its size: {counts:?}");
}
