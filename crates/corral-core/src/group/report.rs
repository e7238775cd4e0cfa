//! What comes out of a group: reports of what happened, as data (the binary's
//! `render.rs` words them), and how a group ended.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{ExitStatus, Pid};

/// Something that happened, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    Spawned {
        slot: usize,
        pid: Pid,
        replacing: Option<Pid>,
    },
    /// `giving_up`: the failure is permanent and no worker ever ran, so the slot is not retried.
    SpawnFailed {
        slot: usize,
        error: String,
        giving_up: bool,
    },
    Ready {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        after: Duration,
    },
    Status {
        slot: usize,
        pid: Pid,
        text: String,
    },
    Exited {
        slot: usize,
        pid: Pid,
        status: ExitStatus,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        uptime: Duration,
        expected: bool,
    },
    RestartScheduled {
        slot: usize,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        delay: Duration,
        unstable: u32,
    },
    GaveUp {
        slot: usize,
        unstable: u32,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        min_uptime: Duration,
    },
    ReadyTimeout {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        timeout: Duration,
    },
    /// The supervisor was paused; workers get `grace` to be heard before any counts as
    /// hung, slow to start or slow to drain.
    Paused {
        #[serde(serialize_with = "crate::serde_ms::duration")]
        paused: Duration,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        grace: Duration,
    },
    WatchdogTimeout {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        silent_for: Duration,
    },
    KillTimeout {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::signal")]
        signal: Signal,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        timeout: Duration,
    },
    ReloadStarted {
        workers: usize,
        /// Each worker stops before its replacement starts (`GroupConfig::stop_first`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        stop_first: bool,
    },
    ReloadQueued,
    ReloadFinished {
        replaced: usize,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        took: Duration,
        /// The [`Control::ReloadTicket`]s this reload answers.
        ///
        /// [`Control::ReloadTicket`]: super::Control::ReloadTicket
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tickets: Vec<u64>,
    },
    ReloadAborted {
        slot: usize,
        reason: AbortReason,
        rollout: super::RolloutKind,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tickets: Vec<u64>,
    },
    Lag {
        slot: usize,
        pid: Pid,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        lag: Duration,
    },
    MemoryLimit {
        slot: usize,
        pid: Pid,
        rss: u64,
        limit: u64,
    },
    /// A worker exited and autorestart is off: its slot stays empty.
    NotRestarted {
        slot: usize,
        /// The stop exit code it ended with; None: autorestart is off.
        stop_code: Option<i32>,
    },
    /// A ready worker does not hold corral's listeners (`holds_ours` false: it closed
    /// them), or listens on ports of its own (`own`): it may serve none of corral's
    /// connections. Said once per worker, a moment after it got ready.
    ListenerUnused {
        slot: usize,
        pid: Pid,
        ours: Vec<String>,
        own: Vec<String>,
        holds_ours: bool,
    },
    /// Connections wait but corral cannot accept them (out of fds or memory); it retries
    /// every `retry` at most. Said once per 1000 failed passes.
    AcceptStarved {
        error: String,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        retry: Duration,
    },
    /// Connections handed to a worker that died before taking them, given to others.
    Recovered {
        slot: usize,
        pid: Pid,
        connections: usize,
    },
    /// Reuseport mode: connections waiting on the socket of a slot whose last process
    /// ended, taken by corral and given to other workers.
    QueueTaken {
        slot: usize,
        connections: usize,
    },
    /// Reuseport mode: new connections cannot be kept off slots without a worker (the
    /// kernel refused the steering program); corral takes those queues instead.
    SteerFailed {
        error: String,
    },
    /// A user message a worker sent on its channel.
    Message {
        slot: usize,
        pid: Pid,
        data: serde_json::Value,
    },
    /// A worker sent more channel messages than the rate limit lets through; `dropped`
    /// of them were not read.
    ChannelFlooded {
        slot: usize,
        pid: Pid,
        dropped: u64,
        per_second: u32,
    },
    /// A worker's heartbeat numbers: memory, timer lag, open connections, requests
    /// served, and connections corral handed it (dispatched modes). For metrics; never
    /// a line of output.
    Vitals {
        slot: usize,
        pid: Pid,
        rss: u64,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        lag: Duration,
        active: u64,
        requests: u64,
        dispatched: u64,
    },
    /// A worker broke its channel's rules, or corral could not answer it.
    ChannelProblem {
        slot: usize,
        pid: Pid,
        problem: ChannelProblem,
    },
    Scaled {
        from: usize,
        to: usize,
    },
    /// A worker listened on a port corral had no listener for; corral bound it for the
    /// app (at `addr`) and hands it to every worker that asks.
    PortBound {
        slot: usize,
        pid: Pid,
        addr: String,
    },
    /// A worker listened on `asked`, a port corral already listens on at other
    /// addresses (`on`): it is served there. Said once per app and address.
    PortServedOn {
        slot: usize,
        pid: Pid,
        asked: String,
        on: String,
    },
    /// ...or could not bind it; the worker's `listen` got the error.
    PortRefused {
        slot: usize,
        pid: Pid,
        addr: String,
        error: String,
    },
    ScaleRefused {
        reason: ScaleRefusal,
    },
    /// New workers could not be set up from a changed spec (its program is not
    /// found); the old command keeps running.
    RespecFailed {
        error: String,
    },
    Stopping {
        workers: usize,
        forced: bool,
    },
}

/// Why a rolling reload stopped before it replaced every worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortReason {
    SpawnFailed(String),
    ExitedBeforeReady(ExitStatus),
    NotReadyInTime(#[serde(serialize_with = "crate::serde_ms::duration")] Duration),
    /// It said it was ready, then exited `after` that, within the settle window.
    ExitedWhileSettling {
        status: ExitStatus,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        after: Duration,
        #[serde(serialize_with = "crate::serde_ms::duration")]
        settle: Duration,
    },
}

/// How a worker's channel went wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChannelProblem {
    /// A line that is not JSON, or too long.
    BadLine { error: String },
    /// Its hello could not be answered (the channel is broken or full).
    HelloUnanswered { error: String },
    /// A broadcast reached all but `workers` others: they are not reading.
    BroadcastRefused { workers: usize },
    /// It sent a message only the supervisor may send.
    SupervisorOnly,
    /// A port it asked for was bound but could not be handed to it.
    PortNotHanded { error: String },
}

/// Why a scale was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRefusal {
    /// Down from one worker (or to zero): stopping is what does that.
    LastWorker,
    /// Up past `limit` workers.
    OverLimit { limit: usize },
}

/// How a group ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request; every worker has exited.
    Stopped,
    /// Every slot gave up after a crash loop; nothing is left running.
    Failed,
    /// Handed over to another supervisor ([`crate::supervisor::Command::HandOver`]); the
    /// workers run on.
    HandedOver,
}

impl Report {
    /// Numbers for the metrics board, not an event anyone reads as a line.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Report::Vitals { .. })
    }
}
