//! Reuseport mode's sockets: one member of each listener's SO_REUSEPORT group per slot,
//! all owned here for the app's life, the steering of new connections to the slots that
//! have a ready worker, and the sockets of slots left without a worker, whose queues
//! corral takes and hands to the other workers.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::listen::Listener;
use crate::os;
use crate::process::Pid;

/// The backlog of every member, as the first socket's.
const BACKLOG: i32 = 4096;
/// How long a worker leaving the steering may take to empty its socket's queue...
const SETTLE_MAX: Duration = Duration::from_millis(200);
/// ... and how long it may take no connection before corral stops waiting.
const SETTLE_STALL: Duration = Duration::from_millis(20);

/// A socket of a slot, and the listener it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotSocket {
    pub(super) fd: RawFd,
    pub(super) listener: u32,
}

/// Why steering could not be set up; connections then follow the kernel's hash, which
/// also picks slots without a worker (corral takes those queues).
#[derive(Debug, thiserror::Error)]
#[error("cannot steer connections away from slots without a worker")]
pub struct SteerError(#[source] pub io::Error);

/// Every slot's sockets. Listeners that are not the head of a group corral owns (Unix
/// sockets, sockets systemd passed) are the same socket for every slot, as in shared mode.
pub(super) struct SlotSockets {
    /// Per listener: its fd, and whether it heads a reuseport group.
    listeners: Vec<(RawFd, bool)>,
    /// The index of the first of `listeners` among all the app's listeners (a port
    /// asked for at run time comes after the configured ones).
    first: u32,
    /// `members[s - 1][i]` is slot `s`'s member of listener `i`'s group (slot 0 uses the
    /// listener itself). Created in slot order, never closed before the app stops: a
    /// member's index in its group is its slot.
    members: Vec<Vec<Option<OwnedFd>>>,
    /// Processes in each slot that ever had one.
    occupants: BTreeMap<usize, BTreeSet<Pid>>,
    /// Workers each slot has that accept (ready, not draining).
    routable: BTreeMap<usize, BTreeSet<Pid>>,
    /// The live slots the kernel steers to now.
    steered: Option<Vec<u32>>,
    /// A port asked for at run time: the slots whose workers asked for it, the only ones
    /// steered to (with PM2's `increment_var`, each slot asks for a port of its own). None:
    /// configured listeners, which every slot serves.
    askers: Option<BTreeSet<usize>>,
    /// Bumped whenever the set of sockets without a worker changes.
    generation: u64,
}

impl SlotSockets {
    pub(super) fn new(listeners: &[Listener]) -> Self {
        SlotSockets {
            listeners: listeners
                .iter()
                .map(|l| (l.raw_fd(), l.reuseport))
                .collect(),
            first: 0,
            members: Vec::new(),
            occupants: BTreeMap::new(),
            routable: BTreeMap::new(),
            steered: None,
            askers: None,
            generation: 0,
        }
    }

    /// The sockets of `listener` (the app's listener number `index`), bound while the
    /// app runs: they start from what `now` knows of the slots' processes and workers,
    /// and steer accordingly.
    pub(super) fn joining(listener: &Listener, index: u32, now: &SlotSockets) -> Self {
        let mut slots = SlotSockets::new(std::slice::from_ref(listener));
        slots.first = index;
        slots.occupants = now.occupants.clone();
        slots.routable = now.routable.clone();
        slots.askers = Some(BTreeSet::new());
        slots
    }

    /// A port asked for at run time: `slot`'s worker asked for it, so new connections
    /// may be steered to `slot`.
    pub(super) fn asked_by(&mut self, slot: usize) -> Option<SteerError> {
        let askers = self.askers.as_mut()?;
        askers.insert(slot).then(|| self.steer_now()).flatten()
    }

    /// Whether any listener has a socket per slot.
    pub(super) fn enabled(&self) -> bool {
        self.listeners.iter().any(|&(_, group)| group)
    }

    /// The fds slot `slot`'s worker listens on, in listener order; binds the members of
    /// this slot and of every slot below it that has none yet.
    pub(super) fn fds_for(&mut self, slot: usize) -> io::Result<Vec<RawFd>> {
        while self.members.len() < slot {
            let row = self
                .listeners
                .iter()
                .map(|&(fd, group)| {
                    // SAFETY: the listeners outlive this supervisor's run.
                    let head = unsafe { BorrowedFd::borrow_raw(fd) };
                    group
                        .then(|| os::reuseport::member_of(head, BACKLOG))
                        .transpose()
                })
                .collect::<io::Result<Vec<_>>>()?;
            self.members.push(row);
        }
        Ok((0..self.listeners.len())
            .map(|i| self.fd(slot, i))
            .collect())
    }

    /// Every socket: the listeners and the members bound so far.
    pub(super) fn sockets(&self) -> impl Iterator<Item = RawFd> + '_ {
        let members = self.members.iter().flatten().flatten();
        let listeners = self.listeners.iter().map(|&(fd, _)| fd);
        listeners.chain(members.map(AsRawFd::as_raw_fd))
    }

    fn fd(&self, slot: usize, listener: usize) -> RawFd {
        let member = slot
            .checked_sub(1)
            .and_then(|s| self.members.get(s)?.get(listener)?.as_ref());
        member.map_or(self.listeners[listener].0, AsRawFd::as_raw_fd)
    }

    /// The group sockets of `slot` (not the listeners every slot shares).
    /// Only sockets bound so far: a slot whose worker never asked for a port has none
    /// of that port's group (never the group's first socket, which is slot 0's).
    fn own(&self, slot: usize) -> impl Iterator<Item = SlotSocket> + '_ {
        let bound = slot == 0 || self.members.len() >= slot;
        self.listeners
            .iter()
            .enumerate()
            .filter(move |(_, &(_, group))| group && bound)
            .map(move |(i, _)| SlotSocket {
                fd: self.fd(slot, i),
                listener: self.first + i as u32,
            })
    }

    /// A process is about to start in `slot`: its sockets are blocking again (as bound,
    /// what the worker inherits) if corral took their queue while the slot was empty.
    pub(super) fn spawning(&mut self, slot: usize) {
        let was_empty = self.is_empty(slot);
        if was_empty {
            for socket in self.own(slot).collect::<Vec<_>>() {
                // SAFETY: slot sockets live as long as `self`.
                let _ = os::set_blocking(unsafe { BorrowedFd::borrow_raw(socket.fd) });
            }
        }
        self.occupants.entry(slot).or_default();
        if was_empty {
            self.generation += 1;
        }
    }

    pub(super) fn spawned(&mut self, slot: usize, pid: Pid) {
        self.occupants.entry(slot).or_default().insert(pid);
    }

    /// A process of `slot` is gone; returns the slot's sockets when none is left.
    pub(super) fn exited(&mut self, slot: usize, pid: Pid) -> Vec<SlotSocket> {
        self.steer(pid, slot, false);
        let Some(pids) = self.occupants.get_mut(&slot) else {
            return Vec::new();
        };
        if !pids.remove(&pid) || !pids.is_empty() {
            return Vec::new();
        }
        self.generation += 1;
        self.own(slot).collect()
    }

    fn is_empty(&self, slot: usize) -> bool {
        self.occupants.get(&slot).is_some_and(BTreeSet::is_empty)
    }

    /// The sockets of slots that had a worker and have none now.
    pub(super) fn orphans(&self) -> Vec<SlotSocket> {
        self.occupants
            .iter()
            .filter(|(_, pids)| pids.is_empty())
            .flat_map(|(&slot, _)| self.own(slot))
            .collect()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `pid` of `slot` accepts; steers new connections to the slots where some
    /// worker does. Returns the error of the first failed steering only.
    pub(super) fn route(&mut self, pid: Pid, slot: usize, routable: bool) -> Option<SteerError> {
        self.steer(pid, slot, routable).1
    }

    /// A worker of `slot`, still alive, stops accepting: once new connections go
    /// elsewhere, it gets a moment to take those already queued on its socket before it
    /// is told to drain. Without it they would wait for the slot's next worker, which a
    /// scale-down never brings, and a worker without a corral channel can't be handed
    /// them. (Handshakes in flight at that instant still land there: corral hands them
    /// to workers with a channel when the last process of the slot is gone.)
    pub(super) fn unroute(&mut self, pid: Pid, slot: usize) -> Option<SteerError> {
        let (left, error) = self.steer(pid, slot, false);
        if left {
            self.settle(slot);
        }
        error
    }

    /// Waits while the queues of `slot` shrink, at most [`SETTLE_MAX`], giving up after
    /// [`SETTLE_STALL`] without progress (a hung worker). The kernel has no event for a
    /// queue that shrank, hence the short sleeps.
    fn settle(&self, slot: usize) {
        let start = Instant::now();
        let queued = || self.own(slot).map(queued).sum::<u32>();
        let (mut last, mut progress_at) = (queued(), start);
        while last > 0 {
            std::thread::sleep(Duration::from_micros(200));
            let now = Instant::now();
            let left = queued();
            if left < last {
                progress_at = now;
            }
            last = left;
            if now - progress_at > SETTLE_STALL || now - start > SETTLE_MAX {
                return;
            }
        }
    }

    /// Updates the routable set and the steering; says whether `slot` just stopped
    /// being steered to while other slots still are.
    fn steer(&mut self, pid: Pid, slot: usize, routable: bool) -> (bool, Option<SteerError>) {
        let pids = self.routable.entry(slot).or_default();
        if routable {
            pids.insert(pid);
        } else {
            pids.remove(&pid);
        }
        let was = self.steered.clone();
        let error = self.steer_now();
        let slot = slot as u32;
        let left = !routable
            && was.is_some_and(|w| w.contains(&slot))
            && self
                .steered
                .as_ref()
                .is_some_and(|now| !now.is_empty() && !now.contains(&slot));
        (left, error)
    }

    /// Steers to the slots that have a routable worker now, if that changed. Returns
    /// the error of the first steering only.
    pub(super) fn steer_now(&mut self) -> Option<SteerError> {
        let mut live: Vec<u32> = self
            .routable
            .iter()
            .filter(|(_, pids)| !pids.is_empty())
            .filter(|(slot, _)| self.askers.as_ref().is_none_or(|a| a.contains(slot)))
            .map(|(&slot, _)| slot as u32)
            .collect();
        if live.is_empty() {
            // No asker ready yet: still only the sockets of slots that asked (the kernel's
            // hash would also pick slot 0's, which may never be listened on).
            live = self.askers.iter().flatten().map(|&s| s as u32).collect();
        }
        if !self.enabled() || self.steered.as_ref() == Some(&live) {
            return None;
        }
        let first = self.steered.is_none();
        let result = self
            .listeners
            .iter()
            .filter(|&&(_, group)| group)
            .try_for_each(|&(fd, _)| {
                // SAFETY: the listeners outlive this supervisor's run.
                os::reuseport::steer(unsafe { BorrowedFd::borrow_raw(fd) }, &live)
            });
        self.steered = Some(live);
        result.err().filter(|_| first).map(SteerError)
    }
}

/// A group's slot sockets as they cross `exec` (`crate::handover`); the listeners
/// themselves travel with the app.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct SlotsState {
    first: u32,
    members: Vec<Vec<Option<crate::handover::Fd>>>,
    occupants: BTreeMap<usize, BTreeSet<Pid>>,
    routable: BTreeMap<usize, BTreeSet<Pid>>,
    steered: Option<Vec<u32>>,
    #[serde(default)]
    askers: Option<BTreeSet<usize>>,
}

impl SlotSockets {
    pub(super) fn hand_over(&self) -> io::Result<SlotsState> {
        let members = self
            .members
            .iter()
            .map(|row| {
                row.iter()
                    .map(|m| {
                        m.as_ref()
                            .map(|fd| crate::handover::Fd::dup(fd.as_fd()))
                            .transpose()
                    })
                    .collect::<io::Result<Vec<_>>>()
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SlotsState {
            first: self.first,
            members,
            occupants: self.occupants.clone(),
            routable: self.routable.clone(),
            steered: self.steered.clone(),
            askers: self.askers.clone(),
        })
    }

    /// The slot sockets of `listeners` a [`SlotSockets::hand_over`] described. The
    /// steering program stays attached to the group in the kernel.
    pub(super) fn resume(listeners: &[Listener], state: SlotsState) -> SlotSockets {
        let mut slots = SlotSockets::new(listeners);
        slots.first = state.first;
        slots.members = state
            .members
            .into_iter()
            .map(|row| row.into_iter().map(|m| m.map(|fd| fd.0)).collect())
            .collect();
        slots.occupants = state.occupants;
        slots.routable = state.routable;
        slots.steered = state.steered;
        slots.askers = state.askers;
        slots.generation = 1;
        slots
    }
}

/// Connections waiting in a slot socket's accept queue.
pub(super) fn queued(socket: SlotSocket) -> u32 {
    // SAFETY: slot sockets live as long as the supervisor's SlotSockets.
    let fd = unsafe { BorrowedFd::borrow_raw(socket.fd) };
    os::reuseport::queued(fd.as_fd()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen;

    fn listeners() -> Vec<Listener> {
        listen::bind_all(&["127.0.0.1:0".parse().unwrap()], true).unwrap()
    }

    #[test]
    fn every_slot_gets_its_own_socket_and_they_live_on() {
        let listeners = listeners();
        let mut slots = SlotSockets::new(&listeners);
        assert!(slots.enabled());
        let two = slots.fds_for(2).unwrap();
        let zero = slots.fds_for(0).unwrap();
        let one = slots.fds_for(1).unwrap();
        assert_eq!(zero, vec![listeners[0].raw_fd()]);
        assert!(one[0] != zero[0] && two[0] != one[0] && two[0] != zero[0]);
        assert_eq!(slots.fds_for(2).unwrap(), two, "bound once");
    }

    #[test]
    fn a_slot_left_without_a_process_is_an_orphan_until_it_gets_one() {
        let listeners = listeners();
        let mut slots = SlotSockets::new(&listeners);
        let fd = slots.fds_for(1).unwrap()[0];
        slots.spawning(1);
        slots.spawned(1, 10);
        slots.spawning(1);
        slots.spawned(1, 11);
        assert!(slots.exited(1, 10).is_empty(), "11 still serves slot 1");
        let before = slots.generation();
        let orphaned = slots.exited(1, 11);
        assert_eq!(orphaned, vec![SlotSocket { fd, listener: 0 }]);
        assert_eq!(slots.orphans(), orphaned);
        assert!(slots.generation() > before);
        slots.spawning(1);
        slots.spawned(1, 12);
        assert!(slots.orphans().is_empty());
    }

    #[test]
    fn a_slot_without_a_member_has_no_sockets_to_take_from() {
        // An asked port's group has members only up to the highest slot that asked.
        let listeners = listeners();
        let mut slots = SlotSockets::new(&listeners);
        slots.fds_for(1).unwrap();
        slots.spawning(3);
        slots.spawned(3, 30);
        assert!(slots.exited(3, 30).is_empty(), "not slot 0's socket");
        assert!(slots.orphans().is_empty());
    }

    #[test]
    fn unix_listeners_are_shared_by_every_slot() {
        let path = std::env::temp_dir().join(format!("corral-slots-{}.sock", std::process::id()));
        let spec = format!("unix:{}", path.display()).parse().unwrap();
        let listeners = listen::bind_all(&[spec], true).unwrap();
        let mut slots = SlotSockets::new(&listeners);
        assert!(!slots.enabled());
        assert_eq!(slots.fds_for(3).unwrap(), vec![listeners[0].raw_fd()]);
    }
}
