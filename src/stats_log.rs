//! Every stats_period: close the period's averages of each pool (SHOW STATS_AVERAGES) and log
//! one line per pool with its load and longest wait, as PgBouncer does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shared::Shared;
use crate::snapshot;

/// Run forever (spawned at start-up). The period is re-read from the config after each one.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut last = Instant::now();
    loop {
        let period = shared.config().general.stats_period.get();
        tokio::time::sleep(period.unwrap_or(Duration::from_secs(60))).await;
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        for v in snapshot::pools(&shared) {
            let p = v.pool.stats.roll(secs);
            if period.is_none() {
                continue;
            }
            let a = p.averages();
            tracing::info!(
                target: "pgmux::stats",
                db = %v.pool.database,
                user = %v.pool.user,
                xacts_per_s = a.xacts,
                queries_per_s = a.queries,
                in_bytes_per_s = a.recv,
                out_bytes_per_s = a.sent,
                xact_us = a.xact_us,
                query_us = a.query_us,
                wait_us = a.wait_us,
                cl_active = v.clients.active,
                cl_waiting = v.clients.waiting,
                cl_idle = v.clients.idle,
                sv_active = v.servers.active,
                sv_idle = v.servers.idle,
                sv_login = v.servers.login,
                saturation = format!("{:.2}", v.saturation()),
                maxwait_s = v.clients.max_wait_us as f64 / 1e6,
                "stats: {} xacts/s, {} queries/s, in {} B/s, out {} B/s, xact {} us, query {} us, \
                 wait {} us; clients {} active {} waiting, servers {} active {} idle, maxwait {:.3} s",
                a.xacts, a.queries, a.recv, a.sent, a.xact_us, a.query_us, a.wait_us,
                v.clients.active, v.clients.waiting, v.servers.active, v.servers.idle,
                v.clients.max_wait_us as f64 / 1e6,
            );
        }
    }
}
