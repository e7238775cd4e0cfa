//! `corral run` upgrades itself in place on SIGURG: the supervisor hands its workers,
//! listeners and keeper to the corral binary now at its path, which it `exec`s (same pid,
//! so PID 1 in a container stays 1). HUP and USR2 keep reloading the app.

use std::path::PathBuf;

use corral_core::handover::{self, Fd};
use corral_core::listen::{Listener, ListenerState};
use corral_core::supervisor::Command;
use corral_core::supervisor::Handed;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::exit::Failure;

/// What `corral run` hands to the binary it becomes.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunDoc {
    version: u32,
    /// The corral version that handed over.
    pub from: String,
    keeper: Option<Fd>,
    listeners: Vec<ListenerState>,
    engine: Box<Handed>,
}

impl RunDoc {
    pub fn new(listeners: Vec<Listener>, engine: Box<Handed>) -> std::io::Result<RunDoc> {
        Ok(RunDoc {
            version: handover::VERSION,
            from: env!("CARGO_PKG_VERSION").to_owned(),
            keeper: corral_core::os::keeper::hand_over(),
            listeners: listeners
                .into_iter()
                .map(Listener::hand_over)
                .collect::<std::io::Result<_>>()?,
            engine,
        })
    }

    /// The keeper, the listeners and the engine, taken over.
    pub fn take(self) -> (Vec<Listener>, Box<Handed>) {
        if let Some(keeper) = self.keeper {
            corral_core::os::keeper::adopt(keeper);
        }
        let listeners = self.listeners.into_iter().map(Listener::resume).collect();
        (listeners, self.engine)
    }
}

/// The document a previous `corral run` of this process handed over, if any.
pub fn take_over() -> Result<Option<RunDoc>, Failure> {
    crate::upgrade::take_over("corral").map_err(Failure::Runtime)
}

/// On each SIGURG: checks the binary at corral's path, then asks the engine to hand
/// over; what it hands over goes to `handed`, for the caller to exec with once the
/// engine has returned. A refusal or a failed check is said, and nothing changes.
pub fn on_signal(
    controls: mpsc::Sender<Command>,
    handed: oneshot::Sender<(PathBuf, Box<Handed>)>,
    say: impl Fn(&str) + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut urg = signal(SignalKind::from_raw(libc::SIGURG))?;
    Ok(tokio::spawn(async move {
        while urg.recv().await.is_some() {
            let exe = crate::upgrade::installed_exe();
            let target = exe.clone();
            let checked = tokio::task::spawn_blocking(move || crate::upgrade::check(&target)).await;
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    say(&format!("upgrade refused, still running: {e:#}"));
                    continue;
                }
                Err(_) => continue,
            }
            say(&format!("upgrading in place to {}", exe.display()));
            let (request, answer) = corral_core::supervisor::hand_over_request();
            if controls.send(request).await.is_err() {
                return;
            }
            match answer.get().await {
                Ok(engine) => {
                    let _ = handed.send((exe, engine));
                    return;
                }
                Err(refused) => say(&format!("upgrade refused, still running: {refused}")),
            }
        }
    }))
}
