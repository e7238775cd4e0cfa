//! A group's workers and slots: where each worker is in its life, and what each slot
//! is waiting for.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::process::Pid;
use crate::restart::RestartState;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerState {
    Starting {
        #[serde(with = "crate::handover::mono")]
        since: Instant,
        #[serde(with = "crate::handover::mono")]
        deadline: Instant,
    },
    Ready {
        #[serde(with = "crate::handover::mono")]
        since: Instant,
        #[serde(with = "crate::handover::mono")]
        last_ping: Instant,
    },
    /// Asked to exit; SIGKILL at `deadline`.
    Draining {
        #[serde(with = "crate::handover::mono")]
        since: Instant,
        #[serde(with = "crate::handover::mono")]
        deadline: Instant,
    },
    /// SIGKILL sent; waiting for the exit.
    Killed {
        #[serde(with = "crate::handover::mono")]
        since: Instant,
    },
}

/// One worker process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    pub slot: usize,
    #[serde(with = "crate::handover::mono")]
    pub started: Instant,
    pub ever_ready: bool,
    pub state: WorkerState,
    /// Silence after which it counts as hung: set by its hello (heartbeats), else the
    /// group's sd_notify watchdog.
    pub watchdog: Option<Duration>,
    #[serde(with = "crate::handover::mono_opt")]
    pub(super) lag_reported: Option<Instant>,
}

/// A stable worker position (`CORRAL_WORKER_ID`). `current` serves; `incoming` is its
/// replacement while a reload runs. A draining worker belongs to no slot any more.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Slot {
    pub(super) current: Option<Pid>,
    pub(super) incoming: Option<Pid>,
    pub(super) restart: RestartState,
    pub(super) state: SlotState,
}

/// What a slot waits for when it has no worker; `Active` while it has one (or is
/// getting one as part of a rollout or a stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum SlotState {
    #[default]
    Active,
    /// Its worker crashed; the next one starts at `at`.
    RestartAt {
        #[serde(with = "crate::handover::mono")]
        at: Instant,
    },
    /// It crashed too often, or its command can never start: no more restarts until a
    /// reload.
    GaveUp,
    /// Its worker exited and is not restarted (autorestart off, a stop exit code).
    Finished,
}

impl SlotState {
    /// Done for good (until a reload gives it another chance).
    pub(super) fn is_done(self) -> bool {
        matches!(self, SlotState::GaveUp | SlotState::Finished)
    }

    pub(super) fn restart_at(self) -> Option<Instant> {
        match self {
            SlotState::RestartAt { at } => Some(at),
            _ => None,
        }
    }
}
