//! pgmux: a PostgreSQL connection pooler.
//!
//! Layout (dependencies point downward; docs/architecture.md has the whole map and
//! scripts/check-layers.py keeps it): `proto`, `sql`, `auth`, `error`, `boxed`, `systemd` at the bottom; `config` and
//! `prepared`; `net`; `server`; `pool`; `cancel` and `clients`; `shared`; `snapshot` and
//! `reload`; `admin` and `stats_log`; `metrics`; `client`; `app` and the binary on top.
//!
//! Message flow: accept → `client::login` (SSLRequest answered 'S' and TLS when
//! client_tls_sslmode allows it, else 'N'; StartupMessage, auth, ParameterStatus +
//! BackendKeyData + ReadyForQuery) → `client::relay` loop: read a request, `Pool::checkout`
//! (idle server, new server under pool_size, FIFO wait, reserve pool), sync tracked
//! parameters, relay both ways parsing only headers, release at ReadyForQuery 'I' in
//! transaction mode.

#![warn(unreachable_pub)]
pub mod admin;
pub mod app;
pub mod auth;
pub(crate) mod boxed;
pub(crate) mod cancel;
pub mod client;
pub(crate) mod clients;
pub mod config;
pub(crate) mod error;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod pool;
pub mod prepared;
pub mod proto;
pub mod reload;
pub mod server;
pub mod shared;
pub(crate) mod snapshot;
pub mod sql;
pub(crate) mod stats_log;
pub mod systemd;
