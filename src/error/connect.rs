//! Why a server could not be opened: each cause kept as it came (the I/O error, the TLS
//! error, the SCRAM error, Postgres' own ErrorResponse), and whether trying again may work.

use bytes::Bytes;

/// A cause kept as it came.
pub(super) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A failed connect or login to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Refused, reset, unreachable, a name that does not resolve.
    #[error("connection failure: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out: server_connect_timeout")]
    Timeout,
    #[error("TLS to {server} failed: {source}")]
    Tls {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server {server} does not accept TLS and server_tls_sslmode = {mode}")]
    TlsDeclined { server: String, mode: &'static str },
    #[error("server_tls: bad host name {name}: {source}")]
    BadHostName {
        name: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The SCRAM exchange with a client's proven key failed.
    #[error("SCRAM with the server: {0}")]
    ScramKeys(#[source] Cause),
    /// The SCRAM exchange with a password failed.
    #[error("SCRAM with the server: {0}")]
    Scram(#[source] std::io::Error),
    #[error(
        "server asked for {method} authentication for user \"{user}\" and pgmux has no usable password for it"
    )]
    NoPassword { method: &'static str, user: String },
    #[error("server asked for unsupported authentication method {0}")]
    UnsupportedMethod(i32),
    /// Postgres refused the login: its ErrorResponse, raw body kept to relay as is.
    #[error("server error {code}: {message}")]
    Postgres {
        code: String,
        message: String,
        raw: Bytes,
    },
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// No host of the entry fits target_session_attrs (a failover may be under way).
    #[error("{0}")]
    NoHostFits(String),
}

impl ConnectError {
    /// Whether trying again may work (Postgres down, restarting, refusing for now, a host
    /// that does not fit `target_session_attrs` during a failover), rather than a
    /// configuration error that will fail the same way (a wrong password, a missing role or
    /// database, a TLS policy).
    pub fn passes(&self) -> bool {
        match self {
            ConnectError::Io(_) | ConnectError::Timeout | ConnectError::NoHostFits(_) => true,
            // 57P01-03: shutting down, crash recovery, starting up; 53xxx: too many
            // connections, out of memory or disk; 08xxx: the connection broke.
            ConnectError::Postgres { code, .. } => {
                code.starts_with("57P") || code.starts_with("53") || code.starts_with("08")
            }
            _ => false,
        }
    }
}

/// Errors of the messages read during a login (I/O, a message Postgres should not send,
/// an ErrorResponse) keep their kind.
impl From<super::Error> for ConnectError {
    fn from(e: super::Error) -> ConnectError {
        use super::Error;
        match e {
            Error::Io(e) => ConnectError::Io(e),
            Error::Timeout(_) => ConnectError::Timeout,
            Error::Server { code, message, raw } => ConnectError::Postgres { code, message, raw },
            Error::Connect(c) => c,
            other => ConnectError::Protocol(other.to_string()),
        }
    }
}
