//! The control socket's protocol: one JSON request per connection, one JSON response,
//! each on a line, both carrying the protocol version.

use serde::{Deserialize, Serialize};

/// Bumped when a request or response changes meaning.
pub const PROTOCOL_VERSION: u32 = 3;

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
    Start {
        app: Box<StartApp>,
    },
    /// A config file's app: started when no app has its name, otherwise given the new
    /// settings and reloaded (or restarted), as PM2's `startOrReload` does.
    Apply {
        app: Box<StartApp>,
        mode: ApplyMode,
    },
    /// Restart counters back to zero.
    Reset {
        target: String,
    },
    /// Reopen every log file (an external logrotate moved them).
    ReloadLogs,
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
        change: ScaleChange,
        /// Allow more workers than 4 per usable CPU.
        #[serde(default)]
        force: bool,
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

/// An app to start, as typed data: the command the client resolved and the app's
/// options. The daemon keeps it (scale and other runtime changes included) and the dump
/// stores it, so a restart, `save`/`resurrect` and a daemon restart start the same app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartApp {
    /// Program and arguments: the interpreter, the script made absolute, the app's args.
    pub command: Vec<String>,
    /// Where relative paths start: the client's directory, or the config file's.
    pub cwd: String,
    pub options: crate::cli::AppOptions,
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
    /// The number `ls` shows, which commands take in place of the name (PM2's ids).
    #[serde(default)]
    pub id: u32,
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
