//! The pgmux process over its life: SIGHUP reloads without dropping clients (and refuses an
//! invalid config), SIGTERM drains, SHUTDOWN from the console, a so_reuseport restart under
//! pgbench with no failed transaction, JSON logs and the stats_period lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::process::Proc;
use crate::support::{free_port, pg, run};

/// A config file for the shared cluster's appdb (user app, admin user admin).
fn write_config(path: &Path, port: u16, general: &str, extra: &str) {
    let pg = pg();
    let text = format!(
        "[general]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\n\
         admin_users = [\"admin\"]\n{general}\n\
         [databases.appdb]\nport = {}\n{extra}\n\
         [users.app]\npassword = \"app_pw\"\n[users.admin]\npassword = \"admin_pw\"\n",
        pg.port
    );
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn connect(port: u16, user: &str, pw: &str, db: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user={user} password={pw} dbname={db}"),
        NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("connect {user}@{db}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// The value of `key` in the admin console's SHOW CONFIG.
async fn show_config(admin: &tokio_postgres::Client, key: &str) -> String {
    for m in admin.simple_query("SHOW CONFIG").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            if r.get("key") == Some(key) {
                return r.get("value").unwrap_or_default().to_string();
            }
        }
    }
    panic!("SHOW CONFIG has no {key}");
}

async fn one(c: &tokio_postgres::Client, sql: &str) -> String {
    for m in c.simple_query(sql).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or_default().to_string();
        }
    }
    panic!("no row from {sql}");
}

fn temp_config() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgmux.toml");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_dropping_clients_and_refuses_a_bad_config() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "default_pool_size = 2", "");
    let p = Proc::start(&path);
    let client = connect(port, "app", "app_pw", "appdb").await;
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&client, "SELECT 1").await, "1");
    let admin = connect(port, "admin", "admin_pw", "pgmux").await;
    assert_eq!(show_config(&admin, "default_pool_size").await, "2");
    let other_user = format!(
        "host=127.0.0.1 port={port} user=other password=other_pw dbname=appdb connect_timeout=5"
    );
    assert!(
        tokio_postgres::connect(&other_user, NoTls).await.is_err(),
        "a user not configured yet logged in"
    );

    // A valid change, a new database, a new user, and a key that needs a restart.
    write_config(
        &path,
        free_port(),
        "default_pool_size = 4\nquery_wait_timeout = 7",
        &format!(
            "[databases.otherdb]\nport = {}\n[users.other]\npassword = \"other_pw\"\n",
            pg().port
        ),
    );
    p.signal("-HUP");
    p.wait_log("config reloaded", 10);
    assert!(
        p.log().contains("listen_port changed") && p.log().contains("needs a restart"),
        "{}",
        p.log()
    );
    assert_eq!(show_config(&admin, "default_pool_size").await, "4");
    assert_eq!(show_config(&admin, "query_wait_timeout").await, "7");
    assert_eq!(show_config(&admin, "listen_port").await, port.to_string());
    // The client in its transaction went on, on the same server.
    assert_eq!(one(&client, "SELECT 2").await, "2");
    client.batch_execute("COMMIT").await.unwrap();
    let other = connect(port, "app", "app_pw", "otherdb").await;
    assert_eq!(one(&other, "SELECT current_database()").await, "otherdb");
    let (c, conn) = tokio_postgres::connect(&other_user, NoTls)
        .await
        .expect("the user added by the reload logs in");
    tokio::spawn(conn);
    assert_eq!(one(&c, "SELECT current_user").await, "other");

    // An invalid config is refused whole, its problem logged by key; the old one stays.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("default_pool_size = 4", "default_pool_size = \"many\""),
    )
    .unwrap();
    p.signal("-HUP");
    p.wait_log("reload refused", 10);
    assert!(p.log().contains("general.default_pool_size"), "{}", p.log());
    assert_eq!(show_config(&admin, "default_pool_size").await, "4");
    assert_eq!(one(&client, "SELECT 3").await, "3");
    // RELOAD on the console reads the same file, and says what failed.
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("general.default_pool_size"),
        "{e}"
    );
}

/// SIGTERM drains a transaction-mode pool: new clients are refused, an idle client goes at
/// once with 57P01, a client in a transaction finishes it and goes at its end, never in the
/// middle; then pgmux exits, well before shutdown_timeout.
/// A client logged in before a reload gets the new pool settings at its next request (the
/// request loop keeps them between requests: a reload must reach it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_clients_logged_in_before_it() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "", "");
    let p = Proc::start(&path);
    let client = connect(port, "app", "app_pw", "appdb").await;
    assert_eq!(one(&client, "SELECT 1").await, "1");
    write_config(&path, port, "idle_transaction_timeout = 1", "");
    p.signal("-HUP");
    p.wait_log("config reloaded", 10);
    client.batch_execute("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = client.simple_query("SELECT 2").await.unwrap_err();
    assert!(
        e.to_string().contains("idle_transaction_timeout")
            || e.as_db_error().is_some_and(|d| d.code().code() == "25P03")
            || e.is_closed(),
        "{e}"
    );
    assert!(p.log().contains("idle_transaction_timeout"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_clients_finish_then_exits() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "shutdown_timeout = 30", "");
    let mut p = Proc::start(&path);
    let connstr = format!("host=127.0.0.1 port={port} user=app password=app_pw dbname=appdb");
    let (busy, busy_conn) = tokio_postgres::connect(&connstr, NoTls).await.unwrap();
    let busy_conn = tokio::spawn(busy_conn);
    let (idle, idle_conn) = tokio_postgres::connect(&connstr, NoTls).await.unwrap();
    let idle_conn = tokio::spawn(idle_conn);
    assert_eq!(one(&idle, "SELECT 1").await, "1");
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let t0 = Instant::now();
    p.signal("-TERM");
    p.wait_log("stopped accepting clients", 10);
    // New clients are not accepted any more.
    let refused = tokio_postgres::connect(&format!("{connstr} connect_timeout=2"), NoTls).await;
    assert!(refused.is_err(), "a new client got in while draining");
    // The idle client goes first, told to connect again.
    let end = tokio::time::timeout(Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle client was not closed")
        .unwrap();
    let e = end.expect_err("the idle client's connection ends with an error");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57P01"),
        "{e}"
    );
    let msg = e.as_db_error().unwrap().message();
    assert!(msg.contains("connect again"), "{msg}");
    // The transaction goes on to its end...
    assert_eq!(one(&busy, "SELECT 41 + 1").await, "42");
    assert!(!p.exited(), "exited while a transaction was open");
    busy.batch_execute("COMMIT").await.unwrap();
    // ... and then its client goes, and pgmux exits.
    let end = tokio::time::timeout(Duration::from_secs(5), busy_conn)
        .await
        .expect("the client was not closed after its transaction")
        .unwrap();
    let e = end.expect_err("its connection ends with an error");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57P01"),
        "{e}"
    );
    assert!(p.wait_exit(10), "exit status:\n{}", p.log());
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "waited for shutdown_timeout"
    );
}

/// How a draining pgmux lets connection pools move without a failed request: a client that
/// checked its connection just before SIGTERM still runs the request that follows (an idle
/// client goes only once it has been quiet a moment); a connection check (an empty query) on
/// a draining pgmux is answered with 57P01, so the pool takes another connection; a client
/// left idle goes after about a second; a client that is never idle goes after the drain's
/// grace (5 s), with the answer that ends a transaction, never in the middle of one; a client
/// pinned to its server (a session advisory lock) keeps it, as in session mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_pools_move_their_connections_without_a_failed_request() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "shutdown_timeout = 30", "");
    let mut p = Proc::start(&path);
    let connstr = format!("host=127.0.0.1 port={port} user=app password=app_pw dbname=appdb");
    let connect = || async {
        let (c, conn) = tokio_postgres::connect(&connstr, NoTls).await.unwrap();
        (c, tokio::spawn(conn))
    };
    let (checked, _checked_conn) = connect().await;
    let (idle, idle_conn) = connect().await;
    let (busy, busy_conn) = connect().await;
    let (pinned, _pinned_conn) = connect().await;
    assert_eq!(one(&idle, "SELECT 1").await, "1");
    pinned
        .simple_query("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let pinned_loop = tokio::spawn(async move {
        let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                    AND objid = 4242 AND pid = pg_backend_pid()";
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(7) {
            assert_eq!(
                one(&pinned, held).await,
                "1",
                "the pinned client lost its lock"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pinned
    });
    // The busy client: a query every 50 ms, never idle long.
    let busy_loop = tokio::spawn(async move {
        let mut answered = 0u32;
        while busy.simple_query("SELECT 1").await.is_ok() {
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answered
    });
    // A pool hands `checked` out: it checks it...
    checked.simple_query("").await.unwrap();
    let t0 = Instant::now();
    p.signal("-TERM");
    p.wait_log("stopped accepting clients", 10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... and its request runs, though pgmux is draining.
    assert_eq!(one(&checked, "SELECT 41 + 1").await, "42");
    // The pool's next check is answered with 57P01: it takes another connection.
    let e = checked.simple_query("").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("57P01"), "{e}");
    // The idle client goes once quiet for about a second.
    let end = tokio::time::timeout(Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle client was not closed")
        .unwrap();
    let idle_went = t0.elapsed();
    let e = end.expect_err("the idle client's connection ends with an error");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57P01"),
        "{e}"
    );
    assert!(
        idle_went >= Duration::from_millis(900) && idle_went < Duration::from_secs(3),
        "the idle client went after {idle_went:?}"
    );
    // The busy client goes after the grace, with the answer to its last query.
    let end = tokio::time::timeout(Duration::from_secs(10), busy_conn)
        .await
        .expect("the busy client was not closed")
        .unwrap();
    let busy_went = t0.elapsed();
    let e = end.expect_err("the busy client's connection ends with an error");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57P01"),
        "{e}"
    );
    assert!(
        busy_went >= Duration::from_secs(5) && busy_went < Duration::from_secs(8),
        "the busy client went after {busy_went:?}"
    );
    assert!(
        busy_loop.await.unwrap() > 50,
        "the busy client was served meanwhile"
    );
    // The pinned client kept its server and its lock past the grace; it goes when it leaves.
    drop(pinned_loop.await.unwrap());
    assert!(p.wait_exit(10), "exit status:\n{}", p.log());
}

/// A client still inside a transaction when shutdown_timeout runs out is closed then, with
/// 57P01 (an idle one would have gone at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_clients_left_in_a_transaction_with_57p01() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "shutdown_timeout = 1", "");
    let mut p = Proc::start(&path);
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=app password=app_pw dbname=appdb"),
        NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let t0 = Instant::now();
    p.signal("-TERM");
    let end = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the client was not closed")
        .unwrap();
    let e = end.expect_err("the connection should end with an error");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("57P01"),
        "{e}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );
    assert!(p.wait_exit(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_exits_at_once_and_so_does_a_second_sigterm_or_a_sigint() {
    // (SIGINT alone is the safe shutdown: cli::signals_have_pgbouncer_meanings.)
    for signals in [
        &["-QUIT"][..],
        &["-TERM", "-TERM"][..],
        &["-TERM", "-INT"][..],
    ] {
        let port = free_port();
        let (_dir, path) = temp_config();
        write_config(&path, port, "shutdown_timeout = 60", "");
        let mut p = Proc::start(&path);
        let busy = connect(port, "app", "app_pw", "appdb").await;
        busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
        for sig in signals {
            p.signal(sig);
            if signals.len() > 1 {
                p.wait_log("shutting down: waiting for clients", 10);
            }
        }
        // A client in a transaction does not hold the process up.
        assert!(p.wait_exit(5), "{signals:?}: {}", p.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_on_the_console_exits() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "", "");
    let mut p = Proc::start(&path);
    let admin = connect(port, "admin", "admin_pw", "pgbouncer").await;
    let _ = admin.simple_query("SHUTDOWN").await;
    assert!(p.wait_exit(10), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_stats_period_lines() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "log_format = \"json\"\nstats_period = 1", "");
    let p = Proc::start(&path);
    let client = connect(port, "app", "app_pw", "appdb").await;
    for _ in 0..5 {
        one(&client, "SELECT 1").await;
    }
    p.wait_log("\"xacts_per_s\"", 10);
    let log = p.log();
    let mut stats = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
        if v["message"].as_str().unwrap_or("").starts_with("stats:") {
            stats += 1;
            assert_eq!(v["db"], "appdb", "{line}");
            assert!(
                v.get("maxwait_s").is_some() && v.get("cl_waiting").is_some(),
                "{line}"
            );
        }
    }
    assert!(stats >= 1, "no stats line:\n{log}");
}

/// pgbench against `port` (database restartdb), in a thread.
fn pgbench(port: u16, args: &[&str]) -> std::thread::JoinHandle<(bool, String, String)> {
    let args = args.join(" ");
    std::thread::spawn(move || {
        run(Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec pgbench -h 127.0.0.1 -p {port} -U app {args} restartdb"
            ))
            .env("PGPASSWORD", "app_pw"))
    })
}

/// Best effort: let a closing SO_REUSEPORT listener hand its queued connections to the
/// others (Linux 5.14+; the README's restart recipe sets it). Returns the old value.
fn migrate_req(v: &str) -> Option<String> {
    let path = "/proc/sys/net/ipv4/tcp_migrate_req";
    let old = std::fs::read_to_string(path).ok()?;
    std::fs::write(path, v).ok()?;
    Some(old.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_restart_under_pgbench_loses_no_transaction() {
    let pg = pg();
    pg.psql_super("postgres", "CREATE DATABASE restartdb OWNER app");
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(
        &path,
        port,
        "so_reuseport = true\nshutdown_timeout = 30\nshutdown_clients = \"wait\"",
        &format!("[databases.restartdb]\nport = {}\n", pg.port),
    );
    let mut old = Proc::start(&path);
    let (ok, _, err) = pgbench(port, &["-i", "-s", "1", "-q"]).join().unwrap();
    assert!(ok, "pgbench -i: {err}");
    let saved = migrate_req("1");

    // Clients that reconnect for each transaction (-C) move to the new process; clients
    // that stay connected finish on the old one, which exits once they are gone.
    let reconnecting = pgbench(port, &["-n", "-S", "-C", "-c", "4", "-j", "2", "-T", "6"]);
    let staying = pgbench(port, &["-n", "-S", "-c", "4", "-j", "1", "-T", "6"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new = Proc::start(&path);
    // As a rolling restart does: the old one stops once the new one serves (its first login
    // opens a server, which in a debug build on a loaded machine takes a while).
    new.wait_log("client login", 10);
    old.signal("-TERM");
    old.wait_log("stopped accepting clients", 10);
    let logins_after_term = new.log().matches("client login").count();
    for (what, h) in [("pgbench -C", reconnecting), ("pgbench", staying)] {
        let (ok, out, err) = h.join().unwrap();
        assert!(ok, "{what} failed:\n{out}\n{err}\nold:\n{}", old.log());
        assert!(
            out.contains("number of failed transactions: 0 "),
            "{what}:\n{out}"
        );
    }
    assert!(old.wait_exit(10), "old pgmux:\n{}", old.log());
    assert!(
        logins_after_term > 0 && new.log().matches("client login").count() > logins_after_term,
        "the new pgmux served no clients after the restart:\n{}",
        new.log()
    );
    if let Some(v) = saved {
        migrate_req(&v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_or_show_config() {
    let port = free_port();
    let (dir, path) = temp_config();
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(&userlist, "\"other\" \"other_pw\"\n").unwrap();
    write_config(
        &path,
        port,
        &format!(
            "auth_file = \"{}\"\nauth_failure_delay = 0",
            userlist.display()
        ),
        "",
    );
    let p = Proc::start(&path);
    let _ok = connect(port, "app", "app_pw", "appdb").await;
    let _other = connect(port, "other", "other_pw", "appdb").await;
    for (user, guess) in [("app", "guess-pw-xyz"), ("nobody", "guess-pw-abc")] {
        let r = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user={user} password={guess} dbname=appdb"),
            NoTls,
        )
        .await;
        assert!(r.is_err());
    }
    let admin = connect(port, "admin", "admin_pw", "pgmux").await;
    let mut config_text = String::new();
    for m in admin.simple_query("SHOW CONFIG").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                config_text.push_str(r.get(i).unwrap_or_default());
                config_text.push('\n');
            }
        }
    }
    p.wait_log("client login failed", 10);
    let log = p.log();
    for secret in [
        "app_pw",
        "other_pw",
        "admin_pw",
        "guess-pw-xyz",
        "guess-pw-abc",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(!config_text.contains(secret), "{secret} in SHOW CONFIG");
    }
}

/// `workers = 1` runs pgmux on a single-threaded runtime (one event loop, as PgBouncer): 16
/// clients share a pool of 2 (so most of them wait for a server), every query answered, and
/// SIGTERM drains and exits cleanly as on the multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_threaded_runtime_serves_waiting_clients_and_drains() {
    let port = free_port();
    let (_dir, path) = temp_config();
    write_config(&path, port, "workers = 1\ndefault_pool_size = 2", "");
    let mut p = Proc::start(&path);
    let mut tasks = Vec::new();
    for i in 0..16 {
        tasks.push(tokio::spawn(async move {
            let c = connect(port, "app", "app_pw", "appdb").await;
            for j in 0..25 {
                let sql = format!("SELECT {i} * 100 + {j}");
                assert_eq!(one(&c, &sql).await, (i * 100 + j).to_string());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    p.signal("-TERM");
    assert!(p.wait_exit(10), "pgmux did not exit 0:\n{}", p.log());
}
