//! `kill`: stop every app; the daemon exits once they all have.

use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn kill(&mut self, reply: oneshot::Sender<Response>) {
        self.begin_kill();
        self.killing.get_or_insert_with(Vec::new).push(reply);
    }

    /// Stops every app; the daemon exits once they all have.
    pub(in crate::daemon::server) fn begin_kill(&mut self) {
        self.killing.get_or_insert_with(Vec::new);
        for app in self.apps.values_mut() {
            if app.controls.is_some() && app.status != Status::Stopping {
                let _ = send(app, Control::Stop);
                app.status = Status::Stopping;
            }
        }
    }
}
