//! The daemon's requests about apps that run: `ls`, `describe`, `env`, `scale`,
//! `signal`, `flush`.

use super::*;

impl Daemon {
    /// The one app `target` names; `verb` says who asks, for the error.
    fn one_target(&self, target: &str, verb: &str) -> Result<String, String> {
        let mut names = self.targets(target)?;
        match names.len() {
            1 => Ok(names.remove(0)),
            _ => Err(format!("{verb} takes one app name")),
        }
    }

    pub(super) fn describe(&mut self, name: &str) -> Response {
        let name = match self.one_target(name, "describe") {
            Ok(name) => name,
            Err(e) => return Response::error(e),
        };
        let Some(view) = self.views().into_iter().find(|a| a.name == name) else {
            return Response::error(format!("no app named `{name}`"));
        };
        let app = &self.apps[&name];
        Response::Described {
            app: Box::new(AppDetail {
                view,
                cwd: app.spec.cwd.as_ref().map(|c| c.display().to_string()),
                instances: app.instances,
                balance: app.spec.balance.to_string(),
                env: env_vars(app),
            }),
        }
    }

    pub(super) fn env(&mut self, name: &str) -> Response {
        match self.one_target(name, "env") {
            Ok(name) => Response::Env {
                vars: env_vars(&self.apps[&name]),
            },
            Err(e) => Response::error(e),
        }
    }

    pub(super) fn list(&mut self) -> Response {
        Response::Apps { apps: self.views() }
    }

    /// Every app as `ls` shows it, log files included.
    fn views(&mut self) -> Vec<AppView> {
        let pids: Vec<Pid> = self
            .apps
            .values()
            .flat_map(|a| a.rows.values().filter_map(|r| r.pid))
            .collect();
        let usage = self.usage(&pids);
        let now = Instant::now();
        let logs = self.home.logs();
        self.apps
            .values()
            .map(|a| {
                let mut view = a.view(&usage, now);
                view.logs = a.log_files(&logs);
                view
            })
            .collect()
    }

    /// CPU % since the last `ls` (or since the process started) and tree memory.
    pub(super) fn usage(&mut self, pids: &[Pid]) -> HashMap<Pid, (f64, u64)> {
        let memory = corral_core::os::memory::tree_rss(pids);
        let hz = 100.0; // USER_HZ, fixed at 100 on Linux for /proc
        let now = Instant::now();
        let mut out = HashMap::new();
        for &pid in pids {
            let Some(ticks) = corral_core::os::memory::cpu_ticks(pid) else {
                continue;
            };
            let cpu = match self.ticks.get(&pid) {
                Some(&(before, at)) if now > at => {
                    (ticks.saturating_sub(before)) as f64 / hz / (now - at).as_secs_f64() * 100.0
                }
                _ => 0.0,
            };
            self.ticks.insert(pid, (ticks, now));
            out.insert(pid, (cpu, memory.get(&pid).copied().unwrap_or(0)));
        }
        self.ticks.retain(|pid, _| pids.contains(pid));
        out
    }

    /// One `ScaleTo` control: the whole change or, refused, none of it.
    pub(super) fn scale(&mut self, name: &str, change: ScaleChange, force: bool) -> Response {
        let cpus = corral_core::spec::usable_cpus();
        self.each(name, |app| {
            let current = app.instances;
            let target = change.target(current).filter(|&n| n >= 1).ok_or_else(|| {
                let how = match change {
                    ScaleChange::To(n) => format!("to {n}"),
                    _ => format!("by {change} from {current}"),
                };
                format!(
                    "cannot scale {} {how}: at least 1 worker; use `corral stop`",
                    app.name
                )
            })?;
            corral_core::spec::check_worker_count(target, cpus, force)
                .map_err(|e| format!("cannot scale {}: {e}", app.name))?;
            send(app, Control::ScaleTo(target))?;
            app.instances = target;
            app.spec.instances = target;
            app.start.scaled = Some(target);
            Ok(format!("{}: {current} → {target} workers", app.name))
        })
    }

    pub(super) fn signal(&mut self, target: &str, signal: i32) -> Response {
        let signal = match nix::sys::signal::Signal::try_from(signal) {
            Ok(s) => s,
            Err(_) => return Response::error(format!("no signal has number {signal}")),
        };
        let (name, slot) = match target.split_once(':') {
            Some((name, slot)) => match slot.parse::<usize>() {
                Ok(slot) => (name, Some(slot)),
                Err(_) => {
                    return Response::error(format!("invalid worker `{target}`: expected APP:SLOT"))
                }
            },
            None => (target, None),
        };
        self.each(name, |app| match slot {
            None => send(app, Control::Forward(signal))
                .map(|()| format!("{} → {}", signal.as_str(), app.name)),
            Some(slot) => {
                let pid = app
                    .rows
                    .get(&slot)
                    .and_then(|r| r.pid)
                    .ok_or(format!("{} has no running worker {slot}", app.name))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
                    .map_err(|e| format!("cannot signal pid {pid}: {e}"))?;
                Ok(format!(
                    "{} → {}:{slot} (pid {pid})",
                    signal.as_str(),
                    app.name
                ))
            }
        })
    }
}

/// The app's declared environment as KEY=VALUE, secrets masked.
/// The app's declared environment, secrets masked, sorted by key.
pub(super) fn env_vars(app: &App) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = app
        .spec
        .env
        .iter()
        .map(|(k, v)| {
            let key = k.to_string_lossy().into_owned();
            let value = crate::secrets::shown_value(&key, &v.to_string_lossy()).into_owned();
            EnvVar { key, value }
        })
        .collect();
    vars.sort_by(|a, b| a.key.cmp(&b.key));
    vars
}

/// Empties an app's log files in place (writers append, so they go on at offset 0) and
/// removes the rotated ones.
pub(super) fn flush_logs(files: &[LogFileView], app: &str) -> Result<String, String> {
    let mut emptied = 0;
    for file in files
        .iter()
        .filter(|f| !crate::log_layout::is_discard(Path::new(&f.path)))
    {
        let path = Path::new(&file.path);
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = file.set_len(0);
            emptied += 1;
        }
        for n in 1.. {
            if std::fs::remove_file(format!("{}.{n}", path.display())).is_err() {
                break;
            }
        }
    }
    Ok(format!("flushed {emptied} log files of {app}"))
}
