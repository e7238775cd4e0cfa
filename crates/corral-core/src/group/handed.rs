//! A group's state as it crosses `exec` to a new binary of corral (see `crate::handover`):
//! every worker with its state, every slot with its restart history.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Group, GroupConfig, Phase, Processes, Slot, Worker, WorkerState};
use crate::handover::Refused;
use crate::process::Pid;

/// What a [`Group`] knows, for the binary that takes it over.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupState {
    workers: Vec<(Pid, Worker)>,
    slots: Vec<Slot>,
    served: bool,
    lingering: Vec<Lingering>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Lingering {
    pgid: Pid,
    #[serde(with = "crate::handover::mono")]
    until: Instant,
}

impl GroupState {
    /// The pids of its workers, for the new process to reap what exited meanwhile.
    pub fn pids(&self) -> Vec<Pid> {
        self.workers.iter().map(|(pid, _)| *pid).collect()
    }

    /// Workers of `ready` that it still has as starting got ready after it was taken
    /// (a holder saw them): ready since `now`.
    pub fn mark_ready(&mut self, ready: &[Pid], now: Instant) {
        for (pid, worker) in &mut self.workers {
            if ready.contains(pid) && matches!(worker.state, WorkerState::Starting { .. }) {
                worker.state = WorkerState::Ready {
                    since: now,
                    last_ping: now,
                };
                worker.ever_ready = true;
                self.served = true;
            }
        }
    }

    /// Every process group it watches: its workers' and the lingering ones.
    pub fn groups(&self) -> Vec<Pid> {
        let lingering = self.lingering.iter().map(|l| l.pgid);
        self.pids().into_iter().chain(lingering).collect()
    }
}

impl<P: Processes> Group<P> {
    /// Whether it can be handed over now: not while a rollout or a stop is under way,
    /// a sequence of steps the new binary would have to resume halfway (they end on their
    /// own soon). Only controls and ticks start those.
    pub fn check_handover(&self) -> Result<(), Refused> {
        if self.rollout.is_some() {
            return Err(Refused::RollingOut);
        }
        if self.phase == Phase::Stopping {
            return Err(Refused::Stopping);
        }
        Ok(())
    }

    /// Its state, for the binary that takes it over, and its OS side.
    pub fn hand_over(self) -> (GroupState, P) {
        (self.snapshot(), self.procs)
    }

    /// Its state while it runs on.
    pub fn snapshot(&self) -> GroupState {
        GroupState {
            workers: self.workers.iter().map(|(p, w)| (*p, w.clone())).collect(),
            slots: self.slots.clone(),
            served: self.served,
            lingering: self
                .lingering
                .iter()
                .map(|&(pgid, until)| Lingering { pgid, until })
                .collect(),
        }
    }

    /// The group a [`Group::capture`] described, running on `procs`.
    pub fn restore(config: GroupConfig, procs: P, state: GroupState, now: Instant) -> Self {
        let mut group = Group::new(config, procs, now);
        group.workers = state.workers.into_iter().collect();
        group.slots = state.slots;
        group.served = state.served;
        group.lingering = state
            .lingering
            .into_iter()
            .map(|l| (l.pgid, l.until))
            .collect();
        group
    }
}
