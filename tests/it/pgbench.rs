//! Integration tests: pgbench.
