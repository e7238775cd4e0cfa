//! The dump `save` writes and `resurrect` reads, and how files are written safely.

use super::*;

/// The saved apps, each as it was started, runtime changes included.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Dump {
    pub(super) version: u32,
    pub(super) apps: Vec<StartApp>,
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

pub(in crate::daemon::server) fn write_atomically(
    path: &Path,
    value: &impl Serialize,
) -> std::io::Result<()> {
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
