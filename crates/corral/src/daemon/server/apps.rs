//! The daemon's app lifecycle: start, apply a config file's settings, stop, restart,
//! delete, reload (reading the config file again), and the engine's reports and exits.

use super::*;

impl Daemon {
    pub(super) fn start(&mut self, start: StartApp) -> Response {
        let parsed = match parse_start(&start) {
            Ok(parsed) => parsed,
            Err(e) => return Response::error(e),
        };
        let Parsed {
            spec,
            triggers,
            lines,
            layout,
        } = parsed;
        if let Some(existing) = self.apps.get(&spec.name) {
            return Response::error(format!(
                "an app named `{}` exists ({}); `corral delete {}` first, or pick another --name",
                spec.name, existing.status, spec.name
            ));
        }
        let mut app = App::new(start, spec, triggers);
        app.id = self.next_id;
        self.next_id += 1;
        app.lines = lines;
        app.layout = layout;
        app.log_generation = self.log_generation.clone();
        if let Err(e) = launch(&mut app, &self.home, &self.tx) {
            return Response::error(e);
        }
        if let Some(metrics) = &self.metrics {
            metrics.started(&app.name, app.instances);
        }
        let message = format!(
            "started {} ({} workers){}",
            app.name,
            app.instances,
            if app.listen.is_empty() {
                String::new()
            } else {
                format!(" on {}", app.listen.join(", "))
            }
        );
        self.apps.insert(app.name.clone(), app);
        Response::ok(message)
    }

    /// A config file's app: started if new; otherwise its new settings are taken and it is
    /// reloaded (or restarted), as PM2's startOrReload / startOrRestart.
    pub(super) fn apply(
        &mut self,
        start: StartApp,
        mode: ApplyMode,
        reply: oneshot::Sender<Response>,
    ) {
        let parsed = match parse_start(&start) {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = reply.send(Response::error(e));
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
                Some(_) => parse_start(&start),
                None => Ok(parsed),
            };
            return self.reread(&name, parsed.map(|p| (start, p)), After::Reload { join });
        }
        // A restart reads the file again as it starts, now with these settings' profile.
        app.start = start;
        self.stop_targets(&name, Then::Start, reply);
    }

    /// Stops targets; the reply waits until they have stopped (and, for restart, started).
    pub(super) fn stop_targets(
        &mut self,
        target: &str,
        then: Then,
        reply: oneshot::Sender<Response>,
    ) {
        let names = match self.targets(target) {
            Ok(names) => names,
            Err(e) => {
                let _ = reply.send(Response::error(e));
                return;
            }
        };
        let join = self
            .joins
            .open(reply, names.len(), Some(describe(then, &names)));
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
    pub(super) fn after_stop(&mut self, name: &str, joins: Vec<u64>) {
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
    pub(super) fn relaunch(
        &mut self,
        name: &str,
        reread: Option<Result<(StartApp, Parsed), String>>,
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
        match launch(app, &self.home, &self.tx) {
            Ok(()) => {
                if let Some(metrics) = &self.metrics {
                    metrics.started(name, app.instances);
                }
            }
            Err(e) => journal::say(&format!("{name}: cannot start again: {e}")),
        }
    }

    /// Rolling reloads; apps from config files read them again first, off this task.
    pub(super) fn reload_targets(&mut self, target: &str, reply: oneshot::Sender<Response>) {
        let names = match self.targets(target) {
            Ok(names) => names,
            Err(e) => {
                let _ = reply.send(Response::error(e));
                return;
            }
        };
        let join = self.joins.open(reply, names.len(), None);
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
    pub(super) fn spawn_reread(&self, job: Reread, after: After) {
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

    pub(super) fn reread(
        &mut self,
        name: &str,
        result: Result<(StartApp, Parsed), String>,
        after: After,
    ) {
        match after {
            After::Reload { join } => {
                let outcome = match self.apps.get_mut(name) {
                    Some(app) => result.and_then(|reread| reload(app, Some(reread))),
                    None => Err(format!("{name} was deleted while its config was read")),
                };
                self.joins.settle(join, outcome);
            }
            After::Restart { joins } => {
                self.relaunch(name, Some(result));
                self.joins.settle_all(joins, Ok(String::new()));
            }
        }
    }

    pub(super) fn report(&mut self, name: &str, report: Report) {
        for said in self.chatter.lines(name, &report, Instant::now()) {
            match said {
                Said::Report(text) => journal::report(name, &report, &text),
                Said::Note(text) => journal::say(&format!("{name}: {text}")),
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.report(name, &report);
        }
        if let Some(app) = self.apps.get_mut(name) {
            app.apply(&report, Instant::now());
        }
    }

    pub(super) fn finished(&mut self, name: &str, outcome: Result<Outcome, String>) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        app.controls = None;
        app.running_triggers = None;
        app.listen.clear();
        app.status = match &outcome {
            Ok(Outcome::Stopped) => Status::Stopped,
            Ok(Outcome::Failed) => Status::Errored,
            Err(e) => {
                journal::say(&format!("{name}: {e}"));
                Status::Errored
            }
        };
        let waiting = std::mem::take(&mut app.waiting);
        self.after_stop(name, waiting);
    }
}

pub(super) fn describe(then: Then, names: &[String]) -> String {
    let verb = match then {
        Then::Nothing => "stopped",
        Then::Start => "restarted",
        Then::Delete => "deleted",
    };
    format!("{verb} {}", names.join(", "))
}

/// A rolling reload; with its config file read again (`reread`), changed command,
/// arguments and environment (a removed key included) reach the new workers.
pub(super) fn reload(app: &mut App, reread: Option<(StartApp, Parsed)>) -> Result<String, String> {
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

pub(super) fn send(app: &App, command: impl Into<Command>) -> Result<(), String> {
    match &app.controls {
        Some(tx) => tx
            .try_send(command.into())
            .map_err(|_| format!("{} is busy; try again", app.name)),
        None => Err(format!(
            "{} is not running (`corral restart {}` starts it)",
            app.name, app.name
        )),
    }
}

/// Binds the app's listeners and starts its engine group in a task of its own.
/// PM2's variables, which PM2 apps read: `name` (the app's) and `pm_id` (its id), unless
/// the app sets them itself.
pub(super) fn pm2_env(spec: &mut corral_core::AppSpec, id: u32) {
    for (key, value) in [("name", spec.name.clone()), ("pm_id", id.to_string())] {
        if !spec.env.iter().any(|(k, _)| k == key) {
            spec.env.push((key.into(), value.into()));
        }
    }
}

pub(super) fn launch(
    app: &mut App,
    home: &Home,
    tx: &mpsc::UnboundedSender<Msg>,
) -> Result<(), String> {
    pm2_env(&mut app.spec, app.id);
    supervisor::resolve(&app.spec).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let listeners = listen::bind_all(&app.spec.listen).map_err(|e| e.to_string())?;
    app.listen = listeners.iter().map(|l| l.local.to_string()).collect();
    let (controls_tx, controls) = mpsc::channel(64);
    let (reports, mut report_rx) = mpsc::unbounded_channel();
    let (logs, mut log_rx) = mpsc::channel(1024);
    let mut files = LogFiles::new(home.logs(), app.name.clone())
        .with_format(app.lines.clone())
        .with_layout(app.layout.clone())
        .reopening_on(app.log_generation.clone());
    std::thread::spawn(move || {
        while let Some(line) = log_rx.blocking_recv() {
            let _ = files.write(&line);
        }
    });
    let name = app.name.clone();
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(report) = report_rx.recv().await {
            let _ = forward.send(Msg::Report(name.clone(), report));
        }
    });
    let spec = app.spec.clone();
    let name = app.name.clone();
    let finished = tx.clone();
    let runtime_dir = corral_core::signals::runtime_dir();
    tokio::spawn(async move {
        let channels = Channels {
            controls,
            reports,
            logs,
            reap_all: false,
        };
        let outcome = supervisor::run(&spec, &listeners, &runtime_dir, channels)
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        drop(listeners);
        let _ = finished.send(Msg::Finished(name, outcome));
    });
    let name = app.name.clone();
    app.running_triggers = Some(
        crate::triggers::start(&app.triggers, controls_tx.clone(), move |m| {
            journal::say(&format!("{name}: {m}"))
        })
        .map_err(|e| format!("{e:#}"))?,
    );
    app.controls = Some(controls_tx);
    app.status = Status::Online;
    app.rows.clear();
    app.instances = app.spec.instances;
    Ok(())
}
