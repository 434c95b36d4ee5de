//! Integration tests: login.
