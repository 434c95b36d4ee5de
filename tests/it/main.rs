//! Integration tests: a real PostgreSQL, pgmux in-process, real clients.

mod support;

mod basic;
