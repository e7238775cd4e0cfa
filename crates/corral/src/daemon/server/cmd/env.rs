//! `env`: an app's declared environment, secrets masked.

use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn env(&mut self, name: &str) -> Response {
        match self.one_target(name, "env") {
            Ok(name) => Response::Env {
                vars: env_vars(&self.apps[&name]),
            },
            Err(e) => e.into(),
        }
    }
}

/// The app's declared environment, secrets masked, sorted by key.
pub(in crate::daemon::server) fn env_vars(app: &App) -> Vec<EnvVar> {
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
