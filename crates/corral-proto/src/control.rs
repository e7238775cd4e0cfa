//! The daemon's control protocol: one JSON request per connection, one JSON response,
//! each on a line, both carrying the protocol version.
//!
//! The CLI, the daemon and the end-to-end tests share these types, and every `--json`
//! output of the CLI is one of them serialized. An app's options are the binary's typed
//! config model (flags, config files and this protocol share it), so requests are generic
//! over them: the binary uses `Request<AppOptions>`, a reader that only looks at
//! responses needs no options type at all.

use serde::{Deserialize, Serialize};

/// Bumped when a request or response changes meaning.
pub const PROTOCOL_VERSION: u32 = 4;

/// A request with its version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u32,
    #[serde(flatten)]
    pub body: T,
}

/// What the CLI asks the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request<O> {
    Ping,
    Start {
        app: Box<StartApp<O>>,
    },
    /// A config file's app: started when no app has its name, otherwise given the new
    /// settings and reloaded (or restarted), as PM2's `startOrReload` does.
    Apply {
        app: Box<StartApp<O>>,
        mode: ApplyMode,
    },
    /// Restart counters back to zero.
    Reset {
        target: String,
    },
    /// Reopen every log file (an external logrotate moved them).
    ReloadLogs,
    List,
    /// `ls` with what each app was started from: the data PM2's per-process views show.
    Records,
    Stop {
        target: String,
        /// Also turn the apps' `--watch` off, as PM2's stop does (the PM2 front end).
        #[serde(default)]
        unwatch: bool,
    },
    Restart {
        target: String,
    },
    Reload {
        target: String,
    },
    Delete {
        target: String,
    },
    Scale {
        name: String,
        change: ScaleChange,
        /// Allow more workers than 4 per usable CPU.
        #[serde(default)]
        force: bool,
    },
    Signal {
        target: String,
        /// The signal's number; the CLI parsed and checked the name.
        signal: i32,
    },
    Send {
        name: String,
        data: serde_json::Value,
    },
    /// Write `text` to the standard input of an app's workers (`app`) or one worker
    /// (`app:slot`); the app runs with `stdin = "pipe"`.
    Input {
        target: String,
        text: String,
    },
    Describe {
        name: String,
    },
    Env {
        name: String,
    },
    Flush {
        target: String,
    },
    Save,
    Resurrect,
    Kill,
    /// Replace the daemon's binary in place (same pid) with `exe`, or with the binary
    /// now at the path the daemon was started from; its apps are handed over without a
    /// worker noticing. Taken whatever the protocol version.
    Update {
        #[serde(default)]
        exe: Option<String>,
    },
}

/// An app to start, as typed data: the command the client resolved and the app's
/// options. The daemon keeps it (scale and other runtime changes included) and the dump
/// stores it, so a restart, `save`/`resurrect` and a daemon restart start the same app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartApp<O> {
    /// Program and arguments: the interpreter, the script made absolute, the app's args.
    pub command: Vec<String>,
    /// Where relative paths start: the client's directory, or the config file's.
    pub cwd: String,
    pub options: O,
    /// The config file the app came from, read again on restart and reload.
    #[serde(default)]
    pub config: Option<ConfigRef>,
    /// The worker count set by `corral scale`; it wins over `options.instances`, also
    /// when the config file is read again.
    #[serde(default)]
    pub scaled: Option<usize>,
}

/// How an app that runs already takes new settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyMode {
    Reload,
    Restart,
}

/// Where an app's settings live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRef {
    pub path: String,
    pub profile: Option<String>,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Done; `message` says what was done (empty when there is nothing to say).
    Ok { message: String },
    /// `ls`: every app.
    Apps { apps: Vec<AppView> },
    /// `Records`: every app with what it was started from.
    Records { apps: Vec<AppRecord> },
    /// `describe`: one app in full.
    Described { app: Box<AppDetail> },
    /// `env`: the workers' declared environment, secrets masked, sorted by key.
    Env { vars: Vec<EnvVar> },
    Error {
        message: String,
        /// The same request, sent again shortly, will be answered (the daemon was
        /// updating itself). Absent from older daemons: false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retry: bool,
    },
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response::Ok {
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
            retry: false,
        }
    }

    /// An error that goes away when the request is sent again shortly.
    pub fn retry_soon(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
            retry: true,
        }
    }

    /// What an action's answer says: its message, or its error. An answer that carries
    /// data (`Apps`, `Described`, `Env`) has no message.
    pub fn outcome(self) -> Result<String, String> {
        match self {
            Response::Ok { message } => Ok(message),
            Response::Error { message, .. } => Err(message),
            Response::Apps { .. }
            | Response::Records { .. }
            | Response::Described { .. }
            | Response::Env { .. } => Ok(String::new()),
        }
    }
}

/// An app's view and its start request (a [`StartApp`] of the binary's options type),
/// with when it was first started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub view: AppView,
    pub start: serde_json::Value,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Workers it should run now.
    #[serde(default)]
    pub instances: usize,
}

/// `describe`: the `ls` view of an app and what it runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppDetail {
    #[serde(flatten)]
    pub view: AppView,
    pub cwd: Option<String>,
    pub instances: usize,
    /// How connections reach the workers (`shared`, `round-robin`, ...).
    pub balance: String,
    pub env: Vec<EnvVar>,
}

/// One variable of an app's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

/// Where an app is, as `ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    Online,
    /// Running, but some slot crash-loops or gave up.
    Degraded,
    Stopping,
    Stopped,
    /// Every worker gave up (crash loop).
    Errored,
}

/// Where a worker slot is, as `ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Starting,
    Online,
    /// Ready, but it serves on a port it bound itself, not on corral's socket.
    OnlineOwnPort,
    /// Ready, but it closed corral's socket and serves on none of corral's.
    OnlineSocketClosed,
    /// Crashed; a replacement is on its way.
    Restarting,
    /// Exited and is not restarted (autorestart off, a stop exit code).
    Exited,
    /// Gave up after crashing too often.
    Errored,
    Stopping,
    Stopped,
}

impl WorkerStatus {
    /// Whether the slot is failing (which makes its app degraded).
    pub fn is_sick(self) -> bool {
        matches!(self, WorkerStatus::Restarting | WorkerStatus::Errored)
    }
}

impl From<AppStatus> for WorkerStatus {
    /// What a worker row of an app that does not run shows.
    fn from(status: AppStatus) -> Self {
        match status {
            AppStatus::Online | AppStatus::Degraded => WorkerStatus::Online,
            AppStatus::Stopping => WorkerStatus::Stopping,
            AppStatus::Stopped => WorkerStatus::Stopped,
            AppStatus::Errored => WorkerStatus::Errored,
        }
    }
}

impl std::fmt::Display for AppStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppStatus::Online => "online",
            AppStatus::Degraded => "degraded",
            AppStatus::Stopping => "stopping",
            AppStatus::Stopped => "stopped",
            AppStatus::Errored => "errored",
        })
    }
}

impl std::fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerStatus::Starting => "starting",
            WorkerStatus::Online => "online",
            WorkerStatus::OnlineOwnPort => "online (own port)",
            WorkerStatus::OnlineSocketClosed => "online (socket closed)",
            WorkerStatus::Restarting => "restarting",
            WorkerStatus::Exited => "exited",
            WorkerStatus::Errored => "errored",
            WorkerStatus::Stopping => "stopping",
            WorkerStatus::Stopped => "stopped",
        })
    }
}

/// One app as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    /// The number `ls` shows, which commands take in place of the name (PM2's ids).
    #[serde(default)]
    pub id: u32,
    pub name: String,
    pub status: AppStatus,
    pub command: Vec<String>,
    pub listen: Vec<String>,
    pub restarts: u32,
    pub workers: Vec<WorkerView>,
    /// Where each slot's output is written.
    #[serde(default)]
    pub logs: Vec<LogFileView>,
}

/// One log file of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFileView {
    pub path: String,
    /// None when the slots' output is merged.
    pub slot: Option<usize>,
    pub stream: LogStream,
}

/// Which output of a worker a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Out,
    Err,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Out => "out",
            LogStream::Err => "err",
        }
    }
}

/// One line of a log file, as `corral logs --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLineView {
    pub app: String,
    /// None for a file every slot writes to (merged logs).
    pub slot: Option<usize>,
    pub stream: LogStream,
    pub line: String,
}

/// One worker slot as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub slot: usize,
    pub pid: Option<i32>,
    pub status: WorkerStatus,
    pub uptime_ms: u64,
    pub restarts: u32,
    /// Every replacement of the slot's worker, crashes, restarts and reloads, since start
    /// or `reset` (PM2's `restart_time`).
    #[serde(default)]
    pub restart_time: u32,
    /// The slot's number among every worker of the daemon (PM2's `pm_id`).
    #[serde(default)]
    pub pm_id: Option<u32>,
    pub cpu_percent: f64,
    pub memory: u64,
    /// How the slot's last worker ended when it was not asked to.
    #[serde(default)]
    pub last_exit: Option<String>,
}

/// What `corral scale` asks for: N, +N or -N workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleChange {
    To(usize),
    Up(usize),
    Down(usize),
}

impl std::str::FromStr for ScaleChange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |n: &str| {
            n.parse::<usize>().map_err(|_| {
                format!("invalid scale `{s}`: expected N, +N or -N with N a whole number")
            })
        };
        match s.as_bytes().first() {
            Some(b'+') => number(&s[1..]).map(ScaleChange::Up),
            Some(b'-') => number(&s[1..]).map(ScaleChange::Down),
            _ => number(s).map(ScaleChange::To),
        }
    }
}

impl ScaleChange {
    /// The worker count this makes of `current`; `None` when it does not fit a count
    /// (under zero, or too big to represent).
    pub fn target(self, current: usize) -> Option<usize> {
        match self {
            ScaleChange::To(n) => Some(n),
            ScaleChange::Up(n) => current.checked_add(n),
            ScaleChange::Down(n) => current.checked_sub(n),
        }
    }
}

impl std::fmt::Display for ScaleChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleChange::To(n) => write!(f, "{n}"),
            ScaleChange::Up(n) => write!(f, "+{n}"),
            ScaleChange::Down(n) => write!(f, "-{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_changes_are_checked_never_wrapped() {
        assert_eq!("+2".parse(), Ok(ScaleChange::Up(2)));
        assert_eq!("-1".parse(), Ok(ScaleChange::Down(1)));
        assert_eq!("3".parse(), Ok(ScaleChange::To(3)));
        assert!("lots".parse::<ScaleChange>().is_err());
        assert!("+-1".parse::<ScaleChange>().is_err());
        let huge: ScaleChange = "+9223372036854775807".parse().unwrap();
        assert_eq!(huge.target(usize::MAX - 1), None);
        assert_eq!(ScaleChange::Down(3).target(2), None);
        assert_eq!(ScaleChange::Up(1).target(2), Some(3));
    }
}
