//! Integration tests: faults (clients and servers that vanish, restarts, garbage, timeouts).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::client::{
    code, conn_end, connect_ok, one, rows, sql_super, tp_config, tp_connect_ok,
};
use crate::support::raw::{self, error_of, read_to_close};
use crate::support::{
    config, custom_config, db_entry, eventually, free_port, ConfigBuilder, Mux, PrivatePg,
};

/// A config (harness config) with a `onedb` entry: appdb with pool_size = 1.
fn one_pool_config(extra_general: &str) -> pgmux::config::Config {
    config(extra_general, &db_entry("onedb", "appdb", "pool_size = 1"))
}

/// pgmux with [`one_pool_config`], and a client config for app (with its password) on onedb.
async fn one_pool(extra_general: &str) -> (Mux, tokio_postgres::Config) {
    let mux = Mux::start(one_pool_config(extra_general)).await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "onedb");
    (mux, cfg)
}

/// A raw client logged in (trust) as app to onedb, the pool of one server.
async fn login_onedb(port: u16) -> TcpStream {
    raw::login_trust(port, &[("user", "app"), ("database", "onedb")])
        .await
        .0
}

/// Wait until the onedb pool has one server, and that one idle.
async fn one_idle_server(mux: &Mux, what: &str) {
    eventually(5, what, || {
        let c = mux.counts("onedb", "app").unwrap();
        c.open == 1 && c.active == 0
    })
    .await;
}

/// A new client (`cfg`) finds a clean server with `table` empty (see
/// [`assert_clean_server`]), and the onedb pool settles to one idle server.
async fn next_client_finds_clean_server(
    mux: &Mux,
    cfg: &tokio_postgres::Config,
    table: &str,
    what: &str,
) {
    let (c, _h) = tp_connect_ok(cfg).await;
    assert_clean_server(&c, table, 0).await;
    one_idle_server(mux, what).await;
}

/// Create a fresh table owned by app (through a direct superuser connection).
async fn fresh_table(name: &str) {
    sql_super(
        "appdb",
        &format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int); ALTER TABLE {name} OWNER TO app"),
    )
    .await;
}

/// Whether a backend with this pid exists.
async fn backend_exists(pid: &str) -> bool {
    sql_super(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
    )
    .await
        == "1"
}

async fn wait_backend_gone(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend_exists(pid).await {
        assert!(Instant::now() < deadline, "backend {pid} did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server a fresh client on the pool sees is clean: no transaction open (implicit
/// transaction of this very statement only), no xid assigned, and `table` has `rows` rows and
/// is not locked.
async fn assert_clean_server(c: &tokio_postgres::Client, table: &str, expect_rows: usize) {
    let r = rows(
        c,
        "SELECT txid_current_if_assigned() IS NULL, now() = statement_timestamp()",
    )
    .await;
    assert_eq!(
        r,
        [[Some("t".to_string()), Some("t".to_string())]],
        "the next client found a transaction left open"
    );
    let r = rows(
        c,
        &format!(
            "BEGIN; SET LOCAL lock_timeout = '2s'; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; \
             SELECT count(*) FROM {table}; COMMIT"
        ),
    )
    .await;
    assert_eq!(r, [[Some(expect_rows.to_string())]]);
}

// ---------------------------------------------------------------------------------------------
// 1. A client leaving in the middle of a transaction
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropped_mid_transaction_is_rolled_back() {
    fresh_table("faults_midtx_drop").await;
    let (mux, cfg) = one_pool("").await;

    // tokio-postgres sends Terminate when the client is dropped.
    let (a, ha) = tp_connect_ok(&cfg).await;
    rows(&a, "BEGIN").await;
    rows(&a, "INSERT INTO faults_midtx_drop VALUES (1)").await;
    rows(&a, "LOCK TABLE faults_midtx_drop IN ACCESS EXCLUSIVE MODE").await;
    drop(a);
    let _ = tokio::time::timeout(Duration::from_secs(5), ha).await;

    next_client_finds_clean_server(
        &mux,
        &cfg,
        "faults_midtx_drop",
        "pool back to one idle server",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_socket_closed_mid_transaction_is_rolled_back() {
    fresh_table("faults_midtx_close").await;
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let port = mux.port();

    // No Terminate: the socket just closes while the transaction is open.
    let mut s = login_onedb(port).await;
    let msgs = raw::simple_query(&mut s, "BEGIN; INSERT INTO faults_midtx_close VALUES (1)").await;
    assert_eq!(msgs.last().unwrap().1, b"T");
    drop(s);

    let (b, _hb) = connect_ok(port, "app", "", "onedb").await;
    assert_clean_server(&b, "faults_midtx_close", 0).await;

    // A transaction that failed (status 'E') and is then abandoned.
    let mut s = login_onedb(port).await;
    raw::send(
        &mut s,
        &raw::query("BEGIN; INSERT INTO faults_midtx_close VALUES (2); SELECT 1/0"),
    )
    .await;
    let msgs = raw::read_through_ready(&mut s).await;
    assert_eq!(msgs.last().unwrap().1, b"E");
    drop(s);
    assert_clean_server(&b, "faults_midtx_close", 0).await;

    // A client that vanishes while its query still runs.
    let mut s = login_onedb(port).await;
    raw::send(
        &mut s,
        &raw::query("BEGIN; INSERT INTO faults_midtx_close VALUES (3); SELECT pg_sleep(0.5)"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    assert_clean_server(&b, "faults_midtx_close", 0).await;
    eventually(5, "pool settles", || {
        let c = mux.counts("onedb", "app").unwrap();
        c.open <= 1 && c.active == 0
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2., 3. Servers terminated by Postgres
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_terminated_is_replaced() {
    let mux = Mux::start(one_pool_config("")).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "onedb").await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    // Only this pool's server: other tests share the cluster.
    assert_eq!(
        sql_super("postgres", &format!("SELECT pg_terminate_backend({pid})")).await,
        "t"
    );
    wait_backend_gone(&pid).await;

    assert_eq!(
        one(&c, "SELECT 1").await,
        "1",
        "the client's next query works"
    );
    let pid2 = one(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(pid, pid2, "a fresh server");
    // The server goes back to the pool right after its ReadyForQuery reached the client.
    one_idle_server(&mux, "one open, idle server").await;
    // Another client too.
    let (d, _hd) = connect_ok(mux.port(), "app", "app_pw", "onedb").await;
    assert_eq!(one(&d, "SELECT pg_backend_pid()").await, pid2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_during_query_errors_the_client() {
    let (mux, cfg) = one_pool("").await;
    let (c, h) = tp_connect_ok(&cfg).await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    let started = Instant::now();
    // An answer (the first statement's row) comes before the kill, so the request may have
    // done something: it is not re-sent (see churn.rs for the requests that are).
    let q = tokio::spawn(async move {
        let r = c.simple_query("SELECT 1; SELECT pg_sleep(5)").await;
        (r.map(|_| ()), c)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sql_super("postgres", &format!("SELECT pg_terminate_backend({pid})")).await;
    let (r, c) = tokio::time::timeout(Duration::from_secs(4), q)
        .await
        .expect("the client hangs after its server died")
        .unwrap();
    let e = r.expect_err("the query must fail");
    assert!(started.elapsed() < Duration::from_secs(4));
    // Postgres' own FATAL (57P01) is relayed first; pgmux then closes the client.
    let conn = conn_end(h, "the connection did not end").await;
    let code = code(&e).or_else(|| conn.as_ref().err().and_then(code));
    assert!(
        matches!(code.as_deref(), Some("57P01") | Some("08006")),
        "error: {e}, connection: {conn:?}"
    );
    assert!(c.is_closed() || c.simple_query("SELECT 1").await.is_err());

    let (d, _hd) = tp_connect_ok(&cfg).await;
    assert_eq!(one(&d, "SELECT 1").await, "1");
    one_idle_server(&mux, "pool settles").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_terminated_while_client_idle_in_transaction() {
    fresh_table("faults_kill_in_tx").await;
    let (mux, cfg) = one_pool("").await;
    let (c, h) = tp_connect_ok(&cfg).await;
    rows(&c, "BEGIN; INSERT INTO faults_kill_in_tx VALUES (1)").await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    sql_super("postgres", &format!("SELECT pg_terminate_backend({pid})")).await;
    wait_backend_gone(&pid).await;
    // The client learns about it (Postgres' FATAL is relayed at once, the connection ends).
    let conn = conn_end(h, "the client was not told its server died").await;
    let e = conn.expect_err("connection ends with an error");
    assert_eq!(code(&e).as_deref(), Some("57P01"), "{e}");
    assert!(c.simple_query("SELECT 1").await.is_err());

    next_client_finds_clean_server(&mux, &cfg, "faults_kill_in_tx", "pool settles").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_while_waiting_for_a_server() {
    fresh_table("faults_waiter_left").await;
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let port = mux.port();
    let cfg = tp_config(port, "app", "", "onedb");
    let (a, _ha) = tp_connect_ok(&cfg).await;
    rows(&a, "BEGIN; SELECT 1").await;
    // Two clients queue for the single server, then give up and disconnect.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut s = login_onedb(port).await;
        raw::send(
            &mut s,
            &raw::query("INSERT INTO faults_waiter_left VALUES (1)"),
        )
        .await;
        waiting.push(s);
    }
    eventually(5, "two waiters", || {
        mux.counts("onedb", "app").unwrap().waiting == 2
    })
    .await;
    drop(waiting);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting_after = mux.counts("onedb", "app").unwrap().waiting;
    rows(&a, "COMMIT").await;
    let (c, _hc) = tp_connect_ok(&cfg).await;
    let inserted = one(&c, "SELECT count(*) FROM faults_waiter_left").await;
    let counts = mux.counts("onedb", "app").unwrap();
    assert_eq!(
        (counts.open, counts.active, counts.waiting),
        (1, 0, 0),
        "{counts:?}"
    );
    assert_eq!(
        (waiting_after, inserted.as_str()),
        (0, "0"),
        "(clients still queued 500 ms after disconnecting, rows the departed clients inserted)"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Postgres restart (a private cluster: the shared one serves tests running in parallel)
// ---------------------------------------------------------------------------------------------

/// A trust config for the private cluster's `postgres` database and user, pool size 3; a
/// client waits at most 2 s for a server (also while Postgres is down).
fn private_config(private: &PrivatePg) -> pgmux::config::Config {
    ConfigBuilder::new()
        .general("auth_type = \"trust\"\ndefault_pool_size = 3\nquery_wait_timeout = 2")
        .database("postgres", private.port, "")
        .user("postgres", None)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_without_restarting_pgmux() {
    let private = tokio::task::spawn_blocking(|| PrivatePg::start("restart"))
        .await
        .unwrap();
    let mux = Mux::start(private_config(&private)).await;
    let cfg = tp_config(mux.port(), "postgres", "", "postgres");

    // Two idle servers in the pool, and a client idle between transactions.
    let (a, _ha) = tp_connect_ok(&cfg).await;
    let (b, _hb) = tp_connect_ok(&cfg).await;
    rows(&a, "BEGIN; SELECT pg_sleep(0.2)").await;
    rows(&b, "SELECT 1").await;
    rows(&a, "COMMIT").await;
    let old_pid = one(&a, "SELECT pg_backend_pid()").await;
    assert_eq!(mux.counts("postgres", "postgres").unwrap().open, 2);
    // A client holding a server inside a transaction during the restart.
    let (t, ht) = tp_connect_ok(&cfg).await;
    rows(&t, "BEGIN; SELECT 1").await;

    let private = tokio::task::spawn_blocking(move || {
        private.restart();
        private
    })
    .await
    .unwrap();

    // The idle client never held a dead server: its next query just works.
    assert_eq!(one(&a, "SELECT 1").await, "1");
    assert_ne!(one(&a, "SELECT pg_backend_pid()").await, old_pid);
    assert_eq!(one(&b, "SELECT 2").await, "2");
    // The client inside a transaction lost it: one error, then its connection is closed.
    let e = tokio::time::timeout(Duration::from_secs(5), t.simple_query("SELECT 1"))
        .await
        .expect("hang after restart");
    assert!(e.is_err(), "a transaction cannot survive a restart");
    let _ = tokio::time::timeout(Duration::from_secs(5), ht)
        .await
        .expect("connection ends");
    // New clients work.
    let (c, _hc) = tp_connect_ok(&cfg).await;
    assert_eq!(one(&c, "SELECT 3").await, "3");
    eventually(5, "dead servers dropped", || {
        let c = mux.counts("postgres", "postgres").unwrap();
        c.active == 0 && c.open <= 3
    })
    .await;

    // Postgres stopped for good: a logged-in client's next query waits for a server until
    // query_wait_timeout, then gets an error naming the connect error, not a hang.
    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        private
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), a.simple_query("SELECT 1"))
        .await
        .expect("hang with Postgres down");
    let e = r.expect_err("Postgres is down");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {e}"));
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(
        db.message().contains("query_wait_timeout") && db.message().contains("refused"),
        "{}",
        db.message()
    );
    drop(private);
}

// ---------------------------------------------------------------------------------------------
// 5. Garbage
// ---------------------------------------------------------------------------------------------

/// Panics raised in pgmux's own code (`src/...`), recorded by a panic hook installed once
/// for this test binary (it chains to the previous hook). Client tasks are spawned, so a panic
/// there would otherwise only show in the output.
fn pgmux_panics() -> Vec<String> {
    static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static HOOK: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    HOOK.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(loc) = info.location() {
                if loc.file().starts_with("src/") || loc.file().contains("/main/src/") {
                    let msg = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    PANICS.lock().unwrap().push(format!("{loc}: {msg}"));
                }
            }
            prev(info)
        }));
    });
    PANICS.lock().unwrap().clone()
}

/// After a broken client, pgmux serves a normal one and the pool is not leaking.
async fn still_serving(mux: &Mux, db: &str) {
    let (c, _h) = connect_ok(mux.port(), "app", "", db).await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
    drop(c);
    eventually(5, "no server left checked out", || {
        mux.counts(db, "app").map_or(true, |c| c.active == 0)
    })
    .await;
}

/// Read until close; the first message is an ErrorResponse with `code` (or nothing at all
/// when `code` is None).
async fn expect_error_then_close(s: &mut TcpStream, code: Option<&str>, what: &str) {
    let msgs = read_to_close(s).await;
    match code {
        None => assert!(
            msgs.is_empty(),
            "{what}: expected a clean close, got {}",
            raw::tags(&msgs)
        ),
        Some(code) => {
            assert!(
                !msgs.is_empty() && msgs[0].0 == b'E',
                "{what}: got {}",
                raw::tags(&msgs)
            );
            let (c, m, sev) = error_of(&msgs).unwrap();
            assert_eq!(c, code, "{what}: {m}");
            assert_eq!(sev, "FATAL", "{what}: {m}");
        }
    }
}

/// Connect, send `bytes` (and then close our side with `shutdown`), and expect what
/// [`expect_error_then_close`] expects.
async fn garbage(port: u16, bytes: &[u8], shutdown: bool, code: Option<&str>, what: &str) {
    let mut s = raw::connect(port).await;
    raw::send(&mut s, bytes).await;
    if shutdown {
        s.shutdown().await.unwrap();
    }
    expect_error_then_close(&mut s, code, what).await;
}

/// The first 8 bytes of a protocol 3.0 StartupMessage claiming length `len`.
fn startup_header(len: u32) -> Vec<u8> {
    let mut p = len.to_be_bytes().to_vec();
    p.extend_from_slice(&196608i32.to_be_bytes());
    p
}

fn trust_config_1k_packets() -> pgmux::config::Config {
    custom_config("auth_type = \"trust\"\nmax_packet_size = 1024", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_login() {
    pgmux_panics();
    let mux = Mux::start(trust_config_1k_packets()).await;
    let port = mux.port();

    garbage(
        port,
        b"GET / HTTP/1.1\r\n\r\n",
        false,
        Some("08P01"),
        "HTTP request",
    )
    .await;

    // A start-up length over the limit (10000): refused from the first 8 bytes.
    let p = startup_header(20_000);
    garbage(port, &p, false, Some("08P01"), "start-up length 20000").await;

    // Lengths below the minimum.
    for len in [0u32, 3, 4, 7] {
        let what = format!("start-up length {len}");
        garbage(port, &startup_header(len), false, Some("08P01"), &what).await;
    }

    // Unknown protocol version.
    let p = raw::startup_v(2 << 16, &[("user", "app")]);
    garbage(port, &p, false, Some("08P01"), "protocol 2.0").await;

    // A start-up packet whose parameters are not terminated.
    let mut p = raw::startup(&[("user", "app"), ("database", "appdb")]);
    let n = p.len();
    p[n - 1] = b'x';
    garbage(port, &p, false, Some("08P01"), "unterminated parameters").await;

    // A truncated start-up packet, then close: pgmux just closes too.
    let p = raw::startup(&[("user", "app"), ("database", "appdb")]);
    garbage(port, &p[..p.len() / 2], true, None, "truncated start-up").await;

    // Half an SSLRequest, then close.
    let p = raw::request(80877103);
    garbage(port, &p[..5], true, None, "truncated SSLRequest").await;

    // Bytes pipelined after an SSLRequest (before the answer): refused.
    let mut p = raw::request(80877103);
    p.extend_from_slice(&raw::startup(&[("user", "app"), ("database", "appdb")]));
    garbage(port, &p, false, Some("08P01"), "data after SSLRequest").await;

    // Garbage where the password should be (auth_type scram on another instance).
    let scram = Mux::start(config("", "")).await;
    let sasl = || raw::auth_request(scram.port(), &[("user", "app"), ("database", "appdb")]);
    let (mut s, m) = sasl().await;
    assert_eq!(raw::auth_code(&m), 10);
    raw::send(&mut s, &[b'p', 0xff, 0xff, 0xff, 0xff]).await;
    expect_error_then_close(&mut s, Some("08P01"), "huge SASL message").await;
    let (mut s, _) = sasl().await;
    raw::send(&mut s, &raw::msg(b'p', b"NOT-A-MECHANISM\0\0\0\0\0")).await;
    expect_error_then_close(&mut s, Some("08P01"), "bad SASL mechanism").await;
    let (mut s, _) = sasl().await;
    raw::send(&mut s, &raw::msg(b'p', b"SCRAM-SHA-256\0\0\0\0\x05n,,xx")).await;
    expect_error_then_close(&mut s, Some("08P01"), "bad client-first-message").await;
    scram
        .connect()
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();

    still_serving(&mux, "appdb").await;
    assert_eq!(pgmux_panics(), Vec::<String>::new(), "pgmux panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_login() {
    pgmux_panics();
    let mux = Mux::start(trust_config_1k_packets()).await;
    let port = mux.port();

    // Over max_packet_size (1024), between transactions.
    let mut s = login_onedb(port).await;
    raw::send(&mut s, &[b'Q', 0, 0, 0x07, 0xd0, b'S', b'E']).await;
    expect_error_then_close(&mut s, Some("08P01"), "2000-byte Query, idle").await;
    still_serving(&mux, "onedb").await;

    // A length below 4.
    for len in [0u8, 3] {
        let mut s = login_onedb(port).await;
        raw::send(&mut s, &[b'Q', 0, 0, 0, len]).await;
        expect_error_then_close(&mut s, Some("08P01"), &format!("Query length {len}")).await;
    }
    still_serving(&mux, "onedb").await;

    // Over max_packet_size inside a transaction: the server is not reused with the
    // transaction open.
    fresh_table("faults_garbage_tx").await;
    let mut s = login_onedb(port).await;
    assert_eq!(
        raw::simple_query(&mut s, "BEGIN; INSERT INTO faults_garbage_tx VALUES (1)")
            .await
            .last()
            .unwrap()
            .1,
        b"T"
    );
    raw::send(&mut s, &[b'Q', 0x7f, 0xff, 0xff, 0xff]).await;
    expect_error_then_close(&mut s, Some("08P01"), "huge Query in a transaction").await;
    let (c, _h) = connect_ok(port, "app", "", "onedb").await;
    assert_clean_server(&c, "faults_garbage_tx", 0).await;
    drop(c);

    // A truncated message, then close: between transactions and inside one.
    let mut s = login_onedb(port).await;
    let q = raw::query("SELECT 'this message never ends'");
    raw::send(&mut s, &q[..12]).await;
    s.shutdown().await.unwrap();
    expect_error_then_close(&mut s, None, "truncated Query").await;
    still_serving(&mux, "onedb").await;

    let mut s = login_onedb(port).await;
    assert_eq!(
        raw::simple_query(&mut s, "BEGIN; INSERT INTO faults_garbage_tx VALUES (2)")
            .await
            .last()
            .unwrap()
            .1,
        b"T"
    );
    raw::send(&mut s, &q[..3]).await;
    s.shutdown().await.unwrap();
    expect_error_then_close(&mut s, None, "truncated Query in a transaction").await;
    let (c, _h) = connect_ok(port, "app", "", "onedb").await;
    assert_clean_server(&c, "faults_garbage_tx", 0).await;
    drop(c);

    // An unknown message type reaches Postgres, which answers FATAL 08P01.
    let mut s = login_onedb(port).await;
    raw::send(&mut s, &raw::msg(b'!', b"hello")).await;
    expect_error_then_close(&mut s, Some("08P01"), "unknown message type").await;
    still_serving(&mux, "onedb").await;

    let c = mux.counts("onedb", "app").unwrap();
    assert!(c.open <= 1 && c.active == 0, "{c:?}");
    assert_eq!(pgmux_panics(), Vec::<String>::new(), "pgmux panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_closes_silent_client() {
    let mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nclient_login_timeout = 1",
        "",
    ))
    .await;
    let started = Instant::now();
    let mut s = raw::connect(mux.port()).await;
    expect_error_then_close(&mut s, Some("08P01"), "silent client").await;
    assert!(started.elapsed() < Duration::from_secs(4));
    still_serving(&mux, "appdb").await;
}

// ---------------------------------------------------------------------------------------------
// 6. Terminate is not forwarded
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_keeps_the_server_in_the_pool() {
    let (mux, cfg) = one_pool("").await;
    let (c, h) = tp_connect_ok(&cfg).await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    // tokio-postgres sends Terminate ('X') when the client is dropped.
    drop(c);
    conn_end(h, "the connection did not end").await.unwrap();
    eventually(5, "client gone", || mux.clients() == 0).await;
    let counts = mux.counts("onedb", "app").unwrap();
    assert_eq!(
        (counts.open, counts.idle, counts.active),
        (1, 1, 0),
        "{counts:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        backend_exists(&pid).await,
        "the server connection was closed"
    );

    // Terminate inside a transaction: rolled back, server kept.
    let trust = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let mut s = login_onedb(trust.port()).await;
    let sock = &mut s;
    let msgs = raw::simple_query(sock, "SELECT pg_backend_pid()").await;
    let pid2 = String::from_utf8(msgs[1].1[6..].to_vec()).unwrap();
    assert_eq!(
        raw::simple_query(sock, "BEGIN; SELECT txid_current()")
            .await
            .last()
            .unwrap()
            .1,
        b"T"
    );
    raw::send(sock, &raw::msg(b'X', b"")).await;
    let rest = read_to_close(sock).await;
    assert!(
        rest.is_empty(),
        "nothing after Terminate, got {}",
        raw::tags(&rest)
    );
    eventually(5, "server back in the pool", || {
        let c = trust.counts("onedb", "app").unwrap();
        (c.open, c.idle, c.active) == (1, 1, 0)
    })
    .await;
    assert!(
        backend_exists(&pid2).await,
        "the server connection was closed"
    );
    let (c, _h) = connect_ok(trust.port(), "app", "", "onedb").await;
    assert_eq!(one(&c, "SELECT pg_backend_pid()").await, pid2);
    let r = rows(&c, "SELECT txid_current_if_assigned() IS NULL").await;
    assert_eq!(
        r,
        [[Some("t".to_string())]],
        "transaction left open after Terminate"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. client_idle_timeout and idle_transaction_timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_client_that_never_queried() {
    let mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nclient_idle_timeout = 1",
        "",
    ))
    .await;
    let mut socks = Vec::new();
    for _ in 0..5 {
        socks.push(
            raw::login_trust(mux.port(), &[("user", "app"), ("database", "appdb")])
                .await
                .0,
        );
    }
    let started = Instant::now();
    for s in socks.iter_mut() {
        expect_error_then_close(s, Some("57P05"), "idle client").await;
    }
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(4)).contains(&elapsed),
        "{elapsed:?}"
    );
    eventually(5, "clients gone", || mux.clients() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients_after_queries() {
    // 40 clients run 1-3 queries each, then stay idle; each must get FATAL 57P05 about 1 s
    // later. Usually a few are never closed and keep answering queries.
    let mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nclient_idle_timeout = 1",
        "",
    ))
    .await;
    let cfg = tp_config(mux.port(), "app", "", "appdb");
    // Busy CPUs make the race (a server reply readable before the client socket is polled
    // again) much more likely.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut hs = Vec::new();
    for i in 0..40 {
        let (c, h) = tp_connect_ok(&cfg).await;
        for _ in 0..=(i % 3) {
            assert_eq!(one(&c, "SELECT 1").await, "1");
        }
        hs.push((c, h));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let started = Instant::now();
    let res = futures_util::future::join_all(hs.iter_mut().map(|(_c, h)| async move {
        match tokio::time::timeout(Duration::from_secs(3), h).await {
            Ok(r) => Some(r.unwrap().err().and_then(|e| code(&e))),
            Err(_) => None,
        }
    }))
    .await;
    let mut stuck = Vec::new();
    for (i, r) in res.iter().enumerate() {
        match r {
            Some(code) => assert_eq!(code.as_deref(), Some("57P05"), "client {i}"),
            None => {
                // Still alive and served long after its timeout.
                let alive = hs[i].0.simple_query("SELECT 1").await.is_ok();
                stuck.push((i, alive));
            }
        }
    }
    assert!(
        stuck.is_empty(),
        "clients (index, still answers queries) never closed by client_idle_timeout = 1 \
         after {:?}: {stuck:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_spares_active_client() {
    let (mux, cfg) = one_pool("client_idle_timeout = 1").await;
    // A client that keeps talking is not closed.
    let (c, h) = tp_connect_ok(&cfg).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(one(&c, "SELECT 1").await, "1");
    }
    // Nor one whose query runs longer than the timeout.
    assert_eq!(one(&c, "SELECT pg_sleep(1.5)::text || 'ok'").await, "ok");
    assert!(!h.is_finished());
    let counts = mux.counts("onedb", "app").unwrap();
    assert_eq!((counts.open, counts.active), (1, 0), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_rolls_back() {
    fresh_table("faults_idle_tx").await;
    let (_mux, cfg) = one_pool("idle_transaction_timeout = 1").await;
    let (c, h) = tp_connect_ok(&cfg).await;
    rows(&c, "BEGIN").await;
    rows(&c, "INSERT INTO faults_idle_tx VALUES (1)").await;
    let started = Instant::now();
    let conn = conn_end(h, "idle_transaction_timeout did not fire").await;
    assert!(started.elapsed() >= Duration::from_millis(800));
    let e = conn.expect_err("the connection ends with an error");
    assert_eq!(code(&e).as_deref(), Some("25P03"), "{e}");

    let (d, _hd) = tp_connect_ok(&cfg).await;
    assert_clean_server(&d, "faults_idle_tx", 0).await;
    // Idle between transactions is fine with only idle_transaction_timeout set.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(one(&d, "SELECT 1").await, "1");
    // A long query is not "idle in transaction".
    assert_eq!(
        rows(&d, "BEGIN; SELECT pg_sleep(1.5); SELECT 2; COMMIT")
            .await
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_first_login_gets_an_error() {
    // Nothing listens on `dead`. The pool has no welcome parameters yet, so login opens a
    // server; the connect error is an Error::Io and send_fatal sends nothing for Io errors.
    let dead = free_port();
    let extra =
        format!("[databases.deaddb]\nhost = \"127.0.0.1\"\nport = {dead}\ndbname = \"appdb\"\n");
    let mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nserver_connect_timeout = 2\nquery_wait_timeout = 1",
        &extra,
    ))
    .await;
    let mut s = raw::start(mux.port(), &[("user", "app"), ("database", "deaddb")]).await;
    let msgs = read_to_close(&mut s).await;
    let (code, msg, sev) = error_of(&msgs).unwrap_or_else(|| {
        panic!(
            "closed without an ErrorResponse; got '{}'",
            raw::tags(&msgs)
        )
    });
    assert_eq!(sev, "FATAL", "{msg}");
    assert!(code.starts_with("08") || code == "57P03", "{code}: {msg}");
    // pgmux keeps serving other databases.
    still_serving(&mux, "appdb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_timeout_while_a_server_is_opening_frees_its_slot() {
    // A "server" that accepts and never answers: the first client's server login hangs.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_port = stall.local_addr().unwrap().port();
    let held = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = stall.accept().await {
            keep.lock().await.push(s);
        }
    });
    let mux = Mux::start(
        ConfigBuilder::new()
            .general(
                "auth_type = \"trust\"\nclient_login_timeout = 0.5\nserver_connect_timeout = 30",
            )
            .database("stalled", stall_port, "pool_size = 1")
            .user("app", None)
            .build(),
    )
    .await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port())).await.unwrap();
        raw::send(
            &mut s,
            &pgmux::proto::startup::build(&[("user", "app"), ("database", "stalled")]),
        )
        .await;
        let _ = read_to_close(&mut s).await;
    }
    // Both logins gave up; neither left a slot counted as open or checked out.
    eventually(5, "slots freed", || {
        let c = mux.counts("stalled", "app").unwrap();
        c.open == 0 && c.active == 0 && c.waiting == 0
    })
    .await;
    assert_eq!(
        held.lock().await.len(),
        2,
        "each login tried its own server"
    );
}
