//! The loop that runs one app: each input (a command, a child's exit, a notify
//! datagram, a channel message, a readable listener, a memory sample, a timer) becomes
//! at most one [`Event`] for the [`Group`], and the group's reports go out after each.

use std::path::Path;
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use super::workers::{InputRefused, OsProcesses, Pass, Template};
use super::{
    accept_ready, flush, hand_over, hear_out, inbox, readable, resolve, sleep_until, snapshot,
    watch, worker_of, Channels, Command, HandOverResult, Handed, Orphans, Reports, RunError,
    SlotSockets, SocketChecks, Starved, Strangers, Watched, MEMORY_SAMPLE_EVERY, PAUSED_AFTER,
};
use crate::channel::Input;
use crate::group::{Control, Event, Group, GroupConfig, Outcome, WorkerState};
use crate::listen::Listener;
use crate::notify::NotifySocket;
use crate::os;
use crate::process::{ExitStatus, Pid};
use crate::spec::AppSpec;

/// Runs `spec` until it is stopped ([`Control::Stop`]), every worker slot gave up, or it
/// is handed over ([`Command::HandOver`]).
///
/// `listeners` stay open for the whole run. `runtime_dir` holds the notify socket.
/// `adopt` is what another supervisor handed over: its workers are taken over as they
/// are instead of starting new ones.
pub async fn run(
    spec: &AppSpec,
    listeners: &[Listener],
    runtime_dir: &Path,
    channels: Channels,
    adopt: Option<Box<Handed>>,
) -> Result<Outcome, RunError> {
    let Channels {
        mut controls,
        reports,
        logs,
        reap_all,
    } = channels;
    let mut sigchld = signal(SignalKind::child()).map_err(RunError::Signal)?;
    let (inputs_tx, inputs) = mpsc::channel(1024);
    let started = Started {
        spec,
        listeners,
        logs,
        inputs_tx,
        reap_all,
    };
    let mut e = match adopt {
        None => started.fresh(runtime_dir, reports, inputs)?,
        Some(handed) => started.adopted(*handed, reports, inputs)?,
    };
    let mut memory = tokio::time::interval(MEMORY_SAMPLE_EVERY);
    memory.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sample_memory = spec.health.max_memory.is_some();
    let (sampled_tx, mut sampled) = mpsc::channel(1);
    loop {
        if let Some(outcome) = e.group.outcome() {
            return Ok(outcome);
        }
        if let Some(reply) = e.hand_over_to.take() {
            let _ = reply.send(e.hand_over().await);
            return Ok(Outcome::HandedOver);
        }
        let (can_accept, take_orphans) = e.prepare()?;
        let deadline = e.group.next_deadline().map(tokio::time::Instant::from_std);
        let retry_at = e.starved.retry_at;
        let check_at = e.checks.next();
        let step = tokio::select! {
            control = controls.recv(), if e.controls_open => e.command(control),
            _ = sigchld.recv() => e.reaped(),
            pid = e.strangers.exited(), if !e.strangers.is_empty() => e.stranger_exited(pid),
            received = e.notify.recv() => match received {
                Ok((pid, notices)) => Some(Event::Notify { pid: worker_of(&e.group, pid), notices }),
                Err(_) => None,
            },
            Some((pid, input)) = e.inputs.recv() => e.input(pid, input),
            () = readable(&e.watched), if can_accept => e.accept(),
            () = readable(&e.orphans.watched), if take_orphans => e.take_orphans(),
            () = sleep_until(retry_at), if retry_at.is_some() => {
                e.starved.retry_at = None;
                None
            }
            () = sleep_until(check_at), if check_at.is_some() => e.check_sockets(),
            _ = memory.tick(), if sample_memory && !e.sampling => e.sample_memory(&sampled_tx),
            Some(sample) = sampled.recv() => e.sampled(sample),
            _ = sleep_until(deadline), if deadline.is_some() => Some(e.timer(deadline).await),
        };
        if let Some(event) = step {
            e.group.handle_event(Instant::now(), event);
            e.flush();
        }
    }
}

/// What an engine starts from, fresh or adopted.
struct Started<'a> {
    spec: &'a AppSpec,
    listeners: &'a [Listener],
    logs: mpsc::Sender<crate::output::LogLine>,
    inputs_tx: mpsc::Sender<(Pid, Input)>,
    reap_all: bool,
}

impl<'a> Started<'a> {
    fn config(&self) -> GroupConfig {
        let spec = self.spec;
        GroupConfig {
            instances: spec.instances,
            ready: spec.ready,
            settle: spec.settle,
            restart: spec.restart,
            stop: spec.stop,
            watchdog: spec.watchdog,
            health: spec.health,
            stop_first: spec.workers_bind_own_ports(),
        }
    }

    /// A new group: its notify socket, its workers started.
    fn fresh(
        self,
        runtime_dir: &Path,
        reports: Reports,
        inputs: mpsc::Receiver<(Pid, Input)>,
    ) -> Result<Engine<'a>, RunError> {
        let program = resolve(self.spec)?;
        let notify = NotifySocket::bind(runtime_dir)?;
        let template = Template::new(self.spec, program, self.listeners, notify.path());
        let slots = SlotSockets::new(self.listeners);
        let procs = OsProcesses::new(
            template,
            self.logs.clone(),
            self.inputs_tx.clone(),
            self.spec.balance,
            slots,
        );
        let mut group = Group::new(self.config(), procs, Instant::now());
        group.handle_event(Instant::now(), Event::Start);
        let mut e = Engine::new(
            group,
            notify,
            reports,
            inputs,
            self.listeners,
            self.reap_all,
        );
        e.flush();
        Ok(e)
    }

    /// The group another supervisor handed over, with what happened while nobody
    /// watched it.
    fn adopted(
        self,
        handed: Handed,
        reports: Reports,
        inputs: mpsc::Receiver<(Pid, Input)>,
    ) -> Result<Engine<'a>, RunError> {
        let Handed {
            notify,
            group,
            procs,
            taken,
        } = handed;
        let program = resolve(self.spec)?;
        let config = self.config();
        let notify = NotifySocket::resume(notify).map_err(RunError::Adopt)?;
        let template = Template::new(self.spec, program, self.listeners, notify.path());
        let procs = OsProcesses::resume(template, self.listeners, self.logs, self.inputs_tx, procs)
            .map_err(RunError::Adopt)?;
        let pids = group.pids();
        let group = Group::restore(config, procs, group, Instant::now());
        let mut e = Engine::new(
            group,
            notify,
            reports,
            inputs,
            self.listeners,
            self.reap_all,
        );
        // Workers that exited while no one was watching.
        let exits = if self.reap_all {
            os::reap()
        } else {
            os::reap_pids(&pids)
        };
        for (pid, status) in exits {
            e.group
                .handle_event(Instant::now(), Event::Exited { pid, status });
        }
        // Workers of a daemon that died are not ours: their pidfds tell their exits.
        e.strangers = Strangers::watch(pids.iter().copied().filter(|&p| !os::pidfd::is_child(p)));
        for pid in e.strangers.gone.drain(..) {
            let status = ExitStatus::Unknown;
            e.group
                .handle_event(Instant::now(), Event::Exited { pid, status });
        }
        // Nobody watched them since `taken`: no judgment on a silence corral could not hear.
        // Unwatched as long as a pause counts: the same grace as after one.
        if taken.elapsed() >= PAUSED_AFTER {
            e.group.adopted_unwatched(Instant::now());
        }
        e.flush();
        Ok(e)
    }
}

/// One app's group and everything the loop watches for it.
struct Engine<'a> {
    group: Group<OsProcesses>,
    notify: NotifySocket,
    reports: Reports,
    inputs: mpsc::Receiver<(Pid, Input)>,
    listeners: &'a [Listener],
    reap_all: bool,
    checks: SocketChecks,
    strangers: Strangers,
    orphans: Orphans,
    starved: Starved,
    watched: Vec<AsyncFd<Watched>>,
    sampling: bool,
    controls_open: bool,
    hand_over_to: Option<oneshot::Sender<HandOverResult>>,
}

impl<'a> Engine<'a> {
    fn new(
        group: Group<OsProcesses>,
        notify: NotifySocket,
        reports: Reports,
        inputs: mpsc::Receiver<(Pid, Input)>,
        listeners: &'a [Listener],
        reap_all: bool,
    ) -> Engine<'a> {
        Engine {
            group,
            notify,
            reports,
            inputs,
            listeners,
            reap_all,
            checks: SocketChecks::new(listeners),
            strangers: Strangers::default(),
            orphans: Orphans::default(),
            starved: Starved::default(),
            watched: Vec::new(),
            sampling: false,
            controls_open: true,
            hand_over_to: None,
        }
    }

    fn flush(&mut self) {
        flush(&mut self.group, &self.reports, &mut self.checks);
    }

    /// Gets the listeners and held connections ready for this turn; says whether to
    /// accept on the listeners and on the orphaned reuseport members.
    fn prepare(&mut self) -> Result<(bool, bool), RunError> {
        let procs = self.group.processes_mut();
        if procs.accepting() && self.watched.is_empty() {
            self.watched = watch(procs.listener_fds()).map_err(RunError::Listen)?;
        }
        if procs.wants_pass() {
            procs.deliver_held();
        }
        let free = self.starved.retry_at.is_none();
        self.orphans.follow(procs);
        let take_orphans = !self.orphans.is_empty() && procs.wants_orphans() && free;
        Ok((procs.wants_accept() && free, take_orphans))
    }

    /// A caller's command: the group's controls become events; the rest the loop does.
    fn command(&mut self, command: Option<Command>) -> Option<Event> {
        match command {
            Some(Command::Group(control)) => return Some(Event::Control(control)),
            Some(Command::Message(data)) => {
                self.group.processes_mut().message_all(&data);
            }
            Some(Command::Respec(new)) => self.respec(&new),
            Some(Command::Input { slot, bytes, reply }) => {
                let _ = reply.send(self.write_stdin(slot, &bytes));
            }
            Some(Command::Snapshot(reply)) => {
                let _ = reply.send(snapshot(&self.group, &self.notify, self.listeners));
            }
            Some(Command::HandOver(reply)) => match self.group.check_handover() {
                Ok(()) => self.hand_over_to = Some(reply),
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                }
            },
            None => {
                self.controls_open = false;
                return Some(Event::Control(Control::Stop));
            }
        }
        None
    }

    /// Writes to the standard input of the worker serving `slot`, or of every worker.
    fn write_stdin(&mut self, slot: Option<usize>, bytes: &[u8]) -> Result<usize, InputRefused> {
        let pids: Vec<Pid> = match slot {
            Some(slot) => vec![self
                .group
                .current(slot)
                .ok_or(InputRefused::NoWorker(slot))?],
            None => (0..self.group.slot_count())
                .filter_map(|slot| self.group.current(slot))
                .collect(),
        };
        if pids.is_empty() {
            return Err(InputRefused::NoWorkers);
        }
        self.group.processes_mut().write_stdin(&pids, bytes)
    }

    fn respec(&mut self, new: &AppSpec) {
        match resolve(new) {
            Ok(program) => {
                let template = Template::new(new, program, self.listeners, self.notify.path());
                self.group.processes_mut().set_template(template);
            }
            // The old command keeps running; the reload that follows says so.
            Err(e) => {
                let _ = self.reports.send(crate::group::Report::RespecFailed {
                    error: crate::group::error_chain(&e),
                });
            }
        }
    }

    fn reaped(&mut self) -> Option<Event> {
        let exits = if self.reap_all {
            os::reap()
        } else {
            os::reap_pids(&self.group.workers().keys().copied().collect::<Vec<_>>())
        };
        for (pid, status) in exits {
            self.group
                .handle_event(Instant::now(), Event::Exited { pid, status });
        }
        self.flush();
        None
    }

    fn stranger_exited(&mut self, pid: Pid) -> Option<Event> {
        let status = ExitStatus::Unknown;
        Some(Event::Exited { pid, status })
    }

    fn input(&mut self, pid: Pid, input: Input) -> Option<Event> {
        inbox::apply(&mut self.group, pid, input, &self.reports);
        self.flush();
        None
    }

    fn accept(&mut self) -> Option<Event> {
        let pass = accept_ready(&self.watched, self.group.processes_mut());
        self.passed(pass)
    }

    fn take_orphans(&mut self) -> Option<Event> {
        let pass = self.orphans.take(self.group.processes_mut());
        self.passed(pass)
    }

    fn passed(&mut self, pass: Option<Pass>) -> Option<Event> {
        match pass {
            Some(pass) => self.starved.hit(pass, &self.reports),
            None => self.starved.cleared(),
        }
        None
    }

    /// Workers that get connections over their channel need no listener, and one
    /// already draining has closed its listener on purpose (a reload may replace a
    /// worker within the check's delay).
    fn check_sockets(&mut self) -> Option<Event> {
        let group = &mut self.group;
        self.checks.know(&group.processes_mut().slot_sockets());
        let accepts_itself = |pid| {
            let serving = group
                .workers()
                .get(&pid)
                .is_some_and(|w| matches!(w.state, WorkerState::Ready { .. }));
            serving && !group.processes_mut().dispatcher.is_dispatched(pid)
        };
        self.checks.run_due(accepts_itself, &self.reports);
        None
    }

    /// /proc is read on the blocking pool (every process's stat: many ms on a busy
    /// machine), one sample at a time; the loop only takes the result.
    fn sample_memory(
        &mut self,
        tx: &mpsc::Sender<std::collections::HashMap<Pid, u64>>,
    ) -> Option<Event> {
        let pids: Vec<Pid> = self.group.workers().keys().copied().collect();
        let tx = tx.clone();
        self.sampling = true;
        tokio::task::spawn_blocking(move || tx.try_send(os::memory::tree_rss(&pids)));
        None
    }

    fn sampled(&mut self, sample: std::collections::HashMap<Pid, u64>) -> Option<Event> {
        self.sampling = false;
        for (pid, rss) in sample {
            self.group
                .handle_event(Instant::now(), Event::Memory { pid, rss });
        }
        self.flush();
        None
    }

    /// A deadline fell due: what the channels hold is heard first, and a timer that
    /// fired far too late means the supervisor itself did not run.
    async fn timer(&mut self, deadline: Option<tokio::time::Instant>) -> Event {
        let late = deadline.map(|at| at.elapsed()).unwrap_or_default();
        hear_out(
            &mut self.group,
            &mut self.inputs,
            &self.reports,
            &mut self.checks,
        )
        .await;
        if late >= PAUSED_AFTER {
            self.group
                .handle_event(Instant::now(), Event::Resumed { paused: late });
        }
        Event::Tick
    }

    async fn hand_over(self) -> HandOverResult {
        let Engine {
            group,
            notify,
            mut inputs,
            reports,
            mut checks,
            watched,
            ..
        } = self;
        drop(watched);
        hand_over(group, notify, &mut inputs, &reports, &mut checks).await
    }
}
