//! Commands on a config file's apps: `start|reload|restart|stop|delete FILE`,
//! `startOrReload` and friends.

use std::path::Path;

use anyhow::anyhow;
use corral_proto::control::{ApplyMode, ConfigRef, Response};

use super::conn;
use crate::cli::Target;
use crate::exit::Failure;
use crate::home::Home;
use crate::model::{Request, StartApp};

/// A config file's apps as start requests with their names, warnings said; every app is
/// checked before any is acted on.
fn file_apps(path: &Path, profile: Option<String>) -> Result<Vec<(StartApp, String)>, Failure> {
    let loaded =
        crate::config::load(path, profile.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
    for warning in &loaded.warnings {
        errln!("warning: {warning}");
    }
    let config = ConfigRef {
        path: std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string(),
        profile,
    };
    loaded
        .start_apps(&config)
        .into_iter()
        .map(|app| {
            let parsed = crate::config::start::parse_start(&app)
                .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
            Ok((app, parsed.spec.name))
        })
        .collect()
}

/// Every app of a config file: started if not running, else given the file's settings
/// and reloaded (or restarted).
pub fn apply_file(
    home: &Home,
    path: &Path,
    profile: Option<String>,
    mode: ApplyMode,
) -> Result<(), Failure> {
    let mut failed = 0;
    for (app, _) in file_apps(path, profile)? {
        let request = Request::Apply {
            app: Box::new(app),
            mode,
        };
        let response = conn::request(home, request, true).map_err(Failure::Runtime)?;
        if !say(response) {
            failed += 1;
        }
    }
    if failed == 0 {
        return Ok(());
    }
    Err(Failure::Runtime(anyhow!(
        "{failed} of the apps in {} did not start or reload (see above)",
        path.display()
    )))
}

/// What `stop|restart|reload|delete FILE` does to each app of the file.
pub enum FileVerb {
    /// reload, restart: take the file's settings (starting what doesn't run).
    Apply(ApplyMode),
    Stop,
    Delete,
}

/// `stop|restart|reload|delete FILE`: the verb for each app of the file. None when the
/// target is not a config file.
pub fn on_file(home: &Home, target: &Target, verb: FileVerb) -> Option<Result<(), Failure>> {
    let path = Path::new(&target.target);
    if !crate::config::is_config(path) || !path.is_file() {
        return None;
    }
    let request: fn(String) -> Request = match verb {
        FileVerb::Apply(mode) => return Some(apply_file(home, path, target.profile.clone(), mode)),
        FileVerb::Stop => |target| Request::Stop {
            target,
            unwatch: false,
        },
        FileVerb::Delete => |target| Request::Delete { target },
    };
    Some(each_app_of(home, path, request))
}

fn each_app_of(home: &Home, path: &Path, request: fn(String) -> Request) -> Result<(), Failure> {
    for (_, name) in file_apps(path, None)? {
        say(conn::request(home, request(name), false).map_err(Failure::Runtime)?);
    }
    Ok(())
}

/// Prints what the daemon said about one app of the file; false when it refused.
fn say(response: Response) -> bool {
    match response.outcome() {
        Ok(message) if message.is_empty() => true,
        Ok(message) => {
            outln!("{message}");
            true
        }
        Err(message) => {
            errln!("error: {message}");
            false
        }
    }
}
