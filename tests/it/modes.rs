//! Integration tests: modes.
