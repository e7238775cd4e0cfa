//! The daemon's own log, `daemon.log`: written by a thread (a full or slow disk never
//! stalls the daemon), rotated like app logs, and on a full disk lines are lost and
//! counted, never the daemon.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use corral_core::output::{LogLine, Stream};
use corral_core::writer::Notes;

use super::logfile::{Layout, LogFiles};
use super::Home;
use crate::render;

static JOURNAL: OnceLock<Notes> = OnceLock::new();

/// Starts writing `daemon.log` in `home`. Until then (and in the CLI) lines go to stderr.
pub fn open(home: &Home) {
    let path = home.daemon_log();
    let files = LogFiles::new(home.dir.clone(), "daemon".into()).with_layout(Layout {
        out: Some(path.clone()),
        err: None,
        merge: true,
        combined: None,
    });
    let sink = Sink {
        path,
        rotations: 0,
        files,
    };
    let notes = Notes::spawn(sink, |n| {
        render::note(&format!(
            "{n} lines dropped while daemon.log could not keep up"
        ))
    });
    let _ = JOURNAL.set(notes);
}

/// Writes `[corral] text` to the daemon's log without waiting.
pub fn say(text: &str) {
    match JOURNAL.get() {
        Some(notes) => notes.line(text.as_bytes().to_vec()),
        None => errln!("[corral] {text}"),
    }
}

/// Waits (bounded) until every line said so far is written.
pub async fn flush() {
    if let Some(notes) = JOURNAL.get() {
        notes.flush(std::time::Duration::from_secs(2)).await;
    }
}

/// `daemon.log` through [`LogFiles`]: rotation, counted losses. After each rotation the
/// new file also becomes the daemon's stdout and stderr, so that anything written there
/// directly (a panic message) lands in the current file.
struct Sink {
    path: PathBuf,
    files: LogFiles,
    rotations: u64,
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let files = &mut self.files;
        let text = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut line = b"[corral] ".to_vec();
        line.extend_from_slice(text);
        files.write(&LogLine {
            slot: 0,
            pid: 0,
            stream: Stream::Stdout,
            text: line,
        })?;
        if files.rotations() != self.rotations {
            self.rotations = files.rotations();
            if let Some(file) = files.file(&self.path) {
                // SAFETY: dup2 onto the standard fds of this process, from a file we hold.
                unsafe {
                    libc::dup2(file.as_raw_fd(), 1);
                    libc::dup2(file.as_raw_fd(), 2);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
