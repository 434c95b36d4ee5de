//! Database churn that must not reach clients: a request whose server was terminated before it
//! ran is re-sent; idle servers killed over and over under load; Postgres stopped and started
//! again under pgbench; clients waiting through an outage; configuration errors not held.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pgbench::{clean_run, pgbench_db_blocking};
use crate::support::client::{code, connect_ok, one, rows, sql_super, tp_config, tp_connect};
use crate::support::{config, db_entry, eventually, pg, run, ConfigBuilder, Mux, PrivatePg};

/// Wait until a query containing `marker` runs on Postgres, terminate its backend, and return
/// its pid.
async fn terminate_when_running(marker: &str) -> String {
    let find = format!(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND state = 'active' \
         AND pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = sql_super("postgres", &find).await;
        if !pid.is_empty() {
            sql_super("postgres", &format!("SELECT pg_terminate_backend({pid})")).await;
            return pid;
        }
        assert!(Instant::now() < deadline, "{marker} never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn resent(mux: &Mux, db: &str) -> u64 {
    mux.pool(db, "app")
        .unwrap()
        .stats
        .resent
        .load(Ordering::Relaxed)
}

/// A request terminated (57P01) while it ran, before any answer, runs again on another server,
/// exactly once; with the simple protocol and with a named prepared statement (rewritten by the
/// prepared-statement mapping, its client bytes put back). Once an answer came, or inside a
/// transaction block, the error reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_terminated_before_answering_is_run_again() {
    let mux = Mux::start(config("", &db_entry("churndb", "appdb", "pool_size = 2"))).await;
    sql_super(
        "appdb",
        "DROP TABLE IF EXISTS churn_once; CREATE TABLE churn_once (id int); \
         GRANT ALL ON churn_once TO app",
    )
    .await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "churndb").await;
    let c = Arc::new(c);

    // Simple protocol: an INSERT that was killed mid-run, re-sent, inserts once.
    let q = {
        let c = c.clone();
        tokio::spawn(async move {
            c.simple_query("INSERT INTO churn_once SELECT 1 FROM pg_sleep(0.6) /* churn-a */")
                .await
        })
    };
    let killed = terminate_when_running("churn-a").await;
    let r = tokio::time::timeout(Duration::from_secs(10), q)
        .await
        .expect("re-sent request hung")
        .unwrap();
    assert!(r.is_ok(), "terminated before answering: {r:?}");
    assert_eq!(one(&c, "SELECT count(*) FROM churn_once").await, "1");
    assert_ne!(one(&c, "SELECT pg_backend_pid()").await, killed);
    assert_eq!(resent(&mux, "churndb"), 1);

    // Extended protocol with a named statement (mapped across servers).
    let q = {
        let c = c.clone();
        tokio::spawn(async move {
            c.query_one(
                "SELECT 42::int4 FROM pg_sleep($1::float8) /* churn-b */",
                &[&0.6f64],
            )
            .await
            .map(|r| r.get::<_, i32>(0))
        })
    };
    terminate_when_running("churn-b").await;
    let r = tokio::time::timeout(Duration::from_secs(10), q)
        .await
        .expect("re-sent request hung")
        .unwrap();
    assert_eq!(r.expect("terminated before answering"), 42);
    assert_eq!(resent(&mux, "churndb"), 2);

    // An answer came first (the first statement's rows): the error goes to the client.
    let (d, hd) = connect_ok(mux.port(), "app", "app_pw", "churndb").await;
    let q = tokio::spawn(async move {
        let r = d
            .simple_query("SELECT 1; SELECT pg_sleep(0.6) /* churn-c */")
            .await;
        (r, d)
    });
    terminate_when_running("churn-c").await;
    let (r, _d) = q.await.unwrap();
    let e = r.expect_err("an answer had come back: no re-send");
    assert_eq!(code(&e).as_deref(), Some("57P01"), "{e}");
    drop(hd);

    // Inside a transaction block: not the first request of the transaction.
    let (e2, he) = connect_ok(mux.port(), "app", "app_pw", "churndb").await;
    rows(&e2, "BEGIN").await;
    let q = tokio::spawn(async move {
        let r = e2.simple_query("SELECT pg_sleep(0.6) /* churn-d */").await;
        (r, e2)
    });
    terminate_when_running("churn-d").await;
    let (r, _e2) = q.await.unwrap();
    assert!(r.is_err(), "a transaction cannot survive its server");
    drop(he);
    assert_eq!(resent(&mux, "churndb"), 2);
    // The first client goes on.
    assert_eq!(one(&c, "SELECT 7").await, "7");
}

/// Idle pooled servers terminated again and again while pgbench runs (simple, extended and
/// prepared protocol): no client sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_terminated_over_and_over_reach_no_client() {
    let pg = pg();
    pg.psql_super("postgres", "CREATE DATABASE churnbench OWNER app");
    let mut init = Command::new("pgbench");
    init.args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "app"])
        .args(["-i", "-s", "1", "-q", "churnbench"])
        .env("PGPASSWORD", "app_pw");
    let (ok, out, err) = run(&mut init);
    assert!(ok, "pgbench -i: {out}{err}");
    let mux = Mux::start(config(
        "",
        &crate::support::database_section("churnbench", pg.port, "pool_size = 5"),
    ))
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU64::new(0));
    let killer = {
        let (stop, killed) = (stop.clone(), killed.clone());
        let cfg = tp_config(pg.port, "postgres", "", "postgres");
        tokio::spawn(async move {
            let (k, _h) = tp_connect(&cfg).await.expect("killer connects");
            while !stop.load(Ordering::Relaxed) {
                let row = k
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = 'churnbench' AND state = 'idle' \
                         AND backend_type = 'client backend'",
                        &[],
                    )
                    .await
                    .expect("terminate");
                killed.fetch_add(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let port = mux.port();
    for mode in ["simple", "extended", "prepared"] {
        let out = pgbench_db_blocking(
            port,
            "churnbench",
            &[
                "-n", "-S", "-c", "20", "-j", "2", "-T", "4", "--rate", "400", "-M", mode,
            ],
        )
        .await;
        clean_run(&format!("{mode}, idle servers terminated"), out);
    }
    stop.store(true, Ordering::Relaxed);
    killer.await.unwrap();
    let killed = killed.load(Ordering::Relaxed);
    eprintln!(
        "servers terminated: {killed}, requests re-sent: {}",
        mux.pool("churnbench", "app")
            .unwrap()
            .stats
            .resent
            .load(Ordering::Relaxed)
    );
    assert!(killed >= 20, "only {killed} servers were terminated");
}

/// A trust config for a private cluster's `postgres` database and user.
fn private_config(private: &PrivatePg, general: &str) -> pgmux::config::Config {
    ConfigBuilder::new()
        .general("auth_type = \"trust\"\nmax_client_conn = 500")
        .general(general)
        .database("postgres", private.port, "")
        .user("postgres", None)
        .build()
}

/// The drill: pgbench select-only, 50 clients at 1,000 transactions per second through a
/// pool of 10, Postgres stopped (fast) and started again 3 s later: no client aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_under_pgbench_aborts_no_client() {
    let private = tokio::task::spawn_blocking(|| PrivatePg::start("churn-restart"))
        .await
        .unwrap();
    let mut init = Command::new("pgbench");
    init.args([
        "-h",
        "127.0.0.1",
        "-p",
        &private.port.to_string(),
        "-U",
        "postgres",
    ])
    .args(["-i", "-s", "1", "-q", "postgres"]);
    let (ok, out, err) = run(&mut init);
    assert!(ok, "pgbench -i: {out}{err}");
    let mux = Mux::start(private_config(&private, "default_pool_size = 10")).await;
    let port = mux.port();
    let bench = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "ulimit -n $(ulimit -Hn) 2>/dev/null; exec pgbench -h 127.0.0.1 -p {port} \
             -U postgres -n -S -c 50 -j 2 --rate 1000 -T 12 postgres"
        ));
        run(&mut cmd)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        std::thread::sleep(Duration::from_secs(3));
        private.start();
        private
    })
    .await
    .unwrap();
    let back = Instant::now();
    let pool = mux.pool("postgres", "postgres").unwrap();
    eventually(10, "the outage ends", || !pool.in_outage()).await;
    let served_after = back.elapsed();
    let processed = clean_run("fast restart", bench.await.unwrap());
    let outages = pool.stats.outages.load(Ordering::Relaxed);
    eprintln!(
        "fast restart: {processed} transactions, 0 aborted; servers open again {served_after:?} \
         after pg_ctl start returned; outages {outages}, requests re-sent {}",
        pool.stats.resent.load(Ordering::Relaxed)
    );
    assert!(outages >= 1, "the pool never saw the outage");
    drop(private);
}

/// While Postgres is down, a logged-in client's query waits, a new client logs in (the pool
/// knows its server parameters) and waits too; both are served once Postgres is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_wait_through_an_outage() {
    let private = tokio::task::spawn_blocking(|| PrivatePg::start("churn-outage"))
        .await
        .unwrap();
    let mux = Mux::start(private_config(&private, "default_pool_size = 3")).await;
    let cfg = tp_config(mux.port(), "postgres", "", "postgres");
    let (a, _ha) = tp_connect(&cfg).await.unwrap();
    assert_eq!(one(&a, "SELECT 1").await, "1");
    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        private
    })
    .await
    .unwrap();
    let qa = tokio::spawn(async move { a.simple_query("SELECT 'a'").await.map(|_| ()) });
    let pool = mux.pool("postgres", "postgres").unwrap();
    eventually(10, "the pool notices the outage", || pool.in_outage()).await;
    let (b, _hb) = tp_connect(&cfg).await.expect("login during an outage");
    let qb = tokio::spawn(async move { b.simple_query("SELECT 'b'").await.map(|_| ()) });
    eventually(10, "both clients wait", || {
        mux.counts("postgres", "postgres").unwrap().waiting == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !qa.is_finished() && !qb.is_finished(),
        "a waiting client was failed"
    );
    let private = tokio::task::spawn_blocking(move || {
        private.start();
        private
    })
    .await
    .unwrap();
    for (name, q) in [("a", qa), ("b", qb)] {
        let r = tokio::time::timeout(Duration::from_secs(10), q)
            .await
            .unwrap_or_else(|_| panic!("client {name} still waits"))
            .unwrap();
        assert!(r.is_ok(), "client {name}: {r:?}");
    }
    assert!(!pool.in_outage());
    drop(private);
}

/// When an outage ends, every client that waited through it gets a server at once (up to the
/// pool size), not one at a time as servers are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_every_waiter_gets_a_server_at_once() {
    let private = tokio::task::spawn_blocking(|| PrivatePg::start("churn-regrant"))
        .await
        .unwrap();
    let mux = Mux::start(private_config(&private, "default_pool_size = 4")).await;
    let cfg = tp_config(mux.port(), "postgres", "", "postgres");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, h) = tp_connect(&cfg).await.unwrap();
        assert_eq!(one(&c, "SELECT 1").await, "1");
        clients.push((c, h));
    }
    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        private
    })
    .await
    .unwrap();
    let pool = mux.pool("postgres", "postgres").unwrap();
    let mut queries = Vec::new();
    for (c, h) in clients {
        queries.push(tokio::spawn(async move {
            let r = c.simple_query("SELECT pg_sleep(2)").await.map(|_| ());
            drop(h);
            r
        }));
    }
    eventually(10, "all four wait", || {
        mux.counts("postgres", "postgres").unwrap().waiting == 4
    })
    .await;
    let private = tokio::task::spawn_blocking(move || {
        private.start();
        private
    })
    .await
    .unwrap();
    let first = tokio::time::timeout(
        Duration::from_secs(15),
        futures_util::future::select_all(queries),
    )
    .await
    .expect("no query ended");
    assert!(first.0.as_ref().unwrap().is_ok(), "{:?}", first.0);
    // The first 2 s query is over: every other one must have had its server by then.
    let waiting = mux.counts("postgres", "postgres").unwrap().waiting;
    assert_eq!(
        waiting, 0,
        "clients still waited for a server after the outage ended"
    );
    for q in first.2 {
        assert!(q.await.unwrap().is_ok());
    }
    assert!(!pool.in_outage());
    drop(private);
}

/// A connect that fails for a configuration reason (a database Postgres does not have, a wrong
/// password) is not an outage: the client gets Postgres' error at once, not after
/// query_wait_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_not_held() {
    let extra = format!(
        "{}{}",
        db_entry("nosuchdb", "no_such_database", ""),
        db_entry("badpw", "appdb", "user = \"app\"\npassword = \"wrong\"")
    );
    let mux = Mux::start(config("query_wait_timeout = 60", &extra)).await;
    for (db, want) in [("nosuchdb", "3D000"), ("badpw", "28P01")] {
        let cfg = tp_config(mux.port(), "app", "app_pw", db);
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(20), async {
            match tp_connect(&cfg).await {
                Err(e) => Err(e),
                Ok((c, _h)) => c.simple_query("SELECT 1").await.map(|_| ()),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{db}: held like an outage"));
        let e = r.expect_err(db);
        assert_eq!(code(&e).as_deref(), Some(want), "{db}: {e}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(!mux.pool(db, "app").unwrap().in_outage(), "{db}");
    }
}

/// A database host that stops answering without a RST (every packet dropped, in a network
/// namespace): a query sent to it fails once tcp_user_timeout passes, with an error naming
/// the host, while clients of another database go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_host_is_noticed_within_tcp_user_timeout() {
    // Dropped last: the cluster inside it stops first.
    let host = crate::support::netns::NetHost::create();
    let (ns, addr) = (host.ns.clone(), host.addr.clone());
    let private =
        tokio::task::spawn_blocking(move || PrivatePg::start_in("churn-stall", &ns, &addr))
            .await
            .unwrap();
    let stalled = format!(
        "[databases.stalled]\nhost = \"{}\"\nport = {}\ndbname = \"postgres\"\nuser = \"postgres\"\npassword = \"unused (trust)\"\n",
        host.addr, private.port
    );
    let mux = Mux::start(
        ConfigBuilder::new()
            .general("auth_type = \"trust\"\ntcp_user_timeout = 1500\nserver_connect_timeout = 3")
            .sections(&stalled)
            .sections(&db_entry("elsewhere", "appdb", ""))
            .user("app", Some("app_pw"))
            .build(),
    )
    .await;
    let (c, _hc) = connect_ok(mux.port(), "app", "", "stalled").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
    let (d, _hd) = connect_ok(mux.port(), "app", "", "elsewhere").await;
    assert_eq!(one(&d, "SELECT 1").await, "1");

    host.cut();
    let started = Instant::now();
    let q = tokio::spawn(async move { c.simple_query("SELECT 2").await.map(|_| ()) });
    // Others go on meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(one(&d, "SELECT 3").await, "3");
    let r = tokio::time::timeout(Duration::from_secs(30), q)
        .await
        .expect("a query to a stalled host hangs: tcp_user_timeout not applied")
        .unwrap();
    let waited = started.elapsed();
    let e = r.expect_err("the host is cut off");
    let text = format!("{e} {:?}", e.as_db_error());
    assert!(
        text.contains(&host.addr),
        "the error names the host: {text}"
    );
    eprintln!("stalled host noticed after {waited:?}: {text}");
    assert_eq!(one(&d, "SELECT 4").await, "4");
    drop(private);
}

/// A `[databases.NAME]` entry for user postgres on several local ports, with extra settings.
fn hosts_entry(name: &str, ports: &[u16], settings: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "[databases.{name}]\nhost = \"{hosts}\"\nport = \"{}\"\ndbname = \"postgres\"\n{settings}\n",
        ports.join(",")
    )
}

/// Failover: a primary and its streaming standby as one entry's two hosts, with
/// target_session_attrs = "read-write". Each entry's servers go where its attributes say, in
/// any host order. Under pgbench and a writer, the primary is stopped and the standby
/// promoted: no client aborts, every acknowledged write is on the new primary, and servers of
/// a "standby" entry whose host was promoted are closed when their client is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_promoted_standby_aborts_no_client() {
    let (primary, standby) = tokio::task::spawn_blocking(|| {
        let primary = PrivatePg::start("churn-primary");
        let mut init = Command::new("pgbench");
        init.args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-i", "-s", "1", "-q", "postgres"]);
        let (ok, out, err) = run(&mut init);
        assert!(ok, "pgbench -i: {out}{err}");
        primary.psql_super("postgres", "CREATE TABLE acked (n int)");
        let standby = PrivatePg::standby_of(&primary, "churn-standby");
        (primary, standby)
    })
    .await
    .unwrap();
    let (p, s) = (primary.port, standby.port);
    let sections = [
        hosts_entry("rw", &[p, s], "target_session_attrs = \"read-write\""),
        hosts_entry("rw2", &[s, p], "target_session_attrs = \"read-write\""),
        hosts_entry("ro", &[p, s], "target_session_attrs = \"standby\""),
        hosts_entry("any", &[s, p], ""),
        hosts_entry(
            "prefer",
            &[p, s],
            "target_session_attrs = \"prefer-standby\"",
        ),
    ]
    .concat();
    let mux = Mux::start(
        ConfigBuilder::new()
            .general("auth_type = \"trust\"\nmax_client_conn = 500\ndefault_pool_size = 10")
            .sections(&sections)
            .user("postgres", None)
            .build(),
    )
    .await;
    let port_of = |db: &'static str| {
        let cfg = tp_config(mux.port(), "postgres", "", db);
        async move {
            let (c, h) = tp_connect(&cfg).await.unwrap();
            let port = one(&c, "SELECT current_setting('port')").await;
            (c, h, port)
        }
    };
    for (db, want) in [("rw", p), ("rw2", p), ("ro", s), ("any", s), ("prefer", s)] {
        assert_eq!(port_of(db).await.2, want.to_string(), "{db}");
    }
    // A client of the standby entry, kept for after the promotion.
    let (ro, _hro, _) = port_of("ro").await;

    let port = mux.port();
    let bench = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "ulimit -n $(ulimit -Hn) 2>/dev/null; exec pgbench -h 127.0.0.1 -p {port} \
             -U postgres -n -S -c 20 -j 2 --rate 500 -T 10 rw"
        ));
        run(&mut cmd)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let cfg = tp_config(port, "postgres", "", "rw");
        tokio::spawn(async move {
            let (c, _h) = tp_connect(&cfg).await.unwrap();
            let mut acked = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.simple_query(&format!("INSERT INTO acked VALUES ({acked})"))
                    .await
                    .unwrap_or_else(|e| panic!("write {acked} failed: {e}"));
                acked += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (c, acked)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (primary, standby) = tokio::task::spawn_blocking(move || {
        primary.stop();
        std::thread::sleep(Duration::from_secs(1));
        standby.promote();
        (primary, standby)
    })
    .await
    .unwrap();
    let promoted = Instant::now();
    let pool = mux.pool("rw", "postgres").unwrap();
    eventually(10, "the rw pool serves again", || !pool.in_outage()).await;
    let served_after = promoted.elapsed();
    let processed = clean_run("failover", bench.await.unwrap());
    stop.store(true, Ordering::Relaxed);
    let (w, acked) = writer.await.unwrap();
    assert_eq!(
        one(&w, "SELECT current_setting('port')").await,
        s.to_string()
    );
    assert_eq!(
        one(&w, "SELECT count(*) FROM acked").await,
        acked.to_string(),
        "acknowledged writes lost or doubled"
    );
    eprintln!(
        "failover: {processed} transactions and {acked} writes, none failed; rw served again \
         {served_after:?} after pg_ctl promote returned; requests re-sent {}",
        pool.stats.resent.load(Ordering::Relaxed)
    );

    // prefer-standby with no standby left: the promoted server, rather than nothing.
    assert_eq!(port_of("prefer").await.2, s.to_string());

    // The standby entry's server now talks to a primary: it says so (in_hot_standby off) at the
    // end of the next request, and is closed then; no other host fits, so the next one waits.
    assert_eq!(one(&ro, "SELECT pg_is_in_recovery()::text").await, "false");
    let ro_pool = mux.pool("ro", "postgres").unwrap();
    eventually(10, "the promoted server is closed", || {
        mux.counts("ro", "postgres").unwrap().open == 0
    })
    .await;
    let q = tokio::spawn(async move { ro.simple_query("SELECT 1").await.map(|_| ()) });
    eventually(10, "the ro pool finds no standby", || ro_pool.in_outage()).await;
    assert!(!q.is_finished(), "served by a primary");
    q.abort();
    drop((primary, standby));
}

/// A Parse+Sync that had to wait for a server, for a statement that became known while it
/// waited (another client prepared it on the server it then gets), is answered by pgmux
/// without using that server: sent, it would get a ParseComplete from pgmux, after which a
/// FATAL from a terminated server could not be re-sent (`pgbench -M prepared` met this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_that_waited_for_a_known_statement_needs_no_server() {
    use crate::extended::{exchange, login};
    use crate::support::raw::{parse, send, sync};
    let mux = Mux::start(config("", "")).await;
    let pool_queries = |mux: &Mux| {
        mux.pool("appdb", "app")
            .unwrap()
            .stats
            .queries
            .load(Ordering::Relaxed)
    };
    let sql = "SELECT 'known while waiting'::text";
    let mut a = login(mux.port()).await;
    exchange(&mut a, &crate::support::raw::query("BEGIN"), 1).await;
    // pool_size is 5: hold them all, so the next client waits.
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut h = login(mux.port()).await;
        exchange(&mut h, &crate::support::raw::query("BEGIN"), 1).await;
        holders.push(h);
    }
    let mut b = login(mux.port()).await;
    send(&mut b, &[parse("b1", sql), sync()].concat()).await;
    eventually(10, "b waits", || {
        mux.counts("appdb", "app").unwrap().waiting == 1
    })
    .await;
    // A prepares it on its server, then commits: that server goes to b.
    let got = exchange(&mut a, &[parse("a1", sql), sync()].concat(), 1).await;
    assert_eq!(crate::support::raw::tags(&got), "1Z");
    let before = pool_queries(&mux);
    exchange(&mut a, &crate::support::raw::query("COMMIT"), 1).await;
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        crate::support::raw::read_through_ready(&mut b),
    )
    .await
    .expect("b is answered");
    assert_eq!(crate::support::raw::tags(&got), "1Z");
    // Only a's COMMIT reached a server.
    assert_eq!(pool_queries(&mux) - before, 1, "b's Sync went to a server");
    drop(holders);
}
