//! Unit tests of the group state machine, driven with a fake process table.
//!
//! Longer than 500 lines: one transition per test, driven through the same `Harness`, read on its own.

use super::*;
use std::io;

#[derive(Default)]
struct Fake {
    next_pid: Pid,
    spawned: Vec<(usize, Pid)>,
    signals: Vec<(Pid, Signal)>,
    fail_spawns: bool,
    /// Fail exec with this errno.
    fail_with: Option<i32>,
    routes: Vec<(Pid, bool)>,
    reaped: Vec<Pid>,
    shutdowns: Vec<Pid>,
    /// Process groups that still have members after their leader exited.
    alive_groups: Vec<Pid>,
}

impl Processes for Fake {
    fn spawn(&mut self, slot: usize) -> Result<Pid, SpawnError> {
        if self.fail_spawns {
            return Err(SpawnError::Os(io::Error::from_raw_os_error(libc::EAGAIN)));
        }
        if let Some(errno) = self.fail_with {
            return Err(SpawnError::Exec {
                program: "app".into(),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        self.next_pid += 1;
        let pid = 100 + self.next_pid;
        self.spawned.push((slot, pid));
        Ok(pid)
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        self.signals.push((pgid, signal));
    }

    fn route(&mut self, pid: Pid, _slot: usize, routable: bool) {
        self.routes.push((pid, routable));
    }

    fn send_shutdown(&mut self, pid: Pid) -> bool {
        self.shutdowns.push(pid);
        true
    }

    fn reaped(&mut self, pid: Pid, _slot: usize) -> usize {
        self.reaped.push(pid);
        0
    }

    fn group_alive(&mut self, pgid: Pid) -> bool {
        self.alive_groups.contains(&pgid)
    }

    fn group_gone(&mut self, _pgid: Pid) {}
}

const MS: Duration = Duration::from_millis(1);

struct Harness {
    group: Group<Fake>,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(instances: usize, ready: ReadyPolicy) -> Self {
        Harness::with(instances, ready, false)
    }

    /// Workers that bind their own ports: reloads stop each before its replacement.
    fn stop_first(instances: usize) -> Self {
        Harness::with(instances, Harness::notify(), true)
    }

    fn with(instances: usize, ready: ReadyPolicy, stop_first: bool) -> Self {
        let config = GroupConfig {
            instances,
            ready,
            settle: Duration::ZERO,
            restart: RestartPolicy {
                delay: 100 * MS,
                max_delay: 1000 * MS,
                min_uptime: 1000 * MS,
                max_restarts: 2,
                reset_after: Duration::from_secs(30),
                autorestart: true,
                stop_exit_codes: Default::default(),
            },
            stop: StopPolicy {
                signal: Signal::SIGTERM,
                kill_timeout: 500 * MS,
                message: false,
            },
            watchdog: None,
            health: HealthPolicy {
                heartbeat_timeout: 3000 * MS,
                lag_warning: 500 * MS,
                max_memory: Some(100),
            },
            stop_first,
        };
        let t0 = Instant::now();
        let mut h = Harness {
            group: Group::new(config, Fake::default(), t0),
            t0,
            now: t0,
        };
        h.send(Event::Start);
        h
    }

    fn notify() -> ReadyPolicy {
        ReadyPolicy::Notify {
            timeout: 2000 * MS,
            assume_ready: false,
        }
    }

    fn send(&mut self, event: Event) -> Vec<Report> {
        self.group.handle_event(self.now, event);
        self.group.take_reports()
    }

    fn advance(&mut self, by: Duration) -> Vec<Report> {
        self.now += by;
        self.send(Event::Tick)
    }

    fn ready(&mut self, pid: Pid) -> Vec<Report> {
        self.send(Event::Notify {
            pid,
            notices: vec![Notice::Ready],
        })
    }

    fn exit(&mut self, pid: Pid, code: i32) -> Vec<Report> {
        self.send(Event::Exited {
            pid,
            status: ExitStatus::Code(code),
        })
    }

    fn procs(&self) -> &Fake {
        &self.group.procs
    }

    fn signals_to(&self, pid: Pid) -> Vec<Signal> {
        let signals = &self.procs().signals;
        signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }

    fn ready_count(&self) -> usize {
        (0..self.group.slot_count())
            .filter_map(|slot| self.group.current(slot))
            .filter(|pid| matches!(self.group.workers()[pid].state, WorkerState::Ready { .. }))
            .count()
    }

    /// One ready worker (pid 101) that said it heartbeats every 500ms.
    fn heartbeating() -> Harness {
        let mut h = Harness::new(1, Harness::notify());
        h.send(Event::Hello {
            pid: 101,
            heartbeat: Some(500 * MS),
        });
        h.all_ready();
        h
    }

    fn all_ready(&mut self) {
        let pids: Vec<Pid> = self.group.workers().keys().copied().collect();
        for pid in pids {
            self.ready(pid);
        }
    }
}

#[test]
fn start_spawns_one_worker_per_slot() {
    let h = Harness::new(3, Harness::notify());
    assert_eq!(h.procs().spawned, vec![(0, 101), (1, 102), (2, 103)]);
}

#[test]
fn delay_policy_makes_workers_ready_after_the_delay() {
    let mut h = Harness::new(2, ReadyPolicy::Delay { delay: 300 * MS });
    assert_eq!(h.group.next_deadline(), Some(h.t0 + 300 * MS));
    assert!(h.advance(299 * MS).is_empty());
    let reports = h.advance(MS);
    assert_eq!(reports.len(), 2);
    assert_eq!(h.ready_count(), 2);
}

#[test]
fn ready_notice_comes_before_the_delay() {
    let mut h = Harness::new(1, ReadyPolicy::Delay { delay: 300 * MS });
    h.ready(101);
    assert_eq!(h.ready_count(), 1);
}

#[test]
fn issue_14_a_crashed_worker_is_replaced_in_its_slot_at_once_then_after_backoff() {
    let mut h = Harness::new(2, Harness::notify());
    h.all_ready();
    h.now += 5000 * MS;
    let reports = h.exit(102, 1);
    assert!(reports.contains(&Report::RestartScheduled {
        slot: 1,
        delay: Duration::ZERO,
        unstable: 0
    }));
    assert!(
        h.signals_to(102).contains(&Signal::SIGKILL),
        "leftovers in its group are killed"
    );
    assert_eq!(h.group.next_deadline(), Some(h.now));
    h.advance(Duration::ZERO);
    assert_eq!(h.procs().spawned.last(), Some(&(1, 103)));
    // The second crash in the window waits out the restart delay.
    h.ready(103);
    h.now += 5000 * MS;
    let reports = h.exit(103, 1);
    assert!(reports.contains(&Report::RestartScheduled {
        slot: 1,
        delay: 100 * MS,
        unstable: 0
    }));
    h.advance(99 * MS);
    assert_eq!(h.procs().spawned.len(), 3);
    h.advance(MS);
    assert_eq!(h.procs().spawned.last(), Some(&(1, 104)));
}

#[test]
fn crash_loop_gives_up_and_the_group_fails() {
    let mut h = Harness::new(1, Harness::notify());
    let mut pid = 101;
    for _ in 0..2 {
        h.exit(pid, 1);
        h.advance(1000 * MS);
        pid += 1;
    }
    let reports = h.exit(pid, 1);
    assert!(matches!(
        reports.last(),
        Some(Report::GaveUp {
            slot: 0,
            unstable: 3,
            ..
        })
    ));
    assert_eq!(h.group.outcome(), Some(Outcome::Failed));
    assert_eq!(h.group.next_deadline(), None);
}

#[test]
fn spawn_failures_count_as_unstable_exits() {
    let mut h = Harness::new(1, Harness::notify());
    h.group.procs.fail_spawns = true;
    h.exit(101, 1);
    for _ in 0..5 {
        h.advance(2000 * MS);
    }
    assert_eq!(h.group.outcome(), Some(Outcome::Failed));
}

#[test]
fn reload_replaces_one_worker_at_a_time_and_never_drops_below_n_ready() {
    let mut h = Harness::new(2, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    assert_eq!(h.procs().spawned.last(), Some(&(0, 103)));
    assert!(
        h.signals_to(101).is_empty(),
        "old worker is untouched until its replacement is ready"
    );
    assert_eq!(h.ready_count(), 2);
    h.ready(103);
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM]);
    assert_eq!(h.ready_count(), 2);
    assert_eq!(h.procs().spawned.last(), Some(&(1, 104)));
    let reports = h.ready(104);
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM]);
    assert!(matches!(
        reports.last(),
        Some(Report::ReloadFinished { replaced: 2, .. })
    ));
    let reports = h.exit(101, 0);
    assert!(matches!(reports[0], Report::Exited { expected: true, .. }));
    assert_eq!(
        h.group.next_deadline(),
        Some(h.now + 500 * MS),
        "102 still draining"
    );
    assert!(!h.group.reloading());
}

#[test]
fn reload_aborts_when_the_replacement_exits_and_keeps_the_old_worker() {
    let mut h = Harness::new(2, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    let reports = h.exit(103, 1);
    assert!(reports.contains(&Report::ReloadAborted {
        tickets: vec![],
        slot: 0,
        reason: AbortReason::ExitedBeforeReady(ExitStatus::Code(1)),
        rollout: RolloutKind::Reload,
    }));
    assert_eq!(h.group.current(0), Some(101));
    assert!(h.signals_to(101).is_empty());
    assert!(!h.group.reloading());
    assert_eq!(
        h.procs().spawned.len(),
        3,
        "no replacement for slot 1 was tried"
    );
}

#[test]
fn reload_aborts_when_the_replacement_is_not_ready_in_time() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    let reports = h.advance(2000 * MS);
    assert_eq!(
        reports,
        vec![
            Report::ReadyTimeout {
                slot: 0,
                pid: 102,
                timeout: 2000 * MS
            },
            Report::ReloadAborted {
                tickets: vec![],
                slot: 0,
                reason: AbortReason::NotReadyInTime(2000 * MS),
                rollout: RolloutKind::Reload,
            }
        ]
    );
    // Stopped gracefully: connections it may have accepted still get answers.
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM]);
    let reports = h.exit(102, 0);
    assert!(matches!(reports[0], Report::Exited { expected: true, .. }));
    assert_eq!(h.group.current(0), Some(101));
    assert_eq!(h.ready_count(), 1);
    assert_eq!(h.procs().spawned.len(), 2, "nothing restarted");
}

#[test]
fn a_first_worker_not_ready_in_time_is_stopped_and_restarted() {
    let mut h = Harness::new(1, Harness::notify());
    h.advance(2000 * MS);
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM]);
    let reports = h.exit(101, 0);
    assert!(matches!(
        reports[0],
        Report::Exited {
            expected: false,
            ..
        }
    ));
    assert!(matches!(
        reports[1],
        Report::RestartScheduled { unstable: 1, .. }
    ));
}

#[test]
fn issue_10_with_listen_timeout_a_silent_worker_is_taken_as_ready_not_stopped() {
    let policy = ReadyPolicy::Notify {
        timeout: 2000 * MS,
        assume_ready: true,
    };
    let mut h = Harness::new(1, policy);
    let reports = h.advance(2000 * MS);
    assert!(h.signals_to(101).is_empty(), "{reports:?}");
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::Ready { pid: 101, .. })),
        "{reports:?}"
    );
}

#[test]
fn issue_10_a_worker_ending_with_a_stop_exit_code_is_not_restarted() {
    let mut h = Harness::new(1, Harness::notify());
    h.group.config.restart.stop_exit_codes = [3].into_iter().collect();
    h.all_ready();
    let reports = h.exit(101, 3);
    assert!(
        reports.iter().any(|r| matches!(
            r,
            Report::NotRestarted {
                slot: 0,
                stop_code: Some(3)
            }
        )),
        "{reports:?}"
    );
}

#[test]
fn a_reload_asked_for_during_a_reload_runs_after_it() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    assert_eq!(
        h.send(Event::Control(Control::Reload)),
        vec![Report::ReloadQueued]
    );
    let reports = h.ready(102);
    assert!(reports
        .iter()
        .any(|r| matches!(r, Report::ReloadStarted { .. })));
    assert_eq!(h.procs().spawned.last(), Some(&(0, 103)));
}

#[test]
fn issue_21_each_reload_ticket_is_answered_by_the_reload_that_served_it() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::ReloadTicket(7)));
    assert_eq!(
        h.send(Event::Control(Control::ReloadTicket(8))),
        vec![Report::ReloadQueued]
    );
    let reports = h.ready(102);
    let finished: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::ReloadFinished { tickets, .. } => Some(tickets.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![vec![7]], "{reports:?}");
    let reports = h.ready(103);
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::ReloadFinished { tickets, .. } if tickets == &[8])),
        "{reports:?}"
    );
}

#[test]
fn issue_21_a_reload_asked_for_during_one_that_aborts_still_runs_and_is_answered() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::ReloadTicket(1)));
    h.send(Event::Control(Control::ReloadTicket(2)));
    let reports = h.exit(102, 1);
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::ReloadAborted { tickets, .. } if tickets == &[1])),
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::ReloadStarted { .. })),
        "the queued reload (perhaps the fix) runs: {reports:?}"
    );
    assert_eq!(h.procs().spawned.last(), Some(&(0, 103)));
    let reports = h.ready(103);
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::ReloadFinished { tickets, .. } if tickets == &[2])),
        "{reports:?}"
    );
}

#[test]
fn issue_21_workers_that_bind_their_own_ports_are_stopped_before_their_replacement_starts() {
    let mut h = Harness::stop_first(2);
    h.all_ready();
    let reports = h.send(Event::Control(Control::ReloadTicket(5)));
    assert!(
        reports.contains(&Report::ReloadStarted {
            workers: 2,
            stop_first: true
        }),
        "{reports:?}"
    );
    assert_eq!(
        h.signals_to(101),
        vec![Signal::SIGTERM],
        "the old one stops first"
    );
    assert_eq!(h.procs().spawned.len(), 2, "no replacement while it runs");
    h.exit(101, 0);
    assert_eq!(
        h.procs().spawned.last(),
        Some(&(0, 103)),
        "then slot 0's replacement"
    );
    assert!(h.signals_to(102).is_empty(), "slot 1 serves meanwhile");
    h.ready(103);
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM]);
    h.exit(102, 0);
    assert_eq!(h.procs().spawned.last(), Some(&(1, 104)));
    let reports = h.ready(104);
    assert!(
        reports.iter().any(
            |r| matches!(r, Report::ReloadFinished { replaced: 2, tickets, .. } if tickets == &[5])
        ),
        "{reports:?}"
    );
    assert_eq!(h.group.current(0), Some(103));
    assert_eq!(h.group.current(1), Some(104));
}

#[test]
fn issue_21_a_stop_first_replacement_that_fails_aborts_the_reload_and_its_slot_restarts() {
    let mut h = Harness::stop_first(1);
    h.all_ready();
    h.send(Event::Control(Control::ReloadTicket(9)));
    h.exit(101, 0);
    let reports = h.exit(102, 1);
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::ReloadAborted { tickets, .. } if tickets == &[9])),
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Report::RestartScheduled { slot: 0, .. })),
        "the slot has no worker left, so it restarts: {reports:?}"
    );
}

#[test]
fn reload_revives_slots_that_gave_up() {
    let mut h = Harness::new(1, Harness::notify());
    for pid in 101..104 {
        h.exit(pid, 1);
        h.advance(1000 * MS);
    }
    assert_eq!(h.group.outcome(), Some(Outcome::Failed));
    h.send(Event::Control(Control::Reload));
    h.advance(MS);
    assert_eq!(h.procs().spawned.last(), Some(&(0, 104)));
}

#[test]
fn stop_drains_every_worker_then_kills_the_stubborn_ones() {
    let mut h = Harness::new(2, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Stop));
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM]);
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM]);
    h.exit(101, 0);
    assert_eq!(h.group.outcome(), None);
    let reports = h.advance(500 * MS);
    assert!(matches!(reports[0], Report::KillTimeout { pid: 102, .. }));
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM, Signal::SIGKILL]);
    h.send(Event::Exited {
        pid: 102,
        status: ExitStatus::Signal(9),
    });
    assert_eq!(h.group.outcome(), Some(Outcome::Stopped));
    assert_eq!(
        h.procs().spawned.len(),
        2,
        "nothing restarts while stopping"
    );
}

#[test]
fn kill_sends_sigkill_to_every_worker_at_once() {
    let mut h = Harness::new(2, Harness::notify());
    h.send(Event::Control(Control::Stop));
    h.send(Event::Control(Control::Kill));
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM, Signal::SIGKILL]);
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM, Signal::SIGKILL]);
}

#[test]
fn scale_up_and_down_change_the_slot_count() {
    let mut h = Harness::new(1, Harness::notify());
    h.send(Event::Control(Control::ScaleUp));
    assert_eq!(h.procs().spawned.last(), Some(&(1, 102)));
    h.send(Event::Control(Control::ScaleDown));
    assert_eq!(h.signals_to(102), vec![Signal::SIGTERM]);
    assert_eq!(h.group.slot_count(), 1);
    let reports = h.send(Event::Control(Control::ScaleDown));
    assert!(matches!(reports[0], Report::ScaleRefused { .. }));
    let reports = h.exit(102, 0);
    assert!(matches!(reports[0], Report::Exited { expected: true, .. }));
    assert_eq!(
        h.procs().spawned.len(),
        2,
        "a scaled-down slot is not restarted"
    );
}

#[test]
fn scale_down_during_reload_moves_the_reload_on() {
    let mut h = Harness::new(2, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    h.ready(103);
    assert_eq!(h.procs().spawned.last(), Some(&(1, 104)));
    let reports = h.send(Event::Control(Control::ScaleDown));
    assert!(reports
        .iter()
        .any(|r| matches!(r, Report::ReloadFinished { .. })));
    assert_eq!(h.signals_to(104), vec![Signal::SIGTERM]);
}

#[test]
fn a_silent_worker_is_killed_by_the_watchdog_and_replaced() {
    let mut h = Harness::new(1, Harness::notify());
    h.group.config.watchdog = Some(1000 * MS);
    h.group.workers.get_mut(&101).unwrap().watchdog = Some(1000 * MS);
    h.all_ready();
    h.now += 800 * MS;
    h.send(Event::Notify {
        pid: 101,
        notices: vec![Notice::Watchdog],
    });
    assert!(h.advance(900 * MS).is_empty());
    let reports = h.advance(100 * MS);
    assert!(matches!(
        reports[0],
        Report::WatchdogTimeout { pid: 101, .. }
    ));
    assert_eq!(h.signals_to(101), vec![Signal::SIGKILL]);
    h.send(Event::Exited {
        pid: 101,
        status: ExitStatus::Signal(9),
    });
    h.advance(100 * MS);
    assert_eq!(h.procs().spawned.last(), Some(&(0, 102)));
}

#[test]
fn crash_of_the_old_worker_during_its_replacement_does_not_spawn_twice() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.now += 5000 * MS;
    h.send(Event::Control(Control::Reload));
    h.exit(101, 1);
    h.advance(1000 * MS);
    assert_eq!(h.procs().spawned.len(), 2);
    h.ready(102);
    assert_eq!(h.group.current(0), Some(102));
    assert!(!h.group.reloading());
}

#[test]
fn unknown_pids_are_ignored() {
    let mut h = Harness::new(1, Harness::notify());
    assert!(h.exit(999, 0).is_empty());
    assert!(h.ready(999).is_empty());
}

#[test]
fn a_command_that_cannot_run_is_not_retried_before_it_ever_worked() {
    let mut h = Harness::new(1, Harness::notify());
    h.exit(101, 1);
    h.group.procs.fail_with = Some(libc::ENOEXEC);
    let reports = h.advance(100 * MS);
    assert!(matches!(
        reports[0],
        Report::SpawnFailed {
            giving_up: true,
            ..
        }
    ));
    assert_eq!(h.group.outcome(), Some(Outcome::Failed));
}

#[test]
fn a_command_that_worked_before_is_retried_when_exec_fails() {
    let mut h = Harness::new(1, Harness::notify());
    h.ready(101);
    h.exit(101, 1);
    h.group.procs.fail_with = Some(libc::ENOENT);
    let reports = h.advance(100 * MS);
    assert!(matches!(
        reports[0],
        Report::SpawnFailed {
            giving_up: false,
            ..
        }
    ));
    assert!(matches!(reports[1], Report::RestartScheduled { .. }));
}

#[test]
fn routing_follows_readiness_and_stops_before_the_drain_signal() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    h.ready(102);
    assert_eq!(
        h.procs().routes,
        vec![(101, true), (102, true), (101, false)]
    );
    h.exit(101, 0);
    assert_eq!(h.procs().reaped, vec![101]);
}

#[test]
fn a_worker_that_announced_heartbeats_and_goes_silent_is_killed() {
    let mut h = Harness::heartbeating();
    h.now += 2000 * MS;
    h.send(Event::Heartbeat { pid: 101, lag: MS });
    assert!(h.advance(2999 * MS).is_empty());
    let reports = h.advance(MS);
    assert!(matches!(
        reports[0],
        Report::WatchdogTimeout { pid: 101, .. }
    ));
    assert_eq!(h.signals_to(101), vec![Signal::SIGKILL]);
}

#[test]
fn silence_while_the_supervisor_was_paused_is_not_a_hang() {
    let mut h = Harness::heartbeating();
    // The loop wakes 17s after the watchdog was due: the machine was suspended.
    h.now += 20_000 * MS;
    let reports = h.send(Event::Resumed {
        paused: 17_000 * MS,
    });
    assert_eq!(
        reports,
        vec![Report::Paused {
            paused: 17_000 * MS,
            grace: RESUME_GRACE
        }]
    );
    assert!(h.advance(MS).is_empty(), "no verdict before the grace ends");
    h.send(Event::Heartbeat { pid: 101, lag: MS });
    assert!(h.advance(2999 * MS).is_empty());
    // Heard once after the pause, then silent again: a real hang is still caught.
    let reports = h.advance(MS);
    assert!(matches!(
        reports[0],
        Report::WatchdogTimeout { pid: 101, .. }
    ));
}

#[test]
fn a_worker_silent_since_before_a_pause_is_judged_after_the_grace() {
    let mut h = Harness::heartbeating();
    h.now += 10_000 * MS;
    h.send(Event::Resumed { paused: 7_000 * MS });
    assert!(h.advance(2999 * MS).is_empty());
    let reports = h.advance(MS);
    assert!(matches!(
        reports[0],
        Report::WatchdogTimeout { pid: 101, .. }
    ));
    assert_eq!(h.signals_to(101), vec![Signal::SIGKILL]);
}

#[test]
fn a_drain_cut_short_by_a_pause_gets_the_grace_before_sigkill() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Stop));
    h.now += 5_000 * MS; // the 500ms kill timeout fell inside the pause
    h.send(Event::Resumed { paused: 4_500 * MS });
    assert!(h.advance(2999 * MS).is_empty());
    assert!(!h.signals_to(101).contains(&Signal::SIGKILL));
    let reports = h.advance(MS);
    assert!(matches!(reports[0], Report::KillTimeout { pid: 101, .. }));
}

#[test]
fn lag_is_reported_at_most_every_ten_seconds() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    let lag = |h: &mut Harness, ms| {
        h.send(Event::Heartbeat {
            pid: 101,
            lag: ms * MS,
        })
    };
    assert!(lag(&mut h, 100).is_empty());
    assert_eq!(
        lag(&mut h, 700),
        vec![Report::Lag {
            slot: 0,
            pid: 101,
            lag: 700 * MS
        }]
    );
    h.now += 5000 * MS;
    assert!(lag(&mut h, 900).is_empty());
    h.now += 5000 * MS;
    assert_eq!(lag(&mut h, 900).len(), 1);
}

#[test]
fn over_the_memory_limit_a_worker_is_replaced_replacement_first() {
    let mut h = Harness::new(2, Harness::notify());
    h.all_ready();
    assert!(h.send(Event::Memory { pid: 101, rss: 100 }).is_empty());
    let reports = h.send(Event::Memory { pid: 101, rss: 101 });
    assert_eq!(
        reports[0],
        Report::MemoryLimit {
            slot: 0,
            pid: 101,
            rss: 101,
            limit: 100
        }
    );
    assert_eq!(h.procs().spawned.last(), Some(&(0, 103)));
    assert!(
        h.signals_to(101).is_empty(),
        "still serving until its replacement is ready"
    );
    // Another sample while the replacement starts changes nothing.
    assert!(h.send(Event::Memory { pid: 101, rss: 500 }).is_empty());
    let reports = h.ready(103);
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM]);
    assert!(
        !reports
            .iter()
            .any(|r| matches!(r, Report::ReloadFinished { .. })),
        "not reported as a reload: {reports:?}"
    );
    assert_eq!(h.group.current(0), Some(103));
    assert_eq!(h.group.current(1), Some(102));
}

#[test]
fn with_shutdown_by_message_no_signal_is_sent_until_the_kill_timeout() {
    let mut h = Harness::new(1, Harness::notify());
    h.group.config.stop.message = true;
    h.all_ready();
    h.send(Event::Control(Control::Stop));
    assert_eq!(h.procs().shutdowns, vec![101]);
    assert!(h.signals_to(101).is_empty());
    h.advance(500 * MS);
    assert_eq!(h.signals_to(101), vec![Signal::SIGKILL]);
}

#[test]
fn without_autorestart_an_exited_worker_stays_gone_and_a_clean_end_is_a_stop() {
    let mut h = Harness::new(2, Harness::notify());
    h.group.config.restart.autorestart = false;
    h.all_ready();
    assert_eq!(
        h.exit(101, 0)[1],
        Report::NotRestarted {
            slot: 0,
            stop_code: None
        }
    );
    assert_eq!(h.group.outcome(), None, "slot 1 still runs");
    h.exit(102, 0);
    assert_eq!(h.group.outcome(), Some(Outcome::Stopped));
    assert_eq!(h.procs().spawned.len(), 2);
}

#[test]
fn issue_9_a_replacement_that_dies_within_the_settle_window_aborts_the_reload() {
    let mut h = Harness::new(1, Harness::notify());
    h.group.config.settle = 1000 * MS;
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    // Ready: it gets connections, but the old worker keeps its slot for now.
    h.ready(102);
    assert_eq!(h.group.current(0), Some(101));
    assert!(h.signals_to(101).is_empty());
    h.now += 300 * MS;
    let reports = h.exit(102, 1);
    assert!(reports.contains(&Report::ReloadAborted {
        tickets: vec![],
        slot: 0,
        reason: AbortReason::ExitedWhileSettling {
            status: ExitStatus::Code(1),
            after: 300 * MS,
            settle: 1000 * MS,
        },
        rollout: RolloutKind::Reload,
    }));
    assert_eq!(h.group.current(0), Some(101));
    assert!(
        h.signals_to(101).is_empty(),
        "the old worker was never asked to drain"
    );
}

#[test]
fn issue_9_a_replacement_that_stays_up_through_the_settle_window_takes_over() {
    let mut h = Harness::new(1, Harness::notify());
    h.group.config.settle = 1000 * MS;
    h.all_ready();
    h.send(Event::Control(Control::Reload));
    h.ready(102);
    assert_eq!(h.group.next_deadline(), Some(h.now + 1000 * MS));
    h.advance(999 * MS);
    assert!(h.signals_to(101).is_empty());
    let reports = h.advance(MS);
    assert_eq!(h.group.current(0), Some(102));
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM]);
    assert!(reports
        .iter()
        .any(|r| matches!(r, Report::ReloadFinished { replaced: 1, .. })));
}

#[test]
fn issue_9_a_wrapper_that_exits_while_draining_leaves_its_app_the_drain_time() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Stop));
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM]);
    // `npm` exits at once; the node app under it (same group) is still draining.
    h.group.procs.alive_groups.push(101);
    h.now += 100 * MS;
    h.exit(101, 0);
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM], "no SIGKILL yet");
    assert_eq!(h.group.outcome(), None, "the group is still draining");
    // Past the kill timeout, what is left of the group is killed.
    h.advance(400 * MS);
    assert_eq!(h.signals_to(101), vec![Signal::SIGTERM, Signal::SIGKILL]);
    assert_eq!(h.group.outcome(), Some(Outcome::Stopped));
}

#[test]
fn issue_9_a_lingering_group_that_empties_is_done_before_its_deadline() {
    let mut h = Harness::new(1, Harness::notify());
    h.all_ready();
    h.send(Event::Control(Control::Stop));
    h.group.procs.alive_groups.push(101);
    h.exit(101, 0);
    h.group.procs.alive_groups.clear();
    h.advance(50 * MS);
    assert_eq!(h.group.outcome(), Some(Outcome::Stopped));
    assert_eq!(
        h.signals_to(101),
        vec![Signal::SIGTERM],
        "nothing left to kill"
    );
}

#[test]
fn issue_9_a_late_hello_starts_the_heartbeat_count_fresh() {
    let mut h = Harness::new(1, ReadyPolicy::Delay { delay: 100 * MS });
    h.advance(100 * MS);
    assert_eq!(h.ready_count(), 1);
    // The app under a wrapper says hello long after it was taken as ready.
    h.now += 5000 * MS;
    h.send(Event::Hello {
        pid: 101,
        heartbeat: Some(1000 * MS),
    });
    let reports = h.advance(2000 * MS);
    assert!(
        !reports
            .iter()
            .any(|r| matches!(r, Report::WatchdogTimeout { .. })),
        "{reports:?}"
    );
    assert!(h.signals_to(101).is_empty());
}

#[test]
fn issue_13_a_group_handed_over_goes_on_where_it_was() {
    let mut h = Harness::new(3, Harness::notify());
    h.ready(101);
    h.ready(102);
    // Slot 2 crashed before it got ready (unstable) and waits for its restart.
    h.advance(1500 * MS);
    h.exit(103, 1);
    let config = h.group.config.clone();
    h.group.check_handover().expect("nothing under way");
    let group = std::mem::replace(
        &mut h.group,
        Group::new(config.clone(), Fake::default(), h.now),
    );
    let (state, _procs) = group.hand_over();
    let json = serde_json::to_string(&state).unwrap();
    let back: GroupState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.pids(), vec![101, 102]);
    h.group = Group::restore(config, Fake::default(), back, h.now);
    assert_eq!(h.ready_count(), 2);
    assert_eq!(h.group.current(2), None);
    // The restart that was due still happens, in slot 2, and nothing else starts.
    h.advance(Duration::from_secs(2));
    assert_eq!(h.procs().spawned.len(), 1, "{:?}", h.procs().spawned);
    assert_eq!(h.procs().spawned[0].0, 2);
    // A reload runs as on any group, and a handover is refused while it does.
    h.send(Event::Control(Control::Reload));
    assert_eq!(
        h.group.check_handover(),
        Err(crate::handover::Refused::RollingOut)
    );
}
