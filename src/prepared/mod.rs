//! Protocol-level prepared statements across servers in transaction mode: the pgmux-wide name
//! of a statement, the extended-protocol messages that carry statement names, and the
//! per-server cache of statements a server has.
//!
//! The relay's side of the mapping is in `client/relay/prepared.rs`.

pub mod answer;
pub mod cache;
pub mod messages;
pub mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use sha2::{Digest, Sha256};

/// A statement as pgmux knows it: its text and parameter types. Clients that prepare the same
/// text with the same types share one server-side statement, whatever they call it.
#[derive(Debug)]
pub struct Statement {
    /// Identity: SHA-256 of the text and types, first 16 bytes.
    pub key: [u8; 16],
    /// The name used on servers: `pgmux_` + 32 hex digits of `key`.
    pub(crate) server_name: String,
    /// The text, in the client's encoding.
    pub query: Box<[u8]>,
    pub param_types: Box<[u32]>,
    /// A server of the pool accepted a Parse of it, and none has refused one since: a client's
    /// Parse of it alone (then Sync) can be answered without a server (see
    /// `client::relay::prepare_alone`).
    parsed: AtomicBool,
    /// The session settings and state its text may change (`sql::touch`), read once: each
    /// Bind of it counts as the statement run again.
    pub touch: Option<Box<crate::sql::Touch>>,
}

impl PartialEq for Statement {
    fn eq(&self, other: &Statement) -> bool {
        self.key == other.key
    }
}

impl Statement {
    /// The statement for this text and these parameter type OIDs.
    pub fn new(query: &[u8], param_types: &[u32]) -> Statement {
        let key = key_of(query, param_types);
        Statement {
            key,
            server_name: server_name(&key),
            query: query.into(),
            param_types: param_types.into(),
            parsed: AtomicBool::new(false),
            touch: crate::sql::touch(query).map(Box::new),
        }
    }

    /// Whether a server of the pool accepted it last time one was asked to parse it.
    pub(crate) fn known_good(&self) -> bool {
        self.parsed.load(Ordering::Relaxed)
    }

    /// A server accepted (`true`) or refused (`false`) a Parse of it. Written only when it
    /// changes: the flag is read by every client of the pool, on every core.
    pub(crate) fn set_parsed(&self, ok: bool) {
        if self.parsed.load(Ordering::Relaxed) != ok {
            self.parsed.store(ok, Ordering::Relaxed);
        }
    }
}

/// A statement's identity: SHA-256 of its text and parameter types, first 16 bytes.
pub fn key_of(query: &[u8], param_types: &[u32]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update((query.len() as u64).to_be_bytes());
    h.update(query);
    for t in param_types {
        h.update(t.to_be_bytes());
    }
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The name a statement has on servers: `pgmux_` + 32 hex digits of its key.
pub(crate) fn server_name(key: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(6 + 32);
    name.push_str("pgmux_");
    for b in key {
        name.push(HEX[(b >> 4) as usize] as char);
        name.push(HEX[(b & 15) as usize] as char);
    }
    name
}

/// Statements shared by a pool's clients: one copy of each text, however many clients
/// prepared it. Entries whose last client is gone are swept from time to time.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    map: HashMap<[u8; 16], Weak<Statement>>,
    sweep_at: usize,
}

impl Interner {
    /// The shared statement for this text and these types.
    pub(crate) fn get(&mut self, query: &[u8], param_types: &[u32]) -> Arc<Statement> {
        let key = key_of(query, param_types);
        if let Some(s) = self.map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(Statement::new(query, param_types));
        self.map.insert(key, Arc::downgrade(&s));
        if self.map.len() > self.sweep_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = 2 * self.map.len() + 64;
        }
        s
    }

    /// Statements held (live or not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A client's prepared statements, by the client's names.
pub(crate) type ClientStatements = HashMap<Box<[u8]>, Arc<Statement>>;

/// Whether a CommandComplete body (its tag) says every prepared statement of the session is
/// gone.
pub fn drops_all_statements(body: &[u8]) -> bool {
    matches!(body, b"DISCARD ALL\0" | b"DEALLOCATE ALL\0")
}

/// Whether a simple Query body is exactly `DISCARD ALL` or `DEALLOCATE [PREPARE] ALL` (any
/// case and spacing, an optional `;`), which drop every prepared statement of the client.
pub fn is_drop_all_query(body: &[u8]) -> bool {
    let Some((text, _)) = crate::proto::cstr(body) else {
        return false;
    };
    if text.len() > 64 {
        return false;
    }
    let text = text.trim().trim_end_matches(';').to_ascii_lowercase();
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    matches!(
        words.as_slice(),
        ["discard", "all"] | ["deallocate", "all"] | ["deallocate", "prepare", "all"]
    )
}

/// The statement name of a simple Query that is exactly `DEALLOCATE [PREPARE] name` (an
/// optional `;`), as Postgres reads it: an unquoted name folded to lower case, a quoted one
/// as written (`""` for a quote). `None` for anything else, `DEALLOCATE ALL` included.
pub fn deallocate_target(body: &[u8]) -> Option<Vec<u8>> {
    let end = body.iter().position(|&b| b == 0)?;
    let text = body[..end].trim_ascii();
    let text = text.strip_suffix(b";").unwrap_or(text).trim_ascii();
    let rest = strip_keyword(text, b"deallocate")?;
    let rest = strip_keyword(rest, b"prepare").unwrap_or(rest);
    if rest.is_empty() {
        return None;
    }
    let name = if let Some(quoted) = rest.strip_prefix(b"\"") {
        let inner = quoted.strip_suffix(b"\"")?;
        let mut name = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            if inner[i] == b'"' {
                if inner.get(i + 1) != Some(&b'"') {
                    return None;
                }
                i += 1;
            }
            name.push(inner[i]);
            i += 1;
        }
        name
    } else {
        let ok = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80;
        if !rest.iter().all(ok) || rest[0].is_ascii_digit() || rest[0] == b'$' {
            return None;
        }
        if rest.eq_ignore_ascii_case(b"all") {
            return None;
        }
        rest.to_ascii_lowercase()
    };
    (!name.is_empty()).then_some(name)
}

/// `text` without a leading keyword (any case) and the white space after it.
fn strip_keyword<'a>(text: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let head = text.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &text[word.len()..];
    if !rest.is_empty() && !rest[0].is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_share_a_name() {
        let a = Statement::new(b"SELECT $1", &[23]);
        let b = Statement::new(b"SELECT $1", &[23]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(
            a.server_name,
            Statement::new(b"SELECT $1", &[20]).server_name
        );
        assert_ne!(
            a.server_name,
            Statement::new(b"SELECT $1 ", &[23]).server_name
        );
        assert_ne!(a.server_name, Statement::new(b"SELECT $1", &[]).server_name);
        assert!(a.server_name.starts_with("pgmux_"));
        assert_eq!(a.server_name.len(), 38);
        // Fits Postgres' identifier limit (63 bytes).
        assert!(a.server_name.len() < 64);
        assert_eq!(server_name(&a.key), a.server_name);
    }

    #[test]
    fn interner_shares_and_sweeps() {
        let mut i = Interner::default();
        let a = i.get(b"SELECT 1", &[]);
        let b = i.get(b"SELECT 1", &[]);
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        for n in 0..200 {
            let _ = i.get(format!("SELECT {n}").as_bytes(), &[]);
        }
        assert!(i.len() < 200, "dead entries are swept: {}", i.len());
    }

    #[test]
    fn deallocate_names() {
        let t = |q: &str| {
            let mut b = q.as_bytes().to_vec();
            b.push(0);
            deallocate_target(&b).map(|n| String::from_utf8(n).unwrap())
        };
        assert_eq!(
            t("DEALLOCATE pdo_stmt_00000001"),
            Some("pdo_stmt_00000001".into())
        );
        assert_eq!(t("deallocate prepare S_1;"), Some("s_1".into()));
        assert_eq!(t(" DEALLOCATE \"S_1\" "), Some("S_1".into()));
        assert_eq!(t("DEALLOCATE \"a\"\"b\""), Some("a\"b".into()));
        for q in [
            "DEALLOCATE ALL",
            "DEALLOCATE PREPARE ALL",
            "DEALLOCATE",
            "DEALLOCATE a b",
            "DEALLOCATE a; SELECT 1",
            "DEALLOCATEx",
            "DEALLOCATE \"unterminated",
            "DEALLOCATE 1abc",
            "SELECT 1",
        ] {
            assert_eq!(t(q), None, "{q}");
        }
    }

    #[test]
    fn drop_all_detection() {
        for q in [
            "DISCARD ALL",
            "discard  all;",
            " Deallocate Prepare ALL ; ",
            "DEALLOCATE ALL",
        ] {
            let mut body = q.as_bytes().to_vec();
            body.push(0);
            assert!(is_drop_all_query(&body), "{q}");
        }
        for q in [
            "DISCARD PLANS",
            "DEALLOCATE s1",
            "SELECT 1; DISCARD ALL",
            "discard",
        ] {
            let mut body = q.as_bytes().to_vec();
            body.push(0);
            assert!(!is_drop_all_query(&body), "{q}");
        }
        assert!(drops_all_statements(b"DISCARD ALL\0"));
        assert!(!drops_all_statements(b"DEALLOCATE\0"));
    }
}
