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

    /// What follows an app's stop; settles `joins` once it is done.
    pub(in crate::daemon::server) fn after_stop(&mut self, name: &str, joins: Vec<u64>) {
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
                self.relaunch(name, None);
            }
        }
        self.joins.settle_all(joins, Ok(String::new()));
    }

    /// Starts a stopped app again, with its config file's new settings when read.
    pub(in crate::daemon::server) fn relaunch(
        &mut self,
        name: &str,
        reread: Option<Result<(StartApp, Parsed), Refusal>>,
    ) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        match reread {
            Some(Ok((start, parsed))) => {
                app.start = start;
                app.spec = parsed.spec;
                app.instances = app.spec.instances;
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
                    metrics.started(name, app.instances);
                }
            }
            Err(e) => journal::say(&format!("{name}: cannot start again: {e}")),
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
