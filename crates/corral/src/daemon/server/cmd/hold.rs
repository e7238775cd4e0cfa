//! Keeping the holder (`daemon/holder.rs`) up to date, and taking back what it held for
//! a daemon that died: after each change to the workers, a snapshot of every app.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, RawFd};

use corral_core::handover;
use corral_core::supervisor::{snapshot_request, EngineSnapshot};

use super::update::DaemonDoc;
use crate::daemon::holder;
use crate::daemon::server::*;

/// Changes within this long go into one snapshot.
const SNAPSHOT_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// What the holder kept for this daemon: the snapshot and the process groups it saw
/// started (some may be newer than the snapshot).
pub(in crate::daemon::server) type Held = Option<holder::Kept>;

/// The snapshot as it travels: the document and the numbers its fds had.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wrapped {
    numbers: Vec<RawFd>,
    doc: serde_json::Value,
}

/// Where the snapshots stand.
#[derive(Default)]
pub(in crate::daemon::server) struct Holding {
    dirty: bool,
    scheduled: bool,
    in_flight: bool,
}

/// Connects to the holder of `home` and takes what it kept, or starts a holder. The
/// records of every worker group go to it from now on.
pub(in crate::daemon::server) fn find_or_start_holder(home: &Home) -> anyhow::Result<Held> {
    if let Some(link) = holder::connect(home) {
        match holder::fetch(link.as_fd()) {
            Ok(held) => {
                corral_core::os::keeper::attach(link);
                return Ok(held);
            }
            Err(e) => journal::say(&format!(
                "the holder did not answer ({e}); starting a new one"
            )),
        }
    }
    // No holder: if one died with its daemon, their workers are nobody's now.
    kill_unheld_workers(home);
    let link = holder::spawn(home).context("cannot start corral's holder process")?;
    corral_core::os::keeper::attach(link);
    Ok(None)
}

/// Kills the worker groups `workers.json` lists that still run the process they named.
fn kill_unheld_workers(home: &Home) {
    let path = home.dir.join("workers.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let groups: Vec<(i32, u64)> = serde_json::from_str(&text).unwrap_or_default();
    let mut killed = 0;
    for (pgid, started) in groups {
        if start_time(pgid) == Some(started) {
            corral_core::os::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            killed += 1;
        }
    }
    if killed > 0 {
        journal::say(&format!(
            "killed {killed} worker groups left by a daemon and holder that both died; \
             `corral resurrect` starts the saved apps again"
        ));
    }
    let _ = std::fs::remove_file(path);
}

/// When process `pid` started (clock ticks since boot), to tell it from a reused pid.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat.rsplit_once(')')?.1;
    fields.split_whitespace().nth(19)?.parse().ok()
}

impl Daemon {
    /// Takes back the apps the holder kept for a daemon that died.
    pub(in crate::daemon::server) fn adopt_held(&mut self, held: Held) {
        let Some((snapshot, groups)) = held else {
            return;
        };
        let doc = serde_json::from_slice::<Wrapped>(&snapshot.json)
            .map_err(|e| e.to_string())
            .and_then(|w| {
                handover::from_json_with_fds::<DaemonDoc>(w.doc, &w.numbers, snapshot.fds)
                    .map_err(|e| e.to_string())
            });
        let all: Vec<i32> = groups.iter().map(|&(g, _)| g).collect();
        let mut doc = match doc {
            Ok(doc) if doc.fits() => doc,
            Ok(_) | Err(_) => {
                journal::say(
                    "the holder's snapshot does not fit this corral; its workers are stopped",
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
        self.workers_changed();
    }

    /// Something about the workers changed: a snapshot goes to the holder shortly.
    pub(in crate::daemon::server) fn workers_changed(&mut self) {
        self.holding.dirty = true;
        if self.holding.scheduled || self.holding.in_flight {
            return;
        }
        self.holding.scheduled = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SNAPSHOT_DELAY).await;
            let _ = tx.send(Msg::TakeSnapshot);
        });
    }

    /// Asks every running engine for its snapshot.
    pub(in crate::daemon::server) fn take_snapshot(&mut self) {
        self.holding.scheduled = false;
        if self.updating.is_some() || self.killing.is_some() {
            return; // the update hands everything over; a kill ends it all
        }
        self.holding.dirty = false;
        self.holding.in_flight = true;
        let asked: Vec<_> = self
            .apps
            .values()
            .filter_map(|app| {
                let (request, answer) = snapshot_request();
                send(app, request).ok().map(|()| (app.name.clone(), answer))
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
            let _ = tx.send(Msg::Snapshots(engines));
        });
    }

    /// Sends the holder every app and these engines; a holder that is gone is started
    /// again.
    pub(in crate::daemon::server) fn send_snapshot(
        &mut self,
        engines: BTreeMap<String, EngineSnapshot>,
    ) {
        self.holding.in_flight = false;
        let doc = DaemonDoc::snapshot(self, engines);
        let sent = wrap(&doc).and_then(|(json, fds)| {
            let link = corral_core::os::keeper::link().ok_or(std::io::ErrorKind::NotConnected)?;
            holder::send_snapshot(link.as_fd(), &json, &fds).or_else(|_| {
                // The holder is gone: a new one, with this snapshot.
                journal::say("the holder is gone; starting a new one");
                let link = holder::spawn(&self.home)?;
                holder::send_snapshot(link.as_fd(), &json, &fds)?;
                corral_core::os::keeper::attach(link);
                Ok(())
            })
        });
        if let Err(e) = sent {
            journal::say(&format!("cannot keep the apps with the holder: {e}"));
        }
        self.write_workers(&doc);
        drop(doc);
        if self.holding.dirty {
            self.workers_changed();
        }
    }

    /// `workers.json`: the groups to stop if the daemon and the holder both die.
    fn write_workers(&self, doc: &DaemonDoc) {
        let groups: Vec<(i32, u64)> = doc
            .groups()
            .into_iter()
            .filter_map(|g| Some((g, start_time(g)?)))
            .collect();
        let _ = persist::write_atomically(&self.home.dir.join("workers.json"), &groups);
    }

    /// The daemon stops every app itself: the holder has nothing to keep.
    pub(in crate::daemon::server) fn release_holder(&self) {
        if let Some(link) = corral_core::os::keeper::link() {
            holder::bye(link.as_fd());
        }
        let _ = std::fs::remove_file(self.home.dir.join("workers.json"));
    }
}

/// The document as JSON that names its fds by number, with those numbers.
fn wrap(doc: &DaemonDoc) -> std::io::Result<(Vec<u8>, Vec<RawFd>)> {
    let (json, numbers) = handover::collect_fds(doc).map_err(std::io::Error::other)?;
    let doc: serde_json::Value = serde_json::from_slice(&json).map_err(std::io::Error::other)?;
    let wrapped = serde_json::to_vec(&Wrapped {
        numbers: numbers.clone(),
        doc,
    })
    .map_err(std::io::Error::other)?;
    Ok((wrapped, numbers))
}

fn kill_groups(groups: &[i32]) {
    for &pgid in groups {
        corral_core::os::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    }
}
