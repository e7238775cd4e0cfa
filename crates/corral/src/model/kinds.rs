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

/// What a worker reads as its standard input (`--stdin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StdinMode {
    /// `/dev/null`: end-of-file at once.
    #[default]
    Null,
    /// A pipe corral holds open and writes to on `corral input` (`pm2 send`).
    Pipe,
}

/// Whether workers get corral's bind shim preloaded (`--bind-shim`, `bind_shim.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BindShim {
    /// For runtimes whose servers bind their own socket (Bun, Deno).
    #[default]
    Auto,
    /// For every worker: any dynamically linked server.
    On,
    Off,
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
