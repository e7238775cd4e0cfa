//! Where an app's output is written and how each file is named and labelled: the one
//! place that knows the log-file naming rules, for the daemon's writers, `ls`, `logs`,
//! `flush`, `describe` and `monit`.

use std::path::{Path, PathBuf};

use corral_core::output::Stream;
use corral_proto::control::{LogFileView, LogStream};

fn kind(stream: Stream) -> &'static str {
    log_stream(stream).as_str()
}

fn log_stream(stream: Stream) -> LogStream {
    match stream {
        Stream::Stdout => LogStream::Out,
        Stream::Stderr => LogStream::Err,
    }
}

/// Where an app's output goes: per slot in `$CORRAL_HOME/logs` by default, or the files
/// the user named (`--out-file`, `--error-file`; per slot as `name-SLOT.ext` unless
/// `--merge-logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLayout {
    pub out: Option<PathBuf>,
    pub err: Option<PathBuf>,
    pub merge: bool,
    /// PM2's `log_file`: every line of both streams, also written here.
    pub combined: Option<PathBuf>,
}

impl LogLayout {
    pub fn path(&self, dir: &Path, app: &str, slot: usize, stream: Stream) -> PathBuf {
        let custom = match stream {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        };
        let kind = kind(stream);
        if let Some(path) = custom.as_deref().filter(|p| is_discard(p)) {
            return path.to_owned();
        }
        match (custom, self.merge) {
            (Some(path), true) => path.clone(),
            (Some(path), false) => per_slot(path, slot),
            (None, true) => dir.join(format!("{app}-{kind}.log")),
            (None, false) => dir.join(format!("{app}-{slot}-{kind}.log")),
        }
    }

    /// Every file that `slots` slots of `app` write, each once (merged files are shared).
    pub fn files(&self, dir: &Path, app: &str, slots: usize) -> Vec<LogFileView> {
        let mut files: Vec<LogFileView> = Vec::new();
        for slot in 0..slots {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let path = self.path(dir, app, slot, stream).display().to_string();
                if !files.iter().any(|f| f.path == path) {
                    files.push(LogFileView {
                        path,
                        slot: (!self.merge).then_some(slot),
                        stream: log_stream(stream),
                    });
                }
            }
        }
        files
    }
}

/// PM2's way to throw a stream away: `out_file: "NULL"` or `"/dev/null"` (never opened,
/// so never rotated).
pub fn is_discard(path: &Path) -> bool {
    path == Path::new("/dev/null") || path.file_name().is_some_and(|n| n == "NULL")
}

/// Every log file of `app` (all slots, both streams), current ones only.
fn files_of(dir: &Path, app: Option<&str>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            app.is_none_or(|a| name.strip_prefix(a).is_some_and(|r| r.starts_with('-')))
        })
        .collect();
    files.sort();
    files
}

/// The files of the default layout in `dir` (of `app`, or of every app), typed from
/// their names; for when no daemon runs to say where it writes.
pub fn default_files(dir: &Path, app: Option<&str>) -> Vec<(String, LogFileView)> {
    files_of(dir, app)
        .iter()
        .filter_map(|path| parse_default_name(path))
        .collect()
}

/// `app-0-out.log` → (`app`, slot 0, out); `app-out.log` (merged) → (`app`, no slot, out).
fn parse_default_name(path: &Path) -> Option<(String, LogFileView)> {
    let stem = path.file_stem()?.to_str()?;
    let (rest, stream) = if let Some(rest) = stem.strip_suffix("-out") {
        (rest, LogStream::Out)
    } else {
        (stem.strip_suffix("-err")?, LogStream::Err)
    };
    let (app, slot) = match rest.rsplit_once('-') {
        Some((app, slot)) if slot.parse::<usize>().is_ok() => (app, slot.parse().ok()),
        _ => (rest, None),
    };
    let file = LogFileView {
        path: path.display().to_string(),
        slot,
        stream,
    };
    Some((app.to_owned(), file))
}

/// How `logs` labels a file's lines: `app:slot out`, or `app out` for a merged file.
pub fn label(app: &str, file: &LogFileView) -> String {
    match file.slot {
        Some(slot) => format!("{app}:{slot} {}", file.stream.as_str()),
        None => format!("{app} {}", file.stream.as_str()),
    }
}

/// `dir/name.ext` as one slot's file, `dir/name-SLOT.ext` (log files, pid files).
pub fn per_slot(path: &Path, slot: usize) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{slot}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{slot}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_parse_back_into_app_slot_and_stream() {
        let (app, file) = parse_default_name(Path::new("/l/my-api-3-err.log")).unwrap();
        assert_eq!(
            (app.as_str(), file.slot, file.stream),
            ("my-api", Some(3), LogStream::Err)
        );
        assert_eq!(label(&app, &file), "my-api:3 err");
        let (app, file) = parse_default_name(Path::new("/l/web-out.log")).unwrap();
        assert_eq!((app.as_str(), file.slot), ("web", None));
        assert_eq!(label(&app, &file), "web out");
        assert!(parse_default_name(Path::new("/l/daemon.log")).is_none());
    }

    #[test]
    fn a_layouts_files_are_listed_once_per_path() {
        let dir = Path::new("/l");
        let merged = LogLayout {
            merge: true,
            ..LogLayout::default()
        };
        assert_eq!(merged.files(dir, "a", 3).len(), 2);
        let per_slot = LogLayout::default().files(dir, "a", 3);
        assert_eq!(per_slot.len(), 6);
        assert_eq!(per_slot[1].path, "/l/a-0-err.log");
    }
}
