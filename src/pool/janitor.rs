//! The janitor: every half second, close servers past server_idle_timeout or
//! server_lifetime, open servers up to min_pool_size, and remove pools of databases reached
//! through "*" that nobody uses (autodb_idle_timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Registry;
use crate::config::Config;

/// Run forever (spawned at start-up); `config` gives the config in force.
pub(crate) async fn run_janitor(
    registry: Arc<Registry>,
    period: Duration,
    config: impl Fn() -> Arc<Config> + Send + 'static,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for pool in registry.each() {
            for (s, reason) in pool.take_expired(now) {
                pool.close_idle_server(s, reason);
            }
            if pool.settings().min_pool_size > 0 {
                let p = pool.clone();
                tokio::spawn(async move { p.fill_min().await });
            }
        }
        let config = config();
        let idle = config.general.autodb_idle_timeout.get();
        for (pool, servers) in registry.remove_unused(&config, idle, now) {
            for s in servers {
                pool.close_idle_server(s, "its pool was removed (unused)");
            }
        }
    }
}
