//! SCRAM-SHA-256 (RFC 5802 / 7677), the server side, as Postgres speaks it (no channel binding required).

/// A SCRAM-SHA-256 verifier: what the server stores.
#[derive(Clone)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("password authentication failed")]
    WrongProof,
}

impl ScramSecret {
    /// Parse `SCRAM-SHA-256$<iter>:<salt b64>$<storedkey b64>:<serverkey b64>`.
    pub fn parse(text: &str) -> Result<ScramSecret, String> {
        todo!("{text}")
    }
    /// Derive a verifier from a plaintext password with a fresh random 16-byte salt.
    pub fn derive(password: &str, iterations: u32) -> ScramSecret {
        todo!("{password}{iterations}")
    }
    /// Check a plaintext password against this verifier.
    pub fn verify_password(&self, password: &str) -> bool {
        todo!("{password}")
    }
}

/// The server side of one SCRAM-SHA-256 exchange.
pub struct ScramServer {
    _secret: ScramSecret,
}

impl ScramServer {
    /// Start an exchange for a user with this verifier.
    pub fn new(secret: &ScramSecret) -> ScramServer {
        ScramServer { _secret: secret.clone() }
    }
    /// Take the client-first-message (the SASLInitialResponse data); return server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!("{data:?}")
    }
    /// Take the client-final-message; return server-final-message ("v=...") when the proof is right.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!("{data:?}")
    }
}
