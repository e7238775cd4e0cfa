//! What `corral start` arguments mean for the daemon, checked, and the reading of an
//! app's config file again (on reload and restart).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use corral_core::AppSpec;

use super::protocol::ConfigRef;
use super::state::App;
use crate::cli::{Cli, Command};

/// What `corral start` arguments mean, checked.
pub struct Parsed {
    pub spec: AppSpec,
    pub triggers: crate::triggers::Triggers,
    pub time: bool,
    pub layout: super::logfile::Layout,
}

pub fn parse_start(argv: &[String], cwd: &str) -> Result<Parsed, String> {
    let mut full = vec!["corral".to_owned(), "start".to_owned()];
    full.extend(argv.iter().cloned());
    let args = match Cli::try_parse_from(&full).map(|c| c.command) {
        Ok(Command::Start(args)) => args,
        Ok(_) => return Err("not a start command".into()),
        Err(e) => return Err(e.render().to_string().trim().to_owned()),
    };
    let cwd_path = PathBuf::from(cwd);
    let command = args.command(&cwd_path);
    let mut app_options = args.app;
    let time = app_options.time;
    let resolve = |p: &Option<PathBuf>| p.as_ref().map(|p| cwd_path.join(p));
    let layout = super::logfile::Layout {
        out: resolve(&app_options.out_file),
        err: resolve(&app_options.error_file),
        merge: app_options.merge_logs,
    };
    let triggers = app_options
        .triggers(&cwd_path)
        .map_err(|e| format!("{e:#}"))?;
    app_options.cwd.get_or_insert(cwd_path);
    let spec = app_options
        .into_spec(command, base_env(), corral_core::spec::usable_cpus())
        .map_err(|e| format!("{e:#}"))?;
    Ok(Parsed {
        spec,
        triggers,
        time,
        layout,
    })
}

/// Reading an app's config file again: built from the app on the state task, run on
/// the blocking pool (a `.js` config may take seconds), its result sent back.
pub struct Reread {
    pub name: String,
    config: ConfigRef,
    cwd: String,
}

impl Reread {
    /// The job for `app`, when it came from a config file.
    pub fn of(app: &App) -> Option<Reread> {
        Some(Reread {
            name: app.name.clone(),
            config: app.config.clone()?,
            cwd: app.cwd.clone(),
        })
    }

    /// The app of the same name, as the file has it now.
    pub fn run(&self) -> Result<(Vec<String>, Parsed), String> {
        let path = Path::new(&self.config.path);
        let loaded =
            crate::config::load(path, self.config.profile.as_deref()).map_err(|e| e.to_string())?;
        for argv in loaded.apps {
            if let Ok(parsed) = parse_start(&argv, &self.cwd) {
                if parsed.spec.name == self.name {
                    return Ok((argv, parsed));
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
