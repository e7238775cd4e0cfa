//! The real [`Processes`]: spawns workers with their listeners and channel, and hands
//! accepted connections to them over it.
//!
//! Longer than 500 lines because `OsProcesses` is one type: spawning, the channel table, the accept and hand-over passes and recovery share its state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use corral_proto::channel::{Message, PROTOCOL_VERSION};
use corral_proto::env;
use nix::sys::signal::Signal;
use nix::sys::socket::{accept4, getpeername, SockFlag, SockaddrStorage};
use tokio::sync::mpsc;

use crate::channel::{self, Channel, Input, SendError};
use crate::dispatch::{Balance, Dispatcher};
use crate::group::Processes;
use crate::listen::Listener;
use crate::node;
use crate::os;
use crate::output::{self, LogLine, Stream};
use crate::process::{Pid, SpawnError};
use crate::spec::AppSpec;

use super::slots::{SlotSocket, SlotSockets};

mod handed;
pub(super) use handed::ProcsState;

/// Connections a worker may have handed over but not yet acked.
pub const WINDOW: u32 = 32;
/// Accepted connections the supervisor holds at most while no worker has room; beyond
/// it, connections wait in the kernel's backlog instead.
const MAX_HELD: usize = 1024;
/// Connections accepted in one pass before the loop looks at its other inputs again.
const ACCEPTS_PER_PASS: usize = 256;
/// SCM_RIGHTS carries at most this many fds per message (the kernel allows 253).
const FDS_PER_MESSAGE: usize = 64;

/// The parts of every worker's command line and environment that don't depend on its slot.
pub(super) struct Template {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    listen_fds: Vec<RawFd>,
    die_with_parent: bool,
    stdin_pipe: bool,
    /// Also names the slot (PM2's `instance_var`).
    instance_var: Option<String>,
    /// A variable and its base value, plus the slot for each worker (`increment_var`).
    increment: Option<(String, i64)>,
}

impl Template {
    pub(super) fn new(
        spec: &AppSpec,
        program: PathBuf,
        listeners: &[Listener],
        notify: &Path,
    ) -> Self {
        let mut vars: Vec<(&str, OsString)> = vec![
            (env::CORRAL_APP, spec.name.clone().into()),
            (env::NOTIFY_SOCKET, notify.as_os_str().to_owned()),
            // The channel goes right after the listeners.
            (
                env::CORRAL_CHANNEL_FD,
                (env::LISTEN_FDS_START as usize + listeners.len())
                    .to_string()
                    .into(),
            ),
        ];
        if !listeners.is_empty() {
            vars.push((env::LISTEN_FDS, listeners.len().to_string().into()));
            let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
            vars.push((env::LISTEN_FDNAMES, names.join(":").into()));
        }
        if let Some(port) = listeners.iter().find_map(Listener::port) {
            vars.push((env::PORT, port.to_string().into()));
        }
        if let Some(watchdog) = spec.watchdog {
            vars.push((env::WATCHDOG_USEC, watchdog.as_micros().to_string().into()));
        }
        let args = spec.command.get(1..).unwrap_or_default();
        if let Some(adapter) = node::adapter_for(&program, args) {
            vars.extend(node_vars(spec, listeners, notify, adapter));
        }
        // corral's own variables win over inherited ones of the same name.
        let mut env: Vec<(OsString, OsString)> = spec
            .env
            .iter()
            .filter(|(k, _)| {
                !env::NOT_INHERITED.iter().any(|n| k == n)
                    && !vars.iter().any(|(n, _)| k == n)
                    && k != env::CORRAL_WORKER_ID
                    && k != env::NODE_APP_INSTANCE
            })
            .cloned()
            .collect();
        env.extend(vars.into_iter().map(|(k, v)| (k.into(), v)));
        let increment = spec.per_slot.increment_var.as_ref().and_then(|var| {
            let base = env
                .iter()
                .rev()
                .find(|(k, _)| k == var.as_str())?
                .1
                .to_str()?;
            Some((var.clone(), base.trim().parse::<i64>().ok()?))
        });
        Template {
            program,
            args: spec.command.clone(),
            env,
            instance_var: spec.per_slot.instance_var.clone(),
            increment,
            cwd: spec.cwd.clone(),
            listen_fds: listeners.iter().map(Listener::raw_fd).collect(),
            die_with_parent: spec.die_with_supervisor,
            stdin_pipe: spec.stdin_pipe,
        }
    }

    fn command(&self, slot: usize, channel_fd: RawFd) -> os::Command {
        let mut env = self.env.clone();
        let id = OsString::from(slot.to_string());
        env.push((env::CORRAL_WORKER_ID.into(), id.clone()));
        if let Some(var) = &self.instance_var {
            env.push((var.into(), id.clone()));
        }
        env.push((env::NODE_APP_INSTANCE.into(), id));
        if let Some((var, base)) = &self.increment {
            let value = base.saturating_add(slot as i64).to_string();
            env.retain(|(k, _)| k != var.as_str());
            env.push((var.into(), value.into()));
        }
        os::Command {
            program: self.program.clone(),
            args: self.args.clone(),
            env,
            cwd: self.cwd.clone(),
            listen_fds: self.listen_fds.clone(),
            extra_fds: vec![channel_fd],
            die_with_parent: self.die_with_parent,
            stdin_pipe: self.stdin_pipe,
        }
    }
}

/// The Node adapter's variables; without its preload file (which should not happen in
/// corral's own runtime directory) the app still runs, shared, just without the adapter.
fn node_vars(
    spec: &AppSpec,
    listeners: &[Listener],
    notify: &Path,
    adapter: node::Adapter,
) -> Vec<(&'static str, OsString)> {
    let Some(dir) = notify.parent() else {
        return Vec::new();
    };
    let Ok(preload) = node::write_preload(dir) else {
        return Vec::new();
    };
    let channel_fd = env::LISTEN_FDS_START as usize + listeners.len();
    node::env(&preload, spec, listeners, channel_fd, adapter)
}

/// How an accept pass on one listener ended.
pub(super) enum Pass {
    /// The queue is empty.
    Emptied,
    /// Stopped for credit or fairness; more may wait.
    More,
    /// Out of fds or memory with connections waiting; `progressed` when some were
    /// accepted (and handed over, freeing their fds) before that.
    Starved {
        errno: nix::errno::Errno,
        progressed: bool,
    },
}

/// Connections to hand over, per worker and listener.
type Batches = BTreeMap<(Pid, u32), Vec<Held>>;

/// A connection the supervisor accepted and has not handed over yet.
struct Held {
    fd: OwnedFd,
    client: Option<IpAddr>,
    listener: u32,
}

/// [`Processes`] on the real OS.
pub(super) struct OsProcesses {
    template: Template,
    logs: mpsc::Sender<LogLine>,
    inputs: mpsc::Sender<(Pid, Input)>,
    channels: HashMap<Pid, Channel>,
    /// Our duplicate of each worker's end of its channel. It keeps the worker's receive
    /// queue alive after the worker dies, so connections handed over but never read can
    /// be taken back and given to another worker.
    worker_ends: HashMap<Pid, OwnedFd>,
    /// Workers that are Node reading their channel as Node's IPC channel.
    node_workers: std::collections::HashSet<Pid>,
    /// Each worker's slot and its output pumps, stopped for a hand-over.
    pumps: HashMap<Pid, (usize, Vec<(Stream, output::Pump)>)>,
    /// Duplicates of each worker's output pipes, for snapshots (`handed.rs`): a holder
    /// keeps them, so that a worker's writes never meet a pipe without a reader (EPIPE,
    /// SIGPIPE) while no daemon runs.
    outputs: HashMap<Pid, Vec<(usize, Stream, OwnedFd)>>,
    /// The write end of each worker's standard input ([`AppSpec::stdin_pipe`]).
    ///
    /// [`AppSpec::stdin_pipe`]: crate::spec::AppSpec::stdin_pipe
    stdins: HashMap<Pid, OwnedFd>,
    pub(super) dispatcher: Dispatcher,
    listeners: Vec<RawFd>,
    held: VecDeque<Held>,
    accepting: bool,
    /// Ports workers asked for at run time.
    pub(super) asked: super::asked::AskedPorts,
    /// Reuseport mode's socket per slot.
    slots: SlotSockets,
    /// Connections accepted by corral so far.
    accepted: u64,
    /// What the I/O here has to say, for the supervisor loop to send on.
    reports: Vec<crate::group::Report>,
}

impl OsProcesses {
    pub(super) fn new(
        template: Template,
        logs: mpsc::Sender<LogLine>,
        inputs: mpsc::Sender<(Pid, Input)>,
        balance: Balance,
        slots: SlotSockets,
    ) -> Self {
        let listeners = template.listen_fds.clone();
        let asked = super::asked::AskedPorts::new(balance.reuseport(), listeners.len() as u32);
        OsProcesses {
            template,
            logs,
            inputs,
            channels: HashMap::new(),
            worker_ends: HashMap::new(),
            node_workers: Default::default(),
            pumps: HashMap::new(),
            outputs: HashMap::new(),
            stdins: HashMap::new(),
            dispatcher: Dispatcher::new(balance, WINDOW),
            listeners,
            held: VecDeque::new(),
            accepting: false,
            asked,
            slots,
            accepted: 0,
            reports: Vec::new(),
        }
    }

    /// Reports from the I/O, oldest first.
    pub(super) fn take_reports(&mut self) -> Vec<crate::group::Report> {
        std::mem::take(&mut self.reports)
    }

    /// Reuseport mode: the sockets of slots without a worker, which corral watches and
    /// takes connections from while some worker takes them over its channel.
    pub(super) fn orphans(&mut self) -> Vec<SlotSocket> {
        self.groups().flat_map(|g| g.orphans()).collect()
    }

    /// A number that changes whenever [`Self::orphans`] does.
    pub(super) fn orphans_generation(&mut self) -> u64 {
        let asked = self.asked.groups().count() as u64;
        self.groups().map(|g| g.generation()).sum::<u64>() + asked
    }

    /// Reuseport mode: every slot's own sockets and the ports asked for, which are
    /// corral's listeners too.
    pub(super) fn slot_sockets(&mut self) -> Vec<RawFd> {
        self.groups().flat_map(|g| g.sockets()).collect()
    }

    /// The configured listeners' slot sockets, then each asked port's.
    fn groups(&mut self) -> impl Iterator<Item = &mut SlotSockets> {
        std::iter::once(&mut self.slots).chain(self.asked.groups())
    }

    /// The socket of `addr` for the worker of `slot`, bound on the first ask.
    pub(super) fn ask_port(
        &mut self,
        addr: crate::spec::ListenAddr,
        slot: usize,
    ) -> super::asked::Asked {
        self.asked.ask(addr, slot, &self.slots)
    }

    /// Whether corral should take connections from slots without a worker now.
    pub(super) fn wants_orphans(&self) -> bool {
        self.dispatcher.credit_total() > 0 && self.held.len() < MAX_HELD
    }

    /// What the next workers run.
    pub(super) fn set_template(&mut self, template: Template) {
        self.template = template;
    }

    /// Whether `pid` is a Node worker reading its channel as Node's IPC channel.
    pub(super) fn is_node(&self, pid: Pid) -> bool {
        self.node_workers.contains(&pid)
    }

    pub(super) fn channel(&mut self, pid: Pid) -> Option<&mut Channel> {
        self.channels.get_mut(&pid)
    }

    /// Sends `data` from the supervisor to every worker; returns how many took it.
    pub(super) fn message_all(&mut self, data: &serde_json::Value) -> usize {
        let message = Message::Message {
            from: None,
            data: data.clone(),
        };
        let mut delivered = 0;
        for channel in self.channels.values_mut() {
            if channel.send(&message).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }

    /// Every channel but `except`'s.
    pub(super) fn other_channels(
        &mut self,
        except: Pid,
    ) -> impl Iterator<Item = (&Pid, &mut Channel)> {
        self.channels
            .iter_mut()
            .filter(move |(pid, _)| **pid != except)
    }

    /// Answers a worker's hello; the first worker that takes dispatched connections
    /// turns the supervisor's accepting on.
    pub(super) fn hello(
        &mut self,
        pid: Pid,
        slot: usize,
        dispatch: bool,
        node: bool,
    ) -> Result<bool, SendError> {
        let capable = self.dispatcher.hello(pid, slot, dispatch);
        if node {
            self.node_workers.insert(pid);
        }
        if capable && !self.accepting {
            // O_NONBLOCK is a property of the socket's open file description, which the
            // workers share: only turned on once workers stop accepting themselves.
            for &fd in &self.listeners {
                // SAFETY: the listeners stay open as long as this supervisor runs.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let _ = os::set_nonblocking(fd); // fails only for a bad fd: then nothing to take
            }
            self.accepting = true;
        }
        let welcome = Message::Welcome {
            version: PROTOCOL_VERSION,
            dispatch: capable,
            window: self.dispatcher.window(),
        };
        if let Some(channel) = self.channels.get_mut(&pid) {
            channel.send(&welcome)?;
        }
        Ok(capable)
    }

    /// Whether the supervisor accepts at all (some worker takes dispatched connections).
    pub(super) fn accepting(&self) -> bool {
        self.accepting
    }

    pub(super) fn listener_fds(&self) -> &[RawFd] {
        &self.listeners
    }

    /// Whether a pass would do something: held connections with somewhere to go, or
    /// a listener with pending connections and room for them.
    pub(super) fn wants_pass(&self) -> bool {
        self.accepting && self.dispatcher.credit_total() > 0 && (!self.held.is_empty())
    }

    /// Whether the loop should wait for listener readiness.
    pub(super) fn wants_accept(&self) -> bool {
        self.accepting && self.dispatcher.credit_total() > 0 && self.held.len() < MAX_HELD
    }

    /// Hands held connections to workers that have room now.
    pub(super) fn deliver_held(&mut self) {
        let mut batches = Batches::new();
        let mut keep = VecDeque::new();
        while let Some(held) = self.held.pop_front() {
            match self.choose(held.client) {
                Some(pid) => batches.entry((pid, held.listener)).or_default().push(held),
                None => keep.push_back(held),
            }
        }
        self.held = keep;
        self.deliver_all(batches);
    }

    /// Accepts from listener `i` and hands the connections out while there is credit.
    pub(super) fn accept_from(&mut self, i: usize) -> Pass {
        self.accept_socket(SlotSocket {
            fd: self.listeners[i],
            listener: i as u32,
        })
    }

    /// Accepts from the socket of a slot that has no worker and hands the connections
    /// out while there is credit.
    pub(super) fn accept_orphan(&mut self, socket: SlotSocket) -> Pass {
        // No process holds it now (the slot's next worker gets it blocking again, as
        // bound): corral's accept must not wait.
        // SAFETY: slot sockets live as long as `self.slots`.
        let _ = os::set_nonblocking(unsafe { BorrowedFd::borrow_raw(socket.fd) });
        self.accept_socket(socket)
    }

    fn accept_socket(&mut self, socket: SlotSocket) -> Pass {
        let SlotSocket { fd, listener } = socket;
        let mut batches = Batches::new();
        let mut pass = Pass::More;
        let mut accepted = 0;
        while accepted < ACCEPTS_PER_PASS
            && self.held.len() < MAX_HELD
            && self.dispatcher.credit_total() > 0
        {
            let sticky = self.dispatcher.needs_client();
            let held = match accept_one(fd, listener, sticky) {
                Accepted::Conn(held) => held,
                Accepted::Empty => {
                    pass = Pass::Emptied;
                    break;
                }
                Accepted::Starved(errno) => {
                    pass = Pass::Starved {
                        errno,
                        progressed: accepted > 0,
                    };
                    break;
                }
            };
            accepted += 1;
            self.accepted += 1;
            match self.choose(held.client) {
                Some(pid) => batches.entry((pid, held.listener)).or_default().push(held),
                None => self.held.push_back(held),
            }
        }
        // Delivering closes our copies: the fds that let the next pass accept again.
        self.deliver_all(batches);
        pass
    }

    fn deliver_all(&mut self, batches: Batches) {
        for ((pid, listener), conns) in batches {
            self.deliver(pid, listener, conns);
        }
    }

    /// The worker for a connection, counted as sent to it; `None` to hold it.
    fn choose(&mut self, client: Option<IpAddr>) -> Option<Pid> {
        let pid = self.dispatcher.pick(client)?;
        if !self.dispatcher.has_credit(pid) {
            return None; // sticky: its worker is full; wait for its acks
        }
        self.dispatcher.sent(pid, 1);
        Some(pid)
    }

    fn deliver(&mut self, pid: Pid, listener: u32, conns: Vec<Held>) {
        // Node takes one handle per message; everyone else takes batches.
        let node = self.node_workers.contains(&pid);
        let per_message = if node { 1 } else { FDS_PER_MESSAGE };
        let mut rest = conns;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(per_message));
            let batch = std::mem::replace(&mut rest, tail);
            let fds: Vec<RawFd> = batch.iter().map(|h| h.fd.as_raw_fd()).collect();
            let sent = match self.channels.get_mut(&pid) {
                Some(channel) if node => channel.send_node_conn(listener, fds[0]).is_ok(),
                Some(channel) => channel.send_conns(listener, &fds).is_ok(),
                None => false,
            };
            if sent {
                continue; // dropping `batch` closes our copies; the worker has its own
            }
            // Not delivered: give the credit back and hold every connection left for
            // another pass (another worker, or this one once it reads again).
            let undelivered = (batch.len() + rest.len()) as u64;
            self.dispatcher.unsent(pid, undelivered);
            self.held.extend(batch);
            self.held.extend(rest);
            return;
        }
    }
}

impl OsProcesses {
    /// Takes what waits on the sockets of `slot`, whose last process just ended, for the
    /// other workers, while they have room. What is left (no worker takes connections
    /// over its channel, or none has room) is served by the slot's next worker, or taken
    /// by the supervisor loop as room comes.
    fn take_queues(&mut self, slot: usize, emptied: Vec<SlotSocket>) {
        if emptied.is_empty() || self.dispatcher.credit_total() == 0 {
            return;
        }
        let before = self.accepted;
        for socket in emptied {
            if super::slots::queued(socket) > 0 {
                self.accept_orphan(socket);
            }
        }
        let taken = self.accepted - before;
        if taken > 0 {
            self.reports.push(crate::group::Report::QueueTaken {
                slot,
                connections: taken as usize,
            });
        }
    }
}

/// Takes back the connections still queued, unread, on a dead worker's end of its channel.
/// Fds travel with the first bytes of their `CORRAL_CONN` line, so every fd found here is
/// one the worker never received.
fn recover(end: &OwnedFd) -> Vec<Held> {
    use corral_proto::channel::{decode, Frame, Lines};
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut lines = Lines::new();
    let mut conns = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    // Stops at the empty queue (WouldBlock) or the end; a truncated message still
    // yields the fds that arrived.
    while let Ok(received) = corral_proto::fdpass::recv(end.as_fd(), &mut buf) {
        let n = received.len;
        fds.extend(received.fds);
        if n == 0 {
            break;
        }
        for line in lines.push(&buf[..n]).into_iter().flatten() {
            let conn = match decode(&line) {
                Ok(Frame::Corral(Message::Conn {
                    listener,
                    fds: count,
                })) => Some((listener, count)),
                // A Node worker's: NODE_HANDLE wrapping {"cmd":"CORRAL_CONN","listener":i}.
                Ok(Frame::User(v))
                    if v["cmd"] == "NODE_HANDLE" && v["msg"]["cmd"] == "CORRAL_CONN" =>
                {
                    Some((v["msg"]["listener"].as_u64().unwrap_or(0) as u32, 1))
                }
                // A listener it asked for (CORRAL_BOUND): our copy of it stays with us.
                Ok(Frame::User(v)) if v["cmd"] == "NODE_HANDLE" => {
                    fds.pop_front();
                    None
                }
                _ => None,
            };
            if let Some((listener, count)) = conn {
                for fd in fds.drain(..(count as usize).min(fds.len())) {
                    let client = peer_ip(&fd);
                    conns.push(Held {
                        fd,
                        client,
                        listener,
                    });
                }
            }
        }
    }
    conns
}

fn peer_ip(fd: &OwnedFd) -> Option<IpAddr> {
    getpeername::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::from(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::from(v6.ip())))
        })
}

/// What one non-blocking accept found.
enum Accepted {
    Conn(Held),
    /// The queue is empty (or the listener is broken: nothing to take).
    Empty,
    /// Connections wait but corral is out of fds or memory: try again soon.
    Starved(nix::errno::Errno),
}

/// `client`: look up the peer's address (a syscall per connection only sticky needs).
fn accept_one(fd: RawFd, listener: u32, client: bool) -> Accepted {
    use nix::errno::Errno;
    loop {
        match accept4(fd, SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                let client = client.then(|| peer_ip(&fd)).flatten();
                return Accepted::Conn(Held {
                    fd,
                    client,
                    listener,
                });
            }
            // A client that gave up, or one the network dropped: take the next one.
            Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO | Errno::EPERM) => continue,
            Err(e) if os::out_of_resources(e as i32) => return Accepted::Starved(e),
            Err(_) => return Accepted::Empty,
        }
    }
}

impl OsProcesses {
    /// Reads a worker's output pipes into the log, each with what was read of its
    /// unfinished line, and keeps a duplicate of each for snapshots.
    fn pump_output(
        &mut self,
        pid: Pid,
        slot: usize,
        streams: impl IntoIterator<Item = (OwnedFd, Stream, Vec<u8>)>,
    ) {
        for (fd, stream, pending) in streams {
            if let Ok(dup) = fd.try_clone() {
                self.outputs
                    .entry(pid)
                    .or_default()
                    .push((slot, stream, dup));
            }
            let pump = output::pump(fd, slot, pid, stream, self.logs.clone(), pending);
            let entry = self.pumps.entry(pid).or_insert_with(|| (slot, Vec::new()));
            entry.1.extend(pump.map(|p| (stream, p)));
        }
    }

    /// Writes `bytes` to the standard input of each of `pids`, whole or not at all: a
    /// worker that has not read what it was sent (its pipe full) is not sent more.
    pub(super) fn write_stdin(
        &mut self,
        pids: &[Pid],
        bytes: &[u8],
    ) -> Result<usize, InputRefused> {
        let mut written = 0;
        for pid in pids {
            let Some(fd) = self.stdins.get(pid) else {
                return Err(InputRefused::NoPipe(*pid));
            };
            match nix::unistd::write(fd, bytes) {
                Ok(n) if n == bytes.len() => written += 1,
                // A short write leaves part of the line in the pipe; the rest would
                // follow a later line's start, so the worker is told nothing more.
                Ok(_) => return Err(InputRefused::Full(*pid)),
                Err(nix::errno::Errno::EAGAIN) => return Err(InputRefused::Full(*pid)),
                Err(e) => return Err(InputRefused::Closed(*pid, e.into())),
            }
        }
        Ok(written)
    }
}

/// Why a line did not reach a worker's standard input.
#[derive(Debug, thiserror::Error)]
pub enum InputRefused {
    #[error("worker {0} has no standard input pipe (the app was started without `--stdin pipe`)")]
    NoPipe(Pid),
    #[error("worker {0} is not reading its standard input: its pipe is full")]
    Full(Pid),
    #[error("worker {0} closed its standard input")]
    Closed(Pid, #[source] std::io::Error),
    #[error("no worker serves slot {0}")]
    NoWorker(usize),
    #[error("the app has no running worker")]
    NoWorkers,
    #[error("the app is stopping")]
    Stopping,
}

impl Processes for OsProcesses {
    fn spawn(&mut self, slot: usize) -> Result<Pid, SpawnError> {
        let (theirs, ours) = channel::pair().map_err(SpawnError::Os)?;
        let mut command = self.template.command(slot, theirs.as_raw_fd());
        if self.slots.enabled() {
            command.listen_fds = self.slots.fds_for(slot).map_err(SpawnError::Os)?;
        }
        self.groups().for_each(|g| g.spawning(slot));
        let child = os::spawn(&command)?;
        self.groups().for_each(|g| g.spawned(slot, child.pid));
        os::keeper::watch(child.pid);
        self.worker_ends.insert(child.pid, theirs);
        if let Some(stdin) = child.stdin {
            self.stdins.insert(child.pid, stdin);
        }
        let streams = [
            (child.stdout, Stream::Stdout),
            (child.stderr, Stream::Stderr),
        ];
        self.pump_output(child.pid, slot, streams.map(|(fd, s)| (fd, s, Vec::new())));
        // Without a channel the worker still runs; it just can't talk to us.
        if let Ok(channel) = Channel::start(ours, child.pid, self.inputs.clone()) {
            self.channels.insert(child.pid, channel);
        }
        Ok(child.pid)
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        os::signal_group(pgid, signal);
    }

    fn route(&mut self, pid: Pid, slot: usize, routable: bool) {
        if routable {
            os::keeper::ready(pid);
        }
        self.dispatcher.route(pid, slot, routable);
        let failed: Vec<_> = self
            .groups()
            .filter_map(|g| {
                if routable {
                    g.route(pid, slot, true)
                } else {
                    g.unroute(pid, slot)
                }
            })
            .collect();
        if let Some(e) = failed.first() {
            self.reports.push(crate::group::Report::SteerFailed {
                error: crate::group::error_chain(e),
            });
        }
    }

    fn send_shutdown(&mut self, pid: Pid) -> bool {
        let Some(channel) = self.channels.get_mut(&pid) else {
            return false;
        };
        // PM2's `'shutdown'` first: corral's Node preload drains at CORRAL_SHUTDOWN and
        // may exit at once (no server open), before the app heard its own message.
        channel
            .send_user(&serde_json::Value::String("shutdown".into()))
            .is_ok()
            && channel.send(&Message::Shutdown {}).is_ok()
    }

    fn group_alive(&mut self, pgid: Pid) -> bool {
        os::group_alive(pgid)
    }

    fn group_gone(&mut self, pgid: Pid) {
        os::keeper::forget(pgid);
    }

    fn reaped(&mut self, pid: Pid, slot: usize) -> usize {
        self.channels.remove(&pid);
        // Its pumps read on until every process that could write to them is gone.
        self.pumps.remove(&pid);
        self.outputs.remove(&pid);
        self.stdins.remove(&pid);
        self.dispatcher.remove(pid);
        self.node_workers.remove(&pid);
        let emptied: Vec<SlotSocket> = self.groups().flat_map(|g| g.exited(slot, pid)).collect();
        self.take_queues(slot, emptied);
        let Some(end) = self.worker_ends.remove(&pid) else {
            return 0;
        };
        let recovered = recover(&end);
        let n = recovered.len();
        for held in recovered.into_iter().rev() {
            self.held.push_front(held);
        }
        n
    }
}
