//! Protocol-level prepared statements in transaction mode: clients' named statements follow
//! them across servers, byte for byte as on a direct connection.

use crate::support::config::db_entry;
use crate::support::{config, pg, Mux};

/// tokio-postgres names its statements s0, s1, ... on every connection and closes them when
/// dropped: 20 clients on a pool of 2 collide on those names unless pgmux maps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_prepare_the_same_names_on_shared_servers() {
    let _pg = pg();
    let extra = db_entry("psdb", "appdb", "pool_size = 2");
    let mux = Mux::start(config("", &extra)).await;
    let mut tasks = Vec::new();
    for c in 0..20i32 {
        let client = mux.connect_as("app", "app_pw", "psdb").await;
        tasks.push(tokio::spawn(async move {
            let a = client.prepare("SELECT $1::int + 1").await.unwrap();
            let b = client
                .prepare(&format!("SELECT $1::int * {}", c + 2))
                .await
                .unwrap();
            for i in 0..50i32 {
                let x: i32 = client.query_one(&a, &[&i]).await.unwrap().get(0);
                assert_eq!(x, i + 1);
                let y: i32 = client.query_one(&b, &[&i]).await.unwrap().get(0);
                assert_eq!(y, i * (c + 2));
                // A statement prepared and dropped (Closed) each time.
                let z: String = client
                    .query_one("SELECT $1::text || 'z'", &[&format!("{c}")])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(z, format!("{c}z"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pool = mux.pool("psdb", "app").unwrap();
    let s = &pool.stats;
    use std::sync::atomic::Ordering::Relaxed;
    eprintln!(
        "client parses {} server parses {} hits {} evictions {} binds {}",
        s.ps_client_parses.load(Relaxed),
        s.ps_server_parses.load(Relaxed),
        s.ps_hits.load(Relaxed),
        s.ps_evictions.load(Relaxed),
        s.ps_binds.load(Relaxed)
    );
}

use tokio::net::TcpStream;

use crate::extended::{bind_params, describe_portal, exchange, execute_limit, login};
use crate::support::raw::{
    auth_request, bind, cstr, describe_statement, execute, flush, msg, parse, query, read_msg,
    scram, sync, Msg,
};

fn close_statement(name: &str) -> Vec<u8> {
    msg(b'C', &[&[b'S'][..], &cstr(name)].concat())
}

/// Parse with parameter types.
fn parse_typed(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend((types.len() as i16).to_be_bytes());
    for t in types {
        b.extend(t.to_be_bytes());
    }
    msg(b'P', &b)
}

/// Bind of one binary int4 parameter, binary results.
fn bind_binary_int(portal: &str, statement: &str, v: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(statement));
    b.extend(1i16.to_be_bytes());
    b.extend(1i16.to_be_bytes()); // parameters in binary
    b.extend(1i16.to_be_bytes());
    b.extend(4i32.to_be_bytes());
    b.extend(v.to_be_bytes());
    b.extend(1i16.to_be_bytes());
    b.extend(1i16.to_be_bytes()); // results in binary
    msg(b'B', &b)
}

/// What one step waits for.
#[derive(Clone, Copy)]
enum Until {
    /// This many ReadyForQuery messages.
    Ready(usize),
    /// This many messages (after a Flush).
    Msgs(usize),
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(std::time::Duration::from_secs(3), read_msg(s)).await {
            Ok(m) => out.push(m.expect("connection open")),
            Err(_) => panic!("after {:?}: timed out", out),
        }
    }
    out
}

async fn step(s: &mut TcpStream, bytes: &[u8], until: Until) -> Vec<Msg> {
    match until {
        Until::Ready(n) => exchange(s, bytes, n).await,
        Until::Msgs(n) => {
            crate::support::raw::send(s, bytes).await;
            read_n(s, n).await
        }
    }
}

/// ErrorResponses compared by severity, SQLSTATE and message (pgmux's own errors carry no
/// source file and line); everything else byte for byte.
fn normalized(msgs: Vec<Msg>) -> Vec<Msg> {
    msgs.into_iter()
        .map(|(tag, body)| {
            if tag == b'E' {
                let (code, message, severity) = crate::support::raw::fields(&body);
                (tag, format!("{severity} {code} {message}").into_bytes())
            } else {
                (tag, body)
            }
        })
        .collect()
}

/// A scenario: its name and its steps (bytes to send, what to wait for).
type Scenario = (&'static str, Vec<(Vec<u8>, Until)>);

/// Scenarios of steps; between steps the client is moved to the pool's other server.
#[allow(clippy::vec_init_then_push)]
fn prepared_scenarios() -> Vec<Scenario> {
    use Until::*;
    let mut v = Vec::new();

    v.push((
        "a statement follows its client to another server",
        vec![
            (
                [parse("s1", "SELECT $1::int * 2"), sync()].concat(),
                Ready(1),
            ),
            (
                [bind_params("", "s1", &["21"], false), execute(""), sync()].concat(),
                Ready(1),
            ),
            ([describe_statement("s1"), sync()].concat(), Ready(1)),
            (
                [
                    parse("s1b", "SELECT $1::int8 AS n, 'x'::text AS t"),
                    describe_statement("s1b"),
                    bind_params("", "s1b", &["7"], true),
                    describe_portal(""),
                    execute(""),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
            (
                [bind_params("", "s1b", &["8"], false), execute(""), sync()].concat(),
                Ready(1),
            ),
        ],
    ));

    v.push((
        "Close, then the name is gone, then reused for another text",
        vec![
            ([close_statement("s1"), sync()].concat(), Ready(1)),
            (
                [bind_params("", "s1", &["1"], false), execute(""), sync()].concat(),
                Ready(1),
            ),
            ([describe_statement("s1"), sync()].concat(), Ready(1)),
            (
                [
                    parse("s1", "SELECT $1::text || '!'"),
                    bind_params("", "s1", &["hey"], false),
                    execute(""),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
            // Close of a name never prepared is no error.
            ([close_statement("nope"), sync()].concat(), Ready(1)),
        ],
    ));

    v.push((
        "a name prepared twice is refused, the first statement stays",
        vec![
            ([parse("s2", "SELECT 'first'"), sync()].concat(), Ready(1)),
            (
                [
                    parse("s2", "SELECT 'second'"),
                    bind("", "s2"),
                    execute(""),
                    sync(),
                    query("SELECT 'after'"),
                ]
                .concat(),
                Ready(2),
            ),
            ([bind("", "s2"), execute(""), sync()].concat(), Ready(1)),
        ],
    ));

    v.push((
        "a Parse that fails is not remembered",
        vec![
            ([parse("s3", "SELEC 1"), sync()].concat(), Ready(1)),
            (
                [parse("s3", "SELECT 3"), bind("", "s3"), execute(""), sync()].concat(),
                Ready(1),
            ),
        ],
    ));

    v.push((
        "pipelined batch with an error: the rest up to Sync is skipped, its Parse too",
        vec![
            (
                [
                    parse("s4", "SELECT 10 / $1::int"),
                    bind_params("", "s4", &["2"], false),
                    execute(""),
                    bind_params("", "s4", &["0"], false),
                    execute(""),
                    parse("s5", "SELECT 5"),
                    bind("", "s5"),
                    execute(""),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
            ([bind("", "s5"), execute(""), sync()].concat(), Ready(1)),
            (
                [bind_params("", "s4", &["5"], false), execute(""), sync()].concat(),
                Ready(1),
            ),
        ],
    ));

    v.push((
        "DISCARD ALL drops the client's statements; a failed one does not",
        vec![
            (
                [query("BEGIN"), query("DISCARD ALL"), query("ROLLBACK")].concat(),
                Ready(3),
            ),
            (
                [bind_params("", "s4", &["1"], false), execute(""), sync()].concat(),
                Ready(1),
            ),
            (query("DISCARD ALL"), Ready(1)),
            (
                [bind_params("", "s4", &["1"], false), execute(""), sync()].concat(),
                Ready(1),
            ),
            (
                [
                    parse("s4", "SELECT 4"),
                    bind("", "s4"),
                    execute(""),
                    sync(),
                    query("deallocate   ALL;"),
                ]
                .concat(),
                Ready(2),
            ),
            ([describe_statement("s4"), sync()].concat(), Ready(1)),
        ],
    ));

    v.push((
        "a duplicate name inside a transaction block aborts it",
        vec![(
            [
                query("BEGIN"),
                parse("s6", "SELECT 6"),
                sync(),
                parse("s6", "SELECT 6"),
                sync(),
                query("SELECT 1"),
                query("ROLLBACK"),
                bind("", "s6"),
                execute(""),
                sync(),
            ]
            .concat(),
            Ready(6),
        )],
    ));

    v.push((
        "named portal of a named statement, fetched a few rows at a time",
        vec![
            (
                [
                    query("BEGIN"),
                    parse("s7", "SELECT g FROM generate_series(1, 7) g"),
                    bind("cur", "s7"),
                    execute_limit("cur", 3),
                    sync(),
                    execute_limit("cur", 3),
                    execute_limit("cur", 3),
                    sync(),
                    query("COMMIT"),
                ]
                .concat(),
                Ready(4),
            ),
            (
                [bind("cur", "s7"), execute_limit("cur", 2), sync()].concat(),
                Ready(1),
            ),
        ],
    ));

    v.push((
        "Flush delivers the answers so far, made-up ones included",
        vec![
            ([parse("s8", "SELECT 8"), sync()].concat(), Ready(1)),
            // Same text under another name on the other server: sent, answered by Postgres.
            ([parse("s9", "SELECT 8"), flush()].concat(), Msgs(1)),
            ([bind("", "s9"), execute(""), flush()].concat(), Msgs(3)),
            (sync(), Ready(1)),
            (
                [query("BEGIN"), parse("s10", "SELECT 8"), flush()].concat(),
                Msgs(3),
            ),
            ([close_statement("s10"), flush()].concat(), Msgs(1)),
            ([sync(), query("COMMIT")].concat(), Ready(2)),
        ],
    ));

    v.push((
        "typed parameters and binary formats",
        vec![
            (
                [parse_typed("s11", "SELECT $1 + 1", &[23]), sync()].concat(),
                Ready(1),
            ),
            (
                [
                    describe_statement("s11"),
                    bind_binary_int("", "s11", 41),
                    execute(""),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
            // The same text with other types is another statement.
            (
                [
                    parse_typed("s12", "SELECT $1 + 1", &[20]),
                    describe_statement("s12"),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
        ],
    ));

    v.push((
        "SQL DEALLOCATE of a protocol-level statement (PHP's PDO)",
        vec![
            (
                [parse("pdo_stmt_1", "SELECT 'pdo'"), sync()].concat(),
                Ready(1),
            ),
            (query("DEALLOCATE pdo_stmt_1"), Ready(1)),
            (
                [bind("", "pdo_stmt_1"), execute(""), sync()].concat(),
                Ready(1),
            ),
            (
                [
                    parse("pdo_stmt_2", "SELECT 'pdo2'"),
                    sync(),
                    query("BEGIN"),
                    query("deallocate prepare PDO_STMT_2;"),
                    query("DEALLOCATE pdo_stmt_2"),
                    query("ROLLBACK"),
                ]
                .concat(),
                Ready(5),
            ),
            (
                [
                    parse("pdo_stmt_3", "SELECT 'pdo3'"),
                    sync(),
                    query("BEGIN"),
                    query("SELECT 1/0"),
                    query("DEALLOCATE pdo_stmt_3"),
                    query("ROLLBACK"),
                ]
                .concat(),
                Ready(5),
            ),
            // The refused DEALLOCATE left the statement in place. (Only the next request
            // sees that: messages pipelined behind the DEALLOCATE were read with the name
            // gone, see README.)
            (
                [bind("", "pdo_stmt_3"), execute(""), sync()].concat(),
                Ready(1),
            ),
        ],
    ));

    v.push((
        "after an error, messages sent later are skipped until Sync",
        vec![
            (
                [
                    parse("s14", "SELECT 1 / ($1::int + (random() * 0)::int)"),
                    bind_params("", "s14", &["0"], false),
                    execute(""),
                    flush(),
                ]
                .concat(),
                Msgs(3),
            ),
            (
                [
                    parse("s15", "SELECT 15"),
                    bind_params("", "s14", &["1"], false),
                    execute(""),
                    close_statement("s14"),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
            // s15 was never prepared, s14 never closed.
            (
                [
                    describe_statement("s15"),
                    sync(),
                    bind_params("", "s14", &["1"], false),
                    execute(""),
                    sync(),
                ]
                .concat(),
                Ready(2),
            ),
        ],
    ));

    // Batches of the unnamed statement, one failing, and one naming a statement sent before
    // their answers came; then both kinds inside a transaction; then a COPY of the unnamed one.
    v.push((
        "unnamed batches, then named ones before their answers",
        vec![
            (
                [
                    parse("", "SELECT $1::int + 1"),
                    bind_params("", "", &["1"], false),
                    describe_portal(""),
                    execute(""),
                    sync(),
                    parse("", "SELECT 1/0"),
                    bind_params("", "", &[], false),
                    execute(""),
                    sync(),
                    parse("s20", "SELECT $1::text || 'x'"),
                    bind_params("", "s20", &["a"], false),
                    execute(""),
                    sync(),
                ]
                .concat(),
                Ready(3),
            ),
            (
                [
                    query("BEGIN"),
                    parse("", "SELECT 2"),
                    bind_params("", "", &[], false),
                    execute(""),
                    sync(),
                    bind_params("", "s20", &["b"], false),
                    execute(""),
                    sync(),
                    query("COMMIT"),
                ]
                .concat(),
                Ready(4),
            ),
            (
                [
                    parse("", "COPY (SELECT g FROM generate_series(1, 2) g) TO STDOUT"),
                    bind_params("", "", &[], false),
                    execute(""),
                    sync(),
                    describe_statement("s20"),
                    sync(),
                ]
                .concat(),
                Ready(2),
            ),
        ],
    ));

    v.push((
        "COPY through a named statement",
        vec![
            (
                [
                    parse(
                        "s13",
                        "COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT",
                    ),
                    sync(),
                ]
                .concat(),
                Ready(1),
            ),
            ([bind("", "s13"), execute(""), sync()].concat(), Ready(1)),
        ],
    ));
    v
}

/// Every scenario, step by step, through pgmux (transaction mode, pool of 2, the client moved to
/// the other server between steps) and directly: the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_answer_as_a_direct_connection_across_servers() {
    let pg = pg();
    let extra = db_entry("psdb2", "appdb", "pool_size = 2");
    let mux = Mux::start(config("", &extra)).await;
    // Holds the server the client just used, so that its next step runs on the other one.
    let holder = mux.connect_as("app", "app_pw", "psdb2").await;
    let mut direct = login(pg.port).await;
    let (mut via, m) = auth_request(mux.port(), &[("user", "app"), ("database", "psdb2")]).await;
    assert_eq!(m.0, b'R');
    scram(&mut via, "app_pw").await;
    let pid_of = |msgs: &[Msg]| -> String {
        crate::support::raw::data_row_first(&msgs.iter().find(|m| m.0 == b'D').unwrap().1)
    };
    let mut pids = std::collections::BTreeSet::new();
    let mut n = 0;
    for (name, steps) in prepared_scenarios() {
        for (i, (bytes, until)) in steps.iter().enumerate() {
            let want = normalized(step(&mut direct, bytes, *until).await);
            // Every other step, the holder takes the server the client used last (the top of
            // the idle stack), so the client's next step runs on the other one.
            n += 1;
            let hold = n % 2 == 1;
            if hold {
                holder.batch_execute("BEGIN").await.unwrap();
            }
            let got = normalized(step(&mut via, bytes, *until).await);
            assert_eq!(
                got,
                want,
                "{name}, step {i}: pgmux's answer differs from a direct connection's\n\
                 pgmux:  {}\ndirect: {}",
                crate::support::raw::tags(&got),
                crate::support::raw::tags(&want)
            );
            if matches!(until, Until::Ready(_)) && got.last().unwrap().1 == b"I" {
                let q = query("SELECT pg_backend_pid()");
                pids.insert(pid_of(&exchange(&mut via, &q, 1).await));
                let _ = exchange(&mut direct, &q, 1).await;
            }
            if hold {
                holder.batch_execute("COMMIT").await.unwrap();
            }
        }
    }
    assert_eq!(pids.len(), 2, "the client ran on both servers: {pids:?}");
}

/// The names the server the client holds has prepared (simple query: no statement of its own).
async fn server_statements(s: &mut TcpStream) -> Vec<String> {
    let msgs = exchange(
        s,
        &query("SELECT name FROM pg_prepared_statements ORDER BY name"),
        1,
    )
    .await;
    msgs.iter()
        .filter(|m| m.0 == b'D')
        .map(|m| crate::support::raw::data_row_first(&m.1))
        .collect()
}

async fn mux_login(mux: &Mux, db: &str) -> TcpStream {
    let (mut s, m) = auth_request(mux.port(), &[("user", "app"), ("database", db)]).await;
    assert_eq!(m.0, b'R');
    scram(&mut s, "app_pw").await;
    s
}

/// A statement whose clients all left is still on the server that parsed it. The next Parse of
/// it there is answered from that server's cache, and that makes it known good again: a third
/// client's Parse of it alone, then Sync, is answered while the one server is busy inside a
/// transaction. Before, only a Parse sent to a server marked a statement good, so once every
/// server of a pool kept it, every client's PQprepare waited for a server: `pgbench -M
/// prepared` started a second time on the same pgmux, with more clients than servers, hung
/// (a thread blocked in PQprepare while its other clients held every server in a transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_a_server_kept_after_its_clients_left_is_prepared_without_a_server() {
    use crate::support::raw::tags;
    let _pg = pg();
    let extra = db_entry("psdb10", "appdb", "pool_size = 1");
    let mux = Mux::start(config("query_wait_timeout = 30", &extra)).await;
    let p = |name: &str| [parse(name, "SELECT 'kept'"), sync()].concat();
    let mut a = mux_login(&mux, "psdb10").await;
    assert_eq!(tags(&exchange(&mut a, &p("s1"), 1).await), "1Z");
    drop(a);
    crate::support::eventually(5, "the first client gone", || mux.clients() == 0).await;
    // The server still has it: a hit, no Parse sent.
    let mut b = mux_login(&mux, "psdb10").await;
    assert_eq!(tags(&exchange(&mut b, &p("s1"), 1).await), "1Z");
    assert_eq!(tags(&exchange(&mut b, &query("BEGIN"), 1).await), "CZ");
    // The only server is b's until it commits; c's Parse is answered all the same.
    let mut c = mux_login(&mux, "psdb10").await;
    assert_eq!(tags(&step(&mut c, &p("s2"), Until::Msgs(2)).await), "1Z");
    let pool = mux.pool("psdb10", "app").unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(pool.stats.ps_server_parses.load(Relaxed), 1);
    assert_eq!(pool.stats.ps_hits.load(Relaxed), 2, "b's Parse, c's Parse");
    // c's statement runs once b is done.
    crate::support::raw::send(&mut c, &[bind("", "s2"), execute(""), sync()].concat()).await;
    assert_eq!(tags(&exchange(&mut b, &query("COMMIT"), 1).await), "CZ");
    let msgs = read_n(&mut c, 4).await;
    assert_eq!(tags(&msgs), "2DCZ");
    assert_eq!(crate::support::raw::data_row_first(&msgs[1].1), "kept");
}

/// max_prepared_statements bounds what each server keeps: the least recently used statement
/// is closed on the server to make room, and prepared again when needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_servers_bounded_and_statements_working() {
    let _pg = pg();
    let extra = db_entry("psdb3", "appdb", "pool_size = 1");
    let mux = Mux::start(config("max_prepared_statements = 2", &extra)).await;
    let mut c = mux_login(&mux, "psdb3").await;
    for i in 0..5 {
        let b = [parse(&format!("e{i}"), &format!("SELECT {i}")), sync()].concat();
        assert_eq!(
            crate::support::raw::tags(&exchange(&mut c, &b, 1).await),
            "1Z"
        );
    }
    for round in 0..3 {
        for i in 0..5 {
            let b = [bind("", &format!("e{i}")), execute(""), sync()].concat();
            let msgs = exchange(&mut c, &b, 1).await;
            assert_eq!(
                crate::support::raw::tags(&msgs),
                "2DCZ",
                "round {round}, e{i}"
            );
            assert_eq!(
                crate::support::raw::data_row_first(&msgs[1].1),
                i.to_string()
            );
        }
    }
    let names = server_statements(&mut c).await;
    assert!(names.len() <= 2, "server keeps at most 2: {names:?}");
    assert!(names.iter().all(|n| n.starts_with("pgmux_")), "{names:?}");
    let pool = mux.pool("psdb3", "app").unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    let st = &pool.stats;
    assert_eq!(st.ps_client_parses.load(Relaxed), 5);
    assert_eq!(st.ps_binds.load(Relaxed), 15);
    // Each Bind found its statement evicted (5 statements cycling through 2 places).
    assert_eq!(st.ps_server_parses.load(Relaxed), 5 + 15);
    assert_eq!(st.ps_evictions.load(Relaxed), 5 + 15 - 2);
    assert_eq!(st.ps_hits.load(Relaxed), 0);
}

/// Statements are shared: the second client's Parse of the same text on the same server is
/// answered by pgmux (a hit), and its Bind too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_text_is_prepared_once_per_server_and_counted() {
    let _pg = pg();
    let extra = db_entry("psdb4", "appdb", "pool_size = 1");
    let mux = Mux::start(config("", &extra)).await;
    let mut a = mux_login(&mux, "psdb4").await;
    let mut b = mux_login(&mux, "psdb4").await;
    let p = |name: &str| [parse(name, "SELECT 'shared'"), sync()].concat();
    assert_eq!(
        crate::support::raw::tags(&exchange(&mut a, &p("mine"), 1).await),
        "1Z"
    );
    assert_eq!(
        crate::support::raw::tags(&exchange(&mut b, &p("yours"), 1).await),
        "1Z"
    );
    let run = [bind("", "yours"), execute(""), sync()].concat();
    assert_eq!(
        crate::support::raw::tags(&exchange(&mut b, &run, 1).await),
        "2DCZ"
    );
    // b's Close leaves a's statement alone.
    let close = [close_statement("yours"), sync()].concat();
    assert_eq!(
        crate::support::raw::tags(&exchange(&mut b, &close, 1).await),
        "3Z"
    );
    let run = [bind("", "mine"), execute(""), sync()].concat();
    assert_eq!(
        crate::support::raw::tags(&exchange(&mut a, &run, 1).await),
        "2DCZ"
    );
    assert_eq!(server_statements(&mut a).await.len(), 1);
    let pool = mux.pool("psdb4", "app").unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    let st = &pool.stats;
    assert_eq!(st.ps_client_parses.load(Relaxed), 2);
    assert_eq!(st.ps_server_parses.load(Relaxed), 1);
    assert_eq!(st.ps_hits.load(Relaxed), 3, "b's Parse, b's Bind, a's Bind");
    assert_eq!(st.ps_evictions.load(Relaxed), 0);
}

/// A client with no statements sends simple queries unmapped (no queue entries), and the
/// mapping starts mid-request when it must: the queries sent before are owed first. Its
/// DISCARD ALL, unmapped, still empties the server's statement cache, so another client's
/// statement is prepared again there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_simple_queries_keep_the_servers_statements_known() {
    let _pg = pg();
    let extra = db_entry("psdb7", "appdb", "pool_size = 1");
    let mux = Mux::start(config("", &extra)).await;
    let mut a = mux_login(&mux, "psdb7").await;
    let mut b = mux_login(&mux, "psdb7").await;
    let tags = |m: &[Msg]| crate::support::raw::tags(m);
    let p = [parse("mine", "SELECT 'a'"), sync()].concat();
    assert_eq!(tags(&exchange(&mut a, &p, 1).await), "1Z");
    let run = [bind("", "mine"), execute(""), sync()].concat();
    assert_eq!(tags(&exchange(&mut a, &run, 1).await), "2DCZ");
    assert_eq!(server_statements(&mut b).await.len(), 1);
    // b has no statements: its DISCARD ALL is not mapped, and empties the server all the same.
    assert_eq!(
        tags(&exchange(&mut b, &query("DISCARD ALL"), 1).await),
        "CZ"
    );
    assert_eq!(server_statements(&mut b).await.len(), 0);
    assert_eq!(tags(&exchange(&mut a, &run, 1).await), "2DCZ");
    // Queries, then the extended protocol in the same request: the mapping starts at the
    // Parse, owing the two queries' answers first.
    let mixed = [
        query("SELECT 1"),
        query("SELECT 2"),
        parse("late", "SELECT 'b'"),
        bind("", "late"),
        execute(""),
        sync(),
    ]
    .concat();
    let msgs = exchange(&mut b, &mixed, 3).await;
    assert_eq!(tags(&msgs), "TDCZTDCZ12DCZ");
    assert_eq!(crate::support::raw::data_row_first(&msgs[10].1), "b");
    let names = server_statements(&mut b).await;
    assert_eq!(names.len(), 2, "a's and b's: {names:?}");
    let pool = mux.pool("psdb7", "app").unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    // a's statement twice (prepared again after the DISCARD ALL), b's once.
    assert_eq!(pool.stats.ps_server_parses.load(Relaxed), 3);
}

/// max_prepared_statements = 0 turns the mapping off: names reach the server as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_mapping_off() {
    let _pg = pg();
    let extra = db_entry("psdb5", "appdb", "pool_size = 1");
    let mux = Mux::start(config("max_prepared_statements = 0", &extra)).await;
    let mut c = mux_login(&mux, "psdb5").await;
    let b = [parse("plain_name", "SELECT 1"), sync()].concat();
    assert_eq!(
        crate::support::raw::tags(&exchange(&mut c, &b, 1).await),
        "1Z"
    );
    assert_eq!(
        server_statements(&mut c).await,
        vec!["plain_name".to_string()]
    );
}

/// Large messages through the rewriting: a Bind carrying megabytes of parameters (renamed,
/// its parameters streamed through), and a Parse of a query text larger than the relay's
/// buffer (read whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bind_and_parse_through_named_statements() {
    let _pg = pg();
    let extra = db_entry("psdb6", "appdb", "pool_size = 2");
    let mux = Mux::start(config("", &extra)).await;
    let c = mux.connect_as("app", "app_pw", "psdb6").await;
    let stmt = c
        .prepare("SELECT length($1::text), md5($1::text)")
        .await
        .unwrap();
    for size in [1usize, 70_000, 3_000_000] {
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let row = c.query_one(&stmt, &[&text]).await.unwrap();
        let n: i32 = row.get(0);
        assert_eq!(n as usize, size);
        let want = c
            .query_one("SELECT md5($1::text)", &[&text])
            .await
            .unwrap()
            .get::<_, String>(0);
        assert_eq!(row.get::<_, String>(1), want);
    }
    // A 300 kB query text, prepared and run twice.
    let list: Vec<String> = (0..40_000).map(|i| i.to_string()).collect();
    let sql = format!("SELECT count(*) FROM (VALUES ({})) v(x)", list.join("),("));
    assert!(sql.len() > 200_000);
    let big = c.prepare(&sql).await.unwrap();
    for _ in 0..2 {
        let n: i64 = c.query_one(&big, &[]).await.unwrap().get(0);
        assert_eq!(n, 40_000);
    }
}

/// A client's named statements are bounded: a Parse past 10,000 fails like a duplicate name
/// does (54000 here), the session goes on, and a statement closed makes room (issue 13,
/// defect 8: the client's map of names grew without bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_statement_names_are_bounded() {
    let _pg = pg();
    let mux = Mux::start(config("", "")).await;
    let mut c = mux_login(&mux, "appdb").await;
    let mut b = Vec::new();
    for i in 0..10_000 {
        b.extend(parse(&format!("n{i}"), "SELECT 1"));
    }
    b.extend(sync());
    let msgs = exchange(&mut c, &b, 1).await;
    assert_eq!(msgs.len(), 10_001);
    assert!(msgs[..10_000].iter().all(|m| m.0 == b'1'));
    let over = exchange(&mut c, &[parse("one_more", "SELECT 2"), sync()].concat(), 1).await;
    assert_eq!(crate::support::raw::tags(&over), "EZ");
    let (code, message, _) = crate::support::raw::fields(&over[0].1);
    assert_eq!(code, "54000", "{message}");
    assert!(
        message.contains("too many prepared statements"),
        "{message}"
    );
    // The session is fine, and closing one makes room.
    let closed = exchange(&mut c, &[close_statement("n0"), sync()].concat(), 1).await;
    assert_eq!(crate::support::raw::tags(&closed), "3Z");
    let again = exchange(&mut c, &[parse("one_more", "SELECT 2"), sync()].concat(), 1).await;
    assert_eq!(crate::support::raw::tags(&again), "1Z");
    let run = [bind("", "one_more"), execute(""), sync()].concat();
    let msgs = exchange(&mut c, &run, 1).await;
    assert_eq!(crate::support::raw::tags(&msgs), "2DCZ");
    assert_eq!(crate::support::raw::data_row_first(&msgs[1].1), "2");
}
