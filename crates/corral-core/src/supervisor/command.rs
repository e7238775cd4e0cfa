//! What a caller sends a running app: a [`Control`] for its group, or a command the
//! supervisor loop handles itself (the group never sees these), each hand-over kind with
//! a typed reply.

use tokio::sync::oneshot;

use super::{EngineSnapshot, Handed, InputRefused};
use crate::group::Control;
use crate::handover::Refused;

#[derive(Debug)]
pub enum Command {
    Group(Control),
    /// Send a message (JSON) to every worker over its channel.
    Message(serde_json::Value),
    /// Start new workers from this spec's command, environment and working directory
    /// (a reload then replaces the running ones). Listeners, worker count and policies
    /// stay as they are.
    Respec(Box<crate::spec::AppSpec>),
    /// Stop supervising and give everything to the caller, who passes it to another
    /// binary (`crate::handover`); the workers notice nothing (see
    /// [`hand_over_request`]).
    HandOver(oneshot::Sender<Result<Box<Handed>, Refused>>),
    /// A copy of what [`Command::HandOver`] would give, as duplicates, while the engine
    /// runs on (for a holder: [`snapshot_request`]).
    Snapshot(oneshot::Sender<Result<EngineSnapshot, Refused>>),
    /// Write bytes to the standard input of the worker serving `slot`, or of every
    /// worker; the answer is how many were written to (see [`input_request`]).
    Input {
        slot: Option<usize>,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<usize, InputRefused>>,
    },
}

impl From<Control> for Command {
    fn from(control: Control) -> Self {
        Command::Group(control)
    }
}

/// Where the answer to a [`Command::HandOver`], [`Command::Snapshot`] or
/// [`Command::Input`] comes.
pub struct Answer<T, E = Refused>(oneshot::Receiver<Result<T, E>>);

impl<T, E: Stopping> Answer<T, E> {
    /// The answer, or why there is none (an engine that ended first counts as stopping).
    pub async fn get(self) -> Result<T, E> {
        self.0.await.unwrap_or(Err(E::stopping()))
    }
}

/// The refusal of an engine that ended before it answered.
pub trait Stopping {
    fn stopping() -> Self;
}

impl Stopping for Refused {
    fn stopping() -> Self {
        Refused::Stopping
    }
}

impl Stopping for InputRefused {
    fn stopping() -> Self {
        InputRefused::Stopping
    }
}

/// A [`Command::Input`] to send to a running app, and where its answer comes.
pub fn input_request(
    slot: Option<usize>,
    bytes: Vec<u8>,
) -> (Command, Answer<usize, InputRefused>) {
    let (reply, rx) = oneshot::channel();
    (Command::Input { slot, bytes, reply }, Answer(rx))
}

/// A [`Command::Snapshot`] to send to a running app, and where its answer comes.
pub fn snapshot_request() -> (Command, Answer<EngineSnapshot>) {
    let (tx, rx) = oneshot::channel();
    (Command::Snapshot(tx), Answer(rx))
}

/// A [`Command::HandOver`] to send to a running app, and where its answer comes.
pub fn hand_over_request() -> (Command, Answer<Box<Handed>>) {
    let (tx, rx) = oneshot::channel();
    (Command::HandOver(tx), Answer(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_engine_that_ends_before_answering_counts_as_stopping() {
        let (command, answer) = snapshot_request();
        drop(command);
        assert!(matches!(answer.get().await, Err(Refused::Stopping)));
    }

    #[tokio::test]
    async fn a_refusal_reaches_the_caller_as_sent() {
        let (command, answer) = hand_over_request();
        let Command::HandOver(reply) = command else {
            panic!("a hand-over request");
        };
        let _ = reply.send(Err(Refused::RollingOut));
        assert!(matches!(answer.get().await, Err(Refused::RollingOut)));
    }
}
