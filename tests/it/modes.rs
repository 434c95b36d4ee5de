//! Integration tests: pool modes (transaction, session, statement) and the relay — parameter
//! sync, notices and notifications, COPY, empty queries, extended protocol with Flush,
//! pipelining, cancel requests, and large results with a slow reader.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pgmux::config::Config;
use tokio::io::AsyncReadExt;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

use crate::support::client::code;
use crate::support::raw::{
    self, bind, cstr, data_row_first, describe_statement, execute, flush, msg, parse, query, sync,
    tags, Raw,
};
use crate::support::simple::{col, one};
use crate::support::{config, eventually, pg, ConfigBuilder, Mux};

/// Tests that watch this process's memory, or move a lot of data, run one at a time.
static BIG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `[databases.NAME]` entry for appdb on the test cluster, with extra settings.
fn db_entry(name: &str, settings: &str) -> String {
    crate::support::db_entry(name, "appdb", settings)
}

/// A config with auth_type = "trust" (for raw-protocol clients); pgmux logs in to Postgres
/// with app's password.
fn trust_config(extra: &str) -> Config {
    ConfigBuilder::new()
        .general("auth_type = \"trust\"\ndefault_pool_size = 5\nmax_client_conn = 100")
        .database("appdb", pg().port, "")
        .user("app", Some("app_pw"))
        .sections(extra)
        .build()
}

/// Connect and forward the connection's asynchronous messages (notices, notifications).
async fn connect_with_messages(
    mux: &Mux,
    db: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut conn) = tokio_postgres::connect(&mux.connstr("app", "app_pw", db), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to pgmux {db}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) => {
                    let _ = tx.send(m);
                }
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

/// pgmux with [`trust_config`] and a pool of one server for `db`, and a raw client logged in
/// to that pool.
async fn trust_pool_of_one(db: &str) -> (Mux, Raw) {
    let mux = Mux::start(trust_config(&db_entry(db, "pool_size = 1"))).await;
    let (r, _, _) = Raw::login(mux.port(), db).await;
    (mux, r)
}

/// [`trust_pool_of_one`], where the raw client first creates a fresh table `table (columns)`,
/// and a tokio-postgres client on the same pool.
async fn trust_pool_of_one_and_other(db: &str, table: &str, columns: &str) -> (Mux, Raw, Client) {
    let (mux, mut r) = trust_pool_of_one(db).await;
    let other = mux.connect_as("app", "app_pw", db).await;
    r.simple_query(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})"
    ))
    .await;
    (mux, r, other)
}

/// `one(c, sql)` within 3 s, for a client of app's pool for `db`; otherwise the pool's server
/// was not released: panic with `what` and the pool's counts.
async fn served(mux: &Mux, db: &str, c: &Client, sql: &str, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(3), one(c, sql))
        .await
        .unwrap_or_else(|_| panic!("{what}: {:?}", mux.counts(db, "app")))
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// ---------------------------------------------------------------------------------------------
// 1. Transaction mode.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_releases_at_commit_and_keeps_the_server_inside_a_transaction() {
    let mux = Mux::start(config("", &db_entry("txdb", "pool_size = 1"))).await;
    let a = mux.connect_as("app", "app_pw", "txdb").await;
    let b = mux.connect_as("app", "app_pw", "txdb").await;
    let pid = one(&a, "SELECT pg_backend_pid()").await;
    assert_eq!(one(&b, "SELECT pg_backend_pid()").await, pid);

    // Interleaved transactions on a pool of 1: each COMMIT hands the server over.
    for i in 0..5 {
        for (name, c) in [("a", &a), ("b", &b)] {
            let v = tokio::time::timeout(Duration::from_secs(5), async {
                col(c, "BEGIN").await;
                let p = one(c, "SELECT pg_backend_pid()").await;
                let v = one(c, &format!("SELECT '{name}{i}'")).await;
                col(c, "COMMIT").await;
                (p, v)
            })
            .await
            .expect("server not released at COMMIT");
            assert_eq!(v, (pid.clone(), format!("{name}{i}")));
        }
    }

    // A client inside BEGIN keeps its server; the other waits until COMMIT.
    col(&a, "BEGIN").await;
    let xid = one(&a, "SELECT txid_current()").await;
    let b2 = mux.connect_as("app", "app_pw", "txdb").await;
    let waiter = tokio::spawn(async move { one(&b2, "SELECT 'b waited'").await });
    eventually(5, "b to wait", || {
        mux.counts("txdb", "app").unwrap().waiting == 1
    })
    .await;
    for _ in 0..5 {
        assert_eq!(one(&a, "SELECT pg_backend_pid()").await, pid);
        assert_eq!(one(&a, "SELECT txid_current()").await, xid);
    }
    assert!(!waiter.is_finished());
    col(&a, "COMMIT").await;
    let v = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "b waited");

    // An error inside a transaction, then ROLLBACK; the server is reused.
    col(&a, "BEGIN").await;
    let e = a.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"));
    let e = a.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("25P02"), "{e}");
    col(&a, "ROLLBACK").await;
    assert_eq!(one(&b, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(one(&b, "SELECT now() = statement_timestamp()").await, "t");
    // An error outside a transaction too.
    let e = b.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("22012"));
    assert_eq!(one(&a, "SELECT pg_backend_pid()").await, pid);
    let pool = mux.pool("txdb", "app").unwrap();
    assert_eq!(
        pool.stats
            .servers_opened
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the server was replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_backend_is_stable_inside_each_transaction_under_load() {
    let mux = Mux::start(config("", &db_entry("txdb3", "pool_size = 3"))).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let c = mux.connect_as("app", "app_pw", "txdb3").await;
        tasks.push(tokio::spawn(async move {
            let mut pids = std::collections::HashSet::new();
            for j in 0..10 {
                col(&c, "BEGIN").await;
                let p = one(&c, "SELECT pg_backend_pid()").await;
                let x = one(&c, "SELECT txid_current()").await;
                col(&c, "SELECT pg_sleep(0.005)").await;
                assert_eq!(
                    one(&c, "SELECT pg_backend_pid()").await,
                    p,
                    "client {i} tx {j}"
                );
                assert_eq!(
                    one(&c, "SELECT txid_current()").await,
                    x,
                    "client {i} tx {j}"
                );
                col(&c, "COMMIT").await;
                pids.insert(p);
            }
            pids
        }));
    }
    let mut all = std::collections::HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert!(all.len() <= 3, "{all:?}");
    assert!(mux.counts("txdb3", "app").unwrap().open <= 3);
}

// ---------------------------------------------------------------------------------------------
// 2. Session mode.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_the_server_and_resets_it_for_the_next_client() {
    let mux = Mux::start(config(
        "",
        &db_entry("sessdb", "pool_size = 1\npool_mode = \"session\""),
    ))
    .await;
    let c1 = mux.connect_as("app", "app_pw", "sessdb").await;
    let pid = one(&c1, "SELECT pg_backend_pid()").await;
    for _ in 0..3 {
        col(&c1, "BEGIN").await;
        assert_eq!(one(&c1, "SELECT pg_backend_pid()").await, pid);
        col(&c1, "COMMIT").await;
        assert_eq!(one(&c1, "SELECT pg_backend_pid()").await, pid);
    }
    col(
        &c1,
        "PREPARE p AS SELECT 1; SET search_path = pg_catalog; \
         CREATE TEMP TABLE sess_tmp (x int); SET statement_timeout = '123s'",
    )
    .await;
    assert_eq!(one(&c1, "EXECUTE p").await, "1");

    // Another client waits while c1 is connected, even between c1's transactions.
    let c2 = mux.connect_as("app", "app_pw", "sessdb").await;
    let waiter = tokio::spawn(async move {
        let p = one(&c2, "SELECT pg_backend_pid()").await;
        (c2, p)
    });
    eventually(5, "c2 to wait", || {
        mux.counts("sessdb", "app").unwrap().waiting == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "c2 got c1's session server");
    drop(c1);
    let (c2, p2) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("c2 not served after c1 left")
        .unwrap();
    assert_eq!(p2, pid, "the server was not reused");

    // DISCARD ALL ran: nothing of c1's session is visible.
    let e = c2.simple_query("EXECUTE p").await.unwrap_err();
    assert_eq!(code(&e).as_deref(), Some("26000"), "{e}");
    assert_eq!(one(&c2, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(
        one(
            &c2,
            "SELECT count(*) FROM pg_class WHERE relname = 'sess_tmp'"
        )
        .await,
        "0"
    );
    assert_eq!(one(&c2, "SHOW statement_timeout").await, "0");
    assert_eq!(one(&c2, "SELECT pg_backend_pid()").await, pid);
}

// ---------------------------------------------------------------------------------------------
// 3. Statement mode.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks_and_alternates_clients() {
    let mux = Mux::start(config(
        "",
        &db_entry("stmtdb", "pool_size = 1\npool_mode = \"statement\""),
    ))
    .await;
    let c1 = mux.connect_as("app", "app_pw", "stmtdb").await;
    let c2 = mux.connect_as("app", "app_pw", "stmtdb").await;
    let pid = one(&c1, "SELECT pg_backend_pid()").await;
    for i in 0..10 {
        assert_eq!(one(&c1, "SELECT pg_backend_pid()").await, pid);
        assert_eq!(one(&c2, &format!("SELECT {i}")).await, i.to_string());
    }
    assert_eq!(col(&c1, "SELECT 1; SELECT 2").await, ["1", "2"]);
    // Both at once, on one server.
    let (r1, r2) = tokio::join!(
        async {
            for i in 0..30 {
                assert_eq!(one(&c1, &format!("SELECT {i}")).await, i.to_string());
            }
        },
        async {
            for i in 0..30 {
                assert_eq!(one(&c2, &format!("SELECT 'n{i}'")).await, format!("n{i}"));
            }
        }
    );
    let _ = (r1, r2);

    // BEGIN: error and disconnect.
    let (c3, conn) = mux.connect_with_handle("app", "app_pw", "stmtdb").await;
    let begin = c3.simple_query("BEGIN").await;
    let after = c3.simple_query("SELECT 1").await;
    assert!(
        after.is_err(),
        "the client was not disconnected after BEGIN"
    );
    let ended = tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the client was not disconnected")
        .unwrap();
    let errors: Vec<tokio_postgres::Error> = [begin.err(), after.err(), ended.err()]
        .into_iter()
        .flatten()
        .collect();
    let refused = errors
        .iter()
        .find_map(|e| e.as_db_error())
        .unwrap_or_else(|| {
            panic!("no error from pgmux: {errors:?}");
        });
    assert_eq!(refused.code().code(), "0A000", "{refused:?}");
    assert!(
        refused
            .message()
            .contains("transaction blocks not allowed in statement pooling mode"),
        "{refused:?}"
    );
    assert!(c3.is_closed());
    // The server was rolled back and reused.
    assert_eq!(one(&c1, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(one(&c2, "SELECT now() = statement_timestamp()").await, "t");
    let counts = mux.settled("stmtdb", |c| c.active == 0).await;
    assert_eq!(counts.open, 1, "{counts:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Parameter sync.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_follow_each_client_on_a_shared_server() {
    let mux = Mux::start(config("", &db_entry("paramdb", "pool_size = 1"))).await;
    let a = mux.connect_as("app", "app_pw", "paramdb").await;
    let b = mux.connect_as("app", "app_pw", "paramdb").await;
    let default_app_name = one(&b, "SHOW application_name").await;
    col(&a, "SET TimeZone = 'America/New_York'").await;
    col(&a, "SET application_name = 'a'").await;
    col(&a, "SET DateStyle = 'SQL, DMY'").await;
    col(&a, "SET IntervalStyle = 'iso_8601'").await;
    col(&b, "SET TimeZone = 'Asia/Tokyo'").await;
    col(&b, "SET DateStyle = 'German'").await;
    col(&b, "SET IntervalStyle = 'sql_standard'").await;
    col(&b, "SET client_encoding = 'LATIN1'").await;
    let b_datestyle = one(&b, "SHOW DateStyle").await;
    assert!(b_datestyle.starts_with("German"), "{b_datestyle}");
    let want_a = ["America/New_York", "SQL, DMY", "iso_8601", "a", "UTF8"].map(String::from);
    let want_b = [
        "Asia/Tokyo".to_string(),
        b_datestyle.clone(),
        "sql_standard".into(),
        default_app_name.clone(),
        "LATIN1".into(),
    ];
    let shows = [
        "SHOW TimeZone",
        "SHOW DateStyle",
        "SHOW IntervalStyle",
        "SHOW application_name",
        "SHOW client_encoding",
    ];
    let pid = one(&a, "SELECT pg_backend_pid()").await;
    assert_eq!(one(&b, "SELECT pg_backend_pid()").await, pid);
    for round in 0..3 {
        for (i, q) in shows.iter().enumerate() {
            assert_eq!(one(&a, q).await, want_a[i], "a, round {round}: {q}");
            assert_eq!(one(&b, q).await, want_b[i], "b, round {round}: {q}");
        }
        // The settings take effect, not only SHOW.
        let ts = "SELECT '2000-01-01 12:00:00+00'::timestamptz::text";
        assert_eq!(one(&a, ts).await, "01/01/2000 07:00:00 EST");
        assert_eq!(one(&b, ts).await, "01.01.2000 21:00:00 JST");
        let iv = "SELECT interval '1 day 2 hours'::text";
        assert_eq!(one(&a, iv).await, "P1DT2H");
        assert_eq!(one(&b, iv).await, "1 2:00:00");
    }
    // Inside a transaction a SET LOCAL stays local, and the client's value comes back.
    col(&a, "BEGIN; SET LOCAL TimeZone = 'UTC'").await;
    assert_eq!(one(&a, "SHOW TimeZone").await, "UTC");
    col(&a, "COMMIT").await;
    assert_eq!(one(&b, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(one(&a, "SHOW TimeZone").await, "America/New_York");
}

// ---------------------------------------------------------------------------------------------
// 5. Notices and notifications.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_notifications_reach_the_client() {
    let mux = Mux::start(config("", &db_entry("listendb", "pool_mode = \"session\""))).await;
    // A notice in transaction mode.
    let (c, mut rx) = connect_with_messages(&mux, "appdb").await;
    c.batch_execute(
        "DO $$ BEGIN RAISE NOTICE 'hello from %', 'pgmux'; RAISE WARNING 'careful'; END $$",
    )
    .await
    .unwrap();
    let mut notices = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            Ok(Some(AsyncMessage::Notice(n))) => {
                notices.push((n.severity().to_string(), n.message().to_string()))
            }
            other => panic!("expected a notice, got {other:?}"),
        }
    }
    assert_eq!(
        notices,
        [
            ("NOTICE".to_string(), "hello from pgmux".to_string()),
            ("WARNING".to_string(), "careful".to_string())
        ]
    );
    assert_eq!(one(&c, "SELECT 1").await, "1");

    // LISTEN in session mode; NOTIFY from a direct connection arrives while the client idles.
    let (l, mut rx) = connect_with_messages(&mux, "listendb").await;
    col(&l, "LISTEN pgmux_chan").await;
    tokio::task::spawn_blocking(|| pg().psql_super("appdb", "NOTIFY pgmux_chan, 'from outside'"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        Ok(Some(AsyncMessage::Notification(n))) => {
            assert_eq!((n.channel(), n.payload()), ("pgmux_chan", "from outside"));
        }
        other => panic!("expected a notification, got {other:?}"),
    }
    // And from the same client.
    col(&l, "NOTIFY pgmux_chan, 'self'").await;
    match tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        Ok(Some(AsyncMessage::Notification(n))) => assert_eq!(n.payload(), "self"),
        other => panic!("expected a notification, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. COPY.

fn copy_rows(rows: usize) -> Vec<u8> {
    let mut data = Vec::new();
    for i in 0..rows {
        data.extend_from_slice(format!("{i}\t{}\n", "p".repeat(50 + i % 20)).as_bytes());
    }
    data
}

/// `data` with a row that is not valid for `(id int, payload text)` in the middle.
fn with_bad_row(data: &[u8]) -> Vec<u8> {
    let mut bad = data[..data.len() / 2].to_vec();
    bad.extend_from_slice(b"not_a_number\tbad\n");
    bad.extend_from_slice(&data[data.len() / 2..]);
    bad
}

/// COPY through tokio-postgres: `copy_in` (Bind, Execute, Sync, CopyData..., CopyDone, Sync)
/// and `copy_out`, then a COPY with bad data; the pool of 1 must serve another client after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_with_tokio_postgres_and_a_failed_copy() {
    let _big = BIG.lock().await;
    let mux = Mux::start(config("", &db_entry("copydb", "pool_size = 1"))).await;
    let c = mux.connect_as("app", "app_pw", "copydb").await;
    let d = mux.connect_as("app", "app_pw", "copydb").await;
    col(
        &c,
        "DROP TABLE IF EXISTS modes_copy; CREATE TABLE modes_copy (id int, payload text)",
    )
    .await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    const ROWS: usize = 100_000;
    let data = copy_rows(ROWS);
    assert!(data.len() > 5_000_000);
    let sink = c
        .copy_in::<_, Bytes>("COPY modes_copy FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.chunks(64 * 1024) {
        sink.as_mut()
            .send(Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let n = sink.as_mut().finish().await.unwrap();
    assert_eq!(n as usize, ROWS);
    // The copy is over: the server goes back to the pool and serves another client.
    let counted = served(
        &mux,
        "copydb",
        &d,
        "SELECT count(*) FROM modes_copy",
        "server not released after COPY FROM STDIN",
    )
    .await;
    assert_eq!(counted, ROWS.to_string());

    let out = c
        .copy_out("COPY (SELECT * FROM modes_copy ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(out);
    let mut got = Vec::with_capacity(data.len());
    while let Some(chunk) = out.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.iter().filter(|&&b| b == b'\n').count(), ROWS);
    assert!(
        got == data,
        "COPY TO STDOUT differs from what was copied in"
    );

    // Bad data in the middle of a large COPY: a clean error, the server is reused.
    let bad = with_bad_row(&data);
    let res = async {
        let sink = c.copy_in::<_, Bytes>("COPY modes_copy FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        for chunk in bad.chunks(64 * 1024) {
            sink.as_mut().send(Bytes::copy_from_slice(chunk)).await?;
        }
        sink.as_mut().finish().await
    }
    .await;
    let e = res.expect_err("bad COPY data accepted");
    assert_eq!(code(&e).as_deref(), Some("22P02"), "{e:?}");
    assert_eq!(
        one(&c, "SELECT count(*) FROM modes_copy").await,
        ROWS.to_string()
    );
    let what = "server not released after the failed COPY";
    let v = served(&mux, "copydb", &d, "SELECT pg_backend_pid()", what).await;
    assert_eq!(v, pid);
    assert_eq!(one(&d, "SELECT now() = statement_timestamp()").await, "t");
    let counts = mux.settled("copydb", |c| c.active == 0).await;
    assert_eq!(counts.open, 1, "{counts:?}");
    col(&d, "DROP TABLE modes_copy").await;
}

fn copy_data_msgs(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(32 * 1024) {
        out.extend(msg(b'd', chunk));
    }
    out
}

/// COPY in the simple protocol, raw: several MB in and out, bad data, CopyFail; after each,
/// another client gets the pool's only server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_simple_protocol_raw() {
    let _big = BIG.lock().await;
    let (mux, mut r, other) =
        trust_pool_of_one_and_other("rawcopy", "modes_rawcopy", "id int, payload text").await;
    let other_served = |sql| {
        served(
            &mux,
            "rawcopy",
            &other,
            sql,
            "the pool's server was not released",
        )
    };
    const ROWS: usize = 100_000;
    let data = copy_rows(ROWS);

    // COPY FROM STDIN.
    r.send(&query("COPY modes_rawcopy FROM STDIN")).await;
    assert_eq!(r.read().await.0, b'G');
    let mut out = copy_data_msgs(&data);
    out.extend(msg(b'c', &[]));
    let got = r.send_and_read(&out, 1).await;
    assert_eq!(tags(&got), "CZ");
    assert_eq!(got[0].1, format!("COPY {ROWS}\0").as_bytes());
    assert_eq!(
        other_served("SELECT count(*) FROM modes_rawcopy").await,
        ROWS.to_string()
    );

    // COPY TO STDOUT.
    let got = r
        .simple_query("COPY (SELECT * FROM modes_rawcopy ORDER BY id) TO STDOUT")
        .await;
    let mut copied = Vec::new();
    for (tag, body) in &got {
        if *tag == b'd' {
            copied.extend_from_slice(body);
        }
    }
    let t = tags(&got);
    assert!(
        t.starts_with('H') && t.ends_with("cCZ"),
        "{}",
        &t[t.len() - 5..]
    );
    assert!(
        copied == data,
        "COPY TO STDOUT differs from what was copied in"
    );
    assert_eq!(
        other_served("SELECT 'after copy out'").await,
        "after copy out"
    );

    // Bad data in the middle of a large COPY: an error, and the server is reused.
    let bad = with_bad_row(&data);
    r.send(&query("COPY modes_rawcopy FROM STDIN")).await;
    assert_eq!(r.read().await.0, b'G');
    let mut out = copy_data_msgs(&bad);
    out.extend(msg(b'c', &[]));
    let got = r.send_and_read(&out, 1).await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(raw::fields(&got[0].1).0, "22P02");
    assert_eq!(got[1].1, b"I");
    assert_eq!(
        other_served("SELECT count(*) FROM modes_rawcopy").await,
        ROWS.to_string()
    );

    // CopyFail from the client.
    r.send(&query("COPY modes_rawcopy FROM STDIN")).await;
    assert_eq!(r.read().await.0, b'G');
    let mut out = copy_data_msgs(&data[..100_000]);
    out.extend(msg(b'f', &cstr("client gave up")));
    let got = r.send_and_read(&out, 1).await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(raw::fields(&got[0].1).0, "57014");
    assert_eq!(
        other_served("SELECT 'after copy fail'").await,
        "after copy fail"
    );

    // The raw client goes on normally.
    let got = r.simple_query("SELECT count(*) FROM modes_rawcopy").await;
    assert_eq!(tags(&got), "TDCZ");
    assert_eq!(data_row_first(&got[1].1), ROWS.to_string());
    let counts = mux.settled("rawcopy", |c| c.active == 0).await;
    assert_eq!(counts.open, 1, "{counts:?}");
    col(&other, "DROP TABLE modes_rawcopy").await;
}

/// COPY FROM STDIN in the extended protocol as libpq's pipeline mode and tokio-postgres send
/// it: Parse/Bind/Execute/Sync, then CopyData, CopyDone, Sync. Postgres ignores a Sync that
/// arrives in copy-in mode, so there is one ReadyForQuery in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_copy_in_with_sync_before_copy_data() {
    let (mux, mut r, other) =
        trust_pool_of_one_and_other("extcopy", "modes_extcopy", "id int").await;
    let mut out = parse("", "COPY modes_extcopy FROM STDIN");
    out.extend(bind("", ""));
    out.extend(execute(""));
    out.extend(sync());
    r.send(&out).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(r.read().await);
    }
    assert_eq!(tags(&got), "12G");
    let mut out = msg(b'd', b"1\n2\n3\n");
    out.extend(msg(b'c', &[]));
    out.extend(sync());
    r.send(&out).await;
    let got = r.read_until_ready(1).await;
    assert_eq!(tags(&got), "CZ");
    assert_eq!(got[0].1, b"COPY 3\0");
    assert!(
        r.try_read(Duration::from_millis(300)).await.is_none(),
        "Postgres answered the first Sync after all"
    );
    let v = served(
        &mux,
        "extcopy",
        &other,
        "SELECT count(*) FROM modes_extcopy",
        "server not released after an extended-protocol COPY",
    )
    .await;
    assert_eq!(v, "3");
    col(&other, "DROP TABLE modes_extcopy").await;
}

/// A client streaming COPY data slowly sees the error late: Postgres has already answered
/// ErrorResponse + ReadyForQuery when the rest of the client's CopyData and its CopyDone
/// arrive (Postgres drops them). The pool must go on serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_sent_after_a_failed_copy_does_not_hold_the_server() {
    let (mux, mut r, other) =
        trust_pool_of_one_and_other("latecopy", "modes_latecopy", "id int").await;
    r.send(&query("COPY modes_latecopy FROM STDIN")).await;
    assert_eq!(r.read().await.0, b'G');
    r.send(&msg(b'd', b"1\nnot_a_number\n")).await;
    let got = r.read_until_ready(1).await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(raw::fields(&got[0].1).0, "22P02");
    // The slow client only now sends the rest and CopyDone.
    let mut out = msg(b'd', b"2\n3\n");
    out.extend(msg(b'c', &[]));
    r.send(&out).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let what = "the server is held by the client that sent CopyData after its COPY failed";
    let v = served(&mux, "latecopy", &other, "SELECT 'other'", what).await;
    assert_eq!(v, "other");
    let got = r.simple_query("SELECT count(*) FROM modes_latecopy").await;
    assert_eq!(tags(&got), "TDCZ");
    assert_eq!(data_row_first(&got[1].1), "0");
    col(&other, "DROP TABLE modes_latecopy").await;
}

// ---------------------------------------------------------------------------------------------
// 7. Empty query and syntax error.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_query_then_syntax_error_then_a_normal_query() {
    let extra = db_entry("e_session", "pool_mode = \"session\"")
        + &db_entry("e_statement", "pool_mode = \"statement\"");
    let mux = Mux::start(config("", &extra)).await;
    for db in ["appdb", "e_session", "e_statement"] {
        let c = mux.connect_as("app", "app_pw", db).await;
        let r = c.simple_query("").await.unwrap();
        assert!(
            r.iter().all(|m| !matches!(m, SimpleQueryMessage::Row(_))),
            "{db}: rows from an empty query"
        );
        let e = c.simple_query("SELEC 1").await.unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("42601"), "{db}: {e}");
        assert_eq!(one(&c, "SELECT 'fine'").await, "fine", "{db}");
        c.batch_execute(";").await.unwrap();
        assert_eq!(one(&c, "SELECT 2").await, "2", "{db}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Extended protocol with Flush before Sync; pipelined simple queries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_flush_before_sync_and_pipelined_simple_queries() {
    let (mux, mut r) = trust_pool_of_one("raw1").await;
    let mut out = parse("", "SELECT 1");
    out.extend(describe_statement(""));
    out.extend(flush());
    r.send(&out).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            r.try_read(Duration::from_secs(3)).await.unwrap_or_else(|| {
                panic!("after Flush, only '{}' arrived without Sync", tags(&got))
            }),
        );
    }
    assert_eq!(
        tags(&got),
        "1tT",
        "ParseComplete, ParameterDescription, RowDescription"
    );
    assert!(r.try_read(Duration::from_millis(200)).await.is_none());

    // The client holds its server between Flush and Sync: another client waits.
    let (mut other, _, _) = Raw::login(mux.port(), "raw1").await;
    other.send(&query("SELECT 'other'")).await;
    eventually(5, "the other client to wait", || {
        mux.counts("raw1", "app").unwrap().waiting == 1
    })
    .await;

    let mut out = bind("", "");
    out.extend(execute(""));
    out.extend(sync());
    r.send(&out).await;
    let got = r.read_until_ready(1).await;
    assert_eq!(tags(&got), "2DCZ");
    assert_eq!(data_row_first(&got[1].1), "1");
    assert_eq!(&got[2].1, b"SELECT 1\0");
    assert_eq!(got[3].1, b"I");
    let o = other.read_until_ready(1).await;
    assert_eq!(tags(&o), "TDCZ");
    assert_eq!(data_row_first(&o[1].1), "other");

    // Two simple queries in one write.
    let mut out = query("SELECT 1");
    out.extend(query("SELECT 2"));
    r.send(&out).await;
    let got = r.read_until_ready(2).await;
    assert_eq!(tags(&got), "TDCZTDCZ");
    assert_eq!(data_row_first(&got[1].1), "1");
    assert_eq!(data_row_first(&got[5].1), "2");
    assert!(r.try_read(Duration::from_millis(200)).await.is_none());

    // Pipelined extended queries, and a pipelined BEGIN ... COMMIT, in one write.
    let mut out = Vec::new();
    for q in ["SELECT 10", "SELECT 20"] {
        out.extend(parse("", q));
        out.extend(bind("", ""));
        out.extend(execute(""));
        out.extend(sync());
    }
    for q in ["BEGIN", "SELECT 30", "COMMIT"] {
        out.extend(query(q));
    }
    r.send(&out).await;
    let got = r.read_until_ready(5).await;
    assert_eq!(tags(&got), "12DCZ12DCZCZTDCZCZ");
    let rows: Vec<_> = got
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|m| data_row_first(&m.1))
        .collect();
    assert_eq!(rows, ["10", "20", "30"]);
    let statuses: Vec<u8> = got.iter().filter(|m| m.0 == b'Z').map(|m| m.1[0]).collect();
    assert_eq!(statuses, b"IITTI");
    let counts = mux.settled("raw1", |c| c.active == 0).await;
    assert_eq!((counts.open, counts.waiting), (1, 0), "{counts:?}");
}

// ---------------------------------------------------------------------------------------------
// 9. Cancel.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_the_running_query() {
    let mux = Mux::start(config("", "")).await;
    let c = mux.connect().await;
    let token = c.cancel_token();
    let t0 = Instant::now();
    let q = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(10)").await;
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(NoTls).await.unwrap();
    let cancelled = Instant::now();
    let (c, r) = tokio::time::timeout(Duration::from_secs(3), q)
        .await
        .expect("the query was not cancelled")
        .unwrap();
    let e = r.expect_err("pg_sleep(10) completed");
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e}");
    // Well under pg_sleep(10), with room for a slow CI machine.
    assert!(
        cancelled.elapsed() < Duration::from_secs(3),
        "{:?}",
        cancelled.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(one(&c, "SELECT 'still here'").await, "still here");
    // A cancel for a client holding no server does nothing.
    token.cancel_query(NoTls).await.unwrap();
    assert_eq!(one(&c, "SELECT 'still here'").await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_with_an_unknown_key_is_ignored() {
    let mux = Mux::start(trust_config("")).await;
    let (mut r, pid, secret) = Raw::login(mux.port(), "appdb").await;
    let c = mux.connect_as("app", "app_pw", "appdb").await;
    let t0 = Instant::now();
    r.send(&query("SELECT pg_sleep(1)")).await;
    let q = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(1), 'done'").await;
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Random keys, and the raw client's pid with a wrong secret.
    let mut keys: Vec<(i32, i32)> = (0..5)
        .map(|_| (rand::random::<i32>(), rand::random::<i32>()))
        .collect();
    keys.push((pid, secret.wrapping_add(1)));
    keys.push((pid.wrapping_add(1), secret));
    for (p, s) in keys {
        let mut sock = raw::connect(mux.port()).await;
        raw::send(&mut sock, &raw::cancel_request(p, s)).await;
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(3), sock.read(&mut b))
            .await
            .expect("pgmux kept the cancel connection open")
            .unwrap_or(0);
        assert_eq!(n, 0, "pgmux answered a CancelRequest");
    }
    let got = r.read_until_ready(1).await;
    assert_eq!(tags(&got), "TDCZ", "the raw client's query was disturbed");
    let (c, res) = tokio::time::timeout(Duration::from_secs(5), q)
        .await
        .unwrap()
        .unwrap();
    let rows: Vec<_> = res
        .expect("the other client's query was cancelled")
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["done"]);
    assert!(t0.elapsed() >= Duration::from_millis(950));
    assert_eq!(one(&c, "SELECT 1").await, "1");
}

// ---------------------------------------------------------------------------------------------
// 10. Large results.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_streams_a_million_rows() {
    let _big = BIG.lock().await;
    let mux = Mux::start(config("", "")).await;
    let c = mux.connect().await;
    let stream = c
        .simple_query_raw("SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let (mut rows, mut last) = (0u64, String::new());
    while let Some(m) = stream.next().await {
        if let SimpleQueryMessage::Row(r) = m.unwrap() {
            rows += 1;
            if rows == 1 || rows % 250_000 == 0 {
                assert_eq!(r.get(1).map(str::len), Some(100));
                last = r.get(0).unwrap().to_string();
            }
        }
    }
    assert_eq!(rows, 1_000_000);
    assert_eq!(last, "1000000");
    assert_eq!(one(&c, "SELECT 'after'").await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_does_not_make_pgmux_buffer_the_result() {
    let _big = BIG.lock().await;
    let (mux, mut r) = trust_pool_of_one("slowdb").await;
    let before = rss_kib();
    // ~200 MB of rows.
    r.send(&query(
        "SELECT g, repeat('x', 1000) AS slow_reader_payload FROM generate_series(1, 200000) g",
    ))
    .await;
    let start = Instant::now();
    let mut read = 0usize;
    let mut chunk = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(3) {
        let n = tokio::time::timeout(Duration::from_secs(5), r.s.read(&mut chunk))
            .await
            .expect("no data")
            .unwrap();
        assert!(n > 0);
        read += n;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Postgres is held back by pgmux (its backend waits to write to pgmux's socket).
    let wait_event = tokio::task::spawn_blocking(|| {
        pg().psql_super(
            "postgres",
            "SELECT coalesce(wait_event, '') FROM pg_stat_activity \
             WHERE query LIKE '%slow_reader_payload%' AND pid <> pg_backend_pid()",
        )
    })
    .await
    .unwrap();
    let after = rss_kib();
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "slow reader: read {} KiB in 3 s; VmRSS {before} -> {after} KiB; backend wait_event {:?}",
        read / 1024,
        wait_event.trim()
    );
    assert!(
        read < 100 << 20,
        "read {read} bytes slowly, more than expected"
    );
    assert!(
        growth_mib < 50,
        "pgmux's process grew by {growth_mib} MiB while a slow client read {} KiB of a ~200 MB result",
        read / 1024
    );
    assert_eq!(
        wait_event.trim(),
        "ClientWrite",
        "Postgres backend not held back"
    );

    // Leave in the middle: the pool recovers.
    drop(r);
    eventually(5, "the slow client's server to go", || {
        let c = mux.counts("slowdb", "app").unwrap();
        c.active == 0
    })
    .await;
    let (mut next, _, _) = Raw::login(mux.port(), "slowdb").await;
    let got = next.simple_query("SELECT 'recovered'").await;
    assert_eq!(tags(&got), "TDCZ");
    assert_eq!(data_row_first(&got[1].1), "recovered");
    assert!(mux.counts("slowdb", "app").unwrap().open <= 1);
}

/// A simple-protocol COPY fails on an early row while the client is still in the middle of
/// sending a later CopyData message: pgmux must finish that message (the server ignores it),
/// never cut it in two, then give the server back; the stray CopyDone is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_failing_while_a_copydata_message_is_half_sent() {
    let extra = db_entry("halfcopy", "pool_size = 1");
    let mux = Mux::start(trust_config(&extra)).await;
    let (mut r, _, _) = Raw::login(mux.port(), "halfcopy").await;
    let other = mux.connect_as("app", "app_pw", "halfcopy").await;
    r.send(&query(
        "DROP TABLE IF EXISTS modes_halfcopy; CREATE TABLE modes_halfcopy (id int)",
    ))
    .await;
    r.read_until_ready(1).await;
    r.send(&query("COPY modes_halfcopy FROM STDIN")).await;
    assert_eq!(r.read().await.0, b'G');
    // A bad row in a whole message, then the first half of a large second message.
    let mut out = msg(b'd', b"not_a_number\n");
    let big = msg(b'd', &vec![b'7'; 200_000]);
    out.extend_from_slice(&big[..100_000]);
    r.send(&out).await;
    // Postgres answers the bad row with ErrorResponse + ReadyForQuery('I') meanwhile.
    let got = r.read_until_ready(1).await;
    assert_eq!(tags(&got), "EZ");
    // The rest of the half-sent message, and a CopyDone nobody will answer.
    let mut rest = big[100_000..].to_vec();
    rest.extend(msg(b'c', &[]));
    r.send(&rest).await;
    // The server is free for another client, and the raw client goes on normally.
    assert_eq!(
        served(
            &mux,
            "halfcopy",
            &other,
            "SELECT 'free'",
            "server held after a failed COPY"
        )
        .await,
        "free"
    );
    r.send(&query("SELECT count(*) FROM modes_halfcopy")).await;
    let got = r.read_until_ready(1).await;
    assert_eq!(tags(&got), "TDCZ");
    assert_eq!(data_row_first(&got[1].1), "0");
    col(&other, "DROP TABLE modes_halfcopy").await;
}

/// A client that keeps writing pipelined queries while it reads the answers (both directions
/// busy at once, on a pool of 1 shared with another client): every answer arrives, nothing
/// stalls. Guards the relay's readiness handling against lost wake-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_stream_of_queries_never_stalls() {
    use tokio::io::AsyncWriteExt;
    let extra = db_entry("pipedb", "pool_size = 1");
    let mux = Mux::start(trust_config(&extra)).await;
    let (raw, _, _) = Raw::login(mux.port(), "pipedb").await;
    let other = mux.connect_as("app", "app_pw", "pipedb").await;
    let (mut rd, mut wr) = raw.s.into_split();
    const N: usize = 3000;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let mut out = query(&format!("SELECT {i}"));
            if i % 7 == 0 {
                out.extend(query("BEGIN; SELECT 1; COMMIT"));
            }
            wr.write_all(&out).await.unwrap();
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        wr
    });
    let expected = N + N.div_ceil(7);
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        while seen < expected {
            let n = rd.read(&mut buf).await.unwrap();
            assert!(n > 0, "pgmux closed the connection after {seen} answers");
            pending.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while pending.len() - at >= 5 {
                let len = u32::from_be_bytes(pending[at + 1..at + 5].try_into().unwrap()) as usize;
                if pending.len() - at < len + 1 {
                    break;
                }
                if pending[at] == b'Z' {
                    seen += 1;
                }
                at += len + 1;
            }
            pending.drain(..at);
        }
        seen
    });
    // Meanwhile another client gets the shared server between the pipelined requests.
    for _ in 0..20 {
        assert_eq!(one(&other, "SELECT 'other'").await, "other");
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the pipelined answers stalled")
        .unwrap();
    assert_eq!(seen, expected);
    writer.await.unwrap();
}
