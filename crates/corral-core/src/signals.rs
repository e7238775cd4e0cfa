//! The process signals a supervisor answers, turned into [`Control`]s.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::group::Control;
use crate::supervisor::Command;

/// Spawns a task that maps signals to controls: TERM/INT stop (a second one kills),
/// HUP/USR2 reload, TTIN/TTOU add/remove a worker, USR1 is passed on to every worker.
pub fn forward(controls: mpsc::Sender<Command>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut ttin = signal(SignalKind::from_raw(Signal::SIGTTIN as i32))?;
    let mut ttou = signal(SignalKind::from_raw(Signal::SIGTTOU as i32))?;
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
            if controls.send(control.into()).await.is_err() {
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

/// Where a supervisor's notify socket goes: `$XDG_RUNTIME_DIR` when usable, else the
/// temp dir.
pub fn runtime_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}
