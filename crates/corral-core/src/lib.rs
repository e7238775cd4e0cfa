//! The corral supervisor engine: binds listeners, runs worker processes, restarts and reloads them.
//!
//! The engine has no command line and no terminal: the `corral` binary turns what the
//! user typed into an [`AppSpec`], binds its [`listen::Listener`]s, and drives
//! [`supervisor::run`], reading [`group::Report`]s and worker [`output::LogLine`]s back.

pub mod activation;
pub mod board;
pub mod channel;
pub mod cluster;
pub mod dispatch;
pub mod group;
pub mod handover;
pub mod listen;
pub mod node;
pub mod notify;
pub mod output;
pub mod process;
pub mod restart;
mod scratch;
pub mod serde_ms;
pub mod signals;
pub mod spec;
pub mod supervisor;
pub mod writer;

#[cfg(unix)]
pub mod os;

pub use spec::AppSpec;
