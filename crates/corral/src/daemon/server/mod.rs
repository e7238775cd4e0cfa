//! The daemon process: the control socket, and one task that owns every app's state
//! (requests, engine reports and app exits all arrive there as messages).
//!
//! Longer than 500 lines: the control socket and the state task's dispatch of every request kind; the verbs themselves are in `cmd/`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use corral_core::group::{Control, Outcome, Report};
use corral_core::listen;
use corral_core::process::Pid;
use corral_core::supervisor::Command;
use corral_core::supervisor::{self, Channels};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

mod cmd;
mod events;
mod front;
mod launch;
mod persist;

use cmd::flush::flush_logs;
use launch::launch;
use persist::open_private;

use crate::chatter::{Chatter, Said};
use crate::config::start::{parse_start, Parsed};
use crate::daemon::joins::Joins;
use crate::daemon::journal;
use crate::daemon::logfile::LogFiles;
use crate::daemon::refusal::{Near, Refusal};
use crate::daemon::reread::Reread;
use crate::daemon::state::{App, Status, Then};
use crate::home::Home;
use crate::model::names::closest;
use crate::model::{Request, StartApp};
use corral_proto::control::{
    AppDetail, AppRecord, AppView, ApplyMode, EnvVar, Envelope, LogFileView, Response, ScaleChange,
    PROTOCOL_VERSION,
};

/// Runs the daemon until `corral kill` (or SIGTERM/SIGINT: the same graceful stop).
/// With `resurrect`, starts the saved apps and then reports ready to systemd
/// (`NOTIFY_SOCKET`). Returns at once when another daemon holds the lock.
pub fn serve(
    home: Home,
    resurrect: bool,
    observe: crate::model::ObserveArgs,
    log_json: bool,
) -> anyhow::Result<()> {
    // What a previous binary of this daemon handed over (`corral update`), taken before
    // anything else opens a file.
    let adopted = crate::upgrade::take_over::<cmd::update::DaemonDoc>("daemon")?;
    home.create()?;
    let lock = match &adopted {
        Some(_) => None, // held all along, by the fd the document carries
        None => match lock_home(&home)? {
            Some(lock) => Some(lock),
            None => return Ok(()),
        },
    };
    journal::open(&home, log_json);
    let pid_file = home.pid_file();
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        journal::say(&format!("cannot write {}: {e}", pid_file.display()));
    }
    let (lock, control, adopted) = match adopted {
        Some(mut doc) => {
            let (lock, control) = doc.take_daemon_fds()?;
            (lock, Some(control), Some(doc))
        }
        None => {
            let _ = std::fs::remove_file(home.socket());
            (lock.expect("locked above"), None, None)
        }
    };
    // Apps outlive the daemon: the holder keeps them for the next one. What a holder
    // kept for this daemon is taken back below; without one, a new holder starts.
    let (held, holder_pid) = match &adopted {
        // The holder's link came with the document.
        Some(doc) => (None, doc.holder_pid),
        None => {
            let found = cmd::hold::find_or_start_holder(&home)?;
            (found.held, found.pid)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = match control {
            Some(fd) => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true)?;
                UnixListener::from_std(std)?
            }
            None => bind_control(&home)?,
        };
        let control_dup = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stalled = tx.clone();
        corral_core::os::keeper::on_stall(move || {
            let _ = stalled.send(Msg::HolderStalled);
        });
        let (front, side) = front::Front::new();
        tokio::spawn(front::accept_loop(listener, tx.clone(), side));
        let mut daemon = Daemon::new(home, tx, lock, front);
        daemon.control = Some(control_dup);
        daemon.metrics = observe.serve(journal::say).await?;
        match adopted {
            Some(doc) => daemon.took_over(doc),
            None if held.is_some() => daemon.adopt_held(held),
            None if resurrect => {
                if let Response::Error { message, .. } = daemon.resurrect() {
                    journal::say(&format!("resurrect: {message}"));
                }
            }
            None => {}
        }
        daemon.watch_holder(holder_pid);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        daemon.run(rx).await;
        // Only ours: a daemon started since (after an update, the same pid) keeps its.
        if std::fs::read_to_string(&pid_file)
            .is_ok_and(|pid| pid.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&pid_file);
        }
        Ok(())
    })
}

impl Daemon {
    /// Takes up what the binary before this one handed over (`corral update`), and
    /// answers the update that led here.
    fn took_over(&mut self, doc: cmd::update::DaemonDoc) {
        let from = doc.from.clone();
        let reply = self.adopt_engines(doc);
        let summary = self.adopted_summary();
        journal::say(&format!(
            "daemon {} took over from corral {from}: {summary}",
            std::process::id()
        ));
        if let Some(reply) = reply {
            cmd::update::answer_update(reply, &from, &summary);
        }
        self.workers_changed(None);
    }
}

/// The home's lock, or None when another daemon holds it (said on stderr).
fn lock_home(home: &Home) -> anyhow::Result<Option<std::fs::File>> {
    let lock = open_private(&home.lock())
        .with_context(|| format!("cannot open {}", home.lock().display()))?;
    // SAFETY: flock on a file we own; LOCK_NB never blocks.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        errln!(
            "[corral] another daemon already runs for {}",
            home.dir.display()
        );
        return Ok(None);
    }
    Ok(Some(lock))
}

fn bind_control(home: &Home) -> anyhow::Result<UnixListener> {
    let listener = UnixListener::bind(home.socket())
        .with_context(|| format!("cannot listen on {}", home.socket().display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home.socket(), std::fs::Permissions::from_mode(0o600))?;
    journal::say(&format!(
        "daemon {} listening on {}",
        std::process::id(),
        home.socket().display()
    ));
    Ok(listener)
}

enum Msg {
    Request(Request, oneshot::Sender<Response>),
    /// `corral update`, with its connection (answered by whichever binary runs in the end).
    Update(Option<String>, std::os::unix::net::UnixStream),
    UpdateChecked {
        exe: std::path::PathBuf,
        conn: std::os::unix::net::UnixStream,
        checked: Result<(), String>,
    },
    /// An engine's answer to a hand-over.
    HandOverAnswer(String, corral_core::supervisor::HandOverResult),
    /// An engine that handed over ended; its listeners.
    Released(String, Vec<listen::Listener>),
    /// Time to send the holder a snapshot, and the engines' parts of it.
    TakeSnapshot,
    /// The holder with this pid exited.
    HolderGone(i32),
    /// A record could not go to the holder: its link is full.
    HolderStalled,
    /// Time to see again whether an update can exec (`Front::quiet`).
    UpdateTick,
    /// Time to start a holder again, after holders that ended right after their start.
    StartHolder,
    Snapshots(
        Vec<String>,
        BTreeMap<String, corral_core::supervisor::EngineSnapshot>,
    ),
    Report(String, Report),
    Finished(String, Result<Outcome, Refusal>),
    /// An app's config file, read again off the state task, and what it was read for.
    Reread {
        name: String,
        result: Box<Result<(StartApp, Parsed), Refusal>>,
        after: After,
    },
}

/// What a config file was read again for.
enum After {
    /// A reload; settles `join` with its outcome.
    Reload { join: u64 },
    /// A restart, after the app stopped; settles every join once it runs again.
    Restart { joins: Vec<u64> },
}

struct Daemon {
    home: Home,
    tx: mpsc::UnboundedSender<Msg>,
    /// Boxed: an `App` is large, and a B-tree node holds room for eleven of them.
    apps: BTreeMap<String, Box<App>>,
    /// `corral kill` callers, answered once every app has stopped.
    killing: Option<Vec<oneshot::Sender<Response>>>,
    /// CPU ticks at the last `ls`, for CPU % over the interval since.
    ticks: HashMap<Pid, (u64, Instant)>,
    /// Held (flock) while this daemon serves the home.
    lock: Option<std::fs::File>,
    /// Bounds what the daemon logs on each worker's behalf.
    chatter: Chatter,
    /// Replies waiting for work on several apps (stop, restart, reload).
    joins: Joins,
    /// Reloads sent to an engine, by app and join (the ticket the engine names when the
    /// reload ends), with the note their answer carries.
    reloads: BTreeMap<(String, u64), String>,
    /// Apps restarted (or scaled up) whose callers wait until every (added) worker is up.
    coming_up: BTreeMap<String, ComingUp>,
    /// The id the next app gets.
    next_id: u32,
    /// The `pm_id` the next worker slot gets; back to 0 when no app is left, as in PM2.
    next_pm_id: u32,
    /// `--metrics`: the board every report also goes to.
    metrics: Option<corral_metrics::Metrics>,
    /// Bumped by `reloadLogs`: every app's log writer reopens its files.
    log_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A duplicate of the control socket, to pass on in an update.
    control: Option<std::os::fd::OwnedFd>,
    /// The control socket's accepting side, paused by an update.
    front: front::Front,
    /// A `corral update` whose new binary is being checked.
    checking_update: bool,
    /// `corral update` under way.
    updating: Option<cmd::update::Updating>,
    /// Snapshots for the holder.
    holding: cmd::hold::Holding,
    /// The holder watched (`cmd::hold::watch_holder`).
    holder_pid: Option<i32>,
    /// The worker groups of each app's last entry with the holder, with their start
    /// times (`workers.json`).
    held_groups: BTreeMap<String, Vec<(i32, u64)>>,
}

/// A restarted (or scaled-up) app's callers, answered once `want` workers are up.
#[derive(Default)]
struct ComingUp {
    joins: Vec<u64>,
    want: usize,
    /// Workers started since the wait began, and those of them that got ready (or
    /// exited cleanly before they were).
    started: std::collections::BTreeSet<Pid>,
    up: std::collections::BTreeSet<Pid>,
}

impl ComingUp {
    fn wait(&mut self, want: usize, joins: Vec<u64>) {
        self.want = want;
        self.joins.extend(joins);
    }
}

impl Daemon {
    fn new(
        home: Home,
        tx: mpsc::UnboundedSender<Msg>,
        lock: std::fs::File,
        front: front::Front,
    ) -> Self {
        Daemon {
            front,
            home,
            tx,
            apps: BTreeMap::new(),
            killing: None,
            ticks: HashMap::new(),
            lock: Some(lock),
            chatter: Chatter::default(),
            joins: Joins::default(),
            coming_up: BTreeMap::new(),
            reloads: BTreeMap::new(),
            next_id: 0,
            next_pm_id: 0,
            metrics: None,
            log_generation: Default::default(),
            control: None,
            checking_update: false,
            updating: None,
            holding: Default::default(),
            holder_pid: None,
            held_groups: BTreeMap::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            journal::say("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Request(_, reply)) if self.updating.is_some() => {
                        let _ = reply.send(Refusal::Updating.into());
                    }
                    Some(Msg::Request(request, reply)) => self.request(request, reply),
                    Some(Msg::Update(exe, conn)) => self.update(exe, conn),
                    Some(Msg::UpdateChecked { exe, conn, checked }) => {
                        self.update_checked(exe, conn, checked)
                    }
                    Some(Msg::HandOverAnswer(app, result)) => self.hand_over_answer(&app, result),
                    Some(Msg::Released(app, listeners)) => self.released(&app, listeners),
                    Some(Msg::TakeSnapshot) => self.take_snapshot(),
                    Some(Msg::HolderGone(pid)) => self.holder_gone(pid),
                    Some(Msg::HolderStalled) => self.holder_stalled(),
                    Some(Msg::UpdateTick) => self.update_tick(),
                    Some(Msg::StartHolder) => self.holder_retry(),
                    Some(Msg::Snapshots(names, engines)) => self.send_snapshot(names, engines),
                    Some(Msg::Report(app, report)) => self.report(&app, report),
                    Some(Msg::Finished(app, outcome)) => self.finished(&app, outcome),
                    Some(Msg::Reread { name, result, after }) => self.reread(&name, *result, after),
                    None => return,
                },
                _ = term.recv() => self.begin_kill(),
                _ = int.recv() => self.begin_kill(),
            }
            if self.update_ready() {
                self.finish_update().await;
            }
            if self.killing.is_some() && self.apps.values().all(|a| a.controls.is_none()) {
                // Hand the home over first, so a command right after `kill` can start
                // a new daemon at once.
                let _ = std::fs::remove_file(self.home.socket());
                self.release_holder();
                drop(self.lock.take());
                for reply in self.killing.take().unwrap_or_default() {
                    let _ = reply.send(Response::ok("every app stopped; daemon exiting"));
                }
                // Let the replies and the last log lines go out before the process ends.
                journal::flush().await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return;
            }
        }
    }

    fn request(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        let response = match request {
            Request::Ping => Response::ok(format!("pong from daemon {}", std::process::id())),
            Request::Start { app } => self.start(*app),
            Request::Apply { app, mode } => return self.apply(*app, mode, reply),
            Request::Reset { target } => self.each(&target, |app| {
                app.board.reset();
                Ok(format!("{}: restart counters reset", app.name))
            }),
            Request::ReloadLogs => {
                self.log_generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Response::ok(format!("log files of {} apps reopened", self.apps.len()))
            }
            Request::List => self.list(),
            Request::Records => self.records(),
            Request::Stop { target, unwatch } => {
                if unwatch {
                    self.unwatch(&target);
                }
                return self.stop_targets(&target, Then::Nothing, reply);
            }
            Request::Restart { target } => return self.stop_targets(&target, Then::Start, reply),
            Request::Delete { target } => return self.stop_targets(&target, Then::Delete, reply),
            Request::Reload { target } => return self.reload_targets(&target, reply),
            Request::Scale {
                name,
                change,
                force,
            } => return self.scale(&name, change, force, reply),
            Request::Signal { target, signal } => self.signal(&target, signal),
            Request::Send { name, data } => self.each(&name, |app| {
                send(app, Command::Message(data.clone())).map(|()| format!("sent to {}", app.name))
            }),
            Request::Input { target, text } => return self.input(&target, text, reply),
            Request::Describe { name } => self.describe(&name),
            Request::Env { name } => self.env(&name),
            Request::Flush { target } => {
                let logs = self.home.logs();
                self.each(&target, |app| flush_logs(&app.log_files(&logs), &app.name))
            }
            Request::Save => self.save(),
            Request::Resurrect => self.resurrect(),
            Request::Kill => return self.kill(reply),
            // Taken off the connection before it gets here (it needs the connection).
            Request::Update { .. } => Refusal::UpdateShared.into(),
        };
        let _ = reply.send(response);
    }

    /// Applies `f` to the app named `target` (or every app for `all`).
    fn each(
        &mut self,
        target: &str,
        mut f: impl FnMut(&mut App) -> Result<String, Refusal>,
    ) -> Response {
        let names = match self.targets(target) {
            Ok(names) => names,
            Err(e) => return e.into(),
        };
        let mut messages = Vec::new();
        for name in names {
            let app = self.apps.get_mut(&name).expect("target exists");
            match f(app) {
                Ok(m) => messages.push(m),
                Err(e) => return e.into(),
            }
        }
        Response::ok(messages.join("\n"))
    }

    /// The one app `target` names; `verb` says who asks, for the error.
    fn one_target(&self, target: &str, verb: &'static str) -> Result<String, Refusal> {
        let mut names = self.targets(target)?;
        match names.len() {
            1 => Ok(names.remove(0)),
            _ => Err(Refusal::OneApp { verb }),
        }
    }

    /// The apps `target` names and a join that answers `reply` once each is done (with
    /// `summary` of the names, or their messages); None when the name was refused and
    /// the reply already says why.
    fn join_targets(
        &mut self,
        target: &str,
        reply: oneshot::Sender<Response>,
        summary: impl FnOnce(&[String]) -> Option<String>,
    ) -> Option<(Vec<String>, u64)> {
        match self.targets(target) {
            Ok(names) => {
                let join = self.joins.open(reply, names.len(), summary(&names));
                Some((names, join))
            }
            Err(e) => {
                let _ = reply.send(e.into());
                None
            }
        }
    }

    fn targets(&self, target: &str) -> Result<Vec<String>, Refusal> {
        if target == "all" {
            return Ok(self.apps.keys().cloned().collect());
        }
        if self.apps.contains_key(target) {
            return Ok(vec![target.to_owned()]);
        }
        if let Ok(id) = target.parse::<u32>() {
            return match self.apps.values().find(|a| a.id == id) {
                Some(app) => Ok(vec![app.name.clone()]),
                None => Err(Refusal::NoId(id)),
            };
        }
        let namespace: Vec<String> = self
            .apps
            .values()
            .filter(|a| a.start.options.namespace.as_deref() == Some(target))
            .map(|a| a.name.clone())
            .collect();
        if !namespace.is_empty() {
            return Ok(namespace);
        }
        Err(self.no_app(target))
    }

    /// No app is named `target`: the refusal, with what comes close.
    fn no_app(&self, target: &str) -> Refusal {
        let near = match closest(target, self.apps.keys()) {
            Some(near) => Near::Like(near.to_string()),
            None if self.apps.is_empty() => Near::NoApps,
            None => Near::Apps(self.apps.keys().cloned().collect()),
        };
        Refusal::NoApp {
            name: target.to_owned(),
            near,
        }
    }
}

impl Daemon {
    /// `msg` reaches the state task after `wait`.
    fn send_later(&self, wait: std::time::Duration, msg: Msg) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(msg);
        });
    }
}

fn send(app: &App, command: impl Into<Command>) -> Result<(), Refusal> {
    match &app.controls {
        Some(tx) => tx
            .try_send(command.into())
            .map_err(|_| Refusal::Busy(app.name.clone())),
        None => Err(Refusal::NotRunning(app.name.clone())),
    }
}
