//! The typed app model: every option of an app, shared by `corral run`, `corral start`,
//! config files, the control protocol and the dump, and its validation into an [`AppSpec`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use corral_core::dispatch::Balance;
use corral_core::restart::RestartPolicy;
use corral_core::spec::{HealthPolicy, Instances, ListenSpec, ReadyPolicy, StopPolicy};
use corral_core::AppSpec;
use corral_proto::env::WORKERS;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::kinds::{BindShim, EnvArg, ExecMode, LogFormat, ReadyArg, StdinMode};
use super::names::{check_app_name, default_name};
use super::parse::{
    parse_duration, parse_env, parse_ready, parse_signal, parse_size, read_env_file,
};
use super::values;

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
    #[serde(alias = "log")]
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
    /// `reuseport` (a socket per slot, the kernel spreads connections evenly),
    /// `round-robin`, `least-loaded` or `sticky` (same client IP, same worker), handed
    /// over by corral to workers that use corral-worker. `auto`: reuseport for Node
    /// apps with no more workers than CPUs, round-robin for corral-worker, shared for
    /// the rest.
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

    /// `pipe`: each worker's standard input is a pipe that `corral input APP TEXT` writes
    /// to (PM2's `pm2 send`); `null`: it reads end-of-file from /dev/null.
    #[arg(long, value_name = "null|pipe", default_value = "null")]
    #[serde(with = "values::text")]
    pub stdin: StdinMode,

    /// `auto`: servers that bind their own socket and can't take corral's (Bun, Deno)
    /// get corral's bind shim preloaded, which makes their bind() of a port corral
    /// listens on corral's socket; `on`: every worker (any dynamically linked server);
    /// `off`: none.
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    #[serde(with = "values::text")]
    pub bind_shim: BindShim,

    /// Also pass each worker's slot (0..N-1) in this variable (PM2's `instance_var`).
    #[arg(long, value_name = "VAR")]
    pub instance_var: Option<String>,

    /// Give each worker this numeric variable plus its slot: PORT=3000 becomes 3000,
    /// 3001, ... (PM2's `increment_var`).
    #[arg(long, value_name = "VAR")]
    pub increment_var: Option<String>,

    /// Write each worker's pid to this file, per slot as NAME-SLOT.EXT, removed when the
    /// worker exits (PM2's `pid_file`).
    #[arg(long, value_name = "FILE")]
    #[serde(alias = "pid")]
    pub pid_file: Option<PathBuf>,

    /// Set by the PM2 front end (`pm2 start`): what PM2's views show of the app.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pm2_facts: Option<super::facts::Pm2Facts>,

    /// Report workers whose runtime lags (late timers) more than this.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "values::duration")]
    pub lag_warning: Duration,
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

impl AppOptions {
    /// Validates the options and `command` into a spec.
    pub fn into_spec(
        mut self,
        command: Vec<OsString>,
        inherited: Vec<(OsString, OsString)>,
        cpus: usize,
    ) -> anyhow::Result<AppSpec> {
        self.take_env_vars()?;
        let instances = workers_override(&inherited)?.unwrap_or(self.instances);
        self.check(&command)?;
        super::names::check_typescript(&command)?;
        let instances = instances.resolve(cpus);
        corral_core::spec::check_worker_count(instances, cpus, self.force)
            .map_err(|e| anyhow::anyhow!(worker_count_refused(&e)))?;
        let balance = corral_core::node::balance_for(self.balance, &command, instances, cpus);
        let name = match self.name.take() {
            Some(name) => {
                check_app_name(&name)?;
                name
            }
            None => default_name(&command),
        };
        let mut env = self.environment(inherited)?;
        let shim = match self.bind_shim {
            BindShim::Auto => crate::bind_shim::binds_itself(&command),
            BindShim::On => true,
            BindShim::Off => false,
        };
        if shim && !self.listen.is_empty() {
            crate::bind_shim::preload(&mut env)?;
        }
        Ok(AppSpec {
            name,
            command,
            cwd: self.cwd.take(),
            env,
            instances,
            listen: std::mem::take(&mut self.listen),
            ready: self.ready_policy(),
            settle: self.settle,
            restart: self.restart_policy(),
            stop: StopPolicy {
                signal: self.kill_signal,
                kill_timeout: self.kill_timeout,
                message: self.shutdown_with_message,
            },
            watchdog: self.watchdog,
            die_with_supervisor: true,
            balance,
            health: HealthPolicy {
                heartbeat_timeout: self.heartbeat_timeout,
                lag_warning: self.lag_warning,
                max_memory: self.max_memory,
            },
            asked_ports: self.exec_mode == ExecMode::Cluster,
            per_slot: corral_core::spec::PerSlotEnv {
                instance_var: self.instance_var.take(),
                increment_var: self.increment_var.take(),
            },
            stdin_pipe: self.stdin == StdinMode::Pipe,
        })
    }

    /// What can be wrong before anything is read: the command, `--cwd`, restart delays.
    fn check(&self, command: &[OsString]) -> anyhow::Result<()> {
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
        if self.max_restart_delay < self.restart_delay {
            bail!(
                "--max-restart-delay ({}) is shorter than --restart-delay ({})",
                humantime::format_duration(self.max_restart_delay),
                humantime::format_duration(self.restart_delay)
            );
        }
        Ok(())
    }

    /// The inherited environment, then each `--env-file` (relative to `--cwd`), then
    /// each `--env`: later ones win.
    fn environment(
        &mut self,
        inherited: Vec<(OsString, OsString)>,
    ) -> anyhow::Result<Vec<(OsString, OsString)>> {
        let mut env = inherited;
        for file in &self.env_file {
            let file = match &self.cwd {
                Some(cwd) => cwd.join(file),
                None => file.clone(),
            };
            env.extend(read_env_file(&file)?);
        }
        env.extend(
            std::mem::take(&mut self.env)
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        Ok(env)
    }

    fn ready_policy(&self) -> ReadyPolicy {
        match (self.ready, self.listen_timeout) {
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
        }
    }

    fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            delay: self.restart_delay,
            max_delay: self.max_restart_delay,
            min_uptime: self.min_uptime,
            max_restarts: self.max_restarts,
            autorestart: self.autorestart,
            stop_exit_codes: self.stop_exit_codes.iter().copied().collect(),
            ..RestartPolicy::default()
        }
    }
}

/// `WORKERS` from the environment corral was started with, which overrides
/// `--instances` (containers set it).
fn workers_override(inherited: &[(OsString, OsString)]) -> anyhow::Result<Option<Instances>> {
    match corral_core::spec::env_value(inherited, WORKERS) {
        Some(value) if !value.is_empty() => value
            .to_str()
            .unwrap_or("(not UTF-8)")
            .parse::<Instances>()
            .map(Some)
            .with_context(|| {
                format!(
                    "invalid WORKERS environment variable {value:?} (it overrides --instances; unset it or fix it)"
                )
            }),
        _ => Ok(None),
    }
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

impl ObserveArgs {
    /// `--metrics`: the endpoint, serving from now on; `say` hears where.
    pub async fn serve(
        &self,
        say: impl Fn(&str),
    ) -> anyhow::Result<Option<corral_metrics::Metrics>> {
        let Some(addr) = self.metrics else {
            return Ok(None);
        };
        let metrics = corral_metrics::Metrics::spawn(self.min_ready);
        let local = corral_metrics::serve(addr, metrics.clone())
            .await
            .with_context(|| format!("cannot serve --metrics on {addr}"))?;
        say(&format!(
            "metrics on http://{local}/metrics, probes on /livez and /readyz"
        ));
        Ok(Some(metrics))
    }
}

/// A refused worker count, with how to insist where insisting helps.
pub fn worker_count_refused(e: &corral_core::spec::WorkerCountError) -> String {
    match e {
        corral_core::spec::WorkerCountError::OverCeiling { .. } => {
            format!("{e}; pass --force to run that many anyway")
        }
        corral_core::spec::WorkerCountError::OverLimit { .. } => e.to_string(),
    }
}
