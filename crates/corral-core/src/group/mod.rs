//! The actor state of one app: its worker slots, restarts, rolling reloads and stop, driven by events.
//!
//! [`Group::handle_event`] is synchronous and does all its I/O through [`Processes`], so
//! unit tests drive it with made-up pids and instants. The async loop that feeds it lives
//! in [`crate::supervisor`].

mod event;
mod handed;
mod health;
mod life;
mod report;
mod rollout;
mod slot;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use corral_proto::notify::Notice;
use nix::sys::signal::Signal;

use crate::process::{ExitStatus, Pid, SpawnError};
use crate::restart::{Decision, RestartPolicy, RestartState};
use crate::spec::{HealthPolicy, ReadyPolicy, StopPolicy};

pub use event::{Control, Event};
pub use handed::GroupState;
pub use report::{AbortReason, ChannelProblem, Outcome, Report, ScaleRefusal};
use rollout::Rollout;
pub use rollout::RolloutKind;
use slot::{Slot, SlotState};
pub use slot::{Worker, WorkerState};

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
    /// The worker of `slot` has exited and been reaped: release what belongs to it.
    /// Returns how many connections handed to it but never taken were recovered for
    /// other workers.
    fn reaped(&mut self, pid: Pid, slot: usize) -> usize;
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
    /// The workers bind their own ports (PM2's fork mode, no corral listener): a
    /// replacement could not bind beside the worker it replaces, so a reload stops each
    /// worker before it starts its replacement, one slot at a time.
    pub stop_first: bool,
}

/// How often lingering process groups are checked for having emptied.
const LINGER_CHECK_EVERY: Duration = Duration::from_millis(50);

/// How often a lagging worker is reported, at most.
const LAG_REPORT_EVERY: Duration = Duration::from_secs(10);
/// After the supervisor itself was paused, how long a worker has to be heard again (or
/// to get ready, or to finish draining) before it is judged: a few heartbeats.
pub const RESUME_GRACE: Duration = Duration::from_secs(3);

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
        let restarts = self.slots.iter().filter_map(|s| s.state.restart_at());
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
            Phase::Running if self.slots.iter().all(|s| s.state.is_done()) => {
                if self.slots.iter().any(|s| s.state == SlotState::GaveUp) {
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

    /// The OS side, read only.
    pub fn processes(&self) -> &P {
        &self.procs
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

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Reload => self.start_reload(Vec::new()),
            Control::ReloadTicket(ticket) => self.start_reload(vec![ticket]),
            Control::ScaleUp => self.scale_to(self.slots.len() + 1),
            Control::ScaleDown => self.scale_to(self.slots.len().saturating_sub(1)),
            Control::ScaleTo(n) => self.scale_to(n),
            Control::Stop => self.stop(false),
            Control::Kill => self.stop(true),
            Control::Forward(signal) => {
                let pids: Vec<Pid> = self.workers.keys().copied().collect();
                for pid in pids {
                    self.procs.signal_group(pid, signal);
                }
            }
        }
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
