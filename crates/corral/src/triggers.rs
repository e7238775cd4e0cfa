//! What reloads an app besides a signal or a command: file changes (`--watch`) and a
//! schedule (`--cron-restart`). Both ask for the same rolling reload.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use anyhow::Context;
use corral_core::group::Control;
use corral_core::supervisor::Command;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Changes closer together than this are one reload.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Directories never watched: they change without the app changing.
const ALWAYS_IGNORED: &[&str] = &["node_modules", ".git", "target", "logs", "__pycache__"];

/// The validated `--watch`, `--ignore-watch` and `--cron-restart` of an app.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    pub watch: Vec<PathBuf>,
    pub ignore: Vec<String>,
    pub cron: Option<(String, croner::Cron)>,
}

impl Triggers {
    /// Paths are taken relative to `cwd`; the cron expression is checked here.
    pub fn new(
        watch: &[PathBuf],
        ignore: &[String],
        cron: Option<&str>,
        cwd: &Path,
    ) -> anyhow::Result<Triggers> {
        let cron = match cron {
            Some(expr) => {
                let parsed: croner::Cron = expr.parse().map_err(|e| {
                    anyhow::anyhow!("invalid --cron-restart `{expr}`: {e} (write a cron expression like \"0 3 * * *\")")
                })?;
                Some((expr.to_owned(), parsed))
            }
            None => None,
        };
        Ok(Triggers {
            watch: watch.iter().map(|p| cwd.join(p)).collect(),
            ignore: ignore.to_vec(),
            cron,
        })
    }
}

/// The running triggers of an app; dropping them stops them.
pub struct Running {
    _watcher: Option<notify::RecommendedWatcher>,
    cron: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.cron {
            task.abort();
        }
    }
}

/// Starts watching and scheduling; `say` reports what triggered a reload.
pub fn start(
    triggers: &Triggers,
    controls: mpsc::Sender<Command>,
    say: impl Fn(String) + Send + Clone + 'static,
) -> anyhow::Result<Running> {
    let watcher = if triggers.watch.is_empty() {
        None
    } else {
        Some(watch(triggers, controls.clone(), say.clone())?)
    };
    let cron = triggers.cron.clone().map(|(expr, cron)| {
        tokio::spawn(async move {
            loop {
                let now = chrono::Local::now();
                let Ok(next) = cron.find_next_occurrence(&now, false) else {
                    return;
                };
                let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
                say(format!("scheduled reload ({expr})"));
                if controls.send(Control::Reload.into()).await.is_err() {
                    return;
                }
            }
        })
    });
    Ok(Running {
        _watcher: watcher,
        cron,
    })
}

fn watch(
    triggers: &Triggers,
    controls: mpsc::Sender<Command>,
    say: impl Fn(String) + Send + 'static,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, rx) = std_mpsc::channel::<PathBuf>();
    let ignore = triggers.ignore.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in event.paths {
            if !ignored(&path, &ignore) {
                let _ = tx.send(path);
            }
        }
    })
    .context("cannot watch files")?;
    for dir in &triggers.watch {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    std::thread::spawn(move || {
        while let Ok(first) = rx.recv() {
            // Wait for the burst of changes (an editor save, a deploy) to settle.
            while rx.recv_timeout(DEBOUNCE).is_ok() {}
            say(format!("{} changed: reloading", first.display()));
            if controls.blocking_send(Control::Reload.into()).is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

/// Whether a changed path is in an ignored directory or matches an ignore pattern
/// (a path component, or a `*.ext` suffix).
fn ignored(path: &Path, ignore: &[String]) -> bool {
    let component = |name: &str| path.components().any(|c| c.as_os_str() == name);
    if ALWAYS_IGNORED.iter().any(|d| component(d)) {
        return true;
    }
    ignore
        .iter()
        .any(|pattern| match pattern.strip_prefix('*') {
            Some(suffix) => path.to_string_lossy().ends_with(suffix),
            None => component(pattern) || path.ends_with(pattern),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_noise_and_patterns() {
        let ignore = vec!["tmp".to_string(), "*.log".to_string()];
        assert!(ignored(Path::new("/app/node_modules/x/index.js"), &ignore));
        assert!(ignored(Path::new("/app/tmp/a"), &ignore));
        assert!(ignored(Path::new("/app/out.log"), &ignore));
        assert!(!ignored(Path::new("/app/src/server.js"), &ignore));
    }

    #[test]
    fn bad_cron_expressions_are_refused() {
        let err = Triggers::new(&[], &[], Some("every day"), Path::new("/")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid --cron-restart `every day`"),
            "{err}"
        );
        assert!(Triggers::new(&[], &[], Some("0 3 * * *"), Path::new("/")).is_ok());
    }
}
