//! `ls`: every app as a typed view, with CPU and memory of its workers.

use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn list(&mut self) -> Response {
        Response::Apps { apps: self.views() }
    }

    /// `ls` with each app's start request: what PM2's views show.
    pub(in crate::daemon::server) fn records(&mut self) -> Response {
        let views = self.views();
        let apps = views
            .into_iter()
            .zip(self.apps.values())
            .map(|(view, app)| AppRecord {
                view,
                start: serde_json::to_value(&app.start).expect("a start request serializes"),
                created_at_ms: app
                    .created
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                instances: app.board.instances(),
            })
            .collect();
        Response::Records { apps }
    }

    /// Every app as `ls` shows it, log files included.
    pub(in crate::daemon::server) fn views(&mut self) -> Vec<AppView> {
        self.number_slots();
        let pids: Vec<Pid> = self.apps.values().flat_map(|a| a.board.pids()).collect();
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

    /// Gives every listed slot without one its `pm_id`, app by app in id order (so the
    /// workers of one start get consecutive numbers).
    pub(in crate::daemon::server) fn number_slots(&mut self) {
        let mut apps: Vec<&mut Box<App>> = self.apps.values_mut().collect();
        apps.sort_by_key(|a| a.id);
        for app in apps {
            let slots = app.board.instances().max(app.board.rows().count());
            while app.pm_ids.len() < slots {
                app.pm_ids.push(self.next_pm_id);
                self.next_pm_id += 1;
            }
        }
    }

    /// CPU % since the last `ls` (or since the process started) and tree memory.
    fn usage(&mut self, pids: &[Pid]) -> HashMap<Pid, (f64, u64)> {
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
}
