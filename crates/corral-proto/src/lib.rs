//! The contract between the corral supervisor and its workers: environment variables and wire formats.
//!
//! Everything a worker process can observe about corral is defined here, so that the
//! supervisor (`corral-core`) and the worker library (`corral-worker`) cannot drift apart.

pub mod channel;
pub mod control;
pub mod env;
#[cfg(unix)]
pub mod fdpass;
pub mod notify;
