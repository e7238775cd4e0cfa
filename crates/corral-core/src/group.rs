//! The actor state of one app: its worker slots, restarts, rolling reloads and stop, driven by events.
//!
//! [`Group::handle_event`] is synchronous and does all its I/O through [`Processes`], so
//! unit tests drive it with made-up pids and instants. The async loop that feeds it lives
//! in [`crate::supervisor`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use corral_proto::notify::Notice;
use nix::sys::signal::Signal;

use crate::process::{ExitStatus, Pid, SpawnError};
use crate::restart::{Decision, RestartPolicy, RestartState};
use crate::spec::{HealthPolicy, ReadyPolicy, StopPolicy};

/// The side effects the group needs from the operating system.
pub trait Processes {
    /// Starts a worker for `slot`; its pid is also its process group id.
    fn spawn(&mut self, slot: usize) -> Result<Pid, SpawnError>;
    /// Sends `signal` to the whole process group `pgid`; a group that is gone is not an error.
    fn signal_group(&mut self, pgid: Pid, signal: Signal);
    /// Starts (ready) or stops (draining, killed) handing connections to a worker.
    fn route(&mut self, pid: Pid, slot: usize, routable: bool);
    /// Asks a worker to drain over its channel; false when it has none.
    fn send_shutdown(&mut self, pid: Pid) -> bool;
    /// The worker has exited and been reaped: release what belongs to it. Returns how
    /// many connections handed to it but never taken were recovered for other workers.
    fn reaped(&mut self, pid: Pid) -> usize;
    /// Whether any process is left in group `pgid`.
    fn group_alive(&mut self, pgid: Pid) -> bool;
    /// Group `pgid` was killed whole: nothing of it remains to watch over.
    fn group_gone(&mut self, pgid: Pid);
}

/// The policies a group runs under.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub instances: usize,
    pub ready: ReadyPolicy,
    /// See [`crate::spec::AppSpec::settle`].
    pub settle: Duration,
    pub restart: RestartPolicy,
    pub stop: StopPolicy,
    pub watchdog: Option<Duration>,
    pub health: HealthPolicy,
}

/// How often lingering process groups are checked for having emptied.
const LINGER_CHECK_EVERY: Duration = Duration::from_millis(50);

/// How often a lagging worker is reported, at most.
const LAG_REPORT_EVERY: Duration = Duration::from_secs(10);
/// After the supervisor itself was paused, how long a worker has to be heard again (or
/// to get ready, or to finish draining) before it is judged: a few heartbeats.
pub const RESUME_GRACE: Duration = Duration::from_secs(3);

/// What a caller asks of a running group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Replace every worker, one at a time, without ever having fewer ready than before.
    Reload,
    ScaleUp,
    ScaleDown,
    /// Run exactly this many workers: one step, all or nothing.
    ScaleTo(usize),
    /// Ask every worker to drain and exit; SIGKILL after the kill timeout.
    Stop,
    /// SIGKILL every worker now.
    Kill,
    /// Pass a signal on to every worker's process group.
    Forward(Signal),
    /// Send a message (JSON) to every worker over its channel.
    Message(serde_json::Value),
    /// Start new workers from this spec's command, environment and working directory
    /// (a reload then replaces the running ones). Listeners, worker count and policies
    /// stay as they are.
    Respec(Box<crate::spec::AppSpec>),
}

/// An input to the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    Exited {
        pid: Pid,
        status: ExitStatus,
    },
    Notify {
        pid: Pid,
        notices: Vec<Notice>,
    },
    /// The worker said hello on its channel; it heartbeats every `heartbeat`, if set.
    Hello {
        pid: Pid,
        heartbeat: Option<Duration>,
    },
    /// A heartbeat, with how late the worker's timers fire.
    Heartbeat {
        pid: Pid,
        lag: Duration,
    },
    /// Memory of the worker's process tree, in bytes.
    Memory {
        pid: Pid,
        rss: u64,
    },
    /// Time passed; deadlines up to now are due.
    Tick,
    /// The supervisor could not run for `paused` (its timer fired that late: the machine
    /// was suspended or starved, or corral was stopped). Silence and slowness in that
    /// time are not the workers' fault: judgments that fell due get a grace period.
    Resumed {
        paused: Duration,
    },
    Control(Control),
}

/// Something that happened, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    Spawned {
        slot: usize,
        pid: Pid,
        replacing: Option<Pid>,
    },
    /// `giving_up`: the failure is permanent and no worker ever ran, so the slot is not retried.
    SpawnFailed {
        slot: usize,
        error: String,
        giving_up: bool,
    },
    Ready {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        after: Duration,
    },
    Status {
        slot: usize,
        pid: Pid,
        text: String,
    },
    Exited {
        slot: usize,
        pid: Pid,
        status: ExitStatus,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        uptime: Duration,
        expected: bool,
    },
    RestartScheduled {
        slot: usize,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        delay: Duration,
        unstable: u32,
    },
    GaveUp {
        slot: usize,
        unstable: u32,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        min_uptime: Duration,
    },
    ReadyTimeout {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        timeout: Duration,
    },
    /// The supervisor was paused; workers get `grace` to be heard before any counts as
    /// hung, slow to start or slow to drain.
    Paused {
        #[serde(serialize_with = "crate::serde_ms::duration")]
        paused: Duration,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        grace: Duration,
    },
    WatchdogTimeout {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        silent_for: Duration,
    },
    KillTimeout {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::signal")]
        signal: Signal,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        timeout: Duration,
    },
    ReloadStarted {
        workers: usize,
    },
    ReloadQueued,
    ReloadFinished {
        replaced: usize,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        took: Duration,
    },
    /// `reload` is false when the replacement was for one worker (memory limit).
    ReloadAborted {
        slot: usize,
        reason: AbortReason,
        reload: bool,
    },
    Lag {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        lag: Duration,
    },
    MemoryLimit {
        slot: usize,
        pid: Pid,
        rss: u64,
        limit: u64,
    },
    /// A worker exited and autorestart is off: its slot stays empty.
    NotRestarted {
        slot: usize,
        /// The stop exit code it ended with; None: autorestart is off.
        stop_code: Option<i32>,
    },
    /// A ready worker does not hold corral's listeners (`holds_ours` false: it closed
    /// them), or listens on ports of its own (`own`): it may serve none of corral's
    /// connections. Said once per worker, a moment after it got ready.
    ListenerUnused {
        slot: usize,
        pid: Pid,
        ours: Vec<String>,
        own: Vec<String>,
        holds_ours: bool,
    },
    /// Connections wait but corral cannot accept them (out of fds or memory); it retries
    /// every `retry` at most. Said once per 1000 failed passes.
    AcceptStarved {
        error: String,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        retry: Duration,
    },
    /// Connections handed to a worker that died before taking them, given to others.
    Recovered {
        slot: usize,
        pid: Pid,
        connections: usize,
    },
    /// A user message a worker sent on its channel (JSON text).
    Message {
        slot: usize,
        pid: Pid,
        json: String,
    },
    /// A worker sent more channel messages than the rate limit lets through; `dropped`
    /// of them were not read.
    ChannelFlooded {
        slot: usize,
        pid: Pid,
        dropped: u64,
        per_second: u32,
    },
    /// A worker's heartbeat numbers: memory, timer lag, open connections, requests
    /// served, and connections corral handed it (dispatched modes). For metrics; never
    /// a line of output.
    Vitals {
        slot: usize,
        pid: Pid,
        rss: u64,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        lag: Duration,
        active: u64,
        requests: u64,
        dispatched: u64,
    },
    /// A worker broke its channel's rules; the message says how.
    ChannelProblem {
        slot: usize,
        pid: Pid,
        problem: String,
    },
    Scaled {
        from: usize,
        to: usize,
    },
    /// A worker listened on a port corral had no listener for; corral bound it for the
    /// app (at `addr`) and hands it to every worker that asks.
    PortBound {
        slot: usize,
        pid: Pid,
        addr: String,
    },
    /// ...or could not bind it; the worker's `listen` got the error.
    PortRefused {
        slot: usize,
        pid: Pid,
        addr: String,
        error: String,
    },
    ScaleRefused {
        reason: &'static str,
    },
    Stopping {
        workers: usize,
        forced: bool,
    },
}

/// Why a rolling reload stopped before it replaced every worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    SpawnFailed(String),
    ExitedBeforeReady(ExitStatus),
    NotReadyInTime(#[serde(serialize_with = "crate::serde_ms::duration")] Duration),
    /// It said it was ready, then exited `after` that, within the settle window.
    ExitedWhileSettling {
        status: ExitStatus,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        after: Duration,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        settle: Duration,
    },
}

/// How a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request; every worker has exited.
    Stopped,
    /// Every slot gave up after a crash loop; nothing is left running.
    Failed,
}

impl Report {
    /// Numbers for the metrics board, not an event anyone reads as a line.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Report::Vitals { .. })
    }
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Starting {
        since: Instant,
        deadline: Instant,
    },
    Ready {
        since: Instant,
        last_ping: Instant,
    },
    /// Asked to exit; SIGKILL at `deadline`.
    Draining {
        since: Instant,
        deadline: Instant,
    },
    /// SIGKILL sent; waiting for the exit.
    Killed {
        since: Instant,
    },
}

/// One worker process.
#[derive(Debug, Clone)]
pub struct Worker {
    pub slot: usize,
    pub started: Instant,
    pub ever_ready: bool,
    pub state: WorkerState,
    /// Silence after which it counts as hung: set by its hello (heartbeats), else the
    /// group's sd_notify watchdog.
    pub watchdog: Option<Duration>,
    lag_reported: Option<Instant>,
}

/// A stable worker position (`CORRAL_WORKER_ID`). `current` serves; `incoming` is its
/// replacement while a reload runs. A draining worker belongs to no slot any more.
#[derive(Debug, Clone, Default)]
struct Slot {
    current: Option<Pid>,
    incoming: Option<Pid>,
    restart: RestartState,
    restart_at: Option<Instant>,
    errored: bool,
    /// Its worker exited and autorestart is off.
    finished: bool,
}

#[derive(Debug)]
struct Rollout {
    /// A reload of every worker, or the replacement of one (memory limit).
    reload: bool,
    queue: VecDeque<usize>,
    in_flight: Option<usize>,
    started: Instant,
    replaced: usize,
    /// Another reload was asked for while this one ran.
    again: bool,
    /// The in-flight replacement is ready and must stay up until then.
    settling: Option<(Pid, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Current,
    Incoming,
    Detached,
}

/// The state of one app's workers. See the module docs.
pub struct Group<P> {
    config: GroupConfig,
    procs: P,
    now: Instant,
    workers: BTreeMap<Pid, Worker>,
    slots: Vec<Slot>,
    rollout: Option<Rollout>,
    phase: Phase,
    /// Some worker got ready at least once: the command is known to work.
    served: bool,
    reports: Vec<Report>,
    /// Process groups whose leader exited while draining; the rest of the group (an app
    /// behind `npm start` or `sh -c`) keeps the drain time, then gets SIGKILL.
    lingering: Vec<(Pid, Instant)>,
}

impl<P: Processes> Group<P> {
    pub fn new(config: GroupConfig, procs: P, now: Instant) -> Self {
        Group {
            slots: vec![Slot::default(); config.instances],
            config,
            procs,
            now,
            workers: BTreeMap::new(),
            rollout: None,
            phase: Phase::Running,
            served: false,
            reports: Vec::new(),
            lingering: Vec::new(),
        }
    }

    /// Applies one event at time `now`.
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        self.now = now.max(self.now);
        match event {
            Event::Start => {
                for slot in 0..self.slots.len() {
                    self.start_slot(slot);
                }
            }
            Event::Exited { pid, status } => self.on_exit(pid, status),
            Event::Notify { pid, notices } => {
                for notice in notices {
                    self.on_notice(pid, notice);
                }
            }
            Event::Hello { pid, heartbeat } => {
                let timeout = self.config.health.heartbeat_timeout;
                if let (Some(w), Some(every)) = (self.workers.get_mut(&pid), heartbeat) {
                    // An explicit --watchdog that is shorter still applies.
                    let by_heartbeat = timeout.max(every * 3);
                    w.watchdog = Some(w.watchdog.map_or(by_heartbeat, |wd| wd.min(by_heartbeat)));
                    // The count starts now: a worker taken as ready before it said hello
                    // (an app behind npm that took long to start) is not late already.
                    if let WorkerState::Ready { last_ping, .. } = &mut w.state {
                        *last_ping = self.now;
                    }
                }
            }
            Event::Heartbeat { pid, lag } => self.on_heartbeat(pid, lag),
            Event::Memory { pid, rss } => self.on_memory(pid, rss),
            Event::Tick => self.on_tick(),
            Event::Resumed { paused } => self.on_resumed(paused),
            Event::Control(control) => self.on_control(control),
        }
    }

    /// Reports produced since the last call, oldest first.
    pub fn take_reports(&mut self) -> Vec<Report> {
        std::mem::take(&mut self.reports)
    }

    /// The earliest instant at which a [`Event::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let workers = self.workers.values().filter_map(|w| match w.state {
            WorkerState::Starting { deadline, .. } | WorkerState::Draining { deadline, .. } => {
                Some(deadline)
            }
            WorkerState::Ready { last_ping, .. } => w.watchdog.map(|wd| last_ping + wd),
            WorkerState::Killed { .. } => None,
        });
        let restarts = self.slots.iter().filter_map(|s| s.restart_at);
        let settled = self
            .rollout
            .as_ref()
            .and_then(|r| r.settling)
            .map(|(_, at)| at);
        // Lingering groups are looked at often: their processes are not our children
        // (in a daemon), so their exits may never reach us.
        let lingering = self
            .lingering
            .iter()
            .map(|&(_, until)| until.min(self.now + LINGER_CHECK_EVERY));
        workers
            .chain(restarts)
            .chain(settled)
            .chain(lingering)
            .min()
    }

    /// `Some` once the group has nothing left to do.
    pub fn outcome(&self) -> Option<Outcome> {
        if !self.workers.is_empty() || !self.lingering.is_empty() {
            return None;
        }
        match self.phase {
            Phase::Stopping => Some(Outcome::Stopped),
            Phase::Running if self.slots.iter().all(|s| s.errored || s.finished) => {
                if self.slots.iter().any(|s| s.errored) {
                    Some(Outcome::Failed)
                } else {
                    Some(Outcome::Stopped)
                }
            }
            Phase::Running => None,
        }
    }

    pub fn is_known(&self, pid: Pid) -> bool {
        self.workers.contains_key(&pid)
    }

    pub fn workers(&self) -> &BTreeMap<Pid, Worker> {
        &self.workers
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The pid serving `slot`, if any.
    pub fn current(&self, slot: usize) -> Option<Pid> {
        self.slots.get(slot).and_then(|s| s.current)
    }

    pub fn reloading(&self) -> bool {
        self.rollout.is_some()
    }

    /// The OS side, for the supervisor loop (channels, dispatch).
    pub fn processes_mut(&mut self) -> &mut P {
        &mut self.procs
    }

    /// The slot of a live worker.
    pub fn slot_of(&self, pid: Pid) -> Option<usize> {
        self.workers.get(&pid).map(|w| w.slot)
    }

    fn report(&mut self, report: Report) {
        self.reports.push(report);
    }

    fn role(&self, pid: Pid, slot: usize) -> Role {
        match self.slots.get(slot) {
            Some(s) if s.current == Some(pid) => Role::Current,
            Some(s) if s.incoming == Some(pid) => Role::Incoming,
            _ => Role::Detached,
        }
    }

    /// Spawns a worker as `slot`'s current one; a failure counts as an unstable exit,
    /// except that a command that never worked and cannot work is not retried at all.
    fn start_slot(&mut self, slot: usize) {
        if let Err(error) = self.spawn(slot, Role::Current) {
            let giving_up = !self.served && error.is_permanent();
            self.report(Report::SpawnFailed {
                slot,
                error: error_chain(&error),
                giving_up,
            });
            if giving_up {
                self.slots[slot].errored = true;
            } else {
                self.schedule_restart(slot, Duration::ZERO, false);
            }
        }
    }

    fn spawn(&mut self, slot: usize, role: Role) -> Result<Pid, SpawnError> {
        let pid = self.procs.spawn(slot)?;
        let deadline = self.now
            + match self.config.ready {
                ReadyPolicy::Notify { timeout, .. } => timeout,
                ReadyPolicy::Delay { delay } => delay,
            };
        let state = WorkerState::Starting {
            since: self.now,
            deadline,
        };
        self.workers.insert(
            pid,
            Worker {
                slot,
                started: self.now,
                ever_ready: false,
                state,
                watchdog: self.config.watchdog,
                lag_reported: None,
            },
        );
        let s = &mut self.slots[slot];
        let replacing = match role {
            Role::Incoming => {
                s.incoming = Some(pid);
                s.current
            }
            _ => {
                s.current = Some(pid);
                None
            }
        };
        self.report(Report::Spawned {
            slot,
            pid,
            replacing,
        });
        Ok(pid)
    }

    fn on_exit(&mut self, pid: Pid, status: ExitStatus) {
        self.prune_lingering();
        let Some(worker) = self.workers.remove(&pid) else {
            return; // an orphan we reaped as subreaper, or a fork that failed to exec
        };
        match worker.state {
            // Its leader was a wrapper (npm, a shell): the app under it drains on.
            WorkerState::Draining { deadline, .. }
                if deadline > self.now && self.procs.group_alive(pid) =>
            {
                self.lingering.push((pid, deadline));
            }
            // Nothing the worker started may outlive it: a leftover child holding the
            // listener would take connections nobody serves.
            _ => self.kill_group(pid),
        }
        let recovered = self.procs.reaped(pid);
        let slot = worker.slot;
        let uptime = self.now.saturating_duration_since(worker.started);
        let role = self.role(pid, slot);
        self.report(Report::Exited {
            slot,
            pid,
            status,
            uptime,
            expected: role == Role::Detached,
        });
        if recovered > 0 {
            self.report(Report::Recovered {
                slot,
                pid,
                connections: recovered,
            });
        }
        match role {
            Role::Detached => {}
            Role::Current => {
                self.slots[slot].current = None;
                // During a reload the incoming worker takes the slot over when ready.
                let stop_code = match status {
                    ExitStatus::Code(code)
                        if self.config.restart.stop_exit_codes.contains(code) =>
                    {
                        Some(code)
                    }
                    _ => None,
                };
                if stop_code.is_some() {
                    self.slots[slot].finished = true;
                    self.report(Report::NotRestarted { slot, stop_code });
                } else if self.phase == Phase::Running && self.slots[slot].incoming.is_none() {
                    self.schedule_restart(slot, uptime, worker.ever_ready);
                }
            }
            Role::Incoming => {
                self.slots[slot].incoming = None;
                let reason = match worker.state {
                    WorkerState::Ready { since, .. } => AbortReason::ExitedWhileSettling {
                        status,
                        after: self.now.saturating_duration_since(since),
                        settle: self.config.settle,
                    },
                    _ => AbortReason::ExitedBeforeReady(status),
                };
                self.abort_rollout(slot, reason);
                if self.phase == Phase::Running && self.slots[slot].current.is_none() {
                    self.schedule_restart(slot, uptime, worker.ever_ready);
                }
            }
        }
    }

    fn schedule_restart(&mut self, slot: usize, uptime: Duration, ever_ready: bool) {
        let policy = self.config.restart;
        let s = &mut self.slots[slot];
        if !policy.autorestart {
            s.finished = true;
            self.report(Report::NotRestarted {
                slot,
                stop_code: None,
            });
            return;
        }
        match s.restart.on_exit(&policy, uptime, ever_ready) {
            Decision::RestartIn(delay) => {
                s.restart_at = Some(self.now + delay);
                let unstable = s.restart.unstable;
                self.report(Report::RestartScheduled {
                    slot,
                    delay,
                    unstable,
                });
            }
            Decision::GiveUp => {
                s.errored = true;
                s.restart_at = None;
                let unstable = s.restart.unstable;
                self.report(Report::GaveUp {
                    slot,
                    unstable,
                    min_uptime: policy.min_uptime,
                });
            }
        }
    }

    fn on_notice(&mut self, pid: Pid, notice: Notice) {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        let slot = worker.slot;
        match notice {
            Notice::Ready => self.on_ready(pid),
            Notice::Watchdog => {
                if let WorkerState::Ready { last_ping, .. } = &mut worker.state {
                    *last_ping = self.now;
                }
            }
            Notice::WatchdogTrigger => {
                let silent_for = Duration::ZERO;
                self.report(Report::WatchdogTimeout {
                    slot,
                    pid,
                    silent_for,
                });
                self.kill(pid);
            }
            Notice::Status(text) => self.report(Report::Status { slot, pid, text }),
            Notice::Reloading | Notice::Stopping | Notice::WatchdogUsec(_) | Notice::Errno(_) => {}
        }
    }

    fn on_heartbeat(&mut self, pid: Pid, lag: Duration) {
        let now = self.now;
        let warn = self.config.health.lag_warning;
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        if let WorkerState::Ready { last_ping, .. } = &mut worker.state {
            *last_ping = now;
        }
        let due = worker
            .lag_reported
            .is_none_or(|at| now.saturating_duration_since(at) >= LAG_REPORT_EVERY);
        if lag >= warn && due {
            worker.lag_reported = Some(now);
            let slot = worker.slot;
            self.report(Report::Lag { slot, pid, lag });
        }
    }

    /// Over the memory limit: a replacement starts, and the worker drains once it is ready.
    fn on_memory(&mut self, pid: Pid, rss: u64) {
        let Some(limit) = self.config.health.max_memory else {
            return;
        };
        let Some(worker) = self.workers.get(&pid) else {
            return;
        };
        let slot = worker.slot;
        let serving = matches!(worker.state, WorkerState::Ready { .. })
            && self.role(pid, slot) == Role::Current;
        if rss <= limit || !serving || self.phase != Phase::Running || self.rollout.is_some() {
            return; // a running reload or replacement deals with it, or the next sample does
        }
        self.report(Report::MemoryLimit {
            slot,
            pid,
            rss,
            limit,
        });
        self.rollout = Some(Rollout {
            reload: false,
            queue: VecDeque::from([slot]),
            in_flight: None,
            started: self.now,
            replaced: 0,
            again: false,
            settling: None,
        });
        self.rollout_next();
    }

    fn on_ready(&mut self, pid: Pid) {
        let now = self.now;
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Starting { .. }) {
            return; // a repeated READY=1, or one from a worker already on its way out
        }
        worker.state = WorkerState::Ready {
            since: now,
            last_ping: now,
        };
        worker.ever_ready = true;
        self.served = true;
        let slot = worker.slot;
        let after = now.saturating_duration_since(worker.started);
        self.report(Report::Ready { slot, pid, after });
        // Route to the new worker before the old one stops taking connections.
        self.procs.route(pid, slot, true);
        if self.role(pid, slot) == Role::Incoming {
            let settle = self.config.settle;
            match &mut self.rollout {
                Some(rollout) if !settle.is_zero() => rollout.settling = Some((pid, now + settle)),
                _ => self.promote(pid, slot),
            }
        }
    }

    /// The replacement in `slot` takes it over; the worker it replaces drains.
    fn promote(&mut self, pid: Pid, slot: usize) {
        let s = &mut self.slots[slot];
        s.incoming = None;
        let old = s.current.replace(pid);
        if let Some(old) = old {
            self.drain(old);
        }
        if let Some(rollout) = &mut self.rollout {
            rollout.replaced += 1;
            rollout.in_flight = None;
            rollout.settling = None;
        }
        self.rollout_next();
    }

    /// A worker that is not ready in time is stopped gracefully, not killed: in shared
    /// mode it may already have accepted connections, and those deserve an answer.
    /// A replacement is detached and the reload aborted at once; a slot's current worker
    /// stays attached, so its exit counts as an unstable one and it is restarted.
    fn on_ready_timeout(&mut self, pid: Pid, slot: usize, timeout: Duration) {
        if self.role(pid, slot) == Role::Incoming {
            self.abort_rollout(slot, AbortReason::NotReadyInTime(timeout));
        } else {
            self.ask_to_exit(pid);
        }
    }

    /// Asks a worker to exit and detaches it from its slot.
    fn drain(&mut self, pid: Pid) {
        let Some(worker) = self.workers.get(&pid) else {
            return;
        };
        if let Some(s) = self.slots.get_mut(worker.slot) {
            if s.current == Some(pid) {
                s.current = None;
            }
            if s.incoming == Some(pid) {
                s.incoming = None;
            }
        }
        self.ask_to_exit(pid);
    }

    /// Sends the stop signal and starts the kill timer; slot membership is unchanged.
    fn ask_to_exit(&mut self, pid: Pid) {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return;
        };
        if matches!(
            worker.state,
            WorkerState::Draining { .. } | WorkerState::Killed { .. }
        ) {
            return;
        }
        worker.state = WorkerState::Draining {
            since: self.now,
            deadline: self.now + self.config.stop.kill_timeout,
        };
        let slot = worker.slot;
        self.procs.route(pid, slot, false);
        let by_message = self.config.stop.message && self.procs.send_shutdown(pid);
        if !by_message {
            self.procs.signal_group(pid, self.config.stop.signal);
        }
    }

    /// SIGKILLs a worker's group; it stays in its slot until its exit is seen.
    fn kill(&mut self, pid: Pid) {
        if let Some(worker) = self.workers.get_mut(&pid) {
            worker.state = WorkerState::Killed { since: self.now };
            let slot = worker.slot;
            self.procs.route(pid, slot, false);
            self.procs.signal_group(pid, Signal::SIGKILL);
        }
    }

    fn kill_group(&mut self, pgid: Pid) {
        self.procs.signal_group(pgid, Signal::SIGKILL);
        self.procs.group_gone(pgid);
    }

    /// Lingering groups that emptied are forgotten; those past their drain time killed.
    fn prune_lingering(&mut self) {
        let now = self.now;
        let mut lingering = std::mem::take(&mut self.lingering);
        lingering.retain(|&(pgid, until)| {
            if now >= until {
                self.kill_group(pgid);
                false
            } else if !self.procs.group_alive(pgid) {
                self.procs.group_gone(pgid);
                false
            } else {
                true
            }
        });
        self.lingering = lingering;
    }

    /// Moves every judgment that fell due while the supervisor was paused to `now` plus a
    /// grace period, so that only silence corral could have heard counts.
    fn on_resumed(&mut self, paused: Duration) {
        let now = self.now;
        let ready_timeout = matches!(
            self.config.ready,
            ReadyPolicy::Notify {
                assume_ready: false,
                ..
            }
        );
        for w in self.workers.values_mut() {
            match &mut w.state {
                WorkerState::Ready { last_ping, .. } => {
                    if let Some(wd) = w.watchdog {
                        // Due at `now + grace`, never later than a full watchdog from now.
                        let earliest = now.checked_sub(wd.saturating_sub(RESUME_GRACE));
                        *last_ping = earliest.map_or(*last_ping, |at| at.max(*last_ping));
                    }
                }
                WorkerState::Starting { deadline, .. } if ready_timeout => {
                    *deadline = (*deadline).max(now + RESUME_GRACE);
                }
                WorkerState::Draining { deadline, .. } => {
                    *deadline = (*deadline).max(now + RESUME_GRACE);
                }
                WorkerState::Starting { .. } | WorkerState::Killed { .. } => {}
            }
        }
        self.report(Report::Paused {
            paused,
            grace: RESUME_GRACE,
        });
    }

    fn on_tick(&mut self) {
        self.prune_lingering();
        let now = self.now;
        let settled = self.rollout.as_ref().and_then(|r| r.settling);
        if let Some((pid, _)) = settled.filter(|&(_, at)| now >= at) {
            if let Some(slot) = self.workers.get(&pid).map(|w| w.slot) {
                self.promote(pid, slot);
            }
        }
        let due: Vec<(Pid, WorkerState)> = self
            .workers
            .iter()
            .map(|(&pid, w)| (pid, w.state))
            .collect();
        for (pid, state) in due {
            let slot = self.workers[&pid].slot;
            match state {
                WorkerState::Starting { deadline, .. } if now >= deadline => {
                    match self.config.ready {
                        ReadyPolicy::Delay { .. }
                        | ReadyPolicy::Notify {
                            assume_ready: true, ..
                        } => self.on_ready(pid),
                        ReadyPolicy::Notify { timeout, .. } => {
                            self.report(Report::ReadyTimeout { slot, pid, timeout });
                            self.on_ready_timeout(pid, slot, timeout);
                        }
                    }
                }
                WorkerState::Ready { last_ping, .. } => {
                    if let Some(wd) = self.workers[&pid].watchdog {
                        if now >= last_ping + wd {
                            let silent_for = now - last_ping;
                            self.report(Report::WatchdogTimeout {
                                slot,
                                pid,
                                silent_for,
                            });
                            self.kill(pid);
                        }
                    }
                }
                WorkerState::Draining { deadline, .. } if now >= deadline => {
                    let stop = self.config.stop;
                    self.report(Report::KillTimeout {
                        slot,
                        pid,
                        signal: stop.signal,
                        timeout: stop.kill_timeout,
                    });
                    self.kill(pid);
                }
                _ => {}
            }
        }
        if self.phase != Phase::Running {
            return;
        }
        for slot in 0..self.slots.len() {
            let s = &mut self.slots[slot];
            if s.restart_at.is_some_and(|at| now >= at) {
                s.restart_at = None;
                if s.current.is_none() && s.incoming.is_none() {
                    self.start_slot(slot);
                }
            }
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Reload => self.start_reload(),
            Control::ScaleUp => self.scale_to(self.slots.len() + 1),
            Control::ScaleDown => self.scale_to(self.slots.len().saturating_sub(1)),
            Control::ScaleTo(n) => self.scale_to(n),
            Control::Stop => self.stop(false),
            Control::Kill => self.stop(true),
            // These belong to the OS side; the supervisor loop handles them.
            Control::Message(_) | Control::Respec(_) => {}
            Control::Forward(signal) => {
                let pids: Vec<Pid> = self.workers.keys().copied().collect();
                for pid in pids {
                    self.procs.signal_group(pid, signal);
                }
            }
        }
    }

    /// Drains every worker (SIGKILL after the kill timeout), or with `forced` kills them now.
    fn stop(&mut self, forced: bool) {
        if self.phase == Phase::Stopping && !forced {
            return;
        }
        self.phase = Phase::Stopping;
        self.rollout = None;
        for s in &mut self.slots {
            s.restart_at = None;
        }
        let workers = self.workers.len();
        self.report(Report::Stopping { workers, forced });
        let pids: Vec<Pid> = self.workers.keys().copied().collect();
        for pid in pids {
            if forced {
                self.kill(pid);
            } else {
                self.drain(pid);
            }
        }
    }

    fn scale_to(&mut self, target: usize) {
        if self.phase != Phase::Running {
            return;
        }
        let from = self.slots.len();
        if target == 0 || (target < from && from == 1) {
            let reason = "cannot scale down: already at 1 worker; stop the app to stop it";
            return self.report(Report::ScaleRefused { reason });
        }
        if target > crate::spec::MAX_WORKERS {
            let reason = "cannot scale up: over the limit of 4096 workers";
            return self.report(Report::ScaleRefused { reason });
        }
        if target == from {
            return;
        }
        self.report(Report::Scaled { from, to: target });
        for slot in from..target {
            self.slots.push(Slot::default());
            self.start_slot(slot);
        }
        for _ in target..from {
            self.remove_last_slot();
        }
    }

    fn remove_last_slot(&mut self) {
        let removed = self.slots.pop().expect("scale_to keeps at least one slot");
        let slot = self.slots.len();
        for pid in [removed.current, removed.incoming].into_iter().flatten() {
            self.drain(pid);
        }
        if let Some(rollout) = &mut self.rollout {
            rollout.queue.retain(|&s| s < slot);
            if rollout.in_flight == Some(slot) {
                rollout.in_flight = None;
                rollout.settling = None;
                self.rollout_next();
            }
        }
    }

    fn start_reload(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(rollout) = &mut self.rollout {
            rollout.again = true;
            self.report(Report::ReloadQueued);
            return;
        }
        // A reload is how a fix gets deployed, so slots that gave up get another chance.
        for s in &mut self.slots {
            if s.errored || s.finished {
                s.errored = false;
                s.finished = false;
                s.restart = RestartState::default();
                s.restart_at = Some(self.now);
            }
        }
        let workers = self.slots.len();
        self.report(Report::ReloadStarted { workers });
        self.rollout = Some(Rollout {
            reload: true,
            queue: (0..workers).collect(),
            in_flight: None,
            started: self.now,
            replaced: 0,
            again: false,
            settling: None,
        });
        self.rollout_next();
    }

    /// Starts the replacement of the next slot that has a ready worker, or finishes.
    fn rollout_next(&mut self) {
        loop {
            let Some(rollout) = &mut self.rollout else {
                return;
            };
            let Some(slot) = rollout.queue.pop_front() else {
                let (replaced, again) = (rollout.replaced, rollout.again);
                let took = self.now.saturating_duration_since(rollout.started);
                let reload = rollout.reload;
                self.rollout = None;
                if reload {
                    self.report(Report::ReloadFinished { replaced, took });
                }
                if again {
                    self.start_reload();
                }
                return;
            };
            // A slot that is starting or waiting to restart will run the new code anyway.
            let ready = self
                .current(slot)
                .and_then(|pid| self.workers.get(&pid))
                .is_some_and(|w| matches!(w.state, WorkerState::Ready { .. }));
            if !ready {
                continue;
            }
            if let Some(rollout) = &mut self.rollout {
                rollout.in_flight = Some(slot);
            }
            match self.spawn(slot, Role::Incoming) {
                Ok(_) => return,
                Err(error) => {
                    self.abort_rollout(slot, AbortReason::SpawnFailed(error_chain(&error)));
                    return;
                }
            }
        }
    }

    /// Gives up on the running reload; the old workers keep serving.
    fn abort_rollout(&mut self, slot: usize, reason: AbortReason) {
        let Some(rollout) = self.rollout.take() else {
            return;
        };
        if let Some(pid) = self.slots.get(slot).and_then(|s| s.incoming) {
            // Detached, so its exit is not mistaken for a crash of the slot.
            self.drain(pid);
        }
        self.report(Report::ReloadAborted {
            slot,
            reason,
            reload: rollout.reload,
        });
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests;
