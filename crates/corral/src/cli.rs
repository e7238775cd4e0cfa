//! What the user typed: clap's types for every command. The options of an app are the
//! model's [`AppOptions`]; validation into a spec happens there.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use corral_core::AppSpec;
use corral_proto::control::ScaleChange;
use nix::sys::signal::Signal;

use crate::model::names::resolve_command;
use crate::model::parse::parse_signal;
use crate::model::{AppOptions, ObserveArgs};

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
    /// Write a line to the standard input of an app's workers (`app`) or one worker
    /// (`app:slot`); the app runs with `--stdin pipe`.
    Input(InputArgs),
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
    /// Move the running daemon, in place, to the corral binary now at the path it was
    /// started from (after a package upgrade): its apps keep running and no connection is
    /// dropped (PM2's update, without the restart).
    Update(UpdateArgs),
    /// Watch apps and workers live: CPU, memory, restarts, output; keys to reload, restart, scale.
    Monit,
    /// Print (or install) a service unit that starts corral with the machine.
    Startup(StartupArgs),
    /// Run the daemon in the foreground (the CLI starts it on demand).
    #[command(hide = true)]
    Daemon(DaemonArgs),
    /// Which hand-over this binary takes (`check`), asked before an upgrade in place.
    #[command(name = "__handover", hide = true)]
    Handover { what: String },
    /// The holder beside a daemon (started by it).
    #[command(name = "__holder", hide = true)]
    Holder,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Script, program or config file to run (or, as `corral run` takes it, the first
    /// word after `--`).
    #[arg(value_name = "SCRIPT")]
    pub script: Option<OsString>,

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
pub struct UpdateArgs {
    /// Another corral binary to move the daemon to.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
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
    pub log_format: EventFormat,
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
    pub change: ScaleChange,
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
pub struct InputArgs {
    /// APP or APP:SLOT.
    pub target: String,
    /// The line to write; a newline is added.
    pub line: String,
    /// Write the text as given, without the newline.
    #[arg(long)]
    pub no_newline: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    pub name: String,
    /// A JSON value, e.g. '{"reload_config": true}'.
    pub json: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub app: AppOptions,

    #[command(flatten)]
    pub observe: ObserveArgs,

    /// How corral's own events are written: `text` ([corral] lines), or `json`: one
    /// object per line with time, app, kind, the event's fields and its message, while
    /// worker output stays as --log-format says (`--log-format json` implies it).
    #[arg(
        long,
        value_name = "text|json",
        env = "CORRAL_REPORT_FORMAT",
        default_value = "text"
    )]
    pub report_format: EventFormat,

    /// The command to run, with its arguments (put `--` before it if it has flags of its own).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// How corral writes its own events: `corral run --report-format`, `corral daemon
/// --log-format` (worker output has [`crate::model::LogFormat`], per app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    Text,
    Json,
}

impl StartArgs {
    /// The script: the SCRIPT argument (PM2's order, `corral start app.js -- ARGS`) or the
    /// first word after `--` (`corral run`'s, `corral start -i 2 -- node app.js`).
    pub fn script(&self) -> Option<&OsStr> {
        self.script
            .as_deref()
            .or(self.args.first().map(OsString::as_os_str))
    }

    /// The app's own arguments, after the script.
    fn app_args(&self) -> &[OsString] {
        match self.script {
            Some(_) => &self.args,
            None => self.args.get(1..).unwrap_or_default(),
        }
    }

    /// The full command: interpreter (from the extension), the script made absolute
    /// against `cwd`, then the app's arguments.
    pub fn command(&self, cwd: &Path) -> Vec<OsString> {
        resolve_command(
            self.script().unwrap_or_default(),
            self.interpreter.as_deref(),
            &[],
            self.app_args(),
            cwd,
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::names::default_name;
    use crate::model::parse::{parse_size, read_env_file};
    use corral_core::spec::Instances;

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
