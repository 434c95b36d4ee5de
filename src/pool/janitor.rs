//! The janitor: once a second, close servers past server_idle_timeout or server_lifetime and
//! open servers up to min_pool_size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Registry;

/// Run forever (spawned at start-up).
pub async fn run_janitor(registry: Arc<Registry>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for pool in registry.all() {
            for (s, reason) in pool.take_expired(now) {
                pool.close(s, false, reason);
            }
            if pool.settings().min_pool_size > 0 {
                let p = pool.clone();
                tokio::spawn(async move { p.fill_min().await });
            }
        }
    }
}
