//! `save` and `resurrect`: the dump of every app, written so that a crash at any moment
//! leaves the old dump or the new one.

use super::*;

impl Daemon {
    /// Writes the app list so that a crash at any moment leaves the old dump or the new
    /// one, never a partial file: write a temp file, fsync, rename, fsync the directory.
    pub(super) fn save(&self) -> Response {
        let dump = Dump {
            version: DUMP_VERSION,
            apps: self.apps.values().map(|a| a.start.clone()).collect(),
        };
        match write_atomically(&self.home.dump(), &dump) {
            Ok(()) => Response::ok(format!(
                "saved {} apps to {}",
                dump.apps.len(),
                self.home.dump().display()
            )),
            Err(e) => Response::error(format!(
                "cannot save to {}: {e}",
                self.home.dump().display()
            )),
        }
    }

    pub(super) fn resurrect(&mut self) -> Response {
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

/// The saved apps, each as it was started, runtime changes included.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Dump {
    version: u32,
    apps: Vec<StartApp>,
}

/// Dumps older than this one stored command lines; they can't be read any more.
pub(super) const DUMP_VERSION: u32 = 2;

/// Opens (creating, mode 0600) a file in the home for writing, never through a symlink.
pub(super) fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

pub(super) fn write_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        // A leftover (or planted) temp file goes first, so the new one is ours and private.
        let _ = std::fs::remove_file(&tmp);
        let mut file = open_private(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(value)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
