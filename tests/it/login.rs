//! Integration tests: login (auth types, limits, start-up packets, parameters, psql).

use std::collections::{BTreeMap, BTreeSet};

use postgres_protocol::authentication::sasl::ScramSha256;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::client::{
    code, conn_end, connect_ok, one, rows, show, sql_super, tp_config, tp_connect, tp_connect_ok,
};
use crate::support::raw::{self, error_of, read_to_close, read_until_ready};
use crate::support::{config, custom_config, db_entry, eventually, pg, psql as psql_to, run, Mux};

/// A config section for user md5user with its secret stored as an MD5 hash.
fn md5user_md5_secret() -> String {
    let secret = pgmux::auth::md5_password_hash("md5user", "md5_pw");
    format!("[users.md5user]\npassword = \"{secret}\"\n")
}

/// Config sections: [`md5user_md5_secret`], and database md5db reached as the forced
/// server user app.
fn md5user_and_md5db() -> String {
    md5user_md5_secret() + &forced_app_db("md5db")
}

/// A config section for a database reached as the forced server user app.
fn forced_app_db(name: &str) -> String {
    db_entry(name, "appdb", "user = \"app\"\npassword = \"app_pw\"")
}

async fn expect_login_error(
    mux_port: u16,
    user: &str,
    pw: &str,
    db: &str,
) -> tokio_postgres::Error {
    match tp_connect(&tp_config(mux_port, user, pw, db)).await {
        Ok(_) => panic!("login as {user} to {db} should fail"),
        Err(e) => e,
    }
}

fn db_err(e: &tokio_postgres::Error) -> (String, String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got: {e}"));
    (
        d.code().code().to_string(),
        d.message().to_string(),
        d.severity().to_string(),
    )
}

/// Log in with wrong passwords (app to appdb, md5user to md5db) and as an unknown user: each
/// fails with 28P01. Returns each user's (SQLSTATE, message, severity).
async fn bad_logins_are_28p01(port: u16) -> Vec<(&'static str, (String, String, String))> {
    let mut out = Vec::new();
    for (user, pw, db) in [
        ("app", "bad", "appdb"),
        ("md5user", "bad", "md5db"),
        ("nosuchuser", "x", "appdb"),
    ] {
        let e = db_err(&expect_login_error(port, user, pw, db).await);
        assert_eq!(e.0, "28P01", "{user}: {e:?}");
        out.push((user, e));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. auth_type scram-sha-256
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_login_app() {
    let mux = Mux::start(config("", "")).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    assert_eq!(
        rows(&c, "SELECT current_user, current_database()").await,
        [[Some("app".to_string()), Some("appdb".to_string())]]
    );
    // The alias entry maps to appdb on the server.
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "aliasdb").await;
    assert_eq!(one(&c, "SELECT current_database()").await, "appdb");

    // Raw: the first authentication request is SASL offering SCRAM-SHA-256.
    let (mut s, m) = raw::auth_request(mux.port(), &[("user", "app"), ("database", "appdb")]).await;
    assert_eq!(raw::auth_code(&m), 10);
    assert_eq!(&m.1[4..], b"SCRAM-SHA-256\0\0");
    let msgs = raw::scram(&mut s, "app_pw").await;
    assert_eq!(raw::auth_code(&msgs[0]), 0);
    assert_eq!(msgs.last().unwrap().1, b"I");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_config_md5_stored_secret_falls_back_to_md5() {
    // md5user's secret is stored as an MD5 hash in pgmux: it cannot serve SCRAM, so pgmux
    // asks for md5. Its server connections log in as app (forced user), since the test
    // cluster's pg_hba only allows SCRAM.
    let extra = md5user_and_md5db();
    let mux = Mux::start(custom_config("auth_type = \"scram-sha-256\"", &extra)).await;
    let (c, _h) = connect_ok(mux.port(), "md5user", "md5_pw", "md5db").await;
    assert_eq!(one(&c, "SELECT current_database()").await, "appdb");

    // Raw: the challenge is AuthenticationMD5Password.
    let (mut s, m) =
        raw::auth_request(mux.port(), &[("user", "md5user"), ("database", "md5db")]).await;
    assert_eq!(raw::auth_code(&m), 5);
    let salt = [m.1[4], m.1[5], m.1[6], m.1[7]];
    let hash = postgres_protocol::authentication::md5_hash(b"md5user", b"md5_pw", salt);
    let mut pw = hash.into_bytes();
    pw.push(0);
    raw::send(&mut s, &raw::msg(b'p', &pw)).await;
    let msgs = read_until_ready(&mut s).await;
    assert_eq!(raw::auth_code(&msgs[0]), 0);

    // Wrong password: 28P01.
    let e = expect_login_error(mux.port(), "md5user", "nope", "md5db").await;
    assert_eq!(db_err(&e).0, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_wrong_password_and_unknown_user_look_the_same() {
    let mux = Mux::start(config("", "")).await;
    let wrong = db_err(&expect_login_error(mux.port(), "app", "not_the_password", "appdb").await);
    let unknown = db_err(&expect_login_error(mux.port(), "nosuchuser", "whatever", "appdb").await);
    assert_eq!(wrong.0, "28P01", "{wrong:?}");
    assert_eq!(unknown.0, "28P01", "{unknown:?}");
    assert_eq!(wrong.2, "FATAL");
    assert_eq!(unknown.2, "FATAL");
    assert_eq!(wrong.1, "password authentication failed for user \"app\"");
    assert_eq!(unknown.1, wrong.1.replace("\"app\"", "\"nosuchuser\""));

    // An unknown user is offered the same SASL exchange as a known one (raw, up to the proof).
    for user in ["app", "nosuchuser"] {
        let (mut s, mut sc, m) = scram_to_server_first(mux.port(), user, "wrong").await;
        let first = raw::server_first(&m);
        assert!(
            first.contains(",i=4096"),
            "iteration count differs for {user}: {first}"
        );
        raw::scram_proof(&mut s, &mut sc, &m.1[4..]).await;
        let msgs = read_to_close(&mut s).await;
        assert_eq!(raw::tags(&msgs), "E", "user {user}");
        assert_eq!(error_of(&msgs).unwrap().0, "28P01");
    }
}

/// Log in as `user` to appdb on `port` (auth_type scram-sha-256) and start SCRAM with
/// `password`, up to the server's SASLContinue.
async fn scram_to_server_first(
    port: u16,
    user: &str,
    password: &str,
) -> (TcpStream, ScramSha256, raw::Msg) {
    let (mut s, m) = raw::auth_request(port, &[("user", user), ("database", "appdb")]).await;
    assert_eq!(raw::auth_code(&m), 10, "user {user}");
    let (sc, m) = raw::scram_begin(&mut s, password).await;
    assert_eq!(raw::auth_code(&m), 11, "user {user}");
    (s, sc, m)
}

/// The salt in the server-first-message for `user` (SCRAM stopped there).
async fn scram_salt(port: u16, user: &str) -> String {
    let (_s, _sc, m) = scram_to_server_first(port, user, "x").await;
    let first = raw::server_first(&m);
    first
        .split(',')
        .find_map(|a| a.strip_prefix("s="))
        .unwrap_or_else(|| panic!("no salt in {first}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_unknown_user_salt_is_stable() {
    // Postgres answers an unknown role with a mock salt derived from the user name and a
    // per-cluster nonce (scram_mock_salt), so two attempts show the same salt, as for a real
    // user. pgmux derives a fresh fake verifier (random salt) per attempt.
    let mux = Mux::start(config("", "")).await;
    let port = mux.port();
    let known = (scram_salt(port, "app").await, scram_salt(port, "app").await);
    assert_eq!(known.0, known.1, "a known user's salt is stable");
    let unknown = (
        scram_salt(port, "nosuchuser").await,
        scram_salt(port, "nosuchuser").await,
    );
    assert_eq!(
        unknown.0, unknown.1,
        "an unknown user's salt changes between attempts, telling it apart from a real user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_3d000() {
    let mux = Mux::start(config("", "")).await;
    let e = db_err(&expect_login_error(mux.port(), "app", "app_pw", "nosuchdb").await);
    assert_eq!(e.0, "3D000", "{e:?}");
    assert!(e.1.contains("nosuchdb"), "{e:?}");
    // The pool still serves others.
    mux.connect().await.simple_query("SELECT 1").await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. auth_type md5
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_auth_type() {
    let scram_verifier = postgres_protocol::password::scram_sha_256(b"other_pw");
    // "other" logs in to pgmux with a SCRAM verifier but uses app on the server.
    let extra = md5user_and_md5db() + &forced_app_db("otherviaapp");
    let mut cfg = custom_config("auth_type = \"md5\"", &extra);
    cfg.users.get_mut("other").unwrap().password = Some(scram_verifier);
    let mux = Mux::start(cfg).await;
    let port = mux.port();

    // Plaintext secret: md5 challenge.
    let (c, _h) = connect_ok(port, "app", "app_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "app");
    let (s, m) = raw::auth_request(port, &[("user", "app"), ("database", "appdb")]).await;
    assert_eq!(
        raw::auth_code(&m),
        5,
        "md5 challenge for a plaintext secret"
    );
    drop(s);

    // MD5-stored secret.
    let (c, _h) = connect_ok(port, "md5user", "md5_pw", "md5db").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");

    // A SCRAM verifier cannot answer md5: like Postgres, pgmux uses SCRAM instead.
    let (mut s, m) =
        raw::auth_request(port, &[("user", "other"), ("database", "otherviaapp")]).await;
    assert_eq!(
        raw::auth_code(&m),
        10,
        "SCRAM for a SCRAM-stored secret under auth_type md5"
    );
    raw::scram(&mut s, "other_pw").await;

    // Wrong passwords and unknown users: 28P01, with Postgres' message.
    for (user, e) in bad_logins_are_28p01(port).await {
        assert_eq!(
            e.1,
            format!("password authentication failed for user \"{user}\"")
        );
    }
    // An unknown user also gets an md5 challenge (no enumeration by the auth method).
    let (_s, m) = raw::auth_request(port, &[("user", "nosuchuser"), ("database", "appdb")]).await;
    assert_eq!(raw::auth_code(&m), 5);
}

// ---------------------------------------------------------------------------------------------
// 3. auth_type plain and trust
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_auth_type() {
    let extra = md5user_and_md5db();
    let mux = Mux::start(custom_config("auth_type = \"plain\"", &extra)).await;
    let port = mux.port();
    let (c, _h) = connect_ok(port, "app", "app_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "app");
    // An MD5-stored secret checks a cleartext password too.
    let (c, _h) = connect_ok(port, "md5user", "md5_pw", "md5db").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");

    // Raw: AuthenticationCleartextPassword.
    let (mut s, m) = raw::auth_request(port, &[("user", "app"), ("database", "appdb")]).await;
    assert_eq!(raw::auth_code(&m), 3);
    raw::send(&mut s, &raw::msg(b'p', b"app_pw\0")).await;
    let msgs = read_until_ready(&mut s).await;
    assert_eq!(raw::auth_code(&msgs[0]), 0);

    bad_logins_are_28p01(port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_auth_type() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let port = mux.port();
    // No password at all.
    let (c, _h) = connect_ok(port, "app", "", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "app");
    // A wrong password does not matter: none is asked.
    let (c, _h) = connect_ok(port, "app", "whatever", "appdb").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");

    let e = db_err(&expect_login_error(port, "nosuchuser", "", "appdb").await);
    assert_eq!(e.0, "28000", "{e:?}");
    assert_eq!(e.2, "FATAL");

    // Raw: AuthenticationOk straight away.
    let (_s, msgs) = raw::login_trust(port, &[("user", "app"), ("database", "appdb")]).await;
    assert_eq!(msgs.last().unwrap().1, b"I");
}

// ---------------------------------------------------------------------------------------------
// 4. max_client_conn
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_third_client_gets_53300() {
    let mux = Mux::start(custom_config("max_client_conn = 2", "")).await;
    let port = mux.port();
    let (c1, _h1) = connect_ok(port, "app", "app_pw", "appdb").await;
    let (c2, _h2) = connect_ok(port, "app", "app_pw", "appdb").await;
    let e = db_err(&expect_login_error(port, "app", "app_pw", "appdb").await);
    assert_eq!(e.0, "53300", "{e:?}");
    // The first two still work.
    assert_eq!(one(&c1, "SELECT 1").await, "1");
    assert_eq!(one(&c2, "SELECT 2").await, "2");
    // A slot frees when a client leaves.
    drop(c1);
    eventually(5, "client count back to 1", || mux.clients() == 1).await;
    let (c3, _h3) = connect_ok(port, "app", "app_pw", "appdb").await;
    assert_eq!(one(&c3, "SELECT 3").await, "3");
}

// ---------------------------------------------------------------------------------------------
// 5. psql
// ---------------------------------------------------------------------------------------------

fn psql(port: u16, args: &[&str]) -> (bool, String, String) {
    let mut cmd = psql_to(port, "app");
    cmd.args(["-d", "appdb"])
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGPASSWORD", "app_pw")
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGSSLMODE")
        .env_remove("PGOPTIONS");
    run(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_select_and_script() {
    let mux = Mux::start(config("", "")).await;
    let port = mux.port();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "BEGIN;\n\
         CREATE TEMP TABLE psql_t (x int) ON COMMIT DROP;\n\
         INSERT INTO psql_t VALUES (1), (2), (3);\n\
         SELECT sum(x) FROM psql_t;\n\
         COMMIT;\n\
         SELECT 'done';\n\
         SELECT current_setting('application_name');\n",
    )
    .unwrap();
    let script = script.to_str().unwrap().to_string();
    let (one, multi, script_out) = tokio::task::spawn_blocking(move || {
        (
            psql(port, &["-c", "SELECT 1"]),
            psql(port, &["-c", "SELECT 1; SELECT 2"]),
            psql(port, &["-f", &script]),
        )
    })
    .await
    .unwrap();
    assert!(one.0, "psql -c failed: {}", one.2);
    assert_eq!(one.1.trim(), "1");
    assert!(multi.0, "psql multi failed: {}", multi.2);
    assert_eq!(multi.1.split_whitespace().collect::<Vec<_>>(), ["1", "2"]);
    assert!(script_out.0, "psql -f failed: {}", script_out.2);
    assert_eq!(
        script_out.1.split_whitespace().collect::<Vec<_>>(),
        ["6", "done", "psql"],
        "stderr: {}",
        script_out.2
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Raw start-up: SSLRequest, GSSENCRequest, protocol 3.2, welcome messages
// ---------------------------------------------------------------------------------------------

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;

/// Connect, send each of `requests` (SSLRequest, GSSENCRequest) and expect 'N' to it, then
/// send the StartupMessage of app for appdb on the same socket.
async fn start_after_refusals(port: u16, requests: &[i32]) -> TcpStream {
    let mut s = raw::connect(port).await;
    for &code in requests {
        assert_eq!(raw::ask(&mut s, code).await, b'N', "request {code}");
    }
    raw::send(
        &mut s,
        &raw::startup(&[("user", "app"), ("database", "appdb")]),
    )
    .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_ssl_request_then_startup_same_socket() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let mut s = start_after_refusals(mux.port(), &[SSL_REQUEST]).await;
    let msgs = read_until_ready(&mut s).await;
    assert_eq!(raw::auth_code(&msgs[0]), 0);
    assert_eq!(msgs.last().unwrap(), &(b'Z', b"I".to_vec()));
    // The session works.
    let msgs = raw::simple_query(&mut s, "SELECT 42").await;
    assert_eq!(raw::tags(&msgs), "TDCZ");
    assert!(msgs[1].1.ends_with(b"42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_ssl_request_with_scram() {
    let mux = Mux::start(config("", "")).await;
    let mut s = start_after_refusals(mux.port(), &[SSL_REQUEST]).await;
    let m = raw::read_msg(&mut s).await.unwrap();
    assert_eq!(raw::auth_code(&m), 10);
    let msgs = raw::scram(&mut s, "app_pw").await;
    assert_eq!(msgs.last().unwrap(), &(b'Z', b"I".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_gssenc_request_answered_n() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    // After GSSENCRequest libpq tries SSL, then plain, on the same socket.
    let mut s = start_after_refusals(mux.port(), &[GSSENC_REQUEST, SSL_REQUEST]).await;
    let msgs = read_until_ready(&mut s).await;
    assert_eq!(msgs.last().unwrap(), &(b'Z', b"I".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_3_2_with_pq_option_gets_negotiate_protocol_version() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let (mut s, msgs) = raw::startup_reply(
        mux.port(),
        &raw::startup_v(
            196610,
            &[("user", "app"), ("database", "appdb"), ("_pq_.foo", "bar")],
        ),
    )
    .await;
    assert_eq!(
        msgs[0].0,
        b'v',
        "NegotiateProtocolVersion first, got {}",
        raw::tags(&msgs)
    );
    let body = &msgs[0].1;
    let n = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    assert_eq!(n, 1);
    assert_eq!(&body[8..], b"_pq_.foo\0");
    assert_eq!(raw::auth_code(&msgs[1]), 0);
    assert_eq!(msgs.last().unwrap(), &(b'Z', b"I".to_vec()));
    raw::send(&mut s, &raw::query("SELECT 1")).await;
    assert_eq!(raw::tags(&read_until_ready(&mut s).await), "TDCZ");

    // With SCRAM: 'v' comes before the SASL request, and login proceeds.
    let mux = Mux::start(config("", "")).await;
    let mut s = raw::start_v(
        mux.port(),
        196610,
        &[("user", "app"), ("database", "appdb"), ("_pq_.foo", "1")],
    )
    .await;
    let v = raw::read_msg(&mut s).await.unwrap();
    assert_eq!(v.0, b'v');
    let m = raw::read_msg(&mut s).await.unwrap();
    assert_eq!(raw::auth_code(&m), 10);
    raw::scram(&mut s, "app_pw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiate_protocol_version_reports_full_version_code() {
    // Postgres sends PG_PROTOCOL_LATEST (3 << 16 | minor) as the "newest minor" field; libpq 18+
    // compares it against PG_PROTOCOL(3, 0) and rejects a smaller value ("server requested
    // downgrade to pre-3.0 protocol version").
    let startup = raw::startup_v(
        196610,
        &[
            ("user", "postgres"),
            ("database", "appdb"),
            ("_pq_.foo", "x"),
        ],
    );
    let (_direct, msgs) = raw::startup_reply(pg().port, &startup).await;
    assert_eq!(msgs[0].0, b'v');
    let postgres_version = i32::from_be_bytes(msgs[0].1[..4].try_into().unwrap());
    assert_eq!(postgres_version, 196608, "Postgres sends the full 3.0 code");

    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let params = [("user", "app"), ("database", "appdb"), ("_pq_.foo", "x")];
    let (_s, msgs) = raw::startup_reply(mux.port(), &raw::startup_v(196610, &params)).await;
    assert_eq!(msgs[0].0, b'v');
    let version = i32::from_be_bytes(msgs[0].1[..4].try_into().unwrap());
    assert_eq!(
        version, postgres_version,
        "pgmux must send what Postgres sends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_3_0_with_pq_option_gets_negotiate_protocol_version() {
    // Postgres answers NegotiateProtocolVersion also to a 3.0 StartupMessage that carries
    // `_pq_.` options it does not know (ProcessStartupPacket: minor too new *or* unrecognised
    // protocol options).
    let (_direct, msgs) = raw::startup_reply(
        pg().port,
        &raw::startup(&[
            ("user", "postgres"),
            ("database", "appdb"),
            ("_pq_.foo", "bar"),
        ]),
    )
    .await;
    assert_eq!(msgs[0].0, b'v', "Postgres itself: {}", raw::tags(&msgs));
    assert_eq!(&msgs[0].1[8..], b"_pq_.foo\0");

    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let (_s, msgs) = raw::startup_reply(
        mux.port(),
        &raw::startup(&[("user", "app"), ("database", "appdb"), ("_pq_.foo", "bar")]),
    )
    .await;
    assert_eq!(
        msgs[0].0,
        b'v',
        "expected NegotiateProtocolVersion, got {}",
        raw::tags(&msgs)
    );
    assert_eq!(&msgs[0].1[8..], b"_pq_.foo\0");
}

/// Login messages Postgres itself sends for a (superuser) login straight to the cluster.
async fn direct_parameter_names() -> BTreeSet<String> {
    let (_s, msgs) = raw::startup_reply(
        pg().port,
        &raw::startup(&[("user", "postgres"), ("database", "appdb")]),
    )
    .await;
    raw::parameter_status(&msgs)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_login_welcome_messages() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    let (_s, msgs) = raw::login_trust(
        mux.port(),
        &[
            ("user", "app"),
            ("database", "appdb"),
            ("application_name", "rawapp"),
            ("client_encoding", "UTF8"),
        ],
    )
    .await;
    let t = raw::tags(&msgs);
    // AuthenticationOk, ParameterStatus..., BackendKeyData, ReadyForQuery.
    assert!(t.starts_with("RS"), "{t}");
    assert!(t.ends_with("KZ"), "{t}");
    assert!(t[1..t.len() - 2].chars().all(|c| c == 'S'), "{t}");
    assert_eq!(msgs.last().unwrap().1, b"I");
    let k = &msgs[msgs.len() - 2].1;
    assert_eq!(k.len(), 8, "BackendKeyData has pid and secret");

    let ps = raw::parameter_status(&msgs);
    let names: Vec<&str> = ps.iter().map(|(k, _)| k.as_str()).collect();
    let set: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        set.len(),
        names.len(),
        "duplicate ParameterStatus: {names:?}"
    );
    let params: BTreeMap<String, String> = ps.into_iter().collect();

    // The same names Postgres sends (Postgres 15: these 13).
    let direct = direct_parameter_names().await;
    assert_eq!(set, direct, "pgmux vs Postgres ParameterStatus names");
    for name in [
        "server_version",
        "server_encoding",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "integer_datetimes",
        "standard_conforming_strings",
        "application_name",
        "is_superuser",
        "session_authorization",
        "IntervalStyle",
    ] {
        assert!(
            params.contains_key(name),
            "missing ParameterStatus {name}: {params:?}"
        );
    }
    let sv = sql_super("appdb", "SHOW server_version").await;
    assert_eq!(params["server_version"], sv);
    let se = sql_super("appdb", "SHOW server_encoding").await;
    assert_eq!(params["server_encoding"], se);
    let ds = sql_super("appdb", "SHOW DateStyle").await;
    assert_eq!(params["DateStyle"], ds);
    let tz = sql_super("appdb", "SHOW TimeZone").await;
    assert_eq!(params["TimeZone"], tz);
    assert_eq!(params["client_encoding"], "UTF8");
    assert_eq!(params["application_name"], "rawapp");
    assert_eq!(params["integer_datetimes"], "on");
    assert_eq!(params["standard_conforming_strings"], "on");
    assert_eq!(params["is_superuser"], "off");
    assert_eq!(params["session_authorization"], "app");
    assert_eq!(params["IntervalStyle"], "postgres");

    // Two clients get different cancel keys.
    let (_s2, msgs2) =
        raw::login_trust(mux.port(), &[("user", "app"), ("database", "appdb")]).await;
    assert_ne!(&msgs2[msgs2.len() - 2].1, k);
    // Without application_name the client sees the server's default (empty).
    let p2: BTreeMap<String, String> = raw::parameter_status(&msgs2).into_iter().collect();
    assert_eq!(p2["application_name"], "");
}

// ---------------------------------------------------------------------------------------------
// 7. Start-up parameters kept per client over a shared server
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_kept_per_client_on_one_server() {
    let mux = Mux::start(custom_config("", "")).await;
    let port = mux.port();
    let default_tz = sql_super("appdb", "SHOW TimeZone").await;

    let mut ca = tp_config(port, "app", "app_pw", "onedb");
    ca.application_name("myapp")
        .options("-c TimeZone=Europe/Paris");
    let mut cb = tp_config(port, "app", "app_pw", "onedb");
    cb.application_name("otherapp")
        .options("-c TimeZone=America/New_York");
    let cc = tp_config(port, "app", "app_pw", "onedb");
    let (a, _ha) = tp_connect_ok(&ca).await;
    let (b, _hb) = tp_connect_ok(&cb).await;
    let (c, _hc) = tp_connect_ok(&cc).await;

    // All three share the pool's single server.
    let pid = one(&a, "SELECT pg_backend_pid()").await;
    assert_eq!(one(&b, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(one(&c, "SELECT pg_backend_pid()").await, pid);

    let names = ["application_name", "TimeZone"];
    for round in 0..3 {
        assert_eq!(
            show(&a, &names).await,
            ["myapp", "Europe/Paris"],
            "round {round}"
        );
        assert_eq!(
            show(&b, &names).await,
            ["otherapp", "America/New_York"],
            "round {round}"
        );
        assert_eq!(
            show(&c, &names).await,
            ["", default_tz.as_str()],
            "round {round}"
        );
        // In an explicit transaction too.
        for (client, tz, app) in [
            (&a, "Europe/Paris", "myapp"),
            (&b, "America/New_York", "otherapp"),
        ] {
            let r = rows(
                client,
                "BEGIN; SHOW TimeZone; SELECT current_setting('application_name'); COMMIT",
            )
            .await;
            assert_eq!(r, [[Some(tz.to_string())], [Some(app.to_string())]]);
        }
    }

    // A SET outside a transaction is remembered for that client only.
    rows(&a, "SET TimeZone = 'UTC'").await;
    assert_eq!(show(&b, &names).await, ["otherapp", "America/New_York"]);
    assert_eq!(show(&a, &names).await, ["myapp", "UTC"]);
    assert_eq!(show(&c, &names).await, ["", default_tz.as_str()]);
    rows(&b, "SET application_name = 'renamed'").await;
    for _ in 0..2 {
        assert_eq!(show(&a, &names).await, ["myapp", "UTC"]);
        assert_eq!(show(&b, &names).await, ["renamed", "America/New_York"]);
    }
    // SET LOCAL and rolled-back SETs do not stick.
    rows(&a, "BEGIN; SET LOCAL TimeZone = 'Asia/Tokyo'; COMMIT").await;
    rows(&a, "BEGIN; SET TimeZone = 'Asia/Tokyo'; ROLLBACK").await;
    assert_eq!(show(&b, &names).await, ["renamed", "America/New_York"]);
    assert_eq!(show(&a, &names).await, ["myapp", "UTC"]);
    // Still one server.
    assert_eq!(one(&b, "SELECT pg_backend_pid()").await, pid);
    assert_eq!(mux.counts("onedb", "app").unwrap().open, 1);
}

// ---------------------------------------------------------------------------------------------
// 8. Refused and ignored start-up parameters
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_startup_parameter_refused() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    for value in ["database", "true", "on", "1"] {
        let mut s = raw::start(
            mux.port(),
            &[
                ("user", "app"),
                ("database", "appdb"),
                ("replication", value),
            ],
        )
        .await;
        let msgs = read_to_close(&mut s).await;
        assert_eq!(raw::tags(&msgs), "E", "replication={value}");
        let (code, msg, sev) = error_of(&msgs).unwrap();
        assert_eq!(code, "0A000", "replication={value}: {msg}");
        assert_eq!(sev, "FATAL");
        assert!(msg.contains("replication"), "{msg}");
    }
    // replication=false is an ordinary connection.
    let (_s, msgs) = raw::login_trust(
        mux.port(),
        &[
            ("user", "app"),
            ("database", "appdb"),
            ("replication", "false"),
        ],
    )
    .await;
    assert_eq!(msgs.last().unwrap().1, b"I");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_startup_parameters() {
    // PgBouncer's behaviour (with track_session_settings, the default, they are carried:
    // tests/it/settings.rs).
    let general = "auth_type = \"trust\"\ntrack_session_settings = false";
    let mux = Mux::start(custom_config(general, "")).await;
    let port = mux.port();
    // An untracked parameter, directly or in options: 08P01 naming it.
    for (params, name) in [
        (
            vec![
                ("user", "app"),
                ("database", "appdb"),
                ("search_path", "public"),
            ],
            "search_path",
        ),
        (
            vec![
                ("user", "app"),
                ("database", "appdb"),
                ("options", "-c search_path=public"),
            ],
            "search_path",
        ),
        (
            vec![("user", "app"), ("database", "appdb"), ("options", "-x")],
            "options",
        ),
    ] {
        let mut s = raw::start(port, &params).await;
        let msgs = read_to_close(&mut s).await;
        assert_eq!(raw::tags(&msgs), "E", "{params:?}");
        let (code, msg, _) = error_of(&msgs).unwrap();
        assert_eq!(code, "08P01", "{params:?}: {msg}");
        assert!(
            msg.contains("unsupported startup parameter") && msg.contains(name),
            "{msg}"
        );
    }
    // With tokio-postgres: same.
    let mut cfg = tp_config(port, "app", "", "appdb");
    cfg.options("-c search_path=public");
    let Err(e) = tp_connect(&cfg).await else {
        panic!("search_path in options is refused")
    };
    assert_eq!(db_err(&e).0, "08P01");

    // extra_float_digits (sent by psql/JDBC) is accepted and ignored; tracked parameters are
    // accepted under any case.
    let (mut s, msgs) = raw::login_trust(
        port,
        &[
            ("user", "app"),
            ("database", "appdb"),
            ("extra_float_digits", "3"),
            ("datestyle", "ISO, DMY"),
            (
                "options",
                "-c extra_float_digits=2 --intervalstyle=iso_8601",
            ),
        ],
    )
    .await;
    assert_eq!(msgs.last().unwrap().1, b"I");
    let msgs = raw::simple_query(&mut s, "SHOW DateStyle; SHOW IntervalStyle").await;
    let data: Vec<&[u8]> = msgs
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|m| &m.1[6..])
        .collect();
    assert_eq!(data, [b"ISO, DMY".as_slice(), b"iso_8601".as_slice()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameter_value_is_reported() {
    // pgmux accepts the value at login; the first query fails with Postgres' error (22023)
    // and the pool keeps serving others.
    let mux = Mux::start(custom_config("", "")).await;
    let mut cfg = tp_config(mux.port(), "app", "app_pw", "onedb");
    cfg.options("-c TimeZone=No/SuchZone");
    match tp_connect(&cfg).await {
        Err(e) => assert_eq!(db_err(&e).0, "22023"),
        Ok((c, h)) => {
            let Err(e) = c.simple_query("SELECT 1").await else {
                panic!("bad TimeZone must fail")
            };
            let query_code = code(&e);
            let conn_err = conn_end(h, "the connection did not end").await;
            let conn_code = conn_err.as_ref().err().and_then(code);
            assert_eq!(query_code.or(conn_code).as_deref(), Some("22023"), "{e}");
        }
    }
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "onedb").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_user_is_28000() {
    let mux = Mux::start(config("", "")).await;
    let mut s = raw::start(mux.port(), &[("database", "appdb")]).await;
    let msgs = read_to_close(&mut s).await;
    let (code, _, _) = error_of(&msgs).expect("an error");
    assert_eq!(code, "28000");
    // The socket is closed; flush our side to be sure nothing hangs.
    let _ = s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_md5_login_with_only_the_stored_hash() {
    // Postgres asks md5user for MD5 (pg_hba); pgmux knows only the stored "md5..." hash and
    // answers the server's challenge from it.
    let mux = Mux::start(custom_config("auth_type = \"md5\"", &md5user_md5_secret())).await;
    let (c, _h) = connect_ok(mux.port(), "md5user", "md5_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "md5user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_startup_parameters_accepts_and_does_not_apply() {
    let mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nignore_startup_parameters = [\"search_path\", \"extra_float_digits\"]",
        "",
    ))
    .await;
    let mut s = raw::start(
        mux.port(),
        &[
            ("user", "app"),
            ("database", "appdb"),
            ("search_path", "nowhere"),
            ("options", "-c extra_float_digits=3"),
        ],
    )
    .await;
    let msgs = read_until_ready(&mut s).await;
    assert_eq!(raw::auth_code(&msgs[0]), 0, "logged in");
    raw::send(&mut s, &raw::query("SHOW search_path")).await;
    let got = read_until_ready(&mut s).await;
    assert_eq!(raw::tags(&got), "TDCZ");
    assert_eq!(
        raw::data_row_first(&got[1].1),
        "\"$user\", public",
        "not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_answered_after_auth_failure_delay() {
    let mux = Mux::start(config("auth_failure_delay = 1", "")).await;
    let t = std::time::Instant::now();
    let e = db_err(&expect_login_error(mux.port(), "app", "not_the_password", "appdb").await);
    assert_eq!(e.0, "28P01");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(950),
        "answered after {:?}",
        t.elapsed()
    );
    // An unknown user waits the same; a right password does not wait.
    let t = std::time::Instant::now();
    expect_login_error(mux.port(), "nosuchuser", "x", "appdb").await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(950));
    let t = std::time::Instant::now();
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT 1").await, "1");
    assert!(t.elapsed() < std::time::Duration::from_millis(900));
}

/// `"md5" + md5(password + user)`, as pg_authid stores it.
fn md5_secret(user: &str, password: &str) -> String {
    pgmux::auth::md5_password_hash(user, password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_file_supplies_users_and_is_read_again_on_reload() {
    use pgmux::auth::userlist;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("userlist.txt");
    let write = |entries: &[(&str, &str)]| {
        let e: Vec<(String, String)> = entries
            .iter()
            .map(|(u, s)| (u.to_string(), s.to_string()))
            .collect();
        std::fs::write(
            &path,
            format!("; pgmux test userlist\n{}", userlist::write(&e)),
        )
        .unwrap();
    };
    let md5 = md5_secret("md5user", "md5_pw");
    write(&[("app", "app_pw"), ("md5user", &md5)]);
    // No [users] at all: the auth_file supplies them.
    let config = crate::support::ConfigBuilder::new()
        .general(&format!(
            "auth_type = \"md5\"\nauth_file = \"{}\"\nadmin_users = [\"app\"]",
            path.display()
        ))
        .shared_databases()
        .build();
    let mux = Mux::start(config).await;
    mux.running.set_config_path({
        // RELOAD reads a file: the same config, as TOML.
        let p = dir.path().join("pgmux.toml");
        let text = format!(
            "[general]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {}\nauth_type = \"md5\"\n\
             auth_file = \"{}\"\nadmin_users = [\"app\"]\n[databases.appdb]\nport = {}\n",
            mux.port(),
            path.display(),
            pg().port
        );
        std::fs::write(&p, text).unwrap();
        p
    });
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "app");
    // The md5 entry logs the client in, and logs in to Postgres (md5 in its pg_hba).
    let (m, _h2) = connect_ok(mux.port(), "md5user", "md5_pw", "appdb").await;
    assert_eq!(one(&m, "SELECT current_user").await, "md5user");
    let e = db_err(&expect_login_error(mux.port(), "other", "other_pw", "appdb").await);
    assert_eq!(e.0, "28P01");

    // A user added to the file logs in after RELOAD; connected clients stay.
    write(&[("app", "app_pw"), ("md5user", &md5), ("other", "other_pw")]);
    c.simple_query("SELECT 1").await.unwrap();
    let (admin, _h3) = connect_ok(mux.port(), "app", "app_pw", "pgmux").await;
    admin.simple_query("RELOAD").await.unwrap();
    let (o, _h4) = connect_ok(mux.port(), "other", "other_pw", "appdb").await;
    assert_eq!(one(&o, "SELECT current_user").await, "other");
    assert_eq!(one(&m, "SELECT 1").await, "1");

    // A broken file is refused with its line, and the users in force stay.
    std::fs::write(&path, "\"app\" \"app_pw\"\n\"other\" other_pw\n").unwrap();
    let err = admin.simple_query("RELOAD").await.unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("auth_file") && msg.contains("line 2"), "{msg}");
    assert!(!msg.contains("other_pw"), "a secret in an error: {msg}");
    let (o2, _h5) = connect_ok(mux.port(), "other", "other_pw", "appdb").await;
    assert_eq!(one(&o2, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_verifier_only_logs_in_to_postgres_with_the_clients_proven_key() {
    // `other`'s verifier as Postgres stores it: pgmux holds no password for it.
    let verifier = pg().psql_super(
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'other'",
    );
    let verifier = verifier.trim();
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("userlist.txt");
    std::fs::write(&path, format!("\"other\" \"{verifier}\"\n")).unwrap();
    let config = crate::support::ConfigBuilder::new()
        .general(&format!("auth_file = \"{}\"", path.display()))
        .shared_databases()
        .build();
    let mux = Mux::start(config).await;
    // The first client's SCRAM proof lets pgmux log in to Postgres as other (SCRAM there).
    let (c, _h) = connect_ok(mux.port(), "other", "other_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "other");
    // More servers for the same pool log in the same way.
    let (c2, _h2) = connect_ok(mux.port(), "other", "other_pw", "appdb").await;
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&c, "SELECT 1").await, "1");
    assert_eq!(one(&c2, "SELECT 2").await, "2");
    c.batch_execute("COMMIT").await.unwrap();
    assert!(mux.counts("appdb", "other").unwrap().open >= 2);
    // A wrong password still fails at pgmux.
    let e = db_err(&expect_login_error(mux.port(), "other", "wrong", "appdb").await);
    assert_eq!(e.0, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_type_hba_takes_the_first_matching_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hba.conf");
    std::fs::write(
        &path,
        "# pgmux test rules\n\
         host    appdb   app    127.0.0.1/32   scram-sha-256\n\
         host    otherdb app    127.0.0.1/32   reject\n\
         host    all     other  10.0.0.0/8     trust\n\
         hostssl all     md5user 127.0.0.1/32  md5\n\
         host    all     other  127.0.0.0 255.0.0.0  password\n",
    )
    .unwrap();
    let mux = Mux::start(custom_config(
        &format!(
            "auth_type = \"hba\"\nauth_hba_file = \"{}\"\nauth_failure_delay = 0",
            path.display()
        ),
        &md5user_md5_secret(),
    ))
    .await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    assert_eq!(one(&c, "SELECT current_user").await, "app");
    let e = db_err(&expect_login_error(mux.port(), "app", "app_pw", "otherdb").await);
    assert_eq!(e.0, "28000");
    assert!(e.1.contains("pg_hba.conf rejects connection"), "{e:?}");
    // No TLS: the hostssl rule does not match, and nothing else does.
    let e = db_err(&expect_login_error(mux.port(), "md5user", "md5_pw", "appdb").await);
    assert_eq!(e.0, "28000");
    assert!(e.1.contains("no pg_hba.conf entry"), "{e:?}");
    // The 10/8 trust rule does not match 127.0.0.1; the password rule does (cleartext).
    let (o, _h2) = connect_ok(mux.port(), "other", "other_pw", "appdb").await;
    assert_eq!(one(&o, "SELECT current_user").await, "other");
    let e = db_err(&expect_login_error(mux.port(), "other", "wrong", "appdb").await);
    assert_eq!(e.0, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_login_message_is_refused_with_08p01() {
    let mux = Mux::start(config("auth_failure_delay = 0", "")).await;
    let (mut s, m) = raw::auth_request(mux.port(), &[("user", "app"), ("database", "appdb")]).await;
    assert_eq!(raw::auth_code(&m), 10, "SASL expected");
    // A SASLInitialResponse header announcing 1 MB: refused before its body is read.
    let mut header = vec![b'p'];
    header.extend_from_slice(&(1u32 << 20).to_be_bytes());
    raw::send(&mut s, &header).await;
    let msgs = read_to_close(&mut s).await;
    let (code, msg, _) = error_of(&msgs).expect("an ErrorResponse");
    assert_eq!(code, "08P01", "{msg}");
}

/// A client's `SET default_transaction_read_only TO on` (what a psycopg_pool `configure`
/// callback does) follows that client: other clients on the same server keep writing, and
/// the client that asked for it gets it on whichever server it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_transaction_read_only_follows_its_client() {
    let mux = Mux::start(custom_config("", "")).await;
    let port = mux.port();
    let cfg = tp_config(port, "app", "app_pw", "onedb");
    let (ro, _h1) = tp_connect_ok(&cfg).await;
    let (rw, _h2) = tp_connect_ok(&cfg).await;
    let mut opt = tp_config(port, "app", "app_pw", "onedb");
    opt.options("-c default_transaction_read_only=on");
    let (ro2, _h3) = tp_connect_ok(&opt).await;
    rows(
        &rw,
        "DROP TABLE IF EXISTS ro_follow; CREATE TABLE ro_follow (x int)",
    )
    .await;
    rows(&ro, "SET default_transaction_read_only TO on").await;
    let pid = one(&ro, "SELECT pg_backend_pid()").await;
    for round in 0..3 {
        // One server for all: the setting is made equal before each client's request.
        assert_eq!(one(&rw, "SELECT pg_backend_pid()").await, pid);
        rows(&rw, "INSERT INTO ro_follow VALUES (1)").await;
        for (who, c) in [("SET", &ro), ("options", &ro2)] {
            let e = c
                .simple_query("INSERT INTO ro_follow VALUES (2)")
                .await
                .expect_err("a read-only client wrote");
            assert_eq!(
                code(&e).as_deref(),
                Some("25006"),
                "{who}, round {round}: {e}"
            );
            assert_eq!(one(c, "SHOW default_transaction_read_only").await, "on");
        }
        assert_eq!(one(&rw, "SHOW default_transaction_read_only").await, "off");
    }
    rows(&ro, "RESET default_transaction_read_only").await;
    rows(&ro, "INSERT INTO ro_follow VALUES (3)").await;
    assert_eq!(
        one(&rw, "SELECT count(*) FROM ro_follow").await,
        "4",
        "three from rw, one from ro after its RESET"
    );
    rows(&rw, "DROP TABLE ro_follow").await;
}

/// The same through psycopg_pool, as the issue found it: a pool whose `configure` callback
/// makes its connections read-only beside an ordinary pool, both busy at once, through pgmux
/// in transaction mode on a server pool smaller than the eight connections. The outcome must
/// be what it is directly against Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pool_configure_read_only_stays_with_its_connections() {
    use crate::drivers::python_script;
    let script = |port: u16, what: &'static str| {
        let db = if port == pg().port { "appdb" } else { "rodb" };
        let limit = std::time::Duration::from_secs(90);
        python_script("psycopg_pool_read_only.py", port, db, limit, what)
    };
    let direct = script(pg().port, "psycopg_pool against Postgres").await;
    assert!(direct.ok, "directly: {}{}", direct.stdout, direct.stderr);
    assert!(
        direct.stdout.contains("ordinary pool: 60 written"),
        "{}",
        direct.stdout
    );
    let mux = Mux::start(config("", &db_entry("rodb", "appdb", "pool_size = 3"))).await;
    let via = script(mux.port(), "psycopg_pool through pgmux").await;
    assert!(via.ok, "through pgmux: {}{}", via.stdout, via.stderr);
    assert_eq!(via.stdout, direct.stdout, "through pgmux vs directly");
}

/// A start-up client_encoding in another spelling (`utf-8`, `utf_8`, `unicode`) is reported
/// in Postgres' own (`UTF8`), as Postgres reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_encoding_is_reported_in_postgres_spelling() {
    let mux = Mux::start(custom_config("auth_type = \"trust\"", "")).await;
    for spelling in ["utf-8", "utf_8", "Unicode", "UTF8"] {
        let (_s, direct) = raw::startup_reply(
            pg().port,
            &raw::startup(&[
                ("user", "postgres"),
                ("database", "appdb"),
                ("client_encoding", spelling),
            ]),
        )
        .await;
        let (_m, ours) = raw::login_trust(
            mux.port(),
            &[
                ("user", "app"),
                ("database", "appdb"),
                ("client_encoding", spelling),
            ],
        )
        .await;
        let get = |msgs| {
            raw::parameter_status(msgs)
                .into_iter()
                .find(|(k, _)| k == "client_encoding")
                .map(|(_, v)| v)
        };
        assert_eq!(
            get(&direct).as_deref(),
            Some("UTF8"),
            "{spelling}: Postgres"
        );
        assert_eq!(get(&ours), get(&direct), "{spelling}: pgmux vs Postgres");
    }
}
