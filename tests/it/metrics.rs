//! Integration tests: the metrics endpoint — every family of /metrics after real traffic and
//! how its counters move, saturation under load, /health, and /ready as Postgres stops and
//! starts and once a graceful shutdown begins. HTTP is spoken by hand (HTTP/1.1, one request
//! per connection).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::{code, rows, tp_config, tp_connect};
use crate::support::{config, custom_config, ConfigBuilder, Mux, PrivatePg};

/// The `[metrics]` section: the endpoint on a free port of 127.0.0.1.
const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The labels of app's pool for appdb.
const APPDB: [(&str, &str); 3] = [
    ("database", "appdb"),
    ("user", "app"),
    ("pool_mode", "transaction"),
];

// ---------------------------------------------------------------------------------------------
// HTTP by hand, and the Prometheus text format
// ---------------------------------------------------------------------------------------------

/// An HTTP response.
pub(crate) struct Response {
    pub(crate) status: u16,
    /// The header lines, lowercased.
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// `METHOD path` on the metrics endpoint; the whole response (read to EOF).
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str) -> Response {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect to /metrics");
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete answer within 10 s"));
    let text = String::from_utf8(buf).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in: {text:?}"));
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let mut parts = status_line.split(' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line: {status_line}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {status_line}"));
    Response {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn metrics_addr(mux: &Mux) -> SocketAddr {
    mux.running.metrics_addr.expect("[metrics] listen is set")
}

/// The text of GET /metrics at `addr`.
pub(crate) async fn scrape_addr(addr: SocketAddr) -> String {
    http(addr, "GET", "/metrics").await.body
}

/// GET /metrics: 200 and the Prometheus text.
async fn scrape(mux: &Mux) -> String {
    let r = http(metrics_addr(mux), "GET", "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "content type of /metrics: {}",
        r.headers
    );
    r.body
}

/// GET /ready: the status and the JSON body.
async fn ready(addr: SocketAddr) -> (u16, serde_json::Value) {
    let r = http(addr, "GET", "/ready").await;
    let v = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("/ready body is not JSON ({e}): {:?}", r.body));
    (r.status, v)
}

/// Poll /ready (up to 10 s: probes are cached for 1 s) until it answers `status`.
async fn ready_becomes(addr: SocketAddr, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = ready(addr).await;
        if s == status {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "/ready still answers {s} after 10 s, not {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sample line: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parse a sample line of the text format (`name{k="v",...} value [timestamp]`).
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = r.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => {
                        let (_, e) = chars.next()?;
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            r = &after[end + 1..];
        }
    }
    // Rust parses "+Inf", "-Inf" and "NaN" as the text format writes them.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The value of the first sample named `name` whose labels include all of `labels`.
fn find(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .find(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
}

/// [`find`], panicking (with the metrics text) when there is no such sample.
fn val(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} with labels {labels:?} in:\n{text}"))
}

/// [`val`] for app's pool for appdb, with more labels (a state).
fn pool_val(text: &str, name: &str, more: &[(&str, &str)]) -> f64 {
    let labels: Vec<_> = APPDB.iter().chain(more).copied().collect();
    val(text, name, &labels)
}

/// Assert `name` is declared with `# TYPE name kind`.
fn assert_type(text: &str, name: &str, kind: &str) {
    let line = format!("# TYPE {name} {kind}");
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
}

/// Scrape until `f` holds for the text (up to 5 s: a client sees its answer a moment before
/// pgmux has counted it and put the server back); returns that text.
async fn scrape_until(mux: &Mux, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(mux).await;
        if f(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_sample_parser() {
    let s = parse_sample(r#"a_b{x="1",y="q\"u\\o"} 2.5"#).unwrap();
    assert_eq!(s.0, "a_b");
    assert_eq!(
        s.1,
        vec![
            ("x".to_string(), "1".to_string()),
            ("y".to_string(), "q\"u\\o".to_string())
        ]
    );
    assert_eq!(s.2, 2.5);
    assert_eq!(parse_sample("up 1").unwrap().2, 1.0);
    assert_eq!(parse_sample(r#"h_bucket{le="+Inf"} 3"#).unwrap().2, 3.0);
    let text = "# TYPE m gauge\nm{a=\"1\",b=\"2\"} 7\nm{a=\"1\",b=\"3\"} 8\n";
    assert_eq!(find(text, "m", &[("b", "3")]), Some(8.0));
    assert_eq!(find(text, "m", &[("a", "1"), ("b", "2")]), Some(7.0));
    assert_eq!(find(text, "m", &[("a", "2")]), None);
    assert_eq!(find(text, "n", &[]), None);
}

// ---------------------------------------------------------------------------------------------
// 1. Every family, and counters that move
// ---------------------------------------------------------------------------------------------

/// The pool counters and how each must move over the traffic of the test: `true` = grows.
const POOL_COUNTERS: &[(&str, bool)] = &[
    ("pgmux_pool_transactions_total", true),
    ("pgmux_pool_queries_total", true),
    ("pgmux_pool_received_bytes_total", true),
    ("pgmux_pool_sent_bytes_total", true),
    ("pgmux_pool_server_assignments_total", true),
    ("pgmux_pool_query_wait_timeouts_total", false),
    ("pgmux_pool_reserve_servers_opened_total", false),
    ("pgmux_pool_server_connect_failures_total", false),
    ("pgmux_pool_servers_opened_total", false),
    ("pgmux_pool_servers_closed_total", false),
    ("pgmux_pool_prepared_hits_total", true),
    ("pgmux_pool_prepared_misses_total", true),
    ("pgmux_pool_prepared_evictions_total", false),
];

const HISTOGRAMS: &[&str] = &[
    "pgmux_client_wait_seconds",
    "pgmux_transaction_duration_seconds",
    "pgmux_query_duration_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_after_traffic() {
    let mux = Mux::start(config("", METRICS)).await;
    let c = mux.connect().await;
    rows(&c, "SELECT 1").await;

    let before = scrape_until(&mux, "the first query counted", |t| {
        find(t, "pgmux_pool_queries_total", &APPDB) >= Some(1.0)
            && find(t, "pgmux_pool_clients", &[("state", "idle")]) == Some(1.0)
    })
    .await;

    // The process.
    assert_eq!(val(&before, "pgmux_up", &[]), 1.0);
    assert_eq!(
        val(
            &before,
            "pgmux_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(val(&before, "pgmux_uptime_seconds", &[]) > 0.0);
    assert_eq!(val(&before, "pgmux_client_connections", &[]), 1.0);
    assert_eq!(val(&before, "pgmux_max_client_conn", &[]), 2000.0);
    assert!(find(&before, "pgmux_clients_parked", &[]).is_some());
    assert_eq!(val(&before, "pgmux_shutting_down", &[]), 0.0);
    let auth_failed = [("reason", "auth_failed")];
    assert_eq!(
        val(&before, "pgmux_client_login_failures_total", &auth_failed),
        0.0
    );

    // A wrong password: one login failure, reason auth_failed.
    let Err(e) = tp_connect(&tp_config(mux.port(), "app", "wrong_pw", "appdb")).await else {
        panic!("a wrong password is accepted");
    };
    assert_eq!(code(&e).as_deref(), Some("28P01"), "{e}");

    // Ten simple queries, and a prepared statement used twice.
    for i in 0..10 {
        rows(&c, &format!("SELECT {i}")).await;
    }
    let st = c.prepare("SELECT $1::int4 + 1").await.unwrap();
    for i in 0..2i32 {
        let row = c.query_one(&st, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    let after = scrape_until(&mux, "the traffic counted, the server back", |t| {
        let grew = |name: &str, by: f64| {
            find(t, name, &APPDB).unwrap_or(0.0) >= val(&before, name, &APPDB) + by
        };
        grew("pgmux_pool_transactions_total", 12.0)
            && grew("pgmux_pool_queries_total", 12.0)
            && find(t, "pgmux_pool_clients", &[("state", "idle")]) == Some(1.0)
            && find(t, "pgmux_pool_servers", &[("state", "active")]) == Some(0.0)
            && find(t, "pgmux_client_login_failures_total", &auth_failed) == Some(1.0)
    })
    .await;

    // The process again: the failed login is gone, the one client is left.
    assert_eq!(val(&after, "pgmux_client_connections", &[]), 1.0);
    for name in [
        "pgmux_up",
        "pgmux_uptime_seconds",
        "pgmux_client_connections",
        "pgmux_max_client_conn",
        "pgmux_shutting_down",
    ] {
        assert_type(&after, name, "gauge");
    }
    assert_type(&after, "pgmux_build_info", "gauge");
    assert_type(&after, "pgmux_client_login_failures_total", "counter");
    assert!(val(&after, "pgmux_uptime_seconds", &[]) >= val(&before, "pgmux_uptime_seconds", &[]));
    for other in ["unknown_database", "max_client_conn", "protocol"] {
        assert_eq!(
            val(
                &after,
                "pgmux_client_login_failures_total",
                &[("reason", other)]
            ),
            0.0,
            "reason {other}"
        );
    }

    // Clients and servers by state.
    assert_type(&after, "pgmux_pool_clients", "gauge");
    assert_type(&after, "pgmux_pool_servers", "gauge");
    for (state, n) in [("active", 0.0), ("waiting", 0.0), ("idle", 1.0)] {
        assert_eq!(
            pool_val(&after, "pgmux_pool_clients", &[("state", state)]),
            n,
            "clients {state}"
        );
    }
    for state in ["active", "idle", "used", "tested", "login"] {
        pool_val(&after, "pgmux_pool_servers", &[("state", state)]);
    }
    let idle_servers = pool_val(&after, "pgmux_pool_servers", &[("state", "idle")]);
    assert!(
        (1.0..=5.0).contains(&idle_servers),
        "idle servers: {idle_servers}"
    );
    assert_eq!(
        pool_val(&after, "pgmux_pool_servers", &[("state", "login")]),
        0.0
    );

    // Limits and saturation.
    for name in [
        "pgmux_pool_size",
        "pgmux_pool_reserve_size",
        "pgmux_pool_limit",
        "pgmux_pool_paused",
        "pgmux_pool_saturation",
        "pgmux_pool_max_wait_seconds",
    ] {
        assert_type(&after, name, "gauge");
    }
    assert_eq!(pool_val(&after, "pgmux_pool_size", &[]), 5.0);
    assert_eq!(pool_val(&after, "pgmux_pool_reserve_size", &[]), 0.0);
    assert_eq!(pool_val(&after, "pgmux_pool_limit", &[]), 5.0);
    assert_eq!(pool_val(&after, "pgmux_pool_paused", &[]), 0.0);
    assert_eq!(pool_val(&after, "pgmux_pool_saturation", &[]), 0.0);
    assert_eq!(pool_val(&after, "pgmux_pool_max_wait_seconds", &[]), 0.0);

    // Counters: each present, none going back, the busy ones growing.
    for &(name, grows) in POOL_COUNTERS {
        assert_type(&after, name, "counter");
        let (b, a) = (pool_val(&before, name, &[]), pool_val(&after, name, &[]));
        assert!(a >= b, "{name} went back: {b} -> {a}");
        if grows {
            assert!(a > b, "{name} did not grow: {b} -> {a}");
        }
    }
    let grew = |name: &str| pool_val(&after, name, &[]) - pool_val(&before, name, &[]);
    assert!(grew("pgmux_pool_transactions_total") >= 10.0);
    assert!(grew("pgmux_pool_queries_total") >= 10.0);
    assert!(grew("pgmux_pool_server_assignments_total") >= 10.0);
    // Ten Query messages of 14 bytes ("SELECT i"), each answered by a RowDescription, a
    // DataRow, a CommandComplete and a ReadyForQuery (over 40 bytes).
    assert!(grew("pgmux_pool_received_bytes_total") >= 140.0);
    assert!(grew("pgmux_pool_sent_bytes_total") >= 400.0);
    assert!(pool_val(&after, "pgmux_pool_servers_opened_total", &[]) >= 1.0);
    for name in [
        "pgmux_pool_query_wait_timeouts_total",
        "pgmux_pool_reserve_servers_opened_total",
        "pgmux_pool_server_connect_failures_total",
        "pgmux_pool_prepared_evictions_total",
    ] {
        assert_eq!(pool_val(&after, name, &[]), 0.0, "{name}");
    }
    // The statement was prepared on a server once (a miss) and found there by a later Bind
    // (a hit: one client, one request at a time, so the same idle server comes back).
    assert!(grew("pgmux_pool_prepared_misses_total") >= 1.0);
    assert!(grew("pgmux_pool_prepared_hits_total") >= 1.0);

    // Histograms: buckets, sum and count, labelled with the pool.
    for &h in HISTOGRAMS {
        assert_type(&after, h, "histogram");
        let count = pool_val(&after, &format!("{h}_count"), &[]);
        let inf = pool_val(&after, &format!("{h}_bucket"), &[("le", "+Inf")]);
        let sum = pool_val(&after, &format!("{h}_sum"), &[]);
        assert_eq!(count, inf, "{h}: _count and the +Inf bucket");
        assert!(count >= 10.0, "{h}_count: {count}");
        assert!(sum >= 0.0, "{h}_sum: {sum}");
        // Cumulative buckets.
        let buckets: Vec<f64> = after
            .lines()
            .filter_map(parse_sample)
            .filter(|(n, ls, _)| {
                *n == format!("{h}_bucket")
                    && APPDB
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .collect();
        assert!(buckets.len() > 5, "{h}: buckets {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "{h}: buckets not cumulative {buckets:?}"
        );
    }
    assert!(pool_val(&after, "pgmux_query_duration_seconds_count", &[]) >= 13.0);
    assert!(pool_val(&after, "pgmux_query_duration_seconds_sum", &[]) > 0.0);
    assert!(pool_val(&after, "pgmux_transaction_duration_seconds_sum", &[]) > 0.0);
}

// ---------------------------------------------------------------------------------------------
// 2. Saturation under load
// ---------------------------------------------------------------------------------------------

/// The load's clients, and how long each one's query sleeps. Five servers serve fifty clients
/// in ten rounds of SLEEP seconds; both scrapes fall in the first two rounds, while at least
/// forty clients wait.
const LOAD_CLIENTS: usize = 50;
const SLEEP: &str = "0.8";

/// The pool's state in one scrape: (clients waiting, clients active, servers active,
/// saturation, oldest wait).
fn load_state(t: &str) -> (f64, f64, f64, f64, f64) {
    (
        pool_val(t, "pgmux_pool_clients", &[("state", "waiting")]),
        pool_val(t, "pgmux_pool_clients", &[("state", "active")]),
        pool_val(t, "pgmux_pool_servers", &[("state", "active")]),
        pool_val(t, "pgmux_pool_saturation", &[]),
        pool_val(t, "pgmux_pool_max_wait_seconds", &[]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturation_under_load() {
    // Pool size 5, transaction mode (the default), query_wait_timeout 120 s (the default);
    // clients log in by trust, so that fifty logins are quick (servers still use SCRAM).
    let mux = Mux::start(custom_config(
        "auth_type = \"trust\"\nmax_client_conn = 2000\ndefault_pool_size = 5",
        METRICS,
    ))
    .await;
    let clients = futures_util::future::join_all((0..LOAD_CLIENTS).map(|_| mux.connect())).await;
    let before = scrape(&mux).await;
    assert_eq!(
        pool_val(&before, "pgmux_pool_clients", &[("state", "waiting")]),
        0.0
    );
    let wait_count_before = pool_val(&before, "pgmux_client_wait_seconds_count", &[]);

    let started = Instant::now();
    let load: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let r = c.simple_query(&format!("SELECT pg_sleep({SLEEP})")).await;
                r.map(|_| c)
            })
        })
        .collect();

    let first = scrape_until(&mux, "forty clients waiting", |t| {
        find(t, "pgmux_pool_clients", &[("state", "waiting")]) >= Some(40.0)
            && find(t, "pgmux_pool_servers", &[("state", "active")]) == Some(5.0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = scrape(&mux).await;
    let elapsed = started.elapsed();

    let a = load_state(&first);
    let b = load_state(&second);
    for (which, (waiting, active, servers_active, saturation, max_wait)) in
        [("first", a), ("second", b)]
    {
        let s = format!(
            "{which} scrape: (waiting, active, servers active, saturation, max wait) \
             {a:?} then {b:?}, {elapsed:?} after the load began"
        );
        assert!(waiting >= 40.0, "{s}");
        assert_eq!(active, 5.0, "{s}");
        assert_eq!(servers_active, 5.0, "{s}");
        assert_eq!(saturation, 1.0, "{s}");
        assert!(max_wait > 0.0, "{s}");
    }
    assert!(
        b.4 > a.4,
        "the oldest wait did not grow between the scrapes: {} then {}",
        a.4,
        b.4
    );
    assert!(
        b.4 - a.4 >= 0.3,
        "the oldest wait grew by less than the time between the scrapes: {} then {}",
        a.4,
        b.4
    );
    assert_eq!(pool_val(&second, "pgmux_pool_limit", &[]), 5.0);

    let mut clients = Vec::new();
    for h in load {
        let c = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("the load ends")
            .unwrap()
            .expect("every query succeeds");
        // Kept connected: they are the pool's idle clients now.
        clients.push(c);
    }
    let done = scrape_until(&mux, "no client waiting or active", |t| {
        find(t, "pgmux_pool_clients", &[("state", "waiting")]) == Some(0.0)
            && find(t, "pgmux_pool_clients", &[("state", "active")]) == Some(0.0)
    })
    .await;
    assert_eq!(
        pool_val(&done, "pgmux_pool_clients", &[("state", "idle")]),
        LOAD_CLIENTS as f64
    );
    assert_eq!(
        val(&done, "pgmux_client_connections", &[]),
        LOAD_CLIENTS as f64
    );
    assert_eq!(pool_val(&done, "pgmux_pool_max_wait_seconds", &[]), 0.0);
    assert_eq!(pool_val(&done, "pgmux_pool_saturation", &[]), 0.0);
    assert_eq!(
        pool_val(&done, "pgmux_pool_query_wait_timeouts_total", &[]),
        0.0
    );
    let waits = pool_val(&done, "pgmux_client_wait_seconds_count", &[]) - wait_count_before;
    assert!(
        waits >= LOAD_CLIENTS as f64,
        "waits recorded during the load: {waits}"
    );
    // The last round waited nine rounds of SLEEP seconds (and the 0.5 s bucket is exceeded).
    let slow = waits
        - (pool_val(&done, "pgmux_client_wait_seconds_bucket", &[("le", "0.5")])
            - pool_val(
                &before,
                "pgmux_client_wait_seconds_bucket",
                &[("le", "0.5")],
            ));
    assert!(
        slow >= 40.0,
        "clients that waited over 0.5 s: {slow} of {waits}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. /health, unknown paths, other methods
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_not_found_and_method_not_allowed() {
    let mux = Mux::start(config("", METRICS)).await;
    let addr = metrics_addr(&mux);

    let r = http(addr, "GET", "/health").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers.contains("content-type: application/json"),
        "{}",
        r.headers
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"status": "ok"}));

    for path in ["/nope", "/", "/metricsx"] {
        let r = http(addr, "GET", path).await;
        assert_eq!(r.status, 404, "GET {path}: {}", r.body);
    }
    for path in ["/metrics", "/health", "/ready"] {
        let r = http(addr, "POST", path).await;
        assert_eq!(r.status, 405, "POST {path}: {}", r.body);
    }
    // The endpoint still serves after all that.
    scrape(&mux).await;
}

// ---------------------------------------------------------------------------------------------
// 4. /ready: Postgres down and back, and a graceful shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_postgres() {
    let private = tokio::task::spawn_blocking(|| PrivatePg::start("metrics-ready"))
        .await
        .unwrap();
    let mux = Mux::start(
        ConfigBuilder::new()
            .general("auth_type = \"trust\"")
            .database("privdb", private.port, "dbname = \"postgres\"")
            .user("postgres", None)
            .sections(METRICS)
            .build(),
    )
    .await;
    let addr = metrics_addr(&mux);

    let (status, v) = ready(addr).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");

    let private = tokio::task::spawn_blocking(move || {
        private.stop();
        private
    })
    .await
    .unwrap();
    let v = ready_becomes(addr, 503).await;
    assert_eq!(v["status"], "not ready", "{v}");
    let problems = v["problems"].as_array().expect("a list of problems");
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["name"], "database privdb", "{v}");
    let why = problems[0]["problem"].as_str().unwrap();
    assert!(why.contains("cannot connect"), "{v}");
    assert!(why.contains(&private.port.to_string()), "{v}");
    // Liveness does not depend on Postgres.
    assert_eq!(http(addr, "GET", "/health").await.status, 200);

    // `pg_ctl restart` starts a stopped server.
    let private = tokio::task::spawn_blocking(move || {
        private.restart();
        private
    })
    .await
    .unwrap();
    let v = ready_becomes(addr, 200).await;
    assert_eq!(v["status"], "ready", "{v}");
    drop(private);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_once_shutdown_begins() {
    let mux = Mux::start(config("", METRICS)).await;
    let addr = metrics_addr(&mux);
    let (status, v) = ready(addr).await;
    assert_eq!(status, 200, "{v}");

    mux.running.shared.run.begin_shutdown();
    let (status, v) = ready(addr).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "not ready", "{v}");
    assert_eq!(
        v["problems"],
        serde_json::json!([{"name": "pgmux", "problem": "shutting down"}]),
        "{v}"
    );
    let r = http(addr, "GET", "/health").await;
    assert_eq!((r.status, r.body.trim()), (200, "{\"status\":\"ok\"}"));
    assert_eq!(val(&scrape(&mux).await, "pgmux_shutting_down", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_clients_are_counted() {
    let mux = Mux::start(config("client_park_delay = 0.2", METRICS)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(mux.connect().await);
    }
    scrape_until(&mux, "3 clients parked", |t| {
        find(t, "pgmux_clients_parked", &[]) == Some(3.0)
    })
    .await;
    rows(&clients[0], "SELECT pg_sleep(0.5)").await;
    let _ = scrape_until(&mux, "3 clients parked again", |t| {
        find(t, "pgmux_clients_parked", &[]) == Some(3.0)
    })
    .await;
}

/// The pgbouncer_exporter's series (v0.12: 44 names, its build info and the unbounded
/// pgbouncer_client_connections left out) with its exact label sets, plus the pre-0.11
/// `pgbouncer_stats_*` family the pgbouncer mixin's dashboards query.
const EXPORTER_SERIES: &[(&str, &str, &[&str])] = &[
    ("pgbouncer_up", "gauge", &[]),
    ("pgbouncer_version_info", "gauge", &["version"]),
    ("pgbouncer_config_max_client_connections", "gauge", &[]),
    ("pgbouncer_config_max_user_connections", "gauge", &[]),
    ("pgbouncer_databases", "gauge", &[]),
    ("pgbouncer_users", "gauge", &[]),
    ("pgbouncer_pools", "gauge", &[]),
    ("pgbouncer_free_clients", "gauge", &[]),
    ("pgbouncer_used_clients", "gauge", &[]),
    ("pgbouncer_login_clients", "gauge", &[]),
    ("pgbouncer_free_servers", "gauge", &[]),
    ("pgbouncer_used_servers", "gauge", &[]),
    ("pgbouncer_cached_dns_names", "gauge", &[]),
    ("pgbouncer_cached_dns_zones", "gauge", &[]),
    ("pgbouncer_in_flight_dns_queries", "gauge", &[]),
    ("pgbouncer_databases_pool_size", "gauge", DB_LABELS),
    ("pgbouncer_databases_reserve_pool", "gauge", DB_LABELS),
    ("pgbouncer_databases_max_connections", "gauge", DB_LABELS),
    (
        "pgbouncer_databases_current_connections",
        "gauge",
        DB_LABELS,
    ),
    ("pgbouncer_databases_paused", "gauge", DB_LABELS),
    ("pgbouncer_databases_disabled", "gauge", DB_LABELS),
    (
        "pgbouncer_pools_client_active_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_active_cancel_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_waiting_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_waiting_cancel_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_active_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_active_cancel_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_being_canceled_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_idle_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_used_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_testing_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_login_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_maxwait_seconds",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_stats_totals_queries_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_queries_duration_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_received_bytes_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_sent_bytes_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_client_wait_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_sql_transactions_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_server_in_transaction_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_client_parses_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_server_parses_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_binds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_totals_server_assignments_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_queries_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_queries_duration_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_received_bytes_total",
        "counter",
        &["database"],
    ),
    ("pgbouncer_stats_sent_bytes_total", "counter", &["database"]),
    (
        "pgbouncer_stats_client_wait_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_sql_transactions_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_server_in_transaction_seconds_total",
        "counter",
        &["database"],
    ),
];
const DB_LABELS: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_mode",
];
const POOL_LABELS: &[&str] = &["database", "user"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_names_serve_the_exporters_series() {
    let metrics = format!("{METRICS}pgbouncer_names = true\n");
    let mux = Mux::start(config("", &metrics)).await;
    let c = mux.connect().await;
    rows(&c, "SELECT 1").await;
    let text = scrape_until(&mux, "the query counted", |t| {
        find(
            t,
            "pgbouncer_stats_totals_queries_pooled_total",
            &[("database", "appdb")],
        ) >= Some(1.0)
    })
    .await;
    let samples: Vec<Sample> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect();
    for (name, kind, labels) in EXPORTER_SERIES {
        assert_type(&text, name, kind);
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.0 == *name).collect();
        assert!(!mine.is_empty(), "no {name} sample");
        for (_, ls, _) in mine {
            let mut keys: Vec<&str> = ls.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort();
            let mut want = labels.to_vec();
            want.sort();
            assert_eq!(keys, want, "{name}'s labels");
        }
    }
    // Nothing else under the prefix: a name the exporter does not make would be a guess.
    for (n, _, _) in &samples {
        if n.starts_with("pgbouncer_") {
            assert!(
                EXPORTER_SERIES.iter().any(|(e, _, _)| e == n),
                "{n} is not the exporter's"
            );
        }
    }
    // Values read from the console's tables, in the exporter's units.
    assert_eq!(val(&text, "pgbouncer_up", &[]), 1.0);
    assert!(find(
        &text,
        "pgbouncer_version_info",
        &[(
            "version",
            &format!("PgBouncer 1.26.1 (pgmux {})", env!("CARGO_PKG_VERSION"))
        )]
    )
    .is_some());
    let appdb = [("database", "appdb"), ("user", "app")];
    assert_eq!(
        val(&text, "pgbouncer_pools_client_active_connections", &appdb),
        1.0
    );
    assert_eq!(
        val(
            &text,
            "pgbouncer_databases_current_connections",
            &[("name", "appdb"), ("force_user", "")]
        ),
        1.0
    );
    assert!(
        val(
            &text,
            "pgbouncer_stats_queries_pooled_total",
            &[("database", "appdb")]
        ) >= 1.0
    );
    let xact_s = val(
        &text,
        "pgbouncer_stats_totals_server_in_transaction_seconds_total",
        &[("database", "appdb")],
    );
    assert!(xact_s > 0.0 && xact_s < 10.0, "seconds, not µs: {xact_s}");
    // The console's own rows are there, as the exporter sees PgBouncer's.
    assert!(find(
        &text,
        "pgbouncer_pools_client_active_connections",
        &[("database", "pgbouncer")]
    )
    .is_some());

    // Off by default.
    let plain = Mux::start(config("", METRICS)).await;
    assert!(!scrape(&plain).await.contains("pgbouncer_"));
}

/// A client pinned by a session advisory lock and a temporary table is counted under both
/// reasons, and not once it unlocks and drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_clients_are_counted_by_reason() {
    let mux = Mux::start(config("", METRICS)).await;
    let c = mux.connect().await;
    let pinned = |reason: &'static str, n: f64| {
        move |t: &str| pool_val(t, "pgmux_pool_clients_pinned", &[("reason", reason)]) == n
    };
    let t = scrape(&mux).await;
    assert_type(&t, "pgmux_pool_clients_pinned", "gauge");
    assert!(pinned("session advisory lock", 0.0)(&t), "{t}");
    rows(
        &c,
        "SELECT pg_advisory_lock(77); CREATE TEMP TABLE pinned_m (x int)",
    )
    .await;
    scrape_until(
        &mux,
        "one client pinned by a lock",
        pinned("session advisory lock", 1.0),
    )
    .await;
    scrape_until(
        &mux,
        "one client pinned by a temp table",
        pinned("temporary table", 1.0),
    )
    .await;
    rows(&c, "SELECT pg_advisory_unlock(77); DROP TABLE pinned_m").await;
    scrape_until(
        &mux,
        "nobody pinned by a lock",
        pinned("session advisory lock", 0.0),
    )
    .await;
    scrape_until(
        &mux,
        "nobody pinned by a temp table",
        pinned("temporary table", 0.0),
    )
    .await;
}
