//! Reading an app's config file again (on reload and restart), off the state task.

use std::path::Path;

use crate::config::start::{parse_start, Parsed};
use crate::model::StartApp;
use corral_proto::control::ConfigRef;

use super::refusal::Refusal;
use super::state::App;

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
    pub fn run(&self) -> Result<(StartApp, Parsed), Refusal> {
        let path = Path::new(&self.config.path);
        let loaded = crate::config::load(path, self.config.profile.as_deref())
            .map_err(|e| Refusal::Config(e.to_string()))?;
        for mut start in loaded.start_apps(&self.config) {
            start.scaled = self.scaled;
            if let Ok(parsed) = parse_start(&start) {
                if parsed.spec.name == self.name {
                    return Ok((start, parsed));
                }
            }
        }
        Err(Refusal::Gone {
            path: self.config.path.clone(),
            name: self.name.clone(),
        })
    }
}
