//! Integration tests: the admin console (the virtual database `pgmux`, alias `pgbouncer`) —
//! its SHOW columns against Debian's PgBouncer, who may use it, and every command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgmux::config::Config;
use pgmux::shared::Request;
use tokio::net::TcpStream;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::client::{
    code, conn_end, connect_ok, one, rows, tp_config, tp_connect, tp_connect_ok, ConnHandle, WAIT,
};
use crate::support::raw::{self, error_of, read_to_close, read_until_ready};
use crate::support::{config, database_section, db_entry, free_port, pg, Mux};

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// The harness config plus `general` and `extra`, with users `admin` (in admin_users) and
/// `stats` (in stats_users); app, other and md5user are in neither.
fn admin_config(general: &str, extra: &str) -> Config {
    config(
        &format!("admin_users = [\"admin\"]\nstats_users = [\"stats\"]\n{general}"),
        &format!(
            "[users.admin]\npassword = \"admin_pw\"\n[users.stats]\npassword = \"stats_pw\"\n{extra}"
        ),
    )
}

/// A console client as `admin` on database `pgmux`.
async fn console(mux: &Mux) -> Client {
    connect_ok(mux.port(), "admin", "admin_pw", "pgmux").await.0
}

/// One result row of the console, by column name (NULL is `None`).
type Row = BTreeMap<String, Option<String>>;

/// The value of `col` in `row` ("" for NULL); panics if there is no such column.
fn val<'a>(row: &'a Row, col: &str) -> &'a str {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .as_deref()
        .unwrap_or("")
}

/// Run a console query (with a time limit); its rows by column name.
async fn table(c: &Client, sql: &str) -> Vec<Row> {
    let msgs = tokio::time::timeout(WAIT, c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("console query timed out: {sql}"))
        .unwrap_or_else(|e| panic!("console query failed: {sql}: {e} ({:?})", e.as_db_error()));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Rows of `sql` whose `col` is `value`.
async fn rows_where(c: &Client, sql: &str, col: &str, value: &str) -> Vec<Row> {
    let mut t = table(c, sql).await;
    t.retain(|r| val(r, col) == value);
    t
}

/// The one row of `sql` whose `col` is `value`.
async fn row_where(c: &Client, sql: &str, col: &str, value: &str) -> Row {
    let mut t = rows_where(c, sql, col, value).await;
    assert_eq!(
        t.len(),
        1,
        "{sql}: expected one row with {col} = {value}: {t:?}"
    );
    t.pop().unwrap()
}

/// The pool row of SHOW POOLS for (database, app).
async fn pool_row(c: &Client, db: &str) -> Row {
    let mut t = rows_where(c, "SHOW POOLS", "database", db).await;
    t.retain(|r| val(r, "user") == "app");
    assert_eq!(t.len(), 1, "SHOW POOLS: one row for {db}/app: {t:?}");
    t.pop().unwrap()
}

/// The value of a `[general]` key in SHOW CONFIG.
async fn config_value(c: &Client, key: &str) -> String {
    val(&row_where(c, "SHOW CONFIG", "key", key).await, "value").to_string()
}

/// Repeat `sql` until `f` accepts its rows (up to 5 s); the rows.
async fn poll(c: &Client, sql: &str, what: &str, f: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = table(c, sql).await;
        if f(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run a console query that must fail; its SQLSTATE and message.
async fn console_err(c: &Client, sql: &str) -> (String, String) {
    let r = tokio::time::timeout(WAIT, c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("console query timed out: {sql}"));
    let e = match r {
        Ok(_) => panic!("{sql} should fail"),
        Err(e) => e,
    };
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: expected an ErrorResponse, got: {e}"));
    (d.code().code().to_string(), d.message().to_string())
}

/// The SQLSTATE of a login that must fail.
async fn login_error(port: u16, user: &str, pw: &str, db: &str) -> String {
    match tp_connect(&tp_config(port, user, pw, db)).await {
        Ok(_) => panic!("login as {user} to {db} should fail"),
        Err(e) => code(&e).unwrap_or_else(|| panic!("login as {user} to {db}: no SQLSTATE: {e}")),
    }
}

/// Run `sql` on `c` in a task: the caller checks it does not finish, then gets it back.
fn spawn_query(c: Client, sql: &'static str) -> tokio::task::JoinHandle<(Client, String)> {
    tokio::spawn(async move {
        let r = one(&c, sql).await;
        (c, r)
    })
}

/// Wait until the client's query has reached pgmux and waits for a server (cl_waiting 1), then
/// check for a while that it does not finish.
async fn stays_waiting<T>(console: &Client, db: &str, task: &tokio::task::JoinHandle<T>) {
    poll(console, "SHOW POOLS", "a waiting client", |t| {
        t.iter()
            .any(|r| val(r, "database") == db && val(r, "cl_waiting") == "1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished(), "the query ran while {db} was held");
}

/// A task's result within 5 s.
async fn finishes<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
        .unwrap()
}

/// A connection that must end with SQLSTATE 57P01 (the admin console killed it).
async fn killed(h: ConnHandle, c: &Client, what: &str) {
    let end = conn_end(h, &format!("{what}: the connection did not end")).await;
    let e = end.expect_err("the connection ends with an error");
    assert_eq!(code(&e).as_deref(), Some("57P01"), "{what}: {e}");
    assert!(
        c.simple_query("SELECT 1").await.is_err(),
        "{what}: still usable"
    );
}

// ---------------------------------------------------------------------------------------------
// The protocol by hand: column names and type OIDs.
// ---------------------------------------------------------------------------------------------

/// Log in to `port` as `user` (trust, cleartext or SCRAM) and read up to ReadyForQuery.
async fn raw_login(port: u16, user: &str, password: &str, db: &str) -> TcpStream {
    let (mut s, m) = raw::auth_request(port, &[("user", user), ("database", db)]).await;
    if m.0 == b'E' {
        panic!("login as {user} to {db} on {port}: {:?}", raw::fields(&m.1));
    }
    match raw::auth_code(&m) {
        0 => {
            read_until_ready(&mut s).await;
        }
        3 => {
            raw::send(&mut s, &raw::msg(b'p', &raw::cstr(password))).await;
            let msgs = read_until_ready(&mut s).await;
            assert_eq!(raw::auth_code(&msgs[0]), 0);
        }
        10 => {
            raw::scram(&mut s, password).await;
        }
        c => panic!("login as {user} on {port}: unexpected authentication request {c}"),
    }
    s
}

/// A RowDescription's columns: (name, type OID).
fn row_description(body: &[u8]) -> Vec<(String, u32)> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let end = at
            + body[at..]
                .iter()
                .position(|&b| b == 0)
                .expect("column name");
        let name = String::from_utf8_lossy(&body[at..end]).into_owned();
        at = end + 1 + 4 + 2; // table OID, attribute number
        let oid = u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4 + 2 + 4 + 2; // type OID, type length, type modifier, format
        cols.push((name, oid));
    }
    assert_eq!(at, body.len(), "RowDescription fully read");
    cols
}

/// The columns of a query's RowDescription, or its error (SQLSTATE, message).
async fn columns(s: &mut TcpStream, sql: &str) -> Result<Vec<(String, u32)>, (String, String)> {
    raw::send(s, &raw::query(sql)).await;
    let msgs = raw::read_through_ready(s).await;
    if let Some((code, msg, _)) = error_of(&msgs) {
        return Err((code, msg));
    }
    let t = msgs
        .iter()
        .find(|m| m.0 == b'T')
        .unwrap_or_else(|| panic!("{sql}: no RowDescription in {}", raw::tags(&msgs)));
    Ok(row_description(&t.1))
}

// ---------------------------------------------------------------------------------------------
// Debian's PgBouncer, for the comparison.
// ---------------------------------------------------------------------------------------------

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// PgBouncer running as a daemon on a free port, in front of the shared cluster, with trust
/// authentication and admin user `admin`. Stopped on drop (and by a watchdog if this test
/// process dies first).
struct PgBouncer {
    port: u16,
    dir: PathBuf,
}

impl PgBouncer {
    fn pidfile(&self) -> PathBuf {
        self.dir.join("pgbouncer.pid")
    }

    // The watchdog outlives this function on purpose.
    #[allow(clippy::zombie_processes)]
    fn start() -> PgBouncer {
        assert!(
            Path::new(PGBOUNCER).exists(),
            "PgBouncer is not installed ({PGBOUNCER} is missing): the SHOW column comparison \
             needs Debian's pgbouncer package: `apt-get install -y pgbouncer` \
             (scripts/test.sh installs it)"
        );
        let dir = std::env::temp_dir().join(format!("pgmux-it-{}-pgbouncer", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pgb = PgBouncer {
            port: free_port(),
            dir,
        };
        let d = pgb.dir.display();
        std::fs::write(
            pgb.dir.join("pgbouncer.ini"),
            format!(
                "[databases]\nappdb = host=127.0.0.1 port={pg_port} dbname=appdb\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {d}/userlist.txt\n\
                 admin_users = admin\nstats_users = stats\nlogfile = {d}/pgbouncer.log\n\
                 pidfile = {d}/pgbouncer.pid\n",
                pg_port = pg().port,
                port = pgb.port,
            ),
        )
        .unwrap();
        std::fs::write(
            pgb.dir.join("userlist.txt"),
            "\"admin\" \"admin_pw\"\n\"stats\" \"stats_pw\"\n",
        )
        .unwrap();
        if crate::support::cluster::is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres", &pgb.dir.display().to_string()])
                .status()
                .unwrap();
            assert!(st.success(), "chown {d}");
        }
        let out = crate::support::cluster::as_pg(&format!("{PGBOUNCER} -d {d}/pgbouncer.ini"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbouncer did not start: {}{}; see {d}/pgbouncer.log",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The daemon writes its pid file after the command returns.
        let pidfile = pgb.pidfile();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer wrote no pid file; see {d}/pgbouncer.log"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Stop it if this process dies before the guard drops (PgBouncer removes its pid
        // file when it exits).
        let me = std::process::id();
        Command::new("sh")
            .args([
                "-c",
                &format!(
                    "while [ -d /proc/{me} ] && [ -f {p} ]; do sleep 0.5; done; \
                     [ -f {p} ] && kill $(cat {p}); rm -rf {d}",
                    p = pidfile.display()
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", pgb.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer does not listen on {}; see {d}/pgbouncer.log",
                pgb.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pgb
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let pidfile = self.pidfile();
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid = pid.trim().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. SHOW columns: every PgBouncer column, with its name and type.
// ---------------------------------------------------------------------------------------------

/// SHOW commands every console user may run (PgBouncer 1.18 has them too).
const SHOW_BOTH: &[&str] = &[
    "POOLS",
    "STATS",
    "STATS_TOTALS",
    "STATS_AVERAGES",
    "TOTALS",
    "CLIENTS",
    "SERVERS",
    "SOCKETS",
    "ACTIVE_SOCKETS",
    "DATABASES",
    "USERS",
    "CONFIG",
    "LISTS",
    "VERSION",
    "MEM",
    "DNS_HOSTS",
    "DNS_ZONES",
];

/// PgBouncer 1.26.1's SHOW columns (name, type OID), read off the wire from Debian's
/// pgbouncer_1.26.1-1 (sid) with psycopg2's cursor.description: pgmux claims that version in
/// SHOW VERSION and must answer with exactly these.
#[rustfmt::skip]
const PGBOUNCER_1_26_1: &[(&str, &[(&str, u32)])] = &[
    ("POOLS", &[("database", 25), ("user", 25), ("cl_active", 23), ("cl_waiting", 23), ("cl_active_cancel_req", 23), ("cl_waiting_cancel_req", 23), ("sv_active", 23), ("sv_active_cancel", 23), ("sv_being_canceled", 23), ("sv_idle", 23), ("sv_used", 23), ("sv_tested", 23), ("sv_login", 23), ("maxwait", 23), ("maxwait_us", 23), ("pool_mode", 25), ("load_balance_hosts", 25)]),
    ("STATS", &[("database", 25), ("total_server_assignment_count", 1700), ("total_xact_count", 1700), ("total_query_count", 1700), ("total_received", 1700), ("total_sent", 1700), ("total_xact_time", 1700), ("total_query_time", 1700), ("total_wait_time", 1700), ("total_client_parse_count", 1700), ("total_server_parse_count", 1700), ("total_bind_count", 1700), ("total_client_login_count", 1700), ("avg_server_assignment_count", 1700), ("avg_xact_count", 1700), ("avg_query_count", 1700), ("avg_recv", 1700), ("avg_sent", 1700), ("avg_xact_time", 1700), ("avg_query_time", 1700), ("avg_wait_time", 1700), ("avg_client_parse_count", 1700), ("avg_server_parse_count", 1700), ("avg_bind_count", 1700), ("avg_client_login_count", 1700)]),
    ("STATS_TOTALS", &[("database", 25), ("server_assignment_count", 1700), ("xact_count", 1700), ("query_count", 1700), ("bytes_received", 1700), ("bytes_sent", 1700), ("xact_time", 1700), ("query_time", 1700), ("wait_time", 1700), ("client_parse_count", 1700), ("server_parse_count", 1700), ("bind_count", 1700), ("client_login_count", 1700)]),
    ("STATS_AVERAGES", &[("database", 25), ("server_assignment_count", 1700), ("xact_count", 1700), ("query_count", 1700), ("bytes_received", 1700), ("bytes_sent", 1700), ("xact_time", 1700), ("query_time", 1700), ("wait_time", 1700), ("avg_client_parse_count", 1700), ("avg_server_parse_count", 1700), ("avg_bind_count", 1700), ("avg_client_login_count", 1700)]),
    ("TOTALS", &[("name", 25), ("value", 1700)]),
    ("CLIENTS", &[("type", 25), ("user", 25), ("database", 25), ("replication", 25), ("state", 25), ("addr", 25), ("port", 23), ("local_addr", 25), ("local_port", 23), ("connect_time", 25), ("request_time", 25), ("wait", 23), ("wait_us", 23), ("close_needed", 23), ("ptr", 25), ("link", 25), ("remote_pid", 23), ("tls", 25), ("application_name", 25), ("prepared_statements", 23), ("id", 23)]),
    ("SERVERS", &[("type", 25), ("user", 25), ("database", 25), ("replication", 25), ("state", 25), ("addr", 25), ("port", 23), ("local_addr", 25), ("local_port", 23), ("connect_time", 25), ("request_time", 25), ("wait", 23), ("wait_us", 23), ("close_needed", 23), ("ptr", 25), ("link", 25), ("remote_pid", 23), ("tls", 25), ("application_name", 25), ("prepared_statements", 23), ("id", 23)]),
    ("SOCKETS", &[("type", 25), ("user", 25), ("database", 25), ("replication", 25), ("state", 25), ("addr", 25), ("port", 23), ("local_addr", 25), ("local_port", 23), ("connect_time", 25), ("request_time", 25), ("wait", 23), ("wait_us", 23), ("close_needed", 23), ("ptr", 25), ("link", 25), ("remote_pid", 23), ("tls", 25), ("application_name", 25), ("prepared_statements", 23), ("id", 23), ("recv_pos", 23), ("pkt_pos", 23), ("pkt_remain", 23), ("send_pos", 23), ("send_remain", 23), ("pkt_avail", 23), ("send_avail", 23)]),
    ("ACTIVE_SOCKETS", &[("type", 25), ("user", 25), ("database", 25), ("replication", 25), ("state", 25), ("addr", 25), ("port", 23), ("local_addr", 25), ("local_port", 23), ("connect_time", 25), ("request_time", 25), ("wait", 23), ("wait_us", 23), ("close_needed", 23), ("ptr", 25), ("link", 25), ("remote_pid", 23), ("tls", 25), ("application_name", 25), ("prepared_statements", 23), ("id", 23), ("recv_pos", 23), ("pkt_pos", 23), ("pkt_remain", 23), ("send_pos", 23), ("send_remain", 23), ("pkt_avail", 23), ("send_avail", 23)]),
    ("DATABASES", &[("name", 25), ("host", 25), ("port", 23), ("database", 25), ("force_user", 25), ("pool_size", 23), ("min_pool_size", 23), ("reserve_pool_size", 23), ("server_lifetime", 23), ("pool_mode", 25), ("load_balance_hosts", 25), ("max_connections", 23), ("current_connections", 23), ("max_client_connections", 23), ("current_client_connections", 23), ("paused", 23), ("disabled", 23)]),
    ("USERS", &[("name", 25), ("pool_size", 25), ("reserve_pool_size", 25), ("pool_mode", 25), ("max_user_connections", 23), ("current_connections", 23), ("max_user_client_connections", 23), ("current_client_connections", 23)]),
    ("CONFIG", &[("key", 25), ("value", 25), ("default", 25), ("changeable", 25)]),
    ("LISTS", &[("list", 25), ("items", 23)]),
    ("VERSION", &[("version", 25)]),
    ("STATE", &[("key", 25), ("value", 25)]),
    ("MEM", &[("name", 25), ("size", 23), ("used", 23), ("free", 23), ("memtotal", 23)]),
    ("DNS_HOSTS", &[("hostname", 25), ("ttl", 20), ("addrs", 25)]),
    ("DNS_ZONES", &[("zonename", 25), ("serial", 20), ("count", 23)]),
    ("PEERS", &[("peer_id", 23), ("host", 25), ("port", 23), ("pool_size", 23)]),
    ("PEER_POOLS", &[("peer_id", 23), ("cl_active_cancel_req", 23), ("cl_waiting_cancel_req", 23), ("sv_active_cancel", 23), ("sv_login", 23)]),
];

/// Rows PgBouncer 1.26.1 gives in SHOW LISTS, SHOW TOTALS and SHOW STATE, in order.
const LISTS_1_26_1: &[&str] = &[
    "databases",
    "users",
    "peers",
    "pools",
    "peer_pools",
    "free_clients",
    "used_clients",
    "login_clients",
    "free_servers",
    "used_servers",
    "dns_names",
    "dns_zones",
    "dns_queries",
    "dns_pending",
];
const TOTALS_1_26_1: &[&str] = &[
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_client_bytes",
    "total_server_bytes",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_ps_client_parse_count",
    "total_ps_server_parse_count",
    "total_ps_bind_count",
    "total_client_login_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_client_bytes",
    "avg_server_bytes",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_ps_client_parse_count",
    "avg_ps_server_parse_count",
    "avg_ps_bind_count",
    "avg_client_login_count",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_columns_are_pgbouncer_1_26_1s() {
    let pgb = tokio::task::spawn_blocking(PgBouncer::start).await.unwrap();
    let mux = Mux::start(admin_config("", "")).await;
    // A pool on each side, so that SHOW SERVERS and the others have rows too.
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;

    let mut ours = raw_login(mux.port(), "admin", "admin_pw", "pgmux").await;
    let mut problems = Vec::new();
    for (what, want) in PGBOUNCER_1_26_1 {
        let sql = format!("SHOW {what}");
        let got = columns(&mut ours, &sql)
            .await
            .unwrap_or_else(|e| panic!("pgmux: {sql}: {e:?}"));
        let want: Vec<(String, u32)> = want.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        if got != want {
            problems.push(format!(
                "{sql}:\n  pgmux:         {got:?}\n  PgBouncer 1.26.1: {want:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "pgmux's SHOW columns differ from PgBouncer 1.26.1's:\n{}",
        problems.join("\n")
    );
    let a = console(&mux).await;
    let names = |t: &[Row], col: &str| -> Vec<String> {
        t.iter().map(|r| val(r, col).to_string()).collect()
    };
    assert_eq!(names(&table(&a, "SHOW LISTS").await, "list"), LISTS_1_26_1);
    assert_eq!(
        names(&table(&a, "SHOW TOTALS").await, "name"),
        TOTALS_1_26_1
    );
    assert_eq!(
        names(&table(&a, "SHOW STATE").await, "key"),
        ["active", "paused"]
    );
    let v = table(&a, "SHOW VERSION").await;
    assert!(
        val(&v[0], "version").starts_with("PgBouncer 1.26.1 (pgmux "),
        "{v:?}"
    );
    assert_eq!(
        val(&row_where(&a, "SHOW STATE", "key", "active").await, "value"),
        "yes"
    );
    assert_eq!(
        val(&row_where(&a, "SHOW STATE", "key", "paused").await, "value"),
        "no"
    );
    // The console's own database, pool and user are listed, as PgBouncer lists its own: an
    // exporter's queries then never come back empty.
    let pool = rows_where(&a, "SHOW POOLS", "database", "pgbouncer").await;
    assert_eq!(pool.len(), 1);
    assert_eq!(val(&pool[0], "user"), "pgbouncer");
    assert!(val(&pool[0], "cl_active").parse::<u32>().unwrap() >= 1);
    let stats = row_where(&a, "SHOW STATS", "database", "pgbouncer").await;
    assert!(val(&stats, "total_query_count").parse::<u32>().unwrap() >= 1);
    assert!(
        val(&stats, "total_client_login_count")
            .parse::<u32>()
            .unwrap()
            >= 2
    );
    row_where(&a, "SHOW DATABASES", "name", "pgbouncer").await;
    row_where(&a, "SHOW USERS", "name", "pgbouncer").await;
    // Client logins are counted per database.
    let app = row_where(&a, "SHOW STATS", "database", "appdb").await;
    assert_eq!(val(&app, "total_client_login_count"), "1");

    // Debian's PgBouncer (1.18): its columns come in pgmux's too, in its order, but for the
    // one 1.24 renamed (DATABASES reserve_pool is reserve_pool_size since).
    let mut theirs = raw_login(pgb.port, "admin", "admin_pw", "pgbouncer").await;
    for (what, mine) in PGBOUNCER_1_26_1 {
        let sql = format!("SHOW {what}");
        let Ok(old) = columns(&mut theirs, &sql).await else {
            continue; // not in 1.18 (STATE, PEERS, ...)
        };
        let mut at = 0;
        for (name, oid) in &old {
            if (*what, name.as_str()) == ("DATABASES", "reserve_pool") {
                continue;
            }
            match mine[at..].iter().position(|(n, _)| n == name) {
                Some(i) => {
                    assert_eq!(
                        mine[at + i].1,
                        *oid,
                        "{sql}: {name}'s type differs from 1.18's"
                    );
                    at += i + 1;
                }
                None => problems.push(format!("{sql}: 1.18's {name} is missing or out of order")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(pgb);
}

// ---------------------------------------------------------------------------------------------
// 2. Who may use the console.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_access_by_admin_users_and_stats_users() {
    let mux = Mux::start(admin_config("", "")).await;
    let port = mux.port();

    // Users in neither list: 42501 at login, on both names of the console.
    for db in ["pgmux", "pgbouncer"] {
        assert_eq!(
            login_error(port, "app", "app_pw", db).await,
            "42501",
            "app to {db}"
        );
        assert_eq!(
            login_error(port, "md5user", "md5_pw", db).await,
            "42501",
            "md5user to {db}"
        );
    }
    // A wrong password or an unknown user fails like any login.
    assert_eq!(login_error(port, "admin", "wrong", "pgmux").await, "28P01");
    assert_eq!(
        login_error(port, "stats", "wrong", "pgbouncer").await,
        "28P01"
    );
    assert_eq!(login_error(port, "nosuchuser", "x", "pgmux").await, "28P01");

    // The alias works for admins too.
    let (a, _ha) = connect_ok(port, "admin", "admin_pw", "pgbouncer").await;
    assert!(one(&a, "SHOW VERSION").await.contains("PgBouncer"));
    table(&a, "RESUME").await;

    // stats_users: every SHOW, nothing else.
    let (c, _h) = connect_ok(port, "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;
    let (s, _hs) = connect_ok(port, "stats", "stats_pw", "pgmux").await;
    for what in SHOW_BOTH.iter().chain(&["STATE"]) {
        table(&s, &format!("SHOW {what}")).await;
    }
    let client_id = val(
        &row_where(&s, "SHOW CLIENTS", "database", "appdb").await,
        "id",
    )
    .to_string();
    for cmd in [
        "PAUSE".to_string(),
        "PAUSE appdb".into(),
        "RESUME".into(),
        "RESUME appdb".into(),
        "DISABLE appdb".into(),
        "ENABLE appdb".into(),
        "RECONNECT appdb".into(),
        "KILL appdb".into(),
        format!("KILL_CLIENT {client_id}"),
        "WAIT_CLOSE appdb".into(),
        "RELOAD".into(),
        "SET default_pool_size = 3".into(),
        "SHUTDOWN".into(),
        "SUSPEND".into(),
    ] {
        let (code, msg) = console_err(&s, &cmd).await;
        assert_eq!(code, "42501", "stats user ran {cmd}: {msg}");
    }
    // Nothing happened.
    assert_eq!(one(&c, "SELECT 2").await, "2");
    assert_eq!(config_value(&s, "default_pool_size").await, "5");
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 5);
    assert!(mux.running.shared.run.requests.lock().is_empty());
    let db = row_where(&s, "SHOW DATABASES", "name", "appdb").await;
    assert_eq!((val(&db, "paused"), val(&db, "disabled")), ("0", "0"));
}

// ---------------------------------------------------------------------------------------------
// 3. SHOW commands.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_pools_clients_servers_follow_a_client_in_a_transaction() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "BEGIN; SELECT 1").await;

    // The client holds a server: active, linked to an active server that links back.
    let client = poll(&a, "SHOW CLIENTS", "an active client", |t| {
        t.iter()
            .any(|r| val(r, "database") == "appdb" && val(r, "state") == "active")
    })
    .await
    .into_iter()
    .find(|r| val(r, "database") == "appdb")
    .unwrap();
    assert_eq!(val(&client, "type"), "C");
    assert_eq!(val(&client, "user"), "app");
    assert_eq!(val(&client, "addr"), "127.0.0.1");
    assert_eq!(val(&client, "local_port"), mux.port().to_string());
    let link = val(&client, "link");
    assert!(
        !link.is_empty(),
        "an active client is linked to its server: {client:?}"
    );
    let server = row_where(&a, "SHOW SERVERS", "ptr", link).await;
    assert_eq!(val(&server, "type"), "S");
    assert_eq!(val(&server, "state"), "active");
    assert_eq!(val(&server, "database"), "appdb");
    assert_eq!(val(&server, "link"), val(&client, "ptr"));
    assert_eq!(val(&server, "port"), pg().port.to_string());
    assert_eq!(
        val(&server, "remote_pid"),
        one(&c, "SELECT pg_backend_pid()").await,
        "remote_pid is the backend's pid"
    );
    // The console's own client is listed too.
    let me = row_where(&a, "SHOW CLIENTS", "database", "pgmux").await;
    assert_eq!(val(&me, "user"), "admin");

    let pool = pool_row(&a, "appdb").await;
    assert_eq!(val(&pool, "cl_active"), "1");
    assert_eq!(val(&pool, "cl_waiting"), "0");
    assert_eq!(val(&pool, "sv_active"), "1");
    assert_eq!(val(&pool, "sv_idle"), "0");
    assert_eq!(val(&pool, "pool_mode"), "transaction");
    // SOCKETS and ACTIVE_SOCKETS list both; SHOW SERVERS has no clients and vice versa.
    let sockets = table(&a, "SHOW SOCKETS").await;
    assert!(sockets.iter().any(|r| val(r, "ptr") == link));
    assert!(sockets.iter().any(|r| val(r, "ptr") == val(&client, "ptr")));
    let active = table(&a, "SHOW ACTIVE_SOCKETS").await;
    assert!(
        active.iter().all(|r| val(r, "state") == "active"),
        "{active:?}"
    );
    assert!(active.iter().any(|r| val(r, "ptr") == link));
    assert!(table(&a, "SHOW SERVERS")
        .await
        .iter()
        .all(|r| val(r, "type") == "S"));
    assert!(table(&a, "SHOW CLIENTS")
        .await
        .iter()
        .all(|r| val(r, "type") == "C"));

    // After COMMIT the server goes back to the pool.
    rows(&c, "COMMIT").await;
    poll(&a, "SHOW POOLS", "the server back in the pool", |t| {
        t.iter().any(|r| {
            val(r, "database") == "appdb" && val(r, "sv_active") == "0" && val(r, "sv_idle") == "1"
        })
    })
    .await;
    let server = row_where(&a, "SHOW SERVERS", "database", "appdb").await;
    assert_eq!((val(&server, "state"), val(&server, "link")), ("idle", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_after_a_request_ends() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;
    // The request is over: the client is idle again and holds no server.
    poll(&a, "SHOW CLIENTS", "the client idle, with no link", |t| {
        t.iter().any(|r| {
            val(r, "database") == "appdb" && val(r, "state") == "idle" && val(r, "link").is_empty()
        })
    })
    .await;
    // The query's bytes were received.
    poll(&a, "SHOW STATS_TOTALS", "bytes received", |t| {
        t.iter()
            .any(|r| val(r, "database") == "appdb" && val(r, "bytes_received") != "0")
    })
    .await;
    // Two named prepared statements (tokio-postgres names them): counted for the client.
    // (Kept alive: tokio-postgres closes a statement when it is dropped.)
    let mut kept = Vec::new();
    for sql in ["SELECT 1", "SELECT 2"] {
        let st = c.prepare(sql).await.unwrap();
        c.query(&st, &[]).await.unwrap();
        kept.push(st);
    }
    poll(&a, "SHOW CLIENTS", "prepared_statements 2", |t| {
        t.iter()
            .any(|r| val(r, "database") == "appdb" && val(r, "prepared_statements") == "2")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_config_version_databases_users_lists() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;

    // STATS_TOTALS: the counts grow with the queries run.
    let count = |t: &[Row], col: &str| -> u64 {
        t.iter()
            .find(|r| val(r, "database") == "appdb")
            .map_or(0, |r| val(r, col).parse().unwrap())
    };
    let before = poll(&a, "SHOW STATS_TOTALS", "appdb in STATS_TOTALS", |t| {
        count(t, "xact_count") >= 1
    })
    .await;
    let (xacts, queries) = (count(&before, "xact_count"), count(&before, "query_count"));
    for _ in 0..3 {
        rows(&c, "SELECT 1").await;
    }
    rows(&c, "BEGIN; SELECT 1; SELECT 2; COMMIT").await;
    poll(&a, "SHOW STATS_TOTALS", "4 more transactions", |t| {
        // A Query message is one query, however many statements it has.
        count(t, "xact_count") >= xacts + 4 && count(t, "query_count") >= queries + 4
    })
    .await;
    let stats = row_where(&a, "SHOW STATS", "database", "appdb").await;
    assert!(val(&stats, "total_xact_count").parse::<u64>().unwrap() >= xacts + 4);
    assert!(val(&stats, "total_sent").parse::<u64>().unwrap() > 0);
    row_where(&a, "SHOW STATS_AVERAGES", "database", "appdb").await;
    let totals = row_where(&a, "SHOW TOTALS", "name", "total_xact_count").await;
    assert!(val(&totals, "value").parse::<u64>().unwrap() >= xacts + 4);

    // CONFIG.
    let size = row_where(&a, "SHOW CONFIG", "key", "default_pool_size").await;
    assert_eq!(val(&size, "value"), "5");
    assert_eq!(val(&size, "default"), "20");
    assert_eq!(val(&size, "changeable"), "yes");
    let port = row_where(&a, "SHOW CONFIG", "key", "listen_port").await;
    assert_eq!(val(&port, "changeable"), "no");
    assert_eq!(config_value(&a, "admin_users").await, "admin");

    // VERSION: tools look for "PgBouncer".
    let v = table(&a, "SHOW VERSION").await;
    assert_eq!(v.len(), 1);
    assert!(val(&v[0], "version").contains("PgBouncer"), "{v:?}");

    // DATABASES, USERS, LISTS.
    let db = row_where(&a, "SHOW DATABASES", "name", "appdb").await;
    assert_eq!(val(&db, "host"), "127.0.0.1");
    assert_eq!(val(&db, "port"), pg().port.to_string());
    assert_eq!(val(&db, "database"), "appdb");
    assert_eq!(val(&db, "pool_size"), "5");
    assert_eq!((val(&db, "paused"), val(&db, "disabled")), ("0", "0"));
    assert_eq!(val(&db, "current_connections"), "1");
    let alias = row_where(&a, "SHOW DATABASES", "name", "aliasdb").await;
    assert_eq!(val(&alias, "database"), "appdb");
    let user = row_where(&a, "SHOW USERS", "name", "app").await;
    assert_eq!(val(&user, "current_connections"), "1");
    row_where(&a, "SHOW USERS", "name", "admin").await;
    let lists = table(&a, "SHOW LISTS").await;
    let items = |name: &str| -> u64 {
        val(
            lists
                .iter()
                .find(|r| val(r, "list") == name)
                .unwrap_or_else(|| panic!("SHOW LISTS has no {name}: {lists:?}")),
            "items",
        )
        .parse()
        .unwrap()
    };
    assert_eq!(items("databases"), 4, "3 configured and the console's");
    assert_eq!(items("pools"), 2, "appdb's and the console's");
    assert_eq!(items("used_clients"), 2, "the app client and the console");
    assert_eq!(items("used_servers"), 1);

    // The others answer, case and a trailing semicolon do not matter, HELP is a notice.
    for sql in [
        "show mem;",
        "SHOW dns_hosts",
        "SHOW DNS_ZONES",
        "SHOW HELP",
        ";",
        "",
    ] {
        table(&a, sql).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Control commands.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_queries_until_resume() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;

    // PAUSE returns once the database's servers are closed.
    table(&a, "PAUSE appdb").await;
    let pool = pool_row(&a, "appdb").await;
    assert_eq!((val(&pool, "sv_idle"), val(&pool, "sv_active")), ("0", "0"));
    assert_eq!(
        val(
            &row_where(&a, "SHOW DATABASES", "name", "appdb").await,
            "paused"
        ),
        "1"
    );
    assert_eq!(
        val(
            &row_where(&a, "SHOW DATABASES", "name", "otherdb").await,
            "paused"
        ),
        "0"
    );

    // A query sent now waits for RESUME; a new client may still log in, and waits too.
    let q = spawn_query(c, "SELECT 41");
    stays_waiting(&a, "appdb", &q).await;
    let (d, _hd) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    let q2 = spawn_query(d, "SELECT 42");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!q2.is_finished());
    // Other databases are not paused.
    let (o, _ho) = connect_ok(mux.port(), "app", "app_pw", "otherdb").await;
    assert_eq!(one(&o, "SELECT current_database()").await, "otherdb");

    table(&a, "RESUME appdb").await;
    let (c, r) = finishes(q, "the query held by PAUSE").await;
    assert_eq!(r, "41");
    assert_eq!(finishes(q2, "the second query held by PAUSE").await.1, "42");
    assert_eq!(one(&c, "SELECT 1").await, "1");
    assert_eq!(
        val(
            &row_where(&a, "SHOW DATABASES", "name", "appdb").await,
            "paused"
        ),
        "0"
    );

    // PAUSE without a database holds every pool; SHOW STATE says so.
    table(&a, "PAUSE").await;
    assert_eq!(
        val(&row_where(&a, "SHOW STATE", "key", "paused").await, "value"),
        "yes"
    );
    let q = spawn_query(o, "SELECT 43");
    stays_waiting(&a, "otherdb", &q).await;
    table(&a, "RESUME").await;
    assert_eq!(finishes(q, "the query held by PAUSE").await.1, "43");
    assert_eq!(
        val(&row_where(&a, "SHOW STATE", "key", "paused").await, "value"),
        "no"
    );
    assert_eq!(one(&c, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_new_logins_until_enable() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;

    table(&a, "DISABLE appdb").await;
    assert_eq!(
        val(
            &row_where(&a, "SHOW DATABASES", "name", "appdb").await,
            "disabled"
        ),
        "1"
    );
    assert_eq!(
        login_error(mux.port(), "app", "app_pw", "appdb").await,
        "55000"
    );
    // Connected clients go on; other databases take logins.
    assert_eq!(one(&c, "SELECT 2").await, "2");
    let (o, _ho) = connect_ok(mux.port(), "app", "app_pw", "otherdb").await;
    assert_eq!(one(&o, "SELECT 3").await, "3");

    table(&a, "ENABLE appdb").await;
    assert_eq!(
        val(
            &row_where(&a, "SHOW DATABASES", "name", "appdb").await,
            "disabled"
        ),
        "0"
    );
    let (d, _hd) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    assert_eq!(one(&d, "SELECT 4").await, "4");
    // DISABLE and ENABLE need a database.
    assert_eq!(console_err(&a, "DISABLE").await.0, "42601");
    assert_eq!(console_err(&a, "ENABLE").await.0, "42601");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_servers_and_wait_close_waits_for_them() {
    let extra = db_entry("onedb", "appdb", "pool_size = 1");
    let mux = Mux::start(admin_config("", &extra)).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "onedb").await;
    let pid = one(&c, "SELECT pg_backend_pid()").await;
    assert_eq!(
        one(&c, "SELECT pg_backend_pid()").await,
        pid,
        "one server, reused"
    );

    // An idle server is closed at once: the next query gets a new backend.
    table(&a, "RECONNECT onedb").await;
    let pid2 = one(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(pid2, pid, "RECONNECT: a new server");
    assert_eq!(one(&c, "SELECT pg_backend_pid()").await, pid2);

    // A server in use is closed when released; WAIT_CLOSE returns after that.
    rows(&c, "BEGIN").await;
    assert_eq!(one(&c, "SELECT pg_backend_pid()").await, pid2);
    table(&a, "RECONNECT onedb").await;
    let s = row_where(&a, "SHOW SERVERS", "database", "onedb").await;
    assert_eq!((val(&s, "state"), val(&s, "close_needed")), ("active", "1"));
    let b = console(&mux).await;
    let wait = tokio::spawn(async move {
        table(&b, "WAIT_CLOSE onedb").await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !wait.is_finished(),
        "WAIT_CLOSE returned while the server was in use"
    );
    // The transaction goes on untouched.
    assert_eq!(one(&c, "SELECT pg_backend_pid()").await, pid2);
    rows(&c, "COMMIT").await;
    finishes(wait, "WAIT_CLOSE").await;
    assert!(rows_where(&a, "SHOW SERVERS", "close_needed", "1")
        .await
        .is_empty());
    let pid3 = one(&c, "SELECT pg_backend_pid()").await;
    assert_ne!(pid3, pid2, "RECONNECT: a new server after the transaction");

    // WAIT_CLOSE with nothing to close returns at once, with or without a database.
    table(&a, "WAIT_CLOSE").await;
    table(&a, "RECONNECT").await;
    table(&a, "WAIT_CLOSE onedb").await;
    assert_ne!(one(&c, "SELECT pg_backend_pid()").await, pid3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_clients_and_holds_new_ones_until_resume() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;
    let (o, _ho) = connect_ok(mux.port(), "app", "app_pw", "otherdb").await;
    rows(&o, "SELECT 1").await;

    table(&a, "KILL appdb").await;
    killed(h, &c, "KILL appdb").await;
    // Other databases' clients and the console stay; appdb has neither clients nor servers.
    assert_eq!(one(&o, "SELECT 2").await, "2");
    poll(&a, "SHOW CLIENTS", "appdb's client gone", |t| {
        t.iter().all(|r| val(r, "database") != "appdb")
    })
    .await;
    poll(&a, "SHOW SERVERS", "appdb's server closed", |t| {
        t.iter().all(|r| val(r, "database") != "appdb")
    })
    .await;

    // New clients log in but wait until RESUME.
    let (d, _hd) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    let q = spawn_query(d, "SELECT 7");
    stays_waiting(&a, "appdb", &q).await;
    table(&a, "RESUME appdb").await;
    assert_eq!(finishes(q, "the query held by KILL").await.1, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_closes_one_client() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let mut cfg = tp_config(mux.port(), "app", "app_pw", "appdb");
    cfg.application_name("victim");
    let (victim, vh) = tp_connect_ok(&cfg).await;
    rows(&victim, "SELECT 1").await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;

    let row = row_where(&a, "SHOW CLIENTS", "application_name", "victim").await;
    let id = val(&row, "id").to_string();
    table(&a, &format!("KILL_CLIENT {id}")).await;
    killed(vh, &victim, "KILL_CLIENT").await;
    assert_eq!(one(&c, "SELECT 2").await, "2");
    poll(&a, "SHOW CLIENTS", "the victim gone", |t| {
        t.iter().all(|r| val(r, "id") != id)
    })
    .await;
    // Unknown ids, the console's own id and non-numbers are errors.
    assert_eq!(
        console_err(&a, &format!("KILL_CLIENT {id}")).await.0,
        "42704"
    );
    assert_eq!(console_err(&a, "KILL_CLIENT 999999").await.0, "42704");
    let me = row_where(&a, "SHOW CLIENTS", "database", "pgmux").await;
    let me = format!("KILL_CLIENT {}", val(&me, "id"));
    assert_eq!(console_err(&a, &me).await.0, "42704");
    assert_eq!(console_err(&a, "KILL_CLIENT x").await.0, "42601");
    assert!(one(&a, "SHOW VERSION").await.contains("PgBouncer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_changes_general_keys() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (c, _h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "SELECT 1").await;
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 5);

    table(&a, "SET default_pool_size = 3").await;
    assert_eq!(config_value(&a, "default_pool_size").await, "3");
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 3);
    assert_eq!(
        val(
            &row_where(&a, "SHOW DATABASES", "name", "appdb").await,
            "pool_size"
        ),
        "3"
    );
    table(&a, "SET default_pool_size TO 4").await;
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 4);
    table(&a, "set query_wait_timeout = '7'").await;
    assert_eq!(config_value(&a, "query_wait_timeout").await, "7");

    // Refused: keys that need a restart, unknown keys, bad values. The old value stays.
    let (code, msg) = console_err(&a, "SET listen_port = 1").await;
    assert_eq!(code, "55P02", "{msg}");
    assert_eq!(config_value(&a, "listen_port").await, "0");
    assert_eq!(console_err(&a, "SET no_such_key = 1").await.0, "42704");
    let (code, msg) = console_err(&a, "SET default_pool_size = 'lots'").await;
    assert_eq!(code, "22023", "{msg}");
    assert_eq!(
        console_err(&a, "SET default_pool_size = -1").await.0,
        "22023"
    );
    assert_eq!(config_value(&a, "default_pool_size").await, "4");
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 4);
    assert_eq!(console_err(&a, "SET default_pool_size").await.0, "42601");
    // The client was not disturbed.
    assert_eq!(one(&c, "SELECT 2").await, "2");
}

/// A config file for the RELOAD test: pgmux in front of appdb with these `[general]` lines.
fn reload_toml(general: &str) -> String {
    format!(
        "[general]\nlisten_addr = \"127.0.0.1\"\nlisten_port = 0\nauth_type = \"scram-sha-256\"\n\
         admin_users = [\"admin\"]\n{general}\n\n{}\n\
         [users.app]\npassword = \"app_pw\"\n[users.admin]\npassword = \"admin_pw\"\n",
        database_section("appdb", pg().port, "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_the_config_file_again() {
    // Started from a config in memory: nothing to reload.
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    let (code, msg) = console_err(&a, "RELOAD").await;
    assert!(msg.contains("no config file"), "{code}: {msg}");
    assert_eq!(code, "55000", "{msg}");
    drop(mux);

    let path = std::env::temp_dir().join(format!("pgmux-it-{}-reload.toml", std::process::id()));
    let text = reload_toml("default_pool_size = 5");
    std::fs::write(&path, &text).unwrap();
    let mux = Mux::start(Config::parse(&text).unwrap()).await;
    mux.running.set_config_path(path.clone());
    let a = console(&mux).await;
    let (c, h) = connect_ok(mux.port(), "app", "app_pw", "appdb").await;
    rows(&c, "BEGIN; SELECT 1").await;

    std::fs::write(&path, reload_toml("default_pool_size = 7")).unwrap();
    table(&a, "RELOAD").await;
    assert_eq!(config_value(&a, "default_pool_size").await, "7");
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 7);
    // The client, in a transaction, was not dropped.
    assert_eq!(one(&c, "SELECT 2").await, "2");
    rows(&c, "COMMIT").await;
    assert!(!h.is_finished());

    // An invalid file is refused whole; the running config stays.
    std::fs::write(&path, reload_toml("default_pool_size = \"lots\"")).unwrap();
    let (code, msg) = console_err(&a, "RELOAD").await;
    assert_eq!(code, "22023", "{msg}");
    assert!(msg.contains("default_pool_size"), "{msg}");
    std::fs::write(&path, "[general\nnot toml").unwrap();
    assert_eq!(console_err(&a, "RELOAD").await.0, "22023");
    assert_eq!(config_value(&a, "default_pool_size").await, "7");
    assert_eq!(mux.pool("appdb", "app").unwrap().settings().pool_size, 7);

    // A key that needs a restart keeps its running value; the rest applies.
    std::fs::write(
        &path,
        reload_toml("default_pool_size = 6").replace("listen_port = 0", "listen_port = 1"),
    )
    .unwrap();
    table(&a, "RELOAD").await;
    assert_eq!(config_value(&a, "listen_port").await, "0");
    assert_eq!(config_value(&a, "default_pool_size").await, "6");
    assert_eq!(one(&c, "SELECT 3").await, "3");
    assert!(!h.is_finished());
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_asks_the_process_owner() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    for (sql, want) in [
        ("SHUTDOWN", Request::Shutdown),
        ("shutdown wait_for_clients", Request::ShutdownWaitForClients),
        (
            "SHUTDOWN WAIT_FOR_SERVERS;",
            Request::ShutdownWaitForServers,
        ),
    ] {
        table(&a, sql).await;
        let got = tokio::time::timeout(WAIT, mux.running.next_request())
            .await
            .unwrap_or_else(|_| panic!("{sql}: no request"));
        assert_eq!(got, want, "{sql}");
    }
    assert_eq!(console_err(&a, "SHUTDOWN NOW").await.0, "42601");
    assert!(mux.running.shared.run.requests.lock().is_empty());
    // The console still answers (the test's process owner did not act on the request).
    assert!(one(&a, "SHOW VERSION").await.contains("PgBouncer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_errors() {
    let mux = Mux::start(admin_config("", "")).await;
    let a = console(&mux).await;
    for (sql, want) in [
        ("SELECT 1", "42601"),
        ("SHOW", "42601"),
        ("SHOW nosuchthing", "42601"),
        ("SHOW POOLS CLIENTS", "42601"),
        ("PAUSE a b", "42601"),
        ("RELOAD now", "42601"),
        ("SET x = 'unterminated", "42601"),
        ("PAUSE pgmux", "55000"),
        ("PAUSE pgbouncer", "55000"),
        ("PAUSE nosuchdb", "3D000"),
        ("KILL nosuchdb", "3D000"),
        ("SUSPEND", "0A000"),
    ] {
        let (code, msg) = console_err(&a, sql).await;
        assert_eq!(code, want, "{sql}: {msg}");
    }
    // Errors leave the console usable.
    assert!(one(&a, "SHOW VERSION").await.contains("PgBouncer"));

    // The extended protocol is refused, and the connection closed.
    let mut s = raw_login(mux.port(), "admin", "admin_pw", "pgmux").await;
    let mut msg = raw::parse("", "SHOW POOLS");
    msg.extend(raw::sync());
    raw::send(&mut s, &msg).await;
    let got = read_to_close(&mut s).await;
    let (code, _, severity) = error_of(&got).expect("an error");
    assert_eq!((code.as_str(), severity.as_str()), ("0A000", "FATAL"));
    // tokio-postgres' query() uses it too.
    let b = console(&mux).await;
    assert!(b.query("SHOW POOLS", &[]).await.is_err());
}

/// SHOW CLIENT_SETTINGS (pgmux's own): each client's tracked parameters, as pgmux will set
/// them on a server for it: start-up values, `options`, and SETs since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_client_settings_lists_each_clients_tracked_parameters() {
    let mux = Mux::start(admin_config("", "")).await;
    let mut cfg = tp_config(mux.port(), "app", "app_pw", "appdb");
    cfg.options("-c TimeZone=Europe/Paris -c statement_timeout=3s");
    let (c, _h) = tp_connect_ok(&cfg).await;
    rows(&c, "SET default_transaction_read_only TO on").await;
    rows(&c, "SET search_path TO tenant_a, public").await;
    let a = console(&mux).await;
    let mine = rows_where(&a, "SHOW CLIENT_SETTINGS", "database", "appdb").await;
    let get = |name: &str| {
        mine.iter()
            .find(|r| val(r, "setting") == name)
            .map(|r| val(r, "value").to_string())
            .unwrap_or_else(|| panic!("no {name} in {mine:?}"))
    };
    assert_eq!(get("TimeZone"), "Europe/Paris");
    assert_eq!(get("default_transaction_read_only"), "on");
    assert_eq!(get("client_encoding"), "UTF8");
    // Settings Postgres does not report, as read back after the SET.
    assert_eq!(get("search_path"), "tenant_a, public");
    assert_eq!(get("statement_timeout"), "3s");
    assert!(mine.iter().all(|r| val(r, "user") == "app"));
    // The console's own clients have none.
    assert!(rows_where(&a, "SHOW CLIENT_SETTINGS", "database", "pgmux")
        .await
        .is_empty());
}
