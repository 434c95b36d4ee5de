//! `[metrics] pgbouncer_names = true`: the series the prometheus-community pgbouncer_exporter
//! (v0.12) makes of PgBouncer's console, made of pgmux's own SHOW tables (so the two can never
//! disagree): its dashboards and the pgbouncer mixin's alerts work without a second container.
//! Both stats families are served: `pgbouncer_stats_totals_*` (exporter 0.11 and later) and
//! `pgbouncer_stats_*` (before 0.11, and what the mixin's dashboards still query). Left out:
//! `pgbouncer_client_connections` (labelled by the client-chosen application_name, so
//! unbounded) and the exporter's own build info.

use std::borrow::Cow;
use std::fmt::Write;

use crate::admin::rows::{Table, V};
use crate::admin::show::show;
use crate::shared::Shared;

/// One series family: name, help, type, and the column it reads with its scale.
struct Family {
    name: Cow<'static, str>,
    help: &'static str,
    counter: bool,
    column: &'static str,
    scale: f64,
}

const fn gauge(name: &'static str, column: &'static str, help: &'static str) -> Family {
    Family {
        name: Cow::Borrowed(name),
        help,
        counter: false,
        column,
        scale: 1.0,
    }
}

/// Microseconds to seconds.
const US: f64 = 1e-6;

const LISTS: &[Family] = &[
    gauge("pgbouncer_databases", "databases", "Count of databases"),
    gauge("pgbouncer_users", "users", "Count of users"),
    gauge("pgbouncer_pools", "pools", "Count of pools"),
    gauge(
        "pgbouncer_free_clients",
        "free_clients",
        "Count of free clients",
    ),
    gauge(
        "pgbouncer_used_clients",
        "used_clients",
        "Count of used clients",
    ),
    gauge(
        "pgbouncer_login_clients",
        "login_clients",
        "Count of clients in login state",
    ),
    gauge(
        "pgbouncer_free_servers",
        "free_servers",
        "Count of free servers",
    ),
    gauge(
        "pgbouncer_used_servers",
        "used_servers",
        "Count of used servers",
    ),
    gauge(
        "pgbouncer_cached_dns_names",
        "dns_names",
        "Count of DNS names in the cache",
    ),
    gauge(
        "pgbouncer_cached_dns_zones",
        "dns_zones",
        "Count of DNS zones in the cache",
    ),
    gauge(
        "pgbouncer_in_flight_dns_queries",
        "dns_queries",
        "Count of in-flight DNS queries",
    ),
];

const DATABASES: &[Family] = &[
    gauge(
        "pgbouncer_databases_pool_size",
        "pool_size",
        "Maximum number of server connections",
    ),
    gauge(
        "pgbouncer_databases_reserve_pool",
        "reserve_pool_size",
        "Maximum number of additional connections for this database",
    ),
    gauge(
        "pgbouncer_databases_max_connections",
        "max_connections",
        "Maximum number of allowed connections for this database",
    ),
    gauge(
        "pgbouncer_databases_current_connections",
        "current_connections",
        "Current number of connections for this database",
    ),
    gauge(
        "pgbouncer_databases_paused",
        "paused",
        "1 if this database is currently paused, else 0",
    ),
    gauge(
        "pgbouncer_databases_disabled",
        "disabled",
        "1 if this database is currently disabled, else 0",
    ),
];
const DATABASE_LABELS: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_mode",
];

const POOLS: &[Family] = &[
    gauge(
        "pgbouncer_pools_client_active_connections",
        "cl_active",
        "Client connections linked to server connection and able to process queries, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_client_active_cancel_connections",
        "cl_active_cancel_req",
        "Client connections that have forwarded query cancellations to the server and are waiting for the server response",
    ),
    gauge(
        "pgbouncer_pools_client_waiting_connections",
        "cl_waiting",
        "Client connections waiting on a server connection, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_client_waiting_cancel_connections",
        "cl_waiting_cancel_req",
        "Client connections that have not forwarded query cancellations to the server yet",
    ),
    gauge(
        "pgbouncer_pools_server_active_connections",
        "sv_active",
        "Server connections linked to a client connection, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_server_active_cancel_connections",
        "sv_active_cancel",
        "Server connections that are currently forwarding a cancel request.",
    ),
    gauge(
        "pgbouncer_pools_server_being_canceled_connections",
        "sv_being_canceled",
        "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed that were sent to cancel a query on this server.",
    ),
    gauge(
        "pgbouncer_pools_server_idle_connections",
        "sv_idle",
        "Server connections idle and ready for a client query, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_server_used_connections",
        "sv_used",
        "Server connections idle more than server_check_delay, needing server_check_query, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_server_testing_connections",
        "sv_tested",
        "Server connections currently running either server_reset_query or server_check_query, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_server_login_connections",
        "sv_login",
        "Server connections currently in the process of logging in, shown as connection",
    ),
    gauge(
        "pgbouncer_pools_client_maxwait_seconds",
        "maxwait",
        "Age of oldest unserved client connection, shown as second",
    ),
];
const POOL_LABELS: &[&str] = &["database", "user"];

/// The stats counters: (name after the prefix, SHOW STATS_TOTALS column, SHOW STATS column,
/// scale, help, in the pre-0.11 family too).
#[rustfmt::skip]
const STATS: &[(&str, &str, &str, f64, &str, bool)] = &[
    ("queries_pooled_total", "query_count", "total_query_count", 1.0, "Total number of SQL queries pooled", true),
    ("queries_duration_seconds_total", "query_time", "total_query_time", US, "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries", true),
    ("received_bytes_total", "bytes_received", "total_received", 1.0, "Total volume in bytes of network traffic received by pgbouncer, shown as bytes", true),
    ("sent_bytes_total", "bytes_sent", "total_sent", 1.0, "Total volume in bytes of network traffic sent by pgbouncer, shown as bytes", true),
    ("client_wait_seconds_total", "wait_time", "total_wait_time", US, "Time spent by clients waiting for a server in seconds", true),
    ("sql_transactions_pooled_total", "xact_count", "total_xact_count", 1.0, "Total number of SQL transactions pooled", true),
    ("server_in_transaction_seconds_total", "xact_time", "total_xact_time", US, "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries", true),
    ("client_parses_total", "client_parse_count", "total_client_parse_count", 1.0, "Total number of prepared statement Parse messages received from clients", false),
    ("server_parses_total", "server_parse_count", "total_server_parse_count", 1.0, "Total number of prepared statement Parse messages sent by pgbouncer to PostgreSQL", false),
    ("binds_total", "bind_count", "total_bind_count", 1.0, "Total number of prepared statements readied for execution with a Bind message", false),
    ("server_assignments_total", "server_assignment_count", "total_server_assignment_count", 1.0, "Total number of client connections which have been served since process start", false),
];

/// A label value or sample text as the exposition format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, counter: bool) {
    let kind = if counter { "counter" } else { "gauge" };
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn number(v: &V, scale: f64) -> Option<f64> {
    v.0.as_deref()?.parse::<f64>().ok().map(|n| n * scale)
}

/// One family per column of `t`, one series per row, labelled with `labels` (NULL as "").
fn table_families(out: &mut String, t: &Table, families: &[Family], labels: &[&str]) {
    let label_cols: Vec<Option<usize>> = labels.iter().map(|l| t.column(l)).collect();
    for f in families {
        let Some(c) = t.column(f.column) else {
            continue;
        };
        header(out, &f.name, f.help, f.counter);
        for row in t.rows() {
            let Some(v) = number(&row[c], f.scale) else {
                continue;
            };
            let ls: Vec<String> = labels
                .iter()
                .zip(&label_cols)
                .map(|(l, c)| {
                    let v = c.and_then(|c| row[c].0.as_deref()).unwrap_or("");
                    format!("{l}=\"{}\"", escape(v))
                })
                .collect();
            let _ = writeln!(out, "{}{{{}}} {v}", f.name, ls.join(","));
        }
    }
}

/// The stats counters under `prefix`, read from the SHOW STATS_TOTALS (`totals`) or SHOW
/// STATS columns; the pre-0.11 family has only the first seven.
fn stats_families(prefix: &str, totals: bool) -> Vec<Family> {
    STATS
        .iter()
        .filter(|s| totals || s.5)
        .map(|&(name, totals_col, stats_col, scale, help, _)| Family {
            name: Cow::Owned(format!("{prefix}{name}")),
            help,
            counter: true,
            column: if totals { totals_col } else { stats_col },
            scale,
        })
        .collect()
}

/// Append the exporter's series to `out` (Prometheus text format).
pub(crate) fn render(shared: &Shared, out: &mut String) {
    let table = |what: &str| show(shared, what).expect("a SHOW command pgmux answers");
    header(out, "pgbouncer_up", "The pgbouncer scrape succeeded", false);
    out.push_str("pgbouncer_up 1\n");
    header(
        out,
        "pgbouncer_version_info",
        "The pgbouncer version info",
        false,
    );
    let _ = writeln!(
        out,
        "pgbouncer_version_info{{version=\"{}\"}} 1",
        escape(&crate::admin::show::version())
    );
    let g = &shared.config().general;
    header(
        out,
        "pgbouncer_config_max_client_connections",
        "Config maximum number of client connections",
        false,
    );
    let _ = writeln!(
        out,
        "pgbouncer_config_max_client_connections {}",
        g.max_client_conn
    );
    header(
        out,
        "pgbouncer_config_max_user_connections",
        "Config maximum number of server connections per user",
        false,
    );
    let _ = writeln!(
        out,
        "pgbouncer_config_max_user_connections {}",
        g.max_user_connections
    );

    // SHOW LISTS: one unlabelled gauge per row.
    let lists = table("LISTS");
    for f in LISTS {
        let row = lists
            .rows()
            .iter()
            .find(|r| r[0].0.as_deref() == Some(f.column));
        if let Some(v) = row.and_then(|r| number(&r[1], 1.0)) {
            header(out, &f.name, f.help, false);
            let _ = writeln!(out, "{} {v}", f.name);
        }
    }
    table_families(out, &table("DATABASES"), DATABASES, DATABASE_LABELS);
    // maxwait is whole seconds, as the exporter reads it (it ignores maxwait_us).
    table_families(out, &table("POOLS"), POOLS, POOL_LABELS);
    let totals = stats_families("pgbouncer_stats_totals_", true);
    table_families(out, &table("STATS_TOTALS"), &totals, &["database"]);
    let legacy = stats_families("pgbouncer_stats_", false);
    table_families(out, &table("STATS"), &legacy, &["database"]);
}
