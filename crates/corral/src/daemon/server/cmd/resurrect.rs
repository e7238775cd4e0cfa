//! `resurrect`: start every app of the dump that is not running.

use crate::daemon::server::persist::{Dump, DUMP_VERSION};
use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn resurrect(&mut self) -> Response {
        let text = match std::fs::read_to_string(self.home.dump()) {
            Ok(text) => text,
            Err(source) => {
                return Refusal::NoDump {
                    path: self.home.dump().display().to_string(),
                    source,
                }
                .into()
            }
        };
        let dump = match serde_json::from_str::<Dump>(&text) {
            Ok(dump) if dump.version == DUMP_VERSION => dump,
            Ok(dump) => {
                return Refusal::OldDump {
                    path: self.home.dump().display().to_string(),
                    version: dump.version,
                    reads: DUMP_VERSION,
                }
                .into()
            }
            Err(source) => {
                return Refusal::NotADump {
                    path: self.home.dump().display().to_string(),
                    source,
                }
                .into()
            }
        };
        let mut messages = Vec::new();
        for saved in dump.apps {
            let name = match parse_start(&saved) {
                Ok(parsed) => parsed.spec.name,
                Err(e) => {
                    messages.push(format!("{}: {e}", saved.command.join(" ")));
                    continue;
                }
            };
            if self.apps.contains_key(&name) {
                messages.push(format!("{name} already running"));
                continue;
            }
            match self.start(saved).outcome() {
                Ok(message) => messages.push(message),
                Err(message) => messages.push(format!("{name}: {message}")),
            }
        }
        Response::ok(messages.join("\n"))
    }
}
