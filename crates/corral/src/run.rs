//! `corral run`: one app in the foreground, with signals mapped to engine controls.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use corral_core::group::{Control, Outcome, Report};
use corral_core::listen::{self, Listener};
use corral_core::output::LogLine;
use corral_core::supervisor::{self, Channels, RunError};
use corral_core::AppSpec;
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::cli::RunArgs;
use crate::exit::Failure;
use crate::render;

/// How long, after the last worker exited, output still in flight may take to arrive.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

pub fn run(args: RunArgs) -> Result<(), Failure> {
    let spec = args
        .into_spec(
            std::env::vars_os().collect(),
            corral_core::spec::usable_cpus(),
        )
        .map_err(Failure::Usage)?;
    // A typo in the command is reported before anything is bound or started.
    supervisor::resolve(&spec).map_err(|e| Failure::Usage(e.into()))?;
    let listeners = listen::bind_all(&spec.listen).map_err(|e| Failure::Runtime(e.into()))?;
    // Orphans of workers are reparented to us and reaped, whether or not we are PID 1.
    let _ = corral_core::os::become_subreaper();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)?;
    runtime.block_on(supervise(spec, listeners))
}

async fn supervise(spec: AppSpec, listeners: Vec<Listener>) -> Result<(), Failure> {
    let (control_tx, controls) = mpsc::channel(16);
    let (reports, report_rx) = mpsc::unbounded_channel();
    let (logs, log_rx) = mpsc::channel(1024);
    let signals = spawn_signal_task(control_tx).map_err(Failure::Runtime)?;
    let (written, all_written) = oneshot::channel();
    spawn_log_writer(spec.name.clone(), log_rx, written);
    let report_task = tokio::spawn(print_reports(report_rx));

    for l in &listeners {
        say(&format!(
            "{}: listening on {} (fd name {})",
            spec.name, l.local, l.name
        ));
    }
    let shown: Vec<_> = spec.command.iter().map(|a| a.to_string_lossy()).collect();
    say(&format!(
        "{}: starting {} workers: {}",
        spec.name,
        spec.instances,
        shown.join(" ")
    ));

    let channels = Channels {
        controls,
        reports,
        logs,
    };
    let outcome = supervisor::run(&spec, &listeners, &runtime_dir(), channels).await;
    signals.abort();
    let _ = report_task.await;
    // Workers are gone; let the last lines they wrote reach the terminal.
    let _ = tokio::time::timeout(OUTPUT_GRACE, all_written).await;
    drop(listeners);
    match outcome {
        Ok(Outcome::Stopped) => {
            say(&format!("{}: stopped", spec.name));
            Ok(())
        }
        Ok(Outcome::Failed) => Err(Failure::Runtime(anyhow::anyhow!(
            "every worker of `{}` gave up; nothing is running (see the output above for why)",
            spec.name
        ))),
        Err(e @ (RunError::Command { .. } | RunError::NoCommand)) => Err(Failure::Usage(e.into())),
        Err(e) => Err(Failure::Runtime(e.into())),
    }
}

fn say(text: &str) {
    eprintln!("[corral] {text}");
}

async fn print_reports(mut rx: mpsc::UnboundedReceiver<Report>) {
    while let Some(report) = rx.recv().await {
        say(&render::report(&report));
    }
}

/// Worker output is written from a thread of its own, so a slow terminal slows the
/// workers' output (through full pipes), never the supervisor.
fn spawn_log_writer(app: String, mut rx: mpsc::Receiver<LogLine>, done: oneshot::Sender<()>) {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        while let Some(line) = rx.blocking_recv() {
            if render::log_line(&app, &line, &mut buf).is_err() {
                // The terminal is gone; keep draining so workers never block on us.
                continue;
            }
        }
        let _ = done.send(());
    });
}

/// TERM/INT: stop, then kill on the second one. HUP/USR2: reload. TTIN/TTOU: scale.
/// USR1: passed on to every worker.
fn spawn_signal_task(
    controls: mpsc::Sender<Control>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listen = |kind: SignalKind| signal(kind).context("cannot install signal handlers");
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut usr2 = listen(SignalKind::user_defined2())?;
    let mut usr1 = listen(SignalKind::user_defined1())?;
    let mut ttin = listen(SignalKind::from_raw(Signal::SIGTTIN as i32))?;
    let mut ttou = listen(SignalKind::from_raw(Signal::SIGTTOU as i32))?;
    Ok(tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let control = tokio::select! {
                _ = term.recv() => stop_or_kill(&mut stopping),
                _ = int.recv() => stop_or_kill(&mut stopping),
                _ = hup.recv() => Control::Reload,
                _ = usr2.recv() => Control::Reload,
                _ = ttin.recv() => Control::ScaleUp,
                _ = ttou.recv() => Control::ScaleDown,
                _ = usr1.recv() => Control::Forward(Signal::SIGUSR1),
            };
            if controls.send(control).await.is_err() {
                return;
            }
        }
    }))
}

fn stop_or_kill(stopping: &mut bool) -> Control {
    if std::mem::replace(stopping, true) {
        Control::Kill
    } else {
        Control::Stop
    }
}

/// Where the notify socket goes: `$XDG_RUNTIME_DIR` when usable, else the temp dir.
fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
