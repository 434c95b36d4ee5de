//! Protocol-level prepared statements across servers in transaction mode: the pgmux-wide name
//! of a statement, the extended-protocol messages that carry statement names, and the
//! per-server cache of statements a server has.
//!
//! Groundwork for the prepared-statement mapping: these pieces are complete and tested; the
//! relay does not use them yet (see docs/architecture.md).

pub mod cache;
pub mod messages;

use sha2::{Digest, Sha256};

/// A statement as pgmux knows it: its text and parameter types. Clients that prepare the same
/// text with the same types share one server-side statement, whatever they call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Identity: SHA-256 of the text and types, first 16 bytes.
    pub key: [u8; 16],
    /// The name used on servers: `pgmux_` + 32 hex digits of `key`.
    pub server_name: String,
    pub query: String,
    pub param_types: Vec<u32>,
}

impl Statement {
    /// The statement for this text and these parameter type OIDs.
    pub fn new(query: &str, param_types: &[u32]) -> Statement {
        let mut h = Sha256::new();
        h.update((query.len() as u64).to_be_bytes());
        h.update(query.as_bytes());
        for t in param_types {
            h.update(t.to_be_bytes());
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let mut server_name = String::with_capacity(6 + 32);
        server_name.push_str("pgmux_");
        for b in key {
            server_name.push_str(&format!("{b:02x}"));
        }
        Statement {
            key,
            server_name,
            query: query.to_string(),
            param_types: param_types.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_share_a_name() {
        let a = Statement::new("SELECT $1", &[23]);
        let b = Statement::new("SELECT $1", &[23]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(
            a.server_name,
            Statement::new("SELECT $1", &[20]).server_name
        );
        assert_ne!(
            a.server_name,
            Statement::new("SELECT $1 ", &[23]).server_name
        );
        assert_ne!(a.server_name, Statement::new("SELECT $1", &[]).server_name);
        assert!(a.server_name.starts_with("pgmux_"));
        assert_eq!(a.server_name.len(), 38);
        // Fits Postgres' identifier limit (63 bytes).
        assert!(a.server_name.len() < 64);
    }
}
