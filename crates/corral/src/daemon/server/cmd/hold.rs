//! Keeping the holder (`daemon/holder.rs`) up to date, and taking back what it held for
//! a daemon that died: after each change to the workers, a snapshot of every app.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, RawFd};

use corral_core::handover;
use corral_core::os::memory::start_time;
use corral_core::supervisor::{snapshot_request, EngineSnapshot};

use super::update::{AppDoc, DaemonDoc};
use crate::daemon::holder;
use crate::daemon::server::*;

/// Changes within this long go into one snapshot.
const SNAPSHOT_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// What the holder kept for this daemon: the snapshot and the process groups it saw
/// started (some may be newer than the snapshot).
pub(in crate::daemon::server) type Held = Option<holder::Kept>;

/// The holder found or started, and what it kept.
pub(in crate::daemon::server) struct Found {
    pub held: Held,
    pub pid: Option<i32>,
}

/// An app's snapshot as it travels: the document and the numbers its fds had.
#[derive(serde::Deserialize)]
struct Wrapped {
    numbers: Vec<RawFd>,
    doc: serde_json::Value,
}

/// The daemon's own part of what the holder keeps.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    version: u32,
    from: String,
    next_id: u32,
    /// The apps there are: the holder drops the entries of others.
    names: Vec<String>,
}

/// Where the snapshots stand.
#[derive(Default)]
pub(in crate::daemon::server) struct Holding {
    /// Apps whose entry the holder should get again (an app's workers changed).
    dirty: std::collections::BTreeSet<String>,
    /// Every app's (after taking over).
    all: bool,
    scheduled: bool,
    in_flight: bool,
    /// A new holder has not had every app's entry yet.
    fresh: bool,
    /// When the holder now watched was started by this daemon.
    started: Option<std::time::Instant>,
    /// Holders in a row that died (or were replaced) within [`HOLDER_MIN_LIFE`].
    quick_ends: u32,
    /// A [`Msg::StartHolder`] is on its way.
    retry_due: bool,
    /// Restarts that wait for the snapshot in flight (see [`Daemon::restart_after_snapshot`]).
    restarts: Vec<(String, Vec<u64>)>,
}

/// A holder that ends sooner than this after its start counts as failing to start
/// (its home is gone, its socket can't be bound): the next waits, so that a holder that
/// can never run costs a retry a minute, not a busy loop.
const HOLDER_MIN_LIFE: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to the holder of `home` and takes what it kept, or starts a holder. The
/// records of every worker group go to it from now on.
pub(in crate::daemon::server) fn find_or_start_holder(home: &Home) -> anyhow::Result<Found> {
    if let Some(link) = holder::connect(home) {
        // A connection's peer is the process that listens: the holder.
        let pid = getsockopt(&link, PeerCredentials).ok().map(|c| c.pid());
        match holder::fetch(link.as_fd()) {
            Ok(held) => {
                corral_core::os::keeper::attach(link);
                return Ok(Found { held, pid });
            }
            Err(e) => {
                // Left alive, it would start daemons of its own once it runs again.
                kill_holder(pid);
                journal::say(&format!(
                    "the holder did not answer ({e}); killed it and starting a new one"
                ));
            }
        }
    }
    // No holder: if one died with its daemon, their workers are nobody's now.
    kill_unheld_workers(home);
    let (link, pid) = holder::spawn(home).context("cannot start corral's holder process")?;
    corral_core::os::keeper::attach(link);
    Ok(Found {
        held: None,
        pid: Some(pid),
    })
}

/// Kills the worker groups `workers.json` lists that still run the process they named.
fn kill_unheld_workers(home: &Home) {
    let left = home.left_workers();
    kill_groups(&left);
    let killed = left.len();
    if killed > 0 {
        journal::say(&format!(
            "killed {killed} worker groups left by a daemon and holder that both died; \
             `corral resurrect` starts the saved apps again"
        ));
    }
    let _ = std::fs::remove_file(home.workers());
}

impl Daemon {
    /// Takes back the apps the holder kept for a daemon that died.
    pub(in crate::daemon::server) fn adopt_held(&mut self, held: Held) {
        let Some((mut entries, groups)) = held else {
            return;
        };
        let all: Vec<i32> = groups.iter().map(|&(g, _)| g).collect();
        let mut doc = match unwrap_held(&mut entries) {
            Ok(doc) if doc.fits() => doc,
            Ok(_) | Err(_) => {
                journal::say(
                    "what the holder kept does not fit this corral; its workers are stopped",
                );
                kill_groups(&all);
                return;
            }
        };
        // A worker that got ready after the last snapshot won't say so again.
        let ready: Vec<i32> = groups.iter().filter(|(_, r)| *r).map(|&(g, _)| g).collect();
        doc.mark_ready(&ready);
        // A worker started after the last snapshot is in none: nobody would watch it.
        let known = doc.groups();
        let unknown: Vec<i32> = all.into_iter().filter(|g| !known.contains(g)).collect();
        kill_groups(&unknown);
        let from = doc.from.clone();
        let _ = self.adopt_engines(doc);
        journal::say(&format!(
            "daemon {} took back what the holder kept for the last daemon (corral {from}): {}{}",
            std::process::id(),
            self.adopted_summary(),
            if unknown.is_empty() {
                String::new()
            } else {
                format!("; {} workers it never saw were stopped", unknown.len())
            }
        ));
        self.workers_changed(None);
    }

    /// The holder no longer keeps anything of app `name` (stopped or deleted), before
    /// anyone hears it is: its ports are free.
    pub(in crate::daemon::server) fn forget_held(&mut self, name: &str) {
        if let Some(link) = corral_core::os::keeper::link() {
            if let Err(e) = holder::forget(link.as_fd(), name) {
                // Killed, it lets them go; the new one gets the other apps.
                journal::say(&format!(
                    "{name}: the holder did not let its sockets go ({e})"
                ));
                self.replace_holder();
            }
        }
    }

    /// Something about app `name`'s workers changed (None: about every app's): its entry
    /// goes to the holder shortly, with those of others that changed meanwhile.
    pub(in crate::daemon::server) fn workers_changed(&mut self, name: Option<&str>) {
        match name {
            Some(name) => {
                self.holding.dirty.insert(name.to_owned());
            }
            None => self.holding.all = true,
        }
        self.schedule_snapshot();
    }

    fn schedule_snapshot(&mut self) {
        if self.holding.scheduled || self.holding.in_flight {
            return;
        }
        self.holding.scheduled = true;
        self.send_later(SNAPSHOT_DELAY, Msg::TakeSnapshot);
    }

    /// Asks every running engine for its snapshot.
    pub(in crate::daemon::server) fn take_snapshot(&mut self) {
        self.holding.scheduled = false;
        if self.updating.is_some() || self.killing.is_some() {
            return; // the update hands everything over; a kill ends it all
        }
        let dirty = std::mem::take(&mut self.holding.dirty);
        let names: Vec<String> = match std::mem::take(&mut self.holding.all) {
            true => self.apps.keys().cloned().collect(),
            false => dirty
                .into_iter()
                .filter(|n| self.apps.contains_key(n))
                .collect(),
        };
        self.holding.in_flight = true;
        let asked: Vec<_> = names
            .iter()
            .filter_map(|name| {
                let app = self.apps.get(name)?;
                let (request, answer) = snapshot_request();
                send(app, request).ok().map(|()| (name.clone(), answer))
            })
            .collect();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut engines = BTreeMap::new();
            for (name, answer) in asked {
                if let Ok(engine) = answer.get().await {
                    engines.insert(name, engine);
                }
            }
            let _ = tx.send(Msg::Snapshots(names, engines));
        });
    }

    /// Whether app `name`'s restart must wait: a snapshot in flight may hold copies of
    /// its old listeners (its engine answered before it stopped), which would keep the
    /// port from the new ones. It goes on once the snapshot is in (`after_stop`).
    pub(in crate::daemon::server) fn restart_after_snapshot(
        &mut self,
        name: &str,
        joins: &mut Vec<u64>,
    ) -> bool {
        if !self.holding.in_flight {
            return false;
        }
        self.holding
            .restarts
            .push((name.to_owned(), std::mem::take(joins)));
        true
    }

    /// Sends the holder the entries of apps `names` (with the engines of those that run)
    /// and the daemon's own part; a holder that is gone is started again, with every app.
    pub(in crate::daemon::server) fn send_snapshot(
        &mut self,
        names: Vec<String>,
        engines: BTreeMap<String, EngineSnapshot>,
    ) {
        self.holding.in_flight = false;
        if self.updating.is_some() || self.killing.is_some() {
            // Engines answered while they were handing over: not a snapshot.
            drop(engines);
            return self.restarts_waited();
        }
        self.send_entries(names, engines);
        self.restarts_waited();
        if self.holding.all || !self.holding.dirty.is_empty() {
            self.schedule_snapshot();
        }
    }

    /// The restarts that waited for the snapshot, now that its copies are gone.
    fn restarts_waited(&mut self) {
        for (name, joins) in std::mem::take(&mut self.holding.restarts) {
            self.after_stop(&name, joins);
        }
    }

    fn send_entries(&mut self, names: Vec<String>, mut engines: BTreeMap<String, EngineSnapshot>) {
        let mut entries = Vec::new();
        for app in names.iter().filter_map(|n| self.apps.get(n)) {
            // An engine that ended since it answered: its copies are of sockets gone.
            let engine = engines.remove(&app.name).filter(|_| app.controls.is_some());
            if app.controls.is_some() && engine.is_none() {
                continue; // no snapshot of a running engine (it just ended): keep the last
            }
            let doc = AppDoc::of(app, engine.map(Into::into));
            let groups = doc.groups().into_iter();
            let started = groups.filter_map(|g| Some((g, start_time(g)?))).collect();
            self.held_groups.insert(app.name.clone(), started);
            match wrap(&doc) {
                // The document stays, holding its fd copies open until they are sent.
                Ok((json, fds)) => entries.push((app.name.clone(), json, fds, doc)),
                Err(e) => journal::say(&format!(
                    "{}: cannot keep it with the holder: {e}",
                    app.name
                )),
            }
        }
        let meta = Meta {
            version: handover::VERSION,
            from: env!("CARGO_PKG_VERSION").to_owned(),
            next_id: self.next_id,
            names: self.apps.keys().cloned().collect(),
        };
        let meta = serde_json::to_vec(&meta).unwrap_or_default();
        let send_all = |link: &std::os::fd::OwnedFd| -> std::io::Result<()> {
            for (name, json, fds, _) in &entries {
                holder::send_snapshot(link.as_fd(), name, json, fds)?;
            }
            holder::send_snapshot(link.as_fd(), "", &meta, &[])
        };
        let sent = match corral_core::os::keeper::link() {
            Some(link) => send_all(&link),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        };
        match sent {
            Ok(()) if self.holding.fresh && !self.holding.all => {
                self.holding.fresh = false;
                journal::say(&format!("the new holder keeps {} apps", self.apps.len()));
            }
            Ok(()) => {}
            Err(e) => {
                journal::say(&format!("the holder does not take snapshots ({e})"));
                self.replace_holder();
            }
        }
        self.held_groups
            .retain(|name, _| self.apps.contains_key(name));
        self.write_workers();
        drop(entries);
    }

    /// Watches holder `pid` (a pidfd): a holder that dies is replaced at once, not at
    /// the next snapshot, which may come only with the next worker change, or never
    /// before the daemon dies too.
    pub(in crate::daemon::server) fn watch_holder(&mut self, pid: Option<i32>) {
        let Some(pid) = pid else {
            return;
        };
        self.holder_pid = Some(pid);
        let tx = self.tx.clone();
        let pidfd = corral_core::os::pidfd::open(pid);
        tokio::spawn(async move {
            // No pidfd: it is gone already (or the kernel has none; then it is not
            // watched, and a failed snapshot still finds it gone).
            if let Ok(fd) = pidfd {
                // SAFETY: the AsyncFd owns the pidfd, so it stays open and the same.
                let watched = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                };
                match watched {
                    Ok(fd) => drop(fd.readable().await),
                    Err(_) => return,
                }
            }
            let _ = tx.send(Msg::HolderGone(pid));
        });
    }

    /// The holder `pid` exited: reaped (it is this daemon's child unless an earlier
    /// daemon started it) and, unless it was told to go, replaced.
    pub(in crate::daemon::server) fn holder_gone(&mut self, pid: i32) {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        let _ = waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        if self.holder_pid != Some(pid) || self.killing.is_some() {
            return;
        }
        // Reaped: its pid may be another process's by now.
        self.holder_pid = None;
        journal::say(&format!("the holder (pid {pid}) died"));
        self.replace_holder();
    }

    /// A record for the holder found its link full (`keeper::on_stall`). Unless the
    /// link has room again (the holder caught up, or was replaced meanwhile), the holder
    /// missed it and is replaced by one that gets everything.
    pub(in crate::daemon::server) fn holder_stalled(&mut self) {
        let Some(link) = corral_core::os::keeper::link() else {
            return;
        };
        if self.killing.is_some() || holder::writable(link.as_fd(), std::time::Duration::ZERO) {
            return;
        }
        journal::say(&format!(
            "the holder (pid {}) takes nothing from its link",
            self.holder_pid.unwrap_or_default()
        ));
        self.replace_holder();
    }

    /// A new holder, which gets every app's entry at once. One that still runs but does
    /// not take snapshots (stopped, stuck) is killed: left alive, it would start daemons
    /// of its own once it runs again and finds this one gone.
    fn replace_holder(&mut self) {
        kill_holder(self.holder_pid.take());
        let quick = self
            .holding
            .started
            .is_some_and(|at| at.elapsed() < HOLDER_MIN_LIFE);
        self.holding.quick_ends = if quick {
            self.holding.quick_ends + 1
        } else {
            0
        };
        if self.holding.quick_ends < 2 {
            return self.start_holder();
        }
        if std::mem::replace(&mut self.holding.retry_due, true) {
            return;
        }
        let wait = std::time::Duration::from_millis(500 << (self.holding.quick_ends - 2).min(7))
            .min(std::time::Duration::from_secs(60));
        journal::say(&format!(
            "the holder ended within {}s of its start {} times in a row (see above); \
             the next starts in {}; until then a daemon that dies takes its apps with it",
            HOLDER_MIN_LIFE.as_secs(),
            self.holding.quick_ends,
            crate::render::duration(wait)
        ));
        self.send_later(wait, Msg::StartHolder);
    }

    /// The wait of [`Daemon::replace_holder`] is over.
    pub(in crate::daemon::server) fn holder_retry(&mut self) {
        self.holding.retry_due = false;
        if self.holder_pid.is_none() && self.killing.is_none() {
            self.start_holder();
        }
    }

    fn start_holder(&mut self) {
        self.holding.started = Some(std::time::Instant::now());
        match holder::spawn(&self.home) {
            Ok((link, pid)) => {
                corral_core::os::keeper::attach(link);
                self.watch_holder(Some(pid));
                journal::say(&format!(
                    "a new holder (pid {}) keeps the apps from now on",
                    self.holder_pid.unwrap_or_default()
                ));
                self.holding.fresh = true;
                self.workers_changed(None);
            }
            Err(e) => journal::say(&format!("cannot keep the apps with a holder: {e}")),
        }
    }

    /// `workers.json`: the groups to stop if the daemon and the holder both die.
    fn write_workers(&self) {
        let groups: Vec<(i32, u64)> = self.held_groups.values().flatten().copied().collect();
        let _ = persist::write_atomically(&self.home.workers(), &groups);
    }

    /// The daemon stops every app itself: the holder has nothing to keep.
    pub(in crate::daemon::server) fn release_holder(&self) {
        if let Some(link) = corral_core::os::keeper::link() {
            // One that cannot hear it would hold the ports, then start a daemon.
            if holder::bye(link.as_fd()).is_err() {
                kill_holder(self.holder_pid);
            }
        }
        let _ = std::fs::remove_file(self.home.workers());
    }
}

/// What the holder kept, as one document: the daemon's part and every app's.
fn unwrap_held(entries: &mut BTreeMap<String, holder::Snapshot>) -> Result<DaemonDoc, String> {
    let meta = entries.remove("").ok_or("no daemon part")?;
    let meta: Meta = serde_json::from_slice(&meta.json).map_err(|e| e.to_string())?;
    if meta.version != handover::VERSION {
        return Err(format!("version {}", meta.version));
    }
    let mut apps = Vec::new();
    for (name, snapshot) in std::mem::take(entries) {
        let app = serde_json::from_slice::<Wrapped>(&snapshot.json)
            .map_err(|e| e.to_string())
            .and_then(|w| {
                handover::from_json_with_fds::<AppDoc>(w.doc, &w.numbers, snapshot.fds)
                    .map_err(|e| e.to_string())
            });
        match app {
            Ok(app) => apps.push(app),
            Err(e) => journal::say(&format!("{name}: what the holder kept does not fit: {e}")),
        }
    }
    Ok(DaemonDoc::held(meta.from, meta.next_id, apps))
}

/// The document as JSON that names its fds by number, with those numbers.
/// (The numbers are known once the document is written, so `Wrapped` is put together
/// around it rather than serialized, which would write the document twice.)
fn wrap(doc: &AppDoc) -> std::io::Result<(Vec<u8>, Vec<RawFd>)> {
    let (json, numbers) = handover::collect_fds(doc).map_err(std::io::Error::other)?;
    let listed = serde_json::to_string(&numbers).map_err(std::io::Error::other)?;
    let mut wrapped = format!(r#"{{"numbers":{listed},"doc":"#).into_bytes();
    wrapped.extend_from_slice(&json);
    wrapped.push(b'}');
    Ok((wrapped, numbers))
}

/// SIGKILLs holder `pid`, if any: one that can't serve must not live on to start
/// daemons of its own.
fn kill_holder(pid: Option<i32>) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn kill_groups(groups: &[i32]) {
    for &pgid in groups {
        corral_core::os::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    }
}
