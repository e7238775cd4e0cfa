//! PM2's dialect: the binary invoked as `pm2` (or `corral pm2 ARGS`) parses PM2's
//! command line, applies PM2's defaults and renders PM2's views, over the same typed
//! requests and the same daemon as corral's own CLI (its home `$PM2_HOME`, `~/.pm2`).

mod cli;
mod procs;
mod start;
mod view;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Parser;
use corral_proto::control::{ApplyMode, Response};

use crate::client::conn;
use crate::exit::Failure;
use crate::home::Home;
use crate::model::{Request, StartApp};
use cli::{Flags, Pm2Cli, Targets, Verb};
use procs::{names_of, records, resolve, Record};

/// Runs one PM2 command line (`args[0]` is the program's name).
pub fn main(args: Vec<OsString>) -> ExitCode {
    if matches!(
        args.get(1).and_then(|a| a.to_str()),
        Some("-v" | "--version" | "-V")
    ) {
        outln!("{} (corral, PM2's dialect)", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cli = match Pm2Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return Failure::from_clap(e).report(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn run(cli: Pm2Cli) -> Result<(), Failure> {
    let flags = cli.flags;
    if let Some(why) = flags.refused() {
        return Err(Failure::Usage(anyhow!(why)));
    }
    let home = Home::pm2_from_env().map_err(Failure::Runtime)?;
    let cwd = std::env::current_dir()
        .context("cannot read the current directory")
        .map_err(Failure::Runtime)?;
    let front = Front { home, cwd, flags };
    front.verb(cli.verb)
}

/// One command's context: the home, where it was typed, its flags.
struct Front {
    home: Home,
    cwd: PathBuf,
    flags: Flags,
}

/// What `stop`, `restart`, `reload` and `delete` ask of each app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Stop,
    Restart,
    Reload,
    Delete,
}

impl Front {
    fn verb(&self, verb: Verb) -> Result<(), Failure> {
        match verb {
            Verb::Start(t) => self.start(&t),
            Verb::Stop(t) => self.act(Act::Stop, &t),
            Verb::Restart(t) => self.act(Act::Restart, &t),
            Verb::Reload(t) => self.act(Act::Reload, &t),
            Verb::Delete(t) => self.act(Act::Delete, &t),
            Verb::List => self.list(),
            Verb::Jlist => {
                let all = view::processes(&records(&self.home)?);
                outln!("{}", serde_json::Value::Array(all));
                Ok(())
            }
            Verb::Prettylist => {
                let all = view::processes(&records(&self.home)?);
                outln!("{}", view::inspect(&serde_json::Value::Array(all)));
                Ok(())
            }
            Verb::Describe { target } => self.describe(&target),
            Verb::Reset { target } => self.each(&[target], |name| Request::Reset { target: name }),
            Verb::Pid { target } => self.pid(target.as_deref()),
            Verb::Send { target, line } => self.send_line(&target, &line),
            Verb::Attach { target, separator } => self.attach(&target, separator.as_deref()),
            Verb::SendSignal { signal, target } => {
                let signal = crate::model::parse::parse_signal(&signal)
                    .map_err(|e| Failure::Usage(anyhow!(e)))?;
                self.each(&[target], |name| Request::Signal {
                    target: name,
                    signal: signal as i32,
                })
            }
            Verb::Scale { target, count } => {
                let change = count.parse().map_err(|e| Failure::Usage(anyhow!("{e}")))?;
                self.each(&[target], |name| Request::Scale {
                    name,
                    change,
                    force: false,
                })
            }
            Verb::Save => self.send_and_say(Request::Save, false),
            Verb::Resurrect => self.send_and_say(Request::Resurrect, true),
            Verb::Ping => self.send_and_say(Request::Ping, true),
            Verb::Kill => self.kill(),
            Verb::Logs {
                target,
                lines,
                nostream,
                err,
                out,
                json,
            } => {
                let app = match target {
                    Some(t) => Some(self.one_name(&t)?),
                    None => None,
                };
                let args = crate::cli::LogsArgs {
                    app,
                    lines,
                    follow: !nostream,
                    err,
                    out,
                    json,
                };
                crate::client::logs::logs(&self.home, &args).map_err(Failure::Runtime)
            }
            Verb::Flush { target } => match target {
                Some(t) => self.each(&[t], |name| Request::Flush { target: name }),
                None => self.send_and_say(Request::Flush { target: "all".into() }, false),
            },
            Verb::ReloadLogs => self.send_and_say(Request::ReloadLogs, false),
            Verb::Monit => {
                crate::client::monit::run(self.home.clone()).map_err(Failure::Runtime)
            }
            Verb::Env { target } => self.env(&target),
            Verb::StartOrRestart { file } => self.apply_file(Path::new(&file), ApplyMode::Restart),
            Verb::StartOrReload { file } | Verb::StartOrGracefulReload { file } => {
                self.apply_file(Path::new(&file), ApplyMode::Reload)
            }
            Verb::Update => self.update(),
            Verb::Init { .. } => self.init(),
            Verb::Other(args) => Err(Failure::Usage(anyhow!(
                "pm2 {}: not a command corral serves (PM2 Plus, modules and deploy are PM2's own); `pm2 --help` lists the ones it does",
                args.first().map(|a| a.to_string_lossy()).unwrap_or_default()
            ))),
        }
    }

    fn say(&self, line: &str) {
        if !self.flags.silent {
            outln!("[PM2] {line}");
        }
    }

    /// PM2 shows the list after each command.
    fn show_list(&self) -> Result<(), Failure> {
        if self.flags.silent || self.flags.mini_list {
            return Ok(());
        }
        self.list()
    }

    fn list(&self) -> Result<(), Failure> {
        let records = records(&self.home)?;
        let table = view::table(&records, self.flags.sort.as_deref())
            .map_err(|e| Failure::Usage(anyhow!(e)))?;
        out!("{table}");
        Ok(())
    }

    fn request(&self, request: Request, start_daemon: bool) -> Result<Response, Failure> {
        conn::request(&self.home, request, start_daemon).map_err(Failure::Runtime)
    }

    fn send_and_say(&self, request: Request, start_daemon: bool) -> Result<(), Failure> {
        match self.request(request, start_daemon)?.outcome() {
            Ok(message) => {
                for line in message.lines().filter(|l| !l.is_empty()) {
                    self.say(line);
                }
                Ok(())
            }
            Err(message) => Err(Failure::Runtime(anyhow!(message))),
        }
    }

    /// `request` for each app `targets` name.
    fn each(&self, targets: &[String], request: impl Fn(String) -> Request) -> Result<(), Failure> {
        let records = records(&self.home)?;
        for name in names_of(&records, targets, &self.cwd)? {
            self.send_and_say(request(name), false)?;
        }
        self.show_list()
    }

    /// `pm2 send ID LINE`: the line and a newline to that process's standard input.
    fn send_line(&self, target: &str, line: &str) -> Result<(), Failure> {
        let records = records(&self.home)?;
        let (record, slot) = procs::process(&records, target)?;
        let request = Request::Input {
            target: format!("{}:{slot}", record.view.name),
            text: format!("{line}\n"),
        };
        self.send_and_say(request, false)?;
        self.show_list()
    }

    /// `pm2 attach ID`: the app's output as it comes, and each line read from standard
    /// input sent to the process, until end of input.
    fn attach(&self, target: &str, separator: Option<&str>) -> Result<(), Failure> {
        if target.parse::<u32>().is_err() {
            return Err(Failure::Runtime(anyhow!(
                "pm_id must be a process number (not a process name): `pm2 list` shows them"
            )));
        }
        let records = records(&self.home)?;
        let (record, slot) = procs::process(&records, target)?;
        let (name, home) = (record.view.name.clone(), self.home.clone());
        let args = crate::cli::LogsArgs {
            app: Some(name.clone()),
            lines: 0,
            follow: true,
            err: false,
            out: false,
            json: false,
        };
        // The output runs on until this process ends, which is when input ends.
        std::thread::spawn(move || crate::client::logs::logs(&home, &args));
        let separator = separator.unwrap_or("\n");
        for line in std::io::stdin().lines() {
            let line = line
                .context("reading standard input")
                .map_err(Failure::Runtime)?;
            let request = Request::Input {
                target: format!("{name}:{slot}"),
                text: format!("{line}{separator}"),
            };
            if let Response::Error { message, .. } = self.request(request, false)? {
                errln!("[PM2][ERROR] {message}");
            }
        }
        Ok(())
    }

    fn one_name(&self, target: &str) -> Result<String, Failure> {
        let records = records(&self.home)?;
        let names = names_of(&records, &[target.to_owned()], &self.cwd)?;
        Ok(names
            .into_iter()
            .next()
            .expect("names_of finds one or fails"))
    }

    fn act(&self, act: Act, t: &Targets) -> Result<(), Failure> {
        if t.targets.is_empty() {
            return Err(Failure::Usage(anyhow!(
                "pm2 {act:?} needs what to act on: a name, an id, a script, a config file or `all`"
            )));
        }
        for target in &t.targets {
            if let Some(file) = self.config_target(target)? {
                self.act_on_file(act, &file)?;
                continue;
            }
            let records = records(&self.home)?;
            for name in names_of(&records, std::slice::from_ref(target), &self.cwd)? {
                let record = records
                    .iter()
                    .find(|r| r.view.name == name)
                    .expect("resolved");
                self.warn_whole_app(act, target, record);
                self.act_on(act, record)?;
            }
        }
        self.show_list()
    }

    /// PM2 acts on the one process an id names; corral's engine acts on whole apps, and
    /// says so rather than surprise.
    fn warn_whole_app(&self, act: Act, target: &str, record: &Record) {
        let n = record.processes().len();
        let one_of_many = n > 1
            && target.parse::<u32>().is_ok()
            && record.facts.name != target
            && record.view.name != target;
        if one_of_many {
            errln!(
                "[PM2][WARN] id {target} is one of {n} processes of {name}: corral's `{verb}` acts on every one (`pm2 scale {name} N` changes how many run)",
                name = record.facts.name,
                verb = format!("{act:?}").to_lowercase(),
            );
        }
    }

    /// A config file a verb names (`-`: one on standard input), or None.
    fn config_target(&self, target: &str) -> Result<Option<ConfigSource>, Failure> {
        if target == "-" {
            let temp = start::stdin_config(&self.home).map_err(Failure::Runtime)?;
            return Ok(Some(ConfigSource(temp.0.clone(), Some(temp))));
        }
        let path = self.cwd.join(target);
        Ok((crate::config::is_config(&path) && path.is_file()).then(|| ConfigSource(path, None)))
    }

    fn act_on(&self, act: Act, record: &Record) -> Result<(), Failure> {
        let name = record.view.name.clone();
        let fresh = self.flags.update_env || self.flags.watch.is_some();
        let request = match act {
            Act::Stop => Request::Stop {
                target: name,
                unwatch: true,
            },
            Act::Delete => Request::Delete { target: name },
            Act::Restart | Act::Reload if fresh => {
                let mode = if act == Act::Restart {
                    ApplyMode::Restart
                } else {
                    ApplyMode::Reload
                };
                Request::Apply {
                    app: Box::new(self.refreshed(record)),
                    mode,
                }
            }
            Act::Restart => Request::Restart { target: name },
            Act::Reload => Request::Reload { target: name },
        };
        self.send_and_say(request, false)
    }

    /// The app as it was started, with the caller's environment under its declared one
    /// (`--update-env`) and PM2's watch switch flipped (`--watch`).
    fn refreshed(&self, record: &Record) -> StartApp {
        let mut start = record.start.clone();
        let facts = record.facts.clone();
        if self.flags.update_env {
            let mut env = start::inherited_env(&self.home.dir);
            env.extend(facts.declared_env.iter().cloned());
            start.options.env = env;
        }
        if let Some(paths) = &self.flags.watch {
            // PM2's `restart --watch` flips watching.
            if start.options.watch.is_empty() {
                start.options.watch = paths
                    .iter()
                    .map(|p| PathBuf::from(&start.cwd).join(p))
                    .collect();
            } else {
                start.options.watch.clear();
            }
        }
        start.options.pm2_facts = Some(facts);
        start
    }

    fn act_on_file(&self, act: Act, file: &ConfigSource) -> Result<(), Failure> {
        let apps = start::file_apps(&file.0, file.base(&self.cwd), &self.flags, &self.home)
            .map_err(Failure::Usage)?;
        let records = records(&self.home)?;
        for app in apps {
            let name = app.options.name.clone().unwrap_or_default();
            let running = records.iter().any(|r| r.view.name == name);
            let request = match act {
                Act::Stop | Act::Delete if !running => continue,
                Act::Stop => Request::Stop {
                    target: name,
                    unwatch: true,
                },
                Act::Delete => Request::Delete { target: name },
                Act::Restart => Request::Apply {
                    app: Box::new(as_file_app(app)),
                    mode: ApplyMode::Restart,
                },
                Act::Reload => Request::Apply {
                    app: Box::new(as_file_app(app)),
                    mode: ApplyMode::Reload,
                },
            };
            self.send_and_say(request, true)?;
        }
        Ok(())
    }

    fn apply_file(&self, path: &Path, mode: ApplyMode) -> Result<(), Failure> {
        let apps = start::file_apps(path, None, &self.flags, &self.home).map_err(Failure::Usage)?;
        self.apply_apps(apps, mode)?;
        self.show_list()
    }

    /// A file's apps: started, or given their settings and restarted (reloaded); then
    /// waited for as `start` waits.
    fn apply_apps(&self, apps: Vec<StartApp>, mode: ApplyMode) -> Result<(), Failure> {
        let names: Vec<String> = apps.iter().filter_map(|a| a.options.name.clone()).collect();
        for app in apps {
            let request = Request::Apply {
                app: Box::new(as_file_app(app)),
                mode,
            };
            self.send_and_say(request, true)?;
        }
        for name in names {
            self.wait_started(&name)?;
        }
        Ok(())
    }

    fn start(&self, t: &Targets) -> Result<(), Failure> {
        if t.targets.is_empty() {
            return Err(Failure::Usage(anyhow!(
                "pm2 start needs what to run: a script (`pm2 start app.js -i max`), a command line in quotes or a config file"
            )));
        }
        let mut taken = Vec::new();
        for target in &t.targets {
            self.start_one(target, &t.args, &mut taken)?;
        }
        self.show_list()
    }

    fn start_one(
        &self,
        target: &str,
        args: &[String],
        taken: &mut Vec<String>,
    ) -> Result<(), Failure> {
        if let Some(file) = self.config_target(target)? {
            let apps = start::file_apps(&file.0, file.base(&self.cwd), &self.flags, &self.home)
                .map_err(Failure::Usage)?;
            return self.apply_apps(apps, ApplyMode::Restart);
        }
        let records = records(&self.home)?;
        // PM2's smart start: a bare word or a number that names apps restarts them.
        let bare = !target.contains('/') && Path::new(target).extension().is_none();
        if bare {
            let found = resolve(&records, target, &self.cwd);
            if !found.is_empty() {
                for record in found {
                    self.act_on(Act::Restart, record)?;
                }
                self.say("Process successfully started");
                return Ok(());
            }
        }
        let script = start::Script::find(target, self.flags.interpreter.as_deref(), &self.cwd)
            .map_err(Failure::Runtime)?;
        let name = self
            .flags
            .name
            .clone()
            .unwrap_or_else(|| script.default_name());
        let same = records
            .iter()
            .find(|r| r.facts.script == script.path && r.facts.name == name);
        if let Some(record) = same {
            use corral_proto::control::AppStatus;
            if matches!(record.view.status, AppStatus::Stopped | AppStatus::Errored) {
                return self.act_on(Act::Restart, record);
            }
            if !self.flags.force {
                return Err(Failure::Runtime(anyhow!(
                    "Script already launched, add -f option to force re-execution"
                )));
            }
        }
        let mut app = start::script_app(&script, args, &self.flags, &self.cwd, &self.home)
            .map_err(Failure::Usage)?;
        let corral_name = start::unique_name(&name, &records, taken);
        taken.push(corral_name.clone());
        app.options.name = Some(corral_name);
        crate::config::start::parse_start(&app).map_err(|e| Failure::Usage(anyhow!(e)))?;
        let facts = app.options.pm2_facts.clone().unwrap_or_default();
        self.say(&format!(
            "Starting {} in {} ({} instance{})",
            facts.script,
            facts.exec_mode,
            instances_text(app.options.instances),
            if matches!(
                app.options.instances,
                corral_core::spec::Instances::Count(1)
            ) {
                ""
            } else {
                "s"
            }
        ));
        let name = app.options.name.clone().unwrap_or_default();
        self.send_and_say(Request::Start { app: Box::new(app) }, true)?;
        self.wait_started(&name)?;
        self.say("Done.");
        Ok(())
    }

    /// PM2 answers once the processes run; corral's daemon answers once they are
    /// spawned, so wait (at most 10 s) until none is still starting: a `reload` right
    /// after `start` then replaces every worker.
    fn wait_started(&self, name: &str) -> Result<(), Failure> {
        use corral_proto::control::WorkerStatus;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let records = records(&self.home)?;
            let Some(record) = records.iter().find(|r| r.view.name == name) else {
                return Ok(());
            };
            let workers = &record.view.workers;
            let all_there = workers.len() >= record.instances.max(1);
            if all_there && workers.iter().all(|w| w.status != WorkerStatus::Starting) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    fn describe(&self, target: &str) -> Result<(), Failure> {
        let records = records(&self.home)?;
        let found = resolve(&records, target, &self.cwd);
        if found.is_empty() {
            return Err(procs::not_found(target, records.is_empty()));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for record in found {
            for worker in record.processes() {
                let p = view::process(record, &worker, now);
                outln!(
                    " Describing process with id {} - name {}",
                    p["pm_id"],
                    record.facts.name
                );
                let env = &p["pm2_env"];
                for key in [
                    "status",
                    "name",
                    "namespace",
                    "restart_time",
                    "unstable_restarts",
                    "pm_uptime",
                    "created_at",
                    "pm_exec_path",
                    "pm_cwd",
                    "exec_interpreter",
                    "node_args",
                    "args",
                    "exec_mode",
                    "watch",
                    "autorestart",
                    "pm_out_log_path",
                    "pm_err_log_path",
                    "pm_pid_path",
                    "corral_slot",
                ] {
                    if !env[key].is_null() {
                        outln!(" {key:<18} │ {}", text(&env[key]));
                    }
                }
                outln!(" {:<18} │ {}", "pid", p["pid"]);
            }
        }
        Ok(())
    }

    fn env(&self, target: &str) -> Result<(), Failure> {
        let records = records(&self.home)?;
        let found = resolve(&records, target, &self.cwd);
        let Some(record) = found.first() else {
            return Err(procs::not_found(target, records.is_empty()));
        };
        for (key, value) in &record.start.options.env {
            outln!("{key}: {}", crate::secrets::mask_urls(value));
        }
        Ok(())
    }

    fn pid(&self, target: Option<&str>) -> Result<(), Failure> {
        let records = records(&self.home)?;
        let chosen: Vec<&Record> = match target {
            Some(t) => resolve(&records, t, &self.cwd),
            None => records.iter().collect(),
        };
        for record in chosen {
            for worker in record.processes() {
                outln!("{}", worker.pid.unwrap_or(0));
            }
        }
        Ok(())
    }

    fn kill(&self) -> Result<(), Failure> {
        let done = self.if_running(Request::Kill, "No daemon running")?;
        if done.is_some() {
            self.say("[v] All Applications Stopped");
            self.say("[v] PM2 Daemon Stopped");
        }
        Ok(())
    }

    fn update(&self) -> Result<(), Failure> {
        let request = Request::Update { exe: None };
        if let Some(message) = self.if_running(request, "No daemon running; nothing to update")? {
            self.say(&message);
        }
        Ok(())
    }

    /// `request` to a daemon that runs (its answer's message); with none, `none` is
    /// said and nothing is done.
    fn if_running(&self, request: Request, none: &str) -> Result<Option<String>, Failure> {
        match conn::request(&self.home, request, false) {
            Ok(response) => response
                .outcome()
                .map(Some)
                .map_err(|m| Failure::Runtime(anyhow!(m))),
            Err(e) if conn::is_no_daemon(&e) => {
                self.say(none);
                Ok(None)
            }
            Err(e) => Err(Failure::Runtime(e)),
        }
    }

    /// PM2 overwrites an ecosystem file that exists; corral leaves it and says so.
    fn init(&self) -> Result<(), Failure> {
        let path = self.cwd.join("ecosystem.config.js");
        if path.exists() {
            self.say(&format!(
                "{} exists; left as it is (PM2 would overwrite it)",
                path.display()
            ));
            return Ok(());
        }
        crate::client::habits::init(&crate::cli::InitArgs { toml: false })
    }
}

/// A config named on the command line: its path, and the file of standard input to
/// remove when done.
struct ConfigSource(PathBuf, Option<start::TempConfig>);

impl ConfigSource {
    /// Where the file's relative paths start: the caller's directory for standard input.
    fn base<'a>(&self, cwd: &'a Path) -> Option<&'a Path> {
        self.1.as_ref().map(|_| cwd)
    }
}

/// A PM2 app from a file keeps what it was started with: PM2 restarts an app by name
/// from its stored settings, not from the file.
fn as_file_app(mut app: StartApp) -> StartApp {
    app.config = None;
    app
}

fn instances_text(n: corral_core::spec::Instances) -> String {
    use corral_core::spec::Instances;
    match n {
        Instances::Count(n) => n.to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}
