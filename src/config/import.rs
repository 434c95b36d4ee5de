//! `pgmux import pgbouncer.ini`: a PgBouncer config translated into a pgmux one. Every
//! `[pgbouncer]` key is mapped to its `[general]` namesake, or listed as ignored (no effect
//! in pgmux) or unsupported, each with its reason; `[databases]` connection strings and
//! `[users]` entries become `[databases.NAME]` and `[users.NAME]`; `%include` is followed.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// What became of one setting of the PgBouncer config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where it was: `pgbouncer.logfile`, `databases.appdb.connect_query`, `users.app.pool_size`.
    pub key: String,
    pub kind: NoteKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Has no effect in pgmux, and needs none (logging, process management, buffer sizes).
    Ignored,
    /// A feature pgmux does not have: the behaviour differs.
    Unsupported,
    /// Carried over with a change of meaning or value worth reading.
    Changed,
}

impl NoteKind {
    /// As the notes print it.
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Ignored => "ignored",
            NoteKind::Unsupported => "UNSUPPORTED",
            NoteKind::Changed => "changed",
        }
    }
}

/// The translation: pgmux's config as TOML text (the notes as comments at its top), and the
/// notes.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<Note>,
}

/// `[pgbouncer]` keys with no effect in pgmux, and why.
const IGNORED: &[(&str, &str)] = &[
    ("logfile", "pgmux logs to stderr (the journal, the container's log)"),
    ("pidfile", "pgmux does not daemonize: the service manager tracks its process"),
    ("user", "pgmux does not switch users: run it as that user (systemd User=, the image's USER)"),
    ("syslog", "pgmux logs to stderr; journald or the container runtime collects it"),
    ("syslog_facility", "pgmux logs to stderr"),
    ("syslog_ident", "pgmux logs to stderr"),
    ("verbose", "set RUST_LOG=debug instead"),
    ("log_stats", "the stats line is logged at info every stats_period; filter it with RUST_LOG"),
    ("log_pooler_errors", "errors pgmux sends clients are always logged"),
    ("unix_socket_dir", "pgmux listens on TCP only: clients connect to 127.0.0.1 instead"),
    ("unix_socket_mode", "pgmux listens on TCP only"),
    ("unix_socket_group", "pgmux listens on TCP only"),
    ("pkt_buf", "pgmux sizes its buffers itself"),
    ("sbuf_loopcnt", "pgmux handles every ready message per wake-up"),
    ("tcp_socket_buffer", "the kernel's socket buffer defaults are kept"),
    ("tcp_defer_accept", "not used: logins are served as they come"),
    ("listen_backlog", "pgmux listens with a backlog of 4096"),
    ("dns_nxdomain_ttl", "names are looked up with the system resolver; dns_max_ttl applies"),
    ("dns_zone_check_period", "names are looked up again after dns_max_ttl"),
    ("resolv_conf", "pgmux uses the system resolver (/etc/resolv.conf)"),
    ("job_name", "a Windows service name"),
    ("service_name", "a Windows service name"),
    ("conffile", "read-only in PgBouncer: the config file pgmux reads is --config or PGMUX_CONFIG"),
    ("scram_iterations", "pgmux derives SCRAM keys with 4096 iterations (pgmux passwd --iterations for auth_file lines)"),
    ("client_tls_protocols", "rustls allows TLS 1.2 and 1.3 only"),
    ("client_tls_ciphers", "rustls' cipher suites, all of them safe, are used"),
    ("client_tls13_ciphers", "rustls' cipher suites, all of them safe, are used"),
    ("client_tls_dheparams", "rustls does not use finite-field Diffie-Hellman"),
    ("client_tls_ecdhcurve", "rustls picks the key exchange group"),
    ("server_tls_protocols", "rustls allows TLS 1.2 and 1.3 only"),
    ("server_tls_ciphers", "rustls' cipher suites, all of them safe, are used"),
    ("server_tls13_ciphers", "rustls' cipher suites, all of them safe, are used"),
    ("server_fast_close", "pgmux closes a RECONNECTed or reloaded server when its client releases it"),
    ("cancel_wait_timeout", "a cancel request is sent at once, with no wait for a server"),
];

/// `[pgbouncer]` keys for features pgmux does not have, and what to do instead.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("query_timeout", "no query_timeout: set statement_timeout in Postgres (ALTER ROLE ... SET)"),
    ("transaction_timeout", "no transaction_timeout: set transaction_timeout (Postgres 17+) or idle_in_transaction_session_timeout in Postgres"),
    ("query_wait_notify", "no notice to waiting clients"),
    ("disable_pqexec", "the simple query protocol is always allowed"),
    ("server_round_robin", "idle servers are reused last-in first-out, as PgBouncer's default"),
    ("auth_ident_file", "no ident maps (no peer authentication over Unix sockets)"),
    ("auth_ldap_options", "no LDAP authentication"),
    ("max_db_client_connections", "no per-database client limit: max_client_conn is global"),
    ("max_user_client_connections", "no per-user client limit: max_client_conn is global"),
    ("pool_idle_timeout", "pools of configured databases stay; autodb_idle_timeout removes \"*\" pools"),
    ("login_notify_message", "no notice at login"),
];

/// `[pgbouncer]` keys naming files.
const FILE_KEYS: &[&str] = &[
    "auth_file",
    "auth_hba_file",
    "client_tls_cert_file",
    "client_tls_key_file",
    "client_tls_ca_file",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_key_file",
];

/// PgBouncer's defaults for the unsupported keys that are not off by default: at these, the
/// missing feature is not missed.
const UNSUPPORTED_DEFAULTS: &[(&str, &str)] = &[("query_wait_notify", "5")];

/// PgBouncer defaults that differ from pgmux's, written out when the PgBouncer config leaves
/// them unset, so the translated config behaves as PgBouncer did.
const PGBOUNCER_DEFAULTS: &[(&str, &str)] = &[("pool_mode", "session"), ("auth_type", "md5")];

/// `[databases]` connection-string keys with no pgmux counterpart.
const DB_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "connect_query",
        "no connect_query: set the parameters with ALTER ROLE / ALTER DATABASE ... SET",
    ),
    (
        "client_encoding",
        "no per-database server parameters: use ALTER DATABASE ... SET",
    ),
    (
        "datestyle",
        "no per-database server parameters: use ALTER DATABASE ... SET",
    ),
    (
        "timezone",
        "no per-database server parameters: use ALTER DATABASE ... SET",
    ),
    ("server_lifetime", "server_lifetime is global ([general])"),
    ("max_db_client_connections", "no per-database client limit"),
    (
        "query_wait_timeout",
        "query_wait_timeout is global ([general])",
    ),
];

/// One `key = value` line, with where it came from (for notes).
struct Line {
    section: String,
    key: String,
    value: String,
}

/// Read an ini file, following `%include` (a relative path is taken from the including
/// file's directory; an include cycle is an error).
fn read_ini(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<Line>,
    section: &mut String,
) -> Result<(), String> {
    let canon = path
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if stack.contains(&canon) {
        return Err(format!("%include cycle at {}", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    stack.push(canon);
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("%include") {
            let file = rest.trim();
            let file = Path::new(file);
            let file = if file.is_absolute() {
                file.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).join(file)
            };
            read_ini(&file, stack, out, section)?;
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            *section = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "{}:{}: expected key = value: {raw}",
                path.display(),
                n + 1
            ));
        };
        out.push(Line {
            section: section.clone(),
            key: k.trim().to_string(),
            value: v.trim().to_string(),
        });
    }
    stack.pop();
    Ok(())
}

/// A libpq-style connection string (`host=a port=5432 password='it''s'`) as pairs.
fn conn_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected {key}=value"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("{key}: unterminated quoted value")),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        value.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.to_ascii_lowercase(), value));
    }
}

/// An ini value as TOML, typed as pgmux's model wants it for `[general]` key `key`: the first
/// reading that `General` accepts (PgBouncer's 0/1 booleans, comma lists, numbers).
fn general_value(key: &str, raw: &str) -> Option<Value> {
    let mut candidates = Vec::new();
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "1" | "yes" | "on" | "true" => candidates.push(Value::Boolean(true)),
        "0" | "no" | "off" | "false" => candidates.push(Value::Boolean(false)),
        _ => {}
    }
    if let Ok(i) = raw.parse::<i64>() {
        candidates.push(Value::Integer(i));
    }
    if let Ok(f) = raw.parse::<f64>() {
        candidates.push(Value::Float(f));
    }
    candidates.push(Value::String(raw.to_string()));
    candidates.push(Value::Array(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect(),
    ));
    candidates.into_iter().find(|v| {
        let mut t = Table::new();
        t.insert(key.to_string(), v.clone());
        toml::to_string(&t)
            .ok()
            .and_then(|s| toml::from_str::<super::General>(&s).ok())
            .is_some()
    })
}

/// A `[databases.NAME]` or `[users.NAME]` value: a number where it is one, else a string.
fn plain_value(raw: &str) -> Value {
    match raw.parse::<i64>() {
        Ok(i) if i >= 0 => Value::Integer(i),
        _ => Value::String(raw.to_string()),
    }
}

/// Translate the PgBouncer config at `path`; `auth_file` replaces its auth_file.
pub fn import(path: &Path, auth_file: Option<&Path>) -> Result<Imported, String> {
    let mut lines = Vec::new();
    read_ini(path, &mut Vec::new(), &mut lines, &mut String::new())?;
    let mut notes = Vec::new();
    let mut note = |key: String, kind: NoteKind, reason: &str| {
        notes.push(Note {
            key,
            kind,
            reason: reason.to_string(),
        })
    };
    let mut general = Table::new();
    let mut databases = Table::new();
    let mut users = Table::new();
    let mut peers = Table::new();
    for Line {
        section,
        key,
        value,
    } in &lines
    {
        let key = key.to_ascii_lowercase();
        match section.as_str() {
            "pgbouncer" => {
                let at = format!("pgbouncer.{key}");
                if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == key) {
                    note(at, NoteKind::Ignored, why);
                } else if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    // A feature left at its default is not missed.
                    let default = UNSUPPORTED_DEFAULTS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or("0", |d| d.1);
                    if !value.is_empty() && value != "0" && value != default {
                        note(at, NoteKind::Unsupported, why);
                    } else {
                        note(
                            at,
                            NoteKind::Ignored,
                            &format!("set to its default (off); {why}"),
                        );
                    }
                } else if key == "auth_type"
                    && !["trust", "plain", "md5", "scram-sha-256", "hba", "cert"]
                        .contains(&value.as_str())
                {
                    note(at, NoteKind::Unsupported, &format!("auth_type {value} is not supported (trust, plain, md5, scram-sha-256, hba, cert are): pgmux's default scram-sha-256 is used"));
                } else if key == "listen_addr" && value.is_empty() {
                    note(
                        at,
                        NoteKind::Changed,
                        "empty (Unix socket only in PgBouncer): pgmux listens on 127.0.0.1",
                    );
                } else if value.is_empty() {
                    // Empty is unset in PgBouncer: pgmux's default applies.
                } else if key == "auth_file" && auth_file.is_some() {
                    note(at, NoteKind::Changed, "replaced by --auth-file");
                } else if key == "max_packet_size"
                    && value
                        .parse::<u64>()
                        .is_ok_and(|n| n > super::validate::MAX_PACKET_SIZE as u64)
                {
                    general.insert(key, Value::Integer(super::validate::MAX_PACKET_SIZE as i64));
                    note(
                        at,
                        NoteKind::Changed,
                        "above 1 GiB, Postgres' own limit for a message: 1 GiB",
                    );
                } else if FILE_KEYS.contains(&key.as_str()) && Path::new(value).is_relative() {
                    let abs = path.parent().unwrap_or(Path::new(".")).join(value);
                    let abs = std::path::absolute(&abs).unwrap_or(abs);
                    note(
                        at,
                        NoteKind::Changed,
                        "a relative path: taken from the ini's directory",
                    );
                    general.insert(key, Value::String(abs.display().to_string()));
                } else if super::general_keys().contains(&key.as_str()) {
                    match general_value(&key, value) {
                        Some(v) => {
                            general.insert(key, v);
                        }
                        None => note(
                            at,
                            NoteKind::Unsupported,
                            &format!("the value {value:?} is not one pgmux accepts"),
                        ),
                    }
                } else {
                    note(
                        at,
                        NoteKind::Unsupported,
                        "not a PgBouncer setting pgmux knows",
                    );
                }
            }
            "databases" => {
                let name = key.clone();
                let mut db = Table::new();
                let pairs = conn_pairs(value).map_err(|e| format!("[databases] {name}: {e}"))?;
                for (k, v) in pairs {
                    let at = format!("databases.{name}.{k}");
                    let target = match k.as_str() {
                        "dbname" | "host" | "user" | "password" | "pool_size" | "min_pool_size"
                        | "pool_mode" | "max_db_connections" | "application_name" | "auth_user"
                        | "auth_query" | "auth_dbname" | "load_balance_hosts" => k.clone(),
                        "port" => "port".into(),
                        "reserve_pool" | "reserve_pool_size" => "reserve_pool_size".into(),
                        _ => {
                            match DB_UNSUPPORTED.iter().find(|(u, _)| *u == k) {
                                Some((_, why)) => note(at, NoteKind::Unsupported, why),
                                None => note(
                                    at,
                                    NoteKind::Unsupported,
                                    "not a connection-string key pgmux knows",
                                ),
                            }
                            continue;
                        }
                    };
                    if k == "host" && v.starts_with('/') {
                        note(
                            at,
                            NoteKind::Unsupported,
                            "a Unix socket directory: pgmux connects over TCP (127.0.0.1 used)",
                        );
                        continue;
                    }
                    let v = if k == "port" && v.contains(',') {
                        Value::String(v)
                    } else {
                        plain_value(&v)
                    };
                    db.insert(target, v);
                }
                databases.insert(name, Value::Table(db));
            }
            "users" => {
                let name = key.clone();
                let mut user = Table::new();
                let pairs = conn_pairs(value).map_err(|e| format!("[users] {name}: {e}"))?;
                for (k, v) in pairs {
                    match k.as_str() {
                        "pool_mode" | "max_user_connections" => {
                            user.insert(k, plain_value(&v));
                        }
                        _ => note(
                            format!("users.{name}.{k}"),
                            NoteKind::Unsupported,
                            "per-user settings are pool_mode and max_user_connections",
                        ),
                    }
                }
                users.insert(name, Value::Table(user));
            }
            "peers" => {
                let id = key.clone();
                let mut peer = Table::new();
                let pairs = conn_pairs(value).map_err(|e| format!("[peers] {id}: {e}"))?;
                for (k, v) in pairs {
                    match k.as_str() {
                        "host" => {
                            peer.insert(k, Value::String(v));
                        }
                        "port" => {
                            peer.insert(k, plain_value(&v));
                        }
                        _ => note(
                            format!("peers.{id}.{k}"),
                            NoteKind::Unsupported,
                            "a peer is its host and port (cancels are sent one connection each)",
                        ),
                    }
                }
                peers.insert(id, Value::Table(peer));
            }
            other => note(
                format!("{other}.{key}"),
                NoteKind::Unsupported,
                "not a section of PgBouncer's config",
            ),
        }
    }
    for (k, v) in PGBOUNCER_DEFAULTS {
        if !general.contains_key(*k)
            && !lines
                .iter()
                .any(|l| l.section == "pgbouncer" && l.key == *k)
        {
            general.insert(k.to_string(), Value::String(v.to_string()));
            note(
                format!("pgbouncer.{k}"),
                NoteKind::Changed,
                &format!(
                    "unset: PgBouncer's default {v} written out (pgmux's own default differs)"
                ),
            );
        }
    }
    if let Some(a) = auth_file {
        let text =
            std::fs::read_to_string(a).map_err(|e| format!("cannot read {}: {e}", a.display()))?;
        if let Err(problems) = crate::auth::userlist::parse(&text) {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(format!("{}: {}", a.display(), list.join("; ")));
        }
        let abs = std::path::absolute(a).unwrap_or_else(|_| a.to_path_buf());
        general.insert("auth_file".into(), Value::String(abs.display().to_string()));
    }
    // [general] first, then the databases and the users.
    let mut body = String::new();
    for (name, t) in [
        ("general", general),
        ("databases", databases),
        ("users", users),
        ("peers", peers),
    ] {
        if t.is_empty() && (name == "users" || name == "peers") {
            continue;
        }
        let mut doc = Table::new();
        doc.insert(name.into(), Value::Table(t));
        body.push_str(&toml::to_string(&doc).map_err(|e| e.to_string())?);
        body.push('\n');
    }
    let mut text = format!(
        "# pgmux config imported from {} by `pgmux import`.\n",
        path.display()
    );
    if !notes.is_empty() {
        text.push_str("#\n# Settings not carried over as they were:\n");
        for n in &notes {
            text.push_str(&format!(
                "#   {} ({}): {}\n",
                n.key,
                n.kind.as_str(),
                n.reason
            ));
        }
    }
    text.push('\n');
    text.push_str(&body);
    Ok(Imported { toml: text, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/import")
            .join(name)
    }

    #[test]
    fn connection_strings_unquote_as_libpq() {
        let p = conn_pairs(r"host=a  port = 5432 password='it''s \'x\' y' dbname=d").unwrap();
        assert_eq!(
            p,
            [
                ("host".into(), "a".into()),
                ("port".into(), "5432".into()),
                ("password".into(), "it's 'x' y".into()),
                ("dbname".into(), "d".into()),
            ]
        );
        assert!(conn_pairs("host").is_err());
        assert!(conn_pairs("password='open").is_err());
    }

    /// Every key PgBouncer 1.26.1 has is mapped to [general] or listed with a reason, and the
    /// result passes check-config.
    #[test]
    fn every_pgbouncer_key_is_mapped_or_listed() {
        let ini = fixture("every-key.ini");
        let out = import(&ini, None).unwrap();
        let config =
            crate::config::Config::parse(&out.toml).unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
        let general = config.general.as_table();
        let text = std::fs::read_to_string(&ini).unwrap();
        let mut section = "";
        let mut unaccounted = Vec::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if section != "[pgbouncer]" || k.starts_with(';') || v.is_empty() {
                continue;
            }
            let listed = out.notes.iter().any(|n| n.key == format!("pgbouncer.{k}"));
            if !listed && !general.contains_key(k) {
                unaccounted.push(k.to_string());
            }
            assert!(
                !out.notes.iter().any(|n| n.reason.contains("pgmux knows")),
                "{:?}",
                out.notes
            );
        }
        assert!(
            unaccounted.is_empty(),
            "neither mapped nor listed: {unaccounted:?}"
        );
        let kind = |key: &str| {
            out.notes
                .iter()
                .find(|n| n.key == key)
                .map(|n| n.kind)
                .unwrap_or_else(|| panic!("no note for {key}: {:?}", out.notes))
        };
        assert_eq!(kind("pgbouncer.logfile"), NoteKind::Ignored);
        assert_eq!(kind("pgbouncer.unix_socket_dir"), NoteKind::Ignored);
        assert_eq!(kind("pgbouncer.query_timeout"), NoteKind::Unsupported);
        assert_eq!(kind("pgbouncer.query_wait_notify"), NoteKind::Ignored);
        assert_eq!(kind("pgbouncer.max_packet_size"), NoteKind::Changed);
        assert_eq!(kind("pgbouncer.auth_file"), NoteKind::Changed);
        assert_eq!(
            kind("databases.legacy.connect_query"),
            NoteKind::Unsupported
        );
        assert_eq!(kind("users.ops.pool_size"), NoteKind::Unsupported);
        // Peering carries over: peer_id and [peers].
        assert_eq!(config.general.peer_id, 1);
        let peer = &config.peers["1"];
        assert_eq!((peer.host.as_str(), peer.port), ("10.0.0.1", 6432));
        // Values typed and carried: lists, booleans, the %include's databases, quoting.
        assert_eq!(config.general.admin_users, ["admin", "ops"]);
        assert!(!config.general.so_reuseport);
        let app = &config.databases["appdb"];
        assert_eq!(app.password.as_deref(), Some("it's a 'secret'"));
        assert_eq!(app.reserve_pool_size, Some(3));
        assert_eq!(app.dbname.as_deref(), Some("app"));
        assert_eq!(
            config.databases["replicas"].hosts(),
            [
                ("10.0.0.2".to_string(), 5432),
                ("10.0.0.3".to_string(), 5433)
            ]
        );
        assert!(config.databases.contains_key("*"));
        assert_eq!(
            config.users["ops"].pool_mode,
            Some(crate::config::PoolMode::Session)
        );
    }

    #[test]
    fn unset_keys_whose_defaults_differ_are_written_out() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("p.ini");
        std::fs::write(
            &ini,
            "[databases]\nx = host=h\n[pgbouncer]\nlisten_port = 1\n",
        )
        .unwrap();
        let out = import(&ini, None).unwrap();
        let config = crate::config::Config::parse(&out.toml).unwrap();
        assert_eq!(config.general.pool_mode, crate::config::PoolMode::Session);
        assert!(out.toml.contains("auth_type = \"md5\""), "{}", out.toml);
    }

    #[test]
    fn an_include_cycle_and_a_missing_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.ini");
        std::fs::write(&a, "%include b.ini\n").unwrap();
        std::fs::write(dir.path().join("b.ini"), "%include a.ini\n").unwrap();
        assert!(import(&a, None).unwrap_err().contains("cycle"));
        std::fs::write(&a, "%include nowhere.ini\n").unwrap();
        assert!(import(&a, None).unwrap_err().contains("nowhere.ini"));
    }
}
