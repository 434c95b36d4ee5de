//! MD5 password hashing and challenge checks (Postgres "md5" auth).

/// "md5" + hex(md5(password + user)), as stored in pg_authid.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    todo!("{user}{password}")
}

/// Check a client's PasswordMessage for an MD5 challenge with `salt`.
/// `stored` is the "md5..." hash of the user's password.
pub fn verify_md5_response(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    todo!("{stored}{salt:?}{response:?}")
}
