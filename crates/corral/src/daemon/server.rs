//! The daemon process: the control socket, and one task that owns every app's state
//! (requests, engine reports and app exits all arrive there as messages).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use corral_core::group::{Command, Control, Outcome, Report};
use corral_core::listen;
use corral_core::process::Pid;
use corral_core::supervisor::{self, Channels};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::joins::Joins;
use super::journal;
use super::logfile::LogFiles;
use super::reread::Reread;
use super::state::{App, Status, Then};
use crate::chatter::{Chatter, Said};
use crate::config::start::{parse_start, Parsed};
use crate::home::Home;
use crate::model::names::closest;
use crate::model::{Request, StartApp};
use crate::render;
use corral_proto::control::{
    AppDetail, ApplyMode, EnvVar, Envelope, LogFileView, Response, ScaleChange, PROTOCOL_VERSION,
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
    home.create()?;
    let lock = open_private(&home.lock())
        .with_context(|| format!("cannot open {}", home.lock().display()))?;
    // SAFETY: flock on a file we own; LOCK_NB never blocks.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        errln!(
            "[corral] another daemon already runs for {}",
            home.dir.display()
        );
        return Ok(());
    }
    journal::open(&home, log_json);
    let _ = std::fs::remove_file(home.socket());
    // Apps die with the daemon (until re-adoption exists): the keeper sees to their
    // grandchildren, so `resurrect` finds every port free.
    corral_core::os::keeper::start().context("cannot start corral's keeper process")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = UnixListener::bind(home.socket())
            .with_context(|| format!("cannot listen on {}", home.socket().display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.socket(), std::fs::Permissions::from_mode(0o600))?;
        journal::say(&format!(
            "daemon {} listening on {}",
            std::process::id(),
            home.socket().display()
        ));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(accept_loop(listener, tx.clone()));
        let mut daemon = Daemon::new(home, tx, lock);
        if let Some(addr) = observe.metrics {
            let metrics = corral_metrics::Metrics::spawn(observe.min_ready);
            let local = corral_metrics::serve(addr, metrics.clone())
                .await
                .with_context(|| format!("cannot serve --metrics on {addr}"))?;
            journal::say(&format!(
                "metrics on http://{local}/metrics, probes on /livez and /readyz"
            ));
            daemon.metrics = Some(metrics);
        }
        if resurrect {
            if let Response::Error { message } = daemon.resurrect() {
                journal::say(&format!("resurrect: {message}"));
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        daemon.run(rx).await;
        Ok(())
    })
}

enum Msg {
    Request(Request, oneshot::Sender<Response>),
    Report(String, Report),
    Finished(String, Result<Outcome, String>),
    /// An app's config file, read again off the state task, and what it was read for.
    Reread {
        name: String,
        result: Box<Result<(StartApp, Parsed), String>>,
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

/// Connections that have not sent their request yet, at most; a new one closes the
/// oldest, so idle connections can never lock real clients out.
const MAX_PENDING: usize = 128;
/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The largest request read (a whole config's environment fits many times over).
pub const MAX_REQUEST: u64 = 16 * 1024 * 1024;

/// Accepts control connections until the daemon exits. Out of fds (EMFILE, ENFILE) or
/// memory, it waits and tries again, however long that lasts.
async fn accept_loop(listener: UnixListener, tx: mpsc::UnboundedSender<Msg>) {
    let (read_tx, mut read_rx) = mpsc::unbounded_channel::<u64>();
    let mut pending: std::collections::VecDeque<(u64, tokio::task::AbortHandle)> =
        Default::default();
    let mut next = 0u64;
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Backoff::default();
                    if pending.len() >= MAX_PENDING {
                        if let Some((_, oldest)) = pending.pop_front() {
                            oldest.abort();
                        }
                    }
                    let id = next;
                    next += 1;
                    let task = tokio::spawn(connection(stream, tx.clone(), read_tx.clone(), id));
                    pending.push_back((id, task.abort_handle()));
                }
                Err(e) if e.raw_os_error().is_some_and(corral_core::os::out_of_resources) => {
                    let wait = backoff.next();
                    if backoff.should_say() {
                        journal::say(&format!(
                            "control socket: cannot accept ({e}); retrying every {}",
                            render::duration(wait)
                        ));
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(_) => {} // the client gave up before we took it (ECONNABORTED...)
            },
            Some(id) = read_rx.recv() => pending.retain(|(i, _)| *i != id),
        }
    }
}

/// Exponential waits from 10 ms to 1 s; says so once per streak, then every 100th time.
#[derive(Default)]
struct Backoff {
    tries: u32,
}

impl Backoff {
    fn next(&mut self) -> std::time::Duration {
        self.tries += 1;
        std::time::Duration::from_millis(10u64 << self.tries.min(7))
            .min(std::time::Duration::from_secs(1))
    }

    fn should_say(&self) -> bool {
        self.tries % 100 == 1
    }
}

/// One request per connection, from our own user only.
async fn connection(
    stream: UnixStream,
    tx: mpsc::UnboundedSender<Msg>,
    read: mpsc::UnboundedSender<u64>,
    id: u64,
) {
    let peer = getsockopt(&stream, PeerCredentials).map(|c| c.uid());
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let (read_half, mut write) = stream.into_split();
    // Read the request even from a stranger, so that the refusal reaches it rather than
    // a broken pipe; one line of at most MAX_REQUEST, within REQUEST_TIMEOUT.
    let mut line = Vec::new();
    let reading = tokio::io::AsyncReadExt::take(read_half, MAX_REQUEST + 1);
    let got = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(reading).read_until(b'\n', &mut line),
    )
    .await;
    let _ = read.send(id);
    if !matches!(got, Ok(Ok(n)) if n > 0) {
        return; // idle, closed, or broken: nobody to answer
    }
    let response = if line.len() as u64 > MAX_REQUEST {
        Response::error(format!(
            "request too large: over the control socket's limit of {} MiB",
            MAX_REQUEST / (1024 * 1024)
        ))
    } else {
        answer(peer.ok() == Some(me), me, &line, &tx).await
    };
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body: response,
    };
    if let Ok(mut bytes) = serde_json::to_vec(&envelope) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

async fn answer(
    same_user: bool,
    me: u32,
    line: &[u8],
    tx: &mpsc::UnboundedSender<Msg>,
) -> Response {
    if !same_user {
        return Response::error(format!(
            "permission denied: this daemon belongs to uid {me}; run corral as that user or set CORRAL_HOME"
        ));
    }
    match serde_json::from_slice::<Envelope<Request>>(line) {
        Ok(envelope) if envelope.version == PROTOCOL_VERSION => {
            let (reply, answer) = oneshot::channel();
            let _ = tx.send(Msg::Request(envelope.body, reply));
            answer
                .await
                .unwrap_or_else(|_| Response::error("the daemon is shutting down"))
        }
        Ok(envelope) => Response::error(format!(
            "this daemon speaks protocol v{PROTOCOL_VERSION}, the client v{}: run `corral kill` with the old corral, then retry",
            envelope.version
        )),
        Err(e) => Response::error(format!("bad request: {e}")),
    }
}

/// The saved apps, each as it was started, runtime changes included.
#[derive(Debug, Serialize, Deserialize)]
struct Dump {
    version: u32,
    apps: Vec<StartApp>,
}

/// Dumps older than this one stored command lines; they can't be read any more.
const DUMP_VERSION: u32 = 2;

struct Daemon {
    home: Home,
    tx: mpsc::UnboundedSender<Msg>,
    apps: BTreeMap<String, App>,
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
    /// The id the next app gets.
    next_id: u32,
    /// `--metrics`: the board every report also goes to.
    metrics: Option<corral_metrics::Metrics>,
    /// Bumped by `reloadLogs`: every app's log writer reopens its files.
    log_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Daemon {
    fn new(home: Home, tx: mpsc::UnboundedSender<Msg>, lock: std::fs::File) -> Self {
        Daemon {
            home,
            tx,
            apps: BTreeMap::new(),
            killing: None,
            ticks: HashMap::new(),
            lock: Some(lock),
            chatter: Chatter::default(),
            joins: Joins::default(),
            next_id: 0,
            metrics: None,
            log_generation: Default::default(),
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
                    Some(Msg::Request(request, reply)) => self.request(request, reply),
                    Some(Msg::Report(app, report)) => self.report(&app, report),
                    Some(Msg::Finished(app, outcome)) => self.finished(&app, outcome),
                    Some(Msg::Reread { name, result, after }) => self.reread(&name, *result, after),
                    None => return,
                },
                _ = term.recv() => self.begin_kill(),
                _ = int.recv() => self.begin_kill(),
            }
            if self.killing.is_some() && self.apps.values().all(|a| a.controls.is_none()) {
                // Hand the home over first, so a command right after `kill` can start
                // a new daemon at once.
                let _ = std::fs::remove_file(self.home.socket());
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
                app.reset();
                Ok(format!("{}: restart counters reset", app.name))
            }),
            Request::ReloadLogs => {
                self.log_generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Response::ok(format!("log files of {} apps reopened", self.apps.len()))
            }
            Request::List => self.list(),
            Request::Stop { target } => return self.stop_targets(&target, Then::Nothing, reply),
            Request::Restart { target } => return self.stop_targets(&target, Then::Start, reply),
            Request::Delete { target } => return self.stop_targets(&target, Then::Delete, reply),
            Request::Reload { target } => return self.reload_targets(&target, reply),
            Request::Scale {
                name,
                change,
                force,
            } => self.scale(&name, change, force),
            Request::Signal { target, signal } => self.signal(&target, signal),
            Request::Send { name, data } => self.each(&name, |app| {
                send(app, Command::Message(data.clone())).map(|()| format!("sent to {}", app.name))
            }),
            Request::Describe { name } => self.describe(&name),
            Request::Env { name } => self.env(&name),
            Request::Flush { target } => {
                let logs = self.home.logs();
                self.each(&target, |app| flush_logs(&app.log_files(&logs), &app.name))
            }
            Request::Save => self.save(),
            Request::Resurrect => self.resurrect(),
            Request::Kill => return self.kill(reply),
        };
        let _ = reply.send(response);
    }

    /// Applies `f` to the app named `target` (or every app for `all`).
    fn each(
        &mut self,
        target: &str,
        mut f: impl FnMut(&mut App) -> Result<String, String>,
    ) -> Response {
        let names = match self.targets(target) {
            Ok(names) => names,
            Err(e) => return Response::error(e),
        };
        let mut messages = Vec::new();
        for name in names {
            let app = self.apps.get_mut(&name).expect("target exists");
            match f(app) {
                Ok(m) => messages.push(m),
                Err(e) => return Response::error(e),
            }
        }
        Response::ok(messages.join("\n"))
    }

    fn targets(&self, target: &str) -> Result<Vec<String>, String> {
        if target == "all" {
            return Ok(self.apps.keys().cloned().collect());
        }
        if self.apps.contains_key(target) {
            return Ok(vec![target.to_owned()]);
        }
        if let Ok(id) = target.parse::<u32>() {
            return match self.apps.values().find(|a| a.id == id) {
                Some(app) => Ok(vec![app.name.clone()]),
                None => Err(format!("no app has id {id} (see `corral ls`)")),
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
        Err(match closest(target, self.apps.keys()) {
            Some(near) => format!("no app named `{target}`; did you mean `{near}`?"),
            None if self.apps.is_empty() => {
                format!("no app named `{target}`: no apps are running (see `corral start`)")
            }
            None => format!(
                "no app named `{target}`; apps: {}",
                self.apps.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    fn start(&mut self, start: StartApp) -> Response {
        let parsed = match parse_start(&start) {
            Ok(parsed) => parsed,
            Err(e) => return Response::error(e),
        };
        let Parsed {
            spec,
            triggers,
            lines,
            layout,
        } = parsed;
        if let Some(existing) = self.apps.get(&spec.name) {
            return Response::error(format!(
                "an app named `{}` exists ({}); `corral delete {}` first, or pick another --name",
                spec.name, existing.status, spec.name
            ));
        }
        let mut app = App::new(start, spec, triggers);
        app.id = self.next_id;
        self.next_id += 1;
        app.lines = lines;
        app.layout = layout;
        app.log_generation = self.log_generation.clone();
        if let Err(e) = launch(&mut app, &self.home, &self.tx) {
            return Response::error(e);
        }
        if let Some(metrics) = &self.metrics {
            metrics.started(&app.name, app.instances);
        }
        let message = format!(
            "started {} ({} workers){}",
            app.name,
            app.instances,
            if app.listen.is_empty() {
                String::new()
            } else {
                format!(" on {}", app.listen.join(", "))
            }
        );
        self.apps.insert(app.name.clone(), app);
        Response::ok(message)
    }

    fn describe(&mut self, name: &str) -> Response {
        let names = match self.targets(name) {
            Ok(names) if names.len() == 1 => names,
            Ok(_) => return Response::error("describe takes one app name"),
            Err(e) => return Response::error(e),
        };
        let view = match self.list() {
            Response::Apps { apps } => apps.into_iter().find(|a| a.name == names[0]),
            _ => None,
        };
        let Some(view) = view else {
            return Response::error(format!("no app named `{}`", names[0]));
        };
        let app = &self.apps[&names[0]];
        Response::Described {
            app: Box::new(AppDetail {
                view,
                cwd: app.spec.cwd.as_ref().map(|c| c.display().to_string()),
                instances: app.instances,
                balance: app.spec.balance.to_string(),
                env: env_vars(app),
            }),
        }
    }

    fn env(&mut self, name: &str) -> Response {
        let names = match self.targets(name) {
            Ok(names) if names.len() == 1 => names,
            Ok(_) => return Response::error("env takes one app name"),
            Err(e) => return Response::error(e),
        };
        Response::Env {
            vars: env_vars(&self.apps[&names[0]]),
        }
    }

    fn list(&mut self) -> Response {
        let pids: Vec<Pid> = self
            .apps
            .values()
            .flat_map(|a| a.rows.values().filter_map(|r| r.pid))
            .collect();
        let usage = self.usage(&pids);
        let now = Instant::now();
        let logs = self.home.logs();
        Response::Apps {
            apps: self
                .apps
                .values()
                .map(|a| {
                    let mut view = a.view(&usage, now);
                    view.logs = a.log_files(&logs);
                    view
                })
                .collect(),
        }
    }

    /// CPU % since the last `ls` (or since the process started) and tree memory.
    fn usage(&mut self, pids: &[Pid]) -> HashMap<Pid, (f64, u64)> {
        let memory = corral_core::os::memory::tree_rss(pids);
        let hz = 100.0; // USER_HZ, fixed at 100 on Linux for /proc
        let now = Instant::now();
        let mut out = HashMap::new();
        for &pid in pids {
            let Some(ticks) = corral_core::os::memory::cpu_ticks(pid) else {
                continue;
            };
            let cpu = match self.ticks.get(&pid) {
                Some(&(before, at)) if now > at => {
                    (ticks.saturating_sub(before)) as f64 / hz / (now - at).as_secs_f64() * 100.0
                }
                _ => 0.0,
            };
            self.ticks.insert(pid, (ticks, now));
            out.insert(pid, (cpu, memory.get(&pid).copied().unwrap_or(0)));
        }
        self.ticks.retain(|pid, _| pids.contains(pid));
        out
    }

    /// A config file's app: started if new; otherwise its new settings are taken and it is
    /// reloaded (or restarted), as PM2's startOrReload / startOrRestart.
    fn apply(&mut self, start: StartApp, mode: ApplyMode, reply: oneshot::Sender<Response>) {
        let parsed = match parse_start(&start) {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = reply.send(Response::error(e));
                return;
            }
        };
        let name = parsed.spec.name.clone();
        let Some(app) = self.apps.get_mut(&name) else {
            let _ = reply.send(self.start(start));
            return;
        };
        // The app's runtime scale wins over the file's `instances`.
        let start = StartApp {
            scaled: app.start.scaled,
            ..start
        };
        if mode == ApplyMode::Reload && app.controls.is_some() {
            let join = self.joins.open(reply, 1, None);
            let parsed = match start.scaled {
                Some(_) => parse_start(&start),
                None => Ok(parsed),
            };
            return self.reread(&name, parsed.map(|p| (start, p)), After::Reload { join });
        }
        // A restart reads the file again as it starts, now with these settings' profile.
        app.start = start;
        self.stop_targets(&name, Then::Start, reply);
    }

    /// Stops targets; the reply waits until they have stopped (and, for restart, started).
    fn stop_targets(&mut self, target: &str, then: Then, reply: oneshot::Sender<Response>) {
        let names = match self.targets(target) {
            Ok(names) => names,
            Err(e) => {
                let _ = reply.send(Response::error(e));
                return;
            }
        };
        let join = self
            .joins
            .open(reply, names.len(), Some(describe(then, &names)));
        for name in &names {
            let app = self.apps.get_mut(name).expect("target exists");
            app.then = then;
            if app.controls.is_some() {
                if app.status != Status::Stopping {
                    let _ = send(app, Control::Stop);
                    app.status = Status::Stopping;
                }
                app.waiting.push(join);
            } else {
                self.after_stop(name, vec![join]);
            }
        }
    }

    /// What follows an app's stop; settles `joins` once it is done.
    fn after_stop(&mut self, name: &str, joins: Vec<u64>) {
        let Some(app) = self.apps.get_mut(name) else {
            return self.joins.settle_all(joins, Ok(String::new()));
        };
        match std::mem::replace(&mut app.then, Then::Nothing) {
            Then::Nothing => {}
            Then::Delete => {
                self.apps.remove(name);
                if let Some(metrics) = &self.metrics {
                    metrics.forget(name);
                }
            }
            Then::Start => {
                if let Some(job) = Reread::of(app) {
                    return self.spawn_reread(job, After::Restart { joins });
                }
                self.relaunch(name, None);
            }
        }
        self.joins.settle_all(joins, Ok(String::new()));
    }

    /// Starts a stopped app again, with its config file's new settings when read.
    fn relaunch(&mut self, name: &str, reread: Option<Result<(StartApp, Parsed), String>>) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        match reread {
            Some(Ok((start, parsed))) => {
                app.start = start;
                app.spec = parsed.spec;
                app.instances = app.spec.instances;
                app.triggers = parsed.triggers;
                app.lines = parsed.lines;
                app.layout = parsed.layout;
            }
            Some(Err(e)) => journal::say(&format!(
                "{name}: config not re-read, keeping the last one: {e}"
            )),
            None => {}
        }
        match launch(app, &self.home, &self.tx) {
            Ok(()) => {
                if let Some(metrics) = &self.metrics {
                    metrics.started(name, app.instances);
                }
            }
            Err(e) => journal::say(&format!("{name}: cannot start again: {e}")),
        }
    }

    /// Rolling reloads; apps from config files read them again first, off this task.
    fn reload_targets(&mut self, target: &str, reply: oneshot::Sender<Response>) {
        let names = match self.targets(target) {
            Ok(names) => names,
            Err(e) => {
                let _ = reply.send(Response::error(e));
                return;
            }
        };
        let join = self.joins.open(reply, names.len(), None);
        for name in names {
            let app = self.apps.get_mut(&name).expect("target exists");
            match Reread::of(app) {
                Some(job) if app.controls.is_some() => {
                    self.spawn_reread(job, After::Reload { join })
                }
                _ => {
                    let result = reload(app, None);
                    self.joins.settle(join, result);
                }
            }
        }
    }

    /// Reads a config file on the blocking pool; the result comes back as a message.
    fn spawn_reread(&self, job: Reread, after: After) {
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = job.run();
            let _ = tx.send(Msg::Reread {
                name: job.name,
                result: Box::new(result),
                after,
            });
        });
    }

    fn reread(&mut self, name: &str, result: Result<(StartApp, Parsed), String>, after: After) {
        match after {
            After::Reload { join } => {
                let outcome = match self.apps.get_mut(name) {
                    Some(app) => result.and_then(|reread| reload(app, Some(reread))),
                    None => Err(format!("{name} was deleted while its config was read")),
                };
                self.joins.settle(join, outcome);
            }
            After::Restart { joins } => {
                self.relaunch(name, Some(result));
                self.joins.settle_all(joins, Ok(String::new()));
            }
        }
    }

    /// One `ScaleTo` control: the whole change or, refused, none of it.
    fn scale(&mut self, name: &str, change: ScaleChange, force: bool) -> Response {
        let cpus = corral_core::spec::usable_cpus();
        self.each(name, |app| {
            let current = app.instances;
            let target = change.target(current).filter(|&n| n >= 1).ok_or_else(|| {
                let how = match change {
                    ScaleChange::To(n) => format!("to {n}"),
                    _ => format!("by {change} from {current}"),
                };
                format!(
                    "cannot scale {} {how}: at least 1 worker; use `corral stop`",
                    app.name
                )
            })?;
            corral_core::spec::check_worker_count(target, cpus, force)
                .map_err(|e| format!("cannot scale {}: {e}", app.name))?;
            send(app, Control::ScaleTo(target))?;
            app.instances = target;
            app.spec.instances = target;
            app.start.scaled = Some(target);
            Ok(format!("{}: {current} → {target} workers", app.name))
        })
    }

    fn signal(&mut self, target: &str, signal: i32) -> Response {
        let signal = match nix::sys::signal::Signal::try_from(signal) {
            Ok(s) => s,
            Err(_) => return Response::error(format!("no signal has number {signal}")),
        };
        let (name, slot) = match target.split_once(':') {
            Some((name, slot)) => match slot.parse::<usize>() {
                Ok(slot) => (name, Some(slot)),
                Err(_) => {
                    return Response::error(format!("invalid worker `{target}`: expected APP:SLOT"))
                }
            },
            None => (target, None),
        };
        self.each(name, |app| match slot {
            None => send(app, Control::Forward(signal))
                .map(|()| format!("{} → {}", signal.as_str(), app.name)),
            Some(slot) => {
                let pid = app
                    .rows
                    .get(&slot)
                    .and_then(|r| r.pid)
                    .ok_or(format!("{} has no running worker {slot}", app.name))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
                    .map_err(|e| format!("cannot signal pid {pid}: {e}"))?;
                Ok(format!(
                    "{} → {}:{slot} (pid {pid})",
                    signal.as_str(),
                    app.name
                ))
            }
        })
    }

    /// Writes the app list so that a crash at any moment leaves the old dump or the new
    /// one, never a partial file: write a temp file, fsync, rename, fsync the directory.
    fn save(&self) -> Response {
        let dump = Dump {
            version: DUMP_VERSION,
            apps: self.apps.values().map(|a| a.start.clone()).collect(),
        };
        match write_atomically(&self.home.dump(), &dump) {
            Ok(()) => Response::ok(format!(
                "saved {} apps to {}",
                dump.apps.len(),
                self.home.dump().display()
            )),
            Err(e) => Response::error(format!(
                "cannot save to {}: {e}",
                self.home.dump().display()
            )),
        }
    }

    fn resurrect(&mut self) -> Response {
        let text = match std::fs::read_to_string(self.home.dump()) {
            Ok(text) => text,
            Err(e) => {
                return Response::error(format!(
                    "nothing to resurrect: {}: {e} (run `corral save` first)",
                    self.home.dump().display()
                ))
            }
        };
        let dump = match serde_json::from_str::<Dump>(&text) {
            Ok(dump) if dump.version == DUMP_VERSION => dump,
            Ok(dump) => {
                return Response::error(format!(
                    "{} was written by an older corral (dump v{}, this one reads v{DUMP_VERSION}): start the apps again and `corral save`",
                    self.home.dump().display(),
                    dump.version
                ))
            }
            Err(e) => {
                return Response::error(format!(
                    "{} is not a corral dump: {e}",
                    self.home.dump().display()
                ))
            }
        };
        let mut messages = Vec::new();
        for saved in dump.apps {
            let name = match parse_start(&saved) {
                Ok(parsed) => parsed.spec.name,
                Err(e) => {
                    messages.push(format!("{}: {e}", saved.command.join(" ")));
                    continue;
                }
            };
            if self.apps.contains_key(&name) {
                messages.push(format!("{name} already running"));
                continue;
            }
            match self.start(saved).outcome() {
                Ok(message) => messages.push(message),
                Err(message) => messages.push(format!("{name}: {message}")),
            }
        }
        Response::ok(messages.join("\n"))
    }

    fn kill(&mut self, reply: oneshot::Sender<Response>) {
        self.begin_kill();
        self.killing.get_or_insert_with(Vec::new).push(reply);
    }

    /// Stops every app; the daemon exits once they all have.
    fn begin_kill(&mut self) {
        self.killing.get_or_insert_with(Vec::new);
        for app in self.apps.values_mut() {
            if app.controls.is_some() && app.status != Status::Stopping {
                let _ = send(app, Control::Stop);
                app.status = Status::Stopping;
            }
        }
    }

    fn report(&mut self, name: &str, report: Report) {
        for said in self.chatter.lines(name, &report, Instant::now()) {
            match said {
                Said::Report(text) => journal::report(name, &report, &text),
                Said::Note(text) => journal::say(&format!("{name}: {text}")),
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.report(name, &report);
        }
        if let Some(app) = self.apps.get_mut(name) {
            app.apply(&report, Instant::now());
        }
    }

    fn finished(&mut self, name: &str, outcome: Result<Outcome, String>) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        app.controls = None;
        app.running_triggers = None;
        app.listen.clear();
        app.status = match &outcome {
            Ok(Outcome::Stopped) => Status::Stopped,
            Ok(Outcome::Failed) => Status::Errored,
            Err(e) => {
                journal::say(&format!("{name}: {e}"));
                Status::Errored
            }
        };
        let waiting = std::mem::take(&mut app.waiting);
        self.after_stop(name, waiting);
    }
}

fn describe(then: Then, names: &[String]) -> String {
    let verb = match then {
        Then::Nothing => "stopped",
        Then::Start => "restarted",
        Then::Delete => "deleted",
    };
    format!("{verb} {}", names.join(", "))
}

/// A rolling reload; with its config file read again (`reread`), changed command,
/// arguments and environment (a removed key included) reach the new workers.
fn reload(app: &mut App, reread: Option<(StartApp, Parsed)>) -> Result<String, String> {
    let mut note = String::new();
    if let Some((start, parsed)) = reread {
        if parsed.spec.listen != app.spec.listen || parsed.spec.instances != app.spec.instances {
            note = " (listen and instances changes take effect on `corral restart`)".into();
        }
        let mut spec = parsed.spec;
        pm2_env(&mut spec, app.id);
        send(app, Command::Respec(Box::new(spec.clone())))?;
        app.start = start;
        app.spec.command = spec.command;
        app.spec.env = spec.env;
        app.spec.cwd = spec.cwd;
    }
    send(app, Control::Reload)?;
    Ok(format!("reloading {}{note}", app.name))
}

fn send(app: &App, command: impl Into<Command>) -> Result<(), String> {
    match &app.controls {
        Some(tx) => tx
            .try_send(command.into())
            .map_err(|_| format!("{} is busy; try again", app.name)),
        None => Err(format!(
            "{} is not running (`corral restart {}` starts it)",
            app.name, app.name
        )),
    }
}

/// Binds the app's listeners and starts its engine group in a task of its own.
/// PM2's variables, which PM2 apps read: `name` (the app's) and `pm_id` (its id), unless
/// the app sets them itself.
fn pm2_env(spec: &mut corral_core::AppSpec, id: u32) {
    for (key, value) in [("name", spec.name.clone()), ("pm_id", id.to_string())] {
        if !spec.env.iter().any(|(k, _)| k == key) {
            spec.env.push((key.into(), value.into()));
        }
    }
}

fn launch(app: &mut App, home: &Home, tx: &mpsc::UnboundedSender<Msg>) -> Result<(), String> {
    pm2_env(&mut app.spec, app.id);
    supervisor::resolve(&app.spec).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let listeners = listen::bind_all(&app.spec.listen).map_err(|e| e.to_string())?;
    app.listen = listeners.iter().map(|l| l.local.to_string()).collect();
    let (controls_tx, controls) = mpsc::channel(64);
    let (reports, mut report_rx) = mpsc::unbounded_channel();
    let (logs, mut log_rx) = mpsc::channel(1024);
    let mut files = LogFiles::new(home.logs(), app.name.clone())
        .with_format(app.lines.clone())
        .with_layout(app.layout.clone())
        .reopening_on(app.log_generation.clone());
    std::thread::spawn(move || {
        while let Some(line) = log_rx.blocking_recv() {
            let _ = files.write(&line);
        }
    });
    let name = app.name.clone();
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(report) = report_rx.recv().await {
            let _ = forward.send(Msg::Report(name.clone(), report));
        }
    });
    let spec = app.spec.clone();
    let name = app.name.clone();
    let finished = tx.clone();
    let runtime_dir = corral_core::signals::runtime_dir();
    tokio::spawn(async move {
        let channels = Channels {
            controls,
            reports,
            logs,
            reap_all: false,
        };
        let outcome = supervisor::run(&spec, &listeners, &runtime_dir, channels)
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        drop(listeners);
        let _ = finished.send(Msg::Finished(name, outcome));
    });
    let name = app.name.clone();
    app.running_triggers = Some(
        crate::triggers::start(&app.triggers, controls_tx.clone(), move |m| {
            journal::say(&format!("{name}: {m}"))
        })
        .map_err(|e| format!("{e:#}"))?,
    );
    app.controls = Some(controls_tx);
    app.status = Status::Online;
    app.rows.clear();
    app.instances = app.spec.instances;
    Ok(())
}

/// The app's declared environment as KEY=VALUE, secrets masked.
/// The app's declared environment, secrets masked, sorted by key.
fn env_vars(app: &App) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = app
        .spec
        .env
        .iter()
        .map(|(k, v)| {
            let key = k.to_string_lossy().into_owned();
            let value = crate::secrets::shown_value(&key, &v.to_string_lossy()).into_owned();
            EnvVar { key, value }
        })
        .collect();
    vars.sort_by(|a, b| a.key.cmp(&b.key));
    vars
}

/// Empties an app's log files in place (writers append, so they go on at offset 0) and
/// removes the rotated ones.
fn flush_logs(files: &[LogFileView], app: &str) -> Result<String, String> {
    let mut emptied = 0;
    for file in files
        .iter()
        .filter(|f| !crate::log_layout::is_discard(Path::new(&f.path)))
    {
        let path = Path::new(&file.path);
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = file.set_len(0);
            emptied += 1;
        }
        for n in 1.. {
            if std::fs::remove_file(format!("{}.{n}", path.display())).is_err() {
                break;
            }
        }
    }
    Ok(format!("flushed {emptied} log files of {app}"))
}

/// Opens (creating, mode 0600) a file in the home for writing, never through a symlink.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn write_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        // A leftover (or planted) temp file goes first, so the new one is ours and private.
        let _ = std::fs::remove_file(&tmp);
        let mut file = open_private(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(value)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
