//! One app's supervisor: its loop ([`run`], in `run.rs`) and what the loop uses: the
//! hand-over, the channels to the caller, strangers' pidfds, reuseport orphans and the
//! backoff of accept passes.

mod asked;
mod checks;
mod command;
mod inbox;
mod run;
mod slots;
mod workers;

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::channel::Input;
use checks::SocketChecks;
pub use command::{hand_over_request, input_request, snapshot_request, Answer, Command, Stopping};
pub use run::run;

use crate::group::{Group, Processes, Report};
use crate::listen::Listener;
use crate::notify::{NotifyError, NotifySocket};
use crate::os;
use crate::output::LogLine;
use crate::process::{Pid, SpawnError};
use crate::spec::AppSpec;

use slots::{SlotSocket, SlotSockets};
pub use workers::{InputRefused, WINDOW};
use workers::{OsProcesses, Pass, ProcsState};

use crate::group::GroupState;
use crate::handover::Refused;
use crate::notify::NotifyState;

/// Everything one app's supervisor hands to the binary that takes it over
/// ([`Command::HandOver`], `crate::handover`); its listeners travel beside it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Handed {
    notify: NotifyState,
    group: GroupState,
    procs: ProcsState,
    /// When it was taken: a snapshot a holder kept may be old by the time a daemon
    /// adopts it, and the workers were not watched in between.
    #[serde(with = "crate::handover::mono")]
    taken: Instant,
}

impl Handed {
    /// The process groups it holds.
    pub fn groups(&self) -> Vec<Pid> {
        self.group.groups()
    }

    /// See [`GroupState::mark_ready`].
    pub fn mark_ready(&mut self, ready: &[Pid]) {
        self.group.mark_ready(ready, Instant::now());
    }
}

/// An engine's listeners and state, as duplicates (see [`snapshot_request`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EngineSnapshot {
    pub listeners: Vec<crate::listen::ListenerState>,
    pub engine: Box<Handed>,
}

/// A copy of the engine's state while it runs on.
fn snapshot(
    group: &Group<OsProcesses>,
    notify: &NotifySocket,
    listeners: &[Listener],
) -> Result<EngineSnapshot, Refused> {
    let io = |e: std::io::Error| Refused::Io(e.to_string());
    let engine = Handed {
        notify: notify.snapshot().map_err(io)?,
        group: group.snapshot(),
        procs: group.processes().snapshot().map_err(io)?,
        taken: Instant::now(),
    };
    Ok(EngineSnapshot {
        listeners: listeners
            .iter()
            .map(Listener::snapshot)
            .collect::<std::io::Result<_>>()
            .map_err(io)?,
        engine: Box::new(engine),
    })
}

/// The answer to [`Command::HandOver`].
pub type HandOverResult = Result<Box<Handed>, Refused>;

/// How long after a worker got ready corral looks at which sockets it listens on (an app
/// may bind a port of its own after it said it was ready).
const SOCKET_CHECK_AFTER: Duration = Duration::from_secs(1);
/// A timer that fires this late means the supervisor itself did not run (a suspended
/// machine, CPU starvation, SIGSTOP): see [`Event::Resumed`].
const PAUSED_AFTER: Duration = Duration::from_secs(1);

/// How often worker memory is sampled when a limit is set.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(1);

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
    #[error("cannot watch the listeners for connections")]
    Listen(#[source] std::io::Error),
    #[error("cannot take over the workers another corral handed over")]
    Adopt(#[source] std::io::Error),
}

/// Where a running app sends what happens, and where it takes orders from.
pub struct Channels {
    pub controls: mpsc::Receiver<Command>,
    pub reports: Reports,
    pub logs: mpsc::Sender<LogLine>,
    /// Reap every child of the process (orphans included), as the only supervisor in
    /// it does; false where one process runs several apps, each reaping its own workers.
    pub reap_all: bool,
}

/// Where a group's reports go. A program that runs many apps tags each report with its
/// app on the way into one channel of its own, rather than giving every app a channel
/// and a task to forward it (a daemon's per-app cost).
#[derive(Clone)]
pub struct Reports(std::sync::Arc<dyn Fn(Report) -> bool + Send + Sync>);

/// The receiving end of a [`Reports`] is gone.
#[derive(Debug)]
pub struct ReportsClosed;

impl Reports {
    /// Reports to `deliver`, which says whether the report could still be taken.
    pub fn new(deliver: impl Fn(Report) -> bool + Send + Sync + 'static) -> Reports {
        Reports(std::sync::Arc::new(deliver))
    }

    /// Reports into `tx`.
    pub fn channel(tx: mpsc::UnboundedSender<Report>) -> Reports {
        Reports::new(move |report| tx.send(report).is_ok())
    }

    pub fn send(&self, report: Report) -> Result<(), ReportsClosed> {
        (self.0)(report).then_some(()).ok_or(ReportsClosed)
    }
}

/// An fd watched for readiness (a duplicate of a listener, a pidfd), owned here so that
/// its registration with the reactor can never outlive it.
type Watched = std::os::fd::OwnedFd;

/// Stops reading the channels and output pipes, handling what was read up to then, and
/// gives the group's whole state back.
async fn hand_over(
    mut group: Group<OsProcesses>,
    notify: NotifySocket,
    inputs: &mut mpsc::Receiver<(Pid, Input)>,
    reports: &Reports,
    checks: &mut SocketChecks,
) -> HandOverResult {
    let mut stopping = group.processes_mut().stop_io();
    let mut stopped = Vec::new();
    loop {
        tokio::select! {
            done = stopping.join_next() => match done {
                Some(Ok(piece)) => stopped.push(piece),
                Some(Err(_)) => {} // cannot happen: the tasks only await and send
                None => break,
            },
            Some((pid, input)) = inputs.recv() => {
                inbox::apply(&mut group, pid, input, reports);
                flush(&mut group, reports, checks);
            }
        }
    }
    while let Ok((pid, input)) = inputs.try_recv() {
        inbox::apply(&mut group, pid, input, reports);
    }
    flush(&mut group, reports, checks);
    let io = |e: std::io::Error| Refused::Io(e.to_string());
    let (state, procs) = group.hand_over();
    Ok(Box::new(Handed {
        procs: procs.into_state(stopped).map_err(io)?,
        notify: notify.hand_over().map_err(io)?,
        group: state,
        taken: Instant::now(),
    }))
}

/// Before a deadline is judged (a worker silent, slow to start or to drain), lets the
/// channel readers run and handles what they have read: after a stall the heartbeats
/// may be waiting in the sockets while the timer has already fired.
async fn hear_out(
    group: &mut Group<OsProcesses>,
    inputs: &mut mpsc::Receiver<(Pid, Input)>,
    reports: &Reports,
    checks: &mut SocketChecks,
) {
    tokio::task::yield_now().await;
    while let Ok((pid, input)) = inputs.try_recv() {
        inbox::apply(group, pid, input, reports);
    }
    flush(group, reports, checks);
}

/// Sends the group's reports on, scheduling a socket check for each worker that got ready.
fn flush(group: &mut Group<OsProcesses>, reports: &Reports, checks: &mut SocketChecks) {
    let mut all = group.take_reports();
    all.extend(group.processes_mut().take_reports());
    for report in all {
        if let Report::Ready { slot, pid, .. } = report {
            checks.schedule(pid, slot);
        }
        let _ = reports.send(report);
    }
}

fn watch(fds: &[RawFd]) -> std::io::Result<Vec<AsyncFd<Watched>>> {
    fds.iter()
        .map(|&fd| {
            // SAFETY: `fd` is a listener the caller keeps open for this whole run.
            let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
            readable_when(dup)
        })
        .collect()
}

/// `fd`, registered with the reactor for readiness to read.
fn readable_when(fd: Watched) -> std::io::Result<AsyncFd<Watched>> {
    // SAFETY: the AsyncFd owns `fd`, so the fd stays open and the same for its life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Adopted workers that are not this process's children (their daemon died): no SIGCHLD
/// comes for them, so their pidfds are watched instead.
#[derive(Default)]
struct Strangers {
    watched: Vec<(Pid, AsyncFd<Watched>)>,
    /// Already gone when looked for.
    gone: Vec<Pid>,
}

impl Strangers {
    fn watch(pids: impl Iterator<Item = Pid>) -> Strangers {
        let mut strangers = Strangers::default();
        for pid in pids {
            match os::pidfd::open(pid).and_then(readable_when) {
                Ok(fd) => strangers.watched.push((pid, fd)),
                Err(_) => strangers.gone.push(pid),
            }
        }
        strangers
    }

    fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Resolves with the first watched worker that exited, and stops watching it.
    async fn exited(&mut self) -> Pid {
        let i = std::future::poll_fn(|cx| {
            for (i, (_, fd)) in self.watched.iter().enumerate() {
                if fd.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(i);
                }
            }
            Poll::Pending
        })
        .await;
        self.watched.swap_remove(i).0
    }
}

/// Reuseport mode: the sockets of slots without a worker, watched while some worker
/// takes connections over its channel.
#[derive(Default)]
struct Orphans {
    generation: u64,
    sockets: Vec<SlotSocket>,
    watched: Vec<AsyncFd<Watched>>,
}

impl Orphans {
    /// Watches what `procs` has without a worker now.
    fn follow(&mut self, procs: &mut OsProcesses) {
        let generation = procs.orphans_generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let sockets = procs.orphans();
        let fds: Vec<RawFd> = sockets.iter().map(|s| s.fd).collect();
        // A socket that can't be watched (out of fds) is served by its slot's next worker.
        self.watched = watch(&fds).unwrap_or_default();
        self.sockets = if self.watched.len() == fds.len() {
            sockets
        } else {
            Vec::new()
        };
    }

    fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Takes what waits on every ready socket, as [`accept_ready`] does for listeners.
    fn take(&mut self, procs: &mut OsProcesses) -> Option<Pass> {
        accept_each(&self.watched, |i| procs.accept_orphan(self.sockets[i]))
    }
}

/// Resolves once some listener has connections waiting. Readiness stays set until
/// [`accept_ready`] finds that listener's queue empty.
async fn readable(watched: &[AsyncFd<Watched>]) {
    std::future::poll_fn(|cx| {
        for fd in watched {
            if let Poll::Ready(Ok(mut guard)) = fd.poll_read_ready(cx) {
                guard.retain_ready();
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// Accepts from every ready listener. The readiness guard is taken before accepting,
/// so clearing it after an empty accept cannot swallow a connection that arrived in
/// between (tokio then keeps the newer readiness). Returns the error that stopped a
/// listener with connections still waiting (out of fds), if any.
fn accept_ready(watched: &[AsyncFd<Watched>], procs: &mut OsProcesses) -> Option<Pass> {
    accept_each(watched, |i| procs.accept_from(i))
}

/// Runs `accept` for each ready socket of `watched` (by index), keeping its readiness
/// until its queue is found empty.
fn accept_each(
    watched: &[AsyncFd<Watched>],
    mut accept: impl FnMut(usize) -> Pass,
) -> Option<Pass> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut starved = None;
    for (i, fd) in watched.iter().enumerate() {
        if let Poll::Ready(Ok(mut guard)) = fd.poll_read_ready(&mut cx) {
            match accept(i) {
                Pass::Emptied => guard.clear_ready(),
                Pass::More => guard.retain_ready(),
                pass @ Pass::Starved { .. } => {
                    guard.retain_ready();
                    starved = Some(pass);
                }
            }
        }
    }
    starved
}

/// Retries accepting after corral ran out of fds: the queue is served as soon as fds
/// free up, without waiting for a new connection to wake the listener.
#[derive(Default)]
struct Starved {
    retry_at: Option<tokio::time::Instant>,
    /// Consecutive passes that accepted nothing, for the backoff.
    streak: u32,
    reported: Option<Instant>,
}

impl Starved {
    /// Every retry at most this far apart...
    const MAX_WAIT: Duration = Duration::from_millis(100);
    /// ...and said at most this often.
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    fn hit(&mut self, pass: Pass, reports: &Reports) {
        let Pass::Starved { errno, progressed } = pass else {
            return;
        };
        // Progress means fds are coming back: go again at once.
        self.streak = if progressed { 0 } else { self.streak + 1 };
        let wait = Duration::from_micros(500 << self.streak.min(8)).min(Self::MAX_WAIT);
        let now = Instant::now();
        if self
            .reported
            .is_none_or(|at| now.duration_since(at) >= Self::REPORT_EVERY)
        {
            self.reported = Some(now);
            let _ = reports.send(Report::AcceptStarved {
                error: std::io::Error::from(errno).to_string(),
                retry: Self::MAX_WAIT,
            });
        }
        self.retry_at = Some(tokio::time::Instant::now() + wait);
    }

    fn cleared(&mut self) {
        self.retry_at = None;
        self.streak = 0;
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
    os::resolve_program(program, spec.env_value("PATH"), spec.cwd.as_deref()).map_err(|source| {
        RunError::Command {
            command: program.to_string_lossy().into_owned(),
            source,
        }
    })
}
