//! Integration tests: a real PostgreSQL, pgmux in-process, real clients.

mod support;

mod abandon;
mod admin;
mod auth_query;
mod basic;
mod churn;
mod cli;
mod drivers;
mod extended;
mod faults;
mod fleet;
mod hosts;
mod lifecycle;
mod listen;
mod login;
mod metrics;
mod modes;
mod park;
mod peers;
mod pgbench;
mod pool;
mod prepared;
mod robust;
mod settings;
mod tls;
