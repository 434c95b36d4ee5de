//! Integration tests: session settings follow their client in transaction mode (issue 16):
//! SET, RESET, set_config, start-up values, on one server shared by every client, so a leak
//! would show in the next client's answer.

use crate::support::client::{one, rows, show, tp_config, tp_connect_ok};
use crate::support::{custom_config, Mux};

const DEFAULT_PATH: &str = "\"$user\", public";

/// Three clients on a pool of one server: what one SETs (simple or extended protocol, one
/// statement or several, in a block that commits or not, LOCAL or not) is what that client
/// sees and nobody else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_timeouts_and_custom_settings_follow_their_client() {
    let mux = Mux::start(custom_config("", "")).await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "onedb");
    let (a, _ha) = tp_connect_ok(&cfg).await;
    let (b, _hb) = tp_connect_ok(&cfg).await;
    let (c, _hc) = tp_connect_ok(&cfg).await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    // Several statements in one simple query, and a custom setting.
    rows(
        &a,
        "SELECT 1; SET search_path TO tenant_a, public; SET statement_timeout = '1s'",
    )
    .await;
    // set_config in a simple query, and SET through the extended protocol.
    rows(
        &b,
        "SELECT set_config('search_path', 'tenant_b, public', false)",
    )
    .await;
    b.execute("SET app.tenant = 'b'", &[]).await.unwrap();
    let expect = [
        (&a, "tenant_a, public", "1s", ""),
        (&b, "tenant_b, public", "0", "b"),
        (&c, DEFAULT_PATH, "0", ""),
    ];
    for round in 0..2 {
        for (who, (client, path, timeout, tenant)) in expect.iter().enumerate() {
            assert_eq!(one(client, "SELECT pg_backend_pid()").await, pid);
            let got = rows(
                client,
                "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
                 coalesce(current_setting('app.tenant', true), '')",
            )
            .await;
            assert_eq!(
                got[0],
                [
                    Some(path.to_string()),
                    Some(timeout.to_string()),
                    Some(tenant.to_string())
                ],
                "client {who}, round {round}"
            );
        }
    }
    // A SET in a block that rolls back is undone; one in a block that commits stays; SET
    // LOCAL ends with its block.
    rows(&a, "BEGIN; SET search_path TO nowhere; ROLLBACK").await;
    rows(&b, "BEGIN; SET statement_timeout = '2s'; COMMIT").await;
    rows(&c, "BEGIN; SET LOCAL work_mem = '1MB'; COMMIT").await;
    // A failed SET leaves the setting as it was.
    assert!(a
        .simple_query("SET statement_timeout = 'soon'")
        .await
        .is_err());
    assert_eq!(
        show(&a, &["search_path", "statement_timeout"]).await,
        ["tenant_a, public", "1s"]
    );
    assert_eq!(
        show(&b, &["statement_timeout", "work_mem"]).await,
        ["2s", "4MB"]
    );
    assert_eq!(
        show(&c, &["statement_timeout", "work_mem"]).await,
        ["0", "4MB"]
    );
    // A set_config through the extended protocol, with its value as a parameter.
    c.query("SELECT set_config('app.tenant', $1, false)", &[&"c"])
        .await
        .unwrap();
    assert_eq!(one(&b, "SELECT current_setting('app.tenant')").await, "b");
    assert_eq!(one(&c, "SELECT current_setting('app.tenant')").await, "c");
    assert_eq!(
        one(
            &a,
            "SELECT coalesce(current_setting('app.tenant', true), '')"
        )
        .await,
        ""
    );
    // RESET one, RESET ALL, DISCARD ALL.
    rows(&a, "RESET search_path").await;
    rows(&b, "RESET ALL").await;
    rows(&c, "DISCARD ALL").await;
    assert_eq!(
        show(&a, &["search_path", "statement_timeout"]).await,
        [DEFAULT_PATH, "1s"]
    );
    assert_eq!(
        show(&b, &["search_path", "statement_timeout"]).await,
        [DEFAULT_PATH, "0"]
    );
    assert_eq!(
        one(&c, "SELECT current_setting('app.tenant', true)").await,
        ""
    );
    assert_eq!(
        one(&b, "SELECT current_setting('app.tenant', true)").await,
        ""
    );
    assert_eq!(pid, one(&a, "SELECT pg_backend_pid()").await);
}

/// Settings given at start-up (`options=-c`) are the client's from its first query, and
/// what RESET and RESET ALL take it back to, as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_are_carried_and_are_what_reset_returns_to() {
    let mux = Mux::start(custom_config("", "")).await;
    let mut cfg = tp_config(mux.port(), "app", "app_pw", "onedb");
    cfg.options("-c statement_timeout=3s -c search_path=tenant_s,public");
    let (s, _hs) = tp_connect_ok(&cfg).await;
    let (o, _ho) = tp_connect_ok(&tp_config(mux.port(), "app", "app_pw", "onedb")).await;
    for _ in 0..2 {
        assert_eq!(
            show(&s, &["statement_timeout", "search_path"]).await,
            ["3s", "tenant_s,public"]
        );
        assert_eq!(
            show(&o, &["statement_timeout", "search_path"]).await,
            ["0", DEFAULT_PATH]
        );
    }
    rows(&s, "SET statement_timeout = '4s'").await;
    assert_eq!(show(&o, &["statement_timeout"]).await, ["0"]);
    assert_eq!(show(&s, &["statement_timeout"]).await, ["4s"]);
    rows(&s, "RESET statement_timeout").await;
    assert_eq!(show(&o, &["statement_timeout"]).await, ["0"]);
    assert_eq!(show(&s, &["statement_timeout"]).await, ["3s"]);
    rows(
        &s,
        "SET statement_timeout = '5s'; SET search_path = elsewhere",
    )
    .await;
    rows(&s, "RESET ALL").await;
    assert_eq!(
        show(&o, &["statement_timeout", "search_path"]).await,
        ["0", DEFAULT_PATH]
    );
    assert_eq!(
        show(&s, &["statement_timeout", "search_path"]).await,
        ["3s", "tenant_s,public"]
    );
}

/// `track_session_settings = false` is PgBouncer's behaviour: only the reported parameters
/// and those in `track_extra_parameters` follow their client, and other start-up parameters
/// are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_extra_parameters_alone_when_session_settings_are_not_tracked() {
    let general = "track_session_settings = false\ntrack_extra_parameters = [\"search_path\"]";
    let mux = Mux::start(custom_config(general, "")).await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "onedb");
    let mut refused = cfg.clone();
    refused.options("-c statement_timeout=3s");
    let Err(e) = crate::support::client::tp_connect(&refused).await else {
        panic!("statement_timeout at start-up is refused");
    };
    assert_eq!(
        crate::support::client::code(&e).as_deref(),
        Some("08P01"),
        "{e}"
    );
    let mut with_path = cfg.clone();
    with_path.options("-c search_path=tenant_s,public");
    let (s, _hs) = tp_connect_ok(&with_path).await;
    let (o, _ho) = tp_connect_ok(&cfg).await;
    assert_eq!(show(&s, &["search_path"]).await, ["tenant_s,public"]);
    assert_eq!(show(&o, &["search_path"]).await, [DEFAULT_PATH]);
    rows(&o, "SET search_path = tenant_o").await;
    assert_eq!(show(&s, &["search_path"]).await, ["tenant_s,public"]);
    assert_eq!(show(&o, &["search_path"]).await, ["tenant_o"]);
    // Not carried: it stays on the server (PgBouncer's leak, chosen here).
    rows(&o, "SET lock_timeout = '7s'").await;
    assert_eq!(show(&s, &["lock_timeout"]).await, ["7s"]);
    rows(&o, "RESET lock_timeout").await;
}

/// State that cannot move pins its client to its server until it is gone: a session
/// advisory lock, a temporary table, a WITH HOLD cursor, an SQL PREPARE. Meanwhile the other
/// clients share the pool's other server; a pinned client that leaves gets its server cleaned
/// (DISCARD ALL) before anyone else has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_that_cannot_move_pins_its_client_until_it_is_gone() {
    use crate::support::{config, db_entry};
    let mux = Mux::start(config("", &db_entry("pindb", "appdb", "pool_size = 2"))).await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "pindb");
    let (a, _ha) = tp_connect_ok(&cfg).await;
    let (b, _hb) = tp_connect_ok(&cfg).await;
    let (c, _hc) = tp_connect_ok(&cfg).await;
    for (make, use_it, end) in [
        ("SELECT pg_advisory_lock(4242)", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()", "SELECT pg_advisory_unlock(4242)::int"),
        ("CREATE TEMP TABLE pin_t (x int); INSERT INTO pin_t VALUES (1)", "SELECT count(*) FROM pin_t", "DROP TABLE pin_t; SELECT 1"),
        ("DECLARE pin_c CURSOR WITH HOLD FOR SELECT 1 FROM generate_series(1, 10)", "FETCH 1 FROM pin_c", "CLOSE pin_c; SELECT 1"),
        ("PREPARE pin_p AS SELECT 1", "EXECUTE pin_p", "DEALLOCATE pin_p; SELECT 1"),
    ] {
        rows(&a, make).await;
        let pinned = pid(&a).await;
        others_pids(&b, &c, &pinned).await;
        for _ in 0..2 {
            assert_eq!(one(&a, use_it).await, "1", "{make}: {use_it}");
            assert_eq!(pid(&a).await, pinned, "{make}: a lost its server");
            others_pids(&b, &c, &pinned).await;
        }
        assert_eq!(one(&a, end).await, "1", "{make}: {end}");
        // Unpinned: its server serves the others again (b holds one in a transaction, c
        // gets the other).
        rows(&b, "BEGIN").await;
        let both = [pid(&b).await, pid(&c).await];
        rows(&b, "COMMIT").await;
        assert!(both.contains(&pinned), "{make}: {pinned} never came back: {both:?}");
    }
    // A client that leaves holding a lock and a temporary table: its server is cleaned.
    let (d, hd) = tp_connect_ok(&cfg).await;
    rows(
        &d,
        "SELECT pg_advisory_lock(4343); CREATE TEMP TABLE pin_d (x int)",
    )
    .await;
    drop(d);
    let _ = hd.await;
    // Its server runs DISCARD ALL once pgmux sees it leave (a moment after the close).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let held = one(
            &b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4343",
        )
        .await;
        if held == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock of a client that left is still held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        let temp = "SELECT count(*) FROM pg_class WHERE relname = 'pin_d'";
        assert_eq!(one(&b, temp).await, "0");
        assert_eq!(one(&c, temp).await, "0");
    }
}

async fn pid(c: &tokio_postgres::Client) -> String {
    one(c, "SELECT pg_backend_pid()").await
}

/// Clients `b` and `c` are never given the server whose pid is `pinned`.
async fn others_pids(b: &tokio_postgres::Client, c: &tokio_postgres::Client, pinned: &str) {
    for _ in 0..3 {
        assert_ne!(pid(b).await, pinned, "b was given the pinned server");
        assert_ne!(pid(c).await, pinned, "c was given the pinned server");
    }
}

/// pin_on_session_state = "error": what would pin a client fails with 0A000 before it runs
/// (a simple query, or a Parse with its parameter types), inside a transaction as Postgres
/// would fail it; what does not pin (a temporary table dropped at commit, a cursor without
/// HOLD, an advisory unlock) runs; and nobody is pinned, so a pool of one serves two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_on_session_state_error_refuses_what_would_pin() {
    use crate::support::client::code;
    let general = "pin_on_session_state = \"error\"\nquery_wait_timeout = 5";
    let mux = Mux::start(custom_config(general, "")).await;
    let cfg = tp_config(mux.port(), "app", "app_pw", "onedb");
    let (a, _ha) = tp_connect_ok(&cfg).await;
    let (b, _hb) = tp_connect_ok(&cfg).await;
    for (sql, what) in [
        ("SELECT pg_advisory_lock(5)", "a session advisory lock"),
        (
            "SELECT 1; CREATE TEMP TABLE refused_t (x int)",
            "a temporary table",
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "a WITH HOLD cursor",
        ),
        ("PREPARE refused_p AS SELECT 1", "an SQL PREPARE"),
        ("LOAD 'auto_explain'", "a LOAD"),
    ] {
        let e = a.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e).as_deref(), Some("0A000"), "{sql}: {e}");
        let msg = e.as_db_error().unwrap().message().to_string();
        assert!(
            msg.contains(what) && msg.contains("pin_on_session_state"),
            "{sql}: {msg}"
        );
        assert_eq!(one(&b, "SELECT 1").await, "1");
    }
    // Inside a transaction block: the block is aborted, as by any error.
    rows(&a, "BEGIN").await;
    assert!(a
        .simple_query("PREPARE refused_p AS SELECT 1")
        .await
        .is_err());
    let e = a.simple_query("SELECT 1").await.expect_err("aborted block");
    assert_eq!(code(&e).as_deref(), Some("25P02"));
    rows(&a, "ROLLBACK").await;
    // Through the extended protocol, with the parameter types given.
    let st = a
        .prepare_typed(
            "SELECT pg_advisory_lock($1)",
            &[tokio_postgres::types::Type::INT8],
        )
        .await
        .unwrap();
    let e = a.query(&st, &[&5i64]).await.expect_err("refused");
    assert_eq!(code(&e).as_deref(), Some("0A000"), "{e}");
    // What does not pin runs.
    rows(
        &a,
        "BEGIN; CREATE TEMP TABLE ok_t (x int) ON COMMIT DROP; \
         DECLARE c CURSOR FOR SELECT 1; SELECT pg_advisory_xact_lock(5); COMMIT",
    )
    .await;
    assert_eq!(one(&a, "SELECT pg_advisory_unlock(5)::int").await, "0");
    assert_eq!(
        one(
            &b,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        )
        .await,
        "0"
    );
}

/// Issue 16's measure of "works": small application scenarios (search_path per tenant,
/// statement_timeout per request, application_name, time zones, an advisory-lock job queue,
/// temporary tables, WITH HOLD cursors, LISTEN/NOTIFY fan-out, SQL PREPARE), each with four
/// concurrent clients and all at once, print the same through pgmux in transaction mode on a
/// pool of four servers as directly against Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_scenarios_print_the_same_as_directly() {
    use crate::drivers::python_script;
    use crate::support::client::sql_super;
    use crate::support::{config, database_section, pg};
    sql_super("postgres", "CREATE DATABASE scenarios OWNER app").await;
    let limit = std::time::Duration::from_secs(120);
    let direct = python_script("scenarios.py", pg().port, "scenarios", limit, "directly").await;
    assert!(direct.ok, "directly: {}{}", direct.stdout, direct.stderr);
    assert!(
        direct.stdout.contains("job queue: 40 jobs, 40 done"),
        "{}",
        direct.stdout
    );
    let entry = database_section("scenarios", pg().port, "pool_size = 4");
    let mux = Mux::start(config("", &entry)).await;
    let via = python_script(
        "scenarios.py",
        mux.port(),
        "scenarios",
        limit,
        "through pgmux",
    )
    .await;
    assert!(via.ok, "through pgmux: {}{}", via.stdout, via.stderr);
    assert_eq!(via.stdout, direct.stdout, "through pgmux vs directly");
    let counts = mux.counts("scenarios", "app").expect("the pool");
    assert!(counts.open <= 4, "the pool grew past its size: {counts:?}");
}

/// Session mode looks like a direct connection: BackendKeyData carries the client's server's
/// real pid (so pg_backend_pid() and a self-notification's pid agree with it) while cancels
/// still go through pgmux; start-up parameters are reported as Postgres reports them; and a
/// start-up value Postgres refuses fails the login as it would directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_tells_the_client_its_servers_pid_and_spelling() {
    use crate::support::client::code;
    use crate::support::{pg, raw};
    let entry = crate::support::db_entry("sesspid", "appdb", "pool_mode = \"session\"");
    let mux = Mux::start(custom_config("auth_type = \"trust\"", &entry)).await;
    let params = [
        ("user", "app"),
        ("database", "sesspid"),
        ("DateStyle", "iso, dmy"),
        ("client_encoding", "utf-8"),
    ];
    let (mut s, msgs) = raw::login_trust(mux.port(), &params).await;
    let key = msgs.iter().find(|m| m.0 == b'K').expect("BackendKeyData");
    let pid = i32::from_be_bytes(key.1[..4].try_into().unwrap());
    let answer = raw::simple_query(&mut s, "SELECT pg_backend_pid()").await;
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    assert_eq!(String::from_utf8_lossy(&row.1[6..]), pid.to_string());
    let notified = raw::simple_query(&mut s, "LISTEN me; NOTIFY me, 'x'").await;
    let note = notified
        .iter()
        .find(|m| m.0 == b'A')
        .expect("its own notification");
    assert_eq!(i32::from_be_bytes(note.1[..4].try_into().unwrap()), pid);
    // Its ParameterStatus as Postgres' own welcome has them.
    let mut direct = params;
    (direct[0].1, direct[1].1) = ("postgres", "appdb");
    let (_d, direct_msgs) = raw::startup_reply(pg().port, &raw::startup(&direct)).await;
    let status = |msgs: &[raw::Msg], name: &str| {
        msgs.iter()
            .filter(|m| m.0 == b'S')
            .map(|m| String::from_utf8_lossy(&m.1).to_string())
            .find(|v| v.starts_with(&format!("{name}\0")))
    };
    for name in ["DateStyle", "client_encoding", "TimeZone"] {
        assert_eq!(status(&msgs, name), status(&direct_msgs, name), "{name}");
    }
    // A cancel with that key still reaches the query through pgmux.
    let cfg = tp_config(mux.port(), "app", "", "sesspid");
    let (c, _h) = tp_connect_ok(&cfg).await;
    let token = c.cancel_token();
    let sleeping = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(20)").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let e = sleeping.await.unwrap().expect_err("cancelled");
    assert_eq!(code(&e).as_deref(), Some("57014"), "{e}");
    // A value Postgres refuses at start-up.
    let mut bad = cfg.clone();
    bad.options("-c statement_timeout=soon");
    let Err(e) = crate::support::client::tp_connect(&bad).await else {
        panic!("a bad start-up value was accepted");
    };
    assert_eq!(code(&e).as_deref(), Some("22023"), "{e}");
}
