//! `pm2 start` as PM2 does it: a script (one instance in fork mode unless `-i`), a
//! command line, a config file or one on standard input; a name or id that runs
//! already is restarted instead ("smart start"); the app inherits the caller's
//! environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use corral_core::spec::Instances;

use super::cli::Flags;
use super::procs::Record;
use crate::model::facts::Pm2Facts;
use crate::model::names::{is_shell_line, name_from};
use crate::model::{AppOptions, StartApp};

/// Variables of the caller's environment that describe the caller, not the app: a
/// worker must not take corral's (or systemd's) sockets for its own.
/// corral's own (`CORRAL_*`) are left out too, and `PM2_HOME` is the home's.
const NOT_INHERITED: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "INVOCATION_ID",
    "PM2_HOME",
];

/// The caller's environment, as PM2 passes it to the apps it starts.
pub fn inherited_env(home: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !NOT_INHERITED.contains(&k.as_str()) && !k.starts_with("CORRAL_"))
        .collect();
    env.push(("PM2_HOME".into(), home.display().to_string()));
    env
}

/// What PM2 decides from a script alone: its interpreter (by extension; a text file
/// without one is run with node, a binary directly) and the absolute path.
pub struct Script {
    pub path: String,
    pub interpreter: Option<String>,
    /// A command line for the shell (`pm2 start "cc a.c; ./a.out"`).
    pub shell: bool,
}

impl Script {
    pub fn find(script: &str, interpreter: Option<&str>, cwd: &Path) -> anyhow::Result<Script> {
        if interpreter.is_none() && is_shell_line(script.as_ref(), cwd) {
            return Ok(Script {
                path: script.to_owned(),
                interpreter: Some("bash".into()),
                shell: true,
            });
        }
        let local = cwd.join(script);
        let path = if local.is_file() {
            local
        } else if !script.contains('/') {
            let path = std::env::var_os("PATH");
            corral_core::os::resolve_program(script.as_ref(), path.as_deref(), None)
                .map_err(|_| anyhow!("Script not found: {}", local.display()))?
        } else {
            bail!("Script not found: {}", local.display());
        };
        let interpreter = match interpreter {
            Some(i) => Some(i.to_owned()).filter(|i| i != "none"),
            None => by_extension(&path),
        };
        Ok(Script {
            path: path.display().to_string(),
            interpreter,
            shell: false,
        })
    }

    /// PM2's default name: the file's name without its extension, or the whole line.
    pub fn default_name(&self) -> String {
        if self.shell {
            return self.path.clone();
        }
        let path = Path::new(&self.path);
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.clone())
    }
}

/// corral's interpreters by extension, and PM2's few more (`.ts` with bun, `.coffee`).
fn by_extension(path: &Path) -> Option<String> {
    let ext = path.extension().and_then(|e| e.to_str());
    if let Some(known) = crate::model::names::interpreter_for(path).filter(|_| ext != Some("ts")) {
        return Some(known.into());
    }
    let known = match ext {
        Some("ts" | "tsx") => "bun",
        Some("coffee") => "coffee",
        _ => return text_without_shebang(path).then(|| "node".into()),
    };
    Some(known.into())
}

/// A text file with no `#!` line: PM2 runs it with node (a file with one runs itself,
/// where PM2 would hand it to node all the same).
fn text_without_shebang(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    n > 0 && !head.contains(&0) && std::str::from_utf8(head).is_ok() && !head.starts_with(b"#!")
}

/// Milliseconds, as PM2 takes delays (`--restart-delay 5000`), or a duration (`5s`).
fn millis(flag: &str, value: &str) -> anyhow::Result<Duration> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    crate::model::parse::parse_duration(value).map_err(|e| {
        anyhow!("--{flag} {value}: expected milliseconds (5000) or a duration (5s): {e}")
    })
}

/// A script's app, from PM2's flags.
pub fn script_app(
    script: &Script,
    args: &[String],
    flags: &Flags,
    cwd: &Path,
    home: &crate::home::Home,
) -> anyhow::Result<StartApp> {
    let interpreter_args: Vec<String> = flags
        .node_args
        .iter()
        .chain(&flags.interpreter_args)
        .flat_map(|a| a.split_whitespace().map(str::to_owned))
        .collect();
    // The interpreter is decided (`none` for none); a shell line is left to the resolver.
    let interpreter = match script.shell {
        true => None,
        false => Some(script.interpreter.as_deref().unwrap_or("none")),
    };
    let app_args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let command: Vec<String> = crate::model::names::resolve_command(
        script.path.as_ref(),
        interpreter,
        &interpreter_args,
        &app_args,
        cwd,
    )
    .into_iter()
    .map(|c| c.to_string_lossy().into_owned())
    .collect();
    let name = flags.name.clone().unwrap_or_else(|| script.default_name());
    let node = script.interpreter.as_deref() == Some("node");
    let mut options = AppOptions {
        instances: Instances::Count(1),
        ..AppOptions::default()
    };
    if let Some(n) = &flags.instances {
        options.instances = n.parse().map_err(|e| anyhow!("-i {n}: {e}"))?;
    }
    let cluster = node && flags.instances.is_some() && !flags.execute_command;
    apply_flags(&mut options, flags, cwd, &name, home)?;
    let facts = Pm2Facts {
        name,
        exec_mode: if cluster { "cluster_mode" } else { "fork_mode" }.into(),
        interpreter: script.interpreter.clone().unwrap_or_else(|| "none".into()),
        script: script.path.clone(),
        args: args.to_vec(),
        interpreter_args,
        declared_env: Vec::new(),
    };
    options.env = inherited_env(&home.dir);
    options.pm2_facts = Some(facts);
    Ok(StartApp {
        command,
        cwd: cwd.display().to_string(),
        options,
        config: None,
        scaled: None,
    })
}

/// PM2's flags onto an app's options (a config file's, or a script's).
pub fn apply_flags(
    options: &mut AppOptions,
    flags: &Flags,
    cwd: &Path,
    name: &str,
    home: &crate::home::Home,
) -> anyhow::Result<()> {
    let abs = |p: &str| cwd.join(p);
    // PM2's defaults: SIGINT to stop (unless a file chose a signal), a pid file per
    // process under its home, a piped standard input.
    if options.kill_signal == AppOptions::default().kill_signal {
        options.kill_signal = nix::sys::signal::Signal::SIGINT;
    }
    if options.pid_file.is_none() {
        options.pid_file = Some(home.pids().join(format!("{}.pid", name_from(name))));
    }
    // PM2 gives every process a pipe as its standard input (`pm2 send` writes to it):
    // an app reading stdin waits instead of reading end-of-file.
    options.stdin = crate::model::kinds::StdinMode::Pipe;
    if let Some(p) = &flags.output {
        options.out_file = Some(abs(p));
    }
    if let Some(p) = &flags.error {
        options.error_file = Some(abs(p));
    }
    match flags.log.as_deref() {
        Some("") => options.log_file = Some(home.logs().join(format!("{}.log", name_from(name)))),
        Some(p) => options.log_file = Some(abs(p)),
        None => {}
    }
    if flags.disable_logs {
        options.out_file = Some("/dev/null".into());
        options.error_file = Some("/dev/null".into());
    }
    if flags.merge_logs {
        options.merge_logs = true;
    }
    if let Some(p) = &flags.pid {
        options.pid_file = Some(abs(p));
    }
    if let Some(ns) = &flags.namespace {
        options.namespace = Some(ns.clone());
    }
    if let Some(dir) = &flags.cwd {
        options.cwd = Some(abs(dir));
    }
    if let Some(cron) = &flags.cron {
        options.cron_restart = Some(cron.clone());
    }
    if let Some(watch) = &flags.watch {
        options.watch = watch
            .iter()
            .map(|w| if w.is_empty() { cwd.to_owned() } else { abs(w) })
            .collect();
    }
    options
        .ignore_watch
        .extend(flags.ignore_watch.iter().cloned());
    if flags.no_autorestart {
        options.autorestart = false;
    }
    if !flags.stop_exit_codes.is_empty() {
        options.stop_exit_codes = flags.stop_exit_codes.clone();
    }
    if flags.shutdown_with_message || std::env::var_os("PM2_KILL_USE_MESSAGE").is_some() {
        options.shutdown_with_message = true;
    }
    if flags.time {
        options.time = true;
    }
    if let Some(format) = &flags.log_date_format {
        options.log_date_format = Some(format.clone());
    }
    match flags.log_type.as_deref() {
        Some("json") => options.log_format = crate::model::LogFormat::Pm2Json,
        Some("raw") | None => {}
        Some(other) => bail!("--log-type {other}: PM2 writes `raw` or `json`"),
    }
    if flags.wait_ready {
        options.ready = crate::model::parse::parse_ready("notify").map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(n) = flags.max_restarts {
        options.max_restarts = n;
    }
    if let Some(v) = &flags.kill_timeout {
        options.kill_timeout = millis("kill-timeout", v)?;
    }
    if let Some(v) = &flags.listen_timeout {
        options.listen_timeout = Some(millis("listen-timeout", v)?);
    }
    if let Some(v) = &flags.restart_delay {
        options.restart_delay = millis("restart-delay", v)?;
    }
    if let Some(v) = &flags.exp_backoff_restart_delay {
        options.restart_delay = millis("exp-backoff-restart-delay", v)?;
    }
    if let Some(v) = &flags.max_memory_restart {
        let bytes = crate::model::parse::parse_size(v)
            .map_err(|e| anyhow!("--max-memory-restart {v}: {e}"))?;
        options.max_memory = Some(bytes);
    }
    Ok(())
}

/// A config file's apps (or a config on standard input's) as PM2 starts them: each
/// with the caller's environment under its own, `--only` applied.
pub fn file_apps(
    path: &Path,
    base: Option<&Path>,
    flags: &Flags,
    home: &crate::home::Home,
) -> anyhow::Result<Vec<StartApp>> {
    let loaded = crate::config::load_in(path, flags.env.as_deref(), base)?;
    for warning in &loaded.warnings {
        errln!("[PM2][WARN] {warning}");
    }
    let config = corral_proto::control::ConfigRef {
        path: std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string(),
        profile: flags.env.clone(),
    };
    let only: Option<Vec<&str>> = flags.only.as_deref().map(|o| o.split(',').collect());
    let mut apps = Vec::new();
    for mut app in loaded.start_apps(&config) {
        let parsed = crate::config::start::parse_start(&app)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let name = app.options.name.clone().unwrap_or(parsed.spec.name);
        if only.as_ref().is_some_and(|o| !o.contains(&name.as_str())) {
            continue;
        }
        decorate_file_app(&mut app, &name, flags, home)?;
        apps.push(app);
    }
    if apps.is_empty() {
        bail!(
            "{}: no app to start{}",
            path.display(),
            flags
                .only
                .as_ref()
                .map(|o| format!(" (--only {o} names none of its apps)"))
                .unwrap_or_default()
        );
    }
    Ok(apps)
}

fn decorate_file_app(
    app: &mut StartApp,
    name: &str,
    flags: &Flags,
    home: &crate::home::Home,
) -> anyhow::Result<()> {
    let cwd = PathBuf::from(&app.cwd);
    let (interpreter, script, args) = split_command(&app.command);
    let node = interpreter.as_deref() == Some("node");
    let explicit_fork = app.options.exec_mode == crate::model::kinds::ExecMode::Fork;
    let many = !matches!(app.options.instances, Instances::Count(1));
    let cluster = node && many && !explicit_fork && !flags.execute_command;
    let declared = std::mem::take(&mut app.options.env);
    // The file's settings are the app's; only PM2's defaults go under them.
    apply_flags(&mut app.options, &Flags::default(), &cwd, name, home)?;
    let mut env = inherited_env(&home.dir);
    env.extend(declared.iter().cloned());
    app.options.env = env;
    app.options.name = Some(name_from(name));
    app.options.pm2_facts = Some(Pm2Facts {
        name: name.to_owned(),
        exec_mode: if cluster { "cluster_mode" } else { "fork_mode" }.into(),
        interpreter: interpreter.unwrap_or_else(|| "none".into()),
        script,
        args,
        interpreter_args: Vec::new(),
        declared_env: declared,
    });
    Ok(())
}

/// A resolved command as interpreter, script and arguments.
fn split_command(command: &[String]) -> (Option<String>, String, Vec<String>) {
    let first = command.first().cloned().unwrap_or_default();
    let is_script = Path::new(&first).is_absolute() && Path::new(&first).is_file();
    if is_script || command.len() < 2 {
        return (None, first, command.get(1..).unwrap_or_default().to_vec());
    }
    let interpreter = Path::new(&first)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(first);
    let rest = &command[1..];
    let at = rest.iter().position(|a| !a.starts_with('-')).unwrap_or(0);
    (
        Some(interpreter),
        rest.get(at).cloned().unwrap_or_default(),
        rest.get(at + 1..).unwrap_or_default().to_vec(),
    )
}

/// A corral name for a PM2 name: PM2 allows any name and several apps with one;
/// corral's are file-safe and unique, so a second `echo` is `echo-2`.
pub fn unique_name(wanted: &str, records: &[Record], taken: &[String]) -> String {
    let mut base = name_from(wanted);
    base.truncate(56);
    let used = |n: &str| records.iter().any(|r| r.view.name == n) || taken.iter().any(|t| t == n);
    if !used(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !used(n))
        .expect("some suffix is free")
}

/// Reads a config from standard input (`pm2 start -`) into a file of the home, which
/// the loader takes like any other; removed once read.
pub fn stdin_config(home: &crate::home::Home) -> anyhow::Result<TempConfig> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the config from standard input")?;
    home.create()?;
    let path = home.dir.join(format!("stdin-{}.json", std::process::id()));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(TempConfig(path))
}

/// A file removed when dropped.
pub struct TempConfig(pub PathBuf);

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
