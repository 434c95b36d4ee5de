//! A server connection: connect and authenticate to Postgres, keep its parameters, run
//! pgmux's own small queries (parameter sync, reset, rollback) and check its health.

pub mod host;
pub mod info;
pub mod params;
pub mod settings;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::{ScramKeysClient, Secret};
use crate::config::{SessionAttrs, SslMode};
use crate::error::{ConnectError, Error, Result};
use crate::net::Conn;
use crate::prepared::cache::StatementCache;
use crate::proto::{self, backend};
pub(crate) use host::{Balance, Host, HostLease, HostTable};
pub use info::ServerInfo;
pub(crate) use info::{unix_us, ServerState};
pub use params::Params;
use rustls::pki_types::ServerName;
pub use settings::Settings;

/// Where and as whom a pool's servers log in.
#[derive(Debug, Clone)]
pub struct Target {
    /// Tried in `balance` order (banned ones last) until one logs in and fits
    /// `session_attrs`.
    pub(crate) hosts: Vec<Arc<Host>>,
    pub(crate) session_attrs: SessionAttrs,
    pub(crate) balance: Balance,
    /// New servers so far, for round-robin.
    pub turn: Arc<AtomicUsize>,
    /// How long a host that failed is tried only after the others (host_ban_time).
    pub(crate) ban_time: Duration,
    /// How long a host name's addresses are kept (dns_max_ttl).
    pub(crate) dns_ttl: Duration,
    pub dbname: String,
    pub user: String,
    pub secret: Option<Secret>,
    pub connect_timeout: Option<Duration>,
    pub max_packet_size: usize,
    pub(crate) tcp: crate::net::tcp::TcpOptions,
    /// Prepared statements each server keeps for clients (0: pgmux maps none).
    pub max_prepared_statements: usize,
    /// server_tls_sslmode and its rustls connector.
    pub(crate) tls: crate::net::tls::ServerSide,
}

/// Address and key to cancel a query running on a server.
#[derive(Debug, Clone)]
pub(crate) struct CancelTarget {
    pub host: String,
    pub port: u16,
    /// The address the server's connection went to (where its name pointed then).
    pub peer: Option<std::net::SocketAddr>,
    pub pid: i32,
    pub secret: i32,
}

/// One connection from pgmux to Postgres.
pub struct Server {
    pub id: u64,
    pub(crate) stream: Conn,
    /// Bytes read from the server and not yet relayed; kept with the server (servers are few).
    pub(crate) rbuf: BytesMut,
    pub params: Params,
    pub pid: i32,
    pub secret: i32,
    pub(crate) created: Instant,
    pub(crate) idle_since: Instant,
    pub target: Arc<Target>,
    /// The host it is connected to (counted there while the server lives).
    pub(crate) host: HostLease,
    /// Opened from the reserve pool.
    pub reserve: bool,
    /// The pgmux-named prepared statements this server has (transaction and statement mode).
    pub(crate) prepared: StatementCache,
    /// Room for the answers a request owes (`prepared::queue`), kept between requests: an
    /// extended-protocol request then allocates none.
    pub(crate) owed_room: crate::prepared::queue::Room,
    /// What the admin console and metrics see of it.
    pub info: Arc<ServerInfo>,
    /// Lines logged about it carry its id, pool and pid (set by its pool once it is open).
    pub(crate) span: tracing::Span,
    /// `default_transaction_read_only` as the host gave it at login, and whether a session
    /// SET (a client's, or pgmux's syncing a client's wish) changed it since: then the value
    /// reported no longer tells what the host is (`still_fits`).
    login_read_only: Option<bool>,
    pub(crate) read_only_set: bool,
    /// Settings changed at session level on it (`settings.rs`), as last read back or synced.
    pub(crate) settings: Settings,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

const READ_CHUNK: usize = 16 * 1024;

impl Server {
    /// Open a connection and log in, within server_connect_timeout for both; errors from
    /// Postgres keep their SQLSTATE and raw body.
    /// `generation`: the pool's, recorded in its info.
    /// `client_key`: a SCRAM ClientKey a client proved for the target's user, used when pgmux
    /// holds only a verifier for it.
    ///
    /// Hosts are tried in the target's order (each within server_connect_timeout; banned ones
    /// last) until one logs in and fits the target's session attributes. A host that fails for
    /// a reason that passes (down, refused, timeout, starting up) is banned for host_ban_time.
    /// When none fits, the error is the first configuration error met (it will not pass),
    /// else a mismatch (`08001`, a failover may be under way), else the last host's.
    pub(crate) async fn connect(
        id: u64,
        target: Arc<Target>,
        generation: u64,
        client_key: Option<[u8; 32]>,
    ) -> Result<Server, ConnectError> {
        let attrs = target.session_attrs;
        let mut config_error = None;
        let mut mismatches = Vec::new();
        let mut last = None;
        // prefer-standby: the first other server that logs in, if no standby does.
        let mut fallback = None;
        let turn = match target.balance {
            Balance::RoundRobin if target.hosts.len() > 1 => {
                target.turn.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
        for host in host::order(&target.hosts, target.balance, turn) {
            let open = Self::open(id, target.clone(), &host, generation, client_key);
            let res = match target.connect_timeout {
                Some(t) => tokio::time::timeout(t, open)
                    .await
                    .unwrap_or(Err(ConnectError::Timeout)),
                None => open.await,
            };
            let mut s = match res {
                Ok(s) => s,
                Err(e) => {
                    if target.hosts.len() > 1 {
                        tracing::warn!(server = id, host = %host, "server connect failed: {e}");
                    }
                    if !e.passes() {
                        host.failed(Duration::ZERO);
                        config_error.get_or_insert(e);
                    } else {
                        host.failed(target.ban_time);
                        last = Some(e);
                    }
                    continue;
                }
            };
            host.worked();
            if attrs == SessionAttrs::Any {
                return Ok(s);
            }
            match s.session_kind().await {
                Ok((standby, read_only)) if attrs.accepts(standby, read_only) => {
                    if let Some(f) = fallback.take() {
                        Server::terminate(f).await;
                    }
                    return Ok(s);
                }
                Ok((standby, _)) => {
                    let what = if standby { "a standby" } else { "read-write" };
                    mismatches.push(format!("{host} is {what}"));
                    if attrs == SessionAttrs::PreferStandby && fallback.is_none() {
                        fallback = Some(s);
                    } else {
                        s.terminate().await;
                    }
                }
                Err(e) => {
                    host.failed(target.ban_time);
                    last = Some(e.into());
                }
            }
        }
        if let Some(s) = fallback {
            return Ok(s);
        }
        if let Some(e) = config_error {
            return Err(e);
        }
        if !mismatches.is_empty() {
            return Err(ConnectError::NoHostFits(format!(
                "no host fits target_session_attrs = {}: {}{}",
                attrs.as_str(),
                mismatches.join(", "),
                last.map(|e| format!("; {e}")).unwrap_or_default()
            )));
        }
        Err(last.unwrap_or_else(|| ConnectError::Protocol("a database entry without hosts".into())))
    }

    /// Whether the server still fits its target's session attributes, by what it reported
    /// since (Postgres 14 and later report `in_hot_standby` and `default_transaction_read_only`
    /// as they change: a promoted standby says so). Unknown counts as fitting.
    pub(crate) fn still_fits(&self) -> bool {
        let attrs = self.target.session_attrs;
        if attrs == SessionAttrs::Any || attrs == SessionAttrs::PreferStandby {
            return true;
        }
        let live = self
            .params
            .get("default_transaction_read_only")
            .map(|v| v == "on");
        // A session SET says nothing of the host: then its value at login counts.
        let read_only = if self.read_only_set {
            self.login_read_only
        } else {
            live
        };
        let (Some(standby), Some(read_only)) = (self.params.get("in_hot_standby"), read_only)
        else {
            return true;
        };
        attrs.accepts(standby == "on", read_only)
    }

    /// Whether the server is in recovery (a hot standby) and read-only by default: from the
    /// ParameterStatus Postgres 14 and later report, else asked.
    async fn session_kind(&mut self) -> Result<(bool, bool)> {
        let standby = match self.params.get("in_hot_standby") {
            Some(v) => v == "on",
            None => {
                self.simple_value("SELECT pg_is_in_recovery()")
                    .await?
                    .as_deref()
                    == Some("t")
            }
        };
        let read_only = match self.params.get("default_transaction_read_only") {
            Some(v) => v == "on",
            None => {
                self.simple_value("SHOW default_transaction_read_only")
                    .await?
                    .as_deref()
                    == Some("on")
            }
        };
        Ok((standby, read_only))
    }

    /// Run `sql` (server_check_query): an error or a broken connection fails.
    pub async fn check(&mut self, sql: &str) -> Result<()> {
        self.simple_value(sql).await.map(|_| ())
    }

    /// Run a simple query of pgmux's own and return its first row's first column.
    async fn simple_value(&mut self, sql: &str) -> Result<Option<String>> {
        let mut out = BytesMut::new();
        backend::query(&mut out, sql);
        self.stream.send_all(&out).await?;
        let mut value = None;
        let (_, err) = self
            .read_internal(|_, tag, body| {
                if tag == b'D' && value.is_none() {
                    value = proto::data_row(body)
                        .and_then(|cols| cols.into_iter().next().flatten())
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                }
                Ok(())
            })
            .await?;
        match err {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }

    async fn open(
        id: u64,
        target: Arc<Target>,
        host: &Arc<Host>,
        generation: u64,
        client_key: Option<[u8; 32]>,
    ) -> Result<Server, ConnectError> {
        let addrs = host.addrs(target.dns_ttl).await?;
        let tcp = TcpStream::connect(&addrs[..]).await?;
        target.tcp.apply(&tcp);
        let (peer, local) = (tcp.peer_addr().ok(), tcp.local_addr().ok());
        let (stream, tls) = Self::negotiate_tls(tcp, &target, host).await?;
        let now = Instant::now();
        let mut server = Server {
            id,
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            params: Params::default(),
            pid: 0,
            secret: 0,
            created: now,
            idle_since: now,
            prepared: StatementCache::new(target.max_prepared_statements),
            owed_room: Default::default(),
            target,
            host: host.lease(),
            reserve: false,
            login_read_only: None,
            read_only_set: false,
            settings: Settings::default(),
            info: Arc::new(ServerInfo::new(
                id,
                host.clone(),
                peer,
                local,
                generation,
                tls,
            )),
            span: tracing::Span::none(),
        };
        server.login(client_key).await?;
        server.login_read_only = server
            .params
            .get("default_transaction_read_only")
            .map(|v| v == "on");
        server.info.set_pid(server.pid);
        Ok(server)
    }

    /// server_tls_sslmode: ask for TLS (SSLRequest) unless disabled or "allow" (which tries
    /// plaintext, the server's answer decides); a server that declines is refused when TLS is
    /// required. Returns the connection and its TLS description (`net::tls::info`, 0: none).
    async fn negotiate_tls(
        mut tcp: TcpStream,
        target: &Target,
        addr: &Host,
    ) -> Result<(Conn, u64), ConnectError> {
        let tls = &target.tls;
        let Some(connector) = tls
            .connector
            .as_ref()
            .filter(|_| tls.mode != SslMode::Allow)
        else {
            return Ok((Conn::Tcp(tcp), 0));
        };
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {
                let name = ServerName::try_from(addr.name.clone()).map_err(|source| {
                    ConnectError::BadHostName {
                        name: addr.name.clone(),
                        source,
                    }
                })?;
                let stream =
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|source| ConnectError::Tls {
                            server: addr.to_string(),
                            source,
                        })?;
                let info = crate::net::tls::info(stream.get_ref().1);
                let (tcp, tls) = stream.into_inner();
                Ok((Conn::tls(tcp, tls), info))
            }
            b'N' if !tls.mode.required() => Ok((Conn::Tcp(tcp), 0)),
            b'N' => Err(ConnectError::TlsDeclined {
                server: addr.to_string(),
                mode: tls.mode.as_str(),
            }),
            other => Err(ConnectError::Protocol(format!(
                "unexpected answer {other:#04x} to SSLRequest"
            ))),
        }
    }

    async fn login(&mut self, client_key: Option<[u8; 32]>) -> Result<(), ConnectError> {
        let target = self.target.clone();
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", target.user.as_str()),
                ("database", target.dbname.as_str()),
            ],
            &mut out,
        )?;
        self.stream.send_all(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        let mut keys: Option<ScramKeysClient> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {
                    let mut b = &body[..];
                    if b.len() < 4 {
                        return Err(ConnectError::Protocol(
                            "short authentication message".into(),
                        ));
                    }
                    let code = b.get_i32();
                    out.clear();
                    match code {
                        0 => {}
                        3 => {
                            let pw = self.plaintext("cleartext")?;
                            frontend::password_message(pw.as_bytes(), &mut out)?;
                        }
                        5 => {
                            if b.len() < 4 {
                                return Err(ConnectError::Protocol("short md5 salt".into()));
                            }
                            let salt = [b[0], b[1], b[2], b[3]];
                            let hash = match &target.secret {
                                Some(Secret::Plain { password, .. }) => {
                                    postgres_protocol::authentication::md5_hash(
                                        target.user.as_bytes(),
                                        password.as_bytes(),
                                        salt,
                                    )
                                }
                                Some(Secret::Md5(stored)) => crate::auth::md5_salted(stored, salt)
                                    .ok_or_else(|| self.no_password("md5"))?,
                                _ => return Err(self.no_password("md5")),
                            };
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => match (&target.secret, client_key) {
                            // Only a verifier: prove the ClientKey a client proved to pgmux.
                            (Some(Secret::Scram(v)), Some(key)) => {
                                let k = ScramKeysClient::new(key, v.clone());
                                frontend::sasl_initial_response(
                                    "SCRAM-SHA-256",
                                    &k.client_first(),
                                    &mut out,
                                )?;
                                keys = Some(k);
                            }
                            _ => {
                                let pw = self.plaintext("SCRAM-SHA-256")?;
                                let s =
                                    ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                                frontend::sasl_initial_response(
                                    "SCRAM-SHA-256",
                                    s.message(),
                                    &mut out,
                                )?;
                                scram = Some(s);
                            }
                        },
                        11 => {
                            if let Some(k) = keys.as_mut() {
                                let fin = k
                                    .server_first(b)
                                    .map_err(|e| ConnectError::ScramKeys(e.into()))?;
                                frontend::sasl_response(&fin, &mut out)?;
                            } else {
                                let s = scram.as_mut().ok_or_else(|| {
                                    ConnectError::Protocol("unexpected SASL continue".into())
                                })?;
                                s.update(b).map_err(ConnectError::Scram)?;
                                frontend::sasl_response(s.message(), &mut out)?;
                            }
                        }
                        12 => {
                            if let Some(k) = keys.as_ref() {
                                k.server_final(b)
                                    .map_err(|e| ConnectError::ScramKeys(e.into()))?;
                            } else {
                                let s = scram.as_mut().ok_or_else(|| {
                                    ConnectError::Protocol("unexpected SASL final".into())
                                })?;
                                s.finish(b).map_err(ConnectError::Scram)?;
                            }
                        }
                        other => return Err(ConnectError::UnsupportedMethod(other)),
                    }
                    if !out.is_empty() {
                        self.stream.send_all(&out).await?;
                    }
                }
                b'S' => {
                    if let Some((k, v)) = params::parse_parameter_status(&body) {
                        self.params.set(k, v);
                    }
                }
                b'K' if body.len() >= 8 => {
                    self.pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.secret = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'Z' => return Ok(()),
                b'E' => return Err(server_error(body).into()),
                b'N' | b'v' => {}
                t => {
                    return Err(ConnectError::Protocol(format!(
                        "unexpected message '{}' during server login",
                        t as char
                    )))
                }
            }
        }
    }

    fn plaintext(&self, method: &'static str) -> Result<&str, ConnectError> {
        match &self.target.secret {
            Some(Secret::Plain { password, .. }) => Ok(password),
            _ => Err(self.no_password(method)),
        }
    }

    fn no_password(&self, method: &'static str) -> ConnectError {
        ConnectError::NoPassword {
            method,
            user: self.target.user.clone(),
        }
    }

    /// Read one whole message (tag, body) from the server.
    pub(crate) async fn read_message(&mut self) -> Result<(u8, Bytes)> {
        loop {
            if let Some((tag, len)) =
                proto::header(&self.rbuf, self.target.max_packet_size).map_err(Error::Protocol)?
            {
                if self.rbuf.len() >= len {
                    let mut msg = self.rbuf.split_to(len);
                    msg.advance(5);
                    return Ok((tag, msg.freeze()));
                }
                self.rbuf.reserve(len - self.rbuf.len());
            } else {
                self.rbuf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Run a simple query whose results nobody sees; return the final transaction status,
    /// or the first error Postgres reported.
    pub(crate) async fn run_hidden(&mut self, sql: &str) -> Result<u8> {
        let mut out = BytesMut::new();
        backend::query(&mut out, sql);
        self.stream.send_all(&out).await?;
        let (status, err) = self
            .read_internal(|s, tag, body| {
                if tag == b'C' {
                    s.prepared.command_completed(body);
                }
                Ok(())
            })
            .await?;
        match err {
            Some(e) => Err(e),
            None => Ok(status.unwrap_or(b'I')),
        }
    }

    /// Read the answer to one of pgmux's own queries, up to ReadyForQuery: ParameterStatus
    /// is recorded, the first ErrorResponse kept, COPY refused, and every other message
    /// handed to `each`. Returns the final transaction status (`None`: ReadyForQuery had
    /// none) and Postgres' error, if any.
    async fn read_internal(
        &mut self,
        mut each: impl FnMut(&mut Self, u8, &Bytes) -> Result<()>,
    ) -> Result<(Option<u8>, Option<Error>)> {
        let mut err = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'S' => {
                    if let Some((k, v)) = params::parse_parameter_status(&body) {
                        self.params.set(k, v);
                    }
                }
                b'E' if err.is_none() => err = Some(server_error(body)),
                b'Z' => return Ok((body.first().copied(), err)),
                b'G' | b'H' | b'W' => {
                    return Err(Error::Protocol("COPY in a pgmux internal query".into()))
                }
                _ => each(self, tag, &body)?,
            }
        }
    }

    /// Run `sql` with one text parameter (the unnamed statement, extended protocol) and
    /// return its first row as text columns (`None` for NULL), or `None` when it returns no
    /// row. Postgres' error comes back as is; the server is idle again either way unless the
    /// error is an I/O or protocol one.
    pub(crate) async fn query_row(
        &mut self,
        sql: &str,
        param: &str,
    ) -> Result<Option<Vec<Option<String>>>> {
        // The parameter and the answer are UTF-8 whatever the database's encoding.
        let mut utf8 = Params::default();
        utf8.set("client_encoding", "UTF8");
        self.sync_params(&mut utf8).await?;
        let mut out = BytesMut::new();
        let bad = |e: std::io::Error| Error::Protocol(format!("cannot encode a query: {e}"));
        frontend::parse("", sql, [0u32], &mut out).map_err(bad)?;
        frontend::bind(
            "",
            "",
            [0i16],
            [param],
            |p, buf| {
                buf.extend_from_slice(p.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            [0i16],
            &mut out,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => Error::Protocol(format!("bind: {e}")),
            frontend::BindError::Serialization(e) => bad(e),
        })?;
        frontend::execute("", 0, &mut out).map_err(bad)?;
        frontend::sync(&mut out);
        self.stream.send_all(&out).await?;
        let mut row = None;
        let (status, err) = self
            .read_internal(|_, tag, body| {
                if tag == b'D' && row.is_none() {
                    let cols = proto::data_row(body)
                        .ok_or_else(|| Error::Protocol("malformed DataRow".into()))?;
                    row = Some(
                        cols.into_iter()
                            .map(|c| c.map(|v| String::from_utf8_lossy(v).into_owned()))
                            .collect(),
                    );
                }
                Ok(())
            })
            .await?;
        if status != Some(b'I') {
            let why = err.map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(Error::Protocol(format!(
                "a pgmux internal query left a transaction open{why}"
            )));
        }
        match err {
            Some(e) => Err(e),
            None => Ok(row),
        }
    }

    /// Bring the tracked parameters to what the client wants. Afterwards the client's values
    /// take the server's spelling (Postgres normalises, e.g. "iso" -> "ISO, MDY"), so the same
    /// wish is not sent again. Returns whether anything was sent.
    pub(crate) async fn sync_params(&mut self, wanted: &mut Params) -> Result<bool> {
        let keys: Vec<&'static str> = self.params.differences(wanted).collect();
        if keys.is_empty() {
            return Ok(false);
        }
        let mut sql = String::new();
        for k in &keys {
            let v = wanted.get(k).unwrap_or_default();
            sql.push_str(&format!(
                "SET {} TO {};",
                backend::quote_ident(k),
                backend::quote_literal(v)
            ));
        }
        if keys.contains(&"default_transaction_read_only") {
            self.read_only_set = true;
        }
        let status = self.run_hidden(&sql).await?;
        for k in keys {
            if let Some(v) = self.params.get(k) {
                wanted.set(k, v);
            }
        }
        if status != b'I' {
            return Err(Error::Protocol(
                "parameter sync left a transaction open".into(),
            ));
        }
        Ok(true)
    }

    /// Bring the session settings to what the client wants (`settings.rs`).
    pub(crate) async fn sync_settings(&mut self, wanted: &Settings) -> Result<()> {
        let Some(sql) = self.settings.sync_sql(wanted) else {
            return Ok(());
        };
        // Whatever happens next, the server's settings are the wanted ones or it is closed.
        let status = self.run_hidden(&sql).await?;
        if status != b'I' {
            return Err(Error::Protocol(
                "setting sync left a transaction open".into(),
            ));
        }
        self.settings = wanted.clone();
        Ok(())
    }

    /// Run one of pgmux's own simple queries and return its rows as text columns (`None`:
    /// NULL, or not UTF-8). Postgres' error comes back as is.
    pub(crate) async fn hidden_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut out = BytesMut::new();
        backend::query(&mut out, sql);
        self.stream.send_all(&out).await?;
        let mut rows = Vec::new();
        let (status, err) = self
            .read_internal(|_, tag, body| {
                if tag == b'D' {
                    let cols = proto::data_row(body)
                        .ok_or_else(|| Error::Protocol("malformed DataRow".into()))?;
                    let text = |c: Option<&[u8]>| String::from_utf8(c?.to_vec()).ok();
                    rows.push(cols.into_iter().map(text).collect());
                }
                Ok(())
            })
            .await?;
        if let Some(e) = err {
            return Err(e);
        }
        if status != Some(b'I') {
            return Err(Error::Protocol(
                "a pgmux internal query left a transaction open".into(),
            ));
        }
        Ok(rows)
    }

    /// Read `names` back after a request that may have changed them, with the client's
    /// start-up values for the ones it had (`settings::read_back_sql`), and keep the answer
    /// as this server's settings. Returns the rows as (name, value) of those still set.
    pub(crate) async fn read_back(
        &mut self,
        names: &[(String, Option<String>)],
        user: &str,
    ) -> Result<()> {
        for (n, _) in names {
            self.settings.remove(n);
        }
        if names.is_empty() {
            return Ok(());
        }
        let sql = settings::read_back_sql(names.iter().map(|(n, v)| (n.as_str(), v.as_deref())));
        let rows = self.hidden_rows(&sql).await?;
        for row in rows {
            let [Some(n), v, source] = &row[..] else {
                continue;
            };
            if settings::still_set(n, v.as_deref(), source.as_deref(), user) {
                self.settings.set(n, v.as_deref().unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Whether an idle server still looks usable: not closed and nothing unsolicited pending.
    pub(crate) fn looks_alive(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Where to send a CancelRequest for the query running here.
    pub(crate) fn cancel_target(&self) -> CancelTarget {
        CancelTarget {
            host: self.host.name.clone(),
            port: self.host.port,
            peer: self.info.addr,
            pid: self.pid,
            secret: self.secret,
        }
    }

    /// Send Terminate and close (best effort).
    pub async fn terminate(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.send_all(&out)).await;
    }
}

/// An ErrorResponse body from a server, kept whole for relaying.
pub(crate) fn server_error(body: Bytes) -> Error {
    let (code, message, _) = backend::error_fields(&body);
    Error::Server {
        code,
        message,
        raw: body,
    }
}

/// Send a CancelRequest for `target` on a new connection.
pub(crate) async fn send_cancel(target: &CancelTarget) -> Result<()> {
    let connect = async {
        match target.peer {
            Some(a) => TcpStream::connect(a).await,
            None => TcpStream::connect((target.host.as_str(), target.port)).await,
        }
    };
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| Error::Timeout("cancel connect"))??;
    let mut out = BytesMut::new();
    frontend::cancel_request(target.pid, target.secret, &mut out);
    stream.write_all(&out).await?;
    // Postgres closes the connection once it has read the request.
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut b)).await;
    Ok(())
}
