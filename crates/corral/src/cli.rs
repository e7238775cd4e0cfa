//! What the user typed (clap), and its validation into an [`AppSpec`].

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use corral_core::dispatch::Balance;
use corral_core::restart::RestartPolicy;
use corral_core::spec::{HealthPolicy, Instances, ListenSpec, ReadyPolicy, StopPolicy};
use corral_core::AppSpec;
use corral_proto::env::WORKERS;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::values;

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "Run a server on every core; restart, reload and stop it without dropping a connection."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command as N workers in the foreground, sharing the listeners corral binds.
    ///
    /// Signals: TERM/INT stop gracefully (a second one kills), HUP/USR2 reload one
    /// worker at a time, TTIN/TTOU add/remove a worker, USR1 is passed on to workers.
    #[command(after_help = "Example:\n  corral run --listen 3000 -i max -- node server.js")]
    Run(RunArgs),
    /// Start an app in the background daemon (started on demand), as `pm2 start`.
    ///
    /// The interpreter comes from the extension: .js/.mjs/.cjs node, .py python3,
    /// .rb ruby, .sh bash; anything else is executed. Arguments for the app go after `--`.
    #[command(after_help = "Example:\n  corral start app.js -i max --listen 3000 -- --verbose")]
    Start(StartArgs),
    /// List apps and their workers.
    #[command(visible_aliases = ["list", "status"])]
    Ls(ListArgs),
    /// `ls --json` (PM2's jlist).
    Jlist,
    /// `ls --json`, indented (PM2's prettylist).
    Prettylist,
    /// Start a config file's apps that are not running; reload the others with the
    /// file's settings (PM2's startOrReload).
    #[command(name = "startOrReload", visible_alias = "start-or-reload")]
    StartOrReload(FileArgs),
    /// The same, restarting the running apps.
    #[command(name = "startOrRestart", visible_alias = "start-or-restart")]
    StartOrRestart(FileArgs),
    /// The same as startOrReload (every corral reload is graceful).
    #[command(
        name = "startOrGracefulReload",
        visible_alias = "start-or-graceful-reload"
    )]
    StartOrGracefulReload(FileArgs),
    /// Set an app's restart counters (or `all` apps') back to zero.
    Reset(Target),
    /// Reopen every log file, after an external logrotate moved them.
    #[command(name = "reloadLogs", visible_alias = "reload-logs")]
    ReloadLogs,
    /// Versions, the daemon's state and its recent messages, for a bug report.
    Report,
    /// Write a commented starter config file (ecosystem.config.js, or corral.toml).
    #[command(visible_alias = "ecosystem")]
    Init(InitArgs),
    /// Remove the unit `corral startup --install` wrote.
    Unstartup(StartupArgs),
    /// Print a shell completion script: `corral completions bash > /etc/bash_completion.d/corral`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `corral man | man -l -`.
    Man,
    /// Stop an app (or `all`); it stays listed until deleted.
    Stop(Target),
    /// Stop and start an app again (or `all`).
    Restart(Target),
    /// Replace an app's workers one at a time, without dropping a connection (or `all`).
    Reload(Target),
    /// Stop an app (or `all`) and forget it.
    Delete(Target),
    /// Set the number of workers: N, +N or -N.
    Scale(ScaleArgs),
    /// Show (and follow) the output of an app's workers.
    Logs(LogsArgs),
    /// Send a signal to an app's workers (`app`) or one worker (`app:slot`).
    Signal(SignalArgs),
    /// Send a JSON message to every worker of an app.
    Send(SendArgs),
    /// Show an app's settings, workers and environment (secrets masked).
    Describe(DescribeArgs),
    /// Show the environment an app's workers get (secrets masked).
    Env(DescribeArgs),
    /// Empty the log files of an app (or `all`).
    Flush(Target),
    /// Remember the running apps for `corral resurrect`.
    Save,
    /// Start the apps remembered by `corral save`.
    Resurrect,
    /// Check that the daemon answers.
    Ping,
    /// Stop every app gracefully, then the daemon.
    Kill,
    /// Watch apps and workers live: CPU, memory, restarts, output; keys to reload, restart, scale.
    Monit,
    /// Print (or install) a service unit that starts corral with the machine.
    Startup(StartupArgs),
    /// Run the daemon in the foreground (the CLI starts it on demand).
    #[command(hide = true)]
    Daemon(DaemonArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Script or program to run.
    #[arg(value_name = "SCRIPT")]
    pub script: OsString,

    #[command(flatten)]
    pub app: AppOptions,

    /// Program that runs the script [default: from its extension; `none` runs it directly]
    #[arg(long, value_name = "PROGRAM")]
    pub interpreter: Option<String>,

    /// Arguments for the app.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Start the apps saved by `corral save`, then tell systemd we are ready (Type=notify).
    #[arg(long)]
    pub resurrect: bool,

    #[command(flatten)]
    pub observe: ObserveArgs,

    /// How daemon.log is written: `text` ([corral] lines), or `json`: one object per
    /// line with time, app, kind, the event's fields and its message.
    #[arg(
        long,
        value_name = "text|json",
        env = "CORRAL_DAEMON_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: DaemonLogFormat,
}

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// The init system (only systemd for now).
    #[arg(value_parser = ["systemd"])]
    pub init: String,
    /// Write the unit file instead of printing it.
    #[arg(long)]
    pub install: bool,
    /// A user unit (~/.config/systemd/user) instead of a system one.
    #[arg(long)]
    pub user: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Target {
    /// App name, its id (see `ls`), `all`, or a config file (its apps).
    pub target: String,
    /// With a config file: the profile whose `env_PROFILE` applies.
    #[arg(long = "env", value_name = "PROFILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The config file.
    pub file: PathBuf,
    /// The profile whose `env_PROFILE` applies (PM2's `--env production`).
    #[arg(long = "env", value_name = "PROFILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Write corral.toml instead of ecosystem.config.js.
    #[arg(long)]
    pub toml: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    pub name: String,
    /// N, +N or -N.
    #[arg(allow_hyphen_values = true)]
    pub change: crate::daemon::protocol::ScaleChange,
    /// Allow more than 4 workers per usable CPU.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// App name (all apps when left out).
    pub app: Option<String>,
    /// How many past lines to show per file.
    #[arg(long, default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    pub follow: bool,
    /// Only standard error.
    #[arg(long, conflicts_with = "out")]
    pub err: bool,
    /// Only standard output.
    #[arg(long)]
    pub out: bool,
    /// One JSON object per line: app, slot, stream, line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    #[arg(value_parser = parse_signal)]
    pub signal: Signal,
    /// `app` or `app:slot`.
    pub target: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    pub name: String,
    /// A JSON value, e.g. '{"reload_config": true}'.
    pub json: String,
}

/// The options of an app, shared by `corral run`, `corral start`, config files (serde,
/// with PM2's key names as aliases), the control socket and the dump: one model, its
/// defaults those of the flags.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct AppOptions {
    /// Address to listen on, passed to workers as fd 3, 4, ... (systemd socket activation):
    /// PORT, HOST:PORT, [IPV6]:PORT or unix:PATH, optionally NAME=ADDR. Repeatable.
    #[arg(short, long = "listen", value_name = "ADDR")]
    #[serde(with = "values::text_list")]
    pub listen: Vec<ListenSpec>,

    /// Number of workers: N, `max` (one per usable CPU) or -N (usable CPUs less N).
    /// The WORKERS environment variable overrides it.
    #[arg(
        short,
        long,
        value_name = "N|max|-N",
        default_value = "max",
        allow_hyphen_values = true
    )]
    #[serde(with = "values::text")]
    pub instances: Instances,

    /// Allow more than 4 workers per usable CPU (at most 4096).
    #[arg(long)]
    pub force: bool,

    /// App name, shown in output and passed as CORRAL_APP [default: from the command]
    #[arg(short, long)]
    pub name: Option<String>,

    /// A group of apps that commands can name at once (`corral restart NAMESPACE`), as
    /// PM2's `namespace`.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,

    /// Extra environment variable for the workers (KEY=VALUE), or, with a config file,
    /// the profile whose `env_PROFILE` applies (PM2's `--env production`). Repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE|PROFILE", value_parser = parse_env)]
    #[serde(skip)]
    pub env_args: Vec<EnvArg>,

    /// The workers' declared environment (the `KEY=VALUE`s of `--env`, a config file's
    /// `env` and profile), in order; later values win.
    #[arg(skip)]
    #[serde(with = "values::env")]
    pub env: Vec<(String, String)>,

    /// Read KEY=VALUE lines from this file (`#` comments, `export` and quotes allowed);
    /// `--env` wins over it. Repeatable.
    #[arg(long, value_name = "FILE")]
    #[serde(with = "values::paths")]
    pub env_file: Vec<PathBuf>,

    /// Working directory of the workers.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// When a worker counts as ready: `notify` (it sends READY=1 to NOTIFY_SOCKET) or
    /// `delay:DURATION` (after that long, or at READY=1 if sooner).
    #[arg(long, value_name = "notify|delay:DURATION", default_value = "delay:1s", value_parser = parse_ready)]
    #[serde(with = "values::text", alias = "wait_ready")]
    pub ready: ReadyArg,

    /// With --ready notify: how long a worker may take to send READY=1 before it is stopped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub ready_timeout: Duration,

    /// Take a worker that has not said it is ready after this long as ready all the same
    /// (PM2's `listen_timeout`); `--ready-timeout` stops such a worker instead.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(with = "values::opt_duration")]
    pub listen_timeout: Option<Duration>,

    /// How long a replacement must stay up after it is ready before the worker it
    /// replaces is drained; if it exits sooner, the reload is aborted.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub settle: Duration,

    /// Signal that asks a worker to drain and exit.
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = parse_signal)]
    #[serde(with = "values::text")]
    pub kill_signal: Signal,

    /// Ask workers to drain with a message on their channel (`CORRAL_SHUTDOWN`, and
    /// `'shutdown'` for Node apps written for PM2) instead of the kill signal.
    #[arg(long)]
    pub shutdown_with_message: bool,

    /// How long a stopping worker may drain before its process group gets SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub kill_timeout: Duration,

    /// Delay before restarting a crashed worker; doubles with each crash in a row. The
    /// first crash after a stable run restarts at once; the delay applies from the next
    /// one, until a worker stays up 30s.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    #[serde(with = "values::duration", alias = "exp_backoff_restart_delay")]
    pub restart_delay: Duration,

    /// Upper bound of the restart delay.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub max_restart_delay: Duration,

    /// A worker that exits sooner than this after starting has crashed unstably.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub min_uptime: Duration,

    /// Start each line of worker output with the time (RFC 3339, UTC), in logs and on
    /// the terminal (PM2's `--time` / `log_date_format`).
    #[arg(long)]
    pub time: bool,

    /// Stamp lines with this format instead (PM2's `log_date_format`, dayjs tokens:
    /// "YYYY-MM-DD HH:mm:ss Z"), in local time; implies --time.
    #[arg(long, value_name = "FORMAT")]
    pub log_date_format: Option<String>,

    /// `json`: one JSON object per line: worker output as time, app, slot, pid, stream,
    /// line; with `corral run`, corral's own events too (time, app, kind, its fields,
    /// message). `pm2-json`: worker output as PM2's `log_type: json` writes it (message,
    /// timestamp, type, process_id, app_name).
    #[arg(long, value_name = "text|json|pm2-json", default_value = "text")]
    #[serde(with = "values::text")]
    pub log_format: LogFormat,

    /// Write the workers' standard output here (daemon apps; per slot as NAME-SLOT.EXT
    /// unless --merge-logs) instead of $CORRAL_HOME/logs.
    #[arg(long, value_name = "FILE")]
    #[serde(alias = "out", alias = "output")]
    pub out_file: Option<PathBuf>,

    /// Also write both streams of every slot here (PM2's `log_file`).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// The same for standard error.
    #[arg(long, value_name = "FILE")]
    #[serde(alias = "err_file", alias = "error", alias = "err")]
    pub error_file: Option<PathBuf>,

    /// One log file per stream for all slots (daemon apps).
    #[arg(long)]
    #[serde(alias = "combine_logs")]
    pub merge_logs: bool,

    /// Don't restart workers that exit (PM2's `autorestart: false`).
    #[arg(long = "no-autorestart", action = clap::ArgAction::SetFalse)]
    pub autorestart: bool,

    /// A worker that exits with this code is not restarted (PM2's `stop_exit_codes`).
    /// Repeatable.
    #[arg(long = "stop-exit-code", value_name = "CODE")]
    #[serde(alias = "stop_exit_code", deserialize_with = "values::codes")]
    pub stop_exit_codes: Vec<u8>,

    /// Unstable crashes in a row after which corral stops restarting a worker.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_restarts: u32,

    /// Kill and replace a ready worker that sends no WATCHDOG=1 for this long
    /// (passed to workers as WATCHDOG_USEC).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(with = "values::opt_duration")]
    pub watchdog: Option<Duration>,

    /// How connections reach workers: `shared` (every worker accepts; the kernel picks),
    /// `round-robin`, `least-loaded` or `sticky` (same client IP, same worker), handed
    /// over by corral to workers that use corral-worker. `auto`: round-robin for those,
    /// shared for the rest.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    #[serde(with = "values::text")]
    pub balance: Balance,

    /// Replace a worker gracefully (replacement first) when its process tree uses more
    /// memory than this: 512M, 1G, 300MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(with = "values::opt_size", alias = "max_memory_restart")]
    pub max_memory: Option<u64>,

    /// Kill and replace a worker that announced heartbeats and sent none for this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub heartbeat_timeout: Duration,

    /// Reload when files under DIR change (default: the working directory). Repeatable.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    #[serde(with = "values::watch")]
    pub watch: Vec<PathBuf>,

    /// With --watch: ignore paths with this component, or ending like `*.log`. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    #[serde(with = "values::strings")]
    pub ignore_watch: Vec<String>,

    /// Reload on a schedule, as a cron expression: "0 3 * * *" (03:00 every day).
    #[arg(long, value_name = "CRON")]
    #[serde(alias = "cron")]
    pub cron_restart: Option<String>,

    /// `cluster`: a Node app's `listen(PORT)` on a port of no --listen is bound by corral
    /// once and shared by every worker (Node's cluster module, PM2's cluster mode);
    /// `fork`: each worker binds for itself.
    #[arg(long, value_name = "cluster|fork", default_value = "cluster")]
    #[serde(with = "values::text")]
    pub exec_mode: ExecMode,

    /// Also pass each worker's slot (0..N-1) in this variable (PM2's `instance_var`).
    #[arg(long, value_name = "VAR")]
    pub instance_var: Option<String>,

    /// Give each worker this numeric variable plus its slot: PORT=3000 becomes 3000,
    /// 3001, ... (PM2's `increment_var`).
    #[arg(long, value_name = "VAR")]
    pub increment_var: Option<String>,

    /// Report workers whose runtime lags (late timers) more than this.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub lag_warning: Duration,
}

/// Where corral itself can be watched: Prometheus metrics and Kubernetes probes.
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// Serve /metrics (Prometheus), /livez and /readyz here, e.g. 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR", env = "CORRAL_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,

    /// /readyz answers ready when each app has this many ready workers [default: all].
    #[arg(long, value_name = "N")]
    pub min_ready: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub app: AppOptions,

    #[command(flatten)]
    pub observe: ObserveArgs,

    /// The command to run, with its arguments (put `--` before it if it has flags of its own).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

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

/// How daemon.log is written (worker output has [`LogFormat`], per app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DaemonLogFormat {
    Text,
    Json,
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

impl Default for AppOptions {
    /// The flags' defaults: the one place they are written is the clap definition.
    fn default() -> Self {
        use clap::FromArgMatches;
        let command = AppOptions::augment_args(clap::Command::new("defaults"));
        let matches = command
            .try_get_matches_from(["defaults"])
            .expect("no option is required");
        AppOptions::from_arg_matches(&matches).expect("the defaults parse")
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write a duration like 500ms, 2s or 1m"))
}

pub(crate) fn parse_ready(s: &str) -> Result<ReadyArg, String> {
    if s == "notify" {
        return Ok(ReadyArg::Notify);
    }
    match s.strip_prefix("delay:") {
        Some(d) => parse_duration(d).map(ReadyArg::Delay),
        None => Err("expected `notify` or `delay:DURATION` (for example delay:2s)".into()),
    }
}

pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal has number {n}"));
    }
    name.parse::<Signal>()
        .map_err(|_| "expected a signal name like SIGTERM, TERM, SIGINT or SIGQUIT".into())
}

/// `512M`, `1G`, `300MiB`, `1048576`: binary units, as PM2's max_memory_restart.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || "expected a size like 512M, 1G or 300MiB".to_string();
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad()),
    };
    match n.checked_mul(1 << shift) {
        Some(0) | None => Err(bad()),
        Some(bytes) => Ok(bytes),
    }
}

/// The variables of an env file: `KEY=VALUE` lines, `#` comments, an optional `export `,
/// values optionally in single or double quotes. Errors name the file and line.
pub fn read_env_file(path: &Path) -> anyhow::Result<Vec<(OsString, OsString)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --env-file {}", path.display()))?;
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!(
                "{}:{}: expected KEY=VALUE, found `{line}`",
                path.display(),
                i + 1
            );
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!(
                "{}:{}: `{key}` is not a variable name",
                path.display(),
                i + 1
            );
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open)?.strip_suffix(*close))
            .unwrap_or(value);
        vars.push((OsString::from(key), OsString::from(unquoted)));
    }
    Ok(vars)
}

/// `KEY=VALUE`, or a bare profile name for a config file's `env_<profile>` (PM2's
/// `--env production`).
fn parse_env(s: &str) -> Result<EnvArg, String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(EnvArg::Var(key.into(), value.into())),
        None if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Ok(EnvArg::Profile(s.into()))
        }
        _ => Err("expected KEY=VALUE (or a profile name with a config file)".into()),
    }
}

impl AppOptions {
    /// How lines of worker output are written.
    pub fn line_format(&self) -> crate::line_format::LineFormat {
        let json = match self.log_format {
            LogFormat::Text => None,
            LogFormat::Json => Some(crate::line_format::Json::Corral),
            LogFormat::Pm2Json => Some(crate::line_format::Json::Pm2),
        };
        crate::line_format::LineFormat::new(self.time, self.log_date_format.as_deref(), json)
    }

    /// The validated reload triggers; relative paths are taken from the app's cwd or `cwd`.
    pub fn triggers(&self, cwd: &Path) -> anyhow::Result<crate::triggers::Triggers> {
        let base = self.cwd.as_deref().unwrap_or(cwd);
        crate::triggers::Triggers::new(
            &self.watch,
            &self.ignore_watch,
            self.cron_restart.as_deref(),
            base,
        )
    }

    /// Moves the `--env KEY=VALUE`s into the declared environment, where no config file
    /// is there to take a profile (`--env NAME`).
    pub fn take_env_vars(&mut self) -> anyhow::Result<()> {
        if let Some(profile) = self.take_env_args() {
            bail!(
                "--env {profile} selects a profile (env_{profile}) of a config file; to set a variable, write --env KEY=VALUE"
            );
        }
        Ok(())
    }

    /// Moves the `--env KEY=VALUE`s into the declared environment; returns the profile
    /// asked for with `--env NAME`, if any.
    pub fn take_env_args(&mut self) -> Option<String> {
        let mut profile = None;
        for arg in std::mem::take(&mut self.env_args) {
            match arg {
                EnvArg::Var(key, value) => self.env.push((key, value)),
                EnvArg::Profile(name) => profile = Some(name),
            }
        }
        profile
    }
}

/// The interpreter for a script, from its extension.
pub fn interpreter_for(script: &Path) -> Option<&'static str> {
    match script.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => Some("node"),
        Some("py") => Some("python3"),
        Some("rb") => Some("ruby"),
        Some("sh") => Some("bash"),
        Some("php") => Some("php"),
        Some("pl") => Some("perl"),
        _ => None,
    }
}

impl StartArgs {
    /// The full command: interpreter (from the extension), the script made absolute
    /// against `cwd`, then the app's arguments.
    pub fn command(&self, cwd: &Path) -> Vec<OsString> {
        resolve_command(
            &self.script,
            self.interpreter.as_deref(),
            &[],
            &self.args,
            cwd,
        )
    }
}

/// The command that runs `script`: its interpreter (`interpreter`, or from the extension;
/// `none` for none) with `interpreter_args`, the script made absolute against `cwd`,
/// then `args`.
pub fn resolve_command(
    script: &OsStr,
    interpreter: Option<&str>,
    interpreter_args: &[String],
    args: &[OsString],
    cwd: &Path,
) -> Vec<OsString> {
    let path = Path::new(script);
    let mut command = Vec::new();
    let interpreter = match interpreter {
        Some("none") => None,
        Some(program) => Some(program),
        None => interpreter_for(path),
    };
    if let Some(interpreter) = interpreter {
        command.push(OsString::from(interpreter));
        command.extend(interpreter_args.iter().map(OsString::from));
    }
    let is_path = path.components().count() > 1 || cwd.join(path).exists() || interpreter.is_some();
    if is_path && path.is_relative() {
        command.push(cwd.join(path).into_os_string());
    } else {
        command.push(script.to_owned());
    }
    command.extend(args.iter().cloned());
    command
}

/// Programs whose first non-flag argument names the app better than they do.
const INTERPRETERS: &[&str] = &[
    "node", "nodejs", "bun", "deno", "python", "python3", "ruby", "php", "perl", "bash", "sh",
    "java",
];

/// App names become file names and command targets: `[A-Za-z0-9._-]`, not starting with
/// a dot, and not a word the commands give a meaning (`all`).
pub fn check_app_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("--name may not be empty");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        bail!("invalid app name `{name}`: `{bad}` is not allowed; use letters, digits, `.`, `_` and `-`");
    }
    if name.starts_with('.') {
        bail!("invalid app name `{name}`: it may not start with `.`");
    }
    if name.len() > 64 {
        bail!("invalid app name `{name}`: at most 64 characters");
    }
    if name == "all" {
        bail!("invalid app name `all`: commands use `all` for every app; pick another --name");
    }
    Ok(())
}

/// A name made from a command's file name: characters an app name can't have become `-`.
pub fn name_from(stem: &str) -> String {
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = name.trim_start_matches(['.', '-']);
    if name.is_empty() || name == "all" {
        "app".into()
    } else {
        name.into()
    }
}

fn stem(arg: &OsStr) -> Option<String> {
    Path::new(arg)
        .file_stem()
        .map(|s| name_from(&s.to_string_lossy()))
        .filter(|s| !s.is_empty())
}

/// `node server.js` → `server`; `./bin/api --port 1` → `api`.
fn default_name(command: &[OsString]) -> String {
    let program = command
        .first()
        .and_then(|p| stem(p))
        .unwrap_or_else(|| "app".into());
    if INTERPRETERS.contains(&program.as_str()) {
        if let Some(script) = command[1..]
            .iter()
            .find(|a| !a.to_string_lossy().starts_with('-'))
            .and_then(|a| stem(a))
        {
            return script;
        }
    }
    program
}

impl RunArgs {
    /// Validates the typed arguments into a spec. `inherited` is corral's own environment;
    /// `cpus` the CPUs this process may use.
    pub fn into_spec(
        self,
        inherited: Vec<(OsString, OsString)>,
        cpus: usize,
    ) -> anyhow::Result<AppSpec> {
        self.app.into_spec(self.command, inherited, cpus)
    }
}

impl AppOptions {
    /// Validates the options and `command` into a spec.
    pub fn into_spec(
        mut self,
        command: Vec<OsString>,
        inherited: Vec<(OsString, OsString)>,
        cpus: usize,
    ) -> anyhow::Result<AppSpec> {
        self.take_env_vars()?;
        let instances = match lookup(&inherited, WORKERS) {
            Some(value) if !value.is_empty() => value
                .to_str()
                .unwrap_or("(not UTF-8)")
                .parse::<Instances>()
                .with_context(|| {
                    format!(
                        "invalid WORKERS environment variable {value:?} (it overrides --instances; unset it or fix it)"
                    )
                })?,
            _ => self.instances,
        };
        if let Some(flag) = command.first().and_then(|c| c.to_str()) {
            if flag.starts_with('-') {
                bail!("unexpected option `{flag}`: corral's options go before the command (see `corral run --help`)");
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.is_dir() {
                bail!("--cwd {}: no such directory", cwd.display());
            }
        }
        let instances = instances.resolve(cpus);
        corral_core::spec::check_worker_count(instances, cpus, self.force)?;
        let name = match self.name {
            Some(name) => {
                check_app_name(&name)?;
                name
            }
            None => default_name(&command),
        };
        if self.max_restart_delay < self.restart_delay {
            bail!(
                "--max-restart-delay ({}) is shorter than --restart-delay ({})",
                humantime::format_duration(self.max_restart_delay),
                humantime::format_duration(self.restart_delay)
            );
        }
        let mut env = inherited;
        for file in &self.env_file {
            let file = match &self.cwd {
                Some(cwd) => cwd.join(file),
                None => file.clone(),
            };
            env.extend(read_env_file(&file)?);
        }
        env.extend(
            self.env
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        Ok(AppSpec {
            name,
            command,
            cwd: self.cwd,
            env,
            instances,
            listen: self.listen,
            ready: match (self.ready, self.listen_timeout) {
                (ReadyArg::Notify, None) => ReadyPolicy::Notify {
                    timeout: self.ready_timeout,
                    assume_ready: false,
                },
                (ReadyArg::Notify, Some(timeout)) => ReadyPolicy::Notify {
                    timeout,
                    assume_ready: true,
                },
                (ReadyArg::Delay(_), Some(delay)) | (ReadyArg::Delay(delay), None) => {
                    ReadyPolicy::Delay { delay }
                }
            },
            settle: self.settle,
            restart: RestartPolicy {
                delay: self.restart_delay,
                max_delay: self.max_restart_delay,
                min_uptime: self.min_uptime,
                max_restarts: self.max_restarts,
                autorestart: self.autorestart,
                stop_exit_codes: self.stop_exit_codes.iter().copied().collect(),
                ..RestartPolicy::default()
            },
            stop: StopPolicy {
                signal: self.kill_signal,
                kill_timeout: self.kill_timeout,
                message: self.shutdown_with_message,
            },
            watchdog: self.watchdog,
            die_with_supervisor: true,
            balance: self.balance,
            health: HealthPolicy {
                heartbeat_timeout: self.heartbeat_timeout,
                lag_warning: self.lag_warning,
                max_memory: self.max_memory,
            },
            asked_ports: self.exec_mode == ExecMode::Cluster,
            per_slot: corral_core::spec::PerSlotEnv {
                instance_var: self.instance_var,
                increment_var: self.increment_var,
            },
        })
    }
}

fn lookup<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> RunArgs {
        let mut argv = vec!["corral", "run"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn names_the_app_after_the_script_or_program() {
        assert_eq!(
            default_name(&os(&["node", "--inspect", "srv/server.js"])),
            "server"
        );
        assert_eq!(
            default_name(&os(&["./target/release/api", "--port", "1"])),
            "api"
        );
        assert_eq!(default_name(&os(&["python3"])), "python3");
    }

    #[test]
    fn workers_env_overrides_instances() {
        let env = vec![("WORKERS".into(), "3".into())];
        let spec = args(&["-i", "1", "--", "true"]).into_spec(env, 8).unwrap();
        assert_eq!(spec.instances, 3);
        let spec = args(&["-i", "-1", "true"]).into_spec(vec![], 8).unwrap();
        assert_eq!(spec.instances, 7);
    }

    #[test]
    fn bad_workers_env_names_the_variable() {
        let env = vec![("WORKERS".into(), "lots".into())];
        let err = args(&["true"]).into_spec(env, 8).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("invalid WORKERS environment variable"),
            "{err:#}"
        );
    }

    #[test]
    fn flags_after_the_command_belong_to_it() {
        let a = args(&["-i", "2", "node", "-e", "x"]);
        assert_eq!(a.command, os(&["node", "-e", "x"]));
    }

    #[test]
    fn start_finds_the_interpreter_and_makes_the_script_absolute() {
        let cwd = Path::new("/srv/app");
        let start = |line: &[&str]| {
            let mut argv = vec!["corral", "start"];
            argv.extend_from_slice(line);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Start(args) => args,
                other => panic!("parsed as {other:?}"),
            }
        };
        let a = start(&["server.js", "-i", "2", "--", "--port", "1"]);
        assert_eq!(
            a.command(cwd),
            os(&["node", "/srv/app/server.js", "--port", "1"])
        );
        assert_eq!(a.app.instances, Instances::Count(2));
        assert_eq!(
            start(&["job.py"]).command(cwd),
            os(&["python3", "/srv/app/job.py"])
        );
        assert_eq!(
            start(&["./bin/api"]).command(cwd),
            os(&["/srv/app/./bin/api"])
        );
        assert_eq!(start(&["redis-server"]).command(cwd), os(&["redis-server"]));
    }

    #[test]
    fn env_files_take_comments_exports_and_quotes_and_name_bad_lines() {
        let dir = std::env::temp_dir().join(format!("corral-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(
            &path,
            "# db\nexport DB_URL=\"postgres://x\"\nMODE='prod'\n\nEMPTY=\n",
        )
        .unwrap();
        let vars = read_env_file(&path).unwrap();
        let pairs: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [("DB_URL", "postgres://x"), ("MODE", "prod"), ("EMPTY", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        std::fs::write(&path, "A=1\nnot a line\n").unwrap();
        let err = read_env_file(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(".env:2: expected KEY=VALUE, found `not a line`"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("300MiB"), Ok(300 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0M").is_err());
        assert!(parse_size("5T").is_err());
    }

    #[test]
    fn parses_signals_in_every_spelling() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigquit"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("2"), Ok(Signal::SIGINT));
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
