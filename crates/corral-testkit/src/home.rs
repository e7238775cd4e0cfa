//! A private `CORRAL_HOME` for daemon tests, and the CLI calls made in it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::eventually;

const T: Duration = Duration::from_secs(20);

/// A private CORRAL_HOME; its daemon is killed on drop.
pub struct Home {
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Home {
    /// A fresh home named after the test, for the corral binary `bin`.
    pub fn new(bin: &str, name: &str) -> Home {
        let dir = std::env::temp_dir().join(format!("corral-home-{name}-{}", std::process::id()));
        Home::at(bin, dir)
    }

    /// A fresh home at `dir` (emptied first).
    pub fn at(bin: &str, dir: PathBuf) -> Home {
        let _ = std::fs::remove_dir_all(&dir);
        Home {
            dir,
            bin: bin.into(),
        }
    }

    /// The daemon's own log.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn corral(&self, args: &[&str]) -> Output {
        self.corral_env(args, &[])
    }

    pub fn corral_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("CORRAL_HOME", &self.dir)
            .env_remove("WORKERS")
            .envs(env.iter().copied())
            .output()
            .expect("run corral")
    }

    /// stdout of a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.corral(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// stderr of a command that must fail.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.corral(args);
        assert!(!out.status.success(), "corral {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn apps(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["ls", "--json"])).expect("ls --json is JSON")
    }

    pub fn app(&self, name: &str) -> serde_json::Value {
        self.apps()
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `name` has `n` workers, all online.
    pub fn wait_online(&self, name: &str, n: usize) -> serde_json::Value {
        let ok = eventually(T, || {
            let app = self.app(name);
            let workers = app["workers"].as_array().cloned().unwrap_or_default();
            workers.len() == n && workers.iter().all(|w| w["status"] == "online")
        });
        assert!(
            ok,
            "{name} never had {n} online workers: {}",
            self.app(name)
        );
        self.app(name)
    }

    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        self.app(name)["listen"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn daemon_pid(&self) -> i32 {
        let pong = self.ok(&["ping"]);
        pong.trim().rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.corral(&["kill"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
