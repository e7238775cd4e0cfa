//! What a PM2 user types: PM2's verbs and its program-wide flags (commander's, so any
//! flag goes with any verb), parsed by clap into types of their own.

use std::ffi::OsString;

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pm2",
    about = "PM2's command line, served by corral's daemon (`corral --help` for corral's own).",
    disable_version_flag = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Pm2Cli {
    #[command(subcommand)]
    pub verb: Verb,
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start scripts, programs or config files (or restart the apps they name).
    Start(Targets),
    Stop(Targets),
    Restart(Targets),
    /// Replace each worker, new one first (corral's reload drops no connection).
    Reload(Targets),
    #[command(visible_alias = "del")]
    Delete(Targets),
    #[command(visible_aliases = ["ls", "l", "ps", "status"])]
    List,
    Jlist,
    Prettylist,
    #[command(visible_aliases = ["desc", "info", "show"])]
    Describe {
        target: String,
    },
    /// Set restart counters back to zero.
    Reset {
        target: String,
    },
    /// Pids of an app's processes (every process without a name).
    Pid {
        target: Option<String>,
    },
    /// Write a line to a process's standard input.
    Send {
        target: String,
        line: String,
    },
    /// Follow a process's output and send it each line typed (until end of input).
    Attach {
        target: String,
        /// What ends each line sent (default: a newline).
        separator: Option<String>,
    },
    #[command(name = "sendSignal")]
    SendSignal {
        signal: String,
        target: String,
    },
    Scale {
        target: String,
        count: String,
    },
    #[command(visible_alias = "dump")]
    Save,
    Resurrect,
    Kill,
    Ping,
    Logs {
        target: Option<String>,
        #[arg(long, default_value_t = 15)]
        lines: usize,
        #[arg(long)]
        nostream: bool,
        #[arg(long)]
        err: bool,
        #[arg(long)]
        out: bool,
        #[arg(long)]
        json: bool,
    },
    Flush {
        target: Option<String>,
    },
    #[command(name = "reloadLogs")]
    ReloadLogs,
    Monit,
    Env {
        target: String,
    },
    #[command(name = "startOrRestart")]
    StartOrRestart {
        file: String,
    },
    #[command(name = "startOrReload")]
    StartOrReload {
        file: String,
    },
    #[command(name = "startOrGracefulReload")]
    StartOrGracefulReload {
        file: String,
    },
    /// Move the running daemon to this binary in place (apps keep running).
    #[command(name = "updatePM2", visible_alias = "update")]
    Update,
    /// Write a sample ecosystem.config.js.
    #[command(visible_alias = "ecosystem")]
    Init {
        mode: Option<String>,
    },
    /// PM2's own services (PM2 Plus, modules, deploy): not corral's.
    #[command(external_subcommand)]
    Other(Vec<OsString>),
}

#[derive(Debug, Args)]
pub struct Targets {
    /// Scripts, config files, names, ids, namespaces, /regexes/ or `all` (`-`: a config
    /// on standard input).
    pub targets: Vec<String>,
    /// Arguments for the app(s).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// PM2's program-wide flags, with PM2's spellings and value forms (numbers of
/// milliseconds, where PM2 takes them).
#[derive(Debug, Args, Default)]
pub struct Flags {
    #[arg(short = 'v', long = "version", global = true, action = ArgAction::SetTrue)]
    pub version: bool,
    #[arg(short, long, global = true)]
    pub silent: bool,
    #[arg(short, long, global = true)]
    pub name: Option<String>,
    #[arg(short = 'm', long, global = true)]
    pub mini_list: bool,
    #[arg(long, global = true)]
    pub interpreter: Option<String>,
    #[arg(long, global = true, allow_hyphen_values = true)]
    pub interpreter_args: Option<String>,
    #[arg(long, global = true, allow_hyphen_values = true)]
    pub node_args: Option<String>,
    #[arg(short, long, global = true)]
    pub output: Option<String>,
    #[arg(short, long, global = true)]
    pub error: Option<String>,
    /// `-l` alone: PM2's default file, NAME.log in the logs directory.
    #[arg(short, long, global = true, num_args = 0..=1, default_missing_value = "")]
    pub log: Option<String>,
    #[arg(long, global = true)]
    pub log_type: Option<String>,
    #[arg(long, global = true)]
    pub log_date_format: Option<String>,
    #[arg(long, global = true)]
    pub time: bool,
    #[arg(long, global = true)]
    pub disable_logs: bool,
    #[arg(long, global = true)]
    pub env: Option<String>,
    #[arg(short = 'a', long, global = true)]
    pub update_env: bool,
    #[arg(short, long, global = true)]
    pub force: bool,
    #[arg(short, long, global = true, allow_hyphen_values = true)]
    pub instances: Option<String>,
    #[arg(long, global = true)]
    pub parallel: Option<String>,
    #[arg(long, global = true)]
    pub shutdown_with_message: bool,
    #[arg(short, long, global = true)]
    pub pid: Option<String>,
    #[arg(short, long, global = true)]
    pub kill_timeout: Option<String>,
    #[arg(long, global = true)]
    pub listen_timeout: Option<String>,
    #[arg(long, global = true)]
    pub max_memory_restart: Option<String>,
    #[arg(long, global = true)]
    pub restart_delay: Option<String>,
    #[arg(long, global = true)]
    pub exp_backoff_restart_delay: Option<String>,
    #[arg(short = 'x', long, global = true)]
    pub execute_command: bool,
    #[arg(long, global = true)]
    pub max_restarts: Option<u32>,
    #[arg(short, long, global = true)]
    pub user: Option<String>,
    #[arg(long, global = true)]
    pub uid: Option<String>,
    #[arg(long, global = true)]
    pub gid: Option<String>,
    #[arg(long, global = true)]
    pub namespace: Option<String>,
    #[arg(long, global = true)]
    pub cwd: Option<String>,
    #[arg(short = 'c', long, visible_alias = "cron-restart", global = true)]
    pub cron: Option<String>,
    #[arg(long, global = true)]
    pub only: Option<String>,
    #[arg(long, global = true)]
    pub wait_ready: bool,
    #[arg(long, global = true)]
    pub merge_logs: bool,
    /// `--watch` alone watches the app's directory.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "")]
    pub watch: Option<Vec<String>>,
    #[arg(long, global = true)]
    pub ignore_watch: Vec<String>,
    #[arg(long, global = true)]
    pub watch_delay: Option<String>,
    #[arg(long, global = true)]
    pub no_autorestart: bool,
    #[arg(long, global = true, num_args = 1..)]
    pub stop_exit_codes: Vec<u8>,
    #[arg(long, global = true)]
    pub sort: Option<String>,
    #[arg(long, global = true)]
    pub no_daemon: bool,
    #[arg(long, global = true)]
    pub attach: bool,
    /// Features corral has no counterpart of, which these flags turn off: accepted.
    #[arg(long, global = true)]
    pub no_vizion: bool,
    #[arg(long, global = true)]
    pub no_automation: bool,
    #[arg(long, global = true)]
    pub no_pmx: bool,
    #[arg(long, global = true)]
    pub no_treekill: bool,
    #[arg(long, global = true)]
    pub no_color: bool,
    #[arg(long, global = true)]
    pub no_autostart: bool,
    #[arg(long, global = true)]
    pub source_map_support: bool,
    #[arg(long, global = true)]
    pub disable_source_map_support: bool,
    /// PM2 Plus monitoring: refused.
    #[arg(long, global = true)]
    pub trace: bool,
    #[arg(long, global = true)]
    pub disable_trace: bool,
    #[arg(long, global = true)]
    pub v8: bool,
    #[arg(long, global = true)]
    pub event_loop_inspector: bool,
    #[arg(long, global = true)]
    pub deep_monitoring: bool,
    #[arg(long, global = true)]
    pub filter_env: Vec<String>,
    #[arg(long, global = true)]
    pub ext: Option<String>,
}

impl Flags {
    /// Flags corral can't honour, each with why.
    pub fn refused(&self) -> Option<String> {
        let why = if self.uid.is_some() || self.gid.is_some() {
            "--uid/--gid: corral does not switch users yet; start the daemon as that user"
        } else if self.trace || self.v8 || self.event_loop_inspector || self.deep_monitoring {
            "--trace, --v8, --event-loop-inspector and --deep-monitoring feed PM2 Plus, which corral does not talk to; `corral daemon --metrics` serves Prometheus metrics"
        } else if self.no_daemon {
            "--no-daemon: run `corral run -i N -- COMMAND` to keep an app in the foreground"
        } else if self.no_treekill {
            "--no-treekill: corral always stops a worker's whole process group"
        } else if self.ext.is_some() {
            "--ext: corral's --watch takes directories and --ignore-watch patterns, not extensions"
        } else if !self.filter_env.is_empty() {
            "--filter-env: corral has no filter of the inherited environment yet; leave the variables out of the shell that runs pm2"
        } else {
            return None;
        };
        Some(format!("corral can't honour {why}"))
    }
}
