//! One fold of a group's reports into typed per-slot rows, with the group's one worker
//! count: the daemon's views, the metrics, `corral run`'s service state and the PM2
//! views all read a [`SlotBoard`], so a worker is in the same state wherever it shows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use corral_proto::control::WorkerStatus;
use serde::{Deserialize, Serialize};

use crate::group::Report;
use crate::process::{ExitStatus, Pid};

/// One group's workers, slot by slot, as its reports describe them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotBoard {
    /// Workers the group should run: its spec's count until a scale changes it.
    instances: usize,
    slots: BTreeMap<usize, SlotRow>,
    /// It was asked to stop (or stopped).
    stopping: bool,
    #[serde(default)]
    counters: Counters,
}

/// One worker slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotRow {
    /// Its current worker's pid; `None` while none runs.
    pub pid: Option<Pid>,
    pub status: WorkerStatus,
    /// When its current worker started (or became ready, or left).
    #[serde(with = "crate::handover::mono")]
    pub since: Instant,
    /// Workers restarted after an unexpected exit, since start or `reset`.
    pub restarts: u32,
    /// Unexpected exits ever, restarted or not: a counter that never goes down.
    pub unexpected_exits: u64,
    /// Workers replaced on request (a restart or a reload of the running group), since
    /// start or `reset`; with `restarts`, PM2's `restart_time`.
    #[serde(default)]
    pub replaced: u32,
    /// How its last worker ended when it was not asked to.
    pub last_exit: Option<LastExit>,
    /// The last heartbeat of each live worker of the slot (a draining one included).
    #[serde(skip)]
    vitals: BTreeMap<Pid, Vitals>,
    /// Counts of the slot's workers that have exited, so that the slot's counters never
    /// go down when a worker is replaced.
    #[serde(skip)]
    gone: Vitals,
}

/// An unexpected exit: how, and after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    pub status: ExitStatus,
    #[serde(with = "crate::serde_ms::duration_ms")]
    pub uptime: Duration,
}

/// What one heartbeat says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Vitals {
    pub lag: Duration,
    pub active: u64,
    pub requests: u64,
    pub dispatched: u64,
}

/// Events of the group as a whole, counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub reloads_done: u64,
    pub reloads_aborted: u64,
    pub recovered: u64,
    pub memory_replacements: u64,
    pub lag_warnings: u64,
    pub channel_dropped: u64,
}

impl SlotRow {
    fn new(status: WorkerStatus, since: Instant) -> SlotRow {
        SlotRow {
            pid: None,
            status,
            since,
            restarts: 0,
            unexpected_exits: 0,
            replaced: 0,
            last_exit: None,
            vitals: BTreeMap::new(),
            gone: Vitals::default(),
        }
    }

    /// Every time the slot's worker was replaced, asked for or not (PM2's `restart_time`):
    /// a crashed worker counts once its replacement is on its way, not while it waits.
    pub fn restart_time(&self) -> u32 {
        let waiting = u32::from(self.status == WorkerStatus::Restarting);
        self.restarts
            .saturating_add(self.replaced)
            .saturating_sub(waiting)
    }

    /// Ready to serve, on corral's socket or not.
    pub fn is_ready(&self) -> bool {
        self.pid.is_some()
            && matches!(
                self.status,
                WorkerStatus::Online
                    | WorkerStatus::OnlineOwnPort
                    | WorkerStatus::OnlineSocketClosed
            )
    }

    /// The current worker's last heartbeat.
    pub fn current_vitals(&self) -> Option<&Vitals> {
        self.vitals.get(&self.pid?)
    }

    /// Whether any live worker of the slot has sent a heartbeat.
    pub fn heard(&self) -> bool {
        !self.vitals.is_empty()
    }

    /// Open connections of the slot's live workers (a draining one included).
    pub fn active(&self) -> u64 {
        self.vitals.values().map(|v| v.active).sum()
    }

    /// Requests the slot's workers served, the exited ones included.
    pub fn requests(&self) -> u64 {
        self.gone.requests + self.vitals.values().map(|v| v.requests).sum::<u64>()
    }

    /// Connections corral handed to the slot's workers, the exited ones included.
    pub fn dispatched(&self) -> u64 {
        self.gone.dispatched + self.vitals.values().map(|v| v.dispatched).sum::<u64>()
    }
}

impl SlotBoard {
    pub fn new(instances: usize) -> SlotBoard {
        SlotBoard {
            instances,
            slots: BTreeMap::new(),
            stopping: false,
            counters: Counters::default(),
        }
    }

    /// The group starts again with `instances` workers; the rows of its last run stay
    /// until new workers take their slots, so their counters go on.
    pub fn relaunched(&mut self, instances: usize) {
        self.scale_to(instances);
        self.stopping = false;
    }

    /// A scale asked for: the count changes now, the engine's `Scaled` confirms it.
    pub fn scale_to(&mut self, instances: usize) {
        self.instances = instances;
        self.slots.retain(|slot, _| *slot < instances);
    }

    pub fn instances(&self) -> usize {
        self.instances
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn rows(&self) -> impl Iterator<Item = (usize, &SlotRow)> {
        self.slots.iter().map(|(slot, row)| (*slot, row))
    }

    pub fn row(&self, slot: usize) -> Option<&SlotRow> {
        self.slots.get(&slot)
    }

    /// Every row, for changes that reports don't make (a hand-over marks workers ready).
    pub fn rows_mut(&mut self) -> impl Iterator<Item = &mut SlotRow> {
        self.slots.values_mut()
    }

    /// The pids of the slots' current workers.
    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.slots.values().filter_map(|r| r.pid)
    }

    /// Slots whose worker is ready to serve.
    pub fn ready(&self) -> usize {
        self.slots.values().filter(|r| r.is_ready()).count()
    }

    /// Slots that crash-loop or gave up.
    pub fn sick(&self) -> usize {
        self.slots.values().filter(|r| r.status.is_sick()).count()
    }

    /// Restarts of every slot (`restart_time` in PM2's words).
    pub fn restarts(&self) -> u32 {
        self.slots.values().map(|r| r.restarts).sum()
    }

    /// Restart counters back to zero (`corral reset`); the counters that never go down
    /// stay.
    pub fn reset(&mut self) {
        for row in self.slots.values_mut() {
            row.restarts = 0;
            row.replaced = 0;
            row.last_exit = None;
        }
    }

    /// A restart of the running group was asked for: each slot with a live worker counts
    /// one replacement now (a stopped slot that starts again is no restart, as in PM2).
    pub fn restarting(&mut self) {
        for row in self.slots.values_mut().filter(|r| r.pid.is_some()) {
            row.replaced = row.replaced.saturating_add(1);
        }
    }

    /// Folds one report in; `now` is when it came.
    pub fn apply(&mut self, report: &Report, now: Instant) {
        match report {
            Report::Spawned {
                slot,
                pid,
                replacing: None,
            } => self.set(*slot, *pid, WorkerStatus::Starting, now),
            // A replacement shows up in its slot once it is ready.
            Report::Ready { slot, pid, .. } => {
                if let Some(row) = self.slots.get_mut(slot) {
                    if row.pid.is_some_and(|old| old != *pid) {
                        row.replaced = row.replaced.saturating_add(1);
                    }
                }
                self.set(*slot, *pid, WorkerStatus::Online, now)
            }
            Report::Exited {
                slot,
                pid,
                expected,
                status,
                uptime,
            } => self.exited(*slot, *pid, *expected, *status, *uptime, now),
            Report::ListenerUnused {
                slot,
                pid,
                holds_ours,
                ..
            } => {
                if let Some(row) = self.current(*slot, *pid) {
                    row.status = if *holds_ours {
                        WorkerStatus::OnlineOwnPort
                    } else {
                        WorkerStatus::OnlineSocketClosed
                    };
                }
            }
            // Follows its Exited: the worker is done, not restarting.
            Report::NotRestarted { slot, .. } => {
                if let Some(row) = self.slots.get_mut(slot) {
                    row.status = WorkerStatus::Exited;
                    row.restarts = row.restarts.saturating_sub(1);
                }
            }
            Report::GaveUp { slot, .. } => {
                if let Some(row) = self.slots.get_mut(slot) {
                    row.status = WorkerStatus::Errored;
                    row.pid = None;
                }
            }
            Report::Scaled { to, .. } => self.scale_to(*to),
            Report::Stopping { .. } => self.stopping = true,
            Report::Vitals {
                slot,
                pid,
                lag,
                active,
                requests,
                dispatched,
                ..
            } => {
                let heartbeat = Vitals {
                    lag: *lag,
                    active: *active,
                    requests: *requests,
                    dispatched: *dispatched,
                };
                self.heard(*slot, *pid, heartbeat);
            }
            other => self.count(other),
        }
    }

    fn count(&mut self, report: &Report) {
        let c = &mut self.counters;
        match report {
            Report::ReloadFinished { .. } => c.reloads_done += 1,
            Report::ReloadAborted { .. } => c.reloads_aborted += 1,
            Report::Recovered { connections, .. } => c.recovered += *connections as u64,
            Report::MemoryLimit { .. } => c.memory_replacements += 1,
            Report::Lag { .. } => c.lag_warnings += 1,
            Report::ChannelFlooded { dropped, .. } => c.channel_dropped += dropped,
            _ => {}
        }
    }

    fn set(&mut self, slot: usize, pid: Pid, status: WorkerStatus, now: Instant) {
        let row = self
            .slots
            .entry(slot)
            .or_insert_with(|| SlotRow::new(status, now));
        row.pid = Some(pid);
        row.status = status;
        row.since = now;
    }

    /// The row of `slot` if `pid` is still its current worker.
    fn current(&mut self, slot: usize, pid: Pid) -> Option<&mut SlotRow> {
        self.slots.get_mut(&slot).filter(|r| r.pid == Some(pid))
    }

    fn exited(
        &mut self,
        slot: usize,
        pid: Pid,
        expected: bool,
        status: ExitStatus,
        uptime: Duration,
        now: Instant,
    ) {
        // A replaced worker's last numbers stay in whichever slot heard them.
        for row in self.slots.values_mut() {
            if let Some(last) = row.vitals.remove(&pid) {
                row.gone.requests += last.requests;
                row.gone.dispatched += last.dispatched;
            }
        }
        // A replaced worker leaving finds its slot moved on, and changes nothing.
        let Some(row) = self.current(slot, pid) else {
            return;
        };
        row.pid = None;
        row.since = now;
        if expected {
            row.status = WorkerStatus::Stopped;
        } else {
            row.status = WorkerStatus::Restarting;
            row.restarts += 1;
            row.unexpected_exits += 1;
            row.last_exit = Some(LastExit { status, uptime });
        }
    }

    /// A heartbeat of `pid`, counted in its slot. A slot with no row (scaled away while
    /// its worker drains) gets none: a heartbeat must not make a worker show up.
    fn heard(&mut self, slot: usize, pid: Pid, heartbeat: Vitals) {
        let Some(row) = self.slots.get_mut(&slot) else {
            return;
        };
        let last = row.vitals.entry(pid).or_default();
        // Counters from a worker only go up; a heartbeat without numbers (or a forged
        // one) can't take them back.
        *last = Vitals {
            requests: last.requests.max(heartbeat.requests),
            dispatched: last.dispatched.max(heartbeat.dispatched),
            ..heartbeat
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawned(slot: usize, pid: Pid) -> Report {
        Report::Spawned {
            slot,
            pid,
            replacing: None,
        }
    }

    fn ready(slot: usize, pid: Pid) -> Report {
        Report::Ready {
            slot,
            pid,
            after: Duration::from_millis(5),
        }
    }

    fn exited(slot: usize, pid: Pid, expected: bool) -> Report {
        Report::Exited {
            slot,
            pid,
            expected,
            status: ExitStatus::Code(1),
            uptime: Duration::from_millis(44),
        }
    }

    fn running() -> (SlotBoard, Instant) {
        let now = Instant::now();
        let mut b = SlotBoard::new(2);
        for (slot, pid) in [(0, 10), (1, 11)] {
            b.apply(&spawned(slot, pid), now);
            b.apply(&ready(slot, pid), now);
        }
        (b, now)
    }

    #[test]
    fn a_crash_is_a_restart_with_its_exit_and_the_replacement_takes_the_slot() {
        let (mut b, now) = running();
        assert_eq!(b.ready(), 2);
        b.apply(&exited(0, 10, false), now);
        let (_, row) = b.rows().next().expect("slot 0");
        assert_eq!((row.pid, row.status), (None, WorkerStatus::Restarting));
        assert_eq!(row.restarts, 1);
        let exit = row.last_exit.expect("last exit");
        assert_eq!(exit.status, ExitStatus::Code(1));
        assert_eq!((b.ready(), b.sick(), b.restarts()), (1, 1, 1));
        b.apply(&spawned(0, 12), now);
        b.apply(&ready(0, 12), now);
        assert_eq!((b.ready(), b.sick()), (2, 0));
    }

    #[test]
    fn a_reload_moves_the_slot_on_and_the_old_workers_exit_changes_nothing() {
        let (mut b, now) = running();
        let replacing = Report::Spawned {
            slot: 0,
            pid: 12,
            replacing: Some(10),
        };
        b.apply(&replacing, now);
        // Not shown until it is ready: the old worker still serves.
        assert_eq!(b.rows().next().expect("slot 0").1.pid, Some(10));
        b.apply(&ready(0, 12), now);
        b.apply(&exited(0, 10, true), now);
        let (_, row) = b.rows().next().expect("slot 0");
        assert_eq!((row.pid, row.status), (Some(12), WorkerStatus::Online));
        assert_eq!(b.ready(), 2);
        assert_eq!((row.restarts, row.replaced, row.restart_time()), (0, 1, 1));
    }

    #[test]
    fn issue_22_restart_time_counts_crashes_restarts_and_reloads_but_not_a_start_after_stop() {
        let (mut b, now) = running();
        b.restarting();
        for (slot, old, new) in [(0, 10, 20), (1, 11, 21)] {
            b.apply(&exited(slot, old, true), now);
            b.apply(&spawned(slot, new), now);
            b.apply(&ready(slot, new), now);
        }
        b.apply(&exited(0, 20, false), now);
        assert_eq!(
            b.row(0).expect("slot 0").restart_time(),
            1,
            "not while it waits"
        );
        b.apply(&spawned(0, 30), now);
        b.apply(&ready(0, 30), now);
        let times: Vec<u32> = b.rows().map(|(_, r)| r.restart_time()).collect();
        assert_eq!(times, [2, 1]);
        // Stopped, then started: nothing was running to be restarted.
        b.apply(&exited(1, 21, true), now);
        b.restarting();
        b.apply(&spawned(1, 31), now);
        assert_eq!(b.row(1).expect("slot 1").restart_time(), 1);
        b.reset();
        assert!(b.rows().all(|(_, r)| r.restart_time() == 0));
    }

    #[test]
    fn not_restarted_takes_the_restart_back_but_not_the_exit() {
        let (mut b, now) = running();
        b.apply(&exited(1, 11, false), now);
        b.apply(
            &Report::NotRestarted {
                slot: 1,
                stop_code: None,
            },
            now,
        );
        let row = b.rows().nth(1).expect("slot 1").1;
        assert_eq!(row.status, WorkerStatus::Exited);
        assert_eq!((row.restarts, row.unexpected_exits), (0, 1));
    }

    #[test]
    fn reset_zeroes_restarts_and_keeps_the_counter_that_never_goes_down() {
        let (mut b, now) = running();
        b.apply(&exited(0, 10, false), now);
        b.reset();
        let row = b.rows().next().expect("slot 0").1;
        assert_eq!((row.restarts, row.unexpected_exits), (0, 1));
        assert!(row.last_exit.is_none());
    }

    #[test]
    fn a_scale_down_drops_rows_and_changes_the_one_worker_count() {
        let (mut b, now) = running();
        b.apply(&Report::Scaled { from: 2, to: 1 }, now);
        assert_eq!((b.instances(), b.rows().count()), (1, 1));
        b.apply(
            &Report::Stopping {
                workers: 1,
                forced: false,
            },
            now,
        );
        b.relaunched(3);
        assert_eq!(
            (b.instances(), b.rows().count(), b.stopping()),
            (3, 1, false)
        );
    }

    #[test]
    fn a_heartbeat_of_a_slot_scaled_away_makes_no_row() {
        let (mut b, now) = running();
        b.apply(&Report::Scaled { from: 2, to: 1 }, now);
        let vitals = Report::Vitals {
            slot: 1,
            pid: 11,
            rss: 0,
            lag: Duration::ZERO,
            active: 1,
            requests: 5,
            dispatched: 5,
        };
        b.apply(&vitals, now);
        assert_eq!(b.rows().count(), 1);
        b.apply(&exited(1, 11, true), now);
        assert_eq!(b.rows().count(), 1);
    }

    #[test]
    fn heartbeats_only_count_up_and_survive_the_worker() {
        let (mut b, now) = running();
        let vitals = |pid, requests| Report::Vitals {
            slot: 0,
            pid,
            rss: 0,
            lag: Duration::from_millis(3),
            active: 2,
            requests,
            dispatched: requests,
        };
        b.apply(&vitals(10, 40), now);
        b.apply(&vitals(10, 0), now); // a heartbeat without numbers
        assert_eq!(b.rows().next().expect("slot 0").1.requests(), 40);
        b.apply(&vitals(12, 5), now);
        b.apply(&exited(0, 10, true), now);
        let row = b.rows().next().expect("slot 0").1;
        assert_eq!(
            (row.requests(), row.dispatched(), row.active()),
            (45, 45, 2)
        );
    }
}
