//! How a client stops, in every state its server can be in: the server ends up clean in the
//! pool or closed, never stuck and never holding a lock. The oracle is Postgres itself:
//! `pg_stat_activity` (no session of the database left anything but idle) and `pg_locks` (no
//! lock on the test table), then a new client through pgmux gets a clean server (transaction
//! status idle) and can lock the table.
//!
//! Ways to stop: Terminate, a closed socket, a pgmux timeout (idle_transaction_timeout,
//! client_idle_timeout), KILL_CLIENT on the admin console, and shutdown (drain with a short
//! shutdown_timeout). States: idle, in a transaction, in a failed transaction, mid-query, COPY
//! IN, COPY OUT, waiting for Sync after an extended-protocol error, an extended batch without
//! its Sync, pipelined queries in flight. Each in transaction and in session mode.
//!
//! Also issue 11's psycopg reproduction: `cursor.execute` of a COPY FROM STDIN, then
//! `close()`, left the server in COPY IN with its locks until this was fixed.

use std::time::{Duration, Instant};

use crate::drivers::python_script;
use crate::support::client::{connect_ok, sql_super};
use crate::support::raw::{self, Raw};
use crate::support::{config, database_section, pg, ConfigBuilder, Mux};

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Idle,
    InTransaction,
    FailedTransaction,
    MidQuery,
    CopyIn,
    CopyOut,
    SyncWaitAfterError,
    Unsynced,
    Pipelined,
}

const STATES: [State; 9] = [
    State::Idle,
    State::InTransaction,
    State::FailedTransaction,
    State::MidQuery,
    State::CopyIn,
    State::CopyOut,
    State::SyncWaitAfterError,
    State::Unsynced,
    State::Pipelined,
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Terminate,
    ClosedSocket,
    Timeout,
    Kill,
    Shutdown,
}

const STOPS: [Stop; 5] = [
    Stop::Terminate,
    Stop::ClosedSocket,
    Stop::Timeout,
    Stop::Kill,
    Stop::Shutdown,
];

impl State {
    /// Whether a pgmux timeout covers it: the client is the one awaited. While the server
    /// works (a query, COPY OUT, pipelined queries) no pgmux timeout applies, as in PgBouncer
    /// without query_timeout.
    fn timeout_applies(self) -> bool {
        !matches!(self, State::MidQuery | State::CopyOut | State::Pipelined)
    }

    /// Whether the state holds a lock on `t` (checked before the client stops, so the oracle
    /// is known to see it). An error ends a transaction's locks at once, though the
    /// transaction stays open (aborted) until it is rolled back.
    fn holds_lock(self) -> bool {
        !matches!(
            self,
            State::Idle | State::FailedTransaction | State::SyncWaitAfterError
        )
    }
}

/// One statement's answer from Postgres directly, as the superuser, in `db`.
async fn on_pg(db: &str, sql: &str) -> String {
    sql_super(db, sql).await
}

/// Sessions of `db` not idle, and locks on its `t`, other than the checker's own.
async fn dirt(db: &str) -> String {
    let sql = format!(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND pid <> pg_backend_pid() AND backend_type = 'client backend' \
         AND state <> 'idle') || ' busy, ' || \
         (SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation \
         WHERE r.relname = 't' AND l.pid <> pg_backend_pid()) || ' locks'"
    );
    on_pg(db, &sql).await
}

/// Wait until Postgres shows a query of `db` matching `like` running.
async fn wait_active(db: &str, like: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '{like}%' \
         AND datname = '{db}' AND pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while on_pg(db, &sql).await != "1" {
        assert!(Instant::now() < deadline, "no running query like {like}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read until a message with `tag`.
async fn read_until(c: &mut Raw, tag: u8) {
    loop {
        if c.read().await.0 == tag {
            return;
        }
    }
}

/// Bring a logged-in client's server into `state`.
async fn enter(db: &str, c: &mut Raw, state: State) {
    // Every state starts with a request, so that a server is attached in session mode too.
    c.simple_query("SELECT 1").await;
    let lock = "BEGIN; LOCK TABLE t IN SHARE MODE";
    match state {
        State::Idle => {}
        State::InTransaction => {
            c.simple_query(lock).await;
        }
        State::FailedTransaction => {
            c.simple_query(lock).await;
            c.send(&raw::query("SELECT 1/0")).await;
            c.read_until_ready(1).await;
        }
        State::MidQuery => {
            c.simple_query(lock).await;
            c.send(&raw::query("SELECT pg_sleep(60)")).await;
            wait_active(db, "SELECT pg_sleep").await;
        }
        State::CopyIn => {
            c.simple_query(lock).await;
            c.send(&raw::query("COPY t FROM STDIN")).await;
            read_until(c, b'G').await;
        }
        State::CopyOut => {
            c.simple_query(lock).await;
            // Far more than the socket buffers hold, and never read: the server blocks in send.
            c.send(&raw::query(
                "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 1000000)) TO STDOUT",
            ))
            .await;
            wait_active(db, "COPY (SELECT").await;
        }
        State::SyncWaitAfterError => {
            c.simple_query(lock).await;
            let mut b = raw::parse("", "SELECT 1/0");
            b.extend(raw::bind("", ""));
            b.extend(raw::execute(""));
            b.extend(raw::flush());
            c.send(&b).await;
            read_until(c, b'E').await;
        }
        State::Unsynced => {
            // The implicit transaction of an extended batch holds the INSERT's lock until Sync.
            let mut b = raw::parse("", "INSERT INTO t VALUES (1)");
            b.extend(raw::bind("", ""));
            b.extend(raw::execute(""));
            b.extend(raw::flush());
            c.send(&b).await;
            read_until(c, b'C').await;
        }
        State::Pipelined => {
            c.simple_query(lock).await;
            let mut b = raw::query("SELECT pg_sleep(60)");
            b.extend(raw::query("SELECT pg_sleep(60)"));
            b.extend(raw::query("SELECT 1"));
            c.send(&b).await;
            wait_active(db, "SELECT pg_sleep").await;
        }
    }
}

fn mux_config(db: &str, mode: &str, stop: Stop) -> pgmux::config::Config {
    let timeouts = if stop == Stop::Timeout {
        "idle_transaction_timeout = 0.5\nclient_idle_timeout = 0.5"
    } else {
        ""
    };
    ConfigBuilder::new()
        .general(&format!(
            "auth_type = \"trust\"\nadmin_users = [\"app\"]\npool_mode = \"{mode}\"\n{timeouts}"
        ))
        .database(db, pg().port, "pool_size = 1")
        .user("app", Some("app_pw"))
        .build()
}

/// Run one case; `Err` says what was left behind.
async fn case(mode: &str, state: State, stop: Stop) -> Result<(), String> {
    let db = &format!("abandon_{mode}");
    let mut mux = Mux::start(mux_config(db, mode, stop)).await;
    let (mut c, _, _) = Raw::login(mux.port(), db).await;
    enter(db, &mut c, state).await;
    let seen = dirt(db).await;
    let entered = match state {
        State::Idle => true,
        _ if state.holds_lock() => !seen.ends_with(" 0 locks"),
        _ => !seen.starts_with("0 busy"),
    };
    if !entered {
        return Err(format!("the state was not entered: {seen}"));
    }
    let mut kept = None;
    match stop {
        Stop::Terminate => {
            c.send(&raw::msg(b'X', &[])).await;
            drop(c);
        }
        Stop::ClosedSocket => drop(c),
        Stop::Timeout => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            kept = Some(c);
        }
        Stop::Kill => {
            let id = mux
                .running
                .shared
                .clients
                .all()
                .into_iter()
                .find(|i| i.pool().is_some_and(|p| p.database == *db))
                .map(|i| i.id)
                .ok_or("the client is not listed")?;
            let (admin, _h) = connect_ok(mux.port(), "app", "", "pgbouncer").await;
            admin
                .simple_query(&format!("KILL_CLIENT {id}"))
                .await
                .map_err(|e| format!("KILL_CLIENT: {e}"))?;
            kept = Some(c);
        }
        Stop::Shutdown => {
            mux.running.drain(Some(Duration::from_millis(300))).await;
            kept = Some(c);
        }
    }
    // Postgres shows nothing left behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = dirt(db).await;
        if seen == "0 busy, 0 locks" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("after 10 s: {seen}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if stop != Stop::Shutdown {
        // The pool gives the next client a clean server, and the table can be locked.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mux.counts(db, "app").is_some_and(|c| c.active > 0) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "a server stays checked out: {:?}",
                    mux.counts(db, "app")
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut next, _, _) = Raw::login(mux.port(), db).await;
        let msgs = next
            .simple_query("BEGIN; SET LOCAL lock_timeout = '2s'; LOCK TABLE t; COMMIT")
            .await;
        if let Some(e) = raw::error_of(&msgs) {
            return Err(format!("the next client could not lock t: {e:?}"));
        }
        let msgs = next
            .simple_query("SELECT txid_current_if_assigned() IS NULL")
            .await;
        let status = msgs.last().map(|m| m.1[0]);
        if status != Some(b'I') || raw::error_of(&msgs).is_some() {
            return Err(format!("the next client got a dirty server: {msgs:?}"));
        }
        let open = mux.counts(db, "app").map_or(0, |c| c.open);
        if open > 1 {
            return Err(format!("the pool has {open} servers, its size is 1"));
        }
    }
    drop(kept);
    mux.running.stop();
    Ok(())
}

async fn matrix(mode: &str) {
    let db = format!("abandon_{mode}");
    sql_super("postgres", &format!("CREATE DATABASE {db} OWNER app")).await;
    on_pg(&db, "CREATE TABLE t (a int); ALTER TABLE t OWNER TO app").await;
    let mut failures = Vec::new();
    for stop in STOPS {
        for state in STATES {
            if stop == Stop::Timeout && !state.timeout_applies() {
                continue;
            }
            let r = case(mode, state, stop).await;
            eprintln!("{mode} {stop:?} in {state:?}: {r:?}");
            if let Err(e) = r {
                failures.push(format!("{mode}, {stop:?} in {state:?}: {e}"));
                // Start the next case clean.
                let kill = format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = '{db}' AND pid <> pg_backend_pid()"
                );
                on_pg(&db, &kill).await;
            }
        }
    }
    assert!(failures.is_empty(), "left behind:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stop_in_every_state_transaction_mode() {
    matrix("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stop_in_every_state_session_mode() {
    matrix("session").await;
}

/// Issue 11, exactly: psycopg 3's `cursor.execute("copy ... from stdin")` then `close()`, in
/// session and transaction mode; a new connection must lock the table at once (the script
/// fails after lock_timeout 5 s otherwise). Directly against Postgres first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_copy_abandoned_leaves_no_lock() {
    let db = "abandon_psycopg";
    sql_super("postgres", &format!("CREATE DATABASE {db} OWNER app")).await;
    let (script, limit) = ("psycopg_copy_abandon.py", Duration::from_secs(60));
    let direct = python_script(
        script,
        pg().port,
        db,
        limit,
        "psycopg COPY against Postgres",
    )
    .await;
    assert!(direct.ok, "directly: {}{}", direct.stdout, direct.stderr);
    for mode in ["session", "transaction"] {
        let extra = database_section(db, pg().port, "pool_size = 2");
        let mux = Mux::start(config(&format!("pool_mode = \"{mode}\""), &extra)).await;
        let what = format!("psycopg COPY through pgmux ({mode})");
        let via = python_script(script, mux.port(), db, limit, &what).await;
        assert!(
            via.ok,
            "{mode} mode: the table stayed locked:\n{}{}",
            via.stdout, via.stderr
        );
        assert_eq!(direct.stdout, via.stdout, "{mode} mode");
        mux.running.stop();
    }
}
