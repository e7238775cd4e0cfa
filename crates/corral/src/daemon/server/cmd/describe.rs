//! `describe`: one app in detail.

use super::env::env_vars;
use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn describe(&mut self, name: &str) -> Response {
        let name = match self.one_target(name, "describe") {
            Ok(name) => name,
            Err(e) => return e.into(),
        };
        let Some(view) = self.views().into_iter().find(|a| a.name == name) else {
            return self.no_app(&name).into();
        };
        let app = &self.apps[&name];
        Response::Described {
            app: Box::new(AppDetail {
                view,
                cwd: app.spec.cwd.as_ref().map(|c| c.display().to_string()),
                instances: app.board.instances(),
                balance: app.spec.balance.to_string(),
                env: env_vars(app),
            }),
        }
    }
}
