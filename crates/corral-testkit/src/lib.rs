//! Helpers for corral integration tests (see tests in crates/corral).
