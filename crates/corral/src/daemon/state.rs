//! What the daemon knows about each app: its spec, its workers as reports describe them,
//! and the views `ls` prints.

use std::collections::HashMap;
use std::time::Instant;

use corral_core::board::SlotBoard;
use corral_core::group::Report;
use corral_core::process::Pid;
use corral_core::supervisor::Command;
use corral_core::AppSpec;
use tokio::sync::mpsc;

use corral_proto::control::{AppView, LogFileView, WorkerStatus, WorkerView};

use crate::model::StartApp;

/// Where an app is; `Degraded` is never stored, [`App::shown_status`] derives it.
pub use corral_proto::control::AppStatus as Status;

/// What to do once an app has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Nothing,
    Start,
    Delete,
}

/// One app of the daemon.
/// Listening sockets remembered per app run (see `App::apply`).
const MAX_LISTENER_INODES: usize = 4096;

pub struct App {
    /// Its number, given at start and never reused while the daemon runs.
    pub id: u32,
    pub name: String,
    /// What it was started from, runtime changes (scale) included: enough to start it
    /// again, here or after `resurrect`.
    pub start: StartApp,
    pub spec: AppSpec,
    pub controls: Option<mpsc::Sender<Command>>,
    pub status: Status,
    /// Its workers, slot by slot, and how many it should run.
    pub board: SlotBoard,
    pub then: Then,
    /// Replies (joins, see `joins.rs`) waiting for the app to stop.
    pub waiting: Vec<u64>,
    pub listen: Vec<String>,
    /// The inodes of its listeners' sockets, to find who still holds them once it stopped.
    pub listener_inodes: Vec<u64>,
    /// `--watch` / `--cron-restart`, and their running watchers while the app runs.
    pub triggers: crate::triggers::Triggers,
    pub running_triggers: Option<crate::triggers::Running>,
    /// How lines are written in the log files (`--time`, `--log-format`).
    pub lines: crate::line_format::LineFormat,
    /// Where its output goes.
    pub layout: crate::log_layout::LogLayout,
    /// The daemon's `reloadLogs` count; its log writer reopens files when it changes.
    pub log_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Its log writer, which ends once every line the engine passed on is written.
    pub log_task: Option<tokio::task::JoinHandle<()>>,
    /// Each slot's number among every worker of the daemon (PM2's `pm_id`), given in
    /// the order workers are first listed.
    pub pm_ids: Vec<u32>,
    /// When it was first started (a restart keeps it).
    pub created: std::time::SystemTime,
}

impl App {
    pub fn new(start: StartApp, spec: AppSpec, triggers: crate::triggers::Triggers) -> App {
        App {
            id: 0,
            name: spec.name.clone(),
            start,
            board: SlotBoard::new(spec.instances),
            spec,
            controls: None,
            status: Status::Stopped,
            then: Then::Nothing,
            waiting: Vec::new(),
            listen: Vec::new(),
            listener_inodes: Vec::new(),
            triggers,
            running_triggers: None,
            lines: Default::default(),
            layout: Default::default(),
            log_generation: Default::default(),
            log_task: None,
            pm_ids: Vec::new(),
            created: std::time::SystemTime::now(),
        }
    }

    /// `online` only when every slot is: one that crash-loops or gave up makes the app
    /// `degraded`, whatever serves meanwhile.
    pub fn shown_status(&self) -> Status {
        if self.status == Status::Online && self.board.sick() > 0 {
            Status::Degraded
        } else {
            self.status
        }
    }

    /// Updates the worker rows from what the engine reported.
    pub fn apply(&mut self, report: &Report, now: Instant) {
        self.board.apply(report, now);
        match report {
            Report::Spawned { slot, .. }
            | Report::Ready { slot, .. }
            | Report::Exited { slot, .. }
            | Report::GaveUp { slot, .. } => self.write_pid_file(*slot),
            _ => {}
        }
        // What a ready worker listens on, so that a process that leaves its group
        // holding one of those sockets is found at stop (`kill_holders`).
        if let Report::Ready { pid, .. } = report {
            for inode in corral_core::os::sockets::listening_inodes_of(*pid) {
                if !self.listener_inodes.contains(&inode) {
                    self.listener_inodes.push(inode);
                }
            }
            // Workers that bind a port of their own anew at each start: the oldest
            // sockets are long closed.
            let over = self
                .listener_inodes
                .len()
                .saturating_sub(MAX_LISTENER_INODES);
            self.listener_inodes.drain(..over);
        }
        if let Report::PortBound { addr, .. } = report {
            let shown = format!("{addr} (asked by the app)");
            if !self.listen.contains(&shown) {
                self.listen.push(shown);
            }
        }
    }

    /// `--pid-file`: the slot's file holds its current worker's pid, and is gone while
    /// none runs. A file that can't be written is said once per try in the journal.
    fn write_pid_file(&self, slot: usize) {
        let Some(path) = &self.start.options.pid_file else {
            return;
        };
        let file =
            crate::log_layout::per_slot(&std::path::Path::new(&self.start.cwd).join(path), slot);
        let done = match self.board.row(slot).and_then(|r| r.pid) {
            Some(pid) => file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&file, format!("{pid}\n"))),
            None => match std::fs::remove_file(&file) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        if let Err(e) = done {
            crate::daemon::journal::say(&format!(
                "{}: pid file {}: {e}",
                self.name,
                file.display()
            ));
        }
    }

    /// The log files of every slot and stream, as `logs` reads them.
    pub fn log_files(&self, dir: &std::path::Path) -> Vec<LogFileView> {
        let slots = self.board.instances().max(self.board.rows().count());
        self.layout.files(dir, &self.name, slots)
    }

    pub fn view(&self, usage: &HashMap<Pid, (f64, u64)>, now: Instant) -> AppView {
        let workers = self
            .board
            .rows()
            .map(|(slot, row)| {
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
                        WorkerStatus::from(self.status)
                    },
                    uptime_ms: now.saturating_duration_since(row.since).as_millis() as u64,
                    restarts: row.restarts,
                    restart_time: row.restart_time(),
                    pm_id: self.pm_ids.get(slot).copied(),
                    cpu_percent,
                    memory,
                    last_exit: row.last_exit.map(|e| {
                        format!("{} after {}", e.status, crate::render::duration(e.uptime))
                    }),
                }
            })
            .collect();
        AppView {
            id: self.id,
            name: self.name.clone(),
            status: self.shown_status(),
            command: self
                .spec
                .command
                .iter()
                .map(|c| crate::secrets::mask_urls(&c.to_string_lossy()).into_owned())
                .collect(),
            listen: self.listen.clone(),
            restarts: self.board.restarts(),
            workers,
            logs: Vec::new(),
        }
    }
}
