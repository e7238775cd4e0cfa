//! Watching processes that are not this process's children (workers adopted from a
//! daemon that died): a pidfd becomes readable when its process exits.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::process::Pid;

/// A pidfd for `pid`.
pub fn open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `pid` is a child of this process (so SIGCHLD and waitpid tell its exit).
pub fn is_child(pid: Pid) -> bool {
    super::memory::parent_of(pid) == Some(u64::from(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_is_readable_once_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.05")
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        assert!(is_child(pid));
        assert!(!is_child(1));
        let fd = open(pid).unwrap();
        let mut poll = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut poll, nix::poll::PollTimeout::from(5000u16)).unwrap();
        assert_eq!(ready, 1);
        child.wait().unwrap();
    }
}
