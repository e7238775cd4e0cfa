//! How reports serialize their durations (milliseconds) and signals (names), for
//! machine-readable output (`--log-format json`).

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serializer;

pub fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn signal<S: Serializer>(signal: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(signal.as_str())
}
