//! What the PM2 front end knows of an app that corral's own model has no words for.

use serde::{Deserialize, Serialize};

/// An app as `pm2 start` made it: PM2's name (several apps may share it; corral's own
/// names are unique), its mode and interpreter as PM2 shows them, and the environment
/// the app declared, kept apart from the one it inherited so that `--update-env` can
/// take a fresh environment under it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Pm2Facts {
    pub name: String,
    /// `cluster_mode` or `fork_mode`.
    pub exec_mode: String,
    /// `node`, `python3`, `bash`, `none`...
    pub interpreter: String,
    /// The script, absolute (PM2's `pm_exec_path`).
    pub script: String,
    pub args: Vec<String>,
    pub interpreter_args: Vec<String>,
    pub declared_env: Vec<(String, String)>,
}
