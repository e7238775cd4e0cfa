//! The small typed values of an app's options: how readiness is judged, how output
//! lines are written, how Node's own `listen()` is treated, and what `--env` said.

use std::time::Duration;

/// When a worker counts as ready (`--ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyArg {
    Notify,
    Delay(Duration),
}

impl Default for ReadyArg {
    fn default() -> Self {
        ReadyArg::Delay(Duration::from_secs(1))
    }
}

/// How worker output lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    Pm2Json,
}

/// PM2's exec modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecMode {
    Cluster,
    Fork,
}

/// One `--env`: a variable, or the profile of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArg {
    Var(String, String),
    Profile(String),
}
