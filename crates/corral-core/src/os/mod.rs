//! Unix process plumbing: fork/exec with inherited listeners, process groups, reaping, subreaping.

pub mod keeper;
pub mod memory;
pub mod pidfd;
pub mod reuseport;
pub mod sockets;
mod spawn;

pub use spawn::{spawn, Child, Command};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;

use crate::process::{ExitStatus, Pid, SpawnError};

/// Sends `signal` to process group `pgid`. A group that no longer exists is fine.
pub fn signal_group(pgid: Pid, signal: Signal) {
    if pgid <= 1 {
        return; // never signal "every process" or init by accident
    }
    match killpg(NixPid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => debug_assert!(false, "killpg({pgid}, {signal}) failed: {errno}"),
    }
}

/// Turns on O_NONBLOCK for `fd`'s open file description (shared by every process that
/// holds a copy of it).
pub fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    set_flag(fd, nix::fcntl::OFlag::O_NONBLOCK, true)
}

/// Turns O_NONBLOCK off again, for a socket a worker is about to inherit as it was bound.
pub fn set_blocking(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    set_flag(fd, nix::fcntl::OFlag::O_NONBLOCK, false)
}

fn set_flag(
    fd: std::os::fd::BorrowedFd<'_>,
    flag: nix::fcntl::OFlag,
    on: bool,
) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let mut flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    flags.set(flag, on);
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Whether an `accept` that failed with `errno` can work again once fds or memory are
/// freed (the queue still holds connections): retry, don't give up on the listener.
pub fn out_of_resources(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

/// Whether any process is left in group `pgid`.
pub fn group_alive(pgid: Pid) -> bool {
    pgid > 1 && killpg(NixPid::from_raw(pgid), None).is_ok()
}

/// Collects every child that has exited, without blocking. Children we did not start
/// (orphans reparented to us as subreaper or PID 1) are reaped too.
pub fn reap() -> Vec<(Pid, ExitStatus)> {
    let mut out = Vec::new();
    loop {
        match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), ExitStatus::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), ExitStatus::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return out,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return out,
        }
    }
}

/// Collects the exits of `pids` only, without blocking: for a process that runs several
/// apps, where reaping every child would take other apps' exits.
pub fn reap_pids(pids: &[Pid]) -> Vec<(Pid, ExitStatus)> {
    pids.iter()
        .filter_map(
            |&pid| match waitpid(NixPid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some((pid, ExitStatus::Code(code))),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some((pid, ExitStatus::Signal(sig as i32))),
                _ => None,
            },
        )
        .collect()
}

/// Makes orphaned descendants of this process its children, so it can reap them
/// (what PID 1 does anyway).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The pid of the process group `pid` leads or belongs to.
pub fn process_group_of(pid: Pid) -> Option<Pid> {
    nix::unistd::getpgid(Some(NixPid::from_raw(pid)))
        .ok()
        .map(NixPid::as_raw)
}

/// Finds `program` the way a shell would: as given when it contains a `/` (relative to
/// `cwd`), else in each directory of `path`.
pub fn resolve_program(
    program: &OsStr,
    path: Option<&OsStr>,
    cwd: Option<&Path>,
) -> Result<PathBuf, SpawnError> {
    let not_found = || SpawnError::NotFound {
        program: program.to_string_lossy().into_owned(),
    };
    if program.is_empty() {
        return Err(not_found());
    }
    if program.as_bytes().contains(&b'/') {
        let candidate = match cwd {
            Some(cwd) => cwd.join(program),
            None => PathBuf::from(program),
        };
        return if is_executable(&candidate) {
            Ok(PathBuf::from(program))
        } else {
            Err(not_found())
        };
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_path_and_refuses_what_is_missing() {
        let sh = resolve_program(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin")),
            None,
        );
        assert_eq!(sh.unwrap(), PathBuf::from("/bin/sh"));
        let missing = resolve_program(OsStr::new("no-such-program-xyz"), None, None);
        assert!(matches!(missing, Err(SpawnError::NotFound { .. })));
        assert!(resolve_program(OsStr::new("/etc/passwd"), None, None).is_err());
    }
}
