//! Which worker gets the next connection: round-robin, least-loaded or sticky, within
//! each worker's credit window. Pure bookkeeping; the supervisor does the I/O.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;

use crate::process::Pid;

/// How connections reach workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Balance {
    /// Round-robin for workers that speak the corral channel, shared for the rest.
    #[default]
    Auto,
    /// Every worker accepts on the inherited socket; the kernel decides.
    Shared,
    RoundRobin,
    /// The worker with the fewest connections in flight and open.
    LeastLoaded,
    /// The same client address always reaches the same worker slot.
    Sticky,
    /// A SO_REUSEPORT socket per slot, all owned by corral: each worker accepts from
    /// its own, the kernel spreads connections over the slots that have a worker.
    Reuseport,
}

impl Balance {
    /// Whether the supervisor accepts and hands connections over.
    pub fn dispatches(self) -> bool {
        !matches!(self, Balance::Shared | Balance::Reuseport)
    }

    /// Whether each slot gets a socket of its own in a SO_REUSEPORT group.
    pub fn reuseport(self) -> bool {
        self == Balance::Reuseport
    }

    /// Whether a worker that can take connections over its channel gets some: all the
    /// time when corral dispatches, and in reuseport mode those left on a socket whose
    /// slot has no worker.
    fn hands_over(self) -> bool {
        self.dispatches() || self.reuseport()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid balance mode `{0}`: expected shared, reuseport, round-robin, least-loaded or sticky"
)]
pub struct BalanceError(String);

impl FromStr for Balance {
    type Err = BalanceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Balance::Auto),
            "shared" => Ok(Balance::Shared),
            "round-robin" | "rr" => Ok(Balance::RoundRobin),
            "least-loaded" => Ok(Balance::LeastLoaded),
            "sticky" => Ok(Balance::Sticky),
            "reuseport" => Ok(Balance::Reuseport),
            _ => Err(BalanceError(s.to_owned())),
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::Auto => "auto",
            Balance::Shared => "shared",
            Balance::RoundRobin => "round-robin",
            Balance::LeastLoaded => "least-loaded",
            Balance::Sticky => "sticky",
            Balance::Reuseport => "reuseport",
        })
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Target {
    slot: usize,
    /// Said hello with dispatch support, and gets connections over its channel.
    capable: bool,
    /// ... all of them: it does not accept itself.
    dispatched: bool,
    /// Ready and not draining.
    routable: bool,
    sent: u64,
    acked: u64,
    active: u64,
}

impl Target {
    fn inflight(&self) -> u64 {
        self.sent.saturating_sub(self.acked)
    }
}

/// Credit windows and the choice of worker.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Dispatcher {
    mode: Balance,
    window: u32,
    targets: BTreeMap<Pid, Target>,
    /// Round-robin position, as a slot number, so replacements keep the rotation fair.
    next_slot: usize,
}

impl Dispatcher {
    pub fn new(mode: Balance, window: u32) -> Self {
        Dispatcher {
            mode,
            window: window.max(1),
            targets: BTreeMap::new(),
            next_slot: 0,
        }
    }

    /// How it balances.
    pub fn mode(&self) -> Balance {
        self.mode
    }

    /// Whether the choice depends on the client's address.
    pub fn needs_client(&self) -> bool {
        self.mode == Balance::Sticky
    }

    pub fn window(&self) -> u32 {
        self.window
    }

    /// A worker said hello; returns whether corral accepts for it (it gets every
    /// connection over its channel). In reuseport mode it accepts itself, and takes over
    /// its channel only connections left on the socket of a slot with no worker.
    pub fn hello(&mut self, pid: Pid, slot: usize, dispatch: bool) -> bool {
        let t = self.targets.entry(pid).or_default();
        t.slot = slot;
        t.capable = dispatch && self.mode.hands_over();
        t.dispatched = dispatch && self.mode.dispatches();
        t.dispatched
    }

    /// The group started or stopped routing to a worker.
    pub fn route(&mut self, pid: Pid, slot: usize, routable: bool) {
        let t = self.targets.entry(pid).or_default();
        t.slot = slot;
        t.routable = routable;
    }

    pub fn remove(&mut self, pid: Pid) {
        self.targets.remove(&pid);
    }

    /// The worker has taken `received` connections in all; `active` are open.
    pub fn ack(&mut self, pid: Pid, received: u64, active: u64) {
        if let Some(t) = self.targets.get_mut(&pid) {
            t.acked = t.acked.max(received).min(t.sent);
            t.active = active;
        }
    }

    /// Takes back `n` connections recorded as sent that could not be delivered.
    pub fn unsent(&mut self, pid: Pid, n: u64) {
        if let Some(t) = self.targets.get_mut(&pid) {
            t.sent = t.sent.saturating_sub(n).max(t.acked);
        }
    }

    /// Records that `n` connections went to `pid`.
    pub fn sent(&mut self, pid: Pid, n: u64) {
        if let Some(t) = self.targets.get_mut(&pid) {
            t.sent += n;
        }
    }

    fn eligible(&self) -> impl Iterator<Item = (&Pid, &Target)> {
        self.targets.iter().filter(|(_, t)| t.capable && t.routable)
    }

    fn credit(&self, t: &Target) -> u64 {
        u64::from(self.window).saturating_sub(t.inflight())
    }

    /// Connections handed to `pid` so far (0 for a worker that takes none).
    pub fn sent_to(&self, pid: Pid) -> u64 {
        self.targets.get(&pid).map_or(0, |t| t.sent)
    }

    /// Connections that can be handed over now, summed over workers.
    pub fn credit_total(&self) -> u64 {
        self.eligible().map(|(_, t)| self.credit(t)).sum()
    }

    /// Whether any worker takes dispatched connections at all (credit or not).
    #[cfg(test)]
    fn has_targets(&self) -> bool {
        self.eligible().next().is_some()
    }

    /// Chooses the worker for a connection from `client`. `None` when nobody has credit.
    /// For sticky, the client's own worker is preferred even when it has no credit
    /// (`Some` with no credit left means: queue it for that worker).
    pub fn pick(&mut self, client: Option<IpAddr>) -> Option<Pid> {
        match self.mode {
            Balance::Sticky => self.pick_sticky(client),
            Balance::LeastLoaded => self
                .eligible()
                .filter(|(_, t)| self.credit(t) > 0)
                .min_by_key(|(_, t)| (t.inflight() + t.active, t.slot))
                .map(|(&pid, _)| pid),
            _ => self.pick_round_robin(),
        }
    }

    fn pick_round_robin(&mut self) -> Option<Pid> {
        let mut ready: Vec<(usize, Pid)> = self
            .eligible()
            .filter(|(_, t)| self.credit(t) > 0)
            .map(|(&pid, t)| (t.slot, pid))
            .collect();
        ready.sort_unstable();
        let &(slot, pid) = ready
            .iter()
            .find(|(slot, _)| *slot >= self.next_slot)
            .or_else(|| ready.first())?;
        self.next_slot = slot + 1;
        Some(pid)
    }

    /// Rendezvous hashing over slots: adding or removing a slot moves only the clients
    /// whose best slot it is, and a replacement inherits its slot's clients.
    fn pick_sticky(&self, client: Option<IpAddr>) -> Option<Pid> {
        let Some(ip) = client else {
            return self
                .eligible()
                .filter(|(_, t)| self.credit(t) > 0)
                .max_by_key(|(_, t)| self.credit(t))
                .map(|(&pid, _)| pid);
        };
        self.eligible()
            .max_by_key(|(_, t)| (score(ip, t.slot), t.slot))
            .map(|(&pid, _)| pid)
    }

    /// Whether `pid` can take one more connection now.
    pub fn has_credit(&self, pid: Pid) -> bool {
        self.targets
            .get(&pid)
            .is_some_and(|t| t.capable && t.routable && self.credit(t) > 0)
    }

    /// Whether `pid` gets its connections over its channel (so it need not accept).
    pub fn is_dispatched(&self, pid: Pid) -> bool {
        self.targets.get(&pid).is_some_and(|t| t.dispatched)
    }

    pub fn slot_of(&self, pid: Pid) -> Option<usize> {
        self.targets.get(&pid).map(|t| t.slot)
    }
}

fn score(ip: IpAddr, slot: usize) -> u64 {
    let mut h = DefaultHasher::new();
    ip.hash(&mut h);
    slot.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher(mode: Balance, workers: &[(Pid, usize)]) -> Dispatcher {
        let mut d = Dispatcher::new(mode, 4);
        for &(pid, slot) in workers {
            d.hello(pid, slot, true);
            d.route(pid, slot, true);
        }
        d
    }

    #[test]
    fn round_robin_takes_turns_in_slot_order() {
        let mut d = dispatcher(Balance::RoundRobin, &[(30, 2), (10, 0), (20, 1)]);
        let picks: Vec<Pid> = (0..6)
            .map(|_| {
                let pid = d.pick(None).unwrap();
                d.sent(pid, 1);
                pid
            })
            .collect();
        assert_eq!(picks, [10, 20, 30, 10, 20, 30]);
    }

    #[test]
    fn a_full_window_is_skipped_until_acked() {
        let mut d = dispatcher(Balance::RoundRobin, &[(10, 0), (20, 1)]);
        d.sent(10, 4);
        assert_eq!(d.credit_total(), 4);
        assert_eq!(d.pick(None), Some(20));
        d.sent(20, 4);
        assert_eq!(d.pick(None), None);
        d.ack(10, 2, 2);
        assert_eq!(d.credit_total(), 2);
        d.ack(10, 1, 0);
        assert_eq!(
            d.credit_total(),
            2,
            "an old ack arriving late changes nothing"
        );
        assert_eq!(d.pick(None), Some(10));
    }

    #[test]
    fn least_loaded_avoids_the_busy_worker() {
        let mut d = dispatcher(Balance::LeastLoaded, &[(10, 0), (20, 1)]);
        d.sent(10, 1);
        d.ack(10, 1, 3);
        for _ in 0..3 {
            let pid = d.pick(None).unwrap();
            assert_eq!(pid, 20);
            d.sent(pid, 1);
        }
        // 20 now has 3 in flight, as loaded as 10: ties go to the lower slot.
        assert_eq!(d.pick(None), Some(10));
    }

    #[test]
    fn unready_draining_or_incapable_workers_get_nothing() {
        let mut d = dispatcher(Balance::RoundRobin, &[(10, 0)]);
        d.hello(20, 1, false);
        d.route(20, 1, true);
        d.hello(30, 2, true);
        d.route(10, 0, false);
        assert_eq!(d.pick(None), None);
        assert!(!d.has_targets());
    }

    #[test]
    fn shared_mode_never_dispatches() {
        let mut d = Dispatcher::new(Balance::Shared, 4);
        assert!(!d.hello(10, 0, true));
        d.route(10, 0, true);
        assert_eq!(d.pick(None), None);
    }

    #[test]
    fn sticky_keeps_clients_and_moves_only_the_removed_slots_clients() {
        let clients: Vec<IpAddr> = (1..=200)
            .map(|i| IpAddr::from([127, 0, 1, i as u8]))
            .collect();
        let mut d = dispatcher(Balance::Sticky, &[(10, 0), (20, 1), (30, 2)]);
        let before: Vec<Pid> = clients.iter().map(|&c| d.pick(Some(c)).unwrap()).collect();
        let again: Vec<Pid> = clients.iter().map(|&c| d.pick(Some(c)).unwrap()).collect();
        assert_eq!(before, again);
        for pid in [10, 20, 30] {
            assert!(before.contains(&pid), "every worker gets clients");
        }
        d.remove(30);
        for (c, old) in clients.iter().zip(&before) {
            let new = d.pick(Some(*c)).unwrap();
            if *old != 30 {
                assert_eq!(new, *old, "only slot 2's clients move");
            }
        }
    }

    #[test]
    fn sticky_replacement_inherits_its_slots_clients() {
        let ip = IpAddr::from([127, 0, 0, 9]);
        let mut d = dispatcher(Balance::Sticky, &[(10, 0), (20, 1)]);
        let first = d.pick(Some(ip)).unwrap();
        let slot = d.slot_of(first).unwrap();
        d.remove(first);
        d.hello(99, slot, true);
        d.route(99, slot, true);
        assert_eq!(d.pick(Some(ip)), Some(99));
    }

    #[test]
    fn parses_modes() {
        assert_eq!("round-robin".parse(), Ok(Balance::RoundRobin));
        assert_eq!("sticky".parse(), Ok(Balance::Sticky));
        assert_eq!("reuseport".parse(), Ok(Balance::Reuseport));
        assert!("random".parse::<Balance>().is_err());
    }
}
