//! Client login in phases sharing one context (`Ctx`): encryption and cancel, admission,
//! route, authenticate (`authenticate.rs`), welcome; or the admin console's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod authenticate;
mod error;

pub(super) use error::LoginError;

use crate::net::{tls, Conn};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::admin::AdminSession;
use crate::boxed::boxed;
use crate::cancel::CancelKey;
use crate::clients::{ClientInfo, Login};
use crate::config::is_admin_db;
use crate::error::{sqlstate, Error, Result};
use crate::pool::{Pool, PoolStats};
use crate::proto::backend;
use crate::proto::startup::{self, StartupPacket};
use crate::server::params::tracked_index;
use crate::server::settings::ClientSettings;
use crate::server::{Params, Settings};
use crate::shared::{Live, Shared};

use super::secret::UserSecret;

/// Largest message accepted during login (password and SASL messages are small).
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// A logged-in client, ready for its request loop.
pub(crate) struct Session {
    pub pool: Arc<Pool>,
    /// The tracked parameters this client wants (its start-up values, then its SETs). Shared
    /// with the pool's other clients that want the same (`Pool::share_client_params`), copied
    /// when the client changes one.
    pub params: Arc<Params>,
    /// The other session settings it changed (`server::settings`); `None` while it changed
    /// none.
    pub settings: Option<Box<ClientSettings>>,
    pub key: CancelKey,
    /// Bytes the client sent after its login messages (boxed: most send none, and an idle
    /// client keeps this until its first request).
    pub(crate) leftover: Option<Box<BytesMut>>,
    /// Session mode: the server the client was given at login (its pid is the client's), for
    /// its first request.
    pub(crate) held: Option<Box<crate::pool::Checked>>,
}

/// The bytes a client sent after its login messages, if any.
fn leftover(buf: BytesMut) -> Option<Box<BytesMut>> {
    (!buf.is_empty()).then(|| Box::new(buf))
}

/// Where a logged-in client goes.
pub(crate) enum LoggedIn {
    Pool(Session),
    Admin(AdminSession),
}

/// Log a client in. `Ok(None)` when the connection carried a CancelRequest or closed early.
pub(super) async fn login(
    stream: &mut Conn,
    shared: &Arc<Shared>,
    info: &ClientInfo,
) -> Result<Option<LoggedIn>, LoginError> {
    // One awaited future either way (two would each keep a slot in every login task): without
    // client_login_timeout, a deadline no login reaches.
    let t = (shared.config().general.client_login_timeout.get())
        .unwrap_or(Duration::from_secs(365 * 86_400));
    tokio::time::timeout(t, login_inner(stream, shared, info))
        .await
        .unwrap_or(Err(LoginError::Timeout))
}

async fn login_inner(
    stream: &mut Conn,
    shared: &Arc<Shared>,
    info: &ClientInfo,
) -> Result<Option<LoggedIn>, LoginError> {
    let mut l = Ctx {
        stream,
        shared,
        live: shared.live().clone(),
        info,
        buf: BytesMut::with_capacity(512),
        out: BytesMut::new(),
        cert_cn: None,
    };
    let Some((minor, params)) = l.encryption_and_cancel().await? else {
        return Ok(None);
    };
    let (user, database) = l.admission(minor, &params)?;
    if is_admin_db(database) {
        return boxed(l.admin(user, database)).await;
    }
    let (wanted, startup) = l.route(database, &params)?;
    let (client_key, found) = l.authenticate(database, user).await?;
    l.welcome(database, user, (wanted, startup), client_key, found)
        .await
}

/// What the phases of one login share: the connection, its buffers, and what the earlier
/// phases learnt.
struct Ctx<'a> {
    stream: &'a mut Conn,
    shared: &'a Arc<Shared>,
    live: Arc<Live>,
    info: &'a ClientInfo,
    /// Bytes read from the client and not yet used.
    buf: BytesMut,
    /// Messages for the client, sent with the next write.
    out: BytesMut,
    /// The Common Name of a verified client certificate (cert authentication).
    cert_cn: Option<String>,
}

/// A start-up packet's protocol minor version and parameters.
type Startup = (u16, Vec<(String, String)>);

impl<'a> Ctx<'a> {
    /// Phase 1, encryption and cancel: read start-up packets, answering SSLRequest (TLS
    /// when client_tls_sslmode allows it) and GSSENCRequest, serving a CancelRequest, until
    /// the StartupMessage. Over max_client_conn the first packet gets the error instead.
    /// `None`: a cancel request, or the client left.
    async fn encryption_and_cancel(&mut self) -> Result<Option<Startup>, LoginError> {
        // Every connection counts, logged in or not (this one too): over max_client_conn, the
        // first packet is answered with the error (no TLS handshake, no authentication),
        // except a CancelRequest, which is served even then.
        let full = self.shared.clients.count() > self.live.config.general.max_client_conn;
        loop {
            let packet = loop {
                if let Some((p, used)) = startup::parse(&self.buf).map_err(Error::Protocol)? {
                    self.buf.advance(used);
                    break p;
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Ok(None);
                }
            };
            match packet {
                // libpq and the other drivers read an ErrorResponse sent instead of the answer
                // to SSLRequest, as Postgres sends one when it cannot start a backend.
                StartupPacket::Ssl | StartupPacket::GssEnc | StartupPacket::Startup { .. }
                    if full =>
                {
                    return Err(LoginError::TooManyClients);
                }
                StartupPacket::Ssl | StartupPacket::GssEnc => {
                    boxed(self.encryption(&packet)).await?
                }
                StartupPacket::Cancel { pid, secret } => {
                    let config = &self.live.config;
                    let peering = crate::cancel::Peering {
                        id: config.general.peer_id,
                        peers: &config.peers,
                        dns: &config.general.peer_dns,
                        dns_port: config.general.peer_dns_port,
                        local: self.info.local(),
                    };
                    self.shared.cancels.cancel(pid, secret, &peering).await;
                    return Ok(None);
                }
                StartupPacket::Startup { minor, params } => return Ok(Some((minor, params))),
            }
        }
    }

    /// Answer SSLRequest or GSSENCRequest: 'S' and the TLS handshake when TLS is set up for
    /// clients, else 'N'.
    async fn encryption(&mut self, packet: &StartupPacket) -> Result<()> {
        // Bytes sent before the answer would be read as if they had come through the
        // encryption: refuse them (CVE-2021-23214 in Postgres, and PgBouncer's too).
        if !self.buf.is_empty() {
            return Err(Error::Protocol(
                "data sent before the encryption answer".into(),
            ));
        }
        match (packet, &self.live.client_tls.acceptor, &*self.stream) {
            (StartupPacket::Ssl, Some(acceptor), Conn::Tcp(_)) => {
                self.stream.send_all(b"S").await?;
                let Conn::Tcp(tcp) = std::mem::replace(self.stream, Conn::Closed) else {
                    unreachable!("matched above");
                };
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| Error::Protocol(format!("TLS handshake failed: {e}")))?;
                self.cert_cn = tls::client_cert_cn(&tls);
                self.info.tls.store(
                    tls::info(tls.get_ref().1),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let (tcp, tls) = tls.into_inner();
                *self.stream = Conn::tls(tcp, tls);
            }
            _ => self.stream.send_all(b"N").await?,
        }
        Ok(())
    }

    /// Phase 2, admission: TLS where required, the protocol version, who the client says it
    /// is and which database it wants; replication refused. Returns (user, database).
    fn admission<'p>(
        &mut self,
        minor: u16,
        params: &'p [(String, String)],
    ) -> Result<(&'p str, &'p str)> {
        let tls = &self.live.client_tls;
        if tls.mode.required() && !self.stream.is_tls() {
            return Err(Error::client(
                sqlstate::INVALID_AUTHORIZATION,
                format!("SSL required (client_tls_sslmode = {})", tls.mode.as_str()),
            ));
        }
        let unknown: Vec<&str> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.as_str())
            .collect();
        if minor > 0 || !unknown.is_empty() {
            backend::negotiate_protocol_version(&mut self.out, &unknown);
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let user = get("user").filter(|u| !u.is_empty()).ok_or_else(|| {
            Error::client(
                sqlstate::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?;
        let database = get("database").filter(|d| !d.is_empty()).unwrap_or(user);
        if get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off" && r != "no") {
            return Err(Error::client(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "replication connections are not supported by pgmux",
            ));
        }
        Ok((user, database))
    }

    /// Phase 3, route: the database entry the client reaches, and the parameters it wants
    /// (start-up values, `options=-c`, the entry's application_name).
    fn route(
        &mut self,
        database: &str,
        params: &[(String, String)],
    ) -> Result<(Params, Option<Box<ClientSettings>>), LoginError> {
        let live = self.live.clone();
        let (mut wanted, startup) = wanted_params(params, &live.config.general)?;
        let Some(db_entry) = live.config.database(database) else {
            return Err(LoginError::UnknownDatabase(database.into()));
        };
        application_name(&mut wanted, db_entry, &live, self.info.addr());
        Ok((wanted, ClientSettings::new(startup)))
    }

    /// Phase 5 (after [`authenticate`](Ctx::authenticate)), welcome: the pool (made now, for
    /// an authenticated client), its server parameters, ParameterStatus, BackendKeyData and
    /// ReadyForQuery.
    /// An async block, not an async fn: an async fn keeps its arguments twice in its state
    /// (the session's parameters and secret), and the login task holds the largest state.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn welcome<'s>(
        mut self,
        database: &'s str,
        user: &'s str,
        (wanted, settings): (Params, Option<Box<ClientSettings>>),
        client_key: Option<[u8; 32]>,
        found: UserSecret,
    ) -> impl Future<Output = Result<Option<LoggedIn>, LoginError>> + Send + 's
    where
        'a: 's,
    {
        async move {
            let shared = self.shared;
            if shared.registry.flags(database).disabled {
                return Err(LoginError::NotAccepting(database.into()));
            }
            let fetched = found.fetched.as_ref().and(found.secret.as_ref());
            let pool = shared
                .pool(&self.live, database, user, fetched)
                .map_err(|e| match e.sqlstate().0 {
                    sqlstate::INVALID_CATALOG_NAME => LoginError::UnknownDatabase(database.into()),
                    _ => LoginError::Server(e),
                })?;
            if let Some(key) = client_key {
                pool.remember_client_key(user, key);
            }
            let session = pool.settings().mode == crate::config::PoolMode::Session;
            // Session mode: the client's server now, so that the client is told its real pid
            // and the parameters as that server reports them, as by Postgres itself.
            let held = match session {
                true => boxed(Self::session_server(&pool, &wanted, settings.as_deref())).await?,
                false => None,
            };
            let welcome = match (&held, pool.welcome()) {
                (Some(s), _) => Arc::new(s.params.clone()),
                (None, Some(w)) => w,
                (None, None) => {
                    // First client of this pool: log a server in to learn its parameters.
                    let s = Box::pin(pool.checkout(std::time::Instant::now()))
                        .await
                        .map_err(|e| LoginError::Server(e.into()))?;
                    let w = pool.welcome_from(&s);
                    s.release();
                    w
                }
            };
            let mut client_params = welcome.tracked_only();
            if held.is_none() {
                for (k, v) in wanted.iter() {
                    client_params.set(k, v);
                }
            }
            let tag = crate::cancel::key_tag(&self.live.config.general, self.info.local());
            let key = match &held {
                Some(s) => shared.cancels.register_as(s.pid, tag),
                None => shared.cancels.register(tag),
            };
            let out = &mut self.out;
            backend::auth_ok(out);
            for (k, v) in welcome.iter() {
                let v = client_params.get(k).unwrap_or(v);
                backend::parameter_status(out, k, v);
            }
            for (k, v) in client_params.iter() {
                if welcome.get(k).is_none() {
                    backend::parameter_status(out, k, v);
                }
            }
            let login = Login::Pool {
                application_name: client_params
                    .get("application_name")
                    .unwrap_or_default()
                    .into(),
                pool: pool.clone(),
            };
            self.welcome_end(&key, login).await?;
            PoolStats::add(&pool.stats.client_logins, 1);
            Ok(Some(LoggedIn::Pool(Session {
                params: pool.share_client_params(client_params),
                settings,
                pool,
                key,
                leftover: leftover(self.buf),
                held: held.map(Box::new),
            })))
        }
    }

    /// Session mode: the client's server at login, when one is free now (an idle one, or
    /// room to open one), given the client's start-up parameters and settings (a value
    /// Postgres refuses fails the login, as it would directly). `None` when the client would
    /// have to wait: it waits at its first request instead, as in PgBouncer, with a key of
    /// pgmux's own.
    async fn session_server(
        pool: &Arc<Pool>,
        wanted: &Params,
        settings: Option<&ClientSettings>,
    ) -> Result<Option<crate::pool::Checked>, LoginError> {
        let Some(mut s) = pool.checkout_now(std::time::Instant::now()).await else {
            return Ok(None);
        };
        pool.welcome_from(&s);
        let mut want = s.params.tracked_only();
        for (k, v) in wanted.iter() {
            want.set(k, v);
        }
        let none = Settings::default();
        let synced = match s.sync_params(&mut want).await {
            Ok(_) => s.sync_settings(settings.map_or(&none, |c| &c.now)).await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => Ok(Some(s)),
            Err(e) => {
                s.close("a client's start-up parameters were refused");
                Err(LoginError::Server(e))
            }
        }
    }

    /// End the welcome (BackendKeyData, ReadyForQuery), send it, and record who logged in.
    async fn welcome_end(&mut self, key: &CancelKey, login: Login) -> Result<()> {
        backend::backend_key_data(&mut self.out, key.pid, key.secret);
        backend::ready_for_query(&mut self.out, b'I');
        self.stream.send_all(&self.out).await?;
        let _ = self.info.login.set(login);
        self.info.idle();
        Ok(())
    }

    /// The admin console's phases 4 and 5: authenticated like any user, then allowed only if
    /// listed in admin_users or stats_users; welcomed with pgmux's own parameters.
    async fn admin(mut self, user: &str, database: &str) -> Result<Option<LoggedIn>, LoginError> {
        self.authenticate(database, user).await?;
        let g = &self.live.config.general;
        let admin = g.admin_users.iter().any(|u| u == user);
        if !admin && !g.stats_users.iter().any(|u| u == user) {
            return Err(LoginError::AdminDenied(user.into()));
        }
        let tag = crate::cancel::key_tag(&self.live.config.general, self.info.local());
        let key = self.shared.cancels.register(tag);
        backend::auth_ok(&mut self.out);
        let version = format!("{}/pgmux", env!("CARGO_PKG_VERSION"));
        for (k, v) in [
            ("server_version", version.as_str()),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("standard_conforming_strings", "on"),
            ("integer_datetimes", "on"),
            ("is_superuser", "off"),
        ] {
            backend::parameter_status(&mut self.out, k, v);
        }
        let login = Login::Admin(Box::new(crate::clients::AdminLogin {
            user: user.into(),
            database: database.into(),
        }));
        self.welcome_end(&key, login).await?;
        PoolStats::add(&self.shared.console_logins, 1);
        Ok(Some(LoggedIn::Admin(AdminSession {
            user: user.to_string(),
            admin,
            _key: key,
            leftover: self.buf,
        })))
    }
}

/// The database entry's `application_name` when the client gives none, and with
/// `application_name_add_host` the client's address appended (as PgBouncer does).
fn application_name(
    wanted: &mut Params,
    db: &crate::config::Database,
    live: &crate::shared::Live,
    peer: std::net::SocketAddr,
) {
    let mut name = wanted
        .get("application_name")
        .or(db.application_name.as_deref())
        .map(str::to_string);
    if live.config.general.application_name_add_host {
        name = Some(format!("{} - {peer}", name.unwrap_or_default()));
    }
    if let Some(name) = name {
        wanted.set("application_name", &name);
    }
}

/// The tracked parameters a client asked for at start-up (directly or in `options`), and
/// the other settings it gave there (carried with `track_session_settings`, else refused
/// unless ignored).
fn wanted_params(
    params: &[(String, String)],
    general: &crate::config::General,
) -> Result<(Params, Settings)> {
    let ignored = &general.ignore_startup_parameters;
    let is_ignored = |k: &str| ignored.iter().any(|i| i.eq_ignore_ascii_case(k));
    let mut wanted = Params::default();
    let mut startup = Settings::default();
    let unsupported = |k: &str| {
        Error::client(
            sqlstate::PROTOCOL_VIOLATION,
            format!("unsupported startup parameter: {k}"),
        )
    };
    let mut other = |k: &str, v: &str, what: &str| {
        if is_ignored(k) {
            Ok(())
        } else if crate::sql::valid_name(k)
            && (general.track_session_settings
                || (general.track_extra_parameters.iter()).any(|e| e.eq_ignore_ascii_case(k)))
        {
            startup.set(&k.to_ascii_lowercase(), v);
            Ok(())
        } else {
            Err(unsupported(what))
        }
    };
    for (k, v) in params {
        match k.as_str() {
            "user" | "database" | "replication" => {}
            "options" => {
                let settings = startup::parse_options(v).ok_or_else(|| unsupported("options"))?;
                for (k, v) in settings {
                    if tracked_index(&k).is_some() {
                        wanted.set(&k, &v);
                    } else {
                        other(&k, &v, &format!("options: {k}"))?;
                    }
                }
            }
            k if k.starts_with("_pq_.") => {}
            k if tracked_index(k).is_some() => {
                wanted.set(k, v);
            }
            k => other(k, v, k)?,
        }
    }
    // Reported as Postgres would: in its own spelling (`utf-8` is `UTF8`).
    if let Some(e) = wanted
        .get("client_encoding")
        .and_then(crate::server::params::canonical_encoding)
    {
        wanted.set("client_encoding", e);
    }
    Ok((wanted, startup))
}
