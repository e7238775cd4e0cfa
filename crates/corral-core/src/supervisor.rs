//! The async loop that runs one app: turns child exits, notify messages, timers and
//! controls into [`Event`]s for its [`Group`], and spawns real worker processes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use corral_proto::env;
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::group::{Control, Event, Group, GroupConfig, Outcome, Processes, Report};
use crate::listen::Listener;
use crate::notify::{NotifyError, NotifySocket};
use crate::os;
use crate::output::{self, LogLine, Stream};
use crate::process::{Pid, SpawnError};
use crate::spec::AppSpec;

/// Why an app could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start `{command}`")]
    Command {
        command: String,
        #[source]
        source: SpawnError,
    },
    #[error("the app has no command to run")]
    NoCommand,
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("cannot watch for exiting workers (SIGCHLD)")]
    Signal(#[source] std::io::Error),
}

/// Where a running app sends what happens, and where it takes orders from.
pub struct Channels {
    pub controls: mpsc::Receiver<Control>,
    pub reports: mpsc::UnboundedSender<Report>,
    pub logs: mpsc::Sender<LogLine>,
}

/// Runs `spec` until it is stopped ([`Control::Stop`]) or every worker slot gave up.
///
/// `listeners` stay open for the whole run. `runtime_dir` holds the notify socket.
pub async fn run(
    spec: &AppSpec,
    listeners: &[Listener],
    runtime_dir: &Path,
    channels: Channels,
) -> Result<Outcome, RunError> {
    let Channels {
        mut controls,
        reports,
        logs,
    } = channels;
    let program = resolve(spec)?;
    let mut sigchld = signal(SignalKind::child()).map_err(RunError::Signal)?;
    let notify = NotifySocket::bind(runtime_dir)?;
    let procs = OsProcesses {
        template: Template::new(spec, program, listeners, notify.path()),
        logs,
    };
    let config = GroupConfig {
        instances: spec.instances,
        ready: spec.ready,
        restart: spec.restart,
        stop: spec.stop,
        watchdog: spec.watchdog,
    };
    let mut group = Group::new(config, procs, Instant::now());
    let flush = |group: &mut Group<OsProcesses>| {
        for report in group.take_reports() {
            let _ = reports.send(report);
        }
    };
    group.handle_event(Instant::now(), Event::Start);
    flush(&mut group);
    let mut controls_open = true;
    loop {
        if let Some(outcome) = group.outcome() {
            return Ok(outcome);
        }
        let deadline = group.next_deadline().map(tokio::time::Instant::from_std);
        let event = tokio::select! {
            control = controls.recv(), if controls_open => match control {
                Some(control) => Event::Control(control),
                None => {
                    controls_open = false;
                    Event::Control(Control::Stop)
                }
            },
            _ = sigchld.recv() => {
                for (pid, status) in os::reap() {
                    group.handle_event(Instant::now(), Event::Exited { pid, status });
                }
                flush(&mut group);
                continue;
            }
            received = notify.recv() => match received {
                Ok((pid, notices)) => Event::Notify { pid: worker_of(&group, pid), notices },
                Err(_) => continue,
            },
            _ = sleep_until(deadline), if deadline.is_some() => Event::Tick,
        };
        group.handle_event(Instant::now(), event);
        flush(&mut group);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// A notify message may come from a child of the worker (a shell wrapper's node, say):
/// attribute it to the worker whose process group the sender is in.
fn worker_of<P: Processes>(group: &Group<P>, pid: Pid) -> Pid {
    if group.is_known(pid) {
        return pid;
    }
    os::process_group_of(pid)
        .filter(|pgid| group.is_known(*pgid))
        .unwrap_or(pid)
}

/// Finds the program of `spec` on its `PATH`, as each worker start will.
pub fn resolve(spec: &AppSpec) -> Result<PathBuf, RunError> {
    let program = spec.command.first().ok_or(RunError::NoCommand)?;
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    os::resolve_program(program, path, spec.cwd.as_deref()).map_err(|source| RunError::Command {
        command: program.to_string_lossy().into_owned(),
        source,
    })
}

/// The parts of every worker's command line and environment that don't depend on its slot.
struct Template {
    app: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    listen_fds: Vec<i32>,
    die_with_parent: bool,
}

impl Template {
    fn new(spec: &AppSpec, program: PathBuf, listeners: &[Listener], notify: &Path) -> Self {
        let mut vars: Vec<(&str, OsString)> = vec![
            (env::CORRAL_APP, spec.name.clone().into()),
            (env::NOTIFY_SOCKET, notify.as_os_str().to_owned()),
        ];
        if !listeners.is_empty() {
            vars.push((env::LISTEN_FDS, listeners.len().to_string().into()));
            let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
            vars.push((env::LISTEN_FDNAMES, names.join(":").into()));
        }
        if let Some(port) = listeners.iter().find_map(Listener::port) {
            vars.push((env::PORT, port.to_string().into()));
        }
        if let Some(watchdog) = spec.watchdog {
            vars.push((env::WATCHDOG_USEC, watchdog.as_micros().to_string().into()));
        }
        // corral's own variables win over inherited ones of the same name.
        let mut env: Vec<(OsString, OsString)> = spec
            .env
            .iter()
            .filter(|(k, _)| {
                !env::NOT_INHERITED.iter().any(|n| k == n)
                    && !vars.iter().any(|(n, _)| k == n)
                    && k != env::CORRAL_WORKER_ID
                    && k != env::NODE_APP_INSTANCE
            })
            .cloned()
            .collect();
        env.extend(vars.into_iter().map(|(k, v)| (k.into(), v)));
        Template {
            app: spec.name.clone(),
            program,
            args: spec.command.clone(),
            env,
            cwd: spec.cwd.clone(),
            listen_fds: listeners.iter().map(Listener::raw_fd).collect(),
            die_with_parent: spec.die_with_supervisor,
        }
    }

    fn command(&self, slot: usize) -> os::Command {
        let mut env = self.env.clone();
        let id = OsString::from(slot.to_string());
        env.push((env::CORRAL_WORKER_ID.into(), id.clone()));
        env.push((env::NODE_APP_INSTANCE.into(), id));
        os::Command {
            program: self.program.clone(),
            args: self.args.clone(),
            env,
            cwd: self.cwd.clone(),
            listen_fds: self.listen_fds.clone(),
            die_with_parent: self.die_with_parent,
        }
    }
}

/// [`Processes`] on the real OS: fork/exec, output pumped to the log channel.
struct OsProcesses {
    template: Template,
    logs: mpsc::Sender<LogLine>,
}

impl Processes for OsProcesses {
    fn spawn(&mut self, slot: usize) -> Result<Pid, SpawnError> {
        let child = os::spawn(&self.template.command(slot))?;
        output::pump(
            child.stdout,
            slot,
            child.pid,
            Stream::Stdout,
            self.logs.clone(),
        );
        output::pump(
            child.stderr,
            slot,
            child.pid,
            Stream::Stderr,
            self.logs.clone(),
        );
        Ok(child.pid)
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        os::signal_group(pgid, signal);
    }
}

impl std::fmt::Debug for OsProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OsProcesses({})", self.template.app)
    }
}
