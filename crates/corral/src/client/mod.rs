//! The CLI's side of the daemon commands: build a request, send it, print the answer.
//! One module per command family; this one maps each command to them.

pub(crate) mod conn;
mod describe;
mod files;
pub(crate) mod habits;
pub(crate) mod logs;
pub(crate) mod monit;
mod startup;
mod table;

use anyhow::{anyhow, Context};
use corral_proto::control::{ApplyMode, Response};

use crate::cli::{Command, StartArgs};
use crate::exit::Failure;
use crate::home::Home;
use crate::model::{Request, StartApp};

/// Runs one daemon command.
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Completions { shell } => return habits::completions(shell),
        Command::Man => return habits::man(),
        _ => {}
    }
    let home = Home::from_env().map_err(Failure::Runtime)?;
    if let Some(done) = file_target(&home, &command) {
        return done;
    }
    let request = match command {
        Command::Start(args) if args.script().is_none() => {
            return Err(Failure::Usage(anyhow!(
                "`corral start` needs what to run: a script (`corral start app.js -i max`), \
                 a program (`corral start -i 2 -- node app.js`) or a config file \
                 (`corral start ecosystem.config.js`)"
            )));
        }
        Command::Start(mut args)
            if args
                .script()
                .is_some_and(|s| crate::config::is_config(std::path::Path::new(s))) =>
        {
            return start_config(&home, &mut args);
        }
        Command::Start(args) => start_request(&args)?,
        Command::Ls(args) => return table::list(&home, &args),
        Command::Jlist => return table::json_list(&home, false),
        Command::Prettylist => return table::json_list(&home, true),
        Command::StartOrReload(a) | Command::StartOrGracefulReload(a) => {
            return files::apply_file(&home, &a.file, a.profile, ApplyMode::Reload)
        }
        Command::StartOrRestart(a) => {
            return files::apply_file(&home, &a.file, a.profile, ApplyMode::Restart)
        }
        Command::Reset(t) => Request::Reset { target: t.target },
        Command::ReloadLogs => Request::ReloadLogs,
        Command::Report => return habits::report(&home),
        Command::Init(a) => return habits::init(&a),
        Command::Unstartup(a) => return startup::unstartup(&a),
        Command::Logs(args) => return logs::logs(&home, &args).map_err(Failure::Runtime),
        Command::Stop(t) => Request::Stop {
            target: t.target,
            unwatch: false,
        },
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
            signal: a.signal as i32,
        },
        Command::Send(a) => Request::Send {
            name: a.name,
            data: serde_json::from_str(&a.json)
                .with_context(|| format!("`{}` is not JSON", a.json))
                .map_err(Failure::Usage)?,
        },
        Command::Input(a) => Request::Input {
            target: a.target,
            text: if a.no_newline { a.line } else { a.line + "\n" },
        },
        Command::Describe(a) => return describe::describe(&home, a.name, a.json),
        Command::Env(a) => return describe::env(&home, a.name, a.json),
        Command::Flush(t) => Request::Flush { target: t.target },
        Command::Save => Request::Save,
        Command::Resurrect => Request::Resurrect,
        Command::Ping => Request::Ping,
        Command::Kill => return kill(&home),
        Command::Update(args) => return update(&home, args.binary),
        Command::Startup(args) => return startup::startup(&home, &args),
        Command::Monit => return monit::run(home).map_err(Failure::Runtime),
        Command::Run(_) | Command::Daemon(_) | Command::Handover { .. } | Command::Holder => {
            unreachable!("handled by app::main")
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    };
    let starts_daemon = matches!(
        request,
        Request::Start { .. } | Request::Resurrect | Request::Ping
    );
    let response = conn::request(&home, request, starts_daemon).map_err(Failure::Runtime)?;
    answer(response)
}

/// `stop|restart|reload|delete FILE`: done here, for the file's apps. None for a verb
/// on an app, an id or `all`.
fn file_target(home: &Home, command: &Command) -> Option<Result<(), Failure>> {
    use files::FileVerb;
    let (target, verb) = match command {
        Command::Stop(t) => (t, FileVerb::Stop),
        Command::Restart(t) => (t, FileVerb::Apply(ApplyMode::Restart)),
        Command::Reload(t) => (t, FileVerb::Apply(ApplyMode::Reload)),
        Command::Delete(t) => (t, FileVerb::Delete),
        _ => return None,
    };
    if let Some(done) = files::on_file(home, target, verb) {
        return Some(done);
    }
    let profile = target.profile.as_ref()?;
    Some(Err(Failure::Usage(anyhow!(
        "--env {profile} goes with a config file (`corral reload ecosystem.config.js --env {profile}`), not with an app"
    ))))
}

/// Why `response` is not the answer asked for: the daemon's error, or, for an answer of
/// another kind, a daemon of another version.
fn refusal(response: Response) -> String {
    response.outcome().err().unwrap_or_else(|| {
        "the daemon answered something else (another corral version?); run `corral update` \
             to move it to this corral in place (apps keep running), then retry"
            .into()
    })
}

fn unexpected(response: Response) -> Failure {
    Failure::Runtime(anyhow!(refusal(response)))
}

fn answer(response: Response) -> Result<(), Failure> {
    match response.outcome() {
        Ok(message) => {
            if !message.is_empty() {
                outln!("{message}");
            }
            Ok(())
        }
        Err(message) => Err(Failure::Runtime(anyhow!(message))),
    }
}

/// Checks the arguments here (a bad value is a usage error before the daemon sees it),
/// then sends them as typed data.
fn start_request(args: &StartArgs) -> Result<Request, Failure> {
    let cwd = std::env::current_dir()
        .context("cannot read the current directory")
        .map_err(Failure::Runtime)?;
    let script = cwd.join(args.script().unwrap_or_default());
    if crate::model::names::interpreter_for(&script).is_some() && !script.is_file() {
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
    crate::config::start::parse_start(&app).map_err(|e| Failure::Usage(anyhow!(e)))?;
    Ok(Request::Start { app: Box::new(app) })
}

/// `corral start ecosystem.config.js [--env PROFILE]`: every app of the file; apps that
/// run already take the file's settings and reload.
fn start_config(home: &Home, args: &mut StartArgs) -> Result<(), Failure> {
    let path = std::path::PathBuf::from(args.script().unwrap_or_default());
    let profile = args.app.take_env_args();
    files::apply_file(home, &path, profile, ApplyMode::Reload)
}

/// Moves the running daemon, in place (`exec`, same pid), to `binary` or to the binary
/// now at the path it was started from.
fn update(home: &Home, binary: Option<std::path::PathBuf>) -> Result<(), Failure> {
    let exe = match binary {
        Some(path) => Some(
            std::fs::canonicalize(&path)
                .with_context(|| format!("cannot find --binary {}", path.display()))
                .map_err(Failure::Usage)?,
        ),
        None => None,
    };
    let request = Request::Update {
        exe: exe.map(|p| p.to_string_lossy().into_owned()),
    };
    match conn::request(home, request, false) {
        Ok(response) => answer(response),
        Err(e) if conn::is_no_daemon(&e) => {
            outln!("no daemon running; nothing to update");
            Ok(())
        }
        Err(e) => Err(Failure::Runtime(e)),
    }
}

fn kill(home: &Home) -> Result<(), Failure> {
    match conn::request(home, Request::Kill, false) {
        Ok(response) => answer(response),
        Err(e) if conn::is_no_daemon(&e) => {
            match stop_left_workers(home) {
                0 => outln!("no daemon running"),
                n => outln!(
                    "no daemon running; stopped {n} worker process group{} a daemon that died left serving",
                    if n == 1 { "" } else { "s" }
                ),
            }
            Ok(())
        }
        Err(e) => Err(Failure::Runtime(e)),
    }
}

/// How long workers nobody supervises get to drain before they are killed.
const LEFT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Stops the worker groups a daemon and holder that both died left (SIGTERM, then
/// SIGKILL after [`LEFT_GRACE`]); how many there were.
fn stop_left_workers(home: &Home) -> usize {
    use nix::sys::signal::Signal;
    let left = home.left_workers();
    for &pgid in &left {
        corral_core::os::signal_group(pgid, Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + LEFT_GRACE;
    while !home.left_workers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for pgid in home.left_workers() {
        corral_core::os::signal_group(pgid, Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(home.workers());
    left.len()
}
