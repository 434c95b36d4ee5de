//! pgmux: a PostgreSQL connection pooler.
pub mod auth;
pub mod config;
