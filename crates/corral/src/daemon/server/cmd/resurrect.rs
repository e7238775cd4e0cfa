//! `resurrect`: start every app of the dump that is not running.

use crate::daemon::server::persist::{Dump, DUMP_VERSION};
use crate::daemon::server::*;

impl Daemon {
    pub(in crate::daemon::server) fn resurrect(&mut self) -> Response {
        let text = match std::fs::read_to_string(self.home.dump()) {
            Ok(text) => text,
            Err(e) => {
                return Response::error(format!(
                    "nothing to resurrect: {}: {e} (run `corral save` first)",
                    self.home.dump().display()
                ))
            }
        };
        let dump = match serde_json::from_str::<Dump>(&text) {
            Ok(dump) if dump.version == DUMP_VERSION => dump,
            Ok(dump) => {
                return Response::error(format!(
                    "{} was written by an older corral (dump v{}, this one reads v{DUMP_VERSION}): start the apps again and `corral save`",
                    self.home.dump().display(),
                    dump.version
                ))
            }
            Err(e) => {
                return Response::error(format!(
                    "{} is not a corral dump: {e}",
                    self.home.dump().display()
                ))
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
