//! `signal`: to every worker of an app (its process groups) or to one worker's pid.

use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn signal(&mut self, target: &str, signal: i32) -> Response {
        let signal = match nix::sys::signal::Signal::try_from(signal) {
            Ok(s) => s,
            Err(_) => return Refusal::NoSignal(signal).into(),
        };
        let (name, slot) = match target.split_once(':') {
            Some((name, slot)) => match slot.parse::<usize>() {
                Ok(slot) => (name, Some(slot)),
                Err(_) => return Refusal::BadWorker(target.to_owned()).into(),
            },
            None => (target, None),
        };
        self.each(name, |app| match slot {
            None => send(app, Control::Forward(signal))
                .map(|()| format!("{} → {}", signal.as_str(), app.name)),
            Some(slot) => {
                let pid =
                    app.board
                        .row(slot)
                        .and_then(|r| r.pid)
                        .ok_or_else(|| Refusal::NoWorker {
                            app: app.name.clone(),
                            slot,
                        })?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
                    .map_err(|source| Refusal::Signal { pid, source })?;
                Ok(format!(
                    "{} → {}:{slot} (pid {pid})",
                    signal.as_str(),
                    app.name
                ))
            }
        })
    }
}
