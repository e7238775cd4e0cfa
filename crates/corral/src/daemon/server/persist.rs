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
    // A leftover (or planted) temp file goes first, so the new one is ours and private.
    let _ = std::fs::remove_file(&tmp);
    let written = open_private(&tmp).and_then(|mut file| {
        file.write_all(&serde_json::to_vec_pretty(value)?)?;
        file.sync_all()
    });
    // A full disk leaves the old file as it was, and no half-written one beside it.
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_23_a_write_that_fails_leaves_the_old_file_and_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("corral-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dump.json");
        write_atomically(&path, &vec![1]).unwrap();
        // A rename onto a non-empty directory fails, as a full disk fails the write.
        let blocked = dir.join("blocked.json");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomically(&blocked, &vec![2]).is_err());
        assert!(!dir.join("blocked.json.tmp").exists(), "no temp file left");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), "[\n  1\n]");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
