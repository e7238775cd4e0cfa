//! `resurrect`: start every app of the dump that is not running.

use std::path::Path;

use crate::daemon::server::persist::{Dump, DUMP_VERSION};
use crate::daemon::server::*;

impl Daemon {
    /// The dump, or the one `save` replaced when the dump is missing or broken; a
    /// broken dump is moved aside (`.broken`), so that the next `save` starts clean and
    /// nothing is lost. The messages say what was done.
    fn read_dump_or_backup(&self) -> Result<(Dump, Vec<String>), Refusal> {
        let (dump, backup) = (self.home.dump(), self.home.dump_backup());
        let first = match read_dump(&dump) {
            Ok(read) => return Ok((read, Vec::new())),
            Err(refusal) => refusal,
        };
        let Ok(read) = read_dump(&backup) else {
            return Err(first);
        };
        let mut said = vec![format!("{first}; resurrected from {}", backup.display())];
        if matches!(first, Refusal::NotADump { .. }) {
            let mut aside = dump.clone().into_os_string();
            aside.push(".broken");
            match std::fs::rename(&dump, &aside) {
                Ok(()) => said.push(format!(
                    "moved the broken dump to {}",
                    Path::new(&aside).display()
                )),
                Err(e) => said.push(format!("cannot move {} aside: {e}", dump.display())),
            }
        }
        for line in &said {
            journal::say(line);
        }
        Ok((read, said))
    }

    pub(in crate::daemon::server) fn resurrect(&mut self) -> Response {
        let (dump, mut messages) = match self.read_dump_or_backup() {
            Ok(read) => read,
            Err(refusal) => return refusal.into(),
        };
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

fn read_dump(path: &Path) -> Result<Dump, Refusal> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Refusal::NoDump {
        path: shown(),
        source,
    })?;
    match serde_json::from_str::<Dump>(&text) {
        Ok(dump) if dump.version == DUMP_VERSION => Ok(dump),
        Ok(dump) => Err(Refusal::OldDump {
            path: shown(),
            version: dump.version,
            reads: DUMP_VERSION,
        }),
        Err(source) => Err(Refusal::NotADump {
            path: shown(),
            source,
        }),
    }
}
