//! SHOW commands: exactly PgBouncer 1.26.1's columns (names, order, types), filled from
//! pgmux's state, so that tools reading PgBouncer's console (exporters, dashboards) read
//! pgmux's. The admin console's own database is listed as PgBouncer lists it (`pgbouncer`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::rows::{Table, Ty, V};
use crate::clients::{ClientInfo, ClientState};
use crate::config::{is_restart_key, Config, General};
use crate::pool::stats::{Period, Totals};
use crate::pool::Pool;
use crate::server::{unix_us, ServerInfo};
use crate::shared::Shared;
use crate::snapshot;

use Ty::{Int4, Int8, Numeric, Text};

/// The SHOW commands pgmux answers, for SHOW HELP.
pub(crate) const COMMANDS: &[&str] = &[
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
    "STATE",
    "PEERS",
    "PEER_POOLS",
    "CLIENT_SETTINGS",
    "MEM",
    "DNS_HOSTS",
    "DNS_ZONES",
];

/// The PgBouncer version whose console pgmux's answers like: SHOW's columns are exactly its.
pub(crate) const PGBOUNCER_VERSION: &str = "1.26.1";

/// The version string SHOW VERSION gives: PgBouncer's own form first ("PgBouncer x.y.z", which
/// tools parse), pgmux's after it.
pub(crate) fn version() -> String {
    format!(
        "PgBouncer {PGBOUNCER_VERSION} (pgmux {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// The admin console's database and user, as PgBouncer names them in SHOW.
const CONSOLE: &str = "pgbouncer";

/// The admin console clients among `clients`.
fn console_clients(clients: &[Arc<ClientInfo>]) -> usize {
    clients
        .iter()
        .filter(|c| c.login.get().is_some_and(|l| l.is_admin()))
        .count()
}

/// Answer `SHOW what`; `None` when pgmux has no such SHOW command.
pub(crate) fn show(shared: &Shared, what: &str) -> Option<Table> {
    Some(match what {
        "POOLS" => pools(shared),
        "STATS" => stats(shared, true, true),
        "STATS_TOTALS" => stats(shared, true, false),
        "STATS_AVERAGES" => stats(shared, false, true),
        "TOTALS" => totals(shared),
        "CLIENTS" => connections(shared, true, false, false),
        "SERVERS" => connections(shared, false, true, false),
        "SOCKETS" => connections(shared, true, true, true),
        "ACTIVE_SOCKETS" => {
            let mut t = connections(shared, true, true, true);
            t.retain(|r| r[4].0.as_deref() == Some("active"));
            t
        }
        "DATABASES" => databases(shared),
        "USERS" => users(shared),
        "CONFIG" => config(shared),
        "LISTS" => lists(shared),
        "VERSION" => {
            let mut t = Table::new(&[("version", Text)]);
            t.row(vec![version().into()]);
            t
        }
        "STATE" => state(shared),
        "CLIENT_SETTINGS" => client_settings(shared),
        "PEERS" => peers(shared),
        "PEER_POOLS" => Table::new(&[
            ("peer_id", Int4),
            ("cl_active_cancel_req", Int4),
            ("cl_waiting_cancel_req", Int4),
            ("sv_active_cancel", Int4),
            ("sv_login", Int4),
        ]),
        "MEM" => Table::new(&[
            ("name", Text),
            ("size", Int4),
            ("used", Int4),
            ("free", Int4),
            ("memtotal", Int4),
        ]),
        "DNS_HOSTS" => Table::new(&[("hostname", Text), ("ttl", Int8), ("addrs", Text)]),
        "DNS_ZONES" => Table::new(&[("zonename", Text), ("serial", Int8), ("count", Int4)]),
        _ => return None,
    })
}

/// "YYYY-MM-DD HH:MM:SS UTC", as PgBouncer prints times.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    timestamp_secs(secs)
}

fn timestamp_secs(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
    ]);
    // With [fleet], four columns of pgmux's own after PgBouncer's: this replica's slots, the
    // fleet's, its max_servers, and its replicas.
    let fleet = shared.config().fleet.is_some();
    if fleet {
        t = t.with(&[
            ("fleet_held", Int4),
            ("fleet_total", Int4),
            ("fleet_max", Int4),
            ("fleet_replicas", Int4),
        ]);
    }
    // The console's own pool, as PgBouncer lists it: its clients active, no servers.
    let mut console = vec![
        CONSOLE.into(),
        CONSOLE.into(),
        console_clients(&shared.clients.all()).into(),
    ];
    console.extend((0..12).map(|_| V::from(0)));
    console.extend(["statement".into(), V::NULL]);
    if fleet {
        console.extend((0..4).map(|_| V::NULL));
    }
    t.row(console);
    for v in snapshot::pools(shared) {
        let c = &v.clients;
        let s = &v.servers;
        let mut row = vec![
            (&v.pool.database).into(),
            (&v.pool.user).into(),
            // PgBouncer counts idle logged-in clients as active.
            (c.active + c.idle).into(),
            c.waiting.into(),
            0.into(),
            0.into(),
            s.active.into(),
            0.into(),
            0.into(),
            s.idle.into(),
            s.used.into(),
            s.tested.into(),
            s.login.into(),
            (c.max_wait_us / 1_000_000).into(),
            (c.max_wait_us % 1_000_000).into(),
            v.pool.settings().mode_label.into(),
            V::NULL,
        ];
        if fleet {
            match v.fleet {
                Some((max, c)) => row.extend([
                    c.held.into(),
                    c.fleet_held.into(),
                    max.into(),
                    c.replicas.into(),
                ]),
                None => row.extend((0..4).map(|_| V::NULL)),
            }
        }
        t.row(row);
    }
    t
}

/// Totals and last-period figures per database (PgBouncer aggregates pools by database),
/// the console's first (its queries and logins; no period of its own).
fn per_database(shared: &Shared) -> Vec<(String, (Totals, Period))> {
    let mut m: BTreeMap<String, (Totals, Period)> = BTreeMap::new();
    for pool in shared.registry.all() {
        let e = m.entry(pool.database.clone()).or_default();
        e.0 += pool.stats.totals();
        let p = *pool.stats.period.lock();
        e.1.start += p.start;
        e.1.end += p.end;
        e.1.secs = e.1.secs.max(p.secs);
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let queries = load(&shared.console_queries);
    let console = Totals {
        xacts: queries,
        queries,
        client_logins: load(&shared.console_logins),
        ..Default::default()
    };
    let mut out = vec![(CONSOLE.to_string(), (console, Period::default()))];
    out.extend(m.into_iter().filter(|(db, _)| db != CONSOLE));
    out
}

/// One SHOW STATS counter under each of its names, in PgBouncer 1.26's order.
struct StatCol {
    /// SHOW STATS' total and average columns.
    total: &'static str,
    avg: &'static str,
    /// SHOW STATS_TOTALS' and SHOW STATS_AVERAGES' (which keeps `avg_` on some).
    totals: &'static str,
    averages: &'static str,
    /// SHOW TOTALS' rows: `total_` and `avg_` with this.
    row: &'static str,
}

const fn col(
    total: &'static str,
    avg: &'static str,
    totals: &'static str,
    averages: &'static str,
    row: &'static str,
) -> StatCol {
    StatCol {
        total,
        avg,
        totals,
        averages,
        row,
    }
}

#[rustfmt::skip]
const STATS_COLS: &[StatCol] = &[
    col("total_server_assignment_count", "avg_server_assignment_count", "server_assignment_count", "server_assignment_count", "server_assignment_count"),
    col("total_xact_count", "avg_xact_count", "xact_count", "xact_count", "xact_count"),
    col("total_query_count", "avg_query_count", "query_count", "query_count", "query_count"),
    col("total_received", "avg_recv", "bytes_received", "bytes_received", "client_bytes"),
    col("total_sent", "avg_sent", "bytes_sent", "bytes_sent", "server_bytes"),
    col("total_xact_time", "avg_xact_time", "xact_time", "xact_time", "xact_time"),
    col("total_query_time", "avg_query_time", "query_time", "query_time", "query_time"),
    col("total_wait_time", "avg_wait_time", "wait_time", "wait_time", "wait_time"),
    col("total_client_parse_count", "avg_client_parse_count", "client_parse_count", "avg_client_parse_count", "ps_client_parse_count"),
    col("total_server_parse_count", "avg_server_parse_count", "server_parse_count", "avg_server_parse_count", "ps_server_parse_count"),
    col("total_bind_count", "avg_bind_count", "bind_count", "avg_bind_count", "ps_bind_count"),
    col("total_client_login_count", "avg_client_login_count", "client_login_count", "avg_client_login_count", "client_login_count"),
];

fn stats(shared: &Shared, totals: bool, avgs: bool) -> Table {
    let both = totals && avgs;
    let mut cols: Vec<(&'static str, Ty)> = vec![("database", Text)];
    if totals {
        cols.extend(
            STATS_COLS
                .iter()
                .map(|c| (if both { c.total } else { c.totals }, Numeric)),
        );
    }
    if avgs {
        cols.extend(
            STATS_COLS
                .iter()
                .map(|c| (if both { c.avg } else { c.averages }, Numeric)),
        );
    }
    let mut t = Table::new(&cols);
    for (db, (tot, period)) in per_database(shared) {
        let mut row: Vec<V> = vec![db.into()];
        if totals {
            row.extend(total_values(&tot).into_iter().map(V::from));
        }
        if avgs {
            let a = period.averages();
            let v = vec![
                a.server_assignments,
                a.xacts,
                a.queries,
                a.recv,
                a.sent,
                a.xact_us,
                a.query_us,
                a.wait_us,
                a.client_parses,
                a.server_parses,
                a.binds,
                a.client_logins,
            ];
            row.extend(v.into_iter().map(V::from));
        }
        t.row(row);
    }
    t
}

fn total_values(t: &Totals) -> Vec<u64> {
    vec![
        t.server_assignments,
        t.xacts,
        t.queries,
        t.bytes_received,
        t.bytes_sent,
        t.xact_us,
        t.query_us,
        t.wait_us,
        t.client_parses,
        t.server_parses,
        t.binds,
        t.client_logins,
    ]
}

/// SHOW TOTALS: SHOW STATS summed over databases, one row per counter, PgBouncer's row names.
fn totals(shared: &Shared) -> Table {
    let stats = stats(shared, true, true);
    let mut t = Table::new(&[("name", Text), ("value", Numeric)]);
    let names = STATS_COLS
        .iter()
        .map(|c| format!("total_{}", c.row))
        .chain(STATS_COLS.iter().map(|c| format!("avg_{}", c.row)));
    for (i, name) in names.enumerate() {
        let sum: u64 = stats
            .rows()
            .iter()
            .filter_map(|r| r[i + 1].0.as_deref()?.parse::<u64>().ok())
            .sum();
        t.row(vec![name.into(), sum.into()]);
    }
    t
}

/// "0x..." handles: distinct for clients and servers, so `link` joins them.
fn client_ptr(id: u64) -> String {
    format!("0xc{id:015x}")
}
fn server_ptr(id: u64) -> String {
    format!("0x5{id:015x}")
}

fn connections(shared: &Shared, clients: bool, servers: bool, sockets: bool) -> Table {
    let mut cols = vec![
        ("type", Text),
        ("user", Text),
        ("database", Text),
        ("replication", Text),
        ("state", Text),
        ("addr", Text),
        ("port", Int4),
        ("local_addr", Text),
        ("local_port", Int4),
        ("connect_time", Text),
        ("request_time", Text),
        ("wait", Int4),
        ("wait_us", Int4),
        ("close_needed", Int4),
        ("ptr", Text),
        ("link", Text),
        ("remote_pid", Int4),
        ("tls", Text),
        ("application_name", Text),
        ("prepared_statements", Int4),
        ("id", Int4),
    ];
    if sockets {
        for c in [
            "recv_pos",
            "pkt_pos",
            "pkt_remain",
            "send_pos",
            "send_remain",
            "pkt_avail",
            "send_avail",
        ] {
            cols.push((c, Int4));
        }
    }
    let mut t = Table::new(&cols);
    let extra = |row: &mut Vec<V>| {
        if sockets {
            row.extend((0..7).map(|_| V::from(0)));
        }
    };
    let all_clients = shared.clients.all();
    if clients {
        let now = unix_us();
        for c in &all_clients {
            let mut row = client_row(c, now);
            extra(&mut row);
            t.row(row);
        }
    }
    if servers {
        let app_of: std::collections::HashMap<u64, &ClientInfo> =
            all_clients.iter().map(|c| (c.id, &**c)).collect();
        for pool in shared.registry.all() {
            for s in pool.server_infos() {
                let mut row = server_row(&pool, &s, &app_of);
                extra(&mut row);
                t.row(row);
            }
        }
    }
    t
}

fn addr_cols(a: Option<std::net::SocketAddr>) -> (V, V) {
    match a {
        Some(a) => (a.ip().to_string().into(), a.port().into()),
        None => (V::NULL, V::NULL),
    }
}

fn time_us(us: u64) -> V {
    if us == 0 {
        V::NULL
    } else {
        timestamp_secs(us / 1_000_000).into()
    }
}

fn client_row(c: &ClientInfo, now: u64) -> Vec<V> {
    let login = c.login.get();
    let state = c.state();
    let wait_us = if state == ClientState::Waiting {
        now.saturating_sub(c.request_us())
    } else {
        0
    };
    let (addr, port) = addr_cols(Some(c.addr()));
    let (laddr, lport) = addr_cols(c.local());
    let link = c.link();
    vec![
        "C".into(),
        login.map(|l| l.user()).into(),
        login.map(|l| l.database()).into(),
        "none".into(),
        state.as_str().into(),
        addr,
        port,
        laddr,
        lport,
        timestamp(c.connect_time()).into(),
        time_us(c.request_us()),
        (wait_us / 1_000_000).into(),
        (wait_us % 1_000_000).into(),
        0.into(),
        client_ptr(c.id).into(),
        if link == 0 {
            V::NULL
        } else {
            server_ptr(link).into()
        },
        0.into(),
        crate::net::tls::describe(c.tls.load(std::sync::atomic::Ordering::Relaxed)).into(),
        login.map(|l| l.application_name()).into(),
        c.prepared.load(std::sync::atomic::Ordering::Relaxed).into(),
        c.id.into(),
    ]
}

fn server_row(
    pool: &Arc<Pool>,
    s: &ServerInfo,
    clients: &std::collections::HashMap<u64, &ClientInfo>,
) -> Vec<V> {
    let (addr, port) = addr_cols(s.addr);
    let (laddr, lport) = addr_cols(s.local);
    let link = s.link();
    let app = clients
        .get(&link)
        .and_then(|c| c.login.get())
        .map(|l| l.application_name().to_string())
        .unwrap_or_default();
    vec![
        "S".into(),
        pool.target().user.as_str().into(),
        (&pool.database).into(),
        "none".into(),
        s.state().as_str().into(),
        addr,
        port,
        laddr,
        lport,
        timestamp(s.connect_time).into(),
        time_us(s.request_us()),
        0.into(),
        0.into(),
        i32::from(pool.close_needed(s)).into(),
        server_ptr(s.id).into(),
        if link == 0 {
            V::NULL
        } else {
            client_ptr(link).into()
        },
        s.pid().into(),
        crate::net::tls::describe(s.tls).into(),
        app.into(),
        s.prepared.load(std::sync::atomic::Ordering::Relaxed).into(),
        s.id.into(),
    ]
}

/// Database names to list: configured ones (not "*"), then any with a pool.
fn database_names(shared: &Shared, config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .databases
        .keys()
        .filter(|k| *k != "*")
        .cloned()
        .collect();
    for p in shared.registry.all() {
        if !names.contains(&p.database) {
            names.push(p.database.clone());
        }
    }
    names
}

fn databases(shared: &Shared) -> Table {
    let config = shared.config();
    let g = &config.general;
    let mut t = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
    ]);
    let clients = shared.clients.all();
    // The console's database, as PgBouncer lists its own.
    t.row(vec![
        CONSOLE.into(),
        V::NULL,
        g.listen_port.into(),
        CONSOLE.into(),
        CONSOLE.into(),
        2.into(),
        0.into(),
        0.into(),
        (g.server_lifetime.0 as u64).into(),
        "statement".into(),
        V::NULL,
        0.into(),
        0.into(),
        0.into(),
        console_clients(&clients).into(),
        0.into(),
        0.into(),
    ]);
    for name in database_names(shared, &config) {
        if name == CONSOLE {
            continue;
        }
        let Some(db) = config.database(&name) else {
            continue;
        };
        let (used, _) = shared.registry.db_usage(&name);
        let max = db.max_db_connections.unwrap_or(g.max_db_connections);
        let flags = shared.registry.flags(&name);
        let reserve = db.reserve_pool_size.unwrap_or(g.reserve_pool_size);
        let n_clients = clients
            .iter()
            .filter(|c| c.pool().is_some_and(|p| p.database == name))
            .count();
        t.row(vec![
            name.as_str().into(),
            db.host.as_str().into(),
            db.port.first().into(),
            db.dbname.clone().unwrap_or_else(|| name.clone()).into(),
            db.user.clone().into(),
            db.pool_size.unwrap_or(g.default_pool_size).into(),
            db.min_pool_size.unwrap_or(g.min_pool_size).into(),
            reserve.into(),
            (g.server_lifetime.0 as u64).into(),
            db.pool_mode.map(|m| m.as_str()).into(),
            V::NULL,
            max.into(),
            used.into(),
            0.into(),
            n_clients.into(),
            i32::from(flags.paused).into(),
            i32::from(flags.disabled).into(),
        ]);
    }
    t
}

fn users(shared: &Shared) -> Table {
    let config = shared.config();
    let g = &config.general;
    let mut t = Table::new(&[
        ("name", Text),
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int4),
        ("current_connections", Int4),
        ("max_user_client_connections", Int4),
        ("current_client_connections", Int4),
    ]);
    let clients = shared.clients.all();
    for (name, u) in &config.users {
        let (used, _) = shared.registry.user_usage(name);
        let n_clients = clients
            .iter()
            .filter(|c| c.login.get().is_some_and(|l| l.user() == name))
            .count();
        t.row(vec![
            name.into(),
            "".into(),
            "".into(),
            u.pool_mode.map(|m| m.as_str()).into(),
            u.max_user_connections
                .unwrap_or(g.max_user_connections)
                .into(),
            used.into(),
            0.into(),
            n_clients.into(),
        ]);
    }
    // The console's own user, as PgBouncer lists it.
    if !config.users.contains_key(CONSOLE) {
        t.row(vec![
            CONSOLE.into(),
            "".into(),
            "".into(),
            V::NULL,
            0.into(),
            0.into(),
            0.into(),
            0.into(),
        ]);
    }
    t
}

/// A config value as SHOW CONFIG prints it.
pub(crate) fn config_value(v: Option<&toml::Value>) -> String {
    match v {
        None => String::new(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(toml::Value::Float(f)) if f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", *f as i64)
        }
        Some(toml::Value::Boolean(b)) => if *b { "1" } else { "0" }.into(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|x| config_value(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn config(shared: &Shared) -> Table {
    let config = shared.config();
    let now = config.general.as_table();
    let defaults = General::default().as_table();
    let mut t = Table::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for key in crate::config::general_keys() {
        t.row(vec![
            (*key).into(),
            config_value(now.get(*key)).into(),
            config_value(defaults.get(*key)).into(),
            if is_restart_key(key) { "no" } else { "yes" }.into(),
        ]);
    }
    t
}

fn lists(shared: &Shared) -> Table {
    let config = shared.config();
    let clients = shared.clients.all();
    let login = clients
        .iter()
        .filter(|c| c.state() == ClientState::Login)
        .count();
    let servers: usize = shared
        .registry
        .all()
        .iter()
        .map(|p| p.server_infos().len())
        .sum();
    let mut t = Table::new(&[("list", Text), ("items", Int4)]);
    for (name, n) in [
        ("databases", database_names(shared, &config).len() + 1),
        ("users", config.users.len() + 1),
        ("peers", peers(shared).rows().len()),
        ("pools", shared.registry.all().len() + 1),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", clients.len()),
        ("login_clients", login),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.row(vec![name.into(), n.into()]);
    }
    t
}

/// SHOW CLIENT_SETTINGS (pgmux's own): each pool client's tracked parameters and the other
/// session settings it changed, the values pgmux sets on a server before running its requests
/// (its start-up values, `options`, and its SETs since), one row per client and setting.
fn client_settings(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("id", Int4),
        ("user", Text),
        ("database", Text),
        ("setting", Text),
        ("value", Text),
    ]);
    for c in shared.clients.all() {
        let (Some(login), Some(params)) = (c.login.get(), c.params()) else {
            continue;
        };
        let pinned = crate::clients::pin_reasons(c.pinned());
        let settings = c.settings();
        let other = settings.iter().flat_map(|s| s.iter());
        let pin = (!pinned.is_empty()).then_some(("pgmux.pinned", pinned.as_str()));
        for (k, v) in params.iter().chain(other).chain(pin) {
            t.row(vec![
                c.id.into(),
                login.user().into(),
                login.database().into(),
                k.into(),
                v.into(),
            ]);
        }
    }
    t
}

/// SHOW PEERS: the `[peers]` entries (this process's own id left out, as PgBouncer does).
fn peers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("peer_id", Int4),
        ("host", Text),
        ("port", Int4),
        ("pool_size", Int4),
    ]);
    let config = shared.config();
    let mut peers: Vec<(i64, &crate::config::Peer)> = (config.peers.iter())
        .filter_map(|(id, p)| Some((id.parse::<i64>().ok()?, p)))
        .filter(|(id, _)| *id != i64::from(config.general.peer_id))
        .collect();
    peers.sort_by_key(|(id, _)| *id);
    for (id, p) in peers {
        t.row(vec![
            id.into(),
            p.host.as_str().into(),
            i64::from(p.port).into(),
            (config.general.default_pool_size as i64).into(),
        ]);
    }
    t
}

fn state(shared: &Shared) -> Table {
    let pools = shared.registry.all();
    let paused = !pools.is_empty() && pools.iter().all(|p| p.is_paused());
    let yes = |b: bool| V::from(if b { "yes" } else { "no" });
    let mut t = Table::new(&[("key", Text), ("value", Text)]);
    t.row(vec!["active".into(), yes(!paused)]);
    t.row(vec!["paused".into(), yes(paused)]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_secs(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp_secs(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(timestamp_secs(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn config_values() {
        assert_eq!(config_value(Some(&toml::Value::Float(30.0))), "30");
        assert_eq!(config_value(Some(&toml::Value::Float(0.5))), "0.5");
        assert_eq!(config_value(Some(&toml::Value::Boolean(true))), "1");
        assert_eq!(config_value(None), "");
    }
}
