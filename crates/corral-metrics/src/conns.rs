//! The metrics server's connections, bounded: scrapers and probes come from a few
//! clients, but anyone who reaches the port can open thousands of idle connections, and
//! each costs an fd of the process that dispatches the app's traffic.
//!
//! At most [`MAX_OPEN`] are open. At the cap, the oldest connection that is not in the
//! middle of a request is closed for the new one, so a probe is answered during a flood
//! of idle connections (it is accepted in turn, and the idle ones give way). A client
//! that sends no request head within [`HEAD_TIMEOUT`] is closed by hyper.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

/// Open connections at most.
pub const MAX_OPEN: usize = 64;
/// How long a client may take to send a request's head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection's task shares with the accept loop.
#[derive(Default)]
pub struct Flags {
    /// Within a request (between its head and its response).
    pub busy: AtomicBool,
    pub ended: AtomicBool,
}

/// The open connections, oldest first; owned by the accept loop.
#[derive(Default)]
pub struct Conns {
    open: VecDeque<(Arc<Flags>, AbortHandle)>,
}

impl Conns {
    /// Makes room for one more: forgets ended connections and, at the cap, closes the
    /// oldest idle one. False when every open connection is serving a request.
    pub fn make_room(&mut self) -> bool {
        self.open
            .retain(|(flags, _)| !flags.ended.load(Ordering::Acquire));
        if self.open.len() < MAX_OPEN {
            return true;
        }
        let idle = self
            .open
            .iter()
            .position(|(flags, _)| !flags.busy.load(Ordering::Acquire));
        match idle.and_then(|i| self.open.remove(i)) {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    pub fn add(&mut self, flags: Arc<Flags>, task: AbortHandle) {
        self.open.push_back((flags, task));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_task() -> AbortHandle {
        tokio::spawn(std::future::pending::<()>()).abort_handle()
    }

    #[tokio::test]
    async fn issue_23_at_the_cap_the_oldest_idle_connection_gives_way() {
        let mut conns = Conns::default();
        let mut all = Vec::new();
        for _ in 0..MAX_OPEN {
            assert!(conns.make_room());
            let (flags, task) = (Arc::new(Flags::default()), idle_task());
            all.push((flags.clone(), task.clone()));
            conns.add(flags, task);
        }
        all[0].0.busy.store(true, Ordering::Release);
        assert!(conns.make_room(), "an idle one gives way");
        assert_eq!(conns.len(), MAX_OPEN - 1);
        tokio::task::yield_now().await;
        assert!(!all[0].1.is_finished(), "the busy oldest stays");
        assert!(all[1].1.is_finished(), "the oldest idle one was closed");
        all[2].0.ended.store(true, Ordering::Release);
        assert!(conns.make_room());
        assert_eq!(conns.len(), MAX_OPEN - 2, "ended ones are forgotten");
    }

    #[tokio::test]
    async fn issue_23_when_every_connection_is_busy_there_is_no_room() {
        let mut conns = Conns::default();
        for _ in 0..MAX_OPEN {
            let flags = Arc::new(Flags::default());
            flags.busy.store(true, Ordering::Release);
            conns.add(flags, idle_task());
        }
        assert!(!conns.make_room());
    }
}
