//! What `corral start` arguments mean for the daemon, checked, and the reading of an
//! app's config file again (on reload and restart).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use corral_core::AppSpec;

use super::protocol::{ConfigRef, StartApp};
use super::state::App;

/// What an app to start means, checked.
pub struct Parsed {
    pub spec: AppSpec,
    pub triggers: crate::triggers::Triggers,
    pub lines: crate::line_format::LineFormat,
    pub layout: super::logfile::Layout,
}

/// Checks `app` into a spec, its triggers and where its output goes.
pub fn parse_start(app: &StartApp) -> Result<Parsed, String> {
    let cwd_path = PathBuf::from(&app.cwd);
    let mut options = app.options.clone();
    let resolve = |p: &Option<PathBuf>| p.as_ref().map(|p| cwd_path.join(p));
    let layout = super::logfile::Layout {
        out: resolve(&options.out_file),
        err: resolve(&options.error_file),
        merge: options.merge_logs,
        combined: resolve(&options.log_file),
    };
    let triggers = options.triggers(&cwd_path).map_err(|e| format!("{e:#}"))?;
    let lines = options.line_format();
    if let Some(count) = app.scaled {
        // Checked (and forced, if it had to be) when it was scaled.
        options.instances = corral_core::spec::Instances::Count(count);
        options.force = true;
    }
    options.cwd = Some(
        options
            .cwd
            .map_or(cwd_path.clone(), |dir| cwd_path.join(dir)),
    );
    let command = app.command.iter().map(OsString::from).collect();
    let spec = options
        .into_spec(command, base_env(), corral_core::spec::usable_cpus())
        .map_err(|e| format!("{e:#}"))?;
    Ok(Parsed {
        spec,
        triggers,
        lines,
        layout,
    })
}

/// Reading an app's config file again: built from the app on the state task, run on
/// the blocking pool (a `.js` config may take seconds), its result sent back.
pub struct Reread {
    pub name: String,
    config: ConfigRef,
    /// The app's runtime scale, which wins over the file's `instances`.
    scaled: Option<usize>,
}

impl Reread {
    /// The job for `app`, when it came from a config file.
    pub fn of(app: &App) -> Option<Reread> {
        Some(Reread {
            name: app.name.clone(),
            config: app.start.config.clone()?,
            scaled: app.start.scaled,
        })
    }

    /// The app of the same name, as the file has it now.
    pub fn run(&self) -> Result<(StartApp, Parsed), String> {
        let path = Path::new(&self.config.path);
        let loaded =
            crate::config::load(path, self.config.profile.as_deref()).map_err(|e| e.to_string())?;
        for mut start in loaded.start_apps(&self.config) {
            start.scaled = self.scaled;
            if let Ok(parsed) = parse_start(&start) {
                if parsed.spec.name == self.name {
                    return Ok((start, parsed));
                }
            }
        }
        Err(format!(
            "{} no longer has an app named `{}`",
            self.config.path, self.name
        ))
    }
}

/// The environment every daemon app starts from; the rest is declared (`--env`).
pub fn base_env() -> Vec<(OsString, OsString)> {
    const KEEP: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];
    std::env::vars_os()
        .filter(|(k, _)| KEEP.iter().any(|keep| k == keep))
        .collect()
}
