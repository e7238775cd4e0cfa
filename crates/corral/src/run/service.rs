//! `corral run` as a systemd service itself (`Type=notify`): READY=1 once every worker is
//! first ready, STOPPING=1 when it drains, and WATCHDOG=1 pings from the supervisor's
//! own runtime when the unit sets `WatchdogSec=` (a stuck supervisor stops pinging and
//! systemd restarts it). Without `NOTIFY_SOCKET` every call does nothing.

use std::time::Instant;

use corral_core::board::SlotBoard;
use corral_core::group::Report;
use sd_notify::NotifyState;

/// What systemd is told, from the engine's reports.
pub struct Service {
    board: SlotBoard,
    told_ready: bool,
}

impl Service {
    pub fn new(instances: usize) -> Service {
        Service {
            board: SlotBoard::new(instances),
            told_ready: false,
        }
    }

    pub fn apply(&mut self, report: &Report) {
        self.board.apply(report, Instant::now());
        if let Report::Stopping { .. } = report {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
        }
        let ready = self.board.ready();
        if !self.told_ready && ready >= self.board.instances() {
            self.told_ready = true;
            let status = format!("{ready} workers ready");
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
