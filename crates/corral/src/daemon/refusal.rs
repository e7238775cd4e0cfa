//! Why the daemon did not do what a request asked (or part of it): one typed error,
//! worded here once, sent to the CLI as an `Error` response's message.

use corral_proto::control::Response;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The app's settings do not parse (the config layer's message, with its key).
    #[error("{0}")]
    Settings(String),
    #[error("an app named `{name}` exists ({status}); `corral delete {name}` first, or pick another --name")]
    Exists { name: String, status: String },
    #[error("no app has id {0} (see `corral ls`)")]
    NoId(u32),
    #[error("no app named `{name}`{}", near.hint())]
    NoApp { name: String, near: Near },
    #[error("{verb} takes one app name")]
    OneApp { verb: &'static str },
    #[error("{0} is busy; try again")]
    Busy(String),
    #[error("{0} is not running (`corral restart {0}` starts it)")]
    NotRunning(String),
    /// A restarted app whose workers did not all come up (`why` is the engine's report).
    #[error("{app}: a worker did not come up: {why} (see `corral logs {app}`)")]
    NotUp { app: String, why: String },
    /// A reload that ended without replacing every worker (`why` is the engine's report).
    #[error("{app}: {why}")]
    ReloadFailed { app: String, why: String },
    #[error("{0} was deleted while its config was read")]
    Deleted(String),
    /// Its config file could not be read again, or no longer has the app.
    #[error("{0}")]
    Config(String),
    #[error("{path} no longer has an app named `{name}`")]
    Gone { path: String, name: String },
    /// Its command, listeners or triggers could not be set up (the cause, in full).
    #[error("{0}")]
    Launch(String),
    #[error("cannot scale {app} {how}: at least 1 worker; use `corral stop`")]
    ScaleBelowOne { app: String, how: String },
    #[error("cannot scale {app}: {reason}")]
    ScaleCount { app: String, reason: String },
    #[error("no signal has number {0}")]
    NoSignal(i32),
    #[error("invalid worker `{0}`: expected APP:SLOT")]
    BadWorker(String),
    #[error("{app} has no running worker {slot}")]
    NoWorker { app: String, slot: usize },
    #[error(
        "{0} reads no input from corral: start it with `--stdin pipe` (config: `stdin = \"pipe\"`)"
    )]
    NoStdin(String),
    #[error("{app}: {why}")]
    Input {
        app: String,
        #[source]
        why: corral_core::supervisor::InputRefused,
    },
    #[error("cannot signal pid {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("request too large: over the control socket's limit of {limit_mib} MiB")]
    TooLarge { limit_mib: u64 },
    #[error("permission denied: this daemon belongs to uid {owner}; run corral as that user or set CORRAL_HOME")]
    Stranger { owner: u32 },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error(
        "this daemon (corral {daemon}) speaks protocol v{ours}, this client v{theirs}: run \
         `corral update` with the corral you want to use, to move the daemon to it in place \
         (apps keep running)"
    )]
    Protocol {
        daemon: &'static str,
        ours: u32,
        theirs: u32,
    },
    #[error("bad request: {0}")]
    BadRequest(#[source] serde_json::Error),
    #[error("the daemon is updating itself; retry in a moment")]
    Updating,
    /// Why `corral update` did not happen (a check, a refusing engine, an exec).
    #[error("not updated; the daemon runs on as it was, its apps untouched: {0}")]
    NotUpdated(String),
    #[error("update: send it on a connection of its own")]
    UpdateShared,
    #[error("nothing to resurrect: {path}: {source} (run `corral save` first)")]
    NoDump {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} was written by an older corral (dump v{version}, this one reads v{reads}): start the apps again and `corral save`")]
    OldDump {
        path: String,
        version: u32,
        reads: u32,
    },
    #[error("{path} is not a corral dump: {source}")]
    NotADump {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot save to {path}: {source}")]
    Save {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the daemon knows that comes close to an app name nobody has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Near {
    /// The name it probably means.
    Like(String),
    /// Nothing runs at all.
    NoApps,
    /// What runs, none of it close.
    Apps(Vec<String>),
}

impl Near {
    fn hint(&self) -> String {
        match self {
            Near::Like(near) => format!("; did you mean `{near}`?"),
            Near::NoApps => ": no apps are running (see `corral start`)".into(),
            Near::Apps(apps) => format!("; apps: {}", apps.join(", ")),
        }
    }
}

impl From<Refusal> for Response {
    fn from(refusal: Refusal) -> Response {
        match refusal {
            // The binary it becomes answers the same request in a moment.
            Refusal::Updating => Response::retry_soon(refusal.to_string()),
            _ => Response::error(refusal.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_says_what_is_near() {
        let no_app = |near| Refusal::NoApp {
            name: "wbe".into(),
            near,
        };
        assert_eq!(
            no_app(Near::Like("web".into())).to_string(),
            "no app named `wbe`; did you mean `web`?"
        );
        assert_eq!(
            no_app(Near::NoApps).to_string(),
            "no app named `wbe`: no apps are running (see `corral start`)"
        );
        assert_eq!(
            no_app(Near::Apps(vec!["api".into(), "jobs".into()])).to_string(),
            "no app named `wbe`; apps: api, jobs"
        );
    }
}
