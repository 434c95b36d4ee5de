//! Login phase 4, authenticate: how a client must prove who it is (auth_type or the hba
//! rule), the exchange (trust, password, MD5, SCRAM-SHA-256, certificate), the same for a
//! user that does not exist as for one that does.

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::AsyncReadExt;

use super::{Ctx, LoginError, MAX_LOGIN_MESSAGE};
use crate::auth::{verify_md5_response, ScramSecret, ScramServer, Secret};
use crate::client::secret::{self, UserSecret};
use crate::clients::ClientInfo;
use crate::config::AuthType;
use crate::error::{sqlstate, Error, Result};
use crate::net::Conn;
use crate::proto::{self, backend};
use crate::shared::Shared;

impl Ctx<'_> {
    /// Send the authentication request in `out`, then read the client's answer: a 'p' message
    /// (PasswordMessage, SASLInitialResponse or SASLResponse: `what`), returning its body.
    async fn answer(&mut self, what: &str) -> Result<BytesMut> {
        self.stream.send_all(&self.out).await?;
        self.out.clear();
        let (tag, body) = read_message(self.stream, &mut self.buf).await?;
        if tag != b'p' {
            return Err(Error::Protocol(format!("expected a {what}")));
        }
        Ok(body)
    }

    /// Phase 4, authenticate: how the client must authenticate for `database` (auth_type or
    /// the hba rule), its secret ([users], auth_file or auth_query), then the exchange. Returns
    /// the SCRAM ClientKey it proved, if any, and the secret found. Nothing is made for the
    /// client before this succeeds.
    pub(super) async fn authenticate(
        &mut self,
        database: &str,
        user: &str,
    ) -> Result<(Option<[u8; 32]>, UserSecret), LoginError> {
        let method = auth_method(&self.live, self.info, self.stream.is_tls(), database, user)
            .map_err(LoginError::auth)?;
        let shared = self.shared;
        let found = secret::user_secret(shared, &self.live, database, user)
            .await
            .map_err(LoginError::Server)?;
        let client_key = self
            .exchange(&found, user, method)
            .await
            .inspect_err(|_| forget_fetched(shared, &found))
            .map_err(LoginError::auth)?;
        Ok((client_key, found))
    }

    /// The authentication exchange: `user` by `method` (auth_type, or the hba rule's). An unknown user goes through the same
    /// exchange as a known one and fails the same way, so users cannot be enumerated.
    async fn exchange(
        &mut self,
        found: &UserSecret,
        user: &str,
        method: AuthType,
    ) -> Result<Option<[u8; 32]>> {
        let (secret, known) = (found.secret.as_ref(), found.known);
        match method {
            AuthType::Hba => unreachable!("resolved by auth_method"),
            // The certificate was verified in the TLS handshake; its CN names the user.
            AuthType::Cert => match self.cert_cn.as_deref() {
                Some(cn) if cn == user && known => Ok(None),
                Some(_) => Err(Error::client(
                    sqlstate::INVALID_AUTHORIZATION,
                    format!("certificate authentication failed for user \"{user}\""),
                )),
                None => Err(Error::client(
                    sqlstate::INVALID_AUTHORIZATION,
                    format!("connection requires a valid client certificate (user \"{user}\")"),
                )),
            },
            AuthType::Trust => {
                if !known {
                    return Err(Error::client(
                        sqlstate::INVALID_AUTHORIZATION,
                        format!("role \"{user}\" does not exist"),
                    ));
                }
                Ok(None)
            }
            AuthType::Plain => {
                backend::auth_request(&mut self.out, 3, &[]);
                let body = self.answer("password message").await?;
                let pw = body.strip_suffix(&[0]).unwrap_or(&body);
                let pw = std::str::from_utf8(pw).map_err(|_| auth_failed(user))?;
                match secret {
                    Some(s) if s.verify_plain(user, pw) => Ok(None),
                    _ => Err(auth_failed(user)),
                }
            }
            AuthType::Md5 => match secret {
                Some(Secret::Scram(s)) => self.scram(s, user, true).await,
                Some(s) => {
                    let stored = match s {
                        Secret::Md5(h) => h.clone(),
                        Secret::Plain { password, .. } => {
                            crate::auth::md5_password_hash(user, password)
                        }
                        Secret::Scram(_) => unreachable!("handled above"),
                    };
                    self.md5(Some(&stored), user).await.map(|()| None)
                }
                // No secret (unknown user, or one without a password): a mock exchange of the
                // kind most known users get, so the challenge does not tell whether the user
                // exists (as Postgres, which follows password_encryption). Secrets from
                // auth_query are mostly SCRAM (Postgres' default since 14); configured ones MD5
                // or plaintext under this auth_type.
                None if found.fetched.is_some() => {
                    let fake = self.shared.fake_scram_secret(user);
                    self.scram(&fake, user, false).await
                }
                None => self.md5(None, user).await.map(|()| None),
            },
            AuthType::ScramSha256 => match secret {
                Some(Secret::Md5(h)) => self.md5(Some(h), user).await.map(|()| None),
                Some(s) => {
                    s.prepare_scram().await;
                    self.scram(s.scram().expect("plain or scram"), user, true)
                        .await
                }
                None => {
                    let fake = self.shared.fake_scram_secret(user);
                    self.scram(&fake, user, false).await
                }
            },
        }
    }

    async fn md5(&mut self, stored: Option<&str>, user: &str) -> Result<()> {
        let salt: [u8; 4] = rand::thread_rng().gen();
        backend::auth_request(&mut self.out, 5, &salt);
        let body = self.answer("password message").await?;
        match stored {
            Some(h) if verify_md5_response(h, salt, &body) => Ok(()),
            _ => Err(auth_failed(user)),
        }
    }

    async fn scram(
        &mut self,
        secret: &ScramSecret,
        user: &str,
        known: bool,
    ) -> Result<Option<[u8; 32]>> {
        backend::auth_sasl(&mut self.out);
        let body = self.answer("SASLInitialResponse").await?;
        // SASLInitialResponse: mechanism, int32 length, data.
        let (mech, rest) =
            proto::cstr(&body).ok_or_else(|| Error::Protocol("bad SASLInitialResponse".into()))?;
        if mech != "SCRAM-SHA-256" {
            return Err(Error::client(
                sqlstate::PROTOCOL_VIOLATION,
                format!("unsupported SASL mechanism \"{mech}\""),
            ));
        }
        if rest.len() < 4 {
            return Err(Error::Protocol("bad SASLInitialResponse".into()));
        }
        let data = &rest[4..];
        let mut server = ScramServer::new(secret);
        let first = server
            .client_first(data)
            .map_err(|e| Error::client(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
        backend::auth_request(&mut self.out, 11, &first);
        let body = self.answer("SASLResponse").await?;
        let last = match server.client_final(&body) {
            Ok(v) if known => v,
            Ok(_) | Err(crate::auth::ScramError::WrongProof) => return Err(auth_failed(user)),
            Err(e) => return Err(Error::client(sqlstate::PROTOCOL_VIOLATION, e.to_string())),
        };
        backend::auth_request(&mut self.out, 12, &last);
        // The ClientKey the client proved: pgmux can log in to servers with it (pass-through).
        Ok(server.client_key())
    }
}

/// Read one tagged message from a client during login.
async fn read_message(stream: &mut Conn, buf: &mut BytesMut) -> Result<(u8, BytesMut)> {
    loop {
        if let Some((tag, len)) = proto::header(buf, MAX_LOGIN_MESSAGE).map_err(Error::Protocol)? {
            if buf.len() >= len {
                let mut m = buf.split_to(len);
                m.advance(5);
                return Ok((tag, m));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

fn auth_failed(user: &str) -> Error {
    Error::client(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// How `user` must authenticate for `database`: auth_type, or with auth_type = "hba" the
/// method of the first auth_hba_file rule that matches (none, or `reject`: refused, in
/// Postgres' words).
fn auth_method(
    live: &crate::shared::Live,
    info: &ClientInfo,
    tls: bool,
    database: &str,
    user: &str,
) -> Result<AuthType> {
    use crate::auth::hba::{self, Method};
    if live.config.general.auth_type != AuthType::Hba {
        return Ok(live.config.general.auth_type);
    }
    let ip = info.addr().ip();
    let ssl = if tls { "on" } else { "off" };
    let refused = |what: &str| {
        Error::client(
            sqlstate::INVALID_AUTHORIZATION,
            format!(
                "{what} for host \"{ip}\", user \"{user}\", database \"{database}\", SSL {ssl}"
            ),
        )
    };
    match hba::find(&live.hba, ip, tls, database, user).map(|r| r.method) {
        None => Err(refused("no pg_hba.conf entry")),
        Some(Method::Reject) => Err(refused("pg_hba.conf rejects connection")),
        Some(Method::Trust) => Ok(AuthType::Trust),
        Some(Method::Password) => Ok(AuthType::Plain),
        Some(Method::Md5) => Ok(AuthType::Md5),
        Some(Method::ScramSha256) => Ok(AuthType::ScramSha256),
        Some(Method::Cert) => Ok(AuthType::Cert),
    }
}

/// An answer from auth_query failed an authentication: it may be stale (the password
/// changed), so the next login asks Postgres again. "No such user" is forgotten too, so a
/// wrong password costs the same whether or not the user exists.
fn forget_fetched(shared: &Shared, found: &UserSecret) {
    if let Some(l) = &found.fetched {
        l.forget(shared);
    }
}
