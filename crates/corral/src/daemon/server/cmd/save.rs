//! `save`: the dump of every app, written so that a crash at any moment leaves the old
//! dump or the new one.

use crate::daemon::server::persist::{write_atomically, Dump, DUMP_VERSION};
use crate::daemon::server::*;

impl Daemon {
    /// Writes the app list so that a crash at any moment leaves the old dump or the new
    /// one, never a partial file: write a temp file, fsync, rename, fsync the directory.
    pub(in crate::daemon::server) fn save(&self) -> Response {
        let dump = Dump {
            version: DUMP_VERSION,
            apps: self.apps.values().map(|a| a.start.clone()).collect(),
        };
        // The dump this replaces stays beside it, for `resurrect` when this one breaks.
        if self.home.dump().is_file() {
            if let Err(e) = std::fs::copy(self.home.dump(), self.home.dump_backup()) {
                journal::say(&format!(
                    "cannot keep the last dump as {}: {e}",
                    self.home.dump_backup().display()
                ));
            }
        }
        match write_atomically(&self.home.dump(), &dump) {
            Ok(()) => Response::ok(format!(
                "saved {} apps to {}",
                dump.apps.len(),
                self.home.dump().display()
            )),
            Err(source) => Refusal::Save {
                path: self.home.dump().display().to_string(),
                source,
            }
            .into(),
        }
    }
}
