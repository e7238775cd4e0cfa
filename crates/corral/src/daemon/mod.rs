//! The per-user daemon: many apps, each an engine group, behind a control socket, and
//! the client side the CLI uses to talk to it.

pub mod client;
mod joins;
mod journal;
pub mod logfile;
mod parse;
pub mod protocol;
mod server;
mod state;

use std::path::PathBuf;

pub use server::serve;
pub use state::closest_key;

/// The daemon's home: `$CORRAL_HOME`, default `~/.corral`.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn from_env() -> Home {
        let dir = std::env::var_os("CORRAL_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".corral")))
            .unwrap_or_else(|| std::env::temp_dir().join("corral"));
        Home { dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("corral.sock")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn dump(&self) -> PathBuf {
        self.dir.join("dump.json")
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Creates the home (mode 0700) and its logs directory.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.logs())
    }
}
