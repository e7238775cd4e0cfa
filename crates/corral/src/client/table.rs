//! `ls`, `jlist` and `prettylist`: the daemon's apps as a table or as JSON, and the
//! cells `monit` shows too.

use std::time::Duration;

use corral_proto::control::{AppView, Response, WorkerView};

use super::conn;
use crate::cli::ListArgs;
use crate::exit::Failure;
use crate::home::Home;
use crate::model::Request;
use crate::render;

/// The daemon's apps (none when no daemon runs). A holder that keeps apps for the next
/// daemon means they run: a daemon is started, which takes them back.
pub fn listed(home: &Home) -> Result<Vec<AppView>, Failure> {
    let answer = match conn::request(home, Request::List, false) {
        Err(e) if conn::is_no_daemon(&e) && home.holder_runs() => {
            conn::request(home, Request::List, true)
        }
        answer => answer,
    };
    match answer {
        Ok(Response::Apps { apps }) => Ok(apps),
        Ok(other) => Err(super::unexpected(other)),
        Err(e) if conn::is_no_daemon(&e) => Ok(Vec::new()),
        Err(e) => Err(Failure::Runtime(e)),
    }
}

pub fn list(home: &Home, args: &ListArgs) -> Result<(), Failure> {
    let apps = listed(home)?;
    // No app, yet workers of a daemon that died (with its holder) still serve.
    let left = match apps.is_empty() {
        true => left_behind(home),
        false => String::new(),
    };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&apps).expect("views serialize")
        );
        if !left.is_empty() {
            errln!("{left}");
        }
    } else if !left.is_empty() {
        outln!("{left}");
    } else {
        out!("{}", table(&apps));
    }
    Ok(())
}

/// What a daemon and holder that both died left running, in words; empty if nothing.
pub fn left_behind(home: &Home) -> String {
    let left = home.left_workers();
    if left.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "no apps: no corral daemon runs, but one that died (with its holder) left {} \
         worker process group{} serving, unsupervised:",
        left.len(),
        if left.len() == 1 { "" } else { "s" }
    );
    for pgid in left {
        let command = corral_core::os::memory::command_line(pgid);
        out.push_str(&format!("\n  pid {pgid}  {command}"));
    }
    out.push_str(
        "\n`corral kill` stops them; `corral resurrect` stops them and starts the saved apps again",
    );
    out
}

/// The columns of `ls` (and `monit`).
pub const COLUMNS: [&str; 9] = [
    "id", "app", "slot", "pid", "status", "uptime", "restarts", "cpu", "memory",
];

/// An app's own row: id, name, status, restarts, listeners.
pub fn app_cells(app: &AppView) -> [String; 9] {
    [
        app.id.to_string(),
        app.name.clone(),
        String::new(),
        String::new(),
        app.status.to_string(),
        String::new(),
        app.restarts.to_string(),
        String::new(),
        app.listen.join(" "),
    ]
}

/// A worker's row under its app.
pub fn worker_cells(w: &WorkerView) -> [String; 9] {
    [
        String::new(),
        String::new(),
        w.slot.to_string(),
        w.pid.map_or("-".into(), |p| p.to_string()),
        match &w.last_exit {
            Some(why) if w.status.is_sick() => format!("{} ({why})", w.status),
            _ => w.status.to_string(),
        },
        w.pid.map_or("-".into(), |_| {
            render::duration(Duration::from_millis(w.uptime_ms))
        }),
        w.restarts.to_string(),
        format!("{:.0}%", w.cpu_percent),
        render::size(w.memory),
    ]
}

/// `ls` as a table: one row per app, then one per worker.
pub fn table(apps: &[AppView]) -> String {
    let mut rows = vec![COLUMNS.map(String::from)];
    for app in apps {
        rows.push(app_cells(app));
        rows.extend(app.workers.iter().map(worker_cells));
    }
    if apps.is_empty() {
        return "no apps (start one with `corral start app.js`)\n".into();
    }
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `jlist` (one line) and `prettylist` (indented): `ls` as JSON.
pub fn json_list(home: &Home, pretty: bool) -> Result<(), Failure> {
    let apps = listed(home)?;
    let text = if pretty {
        serde_json::to_string_pretty(&apps)
    } else {
        serde_json::to_string(&apps)
    };
    outln!("{}", text.expect("views serialize"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use corral_proto::control::{AppStatus, WorkerStatus};

    use super::*;

    fn worker(slot: usize, pid: Option<i32>, status: WorkerStatus) -> WorkerView {
        WorkerView {
            slot,
            pid,
            status,
            uptime_ms: 125_000,
            restarts: slot as u32,
            restart_time: slot as u32,
            pm_id: Some(slot as u32),
            cpu_percent: 12.4,
            memory: 48 << 20,
            last_exit: None,
        }
    }

    #[test]
    fn the_ls_table_lines_up_apps_and_their_workers() {
        let mut sick = worker(1, None, WorkerStatus::Restarting);
        sick.last_exit = Some("exit code 1 after 44ms".into());
        let apps = vec![
            AppView {
                id: 0,
                name: "api".into(),
                status: AppStatus::Degraded,
                command: vec!["node".into(), "/srv/api/server.js".into()],
                listen: vec!["127.0.0.1:3000".into()],
                restarts: 1,
                workers: vec![worker(0, Some(4242), WorkerStatus::Online), sick],
                logs: Vec::new(),
            },
            AppView {
                id: 1,
                name: "jobs".into(),
                status: AppStatus::Stopped,
                command: vec!["python3".into(), "jobs.py".into()],
                listen: Vec::new(),
                restarts: 0,
                workers: vec![worker(0, None, WorkerStatus::Stopped)],
                logs: Vec::new(),
            },
        ];
        insta::assert_snapshot!(table(&apps));
        assert_eq!(
            table(&[]),
            "no apps (start one with `corral start app.js`)\n"
        );
    }
}
