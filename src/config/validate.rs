//! Validation of config text: every problem found, each naming its key.
//!
//! The text is parsed into a `toml::Table` first and walked key by key: each known key is
//! deserialized on its own into its field of the serde model (so one bad key does not hide
//! the others), unknown keys are reported with a "did you mean" suggestion, and the semantic
//! checks run on the assembled `Config`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{
    default_host, default_port, AuthType, Config, Database, General, LoadBalance, LogFormat,
    Metrics, PoolMode, Ports, Secs, SessionAttrs, SslMode, User,
};
use crate::auth::Secret;

/// One problem in a config file, naming the key it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `general.listen_port`; for a TOML syntax error, the location
    /// (`line 3, column 7`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Parse and check config text, returning every problem found.
pub(crate) fn validate(text: &str) -> Result<Config, Vec<ConfigProblem>> {
    let root: Table = text.parse().map_err(|e| vec![syntax_problem(text, &e)])?;
    let mut p = Problems::default();
    let mut config = Config {
        general: General::default(),
        metrics: Metrics::default(),
        databases: BTreeMap::new(),
        users: BTreeMap::new(),
        peers: BTreeMap::new(),
        fleet: None,
    };
    for (k, v) in &root {
        let path = key_part(k).into_owned();
        match k.as_str() {
            "general" => {
                if let Some(t) = section_table(v, &path, &mut p) {
                    read_general(&mut config.general, t, &path, &mut p);
                }
            }
            "metrics" => {
                if let Some(t) = section_table(v, &path, &mut p) {
                    read_metrics(&mut config.metrics, t, &path, &mut p);
                }
            }
            "databases" => {
                if let Some(t) = section_table(v, &path, &mut p) {
                    for (name, v) in t {
                        let path = format!("databases.{}", key_part(name));
                        if let Some(t) = entry_table(v, &path, "databases", name, &mut p) {
                            let mut db = Database {
                                host: default_host(),
                                port: default_port(),
                                target_session_attrs: None,
                                load_balance_hosts: None,
                                dbname: None,
                                user: None,
                                password: None,
                                pool_size: None,
                                min_pool_size: None,
                                reserve_pool_size: None,
                                pool_mode: None,
                                max_db_connections: None,
                                application_name: None,
                                auth_user: None,
                                auth_query: None,
                                auth_dbname: None,
                            };
                            read_database(&mut db, t, &path, &mut p);
                            config.databases.insert(name.clone(), db);
                        }
                    }
                }
            }
            "users" => {
                if let Some(t) = section_table(v, &path, &mut p) {
                    for (name, v) in t {
                        let path = format!("users.{}", key_part(name));
                        if let Some(t) = entry_table(v, &path, "users", name, &mut p) {
                            let mut user = User::default();
                            read_user(&mut user, t, &path, &mut p);
                            config.users.insert(name.clone(), user);
                        }
                    }
                }
            }
            "peers" => {
                if let Some(t) = section_table(v, &path, &mut p) {
                    for (id, v) in t {
                        let path = format!("peers.{}", key_part(id));
                        if !id
                            .parse::<u16>()
                            .is_ok_and(|n| (1..=MAX_PEER_ID).contains(&n))
                        {
                            p.push(
                                &path,
                                format!("a peer's id is a number from 1 to {MAX_PEER_ID}"),
                            );
                            continue;
                        }
                        match v.clone().try_into::<super::Peer>() {
                            Ok(peer) => {
                                config.peers.insert(id.clone(), peer);
                            }
                            Err(e) => {
                                p.push(&path, format!("expected host = \"...\", port = N: {e}"))
                            }
                        }
                    }
                }
            }
            "fleet" => match v.clone().try_into::<super::Fleet>() {
                Ok(f) if f.name.trim().is_empty() => {
                    p.push("fleet.name", "a fleet needs a name (the same on every replica)")
                }
                Ok(f) if !(1..=MAX_FLEET_SERVERS).contains(&f.max_servers) => p.push(
                    "fleet.max_servers",
                    format!("a number from 1 to {MAX_FLEET_SERVERS}"),
                ),
                Ok(f) => config.fleet = Some(f),
                Err(e) => p.push(
                    "fleet",
                    format!(
                        "expected name = \"...\", max_servers = N, scope = \"pool\" or \"database\": {e}"
                    ),
                ),
            },
            _ => unknown_top_level(&path, k, v, &mut p),
        }
    }
    check_general(&config.general, &mut p);
    check_metrics(&config.metrics, &mut p);
    check_auth(&config.general, &mut p);
    check_databases(&config, &mut p);
    check_auth_query(&config, &mut p);
    check_users(&config, &mut p);
    if p.0.is_empty() {
        Ok(config)
    } else {
        Err(p.0)
    }
}

/// The largest peer_id (PgBouncer's): 14 bits of a cancel key's pid.
pub(crate) const MAX_PEER_ID: u16 = 16383;
/// The largest fleet budget (`[fleet] max_servers`): slots are advisory lock keys below it.
pub(crate) const MAX_FLEET_SERVERS: usize = 1_000_000;

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// A TOML syntax error, keyed by its location.
fn syntax_problem(text: &str, e: &toml::de::Error) -> ConfigProblem {
    let key = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("line {line}, column {column}")
        }
        None => String::new(),
    };
    ConfigProblem {
        key,
        message: format!("TOML syntax error: {}", e.message().trim()),
    }
}

/// A key as written in a dotted path: bare when TOML allows it, else quoted.
fn key_part(k: &str) -> Cow<'_, str> {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Cow::Borrowed(k)
    } else {
        Cow::Owned(format!("{k:?}"))
    }
}

/// How a TOML value looks, for "expected X, found Y".
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// Edit distance (optimal string alignment: insertions, deletions, substitutions and
/// transpositions of neighbours each cost 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The known name closest to `word`, if within edit distance 2 (case-insensitive).
fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A top-level section's value, which must be a table.
fn section_table<'a>(v: &'a Value, path: &str, p: &mut Problems) -> Option<&'a Table> {
    match v {
        Value::Table(t) => Some(t),
        other => {
            p.push(
                path,
                format!(
                    "expected a table ([{path}] section), found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// A `[databases.NAME]` or `[users.NAME]` entry, which must be a table with a non-empty name.
fn entry_table<'a>(
    v: &'a Value,
    path: &str,
    section: &str,
    name: &str,
    p: &mut Problems,
) -> Option<&'a Table> {
    if name.is_empty() {
        p.push(path, "the name must not be empty");
    }
    match v {
        Value::Table(t) => Some(t),
        Value::String(_) if section == "databases" => {
            p.push(
                path,
                format!(
                    "expected a table ([{path}] with host = ..., port = ...), found {}; \
                     PgBouncer-style connection strings are not supported",
                    describe(v)
                ),
            );
            None
        }
        Value::String(_) if section == "users" => {
            p.push(
                path,
                format!(
                    "expected a table ([{path}] with password = ...), found {}",
                    describe(v)
                ),
            );
            None
        }
        other => {
            p.push(
                path,
                format!("expected a table ([{path}]), found {}", describe(other)),
            );
            None
        }
    }
}

/// An unknown key or section at the top level.
fn unknown_top_level(path: &str, k: &str, v: &Value, p: &mut Problems) {
    const SECTIONS: &[&str] = &["general", "metrics", "databases", "users"];
    let what = if v.is_table() { "section" } else { "key" };
    let message = if let Some(s) = suggest(k, SECTIONS) {
        format!("unknown {what}; did you mean {s}?")
    } else if k == "pgbouncer" {
        "unknown section; PgBouncer's [pgbouncer] settings go in [general]".into()
    } else if GENERAL_KEYS.contains(&k) {
        format!(
            "unknown top-level key; {k} belongs in [general] (put it below the [general] header)"
        )
    } else {
        format!("unknown {what}; the sections are [general], [metrics], [databases.NAME] and [users.NAME]")
    };
    p.push(path, message);
}

/// An unknown key inside a section: suggest a near miss, or say where the key belongs.
fn unknown_key(
    path: &str,
    k: &str,
    known: &[&str],
    elsewhere: &[(&[&str], &str)],
    p: &mut Problems,
) {
    let message = if let Some(s) = suggest(k, known) {
        format!("unknown key; did you mean {s}?")
    } else if let Some((_, place)) = elsewhere.iter().find(|(keys, _)| keys.contains(&k)) {
        format!("unknown key; {k} can only be set in {place}")
    } else {
        "unknown key".into()
    };
    p.push(path, message);
}

/// A field type of the serde model: what it expects, and a check of its value.
trait Field: DeserializeOwned {
    /// "expected ..." text.
    const EXPECTED: &'static str;
    /// The allowed values, for enums (for "did you mean").
    const CHOICES: &'static [&'static str] = &[];
    /// A check beyond the type.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Field for String {
    const EXPECTED: &'static str = "a string";
}
impl Field for bool {
    const EXPECTED: &'static str = "true or false";
}
impl Field for u16 {
    const EXPECTED: &'static str = "an integer from 0 to 65535";
}
impl Field for Ports {
    const EXPECTED: &'static str =
        "a port (5432), or one per host separated by commas (\"5432,5433\")";
}
impl Field for LoadBalance {
    const EXPECTED: &'static str = r#"one of "round-robin", "least-connections", "disable""#;
    const CHOICES: &'static [&'static str] = &["round-robin", "least-connections", "disable"];
}
impl Field for SessionAttrs {
    const EXPECTED: &'static str =
        r#"one of "any", "read-write", "read-only", "primary", "standby", "prefer-standby""#;
    const CHOICES: &'static [&'static str] = &[
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ];
}
impl Field for usize {
    const EXPECTED: &'static str = "a non-negative integer";
}
impl Field for Vec<String> {
    const EXPECTED: &'static str = "an array of strings";
}
impl Field for Secs {
    const EXPECTED: &'static str = "a number of seconds (fractions allowed, e.g. 2.5)";
    fn check(&self) -> Result<(), String> {
        if !self.0.is_finite() {
            Err(format!(
                "must be a finite number of seconds, found {}",
                self.0
            ))
        } else if self.0 < 0.0 {
            Err(format!(
                "must be >= 0 seconds (0 disables), found {}",
                self.0
            ))
        } else {
            Ok(())
        }
    }
}
impl Field for PoolMode {
    const EXPECTED: &'static str = r#"one of "session", "transaction", "statement""#;
    const CHOICES: &'static [&'static str] = &["session", "transaction", "statement"];
}
impl Field for AuthType {
    const EXPECTED: &'static str =
        r#"one of "trust", "plain", "md5", "scram-sha-256", "hba", "cert""#;
    const CHOICES: &'static [&'static str] =
        &["trust", "plain", "md5", "scram-sha-256", "hba", "cert"];
}
impl Field for SslMode {
    const EXPECTED: &'static str =
        r#"one of "disable", "allow", "prefer", "require", "verify-ca", "verify-full""#;
    const CHOICES: &'static [&'static str] = &[
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
}
impl Field for super::PinOnSessionState {
    const EXPECTED: &'static str = r#"one of "pin", "error""#;
    const CHOICES: &'static [&'static str] = &["pin", "error"];
}
impl Field for super::ShutdownClients {
    const EXPECTED: &'static str = r#"one of "boundary", "wait""#;
    const CHOICES: &'static [&'static str] = &["boundary", "wait"];
}
impl Field for LogFormat {
    const EXPECTED: &'static str = r#"one of "text", "json""#;
    const CHOICES: &'static [&'static str] = &["text", "json"];
}
impl<T: Field> Field for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    const CHOICES: &'static [&'static str] = T::CHOICES;
    fn check(&self) -> Result<(), String> {
        self.as_ref().map_or(Ok(()), T::check)
    }
}

/// Deserialize one key into its field; on a problem, report it and keep the field as it was.
fn read<T: Field>(slot: &mut T, v: &Value, path: &str, p: &mut Problems) {
    match v.clone().try_into::<T>() {
        Ok(x) => match x.check() {
            Ok(()) => *slot = x,
            Err(m) => p.push(path, m),
        },
        Err(_) => {
            let mut message = format!("expected {}, found {}", T::EXPECTED, describe(v));
            if let (Value::String(s), false) = (v, T::CHOICES.is_empty()) {
                if let Some(s) = suggest(s, T::CHOICES) {
                    message.push_str(&format!("; did you mean {s:?}?"));
                }
            }
            p.push(path, message);
        }
    }
}

/// Define `$keys` (the field names of `$ty`) and `$read`, which reads a table's keys into a
/// `$ty` one by one. The destructuring is exhaustive, so a field added to `$ty` must be
/// listed here too.
macro_rules! section_reader {
    ($read:ident, $keys:ident, $ty:ident { $($f:ident),* $(,)? }, elsewhere: $elsewhere:expr) => {
        pub(super) const $keys: &[&str] = &[$(stringify!($f)),*];

        fn $read(target: &mut $ty, table: &Table, prefix: &str, p: &mut Problems) {
            let $ty { $($f),* } = target;
            for (k, v) in table {
                let path = format!("{prefix}.{}", key_part(k));
                match k.as_str() {
                    $(stringify!($f) => read($f, v, &path, p),)*
                    _ => unknown_key(&path, k, $keys, $elsewhere, p),
                }
            }
        }
    };
}

section_reader!(
    read_general,
    GENERAL_KEYS,
    General {
        listen_addr,
        listen_port,
        pool_mode,
        max_client_conn,
        default_pool_size,
        min_pool_size,
        reserve_pool_size,
        reserve_pool_timeout,
        max_db_connections,
        max_user_connections,
        query_wait_timeout,
        server_connect_timeout,
        server_login_retry,
        host_ban_time,
        server_check_delay,
        server_check_query,
        dns_max_ttl,
        server_idle_timeout,
        autodb_idle_timeout,
        server_lifetime,
        client_idle_timeout,
        client_park_delay,
        client_login_timeout,
        idle_transaction_timeout,
        server_reset_query,
        server_reset_query_always,
        max_prepared_statements,
        auth_type,
        admin_users,
        stats_users,
        max_packet_size,
        tcp_keepalive,
        tcp_nodelay,
        tcp_keepidle,
        tcp_keepintvl,
        tcp_keepcnt,
        tcp_user_timeout,
        application_name_add_host,
        workers,
        ignore_startup_parameters,
        track_session_settings,
        track_extra_parameters,
        notify_queue_limit,
        pin_on_session_state,
        peer_id,
        peer_dns,
        peer_dns_port,
        shutdown_clients,
        so_reuseport,
        shutdown_timeout,
        log_format,
        stats_period,
        log_connections,
        log_disconnections,
        auth_file,
        auth_hba_file,
        auth_user,
        auth_query,
        auth_dbname,
        auth_query_cache_ttl,
        auth_failure_delay,
        client_tls_sslmode,
        client_tls_cert_file,
        client_tls_key_file,
        client_tls_ca_file,
        server_tls_sslmode,
        server_tls_ca_file,
        server_tls_cert_file,
        server_tls_key_file,
    },
    elsewhere: &[
        (DATABASE_KEYS, "a [databases.NAME] entry"),
        (USER_KEYS, "a [users.NAME] entry"),
        (METRICS_KEYS, "[metrics]"),
    ]
);

section_reader!(
    read_metrics,
    METRICS_KEYS,
    Metrics {
        listen,
        pgbouncer_names
    },
    elsewhere: &[(GENERAL_KEYS, "[general]")]
);

section_reader!(
    read_database,
    DATABASE_KEYS,
    Database {
        host,
        port,
        target_session_attrs,
        load_balance_hosts,
        dbname,
        user,
        password,
        pool_size,
        min_pool_size,
        reserve_pool_size,
        pool_mode,
        max_db_connections,
        application_name,
        auth_user,
        auth_query,
        auth_dbname,
    },
    elsewhere: &[
        (GENERAL_KEYS, "[general]"),
        (USER_KEYS, "a [users.NAME] entry"),
    ]
);

section_reader!(
    read_user,
    USER_KEYS,
    User {
        password,
        pool_mode,
        max_user_connections,
    },
    elsewhere: &[
        (GENERAL_KEYS, "[general]"),
        (DATABASE_KEYS, "a [databases.NAME] entry"),
    ]
);

/// Largest `max_packet_size` accepted: 1 GiB, Postgres' own limit for a message.
pub(super) const MAX_PACKET_SIZE: usize = 1 << 30;
/// Smallest `max_packet_size` accepted.
const MIN_PACKET_SIZE: usize = 1024;

fn check_general(g: &General, p: &mut Problems) {
    if super::listen_addrs(&g.listen_addr).next().is_none() {
        p.push(
            "general.listen_addr",
            "must not be empty (use \"*\" for all addresses)",
        );
    }
    for a in super::listen_addrs(&g.listen_addr) {
        let name_like = a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if a != "*" && a.parse::<std::net::IpAddr>().is_err() && !name_like {
            p.push(
                "general.listen_addr",
                format!("{a:?} is neither \"*\", an IP address nor a host name"),
            );
        }
    }
    if g.max_client_conn < 1 {
        p.push("general.max_client_conn", "must be at least 1");
    }
    if g.peer_id > MAX_PEER_ID {
        p.push(
            "general.peer_id",
            format!("at most {MAX_PEER_ID} (0 turns peering off)"),
        );
    }
    if g.peer_id != 0 && !g.peer_dns.is_empty() {
        p.push(
            "general.peer_dns",
            "peer_dns and peer_id are two ways to find the fleet's replicas: set one",
        );
    }
    if g.notify_queue_limit < 8192 {
        p.push(
            "general.notify_queue_limit",
            "must be at least 8192 (bytes: one notification can be that large)",
        );
    }
    if g.default_pool_size < 1 {
        p.push("general.default_pool_size", "must be at least 1");
    } else if g.min_pool_size > g.default_pool_size {
        p.push(
            "general.min_pool_size",
            format!(
                "{} exceeds default_pool_size ({})",
                g.min_pool_size, g.default_pool_size
            ),
        );
    }
    if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&g.max_packet_size) {
        p.push(
            "general.max_packet_size",
            format!(
                "must be between {MIN_PACKET_SIZE} and {MAX_PACKET_SIZE} bytes, found {}",
                g.max_packet_size
            ),
        );
    }
    for (name, list) in [
        ("admin_users", &g.admin_users),
        ("stats_users", &g.stats_users),
    ] {
        for (i, u) in list.iter().enumerate() {
            if u.trim().is_empty() {
                p.push(
                    format!("general.{name}[{i}]"),
                    "user names must be non-empty strings",
                );
            }
        }
    }
}

fn check_auth(g: &General, p: &mut Problems) {
    if g.auth_type == AuthType::Cert
        && !matches!(
            g.client_tls_sslmode,
            SslMode::VerifyCa | SslMode::VerifyFull
        )
    {
        p.push(
            "general.auth_type",
            "\"cert\" needs client_tls_sslmode = \"verify-ca\" or \"verify-full\" (verified client certificates)",
        );
    }
    if g.auth_type == AuthType::Hba && g.auth_hba_file.is_none() {
        p.push(
            "general.auth_hba_file",
            "missing: auth_type = \"hba\" takes its rules from auth_hba_file",
        );
    }
}

/// auth_user, auth_query and auth_dbname, in `[general]` and in each database entry.
fn check_auth_query(config: &Config, p: &mut Problems) {
    let g = &config.general;
    let entries = std::iter::once((
        "general".to_string(),
        &g.auth_user,
        Some(&g.auth_query),
        &g.auth_dbname,
    ))
    .chain(config.databases.iter().map(|(name, db)| {
        (
            format!("databases.{}", key_part(name)),
            &db.auth_user,
            db.auth_query.as_ref(),
            &db.auth_dbname,
        )
    }));
    for (path, user, query, dbname) in entries {
        if user.as_deref().is_some_and(|u| u.trim().is_empty()) {
            p.push(format!("{path}.auth_user"), "must not be empty");
        }
        if let Some(q) = query {
            if !q.contains("$1") {
                p.push(
                    format!("{path}.auth_query"),
                    "must take the user name as $1 and return (name, secret), e.g. \
                     \"SELECT usename, passwd FROM pg_shadow WHERE usename=$1\"",
                );
            }
        }
        if let Some(d) = dbname {
            if config.database(d).is_none() || super::is_admin_db(d) {
                p.push(
                    format!("{path}.auth_dbname"),
                    format!("{d:?} is not an entry of [databases]"),
                );
            }
        }
    }
}

fn check_metrics(m: &Metrics, p: &mut Problems) {
    if let Some(listen) = &m.listen {
        if super::metrics_addr(listen).is_none() {
            p.push(
                "metrics.listen",
                format!(
                    "expected \"ip:port\" (e.g. \"127.0.0.1:9127\", \"*:9127\"), found {listen:?}"
                ),
            );
        }
    }
}

fn check_databases(config: &Config, p: &mut Problems) {
    let g = &config.general;
    for (name, db) in &config.databases {
        let path = format!("databases.{}", key_part(name));
        if super::is_admin_db(name) {
            p.push(
                path.clone(),
                format!("\"{name}\" is the admin console's name; choose another"),
            );
        }
        if db.host.split(',').any(|h| h.trim().is_empty()) {
            p.push(
                format!("{path}.host"),
                "must not be empty (nor have an empty entry)",
            );
        }
        if db.port.0.contains(&0) || db.port.0.is_empty() {
            p.push(format!("{path}.port"), "must be a port from 1 to 65535");
        }
        let hosts = db.host.split(',').count();
        if db.port.0.len() > 1 && db.port.0.len() != hosts {
            p.push(
                format!("{path}.port"),
                format!(
                    "{} ports for {hosts} hosts: give one port, or one per host",
                    db.port.0.len()
                ),
            );
        }
        if db.dbname.as_deref().is_some_and(|d| d.is_empty()) {
            p.push(
                format!("{path}.dbname"),
                "must not be empty (leave it out to use the entry's name)",
            );
        }
        if db.pool_size == Some(0) {
            p.push(format!("{path}.pool_size"), "must be at least 1");
        }
        let size = db.pool_size.unwrap_or(g.default_pool_size);
        let min = db.min_pool_size.unwrap_or(g.min_pool_size);
        if size >= 1 && min > size {
            let (key, message) = if db.min_pool_size.is_some() {
                (
                    "min_pool_size",
                    format!("{min} exceeds the pool size ({size})"),
                )
            } else if db.pool_size.is_some() {
                (
                    "pool_size",
                    format!("{size} is smaller than general.min_pool_size ({min})"),
                )
            } else {
                continue; // Reported on [general].
            };
            p.push(format!("{path}.{key}"), message);
        }
        if let Some(pw) = &db.password {
            if db.user.is_none() {
                p.push(
                    format!("{path}.password"),
                    "is only used with user (the forced server user); set user too",
                );
            }
            match parse_secret(pw) {
                Ok(Secret::Scram(_)) => p.push(
                    format!("{path}.password"),
                    "a SCRAM verifier cannot log in to the server; give the plaintext \
                     password (or an md5 hash for servers using md5)",
                ),
                Ok(_) => {}
                Err(e) => p.push(format!("{path}.password"), e),
            }
        }
        if let Some(user) = &db.user {
            if user.is_empty() {
                p.push(format!("{path}.user"), "must not be empty");
            } else if db.password.is_none()
                && config
                    .users
                    .get(user)
                    .and_then(|u| u.password.as_ref())
                    .is_none()
            {
                p.push(
                    format!("{path}.user"),
                    format!(
                        "forced user {user:?} has no password: set {path}.password or users.{}.password",
                        key_part(user)
                    ),
                );
            }
        }
    }
}

fn check_users(config: &Config, p: &mut Problems) {
    let g = &config.general;
    // Without a password here, the user's secret comes from auth_file or auth_query (as a
    // PgBouncer [users] entry, which holds settings only).
    let elsewhere =
        g.auth_type == AuthType::Trust || g.auth_file.is_some() || g.auth_user.is_some();
    for (name, user) in &config.users {
        let path = format!("users.{}.password", key_part(name));
        match &user.password {
            None if !elsewhere => p.push(
                path,
                "missing; only auth_type = \"trust\", auth_file or auth_user allow users without a password",
            ),
            None => {}
            Some(pw) => {
                if let Err(e) = parse_secret(pw) {
                    p.push(path, e);
                }
            }
        }
    }
}

/// `Secret::parse`, also refusing text that looks like a mistyped MD5 hash (which would
/// otherwise silently become a plaintext password).
fn parse_secret(text: &str) -> Result<Secret, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(rest) = text.strip_prefix("md5") {
        let hashlike =
            (28..=36).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric());
        let valid = rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit());
        if hashlike && !valid {
            return Err(format!(
                "looks like an MD5 hash but is not \"md5\" followed by 32 hex digits \
                 (found {} characters after \"md5\")",
                rest.len()
            ));
        }
    }
    Secret::parse(text).map_err(|e| format!("invalid password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// md5("secret" + "app").
    const MD5_APP: &str = "md56a422f785c9e20873908ce25d1736ae2";

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match validate(text) {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(p) => p,
        }
    }

    fn keys(problems: &[ConfigProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    fn find<'a>(problems: &'a [ConfigProblem], key: &str) -> &'a ConfigProblem {
        problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem for {key} in {problems:#?}"))
    }

    #[test]
    fn example_file_is_clean() {
        let c =
            validate(include_str!("../../config/pgmux.toml")).unwrap_or_else(|p| panic!("{p:#?}"));
        let g = &c.general;
        assert_eq!(g.listen_addr, "127.0.0.1");
        assert_eq!(g.listen_port, 6432);
        assert_eq!(g.pool_mode, PoolMode::Transaction);
        assert_eq!(g.max_client_conn, 10000);
        assert_eq!(g.default_pool_size, 20);
        assert_eq!(g.reserve_pool_size, 5);
        assert_eq!(g.reserve_pool_timeout, Secs(3.0));
        assert_eq!(g.auth_type, AuthType::ScramSha256);
        assert_eq!(g.admin_users, vec!["admin".to_string()]);
        let db = &c.databases["appdb"];
        assert_eq!(db.host, "127.0.0.1");
        assert_eq!(db.port.first(), 5432);
        assert_eq!(c.users["app"].password.as_deref(), Some("app_pw"));
    }

    #[test]
    fn empty_text_gives_defaults() {
        let c = validate("").unwrap();
        assert_eq!(
            format!("{:?}", c.general),
            format!("{:?}", General::default())
        );
        assert!(c.databases.is_empty());
        assert!(c.users.is_empty());
        // Whitespace and comments only, and empty sections, too.
        let c = validate("# nothing\n\n[general]\n[databases]\n[users]\n").unwrap();
        assert_eq!(
            format!("{:?}", c.general),
            format!("{:?}", General::default())
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let text = r#"
            [general]
            listen_prot = 6432
            pool_mode = "sesion"
            max_client_conn = "many"
            reserve_pool_timeout = -1

            [databases.appdb]
            host = "db.internal"
            hots = "typo"

            [users.app]
            password = "md5zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
        "#;
        let p = problems(text);
        let mut k = keys(&p);
        k.sort();
        assert_eq!(
            k,
            [
                "databases.appdb.hots",
                "general.listen_prot",
                "general.max_client_conn",
                "general.pool_mode",
                "general.reserve_pool_timeout",
                "users.app.password",
            ]
        );
        assert_eq!(
            find(&p, "general.listen_prot").to_string(),
            "general.listen_prot: unknown key; did you mean listen_port?"
        );
        let m = &find(&p, "general.pool_mode").message;
        assert!(
            m.contains(r#""session", "transaction", "statement""#),
            "{m}"
        );
        assert!(m.contains(r#"did you mean "session"?"#), "{m}");
        let m = &find(&p, "general.max_client_conn").message;
        assert!(m.contains("expected a non-negative integer"), "{m}");
        assert!(m.contains(r#"found string "many""#), "{m}");
        assert!(find(&p, "databases.appdb.hots")
            .message
            .contains("did you mean host?"));
        assert!(find(&p, "users.app.password").message.contains("MD5"));
        // Display is "key: message".
        let first = &p[0];
        assert_eq!(
            first.to_string(),
            format!("{}: {}", first.key, first.message)
        );
    }

    #[test]
    fn typo_suggestions() {
        let p = problems("[general]\nlisten_prot = 1\ndefualt_pool_size = 3\nzzz = 1\n");
        assert_eq!(
            find(&p, "general.listen_prot").message,
            "unknown key; did you mean listen_port?"
        );
        assert_eq!(
            find(&p, "general.defualt_pool_size").message,
            "unknown key; did you mean default_pool_size?"
        );
        assert_eq!(find(&p, "general.zzz").message, "unknown key");

        let p = problems("[generel]\nlisten_port = 1\n[database.x]\nhost = \"h\"\n");
        assert_eq!(
            find(&p, "generel").message,
            "unknown section; did you mean general?"
        );
        assert_eq!(
            find(&p, "database").message,
            "unknown section; did you mean databases?"
        );

        let p = problems("[general]\nauth_type = \"scram\"\n");
        assert!(find(&p, "general.auth_type")
            .message
            .contains(r#""trust", "plain", "md5", "scram-sha-256""#));

        // A key in the wrong section says where it belongs.
        let p = problems("[databases.a]\nserver_lifetime = 5\n");
        assert_eq!(
            find(&p, "databases.a.server_lifetime").message,
            "unknown key; server_lifetime can only be set in [general]"
        );
        let p = problems("listen_port = 1\n");
        assert!(find(&p, "listen_port").message.contains("[general]"));
    }

    #[test]
    fn durations_take_fractions() {
        let c = validate(
            "[general]\nreserve_pool_timeout = 0.25\nquery_wait_timeout = 2\nserver_lifetime = 0\n",
        )
        .unwrap();
        assert_eq!(c.general.reserve_pool_timeout, Secs(0.25));
        assert_eq!(
            c.general.reserve_pool_timeout.get(),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(c.general.query_wait_timeout, Secs(2.0));
        assert_eq!(c.general.server_lifetime.get(), None);

        let p = problems(
            "[general]\nquery_wait_timeout = -0.5\nserver_lifetime = inf\nclient_idle_timeout = nan\nserver_idle_timeout = \"10s\"\n",
        );
        let mut k = keys(&p);
        k.sort();
        assert_eq!(
            k,
            [
                "general.client_idle_timeout",
                "general.query_wait_timeout",
                "general.server_idle_timeout",
                "general.server_lifetime",
            ]
        );
        assert!(find(&p, "general.server_idle_timeout")
            .message
            .contains("number of seconds"));
    }

    #[test]
    fn wildcard_database() {
        let text = format!(
            "[databases.\"*\"]\nhost = \"10.0.0.5\"\nuser = \"app\"\n[users.app]\npassword = \"{MD5_APP}\"\n"
        );
        let c = validate(&text).unwrap_or_else(|p| panic!("{p:#?}"));
        let db = c.database("anything").expect("falls back to *");
        assert_eq!(db.host, "10.0.0.5");
        assert_eq!(db.port.first(), 5432);
        assert_eq!(db.dbname, None);
        assert_eq!(db.user.as_deref(), Some("app"));

        // Its problems are keyed with the quoted name.
        let p = problems("[databases.\"*\"]\nhost = \"\"\n");
        assert_eq!(keys(&p), [r#"databases."*".host"#]);
    }

    #[test]
    fn database_entries() {
        let text = format!(
            r#"
            [general]
            min_pool_size = 2

            [databases.a]
            port = 6000
            dbname = "real"
            pool_size = 10
            min_pool_size = 3
            pool_mode = "session"

            [databases.b]
            pool_size = 1

            [databases.c]
            min_pool_size = 30

            [databases.d]
            user = "nobody"

            [databases.e]
            port = 0
            pool_size = 0

            [databases.f]
            user = "app"

            [databases.g]
            host = "h"
            user = "svc"
            password = "{MD5_APP}"

            [databases.h]
            password = "{MD5_APP}"

            [databases.i]
            application_name = 5

            [databases]
            j = "host=localhost dbname=j"

            [users.app]
            password = "{MD5_APP}"
            "#
        );
        let p = problems(&text);
        let mut k = keys(&p);
        k.sort();
        assert_eq!(
            k,
            [
                "databases.b.pool_size",
                "databases.c.min_pool_size",
                "databases.d.user",
                "databases.e.pool_size",
                "databases.e.port",
                "databases.h.password",
                "databases.i.application_name",
                "databases.j",
            ]
        );
        assert!(find(&p, "databases.d.user")
            .message
            .contains("databases.d.password or users.nobody.password"));
        assert!(find(&p, "databases.j")
            .message
            .contains("connection strings are not supported"));
    }

    #[test]
    fn general_limits() {
        let p = problems(
            "[general]\nmax_client_conn = 0\ndefault_pool_size = 0\nmax_packet_size = 100\n\
             admin_users = [\"admin\", \"\"]\nstats_users = [1]\nlisten_port = 70000\nlisten_addr = \"\"\n",
        );
        let mut k = keys(&p);
        k.sort();
        assert_eq!(
            k,
            [
                "general.admin_users[1]",
                "general.default_pool_size",
                "general.listen_addr",
                "general.listen_port",
                "general.max_client_conn",
                "general.max_packet_size",
                "general.stats_users",
            ]
        );
        let p = problems("[general]\nmin_pool_size = 21\n");
        assert_eq!(keys(&p), ["general.min_pool_size"]);
        let p = problems("[general]\nmax_packet_size = 1073741825\n");
        assert_eq!(keys(&p), ["general.max_packet_size"]);

        // Port 0 means "pick a free port" (tests use it); the bounds are accepted.
        let c = validate(
            "[general]\nlisten_port = 0\nmax_packet_size = 1024\nmin_pool_size = 20\nworkers = 4\n",
        )
        .unwrap();
        assert_eq!(c.general.listen_port, 0);
        assert!(validate("[general]\nmax_packet_size = 1073741824\n").is_ok());
    }

    #[test]
    fn users_and_auth_type() {
        // Without a password only trust works.
        let p = problems("[users.bob]\npool_mode = \"statement\"\n");
        assert_eq!(keys(&p), ["users.bob.password"]);
        let c =
            validate("[general]\nauth_type = \"trust\"\n[users.bob]\npool_mode = \"statement\"\n")
                .unwrap();
        assert_eq!(c.users["bob"].pool_mode, Some(PoolMode::Statement));
        assert_eq!(c.general.auth_type, AuthType::Trust);

        // md5 hashes parse, any case; broken SCRAM verifiers and unknown keys do not.
        let c = validate(&format!(
            "[general]\nauth_type = \"md5\"\n[users.app]\npassword = \"{}\"\nmax_user_connections = 4\n",
            MD5_APP.to_ascii_uppercase().replacen("MD5", "md5", 1)
        ))
        .unwrap();
        assert_eq!(c.users["app"].max_user_connections, Some(4));
        let p = problems(
            "[users.a]\npassword = \"SCRAM-SHA-256$nonsense\"\n[users.b]\npasword = \"x\"\n[users.c]\npassword = \"\"\n",
        );
        let mut k = keys(&p);
        k.sort();
        assert_eq!(
            k,
            [
                "users.a.password",
                "users.b.password",
                "users.b.pasword",
                "users.c.password"
            ]
        );
        assert_eq!(
            find(&p, "users.b.pasword").message,
            "unknown key; did you mean password?"
        );

        let p = problems("users = 3\n[databases.x]\nhost = 1\n");
        assert_eq!(keys(&p), ["databases.x.host", "users"]);
    }

    #[test]
    fn syntax_error_is_one_problem_with_location() {
        let p = problems("[general]\nlisten_port = = 5\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "line 2, column 15");
        assert!(p[0].message.starts_with("TOML syntax error"), "{}", p[0]);
        let p = problems("[general]\nlisten_port = 1\nlisten_port = 2\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].key.starts_with("line 3"), "{}", p[0]);
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("listen_prot", "listen_port"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(suggest("POOL_MODE", &["pool_mode"]), Some("pool_mode"));
    }

    #[test]
    fn auth_query_keys() {
        let c = validate(
            "[general]\nauth_user = \"lookup\"\nauth_dbname = \"appdb\"\n\
             [databases.appdb]\n[databases.other]\nauth_user = \"o\"\n\
             auth_query = \"SELECT * FROM f($1)\"\n[users.lookup]\npassword = \"pw\"\n",
        )
        .unwrap();
        assert_eq!(c.general.auth_query, super::super::DEFAULT_AUTH_QUERY);
        assert_eq!(c.general.auth_query_cache_ttl, Secs(10.0));
        let l = c.auth_lookup(&c.databases["other"], "other").unwrap();
        assert_eq!(
            (l.user, l.query, l.dbname),
            ("o", "SELECT * FROM f($1)", "appdb")
        );
        let l = c.auth_lookup(&c.databases["appdb"], "appdb").unwrap();
        assert_eq!(l.user, "lookup");
        let plain = validate("[databases.appdb]\n").unwrap();
        assert!(plain
            .auth_lookup(&plain.databases["appdb"], "appdb")
            .is_none());

        let p = problems(
            "[general]\nauth_user = \"\"\nauth_query = \"SELECT 1\"\nauth_dbname = \"nope\"\n\
             auth_query_cache_ttl = -1\n[databases.appdb]\nauth_dbname = \"pgmux\"\n",
        );
        assert!(find(&p, "general.auth_user").message.contains("empty"));
        assert!(find(&p, "general.auth_query").message.contains("$1"));
        assert!(find(&p, "general.auth_dbname").message.contains("\"nope\""));
        find(&p, "general.auth_query_cache_ttl");
        find(&p, "databases.appdb.auth_dbname");
    }

    #[test]
    fn several_hosts_and_target_session_attrs() {
        let c = validate(
            "[databases.a]\nhost = \"10.0.0.1, 10.0.0.2\"\nport = \"5432,5433\"\n\
             target_session_attrs = \"read-write\"\n\
             [databases.b]\nhost = \"h1,h2,h3\"\nport = 6000\n",
        )
        .unwrap_or_else(|p| panic!("{p:#?}"));
        let a = &c.databases["a"];
        assert_eq!(
            a.hosts(),
            [
                ("10.0.0.1".to_string(), 5432),
                ("10.0.0.2".to_string(), 5433)
            ]
        );
        assert_eq!(a.target_session_attrs, Some(SessionAttrs::ReadWrite));
        let b = &c.databases["b"];
        assert_eq!(b.hosts().len(), 3);
        assert!(b.hosts().iter().all(|(_, p)| *p == 6000));
        assert_eq!(b.target_session_attrs, None);

        // Written out and read back (SET and RELOAD do), ports keep their form.
        let text = toml::to_string(&c).unwrap();
        let again = validate(&text).unwrap_or_else(|p| panic!("{p:#?}\n{text}"));
        assert_eq!(again.databases["a"].port, a.port);
        assert_eq!(again.databases["b"].port, b.port);

        let p = problems("[databases.a]\nhost = \"h1,h2\"\nport = \"1,2,3\"\n");
        assert!(find(&p, "databases.a.port")
            .message
            .contains("3 ports for 2 hosts"));
        let p = problems("[databases.a]\nhost = \"h1,,h2\"\n");
        find(&p, "databases.a.host");
        let p = problems("[databases.a]\nport = \"5432,x\"\n");
        find(&p, "databases.a.port");
        let p = problems("[databases.a]\ntarget_session_attrs = \"read_write\"\n");
        let m = &find(&p, "databases.a.target_session_attrs").message;
        assert!(m.contains("read-write"), "{m}");
    }
}
