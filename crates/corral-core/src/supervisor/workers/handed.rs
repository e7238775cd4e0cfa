//! The OS side of a group as it crosses `exec` (`crate::handover`): each worker's channel,
//! the duplicate of its end, its output pipes; credits; held connections; asked ports and
//! reuseport sockets.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Held, OsProcesses, Template};
use crate::channel::{Channel, ChannelState, Input};
use crate::dispatch::Dispatcher;
use crate::handover::Fd;
use crate::listen::Listener;
use crate::output::{LogLine, Stream};
use crate::process::Pid;
use crate::supervisor::asked::{AskedPorts, AskedState};
use crate::supervisor::slots::{SlotSockets, SlotsState};

#[derive(Debug, Serialize, Deserialize)]
pub(in crate::supervisor) struct ProcsState {
    workers: Vec<WorkerIo>,
    dispatcher: Dispatcher,
    held: Vec<HeldState>,
    accepting: bool,
    accepted: u64,
    asked: AskedState,
    slots: SlotsState,
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkerIo {
    pid: Pid,
    channel: Option<ChannelState>,
    worker_end: Option<Fd>,
    node: bool,
    outputs: Vec<OutputState>,
    /// The write end of its standard input (absent from an older corral's state).
    #[serde(default)]
    stdin: Option<Fd>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OutputState {
    slot: usize,
    stream: Stream,
    fd: Fd,
    /// An unfinished line.
    pending: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeldState {
    fd: Fd,
    client: Option<IpAddr>,
    listener: u32,
}

/// What a stopped reader or pump gave back.
pub(in crate::supervisor) enum Stopped {
    Channel(Pid, Vec<u8>),
    Output(Pid, usize, Stream, Option<(OwnedFd, Vec<u8>)>),
}

impl OsProcesses {
    /// Every worker something is held for: a channel, the duplicate of its end, or
    /// `outputs`.
    fn worker_pids(&self, outputs: impl Iterator<Item = Pid>) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .channels
            .keys()
            .chain(self.worker_ends.keys())
            .chain(self.stdins.keys())
            .copied()
            .collect();
        pids.extend(outputs);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Stops every channel reader and output pump after what they read is passed on.
    /// The caller keeps handling the channels' inputs until every one has stopped.
    pub(in crate::supervisor) fn stop_io(&mut self) -> JoinSet<Stopped> {
        let mut stopping = JoinSet::new();
        for (&pid, channel) in &mut self.channels {
            if let Some(stopped) = channel.stop_reading() {
                stopping
                    .spawn(async move { Stopped::Channel(pid, stopped.await.unwrap_or_default()) });
            }
        }
        for (pid, (slot, pumps)) in self.pumps.drain() {
            for (stream, pump) in pumps {
                stopping
                    .spawn(async move { Stopped::Output(pid, slot, stream, pump.stop().await) });
            }
        }
        stopping
    }

    /// Everything, once [`OsProcesses::stop_io`] is done.
    pub(in crate::supervisor) fn into_state(
        mut self,
        stopped: Vec<Stopped>,
    ) -> io::Result<ProcsState> {
        let mut unread: HashMap<Pid, Vec<u8>> = HashMap::new();
        let mut outputs: HashMap<Pid, Vec<OutputState>> = HashMap::new();
        for piece in stopped {
            match piece {
                Stopped::Channel(pid, bytes) => {
                    unread.insert(pid, bytes);
                }
                Stopped::Output(pid, slot, stream, Some((fd, pending))) => {
                    outputs.entry(pid).or_default().push(OutputState {
                        slot,
                        stream,
                        fd: Fd(fd),
                        pending,
                    });
                }
                // Its pipe ended: every process that could write to it is gone.
                Stopped::Output(_, _, _, None) => {}
            }
        }
        let pids = self.worker_pids(outputs.keys().copied());
        let mut workers = Vec::new();
        for pid in pids {
            let channel = match self.channels.remove(&pid) {
                Some(ch) => Some(ch.into_state(unread.remove(&pid).unwrap_or_default())?),
                None => None,
            };
            workers.push(WorkerIo {
                pid,
                channel,
                worker_end: self.worker_ends.remove(&pid).map(Fd),
                node: self.node_workers.contains(&pid),
                outputs: outputs.remove(&pid).unwrap_or_default(),
                stdin: self.stdins.remove(&pid).map(Fd),
            });
        }
        let held = self
            .held
            .drain(..)
            .map(|h| HeldState {
                fd: Fd(h.fd),
                client: h.client,
                listener: h.listener,
            })
            .collect();
        let slots = self.slots.hand_over()?;
        let asked = std::mem::take(&mut self.asked).hand_over()?;
        Ok(ProcsState {
            workers,
            dispatcher: self.dispatcher,
            held,
            accepting: self.accepting,
            accepted: self.accepted,
            asked,
            slots,
        })
    }

    /// Everything, as duplicates, while the engine runs on: what a holder keeps in case
    /// this process dies (the bytes its readers hold then are lost with it, and so are
    /// connections it holds and messages it has not sent).
    pub(in crate::supervisor) fn snapshot(&self) -> io::Result<ProcsState> {
        let pids = self.worker_pids(self.outputs.keys().copied());
        let mut workers = Vec::new();
        for pid in pids {
            let channel = match self.channels.get(&pid) {
                Some(ch) => Some(ch.snapshot()?),
                None => None,
            };
            let outputs = self
                .outputs
                .get(&pid)
                .into_iter()
                .flatten()
                .map(|(slot, stream, fd)| {
                    Ok(OutputState {
                        slot: *slot,
                        stream: *stream,
                        fd: Fd::dup(fd.as_fd())?,
                        pending: Vec::new(),
                    })
                })
                .collect::<io::Result<_>>()?;
            workers.push(WorkerIo {
                pid,
                channel,
                worker_end: self
                    .worker_ends
                    .get(&pid)
                    .map(|e| Fd::dup(e.as_fd()))
                    .transpose()?,
                node: self.node_workers.contains(&pid),
                outputs,
                stdin: self
                    .stdins
                    .get(&pid)
                    .map(|fd| Fd::dup(fd.as_fd()))
                    .transpose()?,
            });
        }
        Ok(ProcsState {
            workers,
            dispatcher: self.dispatcher.clone(),
            // Connections held now may be handed over a moment later: a copy kept by the
            // holder would reach a second worker. Those held when the daemon dies are lost.
            held: Vec::new(),
            accepting: self.accepting,
            accepted: self.accepted,
            asked: self.asked.snapshot()?,
            slots: self.slots.hand_over()?,
        })
    }

    /// The OS side a [`OsProcesses::into_state`] described, its readers and pumps running.
    pub(in crate::supervisor) fn resume(
        template: Template,
        listeners: &[Listener],
        logs: mpsc::Sender<LogLine>,
        inputs: mpsc::Sender<(Pid, Input)>,
        state: ProcsState,
    ) -> io::Result<OsProcesses> {
        let slots = SlotSockets::resume(listeners, state.slots);
        let balance = state.dispatcher.mode();
        let mut procs = OsProcesses::new(template, logs, inputs, balance, slots);
        procs.dispatcher = state.dispatcher;
        procs.accepting = state.accepting;
        procs.accepted = state.accepted;
        procs.asked = AskedPorts::resume(state.asked);
        procs.held = state
            .held
            .into_iter()
            .map(|h| Held {
                fd: h.fd.0,
                client: h.client,
                listener: h.listener,
            })
            .collect();
        for worker in state.workers {
            let pid = worker.pid;
            if let Some(channel) = worker.channel {
                procs
                    .channels
                    .insert(pid, Channel::resume(channel, pid, procs.inputs.clone())?);
            }
            if let Some(end) = worker.worker_end {
                procs.worker_ends.insert(pid, end.0);
            }
            if worker.node {
                procs.node_workers.insert(pid);
            }
            if let Some(stdin) = worker.stdin {
                procs.stdins.insert(pid, stdin.0);
            }
            for out in worker.outputs {
                procs.pump_output(pid, out.slot, [(out.fd.0, out.stream, out.pending)]);
            }
        }
        Ok(procs)
    }
}
