//! The socket check: a second after a worker is ready, corral looks at which sockets
//! its process tree holds, and names a worker that serves on none of corral's listeners
//! or on ports of its own (`Report::ListenerUnused`).

use std::os::fd::RawFd;

use super::{Reports, SOCKET_CHECK_AFTER};
use crate::group::Report;
use crate::listen::Listener;
use crate::os;
use crate::process::Pid;

/// Looks, once per worker, at whether it listens where corral told it to.
pub(super) struct SocketChecks {
    inodes: Vec<u64>,
    addresses: Vec<String>,
    due: Vec<(tokio::time::Instant, Pid, usize)>,
}

impl SocketChecks {
    pub(super) fn new(listeners: &[Listener]) -> Self {
        SocketChecks {
            inodes: listeners
                .iter()
                .filter_map(|l| os::sockets::inode_of(l.raw_fd()))
                .collect(),
            addresses: listeners.iter().map(|l| l.local.to_string()).collect(),
            due: Vec::new(),
        }
    }

    /// Counts `fds` (reuseport mode's slot sockets) among corral's listeners.
    pub(super) fn know(&mut self, fds: &[RawFd]) {
        for inode in fds.iter().filter_map(|&fd| os::sockets::inode_of(fd)) {
            if !self.inodes.contains(&inode) {
                self.inodes.push(inode);
            }
        }
    }

    pub(super) fn schedule(&mut self, pid: Pid, slot: usize) {
        if !self.inodes.is_empty() {
            let at = tokio::time::Instant::now() + SOCKET_CHECK_AFTER;
            self.due.push((at, pid, slot));
        }
    }

    pub(super) fn next(&self) -> Option<tokio::time::Instant> {
        self.due.iter().map(|&(at, ..)| at).min()
    }

    /// Checks the workers that are due and for which `alive` holds, and reports the ones
    /// that don't serve on corral's listeners. The look through /proc runs on the blocking
    /// pool: under close load /proc/net/tcp lists every TIME_WAIT socket (15k lines took
    /// 60-150 ms here), time the supervisor loop must not stop dispatching for.
    pub(super) fn run_due(&mut self, mut alive: impl FnMut(Pid) -> bool, reports: &Reports) {
        let now = tokio::time::Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.due.drain(..).partition(|&(at, ..)| at <= now);
        self.due = later;
        let due: Vec<(Pid, usize)> = due
            .into_iter()
            .filter(|&(_, pid, _)| alive(pid))
            .map(|(_, pid, slot)| (pid, slot))
            .collect();
        if due.is_empty() {
            return;
        }
        let (inodes, addresses, reports) =
            (self.inodes.clone(), self.addresses.clone(), reports.clone());
        tokio::task::spawn_blocking(move || {
            for (pid, slot) in due {
                let found = os::sockets::listener_use(pid, &inodes);
                if found.holds_ours && found.own.is_empty() {
                    continue;
                }
                let _ = reports.send(Report::ListenerUnused {
                    slot,
                    pid,
                    ours: addresses.clone(),
                    own: found.own.iter().map(ToString::to_string).collect(),
                    holds_ours: found.holds_ours,
                });
            }
        });
    }
}
