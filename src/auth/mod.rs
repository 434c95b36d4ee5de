//! Client authentication to pgmux: stored secrets, SCRAM-SHA-256 server side, MD5 and plaintext checks.

pub mod hba;
mod md5;
pub mod query;
mod scram;
pub mod userlist;

pub use md5::md5_password_hash;
pub(crate) use md5::{md5_salted, verify_md5_response};
pub use scram::ScramError;
pub use scram::{ScramKeysClient, ScramSecret, ScramServer};

/// A user's stored secret, as written in `[users.NAME] password`.
#[derive(Clone)]
pub enum Secret {
    /// Plaintext password; a SCRAM verifier is derived from it (PBKDF2, 4096 rounds) once, off
    /// the runtime ([`Secret::prepare_scram`]): before listening at start-up, in the background
    /// after a reload, or by the first SCRAM login that comes sooner; clones share it.
    Plain {
        password: String,
        scram: std::sync::Arc<std::sync::OnceLock<ScramSecret>>,
    },
    /// "md5" + md5(password + username) in hex.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramSecret),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            Secret::Plain { .. } => "Secret::Plain(..)",
            Secret::Md5(_) => "Secret::Md5(..)",
            Secret::Scram(_) => "Secret::Scram(..)",
        })
    }
}

impl Secret {
    /// Parse a configured password: plaintext, `md5<32 hex>` or `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`.
    pub fn parse(text: &str) -> Result<Secret, String> {
        if let Some(hex) = text.strip_prefix("md5") {
            if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Secret::Md5(text.to_ascii_lowercase()));
            }
        }
        if text.starts_with("SCRAM-SHA-256$") {
            return ScramSecret::parse(text).map(Secret::Scram);
        }
        Ok(Secret::Plain {
            password: text.to_string(),
            scram: Default::default(),
        })
    }

    /// Derive a plaintext password's SCRAM verifier on a blocking thread, if not done yet,
    /// so a login (or a reload of many users) never runs PBKDF2 on a runtime thread.
    pub(crate) async fn prepare_scram(&self) {
        if let Secret::Plain { password, scram } = self {
            if scram.get().is_none() {
                let pw = password.clone();
                if let Ok(d) =
                    tokio::task::spawn_blocking(move || ScramSecret::derive(&pw, 4096)).await
                {
                    let _ = scram.set(d);
                }
            }
        }
    }

    /// The SCRAM verifier, if this secret can serve a SCRAM login (derived here if
    /// [`Secret::prepare_scram`] did not run).
    pub fn scram(&self) -> Option<&ScramSecret> {
        match self {
            Secret::Plain { password, scram } => {
                Some(scram.get_or_init(|| ScramSecret::derive(password, 4096)))
            }
            Secret::Scram(scram) => Some(scram),
            Secret::Md5(_) => None,
        }
    }

    /// Whether a plaintext password's verifier was derived already.
    pub(crate) fn scram_derived(&self) -> bool {
        match self {
            Secret::Plain { scram, .. } => scram.get().is_some(),
            _ => true,
        }
    }

    /// The plaintext password, if known.
    pub fn plaintext(&self) -> Option<&str> {
        match self {
            Secret::Plain { password, .. } => Some(password),
            _ => None,
        }
    }

    /// Whether two secrets come from the same configured text (a plaintext password's
    /// derived verifier has a random salt, so it is not compared).
    pub(crate) fn same_as(&self, other: &Secret) -> bool {
        match (self, other) {
            (Secret::Plain { password: a, .. }, Secret::Plain { password: b, .. }) => a == b,
            (Secret::Md5(a), Secret::Md5(b)) => a == b,
            (Secret::Scram(a), Secret::Scram(b)) => {
                a.iterations == b.iterations
                    && a.salt == b.salt
                    && a.stored_key == b.stored_key
                    && a.server_key == b.server_key
            }
            _ => false,
        }
    }

    /// Check a cleartext password (auth_type plain) against this secret.
    pub(crate) fn verify_plain(&self, user: &str, password: &str) -> bool {
        match self {
            Secret::Plain { password: p, .. } => {
                constant_time_eq(p.as_bytes(), password.as_bytes())
            }
            Secret::Md5(h) => {
                constant_time_eq(h.as_bytes(), md5_password_hash(user, password).as_bytes())
            }
            Secret::Scram(s) => s.verify_password(password),
        }
    }
}

/// Compare two byte strings in time independent of where they differ.
/// A SCRAM-SHA-256 verifier (as in `pg_authid`) of `password`, with a fresh salt: what
/// `pgmux passwd` prints for an auth_file.
pub fn scram_verifier(password: &str, iterations: u32) -> String {
    scram::ScramSecret::derive(password, iterations).verifier()
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loading a plaintext password derives nothing (defect 6: PBKDF2 ran for every user on
    /// the runtime thread, twice per load); the first SCRAM login derives it once, off the
    /// runtime, and clones share it.
    #[tokio::test]
    async fn plaintext_verifier_is_derived_once_on_first_use() {
        let s = Secret::parse("pw").unwrap();
        assert!(!s.scram_derived(), "derived at load");
        let copy = s.clone();
        s.prepare_scram().await;
        assert!(s.scram_derived() && copy.scram_derived());
        let a = s.scram().unwrap().salt.clone();
        assert_eq!(copy.scram().unwrap().salt, a, "derived twice");
        assert!(s.scram().unwrap().verify_password("pw"));
    }
}
