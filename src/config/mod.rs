//! Configuration: the TOML model with PgBouncer's setting names, its defaults, and loading.
//!
//! Durations are seconds (fractions allowed); `0` disables a timeout, as in PgBouncer.
//! `validate` (in `validate.rs`) lists every problem with the key's name.

mod env;
pub mod import;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use validate::validate;
pub use validate::ConfigProblem;

/// A duration in seconds, fractions allowed; `0` means "disabled" where PgBouncer says so.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secs(pub f64);

impl Secs {
    /// The duration, or `None` when zero (disabled).
    pub fn get(self) -> Option<Duration> {
        self.is_set().then(|| Duration::from_secs_f64(self.0))
    }

    /// Whether it is set (not zero): [`Secs::get`] without making the `Duration`.
    pub fn is_set(self) -> bool {
        self.0 > 0.0 && self.0.is_finite()
    }
}

/// A database entry's port: one for every host, or one per host (`"5432,5433"`), as libpq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ports(pub Vec<u16>);

/// Written back as it is read: an integer, or a string of several.
impl Serialize for Ports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_u16(*one),
            many => {
                let v: Vec<String> = many.iter().map(u16::to_string).collect();
                s.serialize_str(&v.join(","))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u16),
            List(String),
        }
        match Raw::deserialize(d)? {
            Raw::One(p) => Ok(Ports(vec![p])),
            Raw::List(s) => s
                .split(',')
                .map(|p| p.trim().parse::<u16>())
                .collect::<Result<Vec<_>, _>>()
                .map(Ports)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Ports {
    /// The first port (what SHOW DATABASES shows).
    pub(crate) fn first(&self) -> u16 {
        self.0.first().copied().unwrap_or(5432)
    }
}

/// Which servers a database entry accepts, with libpq's `target_session_attrs` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SessionAttrs {
    /// Any server.
    #[default]
    Any,
    /// Not in recovery, and default_transaction_read_only off.
    ReadWrite,
    /// In recovery, or default_transaction_read_only on.
    ReadOnly,
    /// Not in recovery.
    Primary,
    /// In recovery (a hot standby).
    Standby,
    /// A standby if one answers, else any.
    PreferStandby,
}

impl SessionAttrs {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server in recovery (`standby`) or read-only by default (`read_only`) fits.
    /// `prefer-standby` accepts only standbys here; its fallback is the caller's.
    pub(crate) fn accepts(self, standby: bool, read_only: bool) -> bool {
        let read_only = read_only || standby;
        match self {
            SessionAttrs::Any => true,
            SessionAttrs::ReadWrite => !read_only,
            SessionAttrs::ReadOnly => read_only,
            SessionAttrs::Primary => !standby,
            SessionAttrs::Standby | SessionAttrs::PreferStandby => standby,
        }
    }
}

/// `load_balance_hosts`: how new servers pick among a database entry's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LoadBalance {
    /// One host further along for each new server (PgBouncer's default).
    RoundRobin,
    /// The host with the fewest open servers.
    LeastConnections,
    /// In the order listed.
    Disable,
}

/// How long a client keeps its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Until the client disconnects.
    Session,
    /// Until the transaction ends (ReadyForQuery 'I').
    Transaction,
    /// After every statement; explicit transactions are refused.
    Statement,
}

impl PoolMode {
    /// The name used in config and the admin console.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How clients authenticate to pgmux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) enum AuthType {
    #[serde(rename = "trust")]
    Trust,
    #[serde(rename = "plain")]
    Plain,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// The first matching rule of auth_hba_file decides (PgBouncer's auth_type = hba).
    #[serde(rename = "hba")]
    Hba,
    /// A TLS client certificate whose Common Name is the user name (needs
    /// client_tls_sslmode verify-ca or verify-full).
    #[serde(rename = "cert")]
    Cert,
}

/// TLS modes, with libpq's names and meanings (PgBouncer's client_tls_sslmode and
/// server_tls_sslmode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether plaintext is refused.
    pub(crate) fn required(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// What state that cannot move to another server does to its client in transaction and
/// statement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinOnSessionState {
    /// The client keeps its server until the state is gone.
    Pin,
    /// The statement that would make it is refused with 0A000.
    Error,
}

/// What a drain (SIGTERM) does to the clients still connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownClients {
    /// Transaction and statement mode: a client goes (57P01) at a moment its pool can take
    /// (its connection checked, rested, or after a grace with its transaction's last answer),
    /// so that it reconnects to another instance.
    Boundary,
    /// PgBouncer's: clients stay until they leave (or shutdown_timeout).
    Wait,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub general: General,
    #[serde(default)]
    pub(crate) metrics: Metrics,
    #[serde(default)]
    pub databases: BTreeMap<String, Database>,
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// `[peers.ID]`: the other pgmux processes of a fleet (PgBouncer's `[peers]`), where
    /// cancels for the keys they issued are forwarded.
    #[serde(default)]
    pub peers: BTreeMap<String, Peer>,
    /// `[fleet]`: one server budget shared by every replica of the fleet, kept by Postgres
    /// (advisory locks; `pool/fleet.rs`). Restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Fleet>,
}

/// `[fleet]`: replicas that give the same name share `max_servers` servers per pool (or per
/// database), counted in Postgres with advisory locks, with no coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The fleet's name: replicas with the same name (and database, and user with scope
    /// "pool") share one budget.
    pub name: String,
    /// Servers the whole fleet may hold at once, per (database, user) or per database.
    pub max_servers: usize,
    /// "pool" (default): the budget is per (database, user); "database": per database, shared
    /// by its users.
    #[serde(default)]
    pub scope: FleetScope,
}

/// What one fleet budget covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetScope {
    /// One budget per (database, user).
    #[default]
    Pool,
    /// One budget per database, for all its users.
    Database,
}

/// `[peers.ID]`: another pgmux (or PgBouncer-style peer) of the fleet, by its `peer_id`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Where it listens for clients (host name or IP address).
    pub host: String,
    /// Default 6432.
    #[serde(default = "default_peer_port")]
    pub port: u16,
}

fn default_peer_port() -> u16 {
    6432
}

/// `[metrics]`: the HTTP endpoint for Prometheus and health probes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Metrics {
    /// "host:port" serving /metrics, /health and /ready; unset = off. Restart.
    pub listen: Option<String>,
    /// Also serve the prometheus-community pgbouncer_exporter's `pgbouncer_*` series (its
    /// dashboards and the pgbouncer mixin's alerts then work unchanged). Default false.
    pub pgbouncer_names: bool,
}

/// `[general]`: PgBouncer's `[pgbouncer]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Addresses to listen on, comma-separated (IPs or host names); "*" for every IPv4 and
    /// IPv6 address. Default "127.0.0.1". Restart.
    pub listen_addr: String,
    /// Default 6432. Restart.
    pub listen_port: u16,
    /// Default "transaction".
    pub pool_mode: PoolMode,
    /// Most clients at once; more get 53300. Default 100.
    pub max_client_conn: usize,
    /// Servers per (database, user) pool. Default 20.
    pub default_pool_size: usize,
    /// Servers the janitor keeps open per pool. Default 0.
    pub min_pool_size: usize,
    /// Extra servers once the oldest waiter waited `reserve_pool_timeout`. Default 0.
    pub reserve_pool_size: usize,
    /// Default 5.0.
    pub reserve_pool_timeout: Secs,
    /// Cap of servers per database across its pools; 0 = none.
    pub max_db_connections: usize,
    /// Cap of servers per user across its pools; 0 = none.
    pub max_user_connections: usize,
    /// A client waiting longer for a server is disconnected. Default 120.
    pub query_wait_timeout: Secs,
    /// Default 15.
    pub server_connect_timeout: Secs,
    /// While no server can be opened (Postgres down, restarting, refusing), clients wait and
    /// pgmux retries, first after 50 ms, then doubling up to this. Default 0.5. PgBouncer's
    /// name; there it is a fixed pause (default 15) during which clients get errors.
    pub(crate) server_login_retry: Secs,
    /// A host that failed to connect or to answer server_check_query is tried only after the
    /// others for this long (the others first; all of them when all are banned). Default 30.
    pub host_ban_time: Secs,
    /// A server idle longer than this runs server_check_query before a client gets it;
    /// 0 = always. Default 30 (PgBouncer's).
    pub server_check_delay: Secs,
    /// Query that checks an idle server; empty = no check. Default "select 1".
    pub server_check_query: String,
    /// How long a host name's addresses are kept before it is looked up again; servers to
    /// an address the name no longer has close when released. Default 15 (PgBouncer's).
    pub dns_max_ttl: Secs,
    /// Idle servers older than this are closed. Default 600.
    pub server_idle_timeout: Secs,
    /// A pool of a database reached through "*" that no client has used for this long is
    /// removed, with its servers; 0 = kept. One that never opened a server goes at once.
    /// Default 3600 (PgBouncer's name and default).
    pub autodb_idle_timeout: Secs,
    /// Servers older than this are closed when next idle. Default 3600.
    pub server_lifetime: Secs,
    /// Idle clients are disconnected after this; 0 = never.
    pub client_idle_timeout: Secs,
    /// A client idle this long (and one just logged in that sent nothing more) gives up its
    /// task: its socket is watched by one parking task until it sends again, which saves
    /// most of an idle client's memory. 0 = never park. Default 1. Reload applies it. (pgmux
    /// only: PgBouncer's clients cost no task.)
    pub client_park_delay: Secs,
    /// Clients that do not finish login in time are closed. Default 60.
    pub client_login_timeout: Secs,
    /// A client idle inside a transaction longer than this is disconnected; 0 = never. Also a
    /// client whose server waits for it in a batch without Sync or in COPY FROM STDIN.
    pub idle_transaction_timeout: Secs,
    /// Run on a server before another client gets it in session mode. Default "DISCARD ALL".
    pub(crate) server_reset_query: String,
    /// Also run server_reset_query in transaction mode. Default false.
    pub(crate) server_reset_query_always: bool,
    /// Protocol-level prepared statements each server keeps (LRU) in transaction and statement
    /// mode, where pgmux maps client statement names across servers; 0 turns the mapping off.
    /// Default 200, as in PgBouncer. Reload: applies to servers opened afterwards.
    pub max_prepared_statements: usize,
    /// Default "scram-sha-256"... (PgBouncer defaults to md5; we pick the secure one.)
    pub(crate) auth_type: AuthType,
    /// Users that may use the admin console.
    pub admin_users: Vec<String>,
    /// Users that may run SHOW commands on the admin console.
    pub stats_users: Vec<String>,
    /// Largest packet accepted from a client or server, in bytes. Default 2147483647... capped at 1 GiB.
    pub max_packet_size: usize,
    /// TCP keepalive on both sides. Default true.
    pub(crate) tcp_keepalive: bool,
    /// Disable Nagle on both sides. Default true.
    pub(crate) tcp_nodelay: bool,
    /// Seconds a connection is idle before the first keepalive probe; 0 = the kernel's
    /// (usually 7200). Both sides. Default 0, as PgBouncer.
    pub(crate) tcp_keepidle: usize,
    /// Seconds between keepalive probes; 0 = the kernel's (usually 75). Default 0.
    pub(crate) tcp_keepintvl: usize,
    /// Unanswered probes before the connection is dropped; 0 = the kernel's (usually 9).
    /// Default 0.
    pub(crate) tcp_keepcnt: usize,
    /// Milliseconds (PgBouncer's unit) that sent data may stay unacknowledged before the
    /// connection is dropped (TCP_USER_TIMEOUT); 0 = the kernel's (about 15 minutes of
    /// retransmissions). Both sides. Default 0.
    pub tcp_user_timeout: usize,
    /// Append " - <client ip:port>" to each client's application_name. Default false.
    pub application_name_add_host: bool,
    /// Worker threads; 0 = one per core when the process may use more than two cores, else
    /// 1 (`General::runtime_workers`); 1 = a single-threaded (current-thread) runtime.
    pub workers: usize,
    /// Startup parameters accepted and not applied (PgBouncer's name). Others that pgmux does
    /// not track are refused. Default ["extra_float_digits"] (JDBC sends it); PgBouncer's
    /// default is empty.
    pub(crate) ignore_startup_parameters: Vec<String>,
    /// Carry every session setting a client changes (`SET`, `RESET`, `set_config`, start-up
    /// parameters and `options=-c`) to the servers it is given, reading back from Postgres the
    /// ones it does not report. Default true. false: PgBouncer's behaviour, only the reported
    /// parameters follow their client and other start-up parameters are refused.
    pub track_session_settings: bool,
    /// Parameters Postgres reports (ParameterStatus) that follow their client from the reports
    /// alone, beyond the seven pgmux always tracks (PgBouncer's name). Default empty.
    pub track_extra_parameters: Vec<String>,
    /// Most bytes of notifications (LISTEN/NOTIFY in transaction mode) waiting for one client
    /// that does not read them; past it the client gets 54000 and is disconnected. Default
    /// 8 MiB.
    pub notify_queue_limit: usize,
    /// "pin" (default): a client that makes state that cannot move (a session advisory lock,
    /// a temporary table, a WITH HOLD cursor, an SQL PREPARE, a LOAD) keeps its server until
    /// the state is gone. "error": the statement is refused with 0A000 naming what it would
    /// make, before it runs.
    pub pin_on_session_state: PinOnSessionState,
    /// This process's id in a fleet of peers (PgBouncer's name and range, 1-16383; 0 = no
    /// peering). Its cancel keys carry it, so a cancel that reaches another peer is forwarded
    /// here. Default 0.
    pub peer_id: u16,
    /// A DNS name that resolves to every replica of the fleet (a Kubernetes headless Service),
    /// instead of peer_id and [peers]: each cancel key carries a tag of the address its client
    /// reached this replica at, and a cancel for another replica's key is forwarded (once) to
    /// the addresses of the name with that tag. Resolved again at most every second. Default
    /// "" (off).
    pub peer_dns: String,
    /// The port the replicas found through peer_dns listen on; 0 = this one's listen_port.
    /// Default 0.
    pub peer_dns_port: u16,
    /// On SIGTERM, "boundary" (default): transaction- and statement-mode clients are told to
    /// reconnect (57P01) when their pool checks the connection, once it rested 1 s, or after a
    /// 5 s grace with the answer that ends a transaction; never in the middle of one. "wait":
    /// PgBouncer's, clients stay until they leave. shutdown_timeout ends either.
    pub shutdown_clients: ShutdownClients,
    /// Let several pgmux processes listen on the same port (SO_REUSEPORT), for restarts
    /// without downtime. Default false. Restart.
    pub so_reuseport: bool,
    /// On SIGTERM, how long connected clients may go on before pgmux closes them and exits.
    /// Default 30. 0 = wait for them without limit.
    pub shutdown_timeout: Secs,
    /// "text" or "json". Default "text". Restart.
    pub log_format: LogFormat,
    /// Seconds between the per-pool stats log lines and the SHOW STATS averages. Default 60;
    /// 0 turns the log lines off.
    pub stats_period: Secs,
    /// Log client logins and logouts. Default true.
    pub(crate) log_connections: bool,
    /// Log client disconnections with their reason. Default true.
    pub(crate) log_disconnections: bool,
    /// PgBouncer's userlist.txt: `"user" "secret"` per line (plaintext, md5 or SCRAM
    /// verifier), read at start and on reload; `[users]` entries take precedence.
    pub auth_file: Option<String>,
    /// pg_hba.conf-style rules, used when auth_type = "hba"; read at start and on reload.
    pub auth_hba_file: Option<String>,
    /// The user whose pool runs auth_query for users that neither `[users]` nor auth_file
    /// knows (PgBouncer's auth_user). Unset: no lookup. Its own secret comes from `[users]` or
    /// auth_file.
    pub auth_user: Option<String>,
    /// Looks up a user's secret; `$1` is the user name, and it returns (name, secret) with a
    /// NULL secret for a user without a password. Default
    /// "SELECT usename, passwd FROM pg_shadow WHERE usename=$1".
    pub auth_query: String,
    /// The `[databases]` entry whose (entry, auth_user) pool runs auth_query; default: the
    /// database the client asked for. Also lets the admin console use auth_query.
    pub auth_dbname: Option<String>,
    /// Seconds an auth_query answer (a secret, or "no such user") is kept; a failed
    /// authentication forgets it at once. A changed or revoked password still works this long
    /// for new logins. Default 10; 0 = ask on every login, as PgBouncer. pgmux's own key.
    pub auth_query_cache_ttl: Secs,
    /// Seconds a failed authentication waits before its error is sent (slows password
    /// guessing). Default 0.5; 0 = none.
    pub auth_failure_delay: Secs,
    /// TLS toward clients: disable (default), allow, prefer, require, verify-ca, verify-full.
    pub(crate) client_tls_sslmode: SslMode,
    /// PEM certificate (chain) pgmux shows clients.
    pub(crate) client_tls_cert_file: Option<String>,
    /// PEM private key for client_tls_cert_file.
    pub client_tls_key_file: Option<String>,
    /// PEM CA certificates client certificates must chain to (verify-ca, verify-full).
    pub(crate) client_tls_ca_file: Option<String>,
    /// TLS toward servers: disable, allow, prefer (default, as PgBouncer), require,
    /// verify-ca, verify-full.
    pub(crate) server_tls_sslmode: SslMode,
    /// PEM CA certificates server certificates must chain to (verify-ca, verify-full);
    /// default: the Mozilla roots built in.
    pub(crate) server_tls_ca_file: Option<String>,
    /// PEM client certificate pgmux shows servers (cert authentication), with its key.
    pub(crate) server_tls_cert_file: Option<String>,
    pub(crate) server_tls_key_file: Option<String>,
}

/// Where and how auth_query runs for one database (see [`Config::auth_lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthLookup<'a> {
    /// The pool (dbname, user) runs `query`.
    pub user: &'a str,
    pub query: &'a str,
    pub dbname: &'a str,
}

/// auth_query's default, as the issue and PgBouncer before 1.21 have it.
pub(crate) const DEFAULT_AUTH_QUERY: &str =
    "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";

impl Default for General {
    fn default() -> Self {
        General {
            listen_addr: "127.0.0.1".into(),
            listen_port: 6432,
            pool_mode: PoolMode::Transaction,
            max_client_conn: 100,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Secs(5.0),
            max_db_connections: 0,
            max_user_connections: 0,
            query_wait_timeout: Secs(120.0),
            server_connect_timeout: Secs(15.0),
            server_login_retry: Secs(0.5),
            host_ban_time: Secs(30.0),
            server_check_delay: Secs(30.0),
            server_check_query: "select 1".into(),
            dns_max_ttl: Secs(15.0),
            server_idle_timeout: Secs(600.0),
            autodb_idle_timeout: Secs(3600.0),
            server_lifetime: Secs(3600.0),
            client_idle_timeout: Secs(0.0),
            client_park_delay: Secs(1.0),
            client_login_timeout: Secs(60.0),
            idle_transaction_timeout: Secs(0.0),
            server_reset_query: "DISCARD ALL".into(),
            server_reset_query_always: false,
            max_prepared_statements: 200,
            auth_type: AuthType::ScramSha256,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            max_packet_size: 1 << 30,
            tcp_keepalive: true,
            tcp_nodelay: true,
            tcp_keepidle: 0,
            tcp_keepintvl: 0,
            tcp_keepcnt: 0,
            tcp_user_timeout: 0,
            application_name_add_host: false,
            workers: 0,
            ignore_startup_parameters: vec!["extra_float_digits".into()],
            track_session_settings: true,
            track_extra_parameters: Vec::new(),
            notify_queue_limit: 8 << 20,
            pin_on_session_state: PinOnSessionState::Pin,
            peer_id: 0,
            peer_dns: String::new(),
            peer_dns_port: 0,
            shutdown_clients: ShutdownClients::Boundary,
            so_reuseport: false,
            shutdown_timeout: Secs(30.0),
            log_format: LogFormat::Text,
            stats_period: Secs(60.0),
            log_connections: true,
            log_disconnections: true,
            auth_file: None,
            auth_hba_file: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.into(),
            auth_dbname: None,
            auth_query_cache_ttl: Secs(10.0),
            auth_failure_delay: Secs(0.5),
            client_tls_sslmode: SslMode::Disable,
            client_tls_cert_file: None,
            client_tls_key_file: None,
            client_tls_ca_file: None,
            server_tls_sslmode: SslMode::Prefer,
            server_tls_ca_file: None,
            server_tls_cert_file: None,
            server_tls_key_file: None,
        }
    }
}

/// `[databases.NAME]`: where the database clients call NAME lives.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Server host, or several separated by commas (tried in order, as libpq). Default
    /// "127.0.0.1".
    #[serde(default = "default_host")]
    pub host: String,
    /// Server port, or one per host ("5432,5433"). Default 5432.
    #[serde(default = "default_port")]
    pub(crate) port: Ports,
    /// Which of the hosts' servers to use: any (default), read-write, read-only, primary,
    /// standby, prefer-standby (libpq's meanings).
    pub(crate) target_session_attrs: Option<SessionAttrs>,
    /// How new servers pick among the hosts: round-robin, least-connections, or disable (in
    /// order). Default: in order for read-write and primary, else round-robin.
    pub(crate) load_balance_hosts: Option<LoadBalance>,
    /// Database name on the server; defaults to the key (for "*", the client's database name).
    pub dbname: Option<String>,
    /// Force this server user (PgBouncer's `user=`).
    pub user: Option<String>,
    /// Password for the forced user, if not in `[users]`.
    pub password: Option<String>,
    /// Overrides default_pool_size.
    pub pool_size: Option<usize>,
    /// Overrides min_pool_size.
    pub min_pool_size: Option<usize>,
    /// Overrides reserve_pool_size.
    pub reserve_pool_size: Option<usize>,
    /// Overrides [general] pool_mode.
    pub pool_mode: Option<PoolMode>,
    /// Overrides [general] max_db_connections.
    pub max_db_connections: Option<usize>,
    /// application_name for clients of this database that give none (PgBouncer's per-database
    /// `application_name`).
    pub application_name: Option<String>,
    /// Overrides [general] auth_user for clients of this database.
    pub auth_user: Option<String>,
    /// Overrides [general] auth_query for clients of this database.
    pub auth_query: Option<String>,
    /// Overrides [general] auth_dbname for clients of this database.
    pub auth_dbname: Option<String>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> Ports {
    Ports(vec![5432])
}

impl Database {
    /// Its load_balance_hosts, or the default for its target_session_attrs: in order where
    /// one host fits (read-write, primary: the list says which to try first), else
    /// round-robin.
    pub(crate) fn load_balance(&self) -> LoadBalance {
        self.load_balance_hosts
            .unwrap_or(match self.target_session_attrs {
                Some(SessionAttrs::ReadWrite | SessionAttrs::Primary) => LoadBalance::Disable,
                _ => LoadBalance::RoundRobin,
            })
    }

    /// Its (host, port) pairs, in order: one port for all hosts, or one each.
    pub fn hosts(&self) -> Vec<(String, u16)> {
        let hosts: Vec<&str> = self.host.split(',').map(str::trim).collect();
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let p = self.port.0.get(i).or(self.port.0.first()).copied();
                (h.to_string(), p.unwrap_or(5432))
            })
            .collect()
    }
}

/// `[users.NAME]`: a user's secret and overrides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Plaintext, "md5<32 hex>", or "SCRAM-SHA-256$<iter>:<salt>$<storedkey>:<serverkey>".
    pub password: Option<String>,
    /// Overrides the database's and [general]'s pool_mode.
    pub pool_mode: Option<PoolMode>,
    /// Overrides [general] max_user_connections.
    pub max_user_connections: Option<usize>,
}

/// Errors from reading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

/// `[general]` keys a reload cannot change: they need a restart.
pub(crate) const RESTART_KEYS: &[&str] = &[
    "listen_addr",
    "listen_port",
    "workers",
    "so_reuseport",
    "log_format",
];

/// Whether a `[general]` key needs a restart to change.
pub(crate) fn is_restart_key(key: &str) -> bool {
    RESTART_KEYS.contains(&key)
}

/// Every `[general]` key, in the order of the model.
impl General {
    /// The `[general]` keys and values, as a TOML table (SHOW CONFIG, reload's diff).
    pub(crate) fn as_table(&self) -> toml::Table {
        toml::Table::try_from(self).unwrap_or_default()
    }

    /// The runtime's worker threads: `workers`, or for 0 one per core the process may use
    /// (its CPU affinity and cgroup quota) when it may use more than two, else 1.
    pub fn runtime_workers(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        workers_for(self.workers, cores)
    }
}

/// See [`General::runtime_workers`]. On two cores or fewer the pooler shares them with
/// Postgres or its application (a sidecar), and there the single-threaded runtime measured
/// about 10% cheaper per transaction than two workers and at least level on TPS from 16 to
/// 512 clients (README, "Benchmarks"; at 10,000 clients two workers were steadier).
fn workers_for(configured: usize, cores: usize) -> usize {
    match configured {
        0 if cores > 2 => cores,
        0 => 1,
        n => n,
    }
}

pub(crate) fn general_keys() -> &'static [&'static str] {
    validate::GENERAL_KEYS
}

/// The virtual databases that open the admin console.
pub(crate) const ADMIN_DATABASES: [&str; 2] = ["pgmux", "pgbouncer"];

/// Whether a database name opens the admin console.
pub(crate) fn is_admin_db(name: &str) -> bool {
    ADMIN_DATABASES.contains(&name)
}

/// The entries of a `listen_addr` list: comma-separated, trimmed, empty ones skipped.
pub fn listen_addrs(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// The address of `[metrics] listen`: "ip:port", with "*" for all addresses (this gives the
/// IPv4 one; `app` binds the IPv6 one beside it).
pub fn metrics_addr(listen: &str) -> Option<std::net::SocketAddr> {
    let s = match listen.strip_prefix("*:") {
        Some(port) => format!("0.0.0.0:{port}"),
        None => listen.to_string(),
    };
    s.parse().ok()
}

impl Config {
    /// Read, parse and validate a config file, with the `PGMUX_GENERAL_<KEY>` and
    /// `PGMUX_METRICS_<KEY>` environment variables overriding its keys.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let overrides = env::overrides(std::env::vars());
        Config::parse(&env::apply(&text, &overrides))
    }

    /// The keys the environment overrides (`general.default_pool_size` for
    /// `PGMUX_GENERAL_DEFAULT_POOL_SIZE`), and the `PGMUX_GENERAL_*` / `PGMUX_METRICS_*`
    /// variables that name no key (skipped), for the log.
    pub fn env_overrides() -> (Vec<String>, Vec<String>) {
        let set = env::overrides(std::env::vars())
            .into_iter()
            .map(|(section, key, _)| format!("{section}.{key}"))
            .collect();
        (set, env::unknown(std::env::vars()))
    }

    /// Parse and validate config text; every problem is reported at once.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        validate(text).map_err(ConfigError::Invalid)
    }

    /// The `[databases]` entry for a client's database name: exact, else "*".
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.get(name).or_else(|| self.databases.get("*"))
    }

    /// How secrets are looked up for clients of database `name` (entry `db`): auth_user,
    /// auth_query and auth_dbname, each the entry's or else `[general]`'s. `None` without an
    /// auth_user.
    pub(crate) fn auth_lookup<'a>(
        &'a self,
        db: &'a Database,
        name: &'a str,
    ) -> Option<AuthLookup<'a>> {
        let g = &self.general;
        Some(AuthLookup {
            user: db.auth_user.as_deref().or(g.auth_user.as_deref())?,
            query: db.auth_query.as_deref().unwrap_or(&g.auth_query),
            dbname: db
                .auth_dbname
                .as_deref()
                .or(g.auth_dbname.as_deref())
                .unwrap_or(name),
        })
    }

    /// The pool mode for a (database entry, user).
    pub fn pool_mode(&self, db: &Database, user: Option<&User>) -> PoolMode {
        user.and_then(|u| u.pool_mode)
            .or(db.pool_mode)
            .unwrap_or(self.general.pool_mode)
    }
}

#[cfg(test)]
mod tests {
    use super::workers_for;

    #[test]
    fn workers_zero_is_one_per_core_above_two_cores_else_one() {
        assert_eq!(workers_for(0, 1), 1);
        assert_eq!(workers_for(0, 2), 1);
        assert_eq!(workers_for(0, 3), 3);
        assert_eq!(workers_for(0, 16), 16);
        assert_eq!(workers_for(1, 16), 1);
        assert_eq!(workers_for(4, 2), 4);
    }
}
