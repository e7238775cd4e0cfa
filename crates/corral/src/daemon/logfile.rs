//! Worker output to files per app and slot, rotated by size with rename-and-reopen.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use corral_core::output::LogLine;

use crate::log_layout::{is_discard, LogLayout};

/// Rotate a file once it is this big...
pub const MAX_SIZE: u64 = 10 * 1024 * 1024;
/// ...and keep this many old ones (`.1` newest).
pub const KEEP: usize = 5;

struct Open {
    file: File,
    size: u64,
    path: PathBuf,
}

/// The open log files of one app.
pub struct LogFiles {
    dir: PathBuf,
    app: String,
    max_size: u64,
    keep: usize,
    format: crate::line_format::LineFormat,
    layout: LogLayout,
    /// By path: with merged logs several slots write to one file.
    open: HashMap<PathBuf, Open>,
    /// Lines that could not be written, by path, and the last error: said in the file
    /// once writing works again (a disk that filled up and was freed).
    lost: HashMap<PathBuf, (u64, String)>,
    rotations: u64,
    /// `reloadLogs`: when this moves past `seen`, every file is reopened (by path, so an
    /// external logrotate's new file is written from then on).
    reopen: Option<(std::sync::Arc<std::sync::atomic::AtomicU64>, u64)>,
}

impl LogFiles {
    /// With the default limits, or `CORRAL_LOG_MAX_BYTES` / `CORRAL_LOG_KEEP` from the
    /// daemon's environment.
    pub fn new(dir: PathBuf, app: String) -> Self {
        let env = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let max_size = env("CORRAL_LOG_MAX_BYTES", MAX_SIZE);
        let keep = env("CORRAL_LOG_KEEP", KEEP as u64) as usize;
        LogFiles::with_limits(dir, app, max_size, keep)
    }

    pub fn with_limits(dir: PathBuf, app: String, max_size: u64, keep: usize) -> Self {
        LogFiles {
            dir,
            app,
            max_size,
            keep: keep.max(1),
            format: Default::default(),
            layout: LogLayout::default(),
            open: HashMap::new(),
            lost: HashMap::new(),
            rotations: 0,
            reopen: None,
        }
    }

    /// Reopens every file when `generation` changes.
    pub fn reopening_on(
        mut self,
        generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let seen = generation.load(std::sync::atomic::Ordering::SeqCst);
        self.reopen = Some((generation, seen));
        self
    }

    pub fn with_layout(mut self, layout: LogLayout) -> Self {
        self.layout = layout;
        self
    }

    /// How each line is written (time stamps, JSON).
    pub fn with_format(mut self, format: crate::line_format::LineFormat) -> Self {
        self.format = format;
        self
    }

    /// Appends one line (whole, in one write); rotates first when the file is full.
    /// A line that cannot be written (a full disk) is lost and counted; the count is
    /// written before the next line that can be.
    pub fn write(&mut self, line: &LogLine) -> io::Result<()> {
        let key = self
            .layout
            .path(&self.dir, &self.app, line.slot, line.stream);
        let combined = self.layout.combined.clone().filter(|p| !is_discard(p));
        let first = self.write_to(key, line);
        match combined {
            Some(path) => first.and(self.write_to(path, line)),
            None => first,
        }
    }

    fn write_to(&mut self, key: PathBuf, line: &LogLine) -> io::Result<()> {
        if is_discard(&key) {
            return Ok(());
        }
        if let Some((generation, seen)) = &mut self.reopen {
            let now = generation.load(std::sync::atomic::Ordering::SeqCst);
            if now != *seen {
                *seen = now;
                self.open.clear();
            }
        }
        let result = self.append(&key, line);
        if let Err(e) = &result {
            let lost = self.lost.entry(key).or_insert((0, String::new()));
            lost.0 += 1;
            lost.1 = e.to_string();
        }
        result
    }

    fn append(&mut self, key: &Path, line: &LogLine) -> io::Result<()> {
        if !self.open.contains_key(key) {
            if let Some(dir) = key.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let opened = open(key, key.starts_with(&self.dir))?;
            self.open.insert(key.to_owned(), opened);
        }
        if self.open[key].size >= self.max_size {
            self.rotate(key.to_owned())?;
        }
        let mut bytes = Vec::with_capacity(line.text.len() + 32);
        if let Some((count, error)) = self.lost.get(key) {
            let note = format!(
                "[corral] {count} lines lost while this file could not be written: {error}\n"
            );
            bytes.extend_from_slice(note.as_bytes());
        }
        self.format.write(&mut bytes, &self.app, line);
        bytes.push(b'\n');
        let out = self.open.get_mut(key).expect("opened above");
        out.file.write_all(&bytes)?;
        out.size += bytes.len() as u64;
        self.lost.remove(key);
        Ok(())
    }

    /// How many times a file was rotated so far.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// The open file `path` is written through, if any.
    pub fn file(&self, path: &Path) -> Option<&File> {
        self.open.get(path).map(|o| &o.file)
    }

    /// `x.log` → `x.log.1` → ... → `x.log.KEEP` (dropped), then a fresh `x.log`. Lines
    /// are never copied, so none is lost or duplicated.
    fn rotate(&mut self, key: PathBuf) -> io::Result<()> {
        let path = self.open[&key].path.clone();
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&path, numbered(1))?;
        let fresh = open(&path, path.starts_with(&self.dir))?;
        self.open.insert(key, fresh);
        self.rotations += 1;
        Ok(())
    }
}

/// Opens for appending. In corral's own home (`private`), a symlink planted where a
/// log goes is refused rather than followed.
fn open(path: &Path, private: bool) -> io::Result<Open> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    if private {
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path)?;
    let size = file.metadata()?.len();
    Ok(Open {
        file,
        size,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::output::Stream;

    fn line(slot: usize, text: &str) -> LogLine {
        LogLine {
            slot,
            pid: 1,
            stream: Stream::Stdout,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn issue_10_a_combined_file_gets_both_streams_and_null_discards() {
        let dir = std::env::temp_dir().join(format!("corral-combined-{}", std::process::id()));
        let combined = dir.join("all.log");
        let layout = LogLayout {
            out: Some(PathBuf::from("/x/NULL")),
            combined: Some(combined.clone()),
            ..LogLayout::default()
        };
        let mut files = LogFiles::new(dir.clone(), "app".into()).with_layout(layout);
        files.write(&line(0, "to out")).unwrap();
        let err = LogLine {
            stream: Stream::Stderr,
            ..line(1, "to err")
        };
        files.write(&err).unwrap();
        assert_eq!(
            std::fs::read_to_string(&combined).unwrap(),
            "to out\nto err\n"
        );
        assert!(!Path::new("/x/NULL").exists());
        assert!(dir.join("app-1-err.log").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn layouts_name_files_per_slot_or_merged() {
        let dir = Path::new("/h/logs");
        let default = LogLayout::default();
        assert_eq!(
            default.path(dir, "api", 1, Stream::Stderr),
            Path::new("/h/logs/api-1-err.log")
        );
        let merged = LogLayout {
            merge: true,
            ..LogLayout::default()
        };
        assert_eq!(
            merged.path(dir, "api", 1, Stream::Stdout),
            Path::new("/h/logs/api-out.log")
        );
        let custom = LogLayout {
            out: Some("/var/log/api.log".into()),
            ..LogLayout::default()
        };
        assert_eq!(
            custom.path(dir, "api", 2, Stream::Stdout),
            Path::new("/var/log/api-2.log")
        );
        assert_eq!(
            custom.path(dir, "api", 2, Stream::Stderr),
            Path::new("/h/logs/api-2-err.log")
        );
        let both = LogLayout {
            out: Some("/var/log/api.log".into()),
            merge: true,
            ..LogLayout::default()
        };
        assert_eq!(
            both.path(dir, "api", 2, Stream::Stdout),
            Path::new("/var/log/api.log")
        );
    }

    #[test]
    fn rotation_keeps_every_line_exactly_once_and_bounds_the_files() {
        let dir = std::env::temp_dir().join(format!("corral-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut logs = LogFiles::with_limits(dir.clone(), "app".into(), 1000, 3);
        for i in 0..100 {
            logs.write(&line(0, &format!("line {i:04} {}", "x".repeat(40))))
                .unwrap();
        }
        let base = LogLayout::default().path(&dir, "app", 0, Stream::Stdout);
        let mut all = String::new();
        for n in (1..=3).rev() {
            all += &std::fs::read_to_string(format!("{}.{n}", base.display())).unwrap_or_default();
        }
        all += &std::fs::read_to_string(&base).unwrap();
        let kept: Vec<&str> = all.lines().collect();
        assert!(!std::path::Path::new(&format!("{}.4", base.display())).exists());
        // The kept lines are the newest ones, consecutive, none doubled.
        let first: usize = kept[0][5..9].parse().unwrap();
        for (i, l) in kept.iter().enumerate() {
            assert!(l.starts_with(&format!("line {:04}", first + i)), "{l}");
        }
        assert_eq!(first + kept.len(), 100);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
