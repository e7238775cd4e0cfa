//! The per-user daemon: many apps, each an engine group, behind a control socket.

pub mod holder;
mod joins;
mod journal;
mod logfile;
mod refusal;
mod reread;
mod server;
mod state;

pub use server::serve;
