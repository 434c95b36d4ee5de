//! Errors pgmux reports to clients, and their SQLSTATE codes: what a client is sent for any
//! error is decided in one place ([`Error::sqlstate`]). Errors of one layer have their own
//! type, keeping their cause: opening a server ([`ConnectError`]), checking one out of a
//! pool ([`CheckoutError`]); a login's is the client's (`client::login::LoginError`).

mod checkout;
mod connect;

use std::io;

pub(crate) use checkout::CheckoutError;
pub(crate) use connect::ConnectError;

/// SQLSTATE codes pgmux uses (as Postgres would).
pub(crate) mod sqlstate {
    pub(crate) const PROTOCOL_VIOLATION: &str = "08P01";
    pub(crate) const CONNECTION_FAILURE: &str = "08006";
    /// No host of a database entry fits its target_session_attrs (libpq's code for a failed
    /// connection attempt).
    pub(crate) const NO_HOST_FITS: &str = "08001";
    pub(crate) const INVALID_CATALOG_NAME: &str = "3D000";
    pub(crate) const INVALID_PASSWORD: &str = "28P01";
    pub(crate) const INVALID_AUTHORIZATION: &str = "28000";
    pub(crate) const TOO_MANY_CONNECTIONS: &str = "53300";
    pub(crate) const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub(crate) const QUERY_CANCELED: &str = "57014";
    pub(crate) const ADMIN_SHUTDOWN: &str = "57P01";
    pub(crate) const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    pub(crate) const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub(crate) const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub(crate) const INTERNAL_ERROR: &str = "XX000";
    pub(crate) const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub(crate) const SYNTAX_ERROR: &str = "42601";
    pub(crate) const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub(crate) const INVALID_PARAMETER_VALUE: &str = "22023";
    pub(crate) const UNDEFINED_OBJECT: &str = "42704";
    pub(crate) const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
}

/// Anything that ends a client or server connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("{message}")]
    /// An error with the SQLSTATE to report to the client.
    Client { code: &'static str, message: String },
    #[error("server error {code}: {message}")]
    /// An ErrorResponse from Postgres (its raw body kept to relay as is).
    Server {
        code: String,
        message: String,
        raw: bytes::Bytes,
    },
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A server could not be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A client got no server from its pool.
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
}

impl Error {
    /// A client-facing error with this SQLSTATE.
    pub(crate) fn client(code: &'static str, message: impl Into<String>) -> Error {
        Error::Client {
            code,
            message: message.into(),
        }
    }

    /// Whether a failed connect may work if tried again (see [`ConnectError::passes`]).
    pub fn passes(&self) -> bool {
        match self {
            Error::Connect(c) | Error::Checkout(CheckoutError::Connect(c)) => c.passes(),
            Error::Checkout(_) => false,
            Error::Io(_) | Error::Timeout(_) => true,
            Error::Server { code, .. } => {
                code.starts_with("57P") || code.starts_with("53") || code.starts_with("08")
            }
            Error::Client { .. } => false,
            Error::Protocol(_) => false,
        }
    }

    /// Postgres' own ErrorResponse body, when the error is one: relayed to a client as is.
    pub(crate) fn raw_postgres(&self) -> Option<&bytes::Bytes> {
        match self {
            Error::Server { raw, .. }
            | Error::Connect(ConnectError::Postgres { raw, .. })
            | Error::Checkout(CheckoutError::Connect(ConnectError::Postgres { raw, .. })) => {
                Some(raw)
            }
            _ => None,
        }
    }

    /// The SQLSTATE and message to send to a client: the one place that decides them.
    pub(crate) fn sqlstate(&self) -> (&str, String) {
        match self {
            Error::Client { code, message } => (code, message.clone()),
            Error::Server { code, message, .. } => (code, message.clone()),
            Error::Protocol(m) => (
                sqlstate::PROTOCOL_VIOLATION,
                format!("protocol violation: {m}"),
            ),
            Error::Timeout(what) => (sqlstate::CONNECTION_FAILURE, format!("timed out: {what}")),
            Error::Io(e) => (
                sqlstate::CONNECTION_FAILURE,
                format!("connection failure: {e}"),
            ),
            Error::Checkout(c) => match c {
                CheckoutError::Connect(c) => Error::connect_sqlstate(c),
                CheckoutError::WaitTimeout | CheckoutError::PausedTimeout => {
                    (sqlstate::QUERY_CANCELED, c.to_string())
                }
                CheckoutError::Outage { .. } => (sqlstate::CONNECTION_FAILURE, c.to_string()),
                CheckoutError::Closed => (sqlstate::ADMIN_SHUTDOWN, c.to_string()),
            },
            Error::Connect(c) => Error::connect_sqlstate(c),
        }
    }

    /// A failed connect's SQLSTATE (Postgres' own, when it refused the login).
    fn connect_sqlstate(c: &ConnectError) -> (&str, String) {
        let code = match c {
            ConnectError::Postgres { code, message, .. } => return (code, message.clone()),
            ConnectError::NoHostFits(_) => sqlstate::NO_HOST_FITS,
            ConnectError::NoPassword { .. } => sqlstate::INVALID_PASSWORD,
            ConnectError::UnsupportedMethod(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            ConnectError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            ConnectError::Io(_)
            | ConnectError::Timeout
            | ConnectError::Tls { .. }
            | ConnectError::TlsDeclined { .. }
            | ConnectError::BadHostName { .. }
            | ConnectError::ScramKeys(_)
            | ConnectError::Scram(_) => sqlstate::CONNECTION_FAILURE,
        };
        (code, c.to_string())
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
