//! Rolling replacement of workers (reload, and the replacement of one over its memory
//! limit) and scaling: one slot at a time, never fewer ready workers than before.

use std::collections::VecDeque;

use super::*;

/// Workers being replaced one slot at a time.
#[derive(Debug)]
pub(super) struct Rollout {
    pub(super) kind: RolloutKind,
    pub(super) queue: VecDeque<usize>,
    pub(super) in_flight: Option<usize>,
    pub(super) started: Instant,
    pub(super) replaced: usize,
    /// Another reload was asked for while this one ran.
    pub(super) again: bool,
    /// Tickets this rollout answers when it ends, and those the reload after it answers.
    pub(super) tickets: Vec<u64>,
    pub(super) queued_tickets: Vec<u64>,
    /// Stop-first ([`GroupConfig::stop_first`]): the in-flight slot's old worker, whose
    /// exit starts the replacement.
    pub(super) stopping: Option<Pid>,
    /// The in-flight replacement is ready and must stay up until then.
    pub(super) settling: Option<(Pid, Instant)>,
}

/// What a rollout replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// Every worker: a reload.
    Reload,
    /// One worker, over its memory limit.
    Replacement,
}

impl<P: Processes> Group<P> {
    pub(super) fn scale_to(&mut self, target: usize) {
        if self.phase != Phase::Running {
            return;
        }
        let from = self.slots.len();
        if target == 0 || (target < from && from == 1) {
            let reason = ScaleRefusal::LastWorker;
            return self.report(Report::ScaleRefused { reason });
        }
        if target > crate::spec::MAX_WORKERS {
            let limit = crate::spec::MAX_WORKERS;
            return self.report(Report::ScaleRefused {
                reason: ScaleRefusal::OverLimit { limit },
            });
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

    pub(super) fn remove_last_slot(&mut self) {
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

    /// A reload that answers `tickets` when it ends. While stopping there is none: the
    /// tickets are answered by the engine's end.
    pub(super) fn start_reload(&mut self, tickets: Vec<u64>) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(rollout) = &mut self.rollout {
            rollout.again = true;
            rollout.queued_tickets.extend(tickets);
            self.report(Report::ReloadQueued);
            return;
        }
        // A reload is how a fix gets deployed, so slots that gave up get another chance.
        for s in &mut self.slots {
            if s.state.is_done() {
                s.restart = RestartState::default();
                s.state = SlotState::RestartAt { at: self.now };
            }
        }
        let workers = self.slots.len();
        let stop_first = self.config.stop_first;
        self.report(Report::ReloadStarted {
            workers,
            stop_first,
        });
        self.rollout = Some(Rollout {
            kind: RolloutKind::Reload,
            queue: (0..workers).collect(),
            in_flight: None,
            started: self.now,
            replaced: 0,
            again: false,
            tickets,
            queued_tickets: Vec::new(),
            stopping: None,
            settling: None,
        });
        self.rollout_next();
    }

    /// Starts the replacement of the next slot that has a ready worker, or finishes.
    pub(super) fn rollout_next(&mut self) {
        loop {
            let Some(rollout) = &mut self.rollout else {
                return;
            };
            let Some(slot) = rollout.queue.pop_front() else {
                let took = self.now.saturating_duration_since(rollout.started);
                let rollout = self.rollout.take().expect("matched above");
                if rollout.kind == RolloutKind::Reload {
                    self.report(Report::ReloadFinished {
                        replaced: rollout.replaced,
                        took,
                        tickets: rollout.tickets,
                    });
                }
                if rollout.again {
                    self.start_reload(rollout.queued_tickets);
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
            if self.config.stop_first {
                let old = self.current(slot).expect("a ready current worker, above");
                if let Some(rollout) = &mut self.rollout {
                    rollout.stopping = Some(old);
                }
                self.drain(old);
                return;
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

    /// Stop-first: `pid` exited; if it is the old worker the rollout waits for, its
    /// slot's replacement starts now.
    pub(super) fn stopped_for_rollout(&mut self, pid: Pid, slot: usize) {
        let Some(rollout) = &mut self.rollout else {
            return;
        };
        if rollout.stopping != Some(pid) {
            return;
        }
        rollout.stopping = None;
        if self.phase != Phase::Running {
            return;
        }
        if let Err(error) = self.spawn(slot, Role::Incoming) {
            self.abort_rollout(slot, AbortReason::SpawnFailed(error_chain(&error)));
            self.start_slot(slot);
        }
    }

    /// Gives up on the running reload; the old workers keep serving.
    pub(super) fn abort_rollout(&mut self, slot: usize, reason: AbortReason) {
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
            rollout: rollout.kind,
            tickets: rollout.tickets,
        });
        // A reload asked for meanwhile may bring the fix for what failed: it runs.
        if rollout.again {
            self.start_reload(rollout.queued_tickets);
        }
    }
}
