//! Integration tests: the pool — server reuse, first-in first-out waiting, query_wait_timeout,
//! the reserve pool, max_db_connections / max_user_connections, the janitor (min_pool_size,
//! server_idle_timeout, server_lifetime) and waiters that leave.
//!
//! Tests that count backends in `pg_stat_activity` use a database of their own, so that
//! other tests running in parallel against the shared cluster do not disturb the count.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::support::client::code;
use crate::support::simple::{col, one};
use crate::support::{config, db_entry, eventually, pg, Mux};

/// Create a database owned by `app` for one test.
fn own_database(name: &str) {
    pg().psql_super("postgres", &format!("CREATE DATABASE {name} OWNER app"));
}

/// Create database `dbname` for this test, and start pgmux with the harness config plus
/// `general`, and an entry `name` for that database with `settings`.
async fn mux_on_own_database(dbname: &str, name: &str, general: &str, settings: &str) -> Mux {
    own_database(dbname);
    Mux::start(config(general, &db_entry(name, dbname, settings))).await
}

/// Client backends connected to database `db`, as Postgres sees them.
fn backends(db: &str) -> usize {
    pg().psql_super(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND backend_type = 'client backend'"
        ),
    )
    .trim()
    .parse()
    .unwrap()
}

/// The most servers open at once, summed over some pools, sampled every few milliseconds.
struct MaxOpen {
    stop: Arc<AtomicBool>,
    task: JoinHandle<usize>,
}

impl MaxOpen {
    /// Start sampling the (database, user) `pools`.
    fn watch(mux: &Arc<Mux>, pools: &'static [(&'static str, &'static str)]) -> MaxOpen {
        let stop = Arc::new(AtomicBool::new(false));
        let (mux, stopped) = (mux.clone(), stop.clone());
        let open = move || {
            pools
                .iter()
                .map(|(db, user)| mux.counts(db, user).map_or(0, |c| c.open))
                .sum::<usize>()
        };
        let task = tokio::spawn(async move {
            let mut max = 0;
            while !stopped.load(Ordering::Relaxed) {
                max = max.max(open());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max.max(open())
        });
        MaxOpen { stop, task }
    }

    /// Stop sampling and return the largest value seen.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Run `f` in a task of its own; the flag tells whether it has finished.
fn spawn_flagged<T: Send + 'static>(
    f: impl Future<Output = T> + Send + 'static,
) -> (Arc<AtomicBool>, JoinHandle<T>) {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let task = tokio::spawn(async move {
        let v = f.await;
        d.store(true, Ordering::Relaxed);
        v
    });
    (done, task)
}

/// Connect with `connstr` and ask for current_user. A new pool needs a server even to log
/// in (to learn the server's parameters).
async fn new_client_current_user(connstr: String) -> (Client, String) {
    let (b, conn) = tokio_postgres::connect(&connstr, NoTls).await.unwrap();
    tokio::spawn(conn);
    let u = one(&b, "SELECT current_user").await;
    (b, u)
}

// 1. Servers are reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_reused_by_sequential_transactions_of_three_clients() {
    let mux = Arc::new(mux_on_own_database("pool_reuse", "reusedb", "", "pool_size = 2").await);
    let max_open = MaxOpen::watch(&mux, &[("reusedb", "app")]);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let c = mux.connect_as("app", "app_pw", "reusedb").await;
        tasks.push(tokio::spawn(async move {
            let mut pids = Vec::new();
            for _ in 0..20 {
                col(&c, "BEGIN").await;
                pids.push(one(&c, "SELECT pg_backend_pid()").await);
                col(&c, "SELECT 1").await;
                col(&c, "COMMIT").await;
            }
            pids
        }));
    }
    let mut pids = HashSet::new();
    let mut transactions = 0;
    for t in tasks {
        let p = t.await.unwrap();
        transactions += p.len();
        pids.extend(p);
    }
    let max_open = max_open.finish().await;
    assert_eq!(transactions, 60);
    assert!(
        pids.len() <= 2,
        "60 transactions used {} backends: {pids:?}",
        pids.len()
    );
    assert!(max_open <= 2, "pool of 2 had {max_open} servers open");
    let counts = mux.settled("reusedb", |c| c.active == 0).await;
    assert!(counts.open <= 2, "{counts:?}");
    let opened = mux
        .pool("reusedb", "app")
        .expect("pool exists")
        .stats
        .servers_opened
        .load(Ordering::Relaxed);
    assert!(opened <= 2, "{opened} servers were opened for a pool of 2");
    let n = backends("pool_reuse");
    assert!(n <= 2, "{n} backends on the pool's database");
}

// 2. Waiters are served first-in first-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_in_first_out() {
    let mux = Mux::start(config("", &db_entry("fifodb", "appdb", "pool_size = 1"))).await;
    let a = mux.connect_as("app", "app_pw", "fifodb").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(mux.connect_as("app", "app_pw", "fifodb").await);
    }
    col(&a, "BEGIN; SELECT 1").await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, (name, c)) in ["B", "C", "D"].into_iter().zip(others).enumerate() {
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            // The server-side clock says in which order the queries really ran.
            let at = one(&c, "SELECT clock_timestamp()::text FROM pg_sleep(0.05)").await;
            order.lock().unwrap().push(name);
            (name, at)
        }));
        // Make sure each one is queued before the next starts.
        eventually(5, &format!("{} waiters", i + 1), || {
            mux.counts("fifodb", "app").unwrap().waiting == i + 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = mux.counts("fifodb", "app").unwrap();
    assert_eq!(counts.waiting, 3, "{counts:?}");
    assert_eq!(counts.open, 1, "{counts:?}");
    assert!(counts.max_wait >= Duration::from_millis(40), "{counts:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        order.lock().unwrap().is_empty(),
        "a waiter ran while A held the only server"
    );
    col(&a, "COMMIT").await;
    let mut ran = Vec::new();
    for t in tasks {
        ran.push(
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("waiter finished")
                .unwrap(),
        );
    }
    assert_eq!(*order.lock().unwrap(), ["B", "C", "D"], "completion order");
    let mut by_clock = ran.clone();
    by_clock.sort_by(|x, y| x.1.cmp(&y.1));
    let by_clock: Vec<_> = by_clock.iter().map(|r| r.0).collect();
    assert_eq!(
        by_clock,
        ["B", "C", "D"],
        "execution order on the server: {ran:?}"
    );
    assert_eq!(mux.counts("fifodb", "app").unwrap().waiting, 0);
}

// 3. query_wait_timeout.

/// `client` (`who`) asks for a server that another client holds, and gets query_wait_timeout's
/// error (QUERY_CANCELED, 57014) after about 1 s (the timeout these tests set).
async fn times_out_after_1s(client: &Client, who: &str) -> tokio_postgres::Error {
    let t0 = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"))
        .await
        .unwrap_or_else(|_| panic!("{who} was not timed out"))
        .expect_err("a waiter got the server another client held");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{who}: query_wait_timeout = 1 fired after {waited:?}"
    );
    assert_eq!(code(&err).as_deref(), Some("57014"), "{err:?}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_fails_the_waiter_and_disconnects_it() {
    let mux = Mux::start(config(
        "query_wait_timeout = 1",
        &db_entry("qwtdb", "appdb", "pool_size = 1"),
    ))
    .await;
    let a = mux.connect_as("app", "app_pw", "qwtdb").await;
    let (b, b_conn) = mux.connect_with_handle("app", "app_pw", "qwtdb").await;
    col(&a, "BEGIN; SELECT 1").await;
    let err = times_out_after_1s(&b, "B").await;
    // pgmux reports it as FATAL, and closes the client.
    let db = err.as_db_error().unwrap();
    assert!(db.message().contains("query_wait_timeout"), "{db:?}");
    assert_eq!(db.severity(), "FATAL", "{db:?}");
    tokio::time::timeout(Duration::from_secs(3), b_conn)
        .await
        .expect("pgmux did not close the timed-out client")
        .unwrap()
        .ok();
    assert!(b.is_closed());
    assert!(b.simple_query("SELECT 1").await.is_err());
    let counts = mux.counts("qwtdb", "app").unwrap();
    assert_eq!(counts.waiting, 0, "{counts:?}");
    // A's transaction was not disturbed, and the pool still works afterwards.
    assert_eq!(one(&a, "SELECT 2").await, "2");
    col(&a, "COMMIT").await;
    let c = mux.connect_as("app", "app_pw", "qwtdb").await;
    assert_eq!(one(&c, "SELECT 3").await, "3");
    assert_eq!(one(&a, "SELECT 4").await, "4");
    let counts = mux.counts("qwtdb", "app").unwrap();
    assert_eq!((counts.open, counts.waiting), (1, 0), "{counts:?}");
}

/// query_wait_timeout comes from one clock per pool, not a timer per waiter: it ends waits
/// again after the clock stopped (nobody left to time out), and a shorter timeout set while a
/// client waits holds for those who join after it, while the earlier waiter keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_holds_after_the_queue_empties_and_when_shortened() {
    let mux = Mux::start(config(
        "query_wait_timeout = 1\nadmin_users = [\"app\"]",
        &db_entry("qwtclockdb", "appdb", "pool_size = 1"),
    ))
    .await;
    let a = mux.connect_as("app", "app_pw", "qwtclockdb").await;
    col(&a, "BEGIN; SELECT 1").await;
    // Two waits one after the other: the second starts after the first one's clock ended.
    for round in ["first", "second"] {
        let b = mux.connect_as("app", "app_pw", "qwtclockdb").await;
        times_out_after_1s(&b, &format!("the {round} waiter")).await;
    }
    // A long timeout, a waiter under it, then a short one: the next waiter gets the short one.
    let console = mux.connect_as("app", "app_pw", "pgmux").await;
    console
        .simple_query("SET query_wait_timeout = 30")
        .await
        .unwrap();
    let patient = mux.connect_as("app", "app_pw", "qwtclockdb").await;
    let (patient_done, patient_wait) =
        spawn_flagged(async move { one(&patient, "SELECT 'patient'").await });
    eventually(5, "the patient client waits", || {
        mux.counts("qwtclockdb", "app").unwrap().waiting == 1
    })
    .await;
    console
        .simple_query("SET query_wait_timeout = 1")
        .await
        .unwrap();
    let c = mux.connect_as("app", "app_pw", "qwtclockdb").await;
    times_out_after_1s(&c, "a waiter under the shortened timeout").await;
    // The earlier waiter still waits (its 30 s), and gets the server when A is done.
    assert!(
        !patient_done.load(Ordering::Relaxed),
        "the patient waiter was timed out"
    );
    col(&a, "COMMIT").await;
    let got = tokio::time::timeout(Duration::from_secs(5), patient_wait)
        .await
        .expect("the patient waiter never got the server")
        .unwrap();
    assert_eq!(got, "patient");
    let counts = mux.counts("qwtclockdb", "app").unwrap();
    assert_eq!((counts.open, counts.waiting), (1, 0), "{counts:?}");
}

// 4. Reserve pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_serves_a_waiter_after_reserve_pool_timeout() {
    let mux = Arc::new(
        Mux::start(config(
            "reserve_pool_timeout = 0.5",
            &db_entry("reservedb", "appdb", "pool_size = 1\nreserve_pool_size = 1"),
        ))
        .await,
    );
    let a = mux.connect_as("app", "app_pw", "reservedb").await;
    let b = mux.connect_as("app", "app_pw", "reservedb").await;
    let c = mux.connect_as("app", "app_pw", "reservedb").await;
    let max_open = MaxOpen::watch(&mux, &[("reservedb", "app")]);
    col(&a, "BEGIN; SELECT 1").await;
    let pid_a = one(&a, "SELECT pg_backend_pid()").await;

    // B waits ~0.5 s, then gets a reserve server while A's transaction is still open.
    let t0 = Instant::now();
    let pid_b = tokio::time::timeout(
        Duration::from_secs(5),
        one(&b, "BEGIN; SELECT pg_backend_pid()"),
    )
    .await
    .expect("B never got a reserve server");
    let waited = t0.elapsed();
    assert!(
        // The upper bound leaves room for a slow CI machine; without a reserve server B
        // would wait for A, which never commits here.
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "reserve_pool_timeout = 0.5, but B waited {waited:?}"
    );
    assert_ne!(pid_a, pid_b);
    assert_eq!(
        one(&a, "SELECT pg_backend_pid()").await,
        pid_a,
        "A's transaction moved"
    );
    let counts = mux.counts("reservedb", "app").unwrap();
    assert_eq!((counts.open, counts.active), (2, 2), "{counts:?}");

    // A third waiter finds the reserve used up: it waits, and no third server is opened.
    let (done, third) = spawn_flagged(async move { one(&c, "SELECT 'c'").await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!done.load(Ordering::Relaxed), "C got a third server");
    let counts = mux.counts("reservedb", "app").unwrap();
    assert_eq!((counts.open, counts.waiting), (2, 1), "{counts:?}");

    col(&a, "COMMIT").await;
    let v = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("C was not served after A committed")
        .unwrap();
    assert_eq!(v, "c");
    col(&b, "COMMIT").await;
    let max_open = max_open.finish().await;
    assert_eq!(max_open, 2, "pool_size 1 + reserve_pool_size 1");
    let reserve_opened = mux
        .pool("reservedb", "app")
        .expect("pool exists")
        .stats
        .reserve_opened
        .load(Ordering::Relaxed);
    assert_eq!(reserve_opened, 1);
}

/// Two pools share a cap of one server: client `first` (already logged in to its pool) holds
/// the one server in a transaction; `second` connects and queries. The second must wait
/// while the first holds it, and be served once the first commits.
async fn one_server_across_two_pools(
    mux: &Mux,
    first: (&str, &str, &str),
    second: (&'static str, &'static str, &'static str),
    count_dbs: &[&str],
) {
    let total_backends = || count_dbs.iter().map(|d| backends(d)).sum::<usize>();
    let a = mux.connect_as(first.0, first.1, first.2).await;
    col(&a, "BEGIN; SELECT 1").await;
    let connstr = mux.connstr(second.0, second.1, second.2);
    let (done, b_task) = spawn_flagged(new_client_current_user(connstr));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !done.load(Ordering::Relaxed),
        "the second pool got a server beyond the cap"
    );
    assert_eq!(total_backends(), 1, "servers beyond the cap");
    let first_open = mux.counts(first.2, first.0).unwrap().open;
    let second_open = mux.counts(second.2, second.0).map_or(0, |c| c.open);
    assert_eq!(first_open + second_open, 1);

    col(&a, "COMMIT").await;
    let released = Instant::now();
    let (b, user) = tokio::time::timeout(Duration::from_secs(5), b_task)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the second pool was not served after the first released its server: \
                 first {:?}, second {:?}",
                mux.counts(first.2, first.0),
                mux.counts(second.2, second.0)
            )
        })
        .unwrap();
    assert_eq!(user, second.0);
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "served {:?} after the release",
        released.elapsed()
    );
    eventually(5, "one backend", || total_backends() == 1).await;

    // And back: the first pool gets the one server again once the second is idle.
    let v = tokio::time::timeout(Duration::from_secs(5), one(&a, "SELECT 'again'"))
        .await
        .expect("the first pool was not served again");
    assert_eq!(v, "again");
    assert_eq!(one(&b, "SELECT 'b'").await, "b");
    eventually(5, "one backend", || total_backends() == 1).await;
}

// 5a. max_db_connections caps servers across the pools (users) of one database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_servers_across_users() {
    let mux = mux_on_own_database("pool_dbcap", "capdb", "", "max_db_connections = 1").await;
    one_server_across_two_pools(
        &mux,
        ("app", "app_pw", "capdb"),
        ("other", "other_pw", "capdb"),
        &["pool_dbcap"],
    )
    .await;
}

// 5b. max_user_connections caps servers across the pools (databases) of one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_caps_servers_across_databases() {
    own_database("pool_ucap1");
    own_database("pool_ucap2");
    let extra = db_entry("ucap1", "pool_ucap1", "") + &db_entry("ucap2", "pool_ucap2", "");
    let mux = Mux::start(config("max_user_connections = 1", &extra)).await;
    one_server_across_two_pools(
        &mux,
        ("app", "app_pw", "ucap1"),
        ("app", "app_pw", "ucap2"),
        &["pool_ucap1", "pool_ucap2"],
    )
    .await;
}

// 5c. The caps hold while both pools are busy, and a waiter gets the room a closed server
// frees (here closed by server_idle_timeout), so the cap is shared, not per pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_room_freed_by_a_closed_server_goes_to_the_other_pool() {
    let mux = Arc::new(
        mux_on_own_database(
            "pool_dbcap2",
            "capdb2",
            "server_idle_timeout = 1",
            "max_db_connections = 1",
        )
        .await,
    );
    let max_open = MaxOpen::watch(&mux, &[("capdb2", "app"), ("capdb2", "other")]);
    let a = mux.connect_as("app", "app_pw", "capdb2").await;
    col(&a, "BEGIN; SELECT 1").await;
    let connstr = mux.connstr("other", "other_pw", "capdb2");
    let (done, b_task) = spawn_flagged(new_client_current_user(connstr));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !done.load(Ordering::Relaxed),
        "second pool got a server beyond the cap"
    );
    assert_eq!(backends("pool_dbcap2"), 1);
    col(&a, "COMMIT").await;
    // The idle server of app's pool is closed after ~1 s; other's pool then gets the room.
    let (b, u) = tokio::time::timeout(Duration::from_secs(5), b_task)
        .await
        .expect("the waiter never got the room of the closed server")
        .unwrap();
    drop(b);
    assert_eq!(u, "other");
    assert_eq!(
        max_open.finish().await,
        1,
        "more than max_db_connections servers"
    );
    eventually(5, "one backend", || backends("pool_dbcap2") <= 1).await;
}

// 6a. min_pool_size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_opens_min_pool_size_servers_without_queries() {
    let mux =
        mux_on_own_database("pool_min", "mindb", "", "pool_size = 5\nmin_pool_size = 2").await;
    let _c = mux.connect_as("app", "app_pw", "mindb").await;
    let t0 = Instant::now();
    eventually(5, "2 idle servers", || {
        let c = mux.counts("mindb", "app").unwrap();
        c.open == 2 && c.idle == 2
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    eventually(5, "2 backends", || backends("pool_min") == 2).await;
    // It stops at min_pool_size.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = mux.counts("mindb", "app").unwrap();
    assert_eq!((c.open, c.idle, c.active), (2, 2, 0), "{c:?}");
    assert_eq!(backends("pool_min"), 2);
}

// 6b. server_idle_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_closes_idle_servers_above_min_pool_size() {
    let mux = mux_on_own_database(
        "pool_idle",
        "idledb",
        "server_idle_timeout = 1",
        "pool_size = 5\nmin_pool_size = 1",
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = mux.connect_as("app", "app_pw", "idledb").await;
        clients.push(c);
    }
    for c in &clients {
        col(c, "BEGIN; SELECT 1").await;
    }
    assert_eq!(mux.counts("idledb", "app").unwrap().open, 3);
    for c in &clients {
        col(c, "COMMIT").await;
    }
    let released = Instant::now();
    let counts = mux.settled("idledb", |c| c.idle == 3).await;
    assert_eq!(counts.open, 3, "{counts:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        mux.counts("idledb", "app").unwrap().open,
        3,
        "closed before server_idle_timeout"
    );
    eventually(5, "idle servers closed down to min_pool_size", || {
        mux.counts("idledb", "app").unwrap().open == 1
    })
    .await;
    let after = released.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "server_idle_timeout = 1 closed servers after {after:?}"
    );
    eventually(5, "1 backend", || backends("pool_idle") == 1).await;
    // min_pool_size is kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mux.counts("idledb", "app").unwrap().open, 1);
    assert_eq!(one(&clients[0], "SELECT 1").await, "1");
}

// 6c. server_lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_replaces_servers_when_next_idle() {
    let mux = Mux::start(config(
        "server_lifetime = 1",
        &db_entry("lifedb", "appdb", "pool_size = 1"),
    ))
    .await;
    let c = mux.connect_as("app", "app_pw", "lifedb").await;
    // The janitor closes the login's idle server once it is past its lifetime; start from a
    // fresh server.
    eventually(5, "the login's server closed by the janitor", || {
        mux.counts("lifedb", "app").unwrap().open == 0
    })
    .await;
    let p1 = one(&c, "SELECT pg_backend_pid()").await;
    assert_eq!(one(&c, "SELECT pg_backend_pid()").await, p1);
    // A transaction outliving server_lifetime keeps its server to the end...
    col(&c, "BEGIN").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        one(&c, "SELECT pg_backend_pid()").await,
        p1,
        "server closed mid-transaction"
    );
    col(&c, "COMMIT").await;
    // ...and the server is closed when it becomes idle.
    let p2 = one(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(p1, p2, "server kept past server_lifetime");
    eventually(5, "old backend gone", || {
        pg().psql_super(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {p1}"),
        )
        .trim()
            == "0"
    })
    .await;
    // An idle server past its lifetime is closed by the janitor.
    eventually(5, "idle server closed by the janitor", || {
        mux.counts("lifedb", "app").unwrap().open == 0
    })
    .await;
    let p3 = one(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(p2, p3);
    assert!(mux.counts("lifedb", "app").unwrap().open <= 1);
}

/// Start a query on a client of its own that will wait, and return the handle of its
/// connection task (aborting it closes the socket) and of the query.
async fn start_waiter(
    mux: &Mux,
    db: &str,
) -> (
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (c, conn) = mux.connect_with_handle("app", "app_pw", db).await;
    let q = tokio::spawn(async move {
        let _ = c.simple_query("SELECT 'ghost'").await;
    });
    (conn, q)
}

// 7a. A waiter that disconnects leaves the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_client_that_disconnects_leaves_the_queue() {
    let mux = Mux::start(config("", &db_entry("leavedb", "appdb", "pool_size = 2"))).await;
    let a = mux.connect_as("app", "app_pw", "leavedb").await;
    let b = mux.connect_as("app", "app_pw", "leavedb").await;
    col(&a, "BEGIN; SELECT 1").await;
    col(&b, "BEGIN; SELECT 1").await;
    let (conn, q) = start_waiter(&mux, "leavedb").await;
    eventually(5, "1 waiter", || {
        mux.counts("leavedb", "app").unwrap().waiting == 1
    })
    .await;
    conn.abort();
    q.abort();
    eventually(3, "the disconnected waiter to leave the queue", || {
        mux.counts("leavedb", "app").unwrap().waiting == 0
    })
    .await;
    col(&a, "COMMIT").await;
    col(&b, "COMMIT").await;
}

// 7b. ... and does not leak a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_client_that_disconnects_does_not_leak_a_slot() {
    let mux = Mux::start(config("", &db_entry("leakdb", "appdb", "pool_size = 2"))).await;
    let a = mux.connect_as("app", "app_pw", "leakdb").await;
    let b = mux.connect_as("app", "app_pw", "leakdb").await;
    col(&a, "BEGIN; SELECT 1").await;
    col(&b, "BEGIN; SELECT 1").await;
    let mut ghosts = Vec::new();
    for i in 0..3 {
        let (conn, q) = start_waiter(&mux, "leakdb").await;
        eventually(5, "waiter queued", || {
            mux.counts("leakdb", "app").unwrap().waiting == i + 1
        })
        .await;
        ghosts.push((conn, q));
    }
    for (conn, q) in ghosts {
        conn.abort();
        q.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    col(&a, "COMMIT").await;
    col(&b, "COMMIT").await;
    eventually(5, "no waiters", || {
        let c = mux.counts("leakdb", "app").unwrap();
        c.waiting == 0 && c.active == 0
    })
    .await;
    // The pool still serves pool_size concurrent transactions.
    let x = mux.connect_as("app", "app_pw", "leakdb").await;
    let y = mux.connect_as("app", "app_pw", "leakdb").await;
    let px = tokio::time::timeout(
        Duration::from_secs(3),
        one(&x, "BEGIN; SELECT pg_backend_pid()"),
    )
    .await
    .expect("first transaction not served");
    let py = tokio::time::timeout(
        Duration::from_secs(3),
        one(&y, "BEGIN; SELECT pg_backend_pid()"),
    )
    .await
    .expect("second concurrent transaction not served: a slot leaked");
    assert_ne!(px, py);
    let c = mux.counts("leakdb", "app").unwrap();
    assert_eq!((c.active, c.open, c.waiting), (2, 2, 0), "{c:?}");
    col(&x, "COMMIT").await;
    col(&y, "COMMIT").await;
    // Old clients still work too.
    assert_eq!(one(&a, "SELECT 1").await, "1");
    let c = mux.settled("leakdb", |c| c.active == 0).await;
    assert!(c.open <= 2, "{c:?}");
}
