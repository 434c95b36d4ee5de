//! What a pool counts: totals kept in atomics on the query path, latency histograms, and the
//! per-period averages SHOW STATS_AVERAGES and the stats log line report.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts};

/// Counters kept per pool: relaxed atomics, read at scrape and SHOW time.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Servers handed to clients (PgBouncer's server_assignment_count).
    pub(crate) checkouts: AtomicU64,
    pub(crate) wait_timeouts: AtomicU64,
    pub reserve_opened: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    /// Outages begun: connects failed for a reason that passes, clients held (`outage.rs`).
    pub outages: AtomicU64,
    /// Requests re-sent on another server after a FATAL 57P01 first answer.
    pub resent: AtomicU64,
    /// Idle servers closed because server_check_query failed on them.
    pub check_failures: AtomicU64,
    pub servers_opened: AtomicU64,
    pub(crate) servers_closed: AtomicU64,
    /// Summed age of closed servers, µs.
    pub(crate) server_lifetime_us: AtomicU64,
    pub(crate) total_wait_us: AtomicU64,
    /// Transactions ended (ReadyForQuery 'I' after a request).
    pub xacts: AtomicU64,
    /// Queries: ReadyForQuery messages relayed.
    pub queries: AtomicU64,
    pub(crate) xact_us: AtomicU64,
    pub(crate) query_us: AtomicU64,
    /// Bytes read from clients.
    pub bytes_received: AtomicU64,
    /// Bytes written to clients.
    pub(crate) bytes_sent: AtomicU64,
    /// Named Parse messages from clients (PgBouncer's client parse count).
    pub ps_client_parses: AtomicU64,
    /// Parse messages sent to servers: a statement a server lacked (a miss).
    pub ps_server_parses: AtomicU64,
    /// Uses of a client's statement (Parse, Bind, Describe) that found it on the server.
    pub ps_hits: AtomicU64,
    /// Statements closed on a server to make room (max_prepared_statements).
    pub ps_evictions: AtomicU64,
    /// Bind messages for a named statement pgmux maps.
    pub ps_binds: AtomicU64,
    /// Clients that logged in to this pool (PgBouncer 1.26's client_login_count).
    pub client_logins: AtomicU64,
    /// The totals at the start and end of the last stats_period.
    pub(crate) period: Mutex<Period>,
}

/// The last complete stats period: totals at its start and end, and its length.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Period {
    pub start: Totals,
    pub end: Totals,
    pub secs: f64,
}

impl Period {
    /// Its averages.
    pub(crate) fn averages(&self) -> Averages {
        averages(&self.start, &self.end, self.secs)
    }
}

/// A copy of the totals at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) server_assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) xact_us: u64,
    pub(crate) query_us: u64,
    pub(crate) wait_us: u64,
    pub(crate) servers_closed: u64,
    pub(crate) server_lifetime_us: u64,
    pub(crate) client_parses: u64,
    pub(crate) server_parses: u64,
    pub binds: u64,
    pub(crate) client_logins: u64,
}

/// Rates and mean durations over the last stats_period (PgBouncer's avg_* columns).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Averages {
    /// Per second.
    pub(crate) server_assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub recv: u64,
    pub sent: u64,
    /// Mean duration, µs.
    pub(crate) xact_us: u64,
    pub(crate) query_us: u64,
    pub(crate) wait_us: u64,
    pub(crate) server_lifetime_us: u64,
    /// Per second.
    pub(crate) client_parses: u64,
    pub(crate) server_parses: u64,
    pub binds: u64,
    pub(crate) client_logins: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.server_assignments += o.server_assignments;
        self.xacts += o.xacts;
        self.queries += o.queries;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.xact_us += o.xact_us;
        self.query_us += o.query_us;
        self.wait_us += o.wait_us;
        self.servers_closed += o.servers_closed;
        self.server_lifetime_us += o.server_lifetime_us;
        self.client_parses += o.client_parses;
        self.server_parses += o.server_parses;
        self.binds += o.binds;
        self.client_logins += o.client_logins;
    }
}

impl PoolStats {
    /// Add `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The totals now.
    pub(crate) fn totals(&self) -> Totals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            server_assignments: g(&self.checkouts),
            xacts: g(&self.xacts),
            queries: g(&self.queries),
            bytes_received: g(&self.bytes_received),
            bytes_sent: g(&self.bytes_sent),
            xact_us: g(&self.xact_us),
            query_us: g(&self.query_us),
            wait_us: g(&self.total_wait_us),
            servers_closed: g(&self.servers_closed),
            server_lifetime_us: g(&self.server_lifetime_us),
            client_parses: g(&self.ps_client_parses),
            server_parses: g(&self.ps_server_parses),
            binds: g(&self.ps_binds),
            client_logins: g(&self.client_logins),
        }
    }

    /// Close a stats period of `secs` seconds at the totals now; returns it.
    pub(crate) fn roll(&self, secs: f64) -> Period {
        let now = self.totals();
        let mut p = self.period.lock();
        *p = Period {
            start: p.end,
            end: now,
            secs,
        };
        *p
    }
}

/// The averages between two totals `secs` seconds apart.
pub(crate) fn averages(old: &Totals, new: &Totals, secs: f64) -> Averages {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let rate = |a: u64, b: u64| {
        if secs > 0.0 {
            (d(a, b) as f64 / secs).round() as u64
        } else {
            0
        }
    };
    let mean = |sum: u64, n: u64| sum.checked_div(n).unwrap_or(0);
    let xacts = d(old.xacts, new.xacts);
    let queries = d(old.queries, new.queries);
    let assigned = d(old.server_assignments, new.server_assignments);
    let closed = d(old.servers_closed, new.servers_closed);
    Averages {
        server_assignments: rate(old.server_assignments, new.server_assignments),
        xacts: rate(old.xacts, new.xacts),
        queries: rate(old.queries, new.queries),
        recv: rate(old.bytes_received, new.bytes_received),
        sent: rate(old.bytes_sent, new.bytes_sent),
        xact_us: mean(d(old.xact_us, new.xact_us), xacts),
        query_us: mean(d(old.query_us, new.query_us), queries),
        wait_us: mean(d(old.wait_us, new.wait_us), assigned),
        server_lifetime_us: mean(d(old.server_lifetime_us, new.server_lifetime_us), closed),
        client_parses: rate(old.client_parses, new.client_parses),
        server_parses: rate(old.server_parses, new.server_parses),
        binds: rate(old.binds, new.binds),
        client_logins: rate(old.client_logins, new.client_logins),
    }
}

/// Latency histograms of one pool, labelled with its database, user and pool mode.
#[derive(Debug)]
pub struct Histograms {
    /// A client's wait for a server, seconds.
    pub wait: Histogram,
    /// Transaction duration, seconds.
    pub(crate) xact: Histogram,
    /// Query duration (request to ReadyForQuery), seconds.
    pub query: Histogram,
}

const WAIT_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

impl Histograms {
    /// New, empty histograms for a pool.
    pub fn new(database: &str, user: &str, mode: &str) -> Histograms {
        let make = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help)
                .const_label("database", database)
                .const_label("user", user)
                .const_label("pool_mode", mode)
                .buckets(buckets.to_vec());
            Histogram::with_opts(opts).expect("valid histogram options")
        };
        Histograms {
            wait: make(
                "pgmux_client_wait_seconds",
                "How long clients waited for a server.",
                WAIT_BUCKETS,
            ),
            xact: make(
                "pgmux_transaction_duration_seconds",
                "Transaction durations, from the first request to ReadyForQuery idle.",
                DURATION_BUCKETS,
            ),
            query: make(
                "pgmux_query_duration_seconds",
                "Query durations, from the request to its ReadyForQuery.",
                DURATION_BUCKETS,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_rates_and_means() {
        let old = Totals::default();
        let new = Totals {
            xacts: 100,
            queries: 200,
            xact_us: 1000,
            query_us: 1000,
            bytes_received: 500,
            server_assignments: 10,
            wait_us: 50,
            ..Default::default()
        };
        let a = averages(&old, &new, 10.0);
        assert_eq!((a.xacts, a.queries, a.recv), (10, 20, 50));
        assert_eq!((a.xact_us, a.query_us, a.wait_us), (10, 5, 5));
        assert_eq!(averages(&new, &new, 10.0).xact_us, 0);
    }
}
