//! `corral run` as a systemd service itself (`Type=notify`): READY=1 once every worker is
//! first ready, STOPPING=1 when it drains, and WATCHDOG=1 pings from the supervisor's
//! own runtime when the unit sets `WatchdogSec=` (a stuck supervisor stops pinging and
//! systemd restarts it). Without `NOTIFY_SOCKET` every call does nothing.

use std::collections::BTreeSet;

use corral_core::group::Report;
use corral_core::process::Pid;
use sd_notify::NotifyState;

/// What systemd is told, from the engine's reports.
pub struct Service {
    instances: usize,
    ready: BTreeSet<(usize, Pid)>,
    told_ready: bool,
}

impl Service {
    pub fn new(instances: usize) -> Service {
        Service {
            instances,
            ready: BTreeSet::new(),
            told_ready: false,
        }
    }

    pub fn apply(&mut self, report: &Report) {
        match report {
            Report::Ready { slot, pid, .. } => {
                self.ready.retain(|&(s, _)| s != *slot);
                self.ready.insert((*slot, *pid));
            }
            Report::Exited { slot, pid, .. } => {
                self.ready.remove(&(*slot, *pid));
            }
            Report::Scaled { to, .. } => self.instances = *to,
            Report::Stopping { .. } => {
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
            }
            _ => {}
        }
        if !self.told_ready && self.ready.len() >= self.instances {
            self.told_ready = true;
            let status = format!("{} workers ready", self.ready.len());
            let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    }
}

/// Pings systemd's watchdog at half its interval, from the current runtime, when the unit
/// asks for it (`WATCHDOG_USEC` for this pid).
pub fn start_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }))
}
