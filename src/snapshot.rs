//! A view of every pool at one moment, for SHOW commands and /metrics: client counts by
//! state (from the client list), server counts by state (from each pool's server list), limits.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clients::ClientCounts;
use crate::pool::{BudgetCounts, Pool};
use crate::server::{unix_us, ServerState};
use crate::shared::Shared;

/// Servers of a pool by state, with PgBouncer's names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerCounts {
    pub active: usize,
    pub idle: usize,
    /// Idle past server_check_delay (pgmux checks liveness at checkout instead: always 0).
    pub used: usize,
    pub tested: usize,
    pub login: usize,
}

impl ServerCounts {
    /// Servers in use or being opened: what counts against the pool's limit.
    pub(crate) fn in_use(&self) -> usize {
        self.active + self.tested + self.login
    }
}

/// One pool at one moment.
pub(crate) struct PoolView {
    pub pool: Arc<Pool>,
    pub clients: ClientCounts,
    pub servers: ServerCounts,
    /// The most servers this pool can have now without its reserve: pool_size, lowered by
    /// max_db_connections / max_user_connections when those are smaller, and by what the
    /// fleet budget leaves it (the slots it holds and those free).
    pub limit: usize,
    /// `[fleet]`: the budget's max_servers and figures (`pool/fleet.rs`).
    pub fleet: Option<(usize, BudgetCounts)>,
}

impl PoolView {
    /// Servers in use over the limit (1.0: every server busy; above 1: reserve servers too).
    pub(crate) fn saturation(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.servers.in_use() as f64 / self.limit as f64
        }
    }
}

/// Every pool, sorted by (database, user).
pub(crate) fn pools(shared: &Shared) -> Vec<PoolView> {
    let now = unix_us();
    let mut per_pool: HashMap<*const Pool, ClientCounts> = HashMap::new();
    for c in shared.clients.all() {
        if let Some(p) = c.pool() {
            per_pool.entry(Arc::as_ptr(p)).or_default().add(&c, now);
        }
    }
    shared
        .registry
        .all()
        .into_iter()
        .map(|pool| {
            let mut servers = ServerCounts {
                login: pool.logins(),
                ..Default::default()
            };
            for s in pool.server_infos() {
                match s.state() {
                    ServerState::Active => servers.active += 1,
                    ServerState::Idle => servers.idle += 1,
                    ServerState::Tested => servers.tested += 1,
                }
            }
            let settings = pool.settings();
            let mut limit = settings.pool_size;
            let (_, db_max) = shared.registry.db_usage(&pool.database);
            let (_, user_max) = shared.registry.user_usage(&pool.target().user);
            for cap in [db_max, user_max] {
                if cap > 0 {
                    limit = limit.min(cap);
                }
            }
            let fleet = pool.budget.as_ref().map(|b| (b.max(), b.counts()));
            if let Some((max, c)) = fleet {
                // What it holds and what the rest of the fleet leaves free.
                limit = limit.min(c.held + max.saturating_sub(c.fleet_held));
            }
            PoolView {
                fleet,
                clients: per_pool
                    .get(&Arc::as_ptr(&pool))
                    .copied()
                    .unwrap_or_default(),
                servers,
                limit,
                pool,
            }
        })
        .collect()
}
