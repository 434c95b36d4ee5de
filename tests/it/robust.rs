//! Defects a review of the whole tree found (issue 13), each with the test that failed before
//! its fix.

use crate::support::client::{code, connect_ok, one, sql_super, tp_config, tp_connect};
use crate::support::config::database_section;
use crate::support::{eventually, pg, ConfigBuilder, Mux, PrivatePg};

/// pgmux with trust logins for `postgres`, and entry `moving` on 127.0.0.1:`port`.
fn moving_config(port: u16) -> pgmux::config::Config {
    ConfigBuilder::new()
        .general("auth_type = \"trust\"")
        .database("moving", port, "dbname = \"postgres\"")
        .user("postgres", None)
        .build()
}

/// A reload that points a pool at another server: new clients are told that server's
/// parameters, and the parameter sync does not push the old server's values onto it (defect
/// 4: the pool kept the first server's parameters for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_to_another_server_forgets_the_old_servers_parameters() {
    let private = tokio::task::spawn_blocking(|| {
        let p = PrivatePg::start("robust-welcome");
        p.psql_super("postgres", "ALTER SYSTEM SET TimeZone = 'Asia/Tokyo'");
        p.psql_super("postgres", "SELECT pg_reload_conf()");
        p
    })
    .await
    .unwrap();
    let mux = Mux::start(moving_config(pg().port)).await;
    let cfg = tp_config(mux.port(), "postgres", "", "moving");
    let (a, _ha) = tp_connect(&cfg).await.unwrap();
    let before = one(&a, "SHOW TimeZone").await;
    assert_ne!(before, "Asia/Tokyo");
    drop(a);
    pgmux::reload::apply(&mux.running.shared, moving_config(private.port)).expect("reload");
    let (b, _hb) = tp_connect(&cfg).await.unwrap();
    assert_eq!(
        one(&b, "SELECT current_setting('port')").await,
        private.port.to_string()
    );
    assert_eq!(
        one(&b, "SHOW TimeZone").await,
        "Asia/Tokyo",
        "the old server's TimeZone was pushed onto the new one"
    );
    drop(private);
}

/// Database names made up by clients that never authenticate, under a `"*"` entry with
/// auth_user and no auth_dbname: no pool is made for any of them (defect 1: each name left an auth_query pool behind for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_to_made_up_databases_leave_no_pool() {
    sql_super(
        "postgres",
        "CREATE ROLE rb1_user LOGIN PASSWORD 'rb1_pw'; GRANT CONNECT ON DATABASE appdb TO rb1_user",
    )
    .await;
    let config = ConfigBuilder::new()
        .general("auth_user = \"postgres\"\nauth_failure_delay = 0\nauth_query_cache_ttl = 0")
        .sections(&database_section("\"*\"", pg().port, ""))
        .build();
    let mux = Mux::start(config).await;
    for i in 0..20 {
        let db = format!("rb1_made_up_{i}");
        let e = tp_connect(&tp_config(mux.port(), "rb1_nobody", "x", &db))
            .await
            .err()
            .unwrap_or_else(|| panic!("a login to {db} should fail"));
        assert!(code(&e).is_some(), "{e}");
    }
    // A wrong password to a real database: the lookup works, authentication fails.
    let Err(e) = tp_connect(&tp_config(mux.port(), "rb1_user", "wrong", "appdb")).await else {
        panic!("a wrong password");
    };
    assert_eq!(code(&e).as_deref(), Some("28P01"));
    let registry = &mux.running.shared.registry;
    let names: Vec<String> = registry
        .all()
        .iter()
        .map(|p| format!("{}/{}", p.database, p.user))
        .collect();
    assert!(
        names.is_empty(),
        "pools made before authentication: {names:?}"
    );
    // Authenticated, the client gets its pool, and the lookup still left none.
    let (c, _h) = connect_ok(mux.port(), "rb1_user", "rb1_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "rb1_user");
    assert_eq!(registry.all().len(), 1);
    assert!(mux.pool("appdb", "rb1_user").is_some());
}

/// Pools of databases reached through `"*"` go once unused for autodb_idle_timeout, their
/// servers closed; a pool in use stays; one that never opened a server goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_pools_of_the_star_entry_are_removed() {
    sql_super(
        "postgres",
        "CREATE ROLE rb2_user LOGIN PASSWORD 'rb2_pw'; GRANT CONNECT ON DATABASE appdb TO rb2_user;
         GRANT CONNECT ON DATABASE otherdb TO rb2_user",
    )
    .await;
    let config = ConfigBuilder::new()
        .general("autodb_idle_timeout = 4\nauth_failure_delay = 0")
        .sections(&database_section("\"*\"", pg().port, ""))
        .user("rb2_user", Some("rb2_pw"))
        .build();
    let mux = Mux::start(config).await;
    let (kept, _hk) = connect_ok(mux.port(), "rb2_user", "rb2_pw", "otherdb").await;
    {
        let (c, _h) = connect_ok(mux.port(), "rb2_user", "rb2_pw", "appdb").await;
        assert_eq!(one(&c, "SELECT 1").await, "1");
    }
    // The appdb pool is unused from here.
    let unused = std::time::Instant::now();
    let servers = |db: &'static str| async move {
        sql_super(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'rb2_user' AND datname = '{db}'"
            ),
        )
        .await
    };
    // Its pool keeps its server while it waits out autodb_idle_timeout.
    assert_eq!(servers("appdb").await, "1");
    // A database Postgres does not have: its pool never opened a server, and goes on the
    // janitor's next pass (once a second), long before the timeout.
    let Err(e) = tp_connect(&tp_config(mux.port(), "rb2_user", "rb2_pw", "rb2_nosuch")).await
    else {
        panic!("no such database");
    };
    assert_eq!(code(&e).as_deref(), Some("3D000"));
    eventually(3, "a pool that never connected goes", || {
        mux.pool("rb2_nosuch", "rb2_user").is_none()
    })
    .await;
    // The idle one stays until the timeout. Checked only while it surely has not passed:
    // a loaded machine may take seconds to get here.
    if unused.elapsed() < std::time::Duration::from_millis(3500) {
        assert!(
            mux.pool("appdb", "rb2_user").is_some(),
            "removed before autodb_idle_timeout"
        );
    }
    eventually(10, "the pool unused past autodb_idle_timeout goes", || {
        mux.pool("appdb", "rb2_user").is_none()
    })
    .await;
    assert!(
        unused.elapsed() >= std::time::Duration::from_secs(4),
        "removed before autodb_idle_timeout"
    );
    assert!(mux.pool("otherdb", "rb2_user").is_some(), "in use");
    assert_eq!(one(&kept, "SELECT 1").await, "1");
    // Its server closed with it (the backend may take a moment to leave).
    let mut left = String::new();
    for _ in 0..50 {
        left = servers("appdb").await;
        if left == "0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, "0");
    // And a client coming back gets a new pool.
    let (c, _h) = connect_ok(mux.port(), "rb2_user", "rb2_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
}

/// A panic in a client task while it holds a server ends that client only: it gets XX000,
/// the server is closed with its slot given back (no ghost in SHOW SERVERS, no session left
/// on Postgres), and the pool of one server serves the next client (defect 3: the slot and
/// the server's row were lost for good). Debug builds carry the injected panic.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_holding_a_server_closes_it_and_frees_its_slot() {
    let config = ConfigBuilder::new()
        .general("auth_type = \"trust\"\nquery_wait_timeout = 5")
        .database(
            "rb3",
            pg().port,
            "dbname = \"appdb\"\npool_size = 1\napplication_name = \"rb3\"",
        )
        .user("postgres", None)
        .build();
    let mux = Mux::start(config).await;
    let cfg = tp_config(mux.port(), "postgres", "", "rb3");
    let (a, _ha) = tp_connect(&cfg).await.unwrap();
    let pid = one(&a, "SELECT pg_backend_pid()").await;
    let e = a
        .simple_query("SELECT 'pgmux: injected panic'")
        .await
        .expect_err("the injected panic");
    assert_eq!(code(&e).as_deref(), Some("XX000"), "{e}");
    assert!(a.is_closed() || a.simple_query("SELECT 1").await.is_err());
    // The server it held is gone from the pool and from Postgres.
    let pool = mux.pool("rb3", "postgres").unwrap();
    let mut left = String::new();
    for _ in 0..100 {
        left = sql_super(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .await;
        if left == "0" && pool.counts().open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, "0", "its session is still on Postgres");
    let c = pool.counts();
    assert_eq!((c.open, c.active), (0, 0), "{c:?}");
    assert!(pool.server_infos().is_empty(), "a ghost in SHOW SERVERS");
    // The only slot is free: the next client is served.
    let (b, _hb) = tp_connect(&cfg).await.unwrap();
    assert_eq!(one(&b, "SELECT 1").await, "1");
}
