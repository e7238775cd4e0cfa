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
                    let result = reload(app, None);
                    self.joins.settle(join, result);
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
                    Some(app) => result.and_then(|reread| reload(app, Some(reread))),
                    None => Err(Refusal::Deleted(name.to_owned())),
                };
                self.joins.settle(join, outcome);
            }
            After::Restart { joins } => {
                self.relaunch(name, Some(result));
                self.joins.settle_all(joins, Ok(String::new()));
            }
        }
    }
}

/// A rolling reload; with its config file read again (`reread`), changed command,
/// arguments and environment (a removed key included) reach the new workers.
fn reload(app: &mut App, reread: Option<(StartApp, Parsed)>) -> Result<String, Refusal> {
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
    send(app, Control::Reload)?;
    Ok(format!("reloading {}{note}", app.name))
}
