//! The secret a logging-in user has: from `[users]` or auth_file, else from auth_query run on
//! the (auth_dbname, auth_user) auth_query pool (servers no client holds), or on a one-off
//! server for a database reached through "*", and kept for auth_query_cache_ttl.

use crate::auth::query::{self, Answer, Lookup};
use crate::auth::Secret;
use crate::boxed::boxed;
use crate::config::AuthLookup;
use crate::error::{sqlstate, Error, Result};
use crate::shared::{Live, Shared};

/// What pgmux knows of a user at login.
pub(super) struct UserSecret {
    /// The user exists (configured, or auth_query returned a row).
    pub known: bool,
    /// Its secret, if it has one.
    pub secret: Option<Secret>,
    /// The lookup that answered, when auth_query did (forgotten if authentication fails).
    pub fetched: Option<OwnedLookup>,
}

/// An auth_query lookup, kept past the borrow of the config.
pub(super) struct OwnedLookup {
    dbname: String,
    auth_user: String,
    query: String,
    user: String,
}

impl OwnedLookup {
    fn new(how: AuthLookup, user: &str) -> OwnedLookup {
        OwnedLookup {
            dbname: how.dbname.into(),
            auth_user: how.user.into(),
            query: how.query.into(),
            user: user.into(),
        }
    }

    fn lookup(&self) -> Lookup<'_> {
        Lookup {
            dbname: &self.dbname,
            auth_user: &self.auth_user,
            query: &self.query,
            user: &self.user,
        }
    }

    /// The secret failed an authentication: ask Postgres again next time.
    pub(super) fn forget(&self, shared: &Shared) {
        shared.auth_cache.forget(&self.lookup());
    }
}

/// How auth_query runs for a client of `database`: its entry's settings, or for the admin
/// console `[general]`'s when auth_dbname is set there.
pub(super) fn auth_lookup<'a>(live: &'a Live, database: &'a str) -> Option<AuthLookup<'a>> {
    let config = &live.config;
    if crate::config::is_admin_db(database) {
        let d = config.general.auth_dbname.as_deref()?;
        return config.auth_lookup(config.database(d)?, d);
    }
    config.auth_lookup(config.database(database)?, database)
}

/// The secret of `user`, a client of `database`.
pub(super) async fn user_secret(
    shared: &Shared,
    live: &Live,
    database: &str,
    user: &str,
) -> Result<UserSecret> {
    let configured = |secret: Option<&Secret>| UserSecret {
        known: true,
        secret: secret.cloned(),
        fetched: None,
    };
    if let Some(s) = live.secrets.get(user) {
        return Ok(configured(Some(s)));
    }
    if live.config.users.contains_key(user) {
        return Ok(configured(None));
    }
    let Some(how) = auth_lookup(live, database) else {
        return Ok(UserSecret {
            known: false,
            secret: None,
            fetched: None,
        });
    };
    // The database named by the client itself (through "*", no auth_dbname) gets no pool.
    let pooled = how.dbname != database || live.config.databases.contains_key(how.dbname);
    let owned = OwnedLookup::new(how, user);
    // Boxed: the lookup's checkout is large, and most logins never take this branch.
    let answer = boxed(fetch(shared, live, how, &owned.lookup(), pooled)).await?;
    Ok(match answer {
        Answer::NoSuchUser => UserSecret {
            known: false,
            secret: None,
            fetched: Some(owned),
        },
        Answer::Found(secret) => UserSecret {
            known: true,
            secret,
            fetched: Some(owned),
        },
    })
}

/// auth_query's answer for a lookup: kept, or asked of Postgres on a server of the
/// (auth_dbname, auth_user) pool.
async fn fetch(
    shared: &Shared,
    live: &Live,
    how: AuthLookup<'_>,
    l: &Lookup<'_>,
    pooled: bool,
) -> Result<Answer> {
    let ttl = live.config.general.auth_query_cache_ttl.get();
    let cache = &shared.auth_cache;
    let _gate = match ttl {
        Some(_) => {
            if let Some(a) = cache.get(l) {
                return Ok(a);
            }
            // Many logins of one user at once (say after a restart) ask Postgres once.
            let gate = cache.gate(l).await;
            if let Some(a) = cache.get(l) {
                return Ok(a);
            }
            Some(gate)
        }
        None => None,
    };
    cache
        .queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let res = run(shared, live, how, l.user, pooled).await;
    if res.is_err() {
        cache
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let answer = res?;
    if let Some(ttl) = ttl {
        cache.put(l, answer.clone(), ttl);
    }
    Ok(answer)
}

/// A row auth_query returned (`None`: no row), or why it could not run.
type Row = Result<Option<Vec<Option<String>>>, Error>;

/// Run auth_query for `user`: on a server of the (auth_dbname, auth_user) pool when
/// `pooled`, else (the database is the one the client asked for, reached through "*") on a
/// one-off server, so that a client that has not authenticated creates no pool.
async fn run(
    shared: &Shared,
    live: &Live,
    how: AuthLookup<'_>,
    user: &str,
    pooled: bool,
) -> Result<Answer> {
    let lookup_failed = |cause: String| {
        tracing::warn!(db = %how.dbname, auth_user = %how.user, "auth_query: {cause}");
        Error::client(
            sqlstate::INVALID_AUTHORIZATION,
            format!(
                "could not look up user \"{user}\": auth_query failed (the pgmux log says why)"
            ),
        )
    };
    let res = match pooled {
        true => on_pool(shared, live, how, user).await?,
        false => on_one_off(shared, live, how, user).await?,
    };
    match res {
        Ok(row) => query::answer(user, row.as_deref()).map_err(lookup_failed),
        Err(Error::Server { code, message, .. }) => {
            Err(lookup_failed(format!("Postgres said {code}: {message}")))
        }
        Err(e) => Err(lookup_failed(format!("no server for the lookup: {e}"))),
    }
}

/// auth_query on a server of the (auth_dbname, auth_user) pool (its own servers, which no
/// client holds).
async fn on_pool(shared: &Shared, live: &Live, how: AuthLookup<'_>, user: &str) -> Result<Row> {
    let pool = shared
        .registry
        .auth_pool(
            &live.config,
            &live.server_tls,
            &live.secrets,
            how.dbname,
            how.user,
        )
        .map_err(|e| match e.sqlstate().0 {
            sqlstate::INVALID_CATALOG_NAME => Error::client(
                sqlstate::INVALID_CATALOG_NAME,
                format!("auth_dbname \"{}\" is not configured", how.dbname),
            ),
            _ => e,
        })?;
    // Dropped unfinished (the login gave up: client_login_timeout), the server is closed,
    // its state unknown.
    let mut server = match Box::pin(pool.checkout(std::time::Instant::now())).await {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.into())),
    };
    let res = server.query_row(how.query, user).await;
    match &res {
        // Postgres answered, and the server is idle again.
        Ok(_) | Err(Error::Server { .. }) => server.release(),
        Err(_) => server.close("auth_query failed"),
    }
    Ok(res)
}

/// auth_query on a server opened for it alone and closed after, [`AUTH_POOL_SIZE`] at most
/// at once: no pool, limit or histogram is left behind for a name a client made up.
///
/// [`AUTH_POOL_SIZE`]: crate::pool::AUTH_POOL_SIZE
async fn on_one_off(shared: &Shared, live: &Live, how: AuthLookup<'_>, user: &str) -> Result<Row> {
    let (target, id) = shared.registry.one_off_target(
        &live.config,
        &live.server_tls,
        &live.secrets,
        how.dbname,
        how.user,
    )?;
    let _room = shared
        .registry
        .one_off_lookups
        .acquire()
        .await
        .expect("never closed");
    let mut server = match crate::server::Server::connect(id, target, 0, None).await {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.into())),
    };
    let res = server.query_row(how.query, user).await;
    server.terminate().await;
    Ok(res)
}
