//! How a group judges its workers: readiness, heartbeats and the watchdog, memory and
//! lag, deadlines as time passes, and the grace after the supervisor itself was paused.

use super::*;

impl<P: Processes> Group<P> {
    pub(super) fn on_notice(&mut self, pid: Pid, notice: Notice) {
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

    pub(super) fn on_heartbeat(&mut self, pid: Pid, lag: Duration) {
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
    pub(super) fn on_memory(&mut self, pid: Pid, rss: u64) {
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
            kind: RolloutKind::Replacement,
            queue: VecDeque::from([slot]),
            in_flight: None,
            started: self.now,
            replaced: 0,
            again: false,
            tickets: Vec::new(),
            queued_tickets: Vec::new(),
            stopping: None,
            settling: None,
        });
        self.rollout_next();
    }

    /// A worker that is not ready in time is stopped gracefully, not killed: in shared
    /// mode it may already have accepted connections, and those deserve an answer.
    /// A replacement is detached and the reload aborted at once; a slot's current worker
    /// stays attached, so its exit counts as an unstable one and it is restarted.
    pub(super) fn on_ready_timeout(&mut self, pid: Pid, slot: usize, timeout: Duration) {
        if self.role(pid, slot) == Role::Incoming {
            self.abort_rollout(slot, AbortReason::NotReadyInTime(timeout));
        } else {
            self.ask_to_exit(pid);
        }
    }

    /// Moves every judgment that fell due while the supervisor was paused to `now` plus a
    /// grace period, so that only silence corral could have heard counts.
    pub(super) fn on_resumed(&mut self, paused: Duration) {
        self.give_grace();
        self.report(Report::Paused {
            paused,
            grace: RESUME_GRACE,
        });
    }

    /// Every judgment that fell due is moved to [`RESUME_GRACE`] from now: nobody
    /// listened to the workers for a while (corral paused; or they were adopted from a
    /// daemon that died, see [`Group::adopted_unwatched`]).
    fn give_grace(&mut self) {
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
    }

    /// Adopted, at `now`, after nobody watched the workers for a while (their daemon
    /// died): as after a pause, every judgment that fell due waits [`RESUME_GRACE`].
    pub fn adopted_unwatched(&mut self, now: Instant) {
        self.now = now.max(self.now);
        self.give_grace();
    }

    pub(super) fn on_tick(&mut self) {
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
            if s.state.restart_at().is_some_and(|at| now >= at) {
                s.state = SlotState::Active;
                if s.current.is_none() && s.incoming.is_none() {
                    self.start_slot(slot);
                }
            }
        }
    }

    /// Lingering groups that emptied are forgotten; those past their drain time killed.
    pub(super) fn prune_lingering(&mut self) {
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
}
