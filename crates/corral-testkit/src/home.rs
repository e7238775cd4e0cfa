//! A private `CORRAL_HOME` for daemon tests, and the CLI calls made in it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use corral_proto::control::{AppView, WorkerStatus};

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

    /// `ls --json`, typed.
    pub fn apps(&self) -> Vec<AppView> {
        serde_json::from_str(&self.ok(&["ls", "--json"])).expect("ls --json is a list of AppView")
    }

    /// The app named `name`, if the daemon has one.
    pub fn find(&self, name: &str) -> Option<AppView> {
        self.apps().into_iter().find(|a| a.name == name)
    }

    /// The app named `name`; it must exist.
    pub fn app(&self, name: &str) -> AppView {
        self.find(name)
            .unwrap_or_else(|| panic!("no app `{name}` in `corral ls`: {:?}", self.apps()))
    }

    /// Waits until `name` has `n` workers, all online.
    pub fn wait_online(&self, name: &str, n: usize) -> AppView {
        let ok = eventually(T, || {
            self.find(name).is_some_and(|app| {
                app.workers.len() == n
                    && app.workers.iter().all(|w| w.status == WorkerStatus::Online)
            })
        });
        assert!(
            ok,
            "{name} never had {n} online workers: {:?}",
            self.find(name)
        );
        self.app(name)
    }

    /// The first address `name` listens on.
    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        let app = self.app(name);
        let first = app.listen.first().expect("the app listens");
        first
            .split(' ')
            .next()
            .unwrap_or(first)
            .parse()
            .unwrap_or_else(|e| panic!("{first}: {e}"))
    }

    /// The pid of the daemon's holder (`corral __holder` with this home).
    pub fn holder_pid(&self) -> Option<i32> {
        let home = self.dir.as_os_str().as_encoded_bytes();
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                cmd.windows(8).any(|w| w == b"__holder")
                    && env.windows(home.len()).any(|w| w == home)
            })
    }

    pub fn daemon_pid(&self) -> i32 {
        let pong = self.ok(&["ping"]);
        pong.trim().rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.corral(&["kill"]);
        // A test that failed between a daemon's death and the next one leaves a holder
        // (which would start that next daemon): it goes too.
        if let Some(holder) = self.holder_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(holder),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pids of an app's workers that run, by slot.
pub fn pids(app: &AppView) -> Vec<i32> {
    app.workers.iter().filter_map(|w| w.pid).collect()
}
