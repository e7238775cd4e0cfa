//! `stop`, `restart` and `delete`: stop the targets, then nothing, start again, or forget.

use crate::daemon::server::*;

impl Daemon {
    /// Stops targets; the reply waits until they have stopped (and, for restart, started).
    pub(in crate::daemon::server) fn stop_targets(
        &mut self,
        target: &str,
        then: Then,
        reply: oneshot::Sender<Response>,
    ) {
        let Some((names, join)) =
            self.join_targets(target, reply, |names| Some(summary(then, names)))
        else {
            return;
        };
        for name in &names {
            let app = self.apps.get_mut(name).expect("target exists");
            app.then = then;
            if then == Then::Start && app.controls.is_some() && app.status != Status::Stopping {
                app.board.restarting();
            }
            if app.controls.is_some() {
                if app.status != Status::Stopping {
                    let _ = send(app, Control::Stop);
                    app.status = Status::Stopping;
                }
                app.waiting.push(join);
            } else {
                self.after_stop(name, vec![join]);
            }
        }
    }

    /// Turns the targets' `--watch` off for good (PM2's stop): kept in what they were
    /// started with, so a restart or a resurrect does not watch either.
    pub(in crate::daemon::server) fn unwatch(&mut self, target: &str) {
        let Ok(names) = self.targets(target) else {
            return;
        };
        for name in names {
            let app = self.apps.get_mut(&name).expect("target exists");
            if app.start.options.watch.is_empty() {
                continue;
            }
            app.start.options.watch.clear();
            let cwd = std::path::PathBuf::from(&app.start.cwd);
            match app.start.options.triggers(&cwd) {
                Ok(triggers) => app.triggers = triggers,
                Err(e) => journal::say(&format!("{name}: cannot turn --watch off: {e:#}")),
            }
        }
    }

    /// What follows an app's stop; settles `joins` once it is done.
    pub(in crate::daemon::server) fn after_stop(&mut self, name: &str, mut joins: Vec<u64>) {
        let restarts = self
            .apps
            .get(name)
            .is_some_and(|app| matches!(app.then, Then::Start));
        if restarts && self.restart_after_snapshot(name, &mut joins) {
            return;
        }
        let Some(app) = self.apps.get_mut(name) else {
            return self.joins.settle_all(joins, Ok(String::new()));
        };
        match std::mem::replace(&mut app.then, Then::Nothing) {
            Then::Nothing => {}
            Then::Delete => {
                self.apps.remove(name);
                if let Some(metrics) = &self.metrics {
                    metrics.forget(name);
                }
            }
            Then::Start => {
                if let Some(job) = Reread::of(app) {
                    return self.spawn_reread(job, After::Restart { joins });
                }
                return self.relaunch_and_wait(name, None, joins);
            }
        }
        self.joins.settle_all(joins, Ok(String::new()));
    }

    /// [`Daemon::relaunch`], settling `joins` once every worker is up, or with the reason
    /// when one is not (`came_up`).
    pub(in crate::daemon::server) fn relaunch_and_wait(
        &mut self,
        name: &str,
        reread: Option<Result<(StartApp, Parsed), Refusal>>,
        joins: Vec<u64>,
    ) {
        match self.relaunch(name, reread) {
            Ok(want) => self
                .coming_up
                .entry(name.to_owned())
                .or_default()
                .wait(want, joins),
            Err(refusal) => self.joins.settle_all(joins, Err(refusal)),
        }
    }

    /// An engine's report while `name` comes up after a restart (or a scale-up): its
    /// callers hear once every (added) worker is ready, or ran and exited cleanly, or the
    /// first that is not.
    pub(in crate::daemon::server) fn came_up(&mut self, name: &str, report: &Report) {
        let Some(coming) = self.coming_up.get_mut(name) else {
            return;
        };
        // Only workers started since: an old one draining away (a reload's) is no news.
        let failed = match report {
            Report::Spawned { pid, .. } => {
                coming.started.insert(*pid);
                false
            }
            Report::Ready { pid, .. } if coming.started.contains(pid) => {
                coming.up.insert(*pid);
                false
            }
            Report::Exited { pid, status, .. }
                if coming.started.contains(pid) && !coming.up.contains(pid) =>
            {
                let clean = matches!(status, corral_core::process::ExitStatus::Code(0));
                coming.up.insert(*pid);
                !clean
            }
            Report::SpawnFailed { .. } | Report::GaveUp { .. } | Report::ScaleRefused { .. } => {
                true
            }
            _ => false,
        };
        let done = failed || coming.up.len() >= coming.want;
        if !done {
            return;
        }
        let coming = self.coming_up.remove(name).expect("looked up above");
        let result = if failed {
            Err(Refusal::NotUp {
                app: name.to_owned(),
                why: crate::render::report(report),
            })
        } else {
            Ok(String::new())
        };
        self.joins.settle_all(coming.joins, result);
    }

    /// Starts a stopped app again, with its config file's new settings when read; Ok: how
    /// many workers it starts.
    pub(in crate::daemon::server) fn relaunch(
        &mut self,
        name: &str,
        reread: Option<Result<(StartApp, Parsed), Refusal>>,
    ) -> Result<usize, Refusal> {
        let Some(app) = self.apps.get_mut(name) else {
            return Err(Refusal::Deleted(name.to_owned()));
        };
        match reread {
            Some(Ok((start, parsed))) => {
                app.start = start;
                app.spec = parsed.spec;
                app.triggers = parsed.triggers;
                app.lines = parsed.lines;
                app.layout = parsed.layout;
            }
            Some(Err(e)) => journal::say(&format!(
                "{name}: config not re-read, keeping the last one: {e}"
            )),
            None => {}
        }
        match launch(app, &self.home, &self.tx, None) {
            Ok(()) => {
                if let Some(metrics) = &self.metrics {
                    metrics.started(name, app.board.instances());
                }
                Ok(app.board.instances())
            }
            Err(e) => {
                journal::say(&format!("{name}: cannot start again: {e}"));
                Err(Refusal::Launch(format!("{name}: cannot start again: {e}")))
            }
        }
    }
}

fn summary(then: Then, names: &[String]) -> String {
    let verb = match then {
        Then::Nothing => "stopped",
        Then::Start => "restarted",
        Then::Delete => "deleted",
    };
    format!("{verb} {}", names.join(", "))
}
