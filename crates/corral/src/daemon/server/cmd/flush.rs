//! `flush`: empty an app's log files in place and remove the rotated ones.

use crate::daemon::server::*;

/// Empties an app's log files in place (writers append, so they go on at offset 0) and
/// removes the rotated ones.
pub(in crate::daemon::server) fn flush_logs(
    files: &[LogFileView],
    app: &str,
) -> Result<String, Refusal> {
    let mut emptied = 0;
    for file in files
        .iter()
        .filter(|f| !crate::log_layout::is_discard(Path::new(&f.path)))
    {
        let path = Path::new(&file.path);
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = file.set_len(0);
            emptied += 1;
        }
        for n in 1.. {
            if std::fs::remove_file(format!("{}.{n}", path.display())).is_err() {
                break;
            }
        }
    }
    Ok(format!("flushed {emptied} log files of {app}"))
}
