//! An app's engine: its listeners bound, its supervisor and log writer started in tasks
//! of their own, its triggers armed.

use super::*;

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

/// With `adopt`, the app's engine takes over the workers and listeners another daemon
/// handed over (`update`) instead of binding and starting anew.
pub(super) fn launch(
    app: &mut App,
    home: &Home,
    tx: &mpsc::UnboundedSender<Msg>,
    adopt: Option<(Vec<listen::Listener>, Box<supervisor::Handed>)>,
) -> Result<(), Refusal> {
    pm2_env(&mut app.spec, app.id);
    // Workers outlive the daemon: the holder keeps them for the next one.
    app.spec.die_with_supervisor = false;
    let adopted = adopt.is_some();
    supervisor::resolve(&app.spec).map_err(|e| Refusal::Launch(chain(e)))?;
    let (listeners, adopt) = match adopt {
        Some((listeners, engine)) => (listeners, Some(engine)),
        None => (
            listen::bind_all(&app.spec.listen, app.spec.balance.reuseport())
                .map_err(|e| Refusal::Launch(e.to_string()))?,
            None,
        ),
    };
    app.listen = listeners.iter().map(|l| l.local.to_string()).collect();
    app.listener_inodes = listeners
        .iter()
        .filter_map(|l| corral_core::os::sockets::inode_of(l.raw_fd()))
        .collect();
    let (controls_tx, controls) = mpsc::channel(64);
    let (logs, log_rx) = mpsc::channel(1024);
    let files = LogFiles::new(home.logs(), app.name.clone())
        .with_format(app.lines.clone())
        .with_layout(app.layout.clone())
        .reopening_on(app.log_generation.clone());
    app.log_task = Some(tokio::spawn(write_logs(files, log_rx)));
    let (name, forward) = (app.name.clone(), tx.clone());
    let reports = supervisor::Reports::new(move |report| {
        forward.send(Msg::Report(name.clone(), report)).is_ok()
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
        let outcome = supervisor::run(&spec, &listeners, &runtime_dir, channels, adopt)
            .await
            .map_err(|e| Refusal::Launch(chain(e)));
        if let Ok(Outcome::HandedOver) = outcome {
            let _ = finished.send(Msg::Released(name, listeners));
            return;
        }
        drop(listeners);
        let _ = finished.send(Msg::Finished(name, outcome));
    });
    let name = app.name.clone();
    app.running_triggers = Some(
        crate::triggers::start(&app.triggers, controls_tx.clone(), move |m| {
            journal::say(&format!("{name}: {m}"))
        })
        .map_err(|e| Refusal::Launch(format!("{e:#}")))?,
    );
    app.controls = Some(controls_tx);
    if !adopted {
        app.status = Status::Online;
        // The rows of the last run stay, so that their counters go on (PM2's restart_time).
        app.board.relaunched(app.spec.instances);
    }
    Ok(())
}

/// An error with its causes, as `a: b: c`.
fn chain(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

/// Writes an app's lines in batches on the blocking pool, one batch at a time (so in
/// order): a slow or full disk holds up that app's logs, never the runtime, and an app
/// costs no thread of its own while it is quiet.
async fn write_logs(mut files: LogFiles, mut rx: mpsc::Receiver<corral_core::output::LogLine>) {
    const BATCH: usize = 256;
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let lines = std::mem::take(&mut batch);
        let written = tokio::task::spawn_blocking(move || {
            for line in &lines {
                let _ = files.write(line);
            }
            files
        })
        .await;
        match written {
            Ok(back) => files = back,
            Err(_) => return, // the runtime is shutting down
        }
    }
}
