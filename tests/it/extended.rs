//! Extended-protocol sequences answered byte for byte as a direct connection answers them:
//! the same bytes are sent to Postgres directly and through pgmux (transaction mode, a pool
//! of 1 shared with another client), and the replies are compared message by message.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::support::config::db_entry;
use crate::support::raw::{
    auth_request, bind, cstr, describe_statement, execute, msg, parse, query, read_msg, scram,
    sync, Msg,
};
use crate::support::{config, pg, Mux};

/// Bind of `statement` to `portal` with text parameters and binary results.
pub(crate) fn bind_params(
    portal: &str,
    statement: &str,
    params: &[&str],
    binary_results: bool,
) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(statement));
    b.extend(0i16.to_be_bytes()); // all parameters in text
    b.extend((params.len() as i16).to_be_bytes());
    for p in params {
        b.extend((p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    if binary_results {
        b.extend(1i16.to_be_bytes());
        b.extend(1i16.to_be_bytes());
    } else {
        b.extend(0i16.to_be_bytes());
    }
    msg(b'B', &b)
}

/// Execute of `portal` returning at most `rows` rows (0: all).
pub(crate) fn execute_limit(portal: &str, rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(rows.to_be_bytes());
    msg(b'E', &b)
}

pub(crate) fn describe_portal(name: &str) -> Vec<u8> {
    let mut b = vec![b'P'];
    b.extend(cstr(name));
    msg(b'D', &b)
}

/// Log in as app with SCRAM on `port` (Postgres or pgmux).
pub(crate) async fn login(port: u16) -> TcpStream {
    let (mut s, m) = auth_request(port, &[("user", "app"), ("database", "appdb")]).await;
    assert_eq!(m.0, b'R');
    scram(&mut s, "app_pw").await;
    s
}

/// Send `bytes` and read until `ready` ReadyForQuery messages have come back.
pub(crate) async fn exchange(s: &mut TcpStream, bytes: &[u8], ready: usize) -> Vec<Msg> {
    crate::support::raw::send(s, bytes).await;
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < ready {
        let m = tokio::time::timeout(Duration::from_secs(10), read_msg(s))
            .await
            .expect("reply in time")
            .expect("connection open");
        seen += usize::from(m.0 == b'Z');
        out.push(m);
    }
    out
}

/// The scenarios: (name, bytes to send, ReadyForQuery count to wait for). Named statements
/// carry an `ext_` prefix: until pgmux maps prepared statements (the next issue), a named
/// statement stays on the shared server, and tokio-postgres names its own s0, s1, ...
fn scenarios() -> Vec<(&'static str, Vec<u8>, usize)> {
    let mut v = Vec::new();

    // A pipelined batch with an error in the middle: the error, then nothing until Sync.
    let mut b = parse("ext_s1", "SELECT 10 / $1::int");
    b.extend(bind_params("", "ext_s1", &["2"], false));
    b.extend(execute(""));
    b.extend(bind_params("", "ext_s1", &["0"], false));
    b.extend(execute(""));
    b.extend(bind_params("", "ext_s1", &["5"], false));
    b.extend(execute(""));
    b.extend(sync());
    b.extend(query("SELECT 'after the batch'"));
    v.push(("pipelined batch with an error", b, 2));

    // Describe of statement and portal, binary results.
    let mut b = parse("", "SELECT $1::int8 AS n, now()::date AS d, 'x'::text AS t");
    b.extend(describe_statement(""));
    b.extend(bind_params("", "", &["42"], true));
    b.extend(describe_portal(""));
    b.extend(execute(""));
    b.extend(sync());
    v.push(("describe and binary results", b, 1));

    // A named portal inside a transaction, fetched a few rows at a time (PortalSuspended).
    let mut b = query("BEGIN");
    b.extend(parse("", "SELECT g FROM generate_series(1, 7) g"));
    b.extend(bind("cur", ""));
    b.extend(execute_limit("cur", 3));
    b.extend(sync());
    b.extend(execute_limit("cur", 3));
    b.extend(execute_limit("cur", 3));
    b.extend(sync());
    b.extend(query("COMMIT"));
    v.push(("named portal with row limits in a transaction", b, 4));

    // Errors at each step: Parse, Bind (wrong parameter count), Execute; then recovery.
    let mut b = parse("ext_bad", "SELEC 1");
    b.extend(sync());
    b.extend(parse("", "SELECT $1::int"));
    b.extend(bind("", ""));
    b.extend(execute(""));
    b.extend(sync());
    b.extend(parse("", "SELECT 1"));
    b.extend(bind("", ""));
    b.extend(execute(""));
    b.extend(sync());
    v.push(("errors at parse, bind, then recovery", b, 3));

    // Close of a statement and a portal, inside a transaction.
    let mut b = query("BEGIN");
    b.extend(parse("ext_s2", "SELECT 2"));
    b.extend(bind("p2", "ext_s2"));
    b.extend(msg(b'C', &[&[b'P'][..], &cstr("p2")].concat()));
    b.extend(msg(b'C', &[&[b'S'][..], &cstr("ext_s2")].concat()));
    b.extend(sync());
    b.extend(query("COMMIT"));
    v.push(("close statement and portal", b, 3));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_replies_match_a_direct_connection() {
    let pg = pg();
    let extra = db_entry("extdb", "appdb", "pool_size = 1");
    let mux = Mux::start(config("", &extra)).await;
    // Another client shares the pool's only server between the scenarios.
    let other = mux.connect_as("app", "app_pw", "extdb").await;
    let mut direct = login(pg.port).await;
    let (mut via, m) = auth_request(mux.port(), &[("user", "app"), ("database", "extdb")]).await;
    assert_eq!(m.0, b'R');
    scram(&mut via, "app_pw").await;
    for (name, bytes, ready) in scenarios() {
        let want = exchange(&mut direct, &bytes, ready).await;
        let got = exchange(&mut via, &bytes, ready).await;
        assert_eq!(
            got, want,
            "{name}: pgmux's reply differs from a direct connection's"
        );
        let n: i64 = other.query_one("SELECT 1::int8", &[]).await.unwrap().get(0);
        assert_eq!(n, 1, "the shared server went back to the pool after {name}");
    }
}

/// A FunctionCall (libpq's fast path, used for large objects) ends with ReadyForQuery like a
/// Query: in transaction mode the server goes back to the pool after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_releases_the_server() {
    let _pg = pg();
    let extra = db_entry("fcdb", "appdb", "pool_size = 1");
    let mux = Mux::start(config("", &extra)).await;
    let other = mux.connect_as("app", "app_pw", "fcdb").await;
    let oid: u32 = other
        .query_one("SELECT 'int4abs'::regproc::oid", &[])
        .await
        .unwrap()
        .get(0);
    let (mut c, m) = auth_request(mux.port(), &[("user", "app"), ("database", "fcdb")]).await;
    assert_eq!(m.0, b'R');
    scram(&mut c, "app_pw").await;
    let mut b = oid.to_be_bytes().to_vec();
    b.extend(1i16.to_be_bytes()); // one format code
    b.extend(0i16.to_be_bytes()); // text
    b.extend(1i16.to_be_bytes()); // one argument
    b.extend(2i32.to_be_bytes());
    b.extend_from_slice(b"-5");
    b.extend(0i16.to_be_bytes()); // text result
    let got = exchange(&mut c, &msg(b'F', &b), 1).await;
    assert_eq!(crate::support::raw::tags(&got), "VZ");
    assert_eq!(&got[0].1[4..], b"5");
    // The only server is free again.
    let n: i64 = tokio::time::timeout(
        Duration::from_secs(5),
        other.query_one("SELECT 1::int8", &[]),
    )
    .await
    .expect("the server was released after the FunctionCall")
    .unwrap()
    .get(0);
    assert_eq!(n, 1);
}
