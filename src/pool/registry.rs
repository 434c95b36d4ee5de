//! The registry of pools, one per (database, user), created at first login; and the shared caps.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Limit, Pool, PoolSettings};
use crate::auth::Secret;
use crate::config::{Config, PoolMode};
use crate::server::Target;

/// All pools of this process.
#[derive(Default)]
pub struct Registry {
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    db_limits: Mutex<HashMap<String, Arc<Limit>>>,
    user_limits: Mutex<HashMap<String, Arc<Limit>>>,
    server_ids: Arc<AtomicU64>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry {
            server_ids: Arc::new(AtomicU64::new(1)),
            ..Default::default()
        }
    }

    /// The pool for a client's (database, user), created on first use.
    /// The caller has checked the database exists in `config`.
    pub fn pool(&self, config: &Config, database: &str, user: &str) -> Option<Arc<Pool>> {
        let key = (database.to_string(), user.to_string());
        if let Some(p) = self.pools.lock().get(&key) {
            return Some(p.clone());
        }
        let db = config.database(database)?;
        let g = &config.general;
        let user_cfg = config.users.get(user);
        let server_user = db.user.clone().unwrap_or_else(|| user.to_string());
        let secret = match (&db.user, &db.password) {
            (Some(_), Some(pw)) => Secret::parse(pw).ok(),
            _ => config
                .users
                .get(&server_user)
                .and_then(|u| u.password.as_deref())
                .and_then(|pw| Secret::parse(pw).ok()),
        };
        let mode = config.pool_mode(db, user_cfg);
        let target = Arc::new(Target {
            host: db.host.clone(),
            port: db.port,
            dbname: db.dbname.clone().unwrap_or_else(|| database.to_string()),
            user: server_user.clone(),
            secret,
            connect_timeout: g.server_connect_timeout.get(),
            max_packet_size: g.max_packet_size,
            tcp_keepalive: g.tcp_keepalive,
            tcp_nodelay: g.tcp_nodelay,
            // Session mode keeps a server per client: its statement names need no mapping.
            max_prepared_statements: match mode {
                PoolMode::Session => 0,
                _ => g.max_prepared_statements,
            },
        });
        let settings = PoolSettings {
            mode,
            pool_size: db.pool_size.unwrap_or(g.default_pool_size),
            min_pool_size: db.min_pool_size.unwrap_or(g.min_pool_size),
            reserve_pool_size: db.reserve_pool_size.unwrap_or(g.reserve_pool_size),
            reserve_pool_timeout: g.reserve_pool_timeout.get(),
            query_wait_timeout: g.query_wait_timeout.get(),
            server_idle_timeout: g.server_idle_timeout.get(),
            server_lifetime: g.server_lifetime.get(),
            server_reset_query: g.server_reset_query.clone(),
            server_reset_query_always: g.server_reset_query_always,
        };
        let db_limit = self
            .db_limits
            .lock()
            .entry(database.to_string())
            .or_insert_with(|| {
                Arc::new(Limit::new(
                    db.max_db_connections.unwrap_or(g.max_db_connections),
                ))
            })
            .clone();
        let user_max = user_cfg
            .and_then(|u| u.max_user_connections)
            .unwrap_or(g.max_user_connections);
        let user_limit = self
            .user_limits
            .lock()
            .entry(server_user)
            .or_insert_with(|| Arc::new(Limit::new(user_max)))
            .clone();
        let pool = Arc::new(Pool::new(
            database.to_string(),
            user.to_string(),
            settings,
            target,
            db_limit,
            user_limit,
            self.server_ids.clone(),
        ));
        let mut pools = self.pools.lock();
        if let Some(p) = pools.get(&key) {
            return Some(p.clone()); // another client created it meanwhile
        }
        pool.db_limit.add_member(&pool);
        pool.user_limit.add_member(&pool);
        pools.insert(key, pool.clone());
        Some(pool)
    }

    /// Every pool, for the janitor and the admin console.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools.lock().values().cloned().collect()
    }
}
