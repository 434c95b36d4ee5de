//! Integration tests: a real PostgreSQL, pgmux in-process, real clients.

mod support;

mod basic;
mod cli;
mod drivers;
mod extended;
mod faults;
mod login;
mod modes;
mod pgbench;
mod pool;
mod prepared;
