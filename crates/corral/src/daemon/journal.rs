//! The daemon's own log, `daemon.log`: written by a thread (a full or slow disk never
//! stalls the daemon), rotated like app logs, and on a full disk lines are lost and
//! counted, never the daemon.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use corral_core::output::{LogLine, Stream};
use corral_core::writer::Notes;

use super::logfile::LogFiles;
use crate::home::Home;
use crate::line_format::{Json, LineFormat};
use crate::log_layout::LogLayout;
use corral_core::group::Report;

static JOURNAL: OnceLock<Notes> = OnceLock::new();
/// Set when daemon.log is JSON lines (`corral daemon --log-format json`).
static JSON: OnceLock<LineFormat> = OnceLock::new();

/// Starts writing `daemon.log` in `home`, as JSON lines when `json`. Until then (and in
/// the CLI) lines go to stderr.
pub fn open(home: &Home, json: bool) {
    if json {
        let _ = JSON.set(LineFormat::new(true, None, Some(Json::Corral)));
    }
    let path = home.daemon_log();
    let files = LogFiles::new(home.dir.clone(), "daemon".into()).with_layout(LogLayout {
        out: Some(path.clone()),
        err: None,
        merge: true,
        combined: None,
    });
    let sink = Sink {
        path,
        rotations: 0,
        files,
        prefix: if json { b"" } else { b"[corral] " },
    };
    let notes = Notes::spawn(sink, move |n| {
        let text = format!("{n} lines dropped while daemon.log could not keep up");
        match JSON.get() {
            Some(json) => json.event("", None, &text),
            None => text.into_bytes(),
        }
    });
    let _ = JOURNAL.set(notes);
}

/// Writes `[corral] text` to the daemon's log without waiting.
pub fn say(text: &str) {
    write(None, text);
}

/// Writes `[corral] app: line` for one of an app's reports; in JSON, the report's kind
/// and fields too.
pub fn report(app: &str, report: &Report, line: &str) {
    write(Some((app, report)), line);
}

fn write(about: Option<(&str, &Report)>, text: &str) {
    let Some(notes) = JOURNAL.get() else {
        return errln!("[corral] {text}");
    };
    let line = match (JSON.get(), about) {
        (Some(json), Some((app, report))) => json.event(app, Some(report), text),
        (Some(json), None) => json.event("", None, text),
        (None, Some((app, _))) => format!("{app}: {text}").into_bytes(),
        (None, None) => text.as_bytes().to_vec(),
    };
    notes.line(line);
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
    /// `[corral] ` before each text line; nothing before JSON lines.
    prefix: &'static [u8],
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let files = &mut self.files;
        let text = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut line = self.prefix.to_vec();
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
