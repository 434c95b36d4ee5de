//! The registry of pools, one per (database, user), created once a client has logged in and
//! bounded; pools of databases reached through "*" removed when unused (autodb_idle_timeout);
//! the shared caps; and the per-database flags the admin console sets (paused, disabled).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{Budget, Caps, Limit, Pool, PoolSettings};
use crate::auth::Secret;
use crate::config::{Config, LoadBalance, PoolMode};
use crate::error::{sqlstate, Error};
use crate::net::tls::ServerSide;
use crate::server::{Balance, HostTable, Target};

/// What the admin console set on a database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DbFlags {
    /// PAUSE or KILL: servers are not handed out until RESUME.
    pub paused: bool,
    /// DISABLE: new clients are refused until ENABLE.
    pub disabled: bool,
}

/// Users' secrets by name (from `[users]` and auth_file).
pub(super) type Secrets = std::collections::HashMap<String, Secret>;

/// Servers an auth_query pool opens at most; and lookups on one-off servers (databases
/// reached through "*" without auth_dbname) running at once.
pub(crate) const AUTH_POOL_SIZE: usize = 2;

/// Pools held at most: a login that would add one more is refused (53300). Pools are only
/// made for clients that authenticated, and those of "*" go when unused, so reaching it means
/// very many (database, user) pairs in use at once.
pub(crate) const MAX_POOLS: usize = 10_000;

/// A pool's key: (database, user, runs auth_query only). An auth_query pool has servers of
/// its own, which no client ever holds, so no client's session state can change a lookup.
type Key = (String, String, bool);

/// All pools of this process.
pub struct Registry {
    pools: Mutex<HashMap<Key, Arc<Pool>>>,
    /// Since when each pool of a database reached through "*" (or no longer configured) has
    /// been held by nobody but the registry.
    unused_since: Mutex<HashMap<Key, Instant>>,
    /// Room for auth_query lookups on one-off servers.
    pub(crate) one_off_lookups: tokio::sync::Semaphore,
    db_limits: Mutex<HashMap<String, Arc<Limit>>>,
    user_limits: Mutex<HashMap<String, Arc<Limit>>>,
    /// `[fleet]` budgets by advisory-lock key (`fleet.rs`), held by their pools: a budget
    /// whose pools were all removed ends, and its connection closes.
    budgets: Mutex<HashMap<u32, std::sync::Weak<Budget>>>,
    flags: Mutex<HashMap<String, DbFlags>>,
    server_ids: Arc<AtomicU64>,
    /// Every host servers go to, shared by the pools that list it.
    pub(crate) hosts: HostTable,
}

/// A pool's configuration, resolved from the config for one (database, user).
struct Resolved {
    settings: PoolSettings,
    target: Target,
    db_max: usize,
    server_user: String,
    user_max: usize,
    /// `[fleet]`: the fleet's name, its budget's key and max_servers (not for auth_query's
    /// own pools).
    fleet: Option<(String, u32, usize)>,
}

/// `fetched`: the user's secret from auth_query, used when the server user is the client's
/// and neither `[users]` nor auth_file has a secret for it. `auth`: the pool only runs
/// auth_query (transaction mode, at most [`AUTH_POOL_SIZE`] servers, none kept open).
#[allow(clippy::too_many_arguments)]
fn resolve(
    hosts: &HostTable,
    config: &Config,
    tls: &ServerSide,
    secrets: &Secrets,
    database: &str,
    user: &str,
    fetched: Option<&Secret>,
    auth: bool,
) -> Option<Resolved> {
    let db = config.database(database)?;
    let g = &config.general;
    let user_cfg = config.users.get(user);
    let server_user = db.user.clone().unwrap_or_else(|| user.to_string());
    let secret = match (&db.user, &db.password) {
        (Some(_), Some(pw)) => Secret::parse(pw).ok(),
        _ => secrets
            .get(&server_user)
            .or(fetched.filter(|_| server_user == user))
            .cloned(),
    };
    let (mode, mode_label) = match auth {
        true => (PoolMode::Transaction, "auth_query"),
        false => {
            let mode = config.pool_mode(db, user_cfg);
            (mode, mode.as_str())
        }
    };
    let target = Target {
        hosts: db
            .hosts()
            .into_iter()
            .map(|(host, port)| hosts.get(&host, port))
            .collect(),
        session_attrs: db.target_session_attrs.unwrap_or_default(),
        balance: match db.load_balance() {
            LoadBalance::RoundRobin => Balance::RoundRobin,
            LoadBalance::LeastConnections => Balance::LeastConnections,
            LoadBalance::Disable => Balance::InOrder,
        },
        turn: Default::default(),
        ban_time: g.host_ban_time.get().unwrap_or_default(),
        dns_ttl: g.dns_max_ttl.get().unwrap_or_default(),
        dbname: db.dbname.clone().unwrap_or_else(|| database.to_string()),
        user: server_user.clone(),
        secret,
        connect_timeout: g.server_connect_timeout.get(),
        max_packet_size: g.max_packet_size,
        tcp: crate::net::tcp::TcpOptions::from_general(g),
        // Session mode keeps a server per client: its statement names need no mapping.
        max_prepared_statements: match mode {
            PoolMode::Session => 0,
            _ => g.max_prepared_statements,
        },
        tls: tls.clone(),
    };
    let mut settings = PoolSettings {
        mode,
        mode_label,
        pool_size: db.pool_size.unwrap_or(g.default_pool_size),
        min_pool_size: db.min_pool_size.unwrap_or(g.min_pool_size),
        reserve_pool_size: db.reserve_pool_size.unwrap_or(g.reserve_pool_size),
        reserve_pool_timeout: g.reserve_pool_timeout.get(),
        query_wait_timeout: g.query_wait_timeout.get(),
        server_idle_timeout: g.server_idle_timeout.get(),
        server_lifetime: g.server_lifetime.get(),
        server_reset_query: g.server_reset_query.clone(),
        server_reset_query_always: g.server_reset_query_always,
        track_session_settings: g.track_session_settings,
        notify_queue_limit: g.notify_queue_limit,
        refuse_pinning: g.pin_on_session_state == crate::config::PinOnSessionState::Error
            && mode != PoolMode::Session,
        // Session mode keeps its server anyway: nothing pins there.
        reads_queries: g.track_session_settings
            || !g.track_extra_parameters.is_empty()
            || mode != PoolMode::Session,
        track_extra_parameters: g
            .track_extra_parameters
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        client_idle_timeout: g.client_idle_timeout.get(),
        parks: g.client_park_delay.is_set(),
        max_packet: g.max_packet_size,
        idle_transaction_timeout: g.idle_transaction_timeout.get(),
        server_login_retry: g.server_login_retry.get().unwrap_or_default(),
        server_check_query: Some(g.server_check_query.trim())
            .filter(|q| !q.is_empty())
            .map(Into::into),
        server_check_delay: g.server_check_delay.get().unwrap_or_default(),
        hist: Arc::new(super::Histograms::new(database, user, mode_label)),
        replaced: Default::default(),
    };
    if auth {
        // auth_query's own pool: a few servers, none kept open, no reserve.
        settings.pool_size = settings.pool_size.min(AUTH_POOL_SIZE);
        settings.min_pool_size = 0;
        settings.reserve_pool_size = 0;
    }
    let fleet = config.fleet.as_ref().filter(|_| !auth).map(|f| {
        let user = (f.scope == crate::config::FleetScope::Pool).then_some(target.user.as_str());
        let key = super::fleet_key(&f.name, &target.dbname, user);
        (f.name.clone(), key, f.max_servers)
    });
    Some(Resolved {
        fleet,
        settings,
        target,
        db_max: db.max_db_connections.unwrap_or(g.max_db_connections),
        user_max: user_cfg
            .and_then(|u| u.max_user_connections)
            .unwrap_or(g.max_user_connections),
        server_user,
    })
}

impl Default for Registry {
    fn default() -> Registry {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry {
            pools: Default::default(),
            unused_since: Default::default(),
            one_off_lookups: tokio::sync::Semaphore::new(AUTH_POOL_SIZE),
            db_limits: Default::default(),
            user_limits: Default::default(),
            budgets: Default::default(),
            flags: Default::default(),
            server_ids: Arc::new(AtomicU64::new(1)),
            hosts: Default::default(),
        }
    }

    /// The pool for a client's (database, user), created on first use: only for a client
    /// that authenticated. `fetched`: the user's secret from auth_query, which servers then
    /// log in with (a pool that exists takes it too: the password may have changed).
    pub(crate) fn pool(
        &self,
        config: &Config,
        tls: &ServerSide,
        secrets: &Secrets,
        database: &str,
        user: &str,
        fetched: Option<&Secret>,
    ) -> Result<Arc<Pool>, Error> {
        let key = (database.to_string(), user.to_string(), false);
        let found = self.pools.lock().get(&key).cloned();
        if let Some(p) = found {
            if let Some(s) = fetched {
                p.take_fetched_secret(s);
            }
            return Ok(p);
        }
        let r = resolve(
            &self.hosts,
            config,
            tls,
            secrets,
            database,
            user,
            fetched,
            false,
        )
        .ok_or_else(|| no_such_database(database))?;
        self.insert(key, r)
    }

    /// The pool that runs auth_query on `database` as `auth_user`, created on first use.
    pub(crate) fn auth_pool(
        &self,
        config: &Config,
        tls: &ServerSide,
        secrets: &Secrets,
        database: &str,
        auth_user: &str,
    ) -> Result<Arc<Pool>, Error> {
        let key = (database.to_string(), auth_user.to_string(), true);
        if let Some(p) = self.pools.lock().get(&key) {
            return Ok(p.clone());
        }
        let r = self.resolve_auth(config, tls, secrets, database, auth_user)?;
        self.insert(key, r)
    }

    /// The configuration of auth_query's servers for `database` as `auth_user`.
    fn resolve_auth(
        &self,
        config: &Config,
        tls: &ServerSide,
        secrets: &Secrets,
        database: &str,
        auth_user: &str,
    ) -> Result<Resolved, Error> {
        let r = resolve(
            &self.hosts,
            config,
            tls,
            secrets,
            database,
            auth_user,
            None,
            true,
        );
        r.ok_or_else(|| no_such_database(database))
    }

    /// Where a one-off auth_query server for `database` as `auth_user` goes, and a new server
    /// id for it: no pool is made (the client asking has not authenticated yet).
    pub(crate) fn one_off_target(
        &self,
        config: &Config,
        tls: &ServerSide,
        secrets: &Secrets,
        database: &str,
        auth_user: &str,
    ) -> Result<(Arc<crate::server::Target>, u64), Error> {
        let r = self.resolve_auth(config, tls, secrets, database, auth_user)?;
        let id = self
            .server_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((Arc::new(r.target), id))
    }

    /// Add a new pool, or return the one another login added meanwhile; refused past
    /// [`MAX_POOLS`].
    fn insert(&self, key: Key, r: Resolved) -> Result<Arc<Pool>, Error> {
        if self.pools.lock().len() >= MAX_POOLS {
            tracing::warn!(db = %key.0, user = %key.1, "no new pool: {MAX_POOLS} pools exist");
            return Err(Error::client(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("no more pools allowed ({MAX_POOLS} (database, user) pools in use)"),
            ));
        }
        let (database, user) = (key.0.as_str(), key.1.as_str());
        let db_limit = self
            .db_limits
            .lock()
            .entry(database.to_string())
            .or_insert_with(|| Arc::new(Limit::new(r.db_max)))
            .clone();
        let user_limit = self
            .user_limits
            .lock()
            .entry(r.server_user)
            .or_insert_with(|| Arc::new(Limit::new(r.user_max)))
            .clone();
        let budget = r.fleet.map(|(name, key, max)| {
            let mut budgets = self.budgets.lock();
            budgets.retain(|_, b| b.strong_count() > 0);
            match budgets.get(&key).and_then(std::sync::Weak::upgrade) {
                Some(b) => b,
                None => {
                    let b = Budget::start(&name, key, max);
                    budgets.insert(key, Arc::downgrade(&b));
                    b
                }
            }
        });
        let pool = Arc::new(Pool::new(
            database.to_string(),
            user.to_string(),
            r.settings,
            Arc::new(r.target),
            Caps {
                db_limit,
                user_limit,
                budget,
            },
            self.server_ids.clone(),
        ));
        let mut pools = self.pools.lock();
        if let Some(p) = pools.get(&key) {
            return Ok(p.clone()); // another client created it meanwhile
        }
        if self.flags(database).paused {
            pool.pause();
        }
        pool.db_limit.add_member(&pool);
        pool.user_limit.add_member(&pool);
        if let Some(b) = &pool.budget {
            b.add_pool(&pool);
        }
        pools.insert(key, pool.clone());
        Ok(pool)
    }

    /// Every pool, in no order (the janitor).
    pub fn each(&self) -> Vec<Arc<Pool>> {
        self.pools.lock().values().cloned().collect()
    }

    /// Every pool by (database, user, mode), for the admin console.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v = self.each();
        v.sort_by(|a, b| {
            (&a.database, &a.user, a.settings().mode_label).cmp(&(
                &b.database,
                &b.user,
                b.settings().mode_label,
            ))
        });
        v
    }

    /// Remove the pools nobody holds of databases reached through "*" or no longer
    /// configured: once unused for `idle` (autodb_idle_timeout; `None`: never), or at once if
    /// they never opened a server (a database name Postgres does not have). Their idle
    /// servers are returned, to be closed.
    pub(crate) fn remove_unused(
        &self,
        config: &Config,
        idle: Option<std::time::Duration>,
        now: Instant,
    ) -> Vec<(Arc<Pool>, Vec<Box<crate::server::Server>>)> {
        // Caps no pool counts against any more (their pools went on an earlier pass).
        self.db_limits
            .lock()
            .retain(|_, l| Arc::strong_count(l) > 1);
        self.user_limits
            .lock()
            .retain(|_, l| Arc::strong_count(l) > 1);
        let mut removed = Vec::new();
        let mut pools = self.pools.lock();
        let mut since = self.unused_since.lock();
        pools.retain(|key, pool| {
            let removable = !config.databases.contains_key(&key.0);
            // Nobody but the registry holds it: no client, no login, no admin command.
            if !removable || Arc::strong_count(pool) > 1 {
                since.remove(key);
                return true;
            }
            let first = *since.entry(key.clone()).or_insert(now);
            let never_connected = pool
                .stats
                .servers_opened
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0;
            let expired = idle.is_some_and(|t| now.duration_since(first) >= t);
            if !(never_connected || expired) {
                return true;
            }
            since.remove(key);
            removed.push(pool.clone());
            false
        });
        drop((pools, since));
        removed
            .into_iter()
            .map(|p| {
                tracing::info!(db = %p.database, user = %p.user, "pool removed: unused");
                let idle = p.take_all_idle();
                (p, idle)
            })
            .collect()
    }

    /// The pools of one database, or of all when `database` is `None`.
    pub fn of(&self, database: Option<&str>) -> Vec<Arc<Pool>> {
        let mut v = self.all();
        v.retain(|p| database.map_or(true, |d| p.database == d));
        v
    }

    /// Apply a new config to every pool: sizes, timeouts, modes, targets and caps. Pools of
    /// a database no longer configured keep their old settings until their clients leave.
    pub(crate) fn reconfigure(&self, config: &Config, tls: &ServerSide, secrets: &Secrets) {
        let pools: Vec<(bool, Arc<Pool>)> = self
            .pools
            .lock()
            .iter()
            .map(|(k, p)| (k.2, p.clone()))
            .collect();
        for (auth, pool) in pools {
            // A secret auth_query gave stays while the database still uses auth_query.
            let target = pool.target();
            let fetched = config
                .database(&pool.database)
                .and_then(|db| config.auth_lookup(db, &pool.database))
                .and(target.secret.as_ref())
                .filter(|_| !auth);
            let (db, user) = (&pool.database, &pool.user);
            let Some(r) = resolve(&self.hosts, config, tls, secrets, db, user, fetched, auth)
            else {
                continue;
            };
            pool.db_limit.set_max(r.db_max);
            pool.user_limit.set_max(r.user_max);
            pool.reconfigure(r.settings, r.target);
        }
    }

    /// The admin console's flags for a database.
    pub(crate) fn flags(&self, database: &str) -> DbFlags {
        self.flags.lock().get(database).copied().unwrap_or_default()
    }

    /// Change a database's flags (`None`: every database configured or seen).
    pub(crate) fn set_flags(
        &self,
        database: Option<&str>,
        names: &[String],
        f: impl Fn(&mut DbFlags),
    ) {
        // Taken before the flags lock: `pool()` takes the pools lock, then the flags lock.
        let seen: Vec<String> = self.pools.lock().keys().map(|k| k.0.clone()).collect();
        let mut flags = self.flags.lock();
        match database {
            Some(d) => f(flags.entry(d.to_string()).or_default()),
            None => {
                // Configured databases, those reached through "*" so far, and any flagged.
                for n in names.iter().chain(&seen) {
                    flags.entry(n.clone()).or_default();
                }
                for v in flags.values_mut() {
                    f(v);
                }
            }
        }
    }

    /// How many pools there are.
    pub fn len(&self) -> usize {
        self.pools.lock().len()
    }

    /// Whether there is no pool.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Servers open against a database's cap, and that cap (0: none).
    pub(crate) fn db_usage(&self, database: &str) -> (usize, usize) {
        self.db_limits
            .lock()
            .get(database)
            .map(|l| (l.used(), l.max()))
            .unwrap_or((0, 0))
    }

    /// Servers open against a server user's cap, and that cap (0: none).
    pub(crate) fn user_usage(&self, user: &str) -> (usize, usize) {
        self.user_limits
            .lock()
            .get(user)
            .map(|l| (l.used(), l.max()))
            .unwrap_or((0, 0))
    }
}

/// The error for a database `config` does not have.
fn no_such_database(database: &str) -> Error {
    Error::client(
        sqlstate::INVALID_CATALOG_NAME,
        format!("database \"{database}\" does not exist"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_bounded_and_unused_ones_of_the_star_entry_go() {
        let config = Config::parse(
            "[databases.\"*\"]\nhost = \"127.0.0.1\"\nport = 1\n\
             [databases.fixed]\nhost = \"127.0.0.1\"\nport = 1\n",
        )
        .unwrap();
        let tls = ServerSide {
            mode: crate::config::SslMode::Disable,
            connector: None,
        };
        let secrets = Secrets::default();
        let r = Registry::new();
        let fixed = r.pool(&config, &tls, &secrets, "fixed", "u", None).unwrap();
        let held: Vec<_> = (1..MAX_POOLS)
            .map(|i| {
                r.pool(&config, &tls, &secrets, &format!("db{i}"), "u", None)
                    .unwrap()
            })
            .collect();
        let e = r
            .pool(&config, &tls, &secrets, "one_more", "u", None)
            .unwrap_err();
        assert_eq!(e.sqlstate().0, sqlstate::TOO_MANY_CONNECTIONS);
        // Held by their clients: none goes.
        let now = Instant::now();
        assert!(r.remove_unused(&config, None, now).is_empty());
        // Let go: those of "*" (which never opened a server) go, the configured one stays.
        drop((held, fixed));
        assert_eq!(r.remove_unused(&config, None, now).len(), MAX_POOLS - 1);
        assert_eq!(r.len(), 1);
        assert!(r
            .pool(&config, &tls, &secrets, "one_more", "u", None)
            .is_ok());
        // The caps of removed pools go on the next pass.
        r.remove_unused(&config, None, now);
        assert_eq!(r.db_limits.lock().len(), 2);
    }
}
