//! MD5 password hashing and challenge checks (Postgres "md5" auth).

use ::md5::{Digest, Md5};

use super::constant_time_eq;

/// Lowercase hex of `bytes`.
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// "md5" + hex(md5(password + user)), as stored in pg_authid.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(password.as_bytes());
    md5.update(user.as_bytes());
    format!("md5{}", hex_lower(&md5.finalize()))
}

/// The answer to an MD5 challenge with `salt` when only the stored "md5..." hash is known:
/// "md5" + hex(md5(hex-of-stored + salt)). `None` if `stored` is not a valid MD5 hash.
/// pgmux computes it to check a client, and to log in to a server with a stored hash.
pub(crate) fn md5_salted(stored: &str, salt: [u8; 4]) -> Option<String> {
    let hex = match stored.strip_prefix("md5") {
        Some(hex) if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            hex.to_ascii_lowercase()
        }
        _ => return None,
    };
    let mut md5 = Md5::new();
    md5.update(hex.as_bytes());
    md5.update(salt);
    Some(format!("md5{}", hex_lower(&md5.finalize())))
}

/// Check a client's PasswordMessage for an MD5 challenge with `salt`.
/// `stored` is the "md5..." hash of the user's password.
///
/// The client sends "md5" + hex(md5(hex(md5(password + user)) + salt)); `response` may or may not
/// carry the PasswordMessage's trailing NUL. A malformed `stored` hash never verifies.
pub(crate) fn verify_md5_response(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let Some(expected) = md5_salted(stored, salt) else {
        return false;
    };
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    constant_time_eq(expected.as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    #[test]
    fn md5_hash_known_vector() {
        assert_eq!(
            md5_password_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        // Agrees with the client library's pg_authid-style hash.
        assert_eq!(
            md5_password_hash("alice", "s3cret"),
            postgres_protocol::password::md5(b"s3cret", "alice")
        );
    }

    #[test]
    fn md5_challenge_roundtrip() {
        let stored = md5_password_hash("alice", "s3cret");
        for salt in [[0, 0, 0, 0], [1, 2, 3, 4], [0xff, 0x00, 0x7f, 0x80]] {
            let response = md5_hash(b"alice", b"s3cret", salt);
            assert!(verify_md5_response(&stored, salt, response.as_bytes()));
            // With the PasswordMessage's trailing NUL.
            let mut with_nul = response.clone().into_bytes();
            with_nul.push(0);
            assert!(verify_md5_response(&stored, salt, &with_nul));
            // Uppercase stored hash is accepted too.
            assert!(verify_md5_response(
                &stored.to_ascii_uppercase().replacen("MD5", "md5", 1),
                salt,
                response.as_bytes()
            ));
        }
    }

    #[test]
    fn md5_challenge_rejects() {
        let stored = md5_password_hash("alice", "s3cret");
        let salt = [9, 8, 7, 6];
        // Wrong password, wrong user, wrong salt.
        assert!(!verify_md5_response(
            &stored,
            salt,
            md5_hash(b"alice", b"wrong", salt).as_bytes()
        ));
        assert!(!verify_md5_response(
            &stored,
            salt,
            md5_hash(b"bob", b"s3cret", salt).as_bytes()
        ));
        assert!(!verify_md5_response(
            &stored,
            salt,
            md5_hash(b"alice", b"s3cret", [0; 4]).as_bytes()
        ));
        // Garbage responses.
        let good = md5_hash(b"alice", b"s3cret", salt).into_bytes();
        assert!(!verify_md5_response(&stored, salt, b""));
        assert!(!verify_md5_response(&stored, salt, b"\0"));
        assert!(!verify_md5_response(&stored, salt, &good[..good.len() - 1]));
        let mut two_nuls = good.clone();
        two_nuls.extend_from_slice(b"\0\0");
        assert!(!verify_md5_response(&stored, salt, &two_nuls));
        assert!(!verify_md5_response(&stored, salt, &[0xff; 35]));
        // Malformed stored hashes never verify.
        for bad in [
            "",
            "md5",
            "s3cret",
            "md5zz75bce1d3201d16594cebf9d7eb3f9d",
            &stored[..34],
        ] {
            assert!(!verify_md5_response(bad, salt, &good));
        }
    }
}
