//! corral's home directory (`$CORRAL_HOME`): where the daemon's socket, dump, lock and
//! logs live, checked to be this user's own.

use std::path::PathBuf;

/// The daemon's home: `$CORRAL_HOME`, default `~/.corral`; or, for the PM2 front end,
/// `$PM2_HOME`, default `~/.pm2`, with PM2's file names.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
    pub kind: HomeKind,
}

/// Whose file names the home uses: the dump and the daemon's pid file are where PM2's
/// users (and their scripts) look for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeKind {
    Corral,
    Pm2,
}

/// Passed to the daemon the PM2 front end starts, so that it writes PM2's file names.
const KIND_VAR: &str = "CORRAL_HOME_KIND";

impl Home {
    /// Starts `corral daemon` for this home in a session of its own, its output appended
    /// to `daemon.log`; does not wait for it. The binary is the one now at this process's
    /// path (a holder started by an older daemon starts the newest corral).
    pub fn spawn_daemon(&self) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.daemon_log())?;
        let mut command = std::process::Command::new(crate::upgrade::installed_exe());
        command
            // A copy installed as `pm2` (not a link) would read `daemon` in PM2's dialect.
            .arg0("corral")
            .arg("daemon")
            .env("CORRAL_HOME", &self.dir)
            .env(
                KIND_VAR,
                if self.kind == HomeKind::Pm2 {
                    "pm2"
                } else {
                    "corral"
                },
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        command.spawn().map(drop)
    }

    /// `$CORRAL_HOME`, else `~/.corral`, else a directory of this user's own in the temp
    /// dir; refused when someone else could have planted files in it.
    pub fn from_env() -> anyhow::Result<Home> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = std::env::var_os("CORRAL_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".corral")))
            .unwrap_or_else(|| std::env::temp_dir().join(format!("corral-{uid}")));
        let kind = match std::env::var_os(KIND_VAR) {
            Some(kind) if kind == "pm2" => HomeKind::Pm2,
            _ => HomeKind::Corral,
        };
        let home = Home { dir, kind };
        home.check()?;
        Ok(home)
    }

    /// The PM2 front end's home: `$PM2_HOME`, else `~/.pm2`, checked as corral's is.
    pub fn pm2_from_env() -> anyhow::Result<Home> {
        let dir = std::env::var_os("PM2_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pm2")))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "neither PM2_HOME nor HOME is set; set PM2_HOME to a directory of your own"
                )
            })?;
        let home = Home {
            dir,
            kind: HomeKind::Pm2,
        };
        home.check()?;
        Ok(home)
    }

    /// A home that exists must be a real directory of this user that nobody else can
    /// write to: its socket, logs and dump are trusted.
    pub fn check(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => anyhow::bail!("cannot use corral's home {}: {e}", self.dir.display()),
        };
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let problem = if !meta.is_dir() {
            Some("it is not a directory (a symlink?)".to_owned())
        } else if meta.uid() != uid {
            Some(format!(
                "it belongs to uid {}, not to you (uid {uid})",
                meta.uid()
            ))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!(
                "others can write to it (mode {:o}); `chmod 700 {}` fixes that",
                meta.mode() & 0o777,
                self.dir.display()
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => anyhow::bail!(
                "refusing to use {} as corral's home: {problem}; set CORRAL_HOME to a directory of your own",
                self.dir.display()
            ),
            None => Ok(()),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("corral.sock")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn dump(&self) -> PathBuf {
        self.dir.join(match self.kind {
            HomeKind::Corral => "dump.json",
            HomeKind::Pm2 => "dump.pm2",
        })
    }

    /// The dump `save` replaced, which `resurrect` falls back on.
    pub fn dump_backup(&self) -> PathBuf {
        let mut name = self.dump().into_os_string();
        name.push(".bak");
        PathBuf::from(name)
    }

    /// The running daemon's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(match self.kind {
            HomeKind::Corral => "daemon.pid",
            HomeKind::Pm2 => "pm2.pid",
        })
    }

    /// Where the PM2 front end's apps write their pid files by default.
    pub fn pids(&self) -> PathBuf {
        self.dir.join("pids")
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// `workers.json`: the worker process groups the daemon last gave its holder, with
    /// their start times, to stop if the daemon and the holder both die.
    pub fn workers(&self) -> PathBuf {
        self.dir.join("workers.json")
    }

    /// The groups of [`Home::workers`] whose leader still runs the process named (not a
    /// later one with the same pid): what a daemon and holder that both died left.
    pub fn left_workers(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(self.workers()) else {
            return Vec::new();
        };
        let groups: Vec<(i32, u64)> = serde_json::from_str(&text).unwrap_or_default();
        groups
            .into_iter()
            .filter(|&(pgid, started)| corral_core::os::memory::start_time(pgid) == Some(started))
            .map(|(pgid, _)| pgid)
            .collect()
    }

    /// Whether a holder listens at `holder.sock` (it keeps apps for the next daemon). The
    /// probe connection closes at once, which the holder reads as nothing to serve. It
    /// never waits: a holder that is stopped, its backlog full, still counts.
    pub fn holder_runs(&self) -> bool {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        use std::os::fd::AsRawFd;
        let Ok(fd) = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        ) else {
            return false;
        };
        UnixAddr::new(&self.dir.join("holder.sock")).is_ok_and(|addr| {
            matches!(
                connect(fd.as_raw_fd(), &addr),
                Ok(()) | Err(nix::errno::Errno::EAGAIN)
            )
        })
    }

    /// Creates the home (mode 0700) and its logs directory, and checks it again.
    pub fn create(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.logs())
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", self.dir.display()))?;
        self.check()?;
        // Private, even when it existed before (logs and the dump hold secrets).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_23_probing_a_stopped_holder_never_waits() {
        use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag};
        use nix::sys::socket::{SockType, UnixAddr};
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("corral-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let home = Home {
            dir: dir.clone(),
            kind: HomeKind::Corral,
        };
        assert!(!home.holder_runs(), "nothing listens");
        // A holder that accepts nothing (SIGSTOP): its backlog fills with probes.
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        let addr = UnixAddr::new(&dir.join("holder.sock")).unwrap();
        bind(listener.as_raw_fd(), &addr).unwrap();
        listen(&listener, Backlog::new(1).unwrap()).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..20 {
            assert!(home.holder_runs());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
