//! Library for server processes run by corral: take connections, say when ready, drain on stop.
//!
//! Two levels:
//! - [`Worker`] (feature `tokio`, on by default): `Worker::start().await`, then
//!   `while let Some(conn) = worker.accept().await { ... }`. Connections arrive from
//!   the shared listener or handed over by corral (round-robin, least-loaded, sticky),
//!   whichever corral chose; `accept` returns `None` once the worker should drain.
//!   Heartbeats, acks and messages are handled in the background.
//! - plain functions for any server loop: [`listeners`] (systemd socket activation,
//!   so they work under systemd too), [`ready`], [`watchdog`], [`status`].

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use corral_proto::env;

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "tokio")]
mod worker;
#[cfg(feature = "tokio")]
pub use worker::{Connection, Incoming, Options, RequestCounter, StartError, Worker};

/// A listening socket inherited from the supervisor.
#[derive(Debug)]
pub struct Inherited {
    /// The name from `LISTEN_FDNAMES` (empty when none was given).
    pub name: String,
    /// The socket; a TCP or Unix stream listener.
    pub fd: OwnedFd,
}

/// Why the inherited listeners could not be taken over.
#[derive(Debug, thiserror::Error)]
pub enum ListenersError {
    #[error("{var} is not a number: {value:?}")]
    NotANumber { var: &'static str, value: String },
    #[error("fd {fd} named in LISTEN_FDS is not open in this process")]
    NotOpen { fd: RawFd },
}

/// Takes the listeners passed by corral (or systemd) and clears the variables that
/// announced them, so that child processes don't try to take them too.
///
/// Returns an empty list when the variables are absent or meant for another pid.
pub fn listeners() -> Result<Vec<Inherited>, ListenersError> {
    let Some(count) = var_number(env::LISTEN_FDS)? else {
        return Ok(Vec::new());
    };
    let meant_for = var_number(env::LISTEN_PID)?;
    if meant_for != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let names = std::env::var(env::LISTEN_FDNAMES).unwrap_or_default();
    let mut names = names.split(':').map(str::to_owned);
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as RawFd {
        let fd = env::LISTEN_FDS_START + i;
        // SAFETY: fcntl(F_GETFD) only queries the fd table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(ListenersError::NotOpen { fd });
        }
        // The worker owns these fds from now on; keeping them out of its own children
        // stops a forked helper from holding the listener open after the worker exits.
        // SAFETY: fd is open (checked above) and nothing else in this process owns it.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: as above, ownership is taken exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        out.push(Inherited {
            name: names.next().unwrap_or_default(),
            fd,
        });
    }
    for var in [env::LISTEN_FDS, env::LISTEN_PID, env::LISTEN_FDNAMES] {
        // SAFETY (std's): called at start-up before the worker spawns threads is the
        // documented way to use this; later calls race with readers in other threads.
        unsafe { std::env::remove_var(var) };
    }
    Ok(out)
}

fn var_number(var: &'static str) -> Result<Option<u32>, ListenersError> {
    match std::env::var(var) {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ListenersError::NotANumber { var, value }),
        Err(_) => Ok(None),
    }
}

/// Tells the supervisor this worker serves requests (`READY=1`). A no-op outside corral.
pub fn ready() -> std::io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Ready])
}

/// Tells the supervisor this worker is alive (`WATCHDOG=1`). A no-op outside corral.
pub fn watchdog() -> std::io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Watchdog])
}

/// Sets the status text the supervisor shows for this worker.
pub fn status(text: &str) -> std::io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Status(text)])
}

/// The interval at which the supervisor expects [`watchdog`] calls, when it set one.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var(env::WATCHDOG_USEC).ok()?.parse().ok()?;
    Some(std::time::Duration::from_micros(usec))
}
