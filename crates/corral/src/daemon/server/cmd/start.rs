//! `start` and `apply`: a new app, or a config file's app taken as it now is (PM2's
//! startOrReload / startOrRestart).

use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn start(&mut self, start: StartApp) -> Response {
        let parsed = match parse_start(&start) {
            Ok(parsed) => parsed,
            Err(e) => return Refusal::Settings(e).into(),
        };
        let Parsed {
            spec,
            triggers,
            lines,
            layout,
        } = parsed;
        if let Some(existing) = self.apps.get(&spec.name) {
            return Refusal::Exists {
                name: spec.name,
                status: existing.status.to_string(),
            }
            .into();
        }
        let mut app = App::new(start, spec, triggers);
        app.id = self.next_id;
        self.next_id += 1;
        app.lines = lines;
        app.layout = layout;
        app.log_generation = self.log_generation.clone();
        if let Err(e) = launch(&mut app, &self.home, &self.tx, None) {
            return e.into();
        }
        if let Some(metrics) = &self.metrics {
            metrics.started(&app.name, app.board.instances());
        }
        let message = format!(
            "started {} ({} workers){}",
            app.name,
            app.board.instances(),
            if app.listen.is_empty() {
                String::new()
            } else {
                format!(" on {}", app.listen.join(", "))
            }
        );
        if self.apps.is_empty() {
            // As in PM2: with no app left, numbering starts again.
            self.next_pm_id = 0;
        }
        self.apps.insert(app.name.clone(), Box::new(app));
        self.number_slots();
        Response::ok(message)
    }

    /// A config file's app: started if new; otherwise its new settings are taken and it is
    /// reloaded (or restarted), as PM2's startOrReload / startOrRestart.
    pub(in crate::daemon::server) fn apply(
        &mut self,
        start: StartApp,
        mode: ApplyMode,
        reply: oneshot::Sender<Response>,
    ) {
        let parsed = match parse_start(&start) {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = reply.send(Refusal::Settings(e).into());
                return;
            }
        };
        let name = parsed.spec.name.clone();
        let Some(app) = self.apps.get_mut(&name) else {
            let _ = reply.send(self.start(start));
            return;
        };
        // The app's runtime scale wins over the file's `instances`.
        let start = StartApp {
            scaled: app.start.scaled,
            ..start
        };
        if mode == ApplyMode::Reload && app.controls.is_some() {
            let join = self.joins.open(reply, 1, None);
            let parsed = match start.scaled {
                Some(_) => parse_start(&start).map_err(Refusal::Settings),
                None => Ok(parsed),
            };
            return self.reread(&name, parsed.map(|p| (start, p)), After::Reload { join });
        }
        // A restart reads the file again as it starts, now with these settings' profile;
        // an app of no file (the PM2 front end's) starts with these settings as they are.
        if start.config.is_none() {
            match parse_start(&start) {
                Ok(parsed) => {
                    app.spec = parsed.spec;
                    app.triggers = parsed.triggers;
                    app.lines = parsed.lines;
                    app.layout = parsed.layout;
                }
                Err(e) => {
                    let _ = reply.send(Refusal::Settings(e).into());
                    return;
                }
            }
        }
        app.start = start;
        self.stop_targets(&name, Then::Start, reply);
    }
}
