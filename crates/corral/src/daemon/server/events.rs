//! What the engines tell the state task: each app's reports, and its end.

use super::*;

impl Daemon {
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
        self.reload_ended(name, &report);
        self.came_up(name, &report);
        if matches!(
            report,
            Report::Spawned { .. }
                | Report::Ready { .. }
                | Report::Exited { .. }
                | Report::Scaled { .. }
                | Report::PortBound { .. }
        ) {
            self.workers_changed(Some(name));
        }
    }

    /// Kills what still holds app `name`'s listeners now that its workers, its engine
    /// and the holder let them go: processes that left a worker's group, which would
    /// keep the port from the next start.
    fn kill_escaped(&self, name: &str, inodes: &[u64]) {
        let except: Vec<i32> = self.holder_pid.into_iter().collect();
        for escaped in corral_core::os::sockets::kill_holders(inodes, &except) {
            journal::say(&format!("{name}: {escaped}"));
        }
    }

    pub(super) fn finished(&mut self, name: &str, outcome: Result<Outcome, Refusal>) {
        // An engine that ended on its own while an update waited for it.
        self.hand_over_answer(name, Err(corral_core::handover::Refused::Stopping));
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        app.controls = None;
        app.running_triggers = None;
        app.listen.clear();
        app.status = match &outcome {
            Ok(Outcome::Stopped | Outcome::HandedOver) => Status::Stopped,
            Ok(Outcome::Failed) => Status::Errored,
            Err(e) => {
                journal::say(&format!("{name}: {e}"));
                Status::Errored
            }
        };
        let waiting = std::mem::take(&mut app.waiting);
        let ended = matches!(outcome, Ok(Outcome::Stopped | Outcome::Failed));
        let inodes = std::mem::take(&mut app.listener_inodes);
        self.reloads_ended(name);
        if let Some(coming) = self.coming_up.remove(name) {
            let refusal = Refusal::NotRunning(name.to_owned());
            self.joins.settle_all(coming.joins, Err(refusal));
        }
        // Before anyone hears it stopped: the holder's copies would keep its ports.
        self.forget_held(name);
        if ended {
            self.kill_escaped(name, &inodes);
        }
        self.after_stop(name, waiting);
        self.workers_changed(Some(name));
    }
}
