//! Why a login failed: the error the client is sent, and the reason it is counted under
//! (`pgmux_client_login_failures_total`), derived from it.

use crate::error::{sqlstate, Error};
use crate::shared::LoginFailure;

/// A failed login.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    #[error("no more connections allowed (max_client_conn)")]
    TooManyClients,
    #[error("client_login_timeout: login took too long")]
    Timeout,
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("database \"{0}\" is not currently accepting connections (DISABLE)")]
    NotAccepting(String),
    #[error(
        "user \"{0}\" is not in admin_users or stats_users: the admin console is closed to it"
    )]
    AdminDenied(String),
    /// The credentials, or how they were given, were refused.
    #[error(transparent)]
    Auth(Error),
    /// What the login needed of Postgres failed: an auth_query lookup, the pool, its first
    /// server.
    #[error(transparent)]
    Server(Error),
    /// Anything else: the client's connection or protocol, what it asked for.
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> LoginError {
        LoginError::Other(Error::Io(e))
    }
}

impl LoginError {
    /// An error of the authentication exchange: the credentials refused, unless it is the
    /// connection's or the protocol's.
    pub(crate) fn auth(e: Error) -> LoginError {
        match e {
            Error::Client { .. } => LoginError::Auth(e),
            other => LoginError::Other(other),
        }
    }

    /// The reason the failure is counted under.
    pub(crate) fn reason(&self) -> LoginFailure {
        match self {
            LoginError::TooManyClients => LoginFailure::TooManyClients,
            LoginError::Timeout => LoginFailure::Timeout,
            LoginError::UnknownDatabase(_) => LoginFailure::UnknownDatabase,
            LoginError::NotAccepting(_) => LoginFailure::NotAccepting,
            LoginError::AdminDenied(_) => LoginFailure::AdminDenied,
            LoginError::Auth(_) => LoginFailure::Auth,
            LoginError::Server(e) | LoginError::Other(e) => match e {
                Error::Protocol(_) | Error::Io(_) => LoginFailure::Protocol,
                Error::Server { .. }
                | Error::Timeout(_)
                | Error::Connect(_)
                | Error::Checkout(_) => LoginFailure::Server,
                Error::Client { .. } if matches!(self, LoginError::Server(_)) => {
                    LoginFailure::Server
                }
                Error::Client { .. } => LoginFailure::Other,
            },
        }
    }

    /// The error the client is sent (its SQLSTATE from [`Error::sqlstate`]).
    pub(crate) fn into_error(self) -> Error {
        let code = match &self {
            LoginError::TooManyClients => sqlstate::TOO_MANY_CONNECTIONS,
            // As PgBouncer: the client was too slow with its part of the protocol.
            LoginError::Timeout => sqlstate::PROTOCOL_VIOLATION,
            LoginError::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            LoginError::NotAccepting(_) => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            LoginError::AdminDenied(_) => sqlstate::INSUFFICIENT_PRIVILEGE,
            LoginError::Auth(_) | LoginError::Server(_) | LoginError::Other(_) => {
                return match self {
                    LoginError::Auth(e) | LoginError::Server(e) | LoginError::Other(e) => e,
                    _ => unreachable!("matched above"),
                };
            }
        };
        Error::client(code, self.to_string())
    }
}
