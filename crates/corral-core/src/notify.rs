//! The sd_notify socket: workers send `READY=1`, `STATUS=`, `WATCHDOG=1` here, identified by pid.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use corral_proto::fdpass;
use corral_proto::notify::{self, Notice};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use crate::process::Pid;

/// A datagram socket in a private directory, receiving with `SO_PASSCRED` so every
/// message carries the sender's pid as the kernel saw it (a worker can't pose as another).
pub struct NotifySocket {
    socket: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
}

/// Why the notify socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot create the runtime directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the notify socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Largest datagram read; systemd allows the same.
const MAX_DATAGRAM: usize = 4096;

impl NotifySocket {
    /// Creates the socket in a new mode-0700 directory under `runtime_dir`, after
    /// removing what corrals that are gone left there.
    pub fn bind(runtime_dir: &Path) -> Result<Self, NotifyError> {
        remove_stale(runtime_dir);
        let dir = runtime_dir.join(format!(
            "corral-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|source| NotifyError::Dir {
                path: dir.clone(),
                source,
            })?;
        let path = dir.join("notify.sock");
        let bind_error = |source| NotifyError::Bind {
            path: path.clone(),
            source,
        };
        let socket = UnixDatagram::bind(&path).map_err(bind_error)?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(|e| bind_error(e.into()))?;
        Ok(NotifySocket { socket, dir, path })
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next datagram and returns its sender's pid and what it said.
    /// Datagrams without credentials are dropped.
    pub async fn recv(&self) -> io::Result<(Pid, Vec<Notice>)> {
        loop {
            // Through the shared scratch buffer: a quiet app's socket holds none.
            let got = self
                .socket
                .async_io(Interest::READABLE, || {
                    crate::scratch::with(|buf| {
                        let got = recv_with_pid(&self.socket, &mut buf[..MAX_DATAGRAM])?;
                        Ok(got.map(|(pid, len)| (pid, notify::parse(&buf[..len]))))
                    })
                })
                .await?;
            if let Some(got) = got {
                return Ok(got);
            }
        }
    }
}

/// One datagram and its sender's pid. Fds sent along are closed when `received` drops:
/// corral keeps no fd store. A datagram whose fds did not fit is still read.
fn recv_with_pid(socket: &UnixDatagram, buf: &mut [u8]) -> io::Result<Option<(Pid, usize)>> {
    let received = fdpass::recv(socket.as_fd(), buf)?;
    Ok(received.pid.map(|pid| (pid, received.len)))
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        // The directory is this socket's alone (the Node preload lives there too); a
        // socket handed over leaves it to its new owner.
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The notify socket as it crosses `exec` (`crate::handover`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NotifyState {
    fd: crate::handover::Fd,
    dir: PathBuf,
    path: PathBuf,
}

impl NotifySocket {
    /// The socket, for the binary that takes over; its directory stays.
    pub fn hand_over(mut self) -> io::Result<NotifyState> {
        let state = self.snapshot()?;
        self.dir = PathBuf::new(); // not removed on drop: the new owner's
        Ok(state)
    }

    /// The same as [`NotifySocket::hand_over`], as a duplicate, while this one stays in use.
    pub fn snapshot(&self) -> io::Result<NotifyState> {
        Ok(NotifyState {
            fd: crate::handover::Fd::dup(self.socket.as_fd())?,
            dir: self.dir.clone(),
            path: self.path.clone(),
        })
    }

    /// The socket a [`NotifySocket::hand_over`] described.
    pub fn resume(state: NotifyState) -> io::Result<NotifySocket> {
        let std = std::os::unix::net::UnixDatagram::from(state.fd.0);
        std.set_nonblocking(true)?;
        Ok(NotifySocket {
            socket: UnixDatagram::from_std(std)?,
            dir: state.dir,
            path: state.path,
        })
    }
}

/// Removes `corral-<pid>-*` directories of ours whose corral no longer runs (killed
/// before it could clean up). A pid can't tell: another PID namespace (a container, a
/// `unshare`d corral) shares the directory with different pids. The socket can: a
/// datagram socket nobody holds any more refuses connections.
fn remove_stale(runtime_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(runtime_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let named_like_ours = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("corral-"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(pid, _)| pid.parse::<u32>().is_ok());
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !(named_like_ours && ours) {
            continue;
        }
        let probe = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect(entry.path().join("notify.sock")));
        if probe.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receives_messages_with_the_sender_pid() {
        let dir = std::env::temp_dir();
        let socket = NotifySocket::bind(&dir).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client
            .send_to(b"READY=1\nSTATUS=ok", socket.path())
            .unwrap();
        let (pid, notices) = socket.recv().await.unwrap();
        assert_eq!(pid, std::process::id() as Pid);
        assert_eq!(notices, vec![Notice::Ready, Notice::Status("ok".into())]);
        let path = socket.path().to_owned();
        drop(socket);
        assert!(!path.exists());
    }
}
