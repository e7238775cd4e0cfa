//! A worker's life in its slot: spawn, ready, exit and restart, drain and kill, and the
//! group's stop.

use super::*;

impl<P: Processes> Group<P> {
    /// Spawns a worker as `slot`'s current one; a failure counts as an unstable exit,
    /// except that a command that never worked and cannot work is not retried at all.
    pub(super) fn start_slot(&mut self, slot: usize) {
        if let Err(error) = self.spawn(slot, Role::Current) {
            let giving_up = !self.served && error.is_permanent();
            self.report(Report::SpawnFailed {
                slot,
                error: error_chain(&error),
                giving_up,
            });
            if giving_up {
                self.slots[slot].state = SlotState::GaveUp;
            } else {
                self.schedule_restart(slot, Duration::ZERO, false);
            }
        }
    }

    pub(super) fn spawn(&mut self, slot: usize, role: Role) -> Result<Pid, SpawnError> {
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

    pub(super) fn on_exit(&mut self, pid: Pid, status: ExitStatus) {
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
        let slot = worker.slot;
        let recovered = self.procs.reaped(pid, slot);
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
            Role::Detached => self.stopped_for_rollout(pid, slot),
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
                    self.slots[slot].state = SlotState::Finished;
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

    pub(super) fn schedule_restart(&mut self, slot: usize, uptime: Duration, ever_ready: bool) {
        let policy = self.config.restart;
        let s = &mut self.slots[slot];
        if !policy.autorestart {
            s.state = SlotState::Finished;
            self.report(Report::NotRestarted {
                slot,
                stop_code: None,
            });
            return;
        }
        match s.restart.on_exit(&policy, uptime, ever_ready) {
            Decision::RestartIn(delay) => {
                s.state = SlotState::RestartAt {
                    at: self.now + delay,
                };
                let unstable = s.restart.unstable;
                self.report(Report::RestartScheduled {
                    slot,
                    delay,
                    unstable,
                });
            }
            Decision::GiveUp => {
                s.state = SlotState::GaveUp;
                let unstable = s.restart.unstable;
                self.report(Report::GaveUp {
                    slot,
                    unstable,
                    min_uptime: policy.min_uptime,
                });
            }
        }
    }

    pub(super) fn on_ready(&mut self, pid: Pid) {
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
    pub(super) fn promote(&mut self, pid: Pid, slot: usize) {
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

    /// Asks a worker to exit and detaches it from its slot.
    pub(super) fn drain(&mut self, pid: Pid) {
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
    pub(super) fn ask_to_exit(&mut self, pid: Pid) {
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
    pub(super) fn kill(&mut self, pid: Pid) {
        if let Some(worker) = self.workers.get_mut(&pid) {
            worker.state = WorkerState::Killed { since: self.now };
            let slot = worker.slot;
            self.procs.route(pid, slot, false);
            self.procs.signal_group(pid, Signal::SIGKILL);
        }
    }

    pub(super) fn kill_group(&mut self, pgid: Pid) {
        self.procs.signal_group(pgid, Signal::SIGKILL);
        self.procs.group_gone(pgid);
    }

    /// Drains every worker (SIGKILL after the kill timeout), or with `forced` kills them now.
    pub(super) fn stop(&mut self, forced: bool) {
        if self.phase == Phase::Stopping && !forced {
            return;
        }
        self.phase = Phase::Stopping;
        self.rollout = None;
        for s in &mut self.slots {
            if s.state.restart_at().is_some() {
                s.state = SlotState::Active;
            }
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
}
