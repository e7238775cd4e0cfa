//! `reload`: rolling reloads, apps from config files reading them again first (off the
//! state task).

use crate::daemon::server::launch::pm2_env;
use crate::daemon::server::*;

impl Daemon {
    /// Rolling reloads; apps from config files read them again first, off this task.
    pub(in crate::daemon::server) fn reload_targets(
        &mut self,
        target: &str,
        reply: oneshot::Sender<Response>,
    ) {
        let Some((names, join)) = self.join_targets(target, reply, |_| None) else {
            return;
        };
        for name in names {
            let app = self.apps.get_mut(&name).expect("target exists");
            match Reread::of(app) {
                Some(job) if app.controls.is_some() => {
                    self.spawn_reread(job, After::Reload { join })
                }
                _ => {
                    let result = reload(app, None, join);
                    self.wait_for_reload(&name, join, result);
                }
            }
        }
    }

    /// Reads a config file on the blocking pool; the result comes back as a message.
    pub(in crate::daemon::server) fn spawn_reread(&self, job: Reread, after: After) {
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = job.run();
            let _ = tx.send(Msg::Reread {
                name: job.name,
                result: Box::new(result),
                after,
            });
        });
    }

    pub(in crate::daemon::server) fn reread(
        &mut self,
        name: &str,
        result: Result<(StartApp, Parsed), Refusal>,
        after: After,
    ) {
        match after {
            After::Reload { join } => {
                let outcome = match self.apps.get_mut(name) {
                    Some(app) => result.and_then(|reread| reload(app, Some(reread), join)),
                    None => Err(Refusal::Deleted(name.to_owned())),
                };
                self.wait_for_reload(name, join, outcome);
            }
            After::Restart { joins } => self.relaunch_and_wait(name, Some(result), joins),
        }
    }
}

impl Daemon {
    /// `name`'s part of join `join` is answered when its reload ends (`reload_ended`), or
    /// now if it could not start; `sent` carries the note for the answer.
    fn wait_for_reload(&mut self, name: &str, join: u64, sent: Result<String, Refusal>) {
        match sent {
            Ok(note) => {
                self.reloads.insert((name.to_owned(), join), note);
            }
            Err(refusal) => self.joins.settle(join, Err(refusal)),
        }
    }

    /// An engine's report that ends a reload: the callers it served hear how it went.
    pub(in crate::daemon::server) fn reload_ended(&mut self, name: &str, report: &Report) {
        let (tickets, outcome) = match report {
            Report::ReloadFinished {
                replaced, tickets, ..
            } => (tickets, Ok(*replaced)),
            Report::ReloadAborted { tickets, .. } => (tickets, Err(crate::render::report(report))),
            _ => return,
        };
        for &join in tickets {
            let Some(note) = self.reloads.remove(&(name.to_owned(), join)) else {
                continue;
            };
            let answer = match &outcome {
                Ok(replaced) => Ok(format!(
                    "reloaded {name}: {replaced} workers replaced{note}"
                )),
                Err(why) => Err(Refusal::ReloadFailed {
                    app: name.to_owned(),
                    why: why.clone(),
                }),
            };
            self.joins.settle(join, answer);
        }
    }

    /// `name`'s engine ended: reloads it still owed an answer did not happen.
    pub(in crate::daemon::server) fn reloads_ended(&mut self, name: &str) {
        let owed: Vec<_> = self
            .reloads
            .keys()
            .filter(|(app, _)| app == name)
            .cloned()
            .collect();
        for key in owed {
            self.reloads.remove(&key);
            self.joins
                .settle(key.1, Err(Refusal::NotRunning(name.to_owned())));
        }
    }
}

/// A rolling reload, answering join `join` when it ends; with its config file read again
/// (`reread`), changed command, arguments and environment (a removed key included) reach
/// the new workers. Ok: a note for the answer.
fn reload(app: &mut App, reread: Option<(StartApp, Parsed)>, join: u64) -> Result<String, Refusal> {
    let mut note = String::new();
    if let Some((start, parsed)) = reread {
        if parsed.spec.listen != app.spec.listen || parsed.spec.instances != app.spec.instances {
            note = " (listen and instances changes take effect on `corral restart`)".into();
        }
        let mut spec = parsed.spec;
        pm2_env(&mut spec, app.id);
        send(app, Command::Respec(Box::new(spec.clone())))?;
        app.start = start;
        app.spec.command = spec.command;
        app.spec.env = spec.env;
        app.spec.cwd = spec.cwd;
    }
    if app.spec.workers_bind_own_ports() {
        note.push_str(
            ", each stopped before its replacement started: its workers bind their own ports \
             (fork mode); cluster mode reloads with zero downtime",
        );
    }
    send(app, Control::ReloadTicket(join))?;
    Ok(note)
}
