//! `corral logs`: the last lines of an app's log files, then what is appended to them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use corral_proto::control::{LogFileView, LogLineView, LogStream, Response};

use super::conn;
use crate::cli::LogsArgs;
use crate::home::Home;
use crate::log_layout;
use crate::model::Request;

/// One log file to read: whose it is and which stream.
struct Source {
    app: String,
    file: LogFileView,
}

impl Source {
    /// `[app:slot out] text`, or with `json`, a [`LogLineView`].
    fn format(&self, line: &str, json: bool) -> String {
        if !json {
            return format!("[{}] {line}", log_layout::label(&self.app, &self.file));
        }
        let view = LogLineView {
            app: self.app.clone(),
            slot: self.file.slot,
            stream: self.file.stream,
            line: line.to_owned(),
        };
        serde_json::to_string(&view).expect("a log line serializes")
    }
}

pub fn logs(home: &Home, args: &LogsArgs) -> anyhow::Result<()> {
    let sources: Vec<Source> = log_sources(home, args.app.as_deref())
        .into_iter()
        .filter(|s| !(args.err && s.file.stream == LogStream::Out))
        .filter(|s| !(args.out && s.file.stream == LogStream::Err))
        .filter(|s| std::path::Path::new(&s.file.path).exists())
        .collect();
    if sources.is_empty() {
        let which = args.app.as_deref().unwrap_or("any app");
        anyhow::bail!("no logs for {which} in {}", home.logs().display());
    }
    let out = std::io::stdout();
    let mut positions = Vec::new();
    for source in sources {
        let text = std::fs::read_to_string(&source.file.path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut lock = out.lock();
        for line in &lines[lines.len().saturating_sub(args.lines)..] {
            writeln!(lock, "{}", source.format(line, args.json))?;
        }
        positions.push((source, text.len() as u64));
    }
    if args.follow {
        follow(positions, args.json)?;
    }
    Ok(())
}

/// The log files to read: where the daemon says it writes them (custom and merged files
/// included), or the default files when no daemon runs.
fn log_sources(home: &Home, app: Option<&str>) -> Vec<Source> {
    if let Ok(Response::Apps { apps }) = conn::request(home, Request::List, false) {
        let chosen: Vec<Source> = apps
            .into_iter()
            .filter(|a| app.is_none_or(|n| a.name == n))
            .flat_map(|a| {
                let name = a.name;
                a.logs.into_iter().map(move |file| Source {
                    app: name.clone(),
                    file,
                })
            })
            .collect();
        if !chosen.is_empty() {
            return chosen;
        }
    }
    log_layout::default_files(&home.logs(), app)
        .into_iter()
        .map(|(app, file)| Source { app, file })
        .collect()
}

/// Prints what is appended to the files; a file that shrank was rotated and is read
/// again from its start.
fn follow(mut files: Vec<(Source, u64)>, json: bool) -> anyhow::Result<()> {
    loop {
        for (source, offset) in &mut files {
            let Ok(mut file) = std::fs::File::open(&source.file.path) else {
                continue;
            };
            let len = file.metadata()?.len();
            if len < *offset {
                *offset = 0;
            }
            if len == *offset {
                continue;
            }
            file.seek(SeekFrom::Start(*offset))?;
            let mut chunk = Vec::new();
            file.take(len - *offset).read_to_end(&mut chunk)?;
            // Only whole lines; a partial last line waits for its newline.
            let whole = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let mut lock = std::io::stdout().lock();
            for line in BufReader::new(&chunk[..whole]).lines() {
                writeln!(lock, "{}", source.format(&line?, json))?;
            }
            lock.flush()?;
            *offset += whole as u64;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
