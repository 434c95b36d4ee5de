//! SCRAM-SHA-256 (RFC 5802 / 7677), the server side, as Postgres speaks it (no channel binding required).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::constant_time_eq;

type HmacSha256 = Hmac<Sha256>;

/// Length of a freshly derived salt.
const SALT_LEN: usize = 16;
/// Raw random bytes in the server's part of the nonce (as Postgres: SCRAM_RAW_NONCE_LEN).
const SERVER_NONCE_LEN: usize = 18;

/// A SCRAM-SHA-256 verifier: what the server stores.
#[derive(Clone)]
pub struct ScramSecret {
    pub(crate) iterations: u32,
    pub salt: Vec<u8>,
    pub(crate) stored_key: [u8; 32],
    pub(crate) server_key: [u8; 32],
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("password authentication failed")]
    WrongProof,
}

fn hmac_key(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_key(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Hi(str, salt, i) from RFC 5802: PBKDF2 with HMAC-SHA-256, one 32-byte block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = hmac_key(password);
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = u;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (r, x) in result.iter_mut().zip(u.iter()) {
            *r ^= x;
        }
    }
    result
}

/// (ClientKey, StoredKey, ServerKey) for a password.
fn keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32], [u8; 32]) {
    // As Postgres and libpq: SASLprep the password, or use its raw bytes when that fails.
    let prepped = stringprep::saslprep(password);
    let bytes = match &prepped {
        Ok(p) => p.as_bytes(),
        Err(_) => password.as_bytes(),
    };
    let salted = hi(bytes, salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = sha256(&client_key);
    let server_key = hmac(&salted, b"Server Key");
    (client_key, stored_key, server_key)
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

impl ScramSecret {
    /// Parse `SCRAM-SHA-256$<iter>:<salt b64>$<storedkey b64>:<serverkey b64>`.
    pub fn parse(text: &str) -> Result<ScramSecret, String> {
        const WHAT: &str = "invalid SCRAM-SHA-256 verifier";
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| format!("{WHAT}: must start with \"SCRAM-SHA-256$\""))?;
        let (iter_salt, keys) = rest.split_once('$').ok_or_else(|| {
            format!("{WHAT}: expected <iterations>:<salt>$<StoredKey>:<ServerKey>")
        })?;
        let (iterations, salt) = iter_salt
            .split_once(':')
            .ok_or_else(|| format!("{WHAT}: expected <iterations>:<salt> after the \"$\""))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(|| {
            format!("{WHAT}: expected <StoredKey>:<ServerKey> after the second \"$\"")
        })?;
        let iterations = match iterations.parse::<u32>() {
            Ok(i) if i > 0 && iterations.bytes().all(|b| b.is_ascii_digit()) => i,
            _ => {
                return Err(format!(
                    "{WHAT}: iteration count must be a positive integer"
                ))
            }
        };
        let salt = match STANDARD.decode(salt) {
            Ok(s) if !s.is_empty() => s,
            _ => return Err(format!("{WHAT}: salt must be non-empty base64")),
        };
        let stored_key = decode_key(stored_key)
            .ok_or_else(|| format!("{WHAT}: StoredKey must be base64 of 32 bytes"))?;
        let server_key = decode_key(server_key)
            .ok_or_else(|| format!("{WHAT}: ServerKey must be base64 of 32 bytes"))?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derive a verifier from a plaintext password with a fresh random 16-byte salt.
    /// An iteration count of 0 is treated as 1.
    pub fn derive(password: &str, iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let mut salt = vec![0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        let (_, stored_key, server_key) = keys(password, &salt, iterations);
        ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        }
    }

    /// The verifier as Postgres stores it in `pg_authid` (and `parse` reads it):
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn verifier(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Check a plaintext password against this verifier.
    pub(crate) fn verify_password(&self, password: &str) -> bool {
        let (_, stored_key, server_key) = keys(password, &self.salt, self.iterations.max(1));
        // Evaluate both comparisons (no short circuit).
        constant_time_eq(&stored_key, &self.stored_key)
            & constant_time_eq(&server_key, &self.server_key)
    }
}

enum State {
    /// Waiting for the client-first-message.
    Initial,
    /// Sent the server-first-message; waiting for the client-final-message.
    FirstDone {
        gs2_header: Vec<u8>,
        client_first_bare: Vec<u8>,
        server_first: Vec<u8>,
        nonce: Vec<u8>,
    },
    /// The proof checked out.
    Success { client_key: [u8; 32] },
    /// The exchange failed or was driven out of order; every later call fails.
    Failed,
}

/// The server side of one SCRAM-SHA-256 exchange.
pub struct ScramServer {
    secret: ScramSecret,
    state: State,
}

/// Split `attr=value`, requiring the attribute to be a single ASCII letter.
fn attr(part: &[u8]) -> Option<(u8, &[u8])> {
    match part {
        [name, b'=', value @ ..] if name.is_ascii_alphabetic() => Some((*name, value)),
        _ => None,
    }
}

/// The value of `part` if it is `name=value`.
fn expect_attr<'a>(
    part: Option<&'a [u8]>,
    name: u8,
    err: &'static str,
) -> Result<&'a [u8], ScramError> {
    match part.and_then(attr) {
        Some((n, value)) if n == name => Ok(value),
        _ => Err(ScramError::Malformed(err)),
    }
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E.
fn valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramServer {
    /// Start an exchange for a user with this verifier.
    pub fn new(secret: &ScramSecret) -> ScramServer {
        ScramServer {
            secret: secret.clone(),
            state: State::Initial,
        }
    }

    /// Take the client-first-message (the SASLInitialResponse data); return server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let mut raw = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut raw);
        let server_nonce = STANDARD.encode(raw);
        self.client_first_with_nonce(data, server_nonce.as_bytes())
    }

    fn client_first_with_nonce(
        &mut self,
        data: &[u8],
        server_nonce: &[u8],
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Failed;
            return Err(ScramError::Malformed("unexpected client-first-message"));
        }
        // Any error from here on ends the exchange.
        self.state = State::Failed;

        // gs2-header = gs2-cbind-flag "," [authzid] ","
        let (gs2_header, bare) = if let Some(bare) = data.strip_prefix(b"n,,") {
            (&data[..3], bare)
        } else if let Some(bare) = data.strip_prefix(b"y,,") {
            // The client supports channel binding but believes we don't: fine, we don't advertise PLUS.
            (&data[..3], bare)
        } else if data.starts_with(b"p=") {
            return Err(ScramError::Malformed("channel binding not supported"));
        } else if data.starts_with(b"n,a=") || data.starts_with(b"y,a=") {
            return Err(ScramError::Malformed(
                "authorization identity not supported",
            ));
        } else {
            return Err(ScramError::Malformed("invalid GS2 header"));
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut parts = bare.split(|&b| b == b',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with(b"m=")) {
            return Err(ScramError::Malformed("mandatory extension not supported"));
        }
        // The username is ignored: Postgres clients send it empty and the startup user is used.
        expect_attr(first, b'n', "expected username attribute \"n\"")?;
        let client_nonce = expect_attr(parts.next(), b'r', "expected nonce attribute \"r\"")?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed("invalid client nonce"));
        }
        for ext in parts {
            if attr(ext).is_none() {
                return Err(ScramError::Malformed(
                    "invalid attribute in client-first-message",
                ));
            }
        }

        let mut nonce = client_nonce.to_vec();
        nonce.extend_from_slice(server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            String::from_utf8_lossy(&nonce),
            STANDARD.encode(&self.secret.salt),
            self.secret.iterations
        )
        .into_bytes();
        self.state = State::FirstDone {
            gs2_header: gs2_header.to_vec(),
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Take the client-final-message; return server-final-message ("v=...") when the proof is right.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let (gs2_header, client_first_bare, server_first, nonce) =
            match std::mem::replace(&mut self.state, State::Failed) {
                State::FirstDone {
                    gs2_header,
                    client_first_bare,
                    server_first,
                    nonce,
                } => (gs2_header, client_first_bare, server_first, nonce),
                _ => return Err(ScramError::Malformed("unexpected client-final-message")),
            };

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let comma = data
            .iter()
            .rposition(|&b| b == b',')
            .ok_or(ScramError::Malformed("expected proof attribute \"p\""))?;
        let without_proof = &data[..comma];
        let proof = expect_attr(
            Some(&data[comma + 1..]),
            b'p',
            "expected proof attribute \"p\"",
        )?;

        let mut parts = without_proof.split(|&b| b == b',');
        let cbind = expect_attr(
            parts.next(),
            b'c',
            "expected channel binding attribute \"c\"",
        )?;
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("invalid base64 in channel binding"))?;
        if cbind != gs2_header {
            return Err(ScramError::Malformed(
                "channel binding does not match the GS2 header",
            ));
        }
        let client_nonce = expect_attr(parts.next(), b'r', "expected nonce attribute \"r\"")?;
        if client_nonce != nonce.as_slice() {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        for ext in parts {
            if attr(ext).is_none() {
                return Err(ScramError::Malformed(
                    "invalid attribute in client-final-message",
                ));
            }
        }
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("invalid client proof"))?;

        let mut auth_message = Vec::with_capacity(
            client_first_bare.len() + server_first.len() + without_proof.len() + 2,
        );
        auth_message.extend_from_slice(&client_first_bare);
        auth_message.push(b',');
        auth_message.extend_from_slice(&server_first);
        auth_message.push(b',');
        auth_message.extend_from_slice(without_proof);

        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        if !constant_time_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac(&self.secret.server_key, &auth_message);
        self.state = State::Success { client_key };
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }

    /// The ClientKey recovered from the client's proof, after a successful `client_final`.
    pub(crate) fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            State::Success { client_key } => Some(client_key),
            _ => None,
        }
    }
}

/// The client side of SCRAM-SHA-256 toward a server, proving knowledge of a password without
/// it: with the ClientKey a client proved to pgmux and the verifier's ServerKey (PgBouncer's
/// SCRAM pass-through). It works when the server's salt and iteration count are the
/// verifier's, i.e. the verifier was copied from that server's pg_authid.
pub struct ScramKeysClient {
    client_key: [u8; 32],
    secret: ScramSecret,
    nonce: String,
    client_first_bare: String,
    auth_message: Vec<u8>,
}

impl ScramKeysClient {
    /// Start: `client_key` proven by a client for the user whose verifier is `secret`.
    pub fn new(client_key: [u8; 32], secret: ScramSecret) -> ScramKeysClient {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = STANDARD.encode(raw);
        ScramKeysClient {
            client_key,
            secret,
            client_first_bare: format!("n=,r={nonce}"),
            nonce,
            auth_message: Vec::new(),
        }
    }

    /// The client-first-message (for SASLInitialResponse).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Read the server-first-message; returns the client-final-message.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(data)
            .map_err(|_| ScramError::Malformed("server-first: not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(ScramError::Malformed(
                "server-first: expected r=, s= and i=",
            ));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err(ScramError::Malformed(
                "server-first: the nonce does not extend ours",
            ));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramError::Malformed("server-first: invalid salt"))?;
        if salt != self.secret.salt || iterations != self.secret.iterations {
            return Err(ScramError::Malformed(
                "the server's SCRAM salt or iteration count differs from the stored verifier",
            ));
        }
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message =
            format!("{},{text},{without_proof}", self.client_first_bare).into_bytes();
        let stored_key = sha256(&self.client_key);
        let signature = hmac(&stored_key, &self.auth_message);
        let mut proof = self.client_key;
        for (p, s) in proof.iter_mut().zip(signature.iter()) {
            *p ^= s;
        }
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Check the server-final-message (the server proves it knows the verifier too).
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let expected = hmac(&self.secret.server_key, &self.auth_message);
        let v = data
            .strip_prefix(b"v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or(ScramError::Malformed("server-final: expected v="))?;
        if constant_time_eq(&v, &expected) {
            Ok(())
        } else {
            Err(ScramError::Malformed(
                "server-final: wrong server signature",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_derived_verifier_reads_back_and_checks_its_password() {
        let s = ScramSecret::derive("pa$s w:rd", 4096);
        let text = s.verifier();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        let back = ScramSecret::parse(&text).unwrap();
        assert_eq!(back.verifier(), text);
        assert!(back.verify_password("pa$s w:rd"));
        assert!(!back.verify_password("other"));
    }

    /// Run a full exchange; Ok(client_key) when the server accepted and the client verified the server.
    fn exchange(secret: &ScramSecret, password: &str) -> Result<[u8; 32], ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut server = ScramServer::new(secret);
        let server_first = server.client_first(client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first");
        let server_final = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies server signature");
        let key = server.client_key().expect("client key after success");
        // The exchange is over: further calls fail.
        assert!(server.client_final(b"c=biws,r=x,p=x").is_err());
        assert!(server.client_first(b"n,,n=,r=abc").is_err());
        Ok(key)
    }

    #[test]
    fn keys_client_logs_in_with_a_proven_client_key() {
        let text = postgres_protocol::password::scram_sha_256(b"pencil");
        let secret = ScramSecret::parse(&text).unwrap();
        let key = exchange(&secret, "pencil").unwrap();
        // pgmux, holding only the verifier and that key, logs in to a server with the verifier.
        let mut client = ScramKeysClient::new(key, secret.clone());
        let mut server = ScramServer::new(&secret);
        let first = server.client_first(&client.client_first()).unwrap();
        let fin = client.server_first(&first).unwrap();
        let last = server.client_final(&fin).unwrap();
        client.server_final(&last).unwrap();
        // A wrong key is refused by the server; a verifier with another salt is refused by us.
        let mut wrong = ScramKeysClient::new([7; 32], secret.clone());
        let mut server = ScramServer::new(&secret);
        let first = server.client_first(&wrong.client_first()).unwrap();
        let fin = wrong.server_first(&first).unwrap();
        assert!(matches!(
            server.client_final(&fin),
            Err(ScramError::WrongProof)
        ));
        let other =
            ScramSecret::parse(&postgres_protocol::password::scram_sha_256(b"pencil")).unwrap();
        let mut c = ScramKeysClient::new(key, other);
        let mut server = ScramServer::new(&secret);
        let first = server.client_first(&c.client_first()).unwrap();
        assert!(c.server_first(&first).is_err());
    }

    #[test]
    fn parse_verifier() {
        let text = postgres_protocol::password::scram_sha_256(b"pencil");
        let secret = ScramSecret::parse(&text).unwrap();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt.len(), 16);
        assert!(secret.verify_password("pencil"));
        assert!(!secret.verify_password("pencil "));

        // A fixed verifier from postgres-protocol's own tests (password "secret", salt 1..=16).
        let text = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$\
                    8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
        let secret = ScramSecret::parse(text).unwrap();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt, (1..=16).collect::<Vec<u8>>());
        assert!(secret.verify_password("secret"));
        assert!(!secret.verify_password("Secret"));
    }

    #[test]
    fn parse_rejects_malformed() {
        let good = postgres_protocol::password::scram_sha_256(b"hunter2");
        assert!(ScramSecret::parse(&good).is_ok());
        let (head, keys) = good.rsplit_once('$').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        let short_key = STANDARD.encode([0u8; 31]);
        let bad = [
            String::new(),
            "SCRAM-SHA-256".to_string(),
            "SCRAM-SHA-256$".to_string(),
            good.replacen("SCRAM-SHA-256", "SCRAM-SHA-1", 1),
            good.replacen("$4096:", "$0:", 1),
            good.replacen("$4096:", "$-1:", 1),
            good.replacen("$4096:", "$+4096:", 1),
            good.replacen("$4096:", "$abc:", 1),
            good.replacen("$4096:", "$99999999999:", 1),
            good.replacen("$4096:", "$4096", 1),
            format!("{head}${stored}"),
            format!("{head}${stored}:"),
            format!("{head}${stored}:{server}x"),
            format!("{head}${stored}:{server}:{server}"),
            format!("{head}${short_key}:{server}"),
            format!("{head}${stored}:{short_key}"),
            format!("{head}$!!!!:{server}"),
            "SCRAM-SHA-256$4096:$AAAA:AAAA".to_string(),
            "SCRAM-SHA-256$4096:***$AAAA:AAAA".to_string(),
            good[..good.len() - 1].to_string(),
        ];
        for text in &bad {
            let err = ScramSecret::parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(err.starts_with("invalid SCRAM-SHA-256 verifier"), "{err}");
            // The error never echoes the secret's keys or salt.
            assert!(!err.contains(stored) && !err.contains(server), "{err}");
        }
    }

    #[test]
    fn non_ascii_password_is_saslprepped_like_libpq() {
        // U+00A0 (no-break space) maps to a space under SASLprep; libpq's client (and
        // postgres-protocol's) prepares the password the same way.
        let secret = ScramSecret::derive("pa\u{a0}ss", 4096);
        let mut server = ScramServer::new(&secret);
        let mut client = postgres_protocol::authentication::sasl::ScramSha256::new(
            "pa\u{a0}ss".as_bytes(),
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let first = server.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let last = server.client_final(client.message()).unwrap();
        client.finish(&last).unwrap();
        assert!(secret.verify_password("pa ss"));
    }

    #[test]
    fn derive_then_verify_password() {
        let secret = ScramSecret::derive("correct horse", 4096);
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.salt.len(), 16);
        assert!(secret.verify_password("correct horse"));
        assert!(!secret.verify_password("correct horsE"));
        assert!(!secret.verify_password(""));
        // Fresh salt each time.
        assert_ne!(
            ScramSecret::derive("x", 1).salt,
            ScramSecret::derive("x", 1).salt
        );
        // Zero iterations is clamped rather than producing a degenerate secret.
        let zero = ScramSecret::derive("x", 0);
        assert_eq!(zero.iterations, 1);
        assert!(zero.verify_password("x"));
    }

    #[test]
    fn hi_matches_rfc7677_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let mut server = ScramServer::new(&{
            let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
            let (_, stored_key, server_key) = keys("pencil", &salt, 4096);
            ScramSecret {
                iterations: 4096,
                salt,
                stored_key,
                server_key,
            }
        });
        let first = server
            .client_first_with_nonce(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            )
            .unwrap();
        assert_eq!(first, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let last = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn scram_exchange_with_derived_secret() {
        let secret = ScramSecret::derive("s3cret", 4096);
        let key = exchange(&secret, "s3cret").unwrap();
        assert_eq!(sha256(&key), secret.stored_key);
        assert!(matches!(
            exchange(&secret, "s3creT"),
            Err(ScramError::WrongProof)
        ));
        assert!(matches!(exchange(&secret, ""), Err(ScramError::WrongProof)));
    }

    #[test]
    fn scram_exchange_with_postgres_verifier() {
        let secret =
            ScramSecret::parse(&postgres_protocol::password::scram_sha_256(b"pa$$:word")).unwrap();
        let key = exchange(&secret, "pa$$:word").unwrap();
        assert_eq!(sha256(&key), secret.stored_key);
        assert!(matches!(
            exchange(&secret, "password"),
            Err(ScramError::WrongProof)
        ));
    }

    #[test]
    fn scram_wrong_proof_has_no_client_key() {
        let secret = ScramSecret::derive("s3cret", 4096);
        let mut client = ScramSha256::new(b"nope", ChannelBinding::unsupported());
        let mut server = ScramServer::new(&secret);
        let first = server.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        assert!(matches!(
            server.client_final(client.message()),
            Err(ScramError::WrongProof)
        ));
        assert_eq!(server.client_key(), None);
        // No second try on the same exchange.
        assert!(server.client_final(client.message()).is_err());
    }

    #[test]
    fn scram_gs2_headers() {
        let secret = ScramSecret::derive("pw", 16);
        // "y,,": client supports channel binding, thinks we don't.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unrequested());
        let mut server = ScramServer::new(&secret);
        assert!(client.message().starts_with(b"y,,"));
        let first = server.client_first(client.message()).unwrap();
        client.update(&first).unwrap();
        let last = server.client_final(client.message()).unwrap();
        client.finish(&last).unwrap();

        for (msg, want) in [
            (
                &b"p=tls-server-end-point,,n=,r=abc"[..],
                "channel binding not supported",
            ),
            (b"n,a=bob,n=,r=abc", "authorization identity not supported"),
            (b"x,,n=,r=abc", "invalid GS2 header"),
            (b"n,,m=ext,n=,r=abc", "mandatory extension not supported"),
            (b"n,,r=abc", "expected username attribute \"n\""),
            (b"n,,n=", "expected nonce attribute \"r\""),
            (b"n,,n=,r=", "invalid client nonce"),
            (b"n,,n=,r=a\xffb", "invalid client nonce"),
            (
                b"n,,n=,r=abc,oops",
                "invalid attribute in client-first-message",
            ),
        ] {
            match ScramServer::new(&secret).client_first(msg) {
                Err(ScramError::Malformed(m)) => {
                    assert_eq!(m, want, "{:?}", String::from_utf8_lossy(msg))
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(msg)),
            }
        }
        // Extensions after the nonce are ignored.
        assert!(ScramServer::new(&secret)
            .client_first(b"n,,n=,r=abc,x=1")
            .is_ok());
    }

    #[test]
    fn scram_client_final_checks() {
        let secret = ScramSecret::derive("pw", 16);
        let start = || {
            let mut server = ScramServer::new(&secret);
            server
                .client_first_with_nonce(b"n,,n=,r=abc", b"XYZ")
                .unwrap();
            server
        };
        let proof = STANDARD.encode([0u8; 32]);
        for (msg, want) in [
            (
                format!("c=eSws,r=abcXYZ,p={proof}"),
                "channel binding does not match the GS2 header",
            ),
            (format!("c=biws,r=abcXY,p={proof}"), "nonce does not match"),
            (
                format!("c=biws,r=abcXYZ,x=1,p={proof}"),
                "password authentication failed",
            ),
            (
                format!("c=biws,r=abcXYZ,p={}", STANDARD.encode([0u8; 31])),
                "invalid client proof",
            ),
            ("c=biws,r=abcXYZ,p=".to_string(), "invalid client proof"),
            (
                "c=biws,r=abcXYZ".to_string(),
                "expected proof attribute \"p\"",
            ),
            (
                format!("r=abcXYZ,p={proof}"),
                "expected channel binding attribute \"c\"",
            ),
            (
                format!("c=biws,p={proof}"),
                "expected nonce attribute \"r\"",
            ),
            (
                format!("c=b!ws,r=abcXYZ,p={proof}"),
                "invalid base64 in channel binding",
            ),
        ] {
            let err = start()
                .client_final(msg.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.ends_with(want), "{msg}: {err}");
        }
    }

    #[test]
    fn scram_out_of_order_calls() {
        let secret = ScramSecret::derive("pw", 16);
        // client_final first.
        let mut server = ScramServer::new(&secret);
        assert!(server.client_final(b"c=biws,r=abc,p=AAAA").is_err());
        assert!(server.client_first(b"n,,n=,r=abc").is_err());
        // client_first twice.
        let mut server = ScramServer::new(&secret);
        assert!(server.client_first(b"n,,n=,r=abc").is_ok());
        assert!(server.client_first(b"n,,n=,r=abc").is_err());
        assert!(server.client_final(b"c=biws,r=abc,p=AAAA").is_err());
        // A malformed client-first ends the exchange.
        let mut server = ScramServer::new(&secret);
        assert!(server.client_first(b"garbage").is_err());
        assert!(server.client_first(b"n,,n=,r=abc").is_err());
        assert_eq!(server.client_key(), None);
    }

    #[test]
    fn scram_garbage_never_panics() {
        let secret = ScramSecret::derive("pw", 16);
        let mut rng = StdRng::seed_from_u64(0x005c_7a4d);
        let alphabet = b"nyp,=rcsivmxa\xff\x00biws+/AZ09";
        for i in 0..20_000 {
            let len = rng.gen_range(0..80);
            let data: Vec<u8> = if i % 2 == 0 {
                (0..len).map(|_| rng.gen()).collect()
            } else {
                // Biased towards SCRAM-looking bytes.
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            };
            let _ = ScramServer::new(&secret).client_first(&data);
            assert!(ScramServer::new(&secret).client_final(&data).is_err());
            let mut server = ScramServer::new(&secret);
            server.client_first(b"n,,n=,r=abc").unwrap();
            let mut prefixed = b"c=biws,r=".to_vec();
            prefixed.extend_from_slice(&data);
            assert!(server.client_final(&prefixed).is_err());
            let mut server = ScramServer::new(&secret);
            server.client_first(b"n,,n=,r=abc").unwrap();
            assert!(server.client_final(&data).is_err());
            assert_eq!(server.client_key(), None);
        }
    }

    #[test]
    fn scram_truncated_messages() {
        let secret = ScramSecret::derive("pw", 64);
        let server_nonce = b"0123456789abcdefghijklmn";
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let client_first = client.message().to_vec();
        let mut server = ScramServer::new(&secret);
        let server_first = server
            .client_first_with_nonce(&client_first, server_nonce)
            .unwrap();
        client.update(&server_first).unwrap();
        let client_final = client.message().to_vec();
        assert!(server.client_final(&client_final).is_ok());

        // Every prefix of the client-first: an error, unless it still carries a (shorter) nonce.
        for len in 0..client_first.len() {
            let res = ScramServer::new(&secret).client_first(&client_first[..len]);
            assert_eq!(res.is_ok(), len > b"n,,n=,r=".len(), "prefix of {len}");
        }
        // Every proper prefix of the client-final is rejected.
        for len in 0..client_final.len() {
            let mut server = ScramServer::new(&secret);
            server
                .client_first_with_nonce(&client_first, server_nonce)
                .unwrap();
            assert!(
                server.client_final(&client_final[..len]).is_err(),
                "prefix of {len}"
            );
            assert_eq!(server.client_key(), None);
        }
        // Flipping any byte of the client-final is rejected too.
        for i in 0..client_final.len() {
            let mut data = client_final.clone();
            data[i] ^= 0x01;
            let mut server = ScramServer::new(&secret);
            server
                .client_first_with_nonce(&client_first, server_nonce)
                .unwrap();
            assert!(server.client_final(&data).is_err(), "flip at {i}");
        }
    }
}
