//! auth_query: secrets looked up in Postgres through the auth_user's pool, cached for
//! auth_query_cache_ttl, for client logins (SCRAM and MD5 secrets), the servers of the
//! client's pool and the admin console; and its failures.

use std::sync::atomic::Ordering;

use crate::support::client::{code, connect_ok, one, rows, sql_super, tp_config, tp_connect};
use crate::support::{pg, ConfigBuilder, Mux};

/// A login that must fail: its (SQLSTATE, message).
async fn login_error(port: u16, user: &str, pw: &str, db: &str) -> (String, String) {
    match tp_connect(&tp_config(port, user, pw, db)).await {
        Ok(_) => panic!("login as {user} to {db} should fail"),
        Err(e) => (
            code(&e).unwrap_or_else(|| panic!("no SQLSTATE: {e}")),
            e.as_db_error().unwrap().message().to_string(),
        ),
    }
}

/// In appdb: schema `schema` with a SECURITY DEFINER lookup function over pg_shadow that
/// counts its calls, executable by `auth_role` (LOGIN, password `<auth_role>_pw`) only.
async fn lookup_function(schema: &str, auth_role: &str) {
    sql_super(
        "appdb",
        &format!(
            "CREATE ROLE {auth_role} LOGIN PASSWORD '{auth_role}_pw';
             CREATE SCHEMA {schema};
             CREATE TABLE {schema}.calls (usename text);
             CREATE FUNCTION {schema}.lookup(u text) RETURNS TABLE (usename name, passwd text)
               LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
               BEGIN
                 INSERT INTO {schema}.calls VALUES (u);
                 RETURN QUERY SELECT s.usename, s.passwd::text FROM pg_shadow s WHERE s.usename = u;
               END $$;
             REVOKE ALL ON FUNCTION {schema}.lookup(text) FROM PUBLIC;
             GRANT USAGE ON SCHEMA {schema} TO {auth_role};
             GRANT EXECUTE ON FUNCTION {schema}.lookup(text) TO {auth_role};"
        ),
    )
    .await;
}

/// How many times the lookup function of `schema` ran.
async fn calls(schema: &str) -> usize {
    sql_super("appdb", &format!("SELECT count(*) FROM {schema}.calls"))
        .await
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_query_with_a_superuser_auth_user_and_no_users_section() {
    sql_super(
        "postgres",
        "CREATE ROLE aq1_user LOGIN PASSWORD 'aq1_pw'; GRANT CONNECT ON DATABASE appdb TO aq1_user",
    )
    .await;
    // No [users] at all: postgres (trusted by the cluster's pg_hba) runs the default query.
    let config = ConfigBuilder::new()
        .general("auth_user = \"postgres\"\nauth_failure_delay = 0")
        .shared_databases()
        .build();
    let mux = Mux::start(config).await;
    let (c, _h) = connect_ok(mux.port(), "aq1_user", "aq1_pw", "appdb").await;
    // pgmux holds only the verifier from pg_shadow: its servers log in with the client's
    // proven SCRAM key.
    assert_eq!(one(&c, "SELECT current_user").await, "aq1_user");
    assert!(mux.pool("appdb", "postgres").is_some(), "the auth pool");
    let target = mux.pool("appdb", "aq1_user").unwrap().target();
    assert!(matches!(target.secret, Some(pgmux::auth::Secret::Scram(_))));

    // A wrong password and an unknown user get the same answer.
    let wrong = login_error(mux.port(), "aq1_user", "nope", "appdb").await;
    let unknown = login_error(mux.port(), "aq1_nobody", "nope", "appdb").await;
    assert_eq!(wrong.0, "28P01");
    assert_eq!(
        wrong.1.replace("aq1_user", "X"),
        unknown.1.replace("aq1_nobody", "X")
    );
    // The auth pool's server went back idle and clean.
    let auth_pool = mux.pool("appdb", "postgres").unwrap();
    let counts = auth_pool.counts();
    assert_eq!(counts.active, 0, "{counts:?}");
    assert_eq!(one(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_function_in_auth_dbname_is_cached_and_forgotten_on_failure() {
    lookup_function("aq2", "aq2_auth").await;
    sql_super(
        "postgres",
        "CREATE ROLE aq2_user LOGIN PASSWORD 'aq2_pw'; CREATE ROLE aq2_admin LOGIN PASSWORD 'aq2_admin_pw'",
    )
    .await;
    let config = ConfigBuilder::new()
        .general(
            "auth_user = \"aq2_auth\"\nauth_dbname = \"appdb\"\n\
             auth_query = \"SELECT usename, passwd FROM aq2.lookup($1)\"\n\
             auth_query_cache_ttl = 60\nauth_failure_delay = 0\nadmin_users = [\"aq2_admin\"]",
        )
        .shared_databases()
        .user("aq2_auth", Some("aq2_auth_pw"))
        .build();
    let mux = Mux::start(config).await;
    let cache = &mux.running.shared.auth_cache;

    // Clients of otherdb: the lookup runs in appdb (auth_dbname), once for three logins.
    for _ in 0..3 {
        let (c, _h) = connect_ok(mux.port(), "aq2_user", "aq2_pw", "otherdb").await;
        assert_eq!(one(&c, "SELECT current_user").await, "aq2_user");
    }
    assert_eq!(calls("aq2").await, 1);
    assert_eq!(cache.hits.load(Ordering::Relaxed), 2);
    assert!(mux.pool("appdb", "aq2_auth").is_some());
    assert!(mux.pool("otherdb", "aq2_auth").is_none());

    // An MD5 secret from pg_shadow: the client logs in with MD5, and so do the servers
    // (the cluster's pg_hba asks md5user for MD5).
    let (m, _h) = connect_ok(mux.port(), "md5user", "md5_pw", "appdb").await;
    assert_eq!(one(&m, "SELECT current_user").await, "md5user");
    assert_eq!(calls("aq2").await, 2);

    // The password changes: the kept verifier still admits the old password, the new one
    // fails once (which forgets it), then works.
    sql_super("postgres", "ALTER ROLE aq2_user PASSWORD 'aq2_new'").await;
    let (c, _h) = connect_ok(mux.port(), "aq2_user", "aq2_pw", "otherdb").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
    assert_eq!(calls("aq2").await, 2);
    assert_eq!(
        login_error(mux.port(), "aq2_user", "aq2_new", "otherdb")
            .await
            .0,
        "28P01"
    );
    let (c2, _h) = connect_ok(mux.port(), "aq2_user", "aq2_new", "otherdb").await;
    assert_eq!(calls("aq2").await, 3);
    // New servers of the pool log in with what the new login proved.
    c.batch_execute("BEGIN").await.unwrap();
    let (c3, _h) = connect_ok(mux.port(), "aq2_user", "aq2_new", "otherdb").await;
    assert_eq!(one(&c3, "SELECT current_user").await, "aq2_user");
    assert_eq!(one(&c2, "SELECT current_user").await, "aq2_user");
    c.batch_execute("COMMIT").await.unwrap();

    // A failed login forgets the answer, whether or not the user exists: an unknown user
    // costs a query on every attempt, and so does a known one once its kept answer failed.
    let wrong = |user: &'static str| {
        let port = mux.port();
        async move {
            let e = login_error(port, user, "x", "otherdb").await;
            assert_eq!(e.0, "28P01");
        }
    };
    let before = calls("aq2").await;
    wrong("aq2_nobody").await;
    wrong("aq2_nobody").await;
    assert_eq!(calls("aq2").await, before + 2);
    wrong("aq2_user").await; // answered from the cache, then forgotten
    assert_eq!(calls("aq2").await, before + 2);
    wrong("aq2_user").await;
    wrong("aq2_user").await;
    assert_eq!(calls("aq2").await, before + 4);

    // The admin console looks users up in auth_dbname too.
    let (a, _h) = connect_ok(mux.port(), "aq2_admin", "aq2_admin_pw", "pgmux").await;
    let pools = rows(&a, "SHOW POOLS").await;
    let auth_pool = pools
        .iter()
        .find(|r| r[0].as_deref() == Some("appdb") && r[1].as_deref() == Some("aq2_auth"))
        .unwrap_or_else(|| panic!("no auth_query pool in {pools:?}"));
    assert_eq!(auth_pool[15].as_deref(), Some("auth_query"), "pool_mode");
    // A reload empties the cache.
    assert!(!cache.is_empty());
    a.simple_query("SET auth_query_cache_ttl = 30")
        .await
        .unwrap();
    assert!(cache.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_database_auth_user_without_cache_asks_every_time() {
    lookup_function("aq3", "aq3_auth").await;
    sql_super("postgres", "CREATE ROLE aq3_user LOGIN PASSWORD 'aq3_pw'").await;
    let config = ConfigBuilder::new()
        .general("auth_query_cache_ttl = 0\nauth_failure_delay = 0")
        .database(
            "aqdb",
            pg().port,
            "dbname = \"appdb\"\nauth_user = \"aq3_auth\"\n\
             auth_query = \"SELECT * FROM aq3.lookup($1)\"",
        )
        .shared_databases()
        .user("aq3_auth", Some("aq3_auth_pw"))
        .build();
    let mux = Mux::start(config).await;
    for _ in 0..3 {
        let (c, _h) = connect_ok(mux.port(), "aq3_user", "aq3_pw", "aqdb").await;
        assert_eq!(one(&c, "SELECT current_user").await, "aq3_user");
    }
    assert_eq!(calls("aq3").await, 3);
    assert!(mux.running.shared.auth_cache.is_empty());
    // appdb has no auth_user: the same user is unknown there.
    assert_eq!(
        login_error(mux.port(), "aq3_user", "aq3_pw", "appdb")
            .await
            .0,
        "28P01"
    );
    assert_eq!(calls("aq3").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_auth_query_is_28000_and_leaves_the_auth_server_clean() {
    sql_super(
        "postgres",
        "CREATE ROLE aq4_auth LOGIN PASSWORD 'aq4_auth_pw'; CREATE ROLE aq4_user LOGIN PASSWORD 'aq4_pw';
         CREATE FUNCTION public.aq4_wrong(u text) RETURNS TABLE (a text) LANGUAGE sql
           AS $$ SELECT u $$;",
    )
    .await;
    for query in [
        // Only superusers may read pg_shadow.
        "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
        // One column where two are needed.
        "SELECT a FROM public.aq4_wrong($1)",
    ] {
        let config = ConfigBuilder::new()
            .general(&format!(
                "auth_user = \"aq4_auth\"\nauth_query = \"{query}\"\nauth_failure_delay = 0"
            ))
            .shared_databases()
            .user("aq4_auth", Some("aq4_auth_pw"))
            .build();
        let mux = Mux::start(config).await;
        let (code, message) = login_error(mux.port(), "aq4_user", "aq4_pw", "appdb").await;
        assert_eq!(code, "28000", "{message}");
        assert!(message.contains("auth_query failed"), "{message}");
        // The auth pool's server went back idle, and the next lookup reuses it.
        let pool = mux.pool("appdb", "aq4_auth").unwrap();
        let c = pool.counts();
        assert_eq!((c.open, c.idle, c.active), (1, 1, 0), "{c:?}");
        let again = login_error(mux.port(), "aq4_user", "aq4_pw", "appdb").await;
        assert_eq!(again.0, "28000");
        let c = pool.counts();
        assert_eq!((c.open, c.idle, c.active), (1, 1, 0), "{c:?}");
        let errors = &mux.running.shared.auth_cache.errors;
        assert_eq!(errors.load(Ordering::Relaxed), 2);
        // A client of the auth user gets a pool of its own, apart from the lookups'.
        let (cl, _h) = connect_ok(mux.port(), "aq4_auth", "aq4_auth_pw", "appdb").await;
        assert_eq!(one(&cl, "SELECT current_user").await, "aq4_auth");
        assert_eq!(pool.counts().open, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_logins_of_one_user_at_once_ask_postgres_once() {
    lookup_function("aq5", "aq5_auth").await;
    sql_super("postgres", "CREATE ROLE aq5_user LOGIN PASSWORD 'aq5_pw'").await;
    let config = ConfigBuilder::new()
        .general(
            "auth_user = \"aq5_auth\"\nauth_query = \"SELECT * FROM aq5.lookup($1)\"\n\
             max_client_conn = 100",
        )
        .shared_databases()
        .user("aq5_auth", Some("aq5_auth_pw"))
        .build();
    let mux = Mux::start(config).await;
    let port = mux.port();
    let logins: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let (c, h) = connect_ok(port, "aq5_user", "aq5_pw", "appdb").await;
                assert_eq!(one(&c, "SELECT current_user").await, "aq5_user");
                drop(c);
                let _ = h.await;
            })
        })
        .collect();
    for l in logins {
        l.await.unwrap();
    }
    assert_eq!(calls("aq5").await, 1);
    let cache = &mux.running.shared.auth_cache;
    assert_eq!(cache.queries.load(Ordering::Relaxed), 1);
    assert_eq!(cache.hits.load(Ordering::Relaxed), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_timeout_during_auth_query_closes_its_server() {
    sql_super("postgres", "CREATE ROLE aq6_user LOGIN PASSWORD 'aq6_pw'").await;
    let config = ConfigBuilder::new()
        .general(
            "auth_user = \"postgres\"\nclient_login_timeout = 0.5\n\
             auth_query = \"SELECT usename, passwd FROM pg_shadow, pg_sleep(3) WHERE usename=$1\"",
        )
        .shared_databases()
        .build();
    let mux = Mux::start(config).await;
    let (code, message) = login_error(mux.port(), "aq6_user", "aq6_pw", "appdb").await;
    assert_eq!(code, "08P01", "{message}");
    assert!(message.contains("client_login_timeout"), "{message}");
    // The server in the middle of the query is closed, not kept: its query is cancelled,
    // and its slot is free again once Postgres has ended the session (well before the 3 s
    // the query would take).
    let pool = mux.pool("appdb", "postgres").unwrap();
    let started = std::time::Instant::now();
    while pool.counts().open > 0 && started.elapsed() < std::time::Duration::from_secs(2) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let counts = pool.counts();
    assert_eq!((counts.open, counts.active), (0, 0), "{counts:?}");
    assert!(pool.server_infos().is_empty(), "a ghost in SHOW SERVERS");
    let sleeping = sql_super(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_shadow, pg_sleep(3)%' \
         AND pid <> pg_backend_pid()",
    )
    .await;
    assert_eq!(sleeping, "0", "the lookup still runs on Postgres");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_auth_type_challenges_unknown_users_like_known_ones() {
    sql_super("postgres", "CREATE ROLE aq7_user LOGIN PASSWORD 'aq7_pw'").await;
    let config = ConfigBuilder::new()
        .general("auth_type = \"md5\"\nauth_user = \"postgres\"\nauth_failure_delay = 0")
        .shared_databases()
        .build();
    let mux = Mux::start(config).await;
    // aq7_user's secret is a SCRAM verifier: SCRAM even under md5, as Postgres does. An
    // unknown user gets the same kind of challenge.
    for user in ["aq7_user", "aq7_nobody"] {
        let (_s, m) =
            crate::support::raw::auth_request(mux.port(), &[("user", user), ("database", "appdb")])
                .await;
        assert_eq!(crate::support::raw::auth_code(&m), 10, "{user}");
    }
    // md5user's MD5 hash from pg_shadow: an MD5 challenge, and the login works.
    let (c, _h) = connect_ok(mux.port(), "md5user", "md5_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "md5user");
}
