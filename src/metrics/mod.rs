//! The metrics endpoint: Prometheus text built with the prometheus crate from the atomics
//! and histograms pools keep (read at scrape time: the query path takes no lock for metrics),
//! plus /health and /ready.

mod http;
mod pgbouncer;
mod ready;

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::Collector;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::pool::PoolStats;
use crate::shared::Shared;
use crate::snapshot;
pub(crate) use http::serve;
pub(crate) use ready::readiness;

const POOL_LABELS: &[&str] = &["database", "user", "pool_mode"];

/// Which of a pool's totals a counter shows.
type Total = fn(&PoolStats) -> &AtomicU64;

/// Every per-pool counter: name, help, and the total it reads.
const POOL_COUNTERS: &[(&str, &str, Total)] = &[
    (
        "pgmux_pool_transactions_total",
        "Transactions completed.",
        |s| &s.xacts,
    ),
    (
        "pgmux_pool_queries_total",
        "Queries completed (ReadyForQuery messages).",
        |s| &s.queries,
    ),
    (
        "pgmux_pool_received_bytes_total",
        "Bytes received from clients.",
        |s| &s.bytes_received,
    ),
    (
        "pgmux_pool_sent_bytes_total",
        "Bytes sent to clients.",
        |s| &s.bytes_sent,
    ),
    (
        "pgmux_pool_server_assignments_total",
        "Times a server was given to a client.",
        |s| &s.checkouts,
    ),
    (
        "pgmux_pool_query_wait_timeouts_total",
        "Clients that hit query_wait_timeout.",
        |s| &s.wait_timeouts,
    ),
    (
        "pgmux_pool_reserve_servers_opened_total",
        "Servers opened from the reserve pool.",
        |s| &s.reserve_opened,
    ),
    (
        "pgmux_pool_server_connect_failures_total",
        "Server connections or logins that failed.",
        |s| &s.connect_failures,
    ),
    (
        "pgmux_pool_client_logins_total",
        "Clients that logged in to the pool.",
        |s| &s.client_logins,
    ),
    (
        "pgmux_pool_servers_opened_total",
        "Server connections opened.",
        |s| &s.servers_opened,
    ),
    (
        "pgmux_pool_servers_closed_total",
        "Server connections closed.",
        |s| &s.servers_closed,
    ),
    (
        "pgmux_pool_prepared_hits_total",
        "Uses of a prepared statement the server already had.",
        |s| &s.ps_hits,
    ),
    (
        "pgmux_pool_prepared_misses_total",
        "Prepared statements pgmux had to prepare on a server.",
        |s| &s.ps_server_parses,
    ),
    (
        "pgmux_pool_prepared_evictions_total",
        "Prepared statements closed on a server to make room.",
        |s| &s.ps_evictions,
    ),
    (
        "pgmux_pool_outages_total",
        "Times the pool found it could not open servers and began holding its clients.",
        |s| &s.outages,
    ),
    (
        "pgmux_pool_requests_resent_total",
        "Requests re-sent on another server because their first answer was FATAL 57P01 \
         (the request never ran).",
        |s| &s.resent,
    ),
    (
        "pgmux_pool_server_check_failures_total",
        "Idle servers closed because server_check_query failed on them.",
        |s| &s.check_failures,
    ),
];

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn int_gauge(r: &Registry, name: &str, help: &str, v: i64) {
    let g = IntGauge::new(name, help).expect("valid metric");
    g.set(v);
    r.register(Box::new(g)).expect("unique metric");
}

/// Every metric family, gathered now.
pub(crate) fn gather(shared: &Shared) -> Vec<prometheus::proto::MetricFamily> {
    let r = Registry::new();
    let config = shared.config();

    // The process.
    int_gauge(&r, "pgmux_up", "1 while pgmux runs.", 1);
    let build = int_gauge_vec(&r, "pgmux_build_info", "pgmux's version.", &["version"]);
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let uptime =
        Gauge::new("pgmux_uptime_seconds", "Seconds since pgmux started.").expect("valid metric");
    uptime.set(shared.started.elapsed().as_secs_f64());
    r.register(Box::new(uptime)).expect("unique metric");
    int_gauge(
        &r,
        "pgmux_client_connections",
        "Client connections now (logging in or logged in, admin console included).",
        shared.clients.count() as i64,
    );
    let mut parked = 0;
    shared.clients.each(|c| parked += i64::from(c.parked()));
    int_gauge(
        &r,
        "pgmux_clients_parked",
        "Idle clients parked without a task of their own (client_park_delay).",
        parked,
    );
    int_gauge(
        &r,
        "pgmux_max_client_conn",
        "The max_client_conn setting.",
        config.general.max_client_conn as i64,
    );
    int_gauge(
        &r,
        "pgmux_shutting_down",
        "1 once a graceful shutdown has begun.",
        i64::from(shared.run.shutting_down()),
    );
    let failures = counter_vec(
        &r,
        "pgmux_client_login_failures_total",
        "Client logins that failed, by reason.",
        &["reason"],
    );
    for (why, n) in shared.login_failures() {
        failures.with_label_values(&[why.as_str()]).inc_by(n);
    }
    let lookups = counter_vec(
        &r,
        "pgmux_auth_query_lookups_total",
        "Logins that needed auth_query: answered from the cache (hit), sent to Postgres \
         (query), and queries that failed (error).",
        &["result"],
    );
    let cache = &shared.auth_cache;
    for (result, n) in [
        ("hit", &cache.hits),
        ("query", &cache.queries),
        ("error", &cache.errors),
    ] {
        lookups
            .with_label_values(&[result])
            .inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
    }
    int_gauge(
        &r,
        "pgmux_auth_query_cached",
        "auth_query answers kept now.",
        cache.len() as i64,
    );

    // Pools.
    let clients = int_gauge_vec(
        &r,
        "pgmux_pool_clients",
        "Clients of the pool by state: active (holding a server), waiting (for a server), idle.",
        &["database", "user", "pool_mode", "state"],
    );
    let pinned = int_gauge_vec(
        &r,
        "pgmux_pool_clients_pinned",
        "Clients of the pool pinned to their server (transaction and statement mode) by state \
         that cannot move, by reason (a client pinned for two reasons counts under both).",
        &["database", "user", "pool_mode", "reason"],
    );
    let servers = int_gauge_vec(
        &r,
        "pgmux_pool_servers",
        "Servers of the pool by state (PgBouncer's sv_*): active, idle, used, tested, login.",
        &["database", "user", "pool_mode", "state"],
    );
    let g = |name: &str, help: &str| int_gauge_vec(&r, name, help, POOL_LABELS);
    let pool_size = g("pgmux_pool_size", "The pool_size in force.");
    let reserve = g("pgmux_pool_reserve_size", "The reserve_pool_size in force.");
    let limit = g(
        "pgmux_pool_limit",
        "Servers the pool may open now without its reserve: pool_size, lowered by \
         max_db_connections / max_user_connections when smaller.",
    );
    let paused = g("pgmux_pool_paused", "1 while PAUSE or KILL holds the pool.");
    let outage = g(
        "pgmux_pool_outage",
        "1 while no server can be opened: clients wait and pgmux retries (server_login_retry).",
    );
    let saturation = gauge_vec(
        &r,
        "pgmux_pool_saturation",
        "Servers in use (active, tested, logging in) over pgmux_pool_limit; 1 = every server busy.",
        POOL_LABELS,
    );
    let max_wait = gauge_vec(
        &r,
        "pgmux_pool_max_wait_seconds",
        "How long the oldest waiting client has waited for a server.",
        POOL_LABELS,
    );
    let fg = |name: &str, help: &str| {
        int_gauge_vec(&r, name, help, &["database", "user", "pool_mode", "fleet"])
    };
    let fleet_held = fg(
        "pgmux_fleet_slots_held",
        "[fleet]: servers this replica may have under the pool's fleet budget (the advisory \
         locks its budget connection holds).",
    );
    let fleet_total = fg(
        "pgmux_fleet_slots_total",
        "[fleet]: slots the whole fleet holds under the pool's budget, as last read (every \
         second while this replica holds or wants slots).",
    );
    let fleet_max = fg(
        "pgmux_fleet_max_servers",
        "[fleet]: max_servers of the pool's fleet budget.",
    );
    let fleet_replicas = fg(
        "pgmux_fleet_replicas",
        "[fleet]: replicas with a connection to the pool's budget, as last read.",
    );
    let fleet_up = fg(
        "pgmux_fleet_connected",
        "[fleet]: 1 while the budget connection is up (without it no server opens).",
    );
    let counters: Vec<_> = POOL_COUNTERS
        .iter()
        .map(|(name, help, get)| (counter_vec(&r, name, help, POOL_LABELS), get))
        .collect();
    let mut hists: Vec<prometheus::proto::MetricFamily> = Vec::new();
    for v in snapshot::pools(shared) {
        let pool = &v.pool;
        let settings = pool.settings();
        let mode = settings.mode_label;
        let labels = [pool.database.as_str(), pool.user.as_str(), mode];
        let with = |state: &'static str| [labels[0], labels[1], labels[2], state];
        clients
            .with_label_values(&with("active"))
            .set(v.clients.active as i64);
        clients
            .with_label_values(&with("waiting"))
            .set(v.clients.waiting as i64);
        clients
            .with_label_values(&with("idle"))
            .set(v.clients.idle as i64);
        if settings.mode != crate::config::PoolMode::Session {
            let reasons = crate::clients::PIN_REASONS.iter().zip(v.clients.pinned);
            // A LISTEN never pins: it moves to the pool's listener.
            for (reason, n) in reasons.filter(|(r, _)| **r != "LISTEN") {
                pinned.with_label_values(&with(reason)).set(n as i64);
            }
        }
        let s = &v.servers;
        for (state, n) in [
            ("active", s.active),
            ("idle", s.idle),
            ("used", s.used),
            ("tested", s.tested),
            ("login", s.login),
        ] {
            servers.with_label_values(&with(state)).set(n as i64);
        }
        pool_size
            .with_label_values(&labels)
            .set(settings.pool_size as i64);
        reserve
            .with_label_values(&labels)
            .set(settings.reserve_pool_size as i64);
        limit.with_label_values(&labels).set(v.limit as i64);
        paused
            .with_label_values(&labels)
            .set(i64::from(pool.is_paused()));
        outage
            .with_label_values(&labels)
            .set(i64::from(pool.in_outage()));
        saturation.with_label_values(&labels).set(v.saturation());
        if let (Some((max, c)), Some(b)) = (v.fleet, &pool.budget) {
            let l = [labels[0], labels[1], labels[2], b.fleet.as_str()];
            fleet_held.with_label_values(&l).set(c.held as i64);
            fleet_total.with_label_values(&l).set(c.fleet_held as i64);
            fleet_max.with_label_values(&l).set(max as i64);
            fleet_replicas.with_label_values(&l).set(c.replicas as i64);
            fleet_up.with_label_values(&l).set(i64::from(c.connected));
        }
        max_wait
            .with_label_values(&labels)
            .set(v.clients.max_wait_us as f64 / 1e6);
        for (counter, get) in &counters {
            counter
                .with_label_values(&labels)
                .inc_by(get(&pool.stats).load(Ordering::Relaxed));
        }
        let h = pool.histograms();
        for hist in [&h.wait, &h.xact, &h.query] {
            for fam in hist.collect() {
                match hists.iter_mut().find(|f| f.name() == fam.name()) {
                    Some(f) => f.mut_metric().extend(fam.get_metric().iter().cloned()),
                    None => hists.push(fam),
                }
            }
        }
    }
    // Hosts, shared by the pools that list them.
    let hl = &["host"];
    let host_servers = int_gauge_vec(
        &r,
        "pgmux_host_servers",
        "Servers open to the host (host:port as configured), from every pool.",
        hl,
    );
    let host_banned = int_gauge_vec(
        &r,
        "pgmux_host_banned",
        "1 while the host is banned (host_ban_time after a failed connect or check): new \
         servers try it only after the other hosts.",
        hl,
    );
    let host_failures = counter_vec(
        &r,
        "pgmux_host_failures_total",
        "Connects to the host and server_check_query runs on it that failed.",
        hl,
    );
    for h in shared.registry.hosts.all() {
        let l = [h.to_string()];
        let l = [l[0].as_str()];
        host_servers.with_label_values(&l).set(h.servers() as i64);
        host_banned.with_label_values(&l).set(i64::from(h.banned()));
        host_failures.with_label_values(&l).inc_by(h.failures());
    }
    let mut families = r.gather();
    families.extend(hists);
    families.sort_by(|a, b| a.name().cmp(b.name()));
    families
}

/// The Prometheus text exposition of every metric (and with `[metrics] pgbouncer_names`,
/// the pgbouncer_exporter's series too).
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&gather(shared), &mut out)
        .expect("text encoding into a Vec");
    let mut text = String::from_utf8(out).expect("the text format is UTF-8");
    if shared.config().metrics.pgbouncer_names {
        pgbouncer::render(shared, &mut text);
    }
    text
}
