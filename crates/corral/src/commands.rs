//! The daemon commands on the CLI side: build a request, print the answer.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::cli::{Command, ListArgs, LogsArgs, StartArgs};
use crate::daemon::client;
use crate::daemon::logfile;
use crate::daemon::protocol::{AppView, ApplyMode, Request, Response, StartApp, WorkerView};
use crate::daemon::Home;
use crate::exit::Failure;
use crate::render;

/// Runs one daemon command.
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Completions { shell } => return crate::habits::completions(shell),
        Command::Man => return crate::habits::man(),
        _ => {}
    }
    let home = Home::from_env().map_err(Failure::Runtime)?;
    if let Some(done) = file_target(&home, &command) {
        return done;
    }
    let request = match command {
        Command::Start(mut args)
            if crate::config::is_config(std::path::Path::new(&args.script)) =>
        {
            return start_config(&home, &mut args);
        }
        Command::Start(args) => start_request(&args)?,
        Command::Ls(args) => return list(&home, &args),
        Command::Jlist => return crate::habits::json_list(&home, false),
        Command::Prettylist => return crate::habits::json_list(&home, true),
        Command::StartOrReload(a) | Command::StartOrGracefulReload(a) => {
            return crate::habits::apply_file(&home, &a.file, a.profile, ApplyMode::Reload)
        }
        Command::StartOrRestart(a) => {
            return crate::habits::apply_file(&home, &a.file, a.profile, ApplyMode::Restart)
        }
        Command::Reset(t) => Request::Reset { target: t.target },
        Command::ReloadLogs => Request::ReloadLogs,
        Command::Report => return crate::habits::report(&home),
        Command::Init(a) => return crate::habits::init(&a),
        Command::Unstartup(a) => return crate::habits::unstartup(&a),
        Command::Logs(args) => return logs(&home, &args).map_err(Failure::Runtime),
        Command::Stop(t) => Request::Stop { target: t.target },
        Command::Restart(t) => Request::Restart { target: t.target },
        Command::Reload(t) => Request::Reload { target: t.target },
        Command::Delete(t) => Request::Delete { target: t.target },
        Command::Scale(a) => Request::Scale {
            name: a.name,
            change: a.change,
            force: a.force,
        },
        Command::Signal(a) => Request::Signal {
            target: a.target,
            signal: a.signal.as_str().to_owned(),
        },
        Command::Send(a) => Request::Send {
            name: a.name,
            data: serde_json::from_str(&a.json)
                .with_context(|| format!("`{}` is not JSON", a.json))
                .map_err(Failure::Usage)?,
        },
        Command::Describe(a) if a.json => {
            return describe_json(&home, a.name);
        }
        Command::Describe(a) => Request::Describe { name: a.name },
        Command::Env(a) if a.json => return env_json(&home, a.name),
        Command::Env(a) => Request::Env { name: a.name },
        Command::Flush(t) => Request::Flush { target: t.target },
        Command::Save => Request::Save,
        Command::Resurrect => Request::Resurrect,
        Command::Ping => Request::Ping,
        Command::Kill => return kill(&home),
        Command::Startup(args) => return startup(&home, &args),
        Command::Monit => return crate::monit::run(home).map_err(Failure::Runtime),
        Command::Run(_) | Command::Daemon(_) => unreachable!("handled by app::main"),
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    };
    let starts_daemon = matches!(
        request,
        Request::Start { .. } | Request::Resurrect | Request::Ping
    );
    let response = client::request(&home, request, starts_daemon).map_err(Failure::Runtime)?;
    answer(response)
}

/// `stop|restart|reload|delete FILE`: done here, for the file's apps. None for a verb
/// on an app, an id or `all`.
fn file_target(home: &Home, command: &Command) -> Option<Result<(), Failure>> {
    use crate::habits::FileVerb;
    let (target, verb) = match command {
        Command::Stop(t) => (t, FileVerb::Stop),
        Command::Restart(t) => (t, FileVerb::Apply(ApplyMode::Restart)),
        Command::Reload(t) => (t, FileVerb::Apply(ApplyMode::Reload)),
        Command::Delete(t) => (t, FileVerb::Delete),
        _ => return None,
    };
    if let Some(done) = crate::habits::on_file(home, target, verb) {
        return Some(done);
    }
    let profile = target.profile.as_ref()?;
    Some(Err(Failure::Usage(anyhow!(
        "--env {profile} goes with a config file (`corral reload ecosystem.config.js --env {profile}`), not with an app"
    ))))
}

fn answer(response: Response) -> Result<(), Failure> {
    match response {
        Response::Ok { message, .. } => {
            if !message.is_empty() {
                outln!("{message}");
            }
            Ok(())
        }
        Response::Error { message } => Err(Failure::Runtime(anyhow!(message))),
    }
}

/// Checks the arguments here (a bad value is a usage error before the daemon sees it),
/// then sends them as typed data.
fn start_request(args: &StartArgs) -> Result<Request, Failure> {
    let cwd = std::env::current_dir()
        .context("cannot read the current directory")
        .map_err(Failure::Runtime)?;
    let script = cwd.join(&args.script);
    if crate::cli::interpreter_for(&script).is_some() && !script.is_file() {
        return Err(Failure::Usage(anyhow!(
            "no such script: {}",
            script.display()
        )));
    }
    let mut options = args.app.clone();
    options.take_env_vars().map_err(Failure::Usage)?;
    let app = StartApp {
        command: args
            .command(&cwd)
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect(),
        cwd: cwd.display().to_string(),
        options,
        config: None,
        scaled: None,
    };
    crate::daemon::parse::parse_start(&app).map_err(|e| Failure::Usage(anyhow!(e)))?;
    Ok(Request::Start { app: Box::new(app) })
}

fn describe_json(home: &Home, name: String) -> Result<(), Failure> {
    match client::request(home, Request::Describe { name }, false).map_err(Failure::Runtime)? {
        Response::Ok { apps, .. } => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&apps).expect("views serialize")
            );
            Ok(())
        }
        Response::Error { message } => Err(Failure::Runtime(anyhow!(message))),
    }
}

/// `corral start ecosystem.config.js [--env PROFILE]`: every app of the file; apps that
/// run already take the file's settings and reload.
fn start_config(home: &Home, args: &mut StartArgs) -> Result<(), Failure> {
    let path = std::path::PathBuf::from(&args.script);
    let profile = args.app.take_env_args();
    crate::habits::apply_file(home, &path, profile, ApplyMode::Reload)
}

/// A systemd unit running the daemon in the foreground with the saved apps.
/// `path` is the PATH the user had when asking for it, so that interpreters installed
/// per user (nvm's node, pyenv's python) are found as in their shell.
pub fn systemd_unit(exe: &str, home: &Home, user: Option<&str>, path: &str) -> String {
    let (user_line, wanted_by) = match user {
        Some(name) => (format!("User={name}\n"), "multi-user.target"),
        None => (String::new(), "default.target"),
    };
    // systemd would read `%` and `$` in an Environment= value itself.
    let path = path.replace('%', "%%").replace('$', "$$");
    format!(
        "[Unit]\n\
         Description=corral process manager\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         {user_line}\
         Environment=CORRAL_HOME={home}\n\
         Environment=\"PATH={path}\"\n\
         LimitNOFILE=65536\n\
         ExecStart={exe} daemon --resurrect\n\
         ExecReload={exe} reload all\n\
         ExecStop={exe} kill\n\
         # corral drains its workers itself; give it the time its apps' kill timeouts need.\n\
         KillMode=mixed\n\
         TimeoutStopSec=60\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        home = home.dir.display(),
    )
}

fn startup(home: &Home, args: &crate::cli::StartupArgs) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .context("cannot find the corral executable")
        .map_err(Failure::Runtime)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let unit = systemd_unit(
        &exe.display().to_string(),
        home,
        (!args.user).then_some(user.as_str()),
        &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    if !args.install {
        out!("{unit}");
        return Ok(());
    }
    let (path, _) = unit_path(args.user).map_err(Failure::Runtime)?;
    let enable = if args.user {
        "systemctl --user daemon-reload && systemctl --user enable --now corral".to_owned()
    } else {
        format!("systemctl daemon-reload && systemctl enable --now corral-{user}")
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .map_err(Failure::Runtime)?;
    }
    std::fs::write(&path, unit)
        .with_context(|| {
            format!(
                "cannot write {} (system units need root; try --user)",
                path.display()
            )
        })
        .map_err(Failure::Runtime)?;
    outln!("wrote {}; now run: {enable}", path.display());
    Ok(())
}

/// Where `startup --install` writes its unit, and how to disable it.
pub fn unit_path(user_unit: bool) -> anyhow::Result<(PathBuf, String)> {
    if user_unit {
        let config = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("HOME is not set"))?
            .join(".config/systemd/user");
        return Ok((
            config.join("corral.service"),
            "systemctl --user disable --now corral".into(),
        ));
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    Ok((
        PathBuf::from(format!("/etc/systemd/system/corral-{user}.service")),
        format!("systemctl disable --now corral-{user}"),
    ))
}

/// `env --json`: the KEY=VALUE lines as one object.
fn env_json(home: &Home, name: String) -> Result<(), Failure> {
    match client::request(home, Request::Env { name }, false).map_err(Failure::Runtime)? {
        Response::Ok { message, .. } => {
            let map: serde_json::Map<String, serde_json::Value> = message
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&map).expect("env serializes")
            );
            Ok(())
        }
        Response::Error { message } => Err(Failure::Runtime(anyhow!(message))),
    }
}

fn kill(home: &Home) -> Result<(), Failure> {
    match client::request(home, Request::Kill, false) {
        Ok(response) => answer(response),
        Err(e) if client::is_no_daemon(&e) => {
            outln!("no daemon running");
            Ok(())
        }
        Err(e) => Err(Failure::Runtime(e)),
    }
}

/// The daemon's apps (none when no daemon runs).
pub fn listed(home: &Home) -> Result<Vec<AppView>, Failure> {
    match client::request(home, Request::List, false) {
        Ok(Response::Ok { apps, .. }) => Ok(apps),
        Ok(Response::Error { message }) => Err(Failure::Runtime(anyhow!(message))),
        Err(e) if client::is_no_daemon(&e) => Ok(Vec::new()),
        Err(e) => Err(Failure::Runtime(e)),
    }
}

fn list(home: &Home, args: &ListArgs) -> Result<(), Failure> {
    let apps = listed(home)?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&apps).expect("views serialize")
        );
    } else {
        out!("{}", table(&apps));
    }
    Ok(())
}

/// The columns of `ls` (and `monit`).
pub const COLUMNS: [&str; 9] = [
    "id", "app", "slot", "pid", "status", "uptime", "restarts", "cpu", "memory",
];

/// An app's own row: id, name, status, restarts, listeners.
pub fn app_cells(app: &AppView) -> [String; 9] {
    [
        app.id.to_string(),
        app.name.clone(),
        String::new(),
        String::new(),
        app.status.clone(),
        String::new(),
        app.restarts.to_string(),
        String::new(),
        app.listen.join(" "),
    ]
}

/// A worker's row under its app.
pub fn worker_cells(w: &WorkerView) -> [String; 9] {
    [
        String::new(),
        String::new(),
        w.slot.to_string(),
        w.pid.map_or("-".into(), |p| p.to_string()),
        match (&w.last_exit, w.status.as_str()) {
            (Some(why), "restarting" | "errored") => format!("{} ({why})", w.status),
            _ => w.status.clone(),
        },
        w.pid.map_or("-".into(), |_| {
            render::duration(Duration::from_millis(w.uptime_ms))
        }),
        w.restarts.to_string(),
        format!("{:.0}%", w.cpu_percent),
        render::size(w.memory),
    ]
}

/// `ls` as a table: one row per app, then one per worker.
pub fn table(apps: &[AppView]) -> String {
    let mut rows = vec![COLUMNS.map(String::from)];
    for app in apps {
        rows.push(app_cells(app));
        rows.extend(app.workers.iter().map(worker_cells));
    }
    if apps.is_empty() {
        return "no apps (start one with `corral start app.js`)\n".into();
    }
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn logs(home: &Home, args: &LogsArgs) -> anyhow::Result<()> {
    let files: Vec<(PathBuf, String)> = log_sources(home, args.app.as_deref())
        .into_iter()
        .filter(|(_, label)| {
            !(args.err && label.ends_with(" out") || args.out && label.ends_with(" err"))
        })
        .filter(|(path, _)| path.exists())
        .collect();
    if files.is_empty() {
        let which = args.app.as_deref().unwrap_or("any app");
        anyhow::bail!("no logs for {which} in {}", home.logs().display());
    }
    let out = std::io::stdout();
    let mut positions = Vec::new();
    for (path, label) in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut lock = out.lock();
        for line in &lines[lines.len().saturating_sub(args.lines)..] {
            writeln!(lock, "{}", format_line(&label, line, args.json))?;
        }
        positions.push((path, label, text.len() as u64));
    }
    if args.follow {
        follow(positions, args.json)?;
    }
    Ok(())
}

/// `[app:slot out] text`, or with `json`, `{"app":..,"slot":..,"stream":..,"line":..}`.
fn format_line(label: &str, line: &str, json: bool) -> String {
    if !json {
        return format!("[{label}] {line}");
    }
    let (who, stream) = label.split_once(' ').unwrap_or((label, ""));
    let (app, slot) = who.rsplit_once(':').unwrap_or((who, ""));
    serde_json::json!({
        "app": app,
        "slot": slot.parse::<usize>().ok(),
        "stream": stream,
        "line": line,
    })
    .to_string()
}

/// The log files to read, labelled `app:slot stream`: where the daemon says it writes
/// them (custom and merged files included), or the default files when no daemon runs.
fn log_sources(home: &Home, app: Option<&str>) -> Vec<(PathBuf, String)> {
    if let Ok(Response::Ok { apps, .. }) = client::request(home, Request::List, false) {
        let chosen: Vec<&AppView> = apps
            .iter()
            .filter(|a| app.is_none_or(|n| a.name == n))
            .collect();
        if !chosen.is_empty() {
            return chosen
                .iter()
                .flat_map(|a| {
                    a.logs.iter().map(|f| {
                        let who = match f.slot {
                            Some(slot) => format!("{}:{slot}", a.name),
                            None => a.name.clone(),
                        };
                        (PathBuf::from(&f.path), format!("{who} {}", f.stream))
                    })
                })
                .collect();
        }
    }
    logfile::files_of(&home.logs(), app)
        .into_iter()
        .map(|p| {
            let label = label_of(&p);
            (p, label)
        })
        .collect()
}

/// `app-0-out.log` → `app:0 out`.
fn label_of(path: &std::path::Path) -> String {
    let name = path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut parts = name.rsplitn(3, '-');
    let kind = parts.next().unwrap_or_default();
    let slot = parts.next().unwrap_or_default();
    let app = parts.next().unwrap_or_default();
    format!("{app}:{slot} {kind}")
}

/// Prints what is appended to the files; a file that shrank was rotated and is read
/// again from its start.
fn follow(mut files: Vec<(PathBuf, String, u64)>, json: bool) -> anyhow::Result<()> {
    loop {
        for (path, label, offset) in &mut files {
            let Ok(mut file) = std::fs::File::open(&*path) else {
                continue;
            };
            let len = file.metadata()?.len();
            if len < *offset {
                *offset = 0;
            }
            if len == *offset {
                continue;
            }
            file.seek(SeekFrom::Start(*offset))?;
            let mut chunk = Vec::new();
            file.take(len - *offset).read_to_end(&mut chunk)?;
            // Only whole lines; a partial last line waits for its newline.
            let whole = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let mut lock = std::io::stdout().lock();
            for line in BufReader::new(&chunk[..whole]).lines() {
                writeln!(lock, "{}", format_line(label, &line?, json))?;
            }
            lock.flush()?;
            *offset += whole as u64;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
