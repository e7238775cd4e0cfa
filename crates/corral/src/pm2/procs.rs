//! The daemon's apps as PM2 sees them: one process per worker slot, each with its
//! `pm_id`, and the targets PM2's commands take (ids, names, scripts, namespaces,
//! /regexes/, `all`) resolved to corral's apps.

use std::path::Path;

use anyhow::anyhow;
use corral_proto::control::{AppRecord, AppView, Response, WorkerStatus, WorkerView};

use crate::client::conn;
use crate::exit::Failure;
use crate::home::Home;
use crate::model::facts::Pm2Facts;
use crate::model::{Request, StartApp};

/// One app of the daemon with what it was started from.
pub struct Record {
    pub view: AppView,
    pub start: StartApp,
    /// PM2's facts, or what they would be for an app `corral start` made.
    pub facts: Pm2Facts,
    pub created_at_ms: u64,
    pub instances: usize,
}

impl Record {
    /// Its processes: one per slot listed (an app with no worker row yet shows its
    /// first slot, so that it is never missing from the list).
    pub fn processes(&self) -> Vec<WorkerView> {
        if !self.view.workers.is_empty() {
            return self.view.workers.clone();
        }
        vec![WorkerView {
            slot: 0,
            pid: None,
            status: WorkerStatus::from(self.view.status),
            uptime_ms: 0,
            restarts: 0,
            restart_time: 0,
            pm_id: None,
            cpu_percent: 0.0,
            memory: 0,
            last_exit: None,
        }]
    }

    /// The id PM2's commands take for the app: its first process's.
    pub fn first_pm_id(&self) -> u32 {
        self.processes()
            .iter()
            .filter_map(|w| w.pm_id)
            .min()
            .unwrap_or(self.view.id)
    }
}

/// Every app of the daemon (none when no daemon runs), in `pm_id` order.
pub fn records(home: &Home) -> Result<Vec<Record>, Failure> {
    let apps = match conn::request(home, Request::Records, false) {
        Ok(Response::Records { apps }) => apps,
        Ok(Response::Error { message, .. }) => return Err(Failure::Runtime(anyhow!(message))),
        Ok(_) => {
            return Err(Failure::Runtime(anyhow!(
                "the daemon does not list PM2's views (an older corral?); run `pm2 update` to move it to this binary, then retry"
            )))
        }
        Err(e) if conn::is_no_daemon(&e) => Vec::new(),
        Err(e) => return Err(Failure::Runtime(e)),
    };
    let mut records = apps
        .into_iter()
        .map(record)
        .collect::<Result<Vec<_>, _>>()?;
    records.sort_by_key(Record::first_pm_id);
    Ok(records)
}

fn record(app: AppRecord) -> Result<Record, Failure> {
    let start = serde_json::from_value(app.start).map_err(|e| {
        Failure::Runtime(anyhow!(
            "the daemon's record of {} is not this corral's (another version?): {e}; run `pm2 update`",
            app.view.name
        ))
    })?;
    let facts = facts_of(&app.view, &start);
    Ok(Record {
        view: app.view,
        start,
        facts,
        created_at_ms: app.created_at_ms,
        instances: app.instances,
    })
}

/// PM2's facts of an app, or what they would be for one `corral start` made.
fn facts_of(view: &AppView, start: &StartApp) -> Pm2Facts {
    start.options.pm2_facts.clone().unwrap_or_else(|| {
        let interpreter = start.command.first().cloned().unwrap_or_default();
        Pm2Facts {
            name: view.name.clone(),
            exec_mode: "fork_mode".into(),
            interpreter: Path::new(&interpreter)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(interpreter),
            script: start.command.get(1).cloned().unwrap_or_default(),
            ..Pm2Facts::default()
        }
    })
}

/// The apps `target` names, as PM2 resolves it: `all`; a name (a number is tried as a
/// name first); an id; a namespace; a script path; a /regex/ over names.
pub fn resolve<'a>(records: &'a [Record], target: &str, cwd: &Path) -> Vec<&'a Record> {
    if target == "all" {
        return records.iter().collect();
    }
    if let Some(pattern) = target
        .strip_prefix('/')
        .and_then(|t| t.strip_suffix('/'))
        .filter(|p| !p.is_empty())
    {
        return match regex::Regex::new(pattern) {
            Ok(re) => records
                .iter()
                .filter(|r| re.is_match(&r.facts.name))
                .collect(),
            Err(_) => Vec::new(),
        };
    }
    let by = |pick: &dyn Fn(&Record) -> bool| -> Vec<&'a Record> {
        records.iter().filter(|r| pick(r)).collect()
    };
    let named = by(&|r| r.facts.name == target || r.view.name == target);
    if !named.is_empty() {
        return named;
    }
    if let Ok(id) = target.parse::<u32>() {
        return by(&|r| r.processes().iter().any(|w| w.pm_id == Some(id)));
    }
    let spaced = by(&|r| r.start.options.namespace.as_deref() == Some(target));
    if !spaced.is_empty() {
        return spaced;
    }
    let path = cwd.join(target);
    by(&|r| Path::new(&r.facts.script) == path)
}

/// The corral names of the apps each target names, each app once; an error naming the
/// first target that names none.
pub fn names_of(
    records: &[Record],
    targets: &[String],
    cwd: &Path,
) -> Result<Vec<String>, Failure> {
    let mut names: Vec<String> = Vec::new();
    for target in targets {
        let found = resolve(records, target, cwd);
        if found.is_empty() {
            return Err(not_found(target, records.is_empty()));
        }
        for record in found {
            if !names.contains(&record.view.name) {
                names.push(record.view.name.clone());
            }
        }
    }
    Ok(names)
}

/// The one process `target` names (an id, or the name of an app of one process), and
/// its slot: PM2's commands that act on a process, not an app (`send`, `attach`).
pub fn process<'a>(records: &'a [Record], target: &str) -> Result<(&'a Record, usize), Failure> {
    if let Ok(id) = target.parse::<u32>() {
        for record in records {
            if let Some(w) = record.processes().iter().find(|w| w.pm_id == Some(id)) {
                return Ok((record, w.slot));
            }
        }
    }
    let named: Vec<&Record> = records
        .iter()
        .filter(|r| r.facts.name == target || r.view.name == target)
        .collect();
    match named.as_slice() {
        [] => Err(not_found(target, records.is_empty())),
        [one] if one.processes().len() == 1 => Ok((one, one.processes()[0].slot)),
        [one] => Err(Failure::Runtime(anyhow!(
            "{target} runs {} processes: name one by its id (`pm2 list` shows them)",
            one.processes().len()
        ))),
        _ => Err(Failure::Runtime(anyhow!(
            "{target} names several apps: name one process by its id (`pm2 list` shows them)"
        ))),
    }
}

pub fn not_found(target: &str, none_at_all: bool) -> Failure {
    let hint = if none_at_all {
        " (no process runs; `pm2 start app.js` starts one)"
    } else {
        " (`pm2 list` shows names and ids)"
    };
    Failure::Runtime(anyhow!("Process or Namespace {target} not found{hint}"))
}

/// PM2's word for a slot's state: a worker that has started is `online` (PM2 says so
/// from its spawn; corral's own `ls` says `starting` until it is ready).
pub fn status_word(status: WorkerStatus) -> &'static str {
    match status {
        WorkerStatus::Starting
        | WorkerStatus::Online
        | WorkerStatus::OnlineOwnPort
        | WorkerStatus::OnlineSocketClosed => "online",
        WorkerStatus::Restarting => "waiting restart",
        WorkerStatus::Exited | WorkerStatus::Stopped => "stopped",
        WorkerStatus::Errored => "errored",
        WorkerStatus::Stopping => "stopping",
    }
}
