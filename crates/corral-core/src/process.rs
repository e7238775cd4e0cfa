//! Platform-neutral facts about worker processes: pids, exit statuses, spawn failures.

use std::fmt;

/// A worker's pid, which is also its process group id.
pub type Pid = i32;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// Gone, how unknown: a worker adopted from a daemon that died is not this process's
    /// child, and only a parent learns a child's exit status.
    Unknown,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(sig) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {sig}"),
            },
            ExitStatus::Unknown => write!(f, "exit status unknown (adopted worker)"),
        }
    }
}

/// Why a worker process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command not found: `{program}` is not an executable file in the working directory or on PATH")]
    NotFound { program: String },
    #[error("cannot execute `{program}`")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the worker process")]
    Os(#[source] std::io::Error),
}

impl SpawnError {
    /// Whether trying again cannot help until someone changes the command or the files
    /// (a missing program, a file that isn't executable), unlike a busy or short system.
    pub fn is_permanent(&self) -> bool {
        match self {
            SpawnError::NotFound { .. } => true,
            SpawnError::Exec { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOENT
                        | libc::ENOEXEC
                        | libc::EACCES
                        | libc::ENOTDIR
                        | libc::EISDIR
                        | libc::ELOOP
                )
            ),
            SpawnError::Os(_) => false,
        }
    }
}
