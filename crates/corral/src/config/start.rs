//! What an app to start means, checked: its spec, reload triggers, line format and
//! where its output goes. The CLI checks a start with it before sending it, the daemon
//! before running it.

use std::ffi::OsString;
use std::path::PathBuf;

use corral_core::AppSpec;

use super::StartApp;
use crate::log_layout::LogLayout;

/// What an app to start means, checked.
pub struct Parsed {
    pub spec: AppSpec,
    pub triggers: crate::triggers::Triggers,
    pub lines: crate::line_format::LineFormat,
    pub layout: LogLayout,
}

/// Checks `app` into a spec, its triggers and where its output goes.
pub fn parse_start(app: &StartApp) -> Result<Parsed, String> {
    let cwd_path = PathBuf::from(&app.cwd);
    let mut options = app.options.clone();
    let resolve = |p: &Option<PathBuf>| p.as_ref().map(|p| cwd_path.join(p));
    let layout = LogLayout {
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

/// The environment every daemon app starts from; the rest is declared (`--env`).
pub fn base_env() -> Vec<(OsString, OsString)> {
    const KEEP: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];
    std::env::vars_os()
        .filter(|(k, _)| KEEP.iter().any(|keep| k == keep))
        .collect()
}
