//! The control socket's protocol: one JSON request per connection, one JSON response,
//! each on a line, both carrying the protocol version.

use serde::{Deserialize, Serialize};

/// Bumped when a request or response changes meaning.
pub const PROTOCOL_VERSION: u32 = 1;

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
pub enum Request {
    Ping,
    /// `argv` is what follows `corral start`, with the script made absolute and its
    /// interpreter in front; `cwd` is the client's working directory.
    Start {
        argv: Vec<String>,
        cwd: String,
        /// The config file the app came from, read again on restart and reload.
        #[serde(default)]
        config: Option<ConfigRef>,
    },
    List,
    Stop {
        target: String,
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
        change: String,
    },
    Signal {
        target: String,
        signal: String,
    },
    Send {
        name: String,
        data: serde_json::Value,
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
    Ok {
        message: String,
        #[serde(default)]
        apps: Vec<AppView>,
    },
    Error {
        message: String,
    },
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response::Ok {
            message: message.into(),
            apps: Vec::new(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// One app as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    pub status: String,
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
    pub stream: String,
}

/// One worker slot as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub slot: usize,
    pub pid: Option<i32>,
    pub status: String,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub cpu_percent: f64,
    pub memory: u64,
}
