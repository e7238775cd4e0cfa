//! What the daemon knows about each app: its spec, its workers as reports describe them,
//! and the views `ls` prints.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use corral_core::group::{Control, Report};
use corral_core::process::Pid;
use corral_core::AppSpec;
use tokio::sync::mpsc;

use super::protocol::{AppView, LogFileView, WorkerView};

/// Where an app is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Online,
    Stopping,
    Stopped,
    /// Every worker gave up (crash loop).
    Errored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
        }
    }
}

/// What to do once an app has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Nothing,
    Start,
    Delete,
}

/// One worker slot.
#[derive(Debug, Clone)]
pub struct Row {
    pub pid: Option<Pid>,
    pub status: &'static str,
    pub since: Instant,
    pub restarts: u32,
    /// How its last worker ended when it was not asked to: `exit code 1 after 44ms`.
    pub last_exit: Option<String>,
}

/// One app of the daemon.
pub struct App {
    /// Its number, given at start and never reused while the daemon runs.
    pub id: u32,
    pub name: String,
    /// What it was started from, runtime changes (scale) included: enough to start it
    /// again, here or after `resurrect`.
    pub start: super::protocol::StartApp,
    pub spec: AppSpec,
    pub controls: Option<mpsc::Sender<Control>>,
    pub status: Status,
    pub rows: BTreeMap<usize, Row>,
    pub instances: usize,
    pub then: Then,
    /// Replies (joins, see `joins.rs`) waiting for the app to stop.
    pub waiting: Vec<u64>,
    pub listen: Vec<String>,
    /// `--watch` / `--cron-restart`, and their running watchers while the app runs.
    pub triggers: crate::triggers::Triggers,
    pub running_triggers: Option<crate::triggers::Running>,
    /// How lines are written in the log files (`--time`, `--log-format`).
    pub lines: crate::line_format::LineFormat,
    /// Where its output goes.
    pub layout: super::logfile::Layout,
    /// The daemon's `reloadLogs` count; its log writer reopens files when it changes.
    pub log_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl App {
    pub fn new(
        start: super::protocol::StartApp,
        spec: AppSpec,
        triggers: crate::triggers::Triggers,
    ) -> App {
        App {
            id: 0,
            name: spec.name.clone(),
            start,
            instances: spec.instances,
            spec,
            controls: None,
            status: Status::Stopped,
            rows: BTreeMap::new(),
            then: Then::Nothing,
            waiting: Vec::new(),
            listen: Vec::new(),
            triggers,
            running_triggers: None,
            lines: Default::default(),
            layout: Default::default(),
            log_generation: Default::default(),
        }
    }

    /// `online` only when every slot is: one that crash-loops or gave up makes the app
    /// `degraded`, whatever serves meanwhile.
    pub fn shown_status(&self) -> &'static str {
        let sick = self
            .rows
            .values()
            .any(|r| matches!(r.status, "restarting" | "errored"));
        if self.status == Status::Online && sick {
            "degraded"
        } else {
            self.status.as_str()
        }
    }

    /// Restart counters back to zero (`corral reset`).
    pub fn reset(&mut self) {
        for row in self.rows.values_mut() {
            row.restarts = 0;
            row.last_exit = None;
        }
    }

    pub fn restarts(&self) -> u32 {
        self.rows.values().map(|r| r.restarts).sum()
    }

    /// Updates the worker rows from what the engine reported.
    pub fn apply(&mut self, report: &Report, now: Instant) {
        match report {
            Report::Spawned {
                slot,
                pid,
                replacing: None,
            } => self.set_row(*slot, *pid, "starting", now),
            // A replacement shows up in its slot once it is ready.
            Report::Ready { slot, pid, .. } => self.set_row(*slot, *pid, "online", now),
            Report::Exited {
                slot,
                pid,
                expected: false,
                status,
                uptime,
            } => {
                if let Some(row) = self.rows.get_mut(slot).filter(|r| r.pid == Some(*pid)) {
                    row.status = "restarting";
                    row.pid = None;
                    row.restarts += 1;
                    row.last_exit = Some(format!(
                        "{status} after {}",
                        crate::render::duration(*uptime)
                    ));
                }
            }
            Report::ListenerUnused {
                slot,
                pid,
                holds_ours,
                ..
            } => {
                if let Some(row) = self.rows.get_mut(slot).filter(|r| r.pid == Some(*pid)) {
                    row.status = if *holds_ours {
                        "online (own port)"
                    } else {
                        "online (socket closed)"
                    };
                }
            }
            // Follows its Exited: the worker is done, not restarting.
            Report::NotRestarted { slot, .. } => {
                if let Some(row) = self.rows.get_mut(slot) {
                    row.status = "exited";
                    row.restarts = row.restarts.saturating_sub(1);
                }
            }
            Report::GaveUp { slot, .. } => {
                if let Some(row) = self.rows.get_mut(slot) {
                    row.status = "errored";
                }
            }
            Report::Scaled { to, .. } => {
                self.instances = *to;
                self.rows.retain(|slot, _| *slot < *to);
            }
            Report::PortBound { addr, .. } => {
                let shown = format!("{addr} (asked by the app)");
                if !self.listen.contains(&shown) {
                    self.listen.push(shown);
                }
            }
            _ => {}
        }
    }

    fn set_row(&mut self, slot: usize, pid: Pid, status: &'static str, now: Instant) {
        let row = self.rows.entry(slot).or_insert(Row {
            pid: None,
            status,
            since: now,
            restarts: 0,
            last_exit: None,
        });
        row.pid = Some(pid);
        row.status = status;
        row.since = now;
    }

    /// The log files of every slot and stream, as `logs` reads them.
    pub fn log_files(&self, dir: &std::path::Path) -> Vec<LogFileView> {
        use corral_core::output::Stream;
        let mut files: Vec<LogFileView> = Vec::new();
        for slot in 0..self.instances.max(self.rows.len()) {
            for (stream, kind) in [(Stream::Stdout, "out"), (Stream::Stderr, "err")] {
                let path = self
                    .layout
                    .path(dir, &self.name, slot, stream)
                    .display()
                    .to_string();
                if !files.iter().any(|f| f.path == path) {
                    files.push(LogFileView {
                        path,
                        slot: (!self.layout.merge).then_some(slot),
                        stream: kind.to_owned(),
                    });
                }
            }
        }
        files
    }

    pub fn view(&self, usage: &HashMap<Pid, (f64, u64)>, now: Instant) -> AppView {
        let workers = self
            .rows
            .iter()
            .map(|(&slot, row)| {
                let (cpu_percent, memory) = row
                    .pid
                    .and_then(|pid| usage.get(&pid).copied())
                    .unwrap_or((0.0, 0));
                let live = self.status == Status::Online || self.status == Status::Stopping;
                WorkerView {
                    slot,
                    pid: row.pid.filter(|_| live),
                    status: if live {
                        row.status
                    } else {
                        self.status.as_str()
                    }
                    .to_owned(),
                    uptime_ms: now.saturating_duration_since(row.since).as_millis() as u64,
                    restarts: row.restarts,
                    cpu_percent,
                    memory,
                    last_exit: row.last_exit.clone(),
                }
            })
            .collect();
        AppView {
            id: self.id,
            name: self.name.clone(),
            status: self.shown_status().to_owned(),
            command: self
                .spec
                .command
                .iter()
                .map(|c| crate::secrets::mask_urls(&c.to_string_lossy()).into_owned())
                .collect(),
            listen: self.listen.clone(),
            restarts: self.restarts(),
            workers,
            logs: Vec::new(),
        }
    }
}

/// The closest known name to `wanted`, for "did you mean".
pub fn closest<'a>(wanted: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    names
        .map(|n| (edit_distance(wanted, n), n))
        .filter(|(d, n)| *d <= (n.len().max(wanted.len()) / 2).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// The closest of `known` to `wanted`, for "did you mean".
pub fn closest_key<'a>(wanted: &str, known: &[&'a str]) -> Option<&'a str> {
    let owned: Vec<String> = known.iter().map(|k| (*k).to_owned()).collect();
    let near = closest(wanted, owned.iter())?;
    known.iter().copied().find(|k| *k == near.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        let names = ["api".to_string(), "worker".to_string()];
        assert_eq!(closest("apj", names.iter()), Some(&names[0]));
        assert_eq!(closest("wroker", names.iter()), Some(&names[1]));
        assert_eq!(closest("database", names.iter()), None);
    }
}
