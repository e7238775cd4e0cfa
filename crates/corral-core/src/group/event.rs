//! What goes into a group: the controls callers send and the events its loop feeds it.

use std::time::Duration;

use corral_proto::notify::Notice;
use nix::sys::signal::Signal;

use crate::process::{ExitStatus, Pid};

/// What a caller asks of a running group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Replace every worker, one at a time, without ever having fewer ready than before.
    Reload,
    /// [`Control::Reload`], and name this ticket in the report that ends the reload that
    /// serves it ([`Report::ReloadFinished`] or [`Report::ReloadAborted`]), so a caller can
    /// wait for its outcome.
    ///
    /// [`Report::ReloadFinished`]: crate::group::Report::ReloadFinished
    /// [`Report::ReloadAborted`]: crate::group::Report::ReloadAborted
    ReloadTicket(u64),
    ScaleUp,
    ScaleDown,
    /// Run exactly this many workers: one step, all or nothing.
    ScaleTo(usize),
    /// Ask every worker to drain and exit; SIGKILL after the kill timeout.
    Stop,
    /// SIGKILL every worker now.
    Kill,
    /// Pass a signal on to every worker's process group.
    Forward(Signal),
}

/// An input to the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    Exited {
        pid: Pid,
        status: ExitStatus,
    },
    Notify {
        pid: Pid,
        notices: Vec<Notice>,
    },
    /// The worker said hello on its channel; it heartbeats every `heartbeat`, if set.
    Hello {
        pid: Pid,
        heartbeat: Option<Duration>,
    },
    /// A heartbeat, with how late the worker's timers fire.
    Heartbeat {
        pid: Pid,
        lag: Duration,
    },
    /// Memory of the worker's process tree, in bytes.
    Memory {
        pid: Pid,
        rss: u64,
    },
    /// Time passed; deadlines up to now are due.
    Tick,
    /// The supervisor could not run for `paused` (its timer fired that late: the machine
    /// was suspended or starved, or corral was stopped). Silence and slowness in that
    /// time are not the workers' fault: judgments that fell due get a grace period.
    Resumed {
        paused: Duration,
    },
    Control(Control),
}
