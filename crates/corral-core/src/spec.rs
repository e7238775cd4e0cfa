//! The validated description of an app: what to run, how many, and the policies that govern it.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::dispatch::Balance;
use crate::restart::RestartPolicy;

/// Everything the engine needs to run one app. Built by the binary from flags or a config
/// file; nothing here is read from the environment implicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub name: String,
    /// Program and arguments; the program is resolved on `PATH` at spawn time.
    pub command: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    /// The full environment of each worker, before corral adds its own variables.
    pub env: Vec<(OsString, OsString)>,
    pub instances: usize,
    pub listen: Vec<ListenSpec>,
    pub ready: ReadyPolicy,
    /// How long a replacement must stay up after it said it was ready before the worker
    /// it replaces is drained (servers that say READY=1 before their workers load).
    pub settle: Duration,
    pub restart: RestartPolicy,
    pub stop: StopPolicy,
    /// When set, a ready worker that sends no `WATCHDOG=1` for this long is killed and replaced.
    pub watchdog: Option<Duration>,
    /// Kill workers when the supervisor dies (foreground `corral run`).
    pub die_with_supervisor: bool,
    /// How connections reach workers.
    pub balance: Balance,
    pub health: HealthPolicy,
    /// Bind ports the app listens on without a configured listener, once, for every
    /// worker (Node apps in cluster mode, as Node's cluster primary does).
    pub asked_ports: bool,
    /// Variables that differ per worker slot (PM2's `instance_var`, `increment_var`).
    pub per_slot: PerSlotEnv,
    /// Give each worker a pipe as its standard input, written by
    /// [`crate::supervisor::input_request`] (PM2's fork mode; `pm2 send`). Without it a
    /// worker reads end-of-file from `/dev/null`.
    pub stdin_pipe: bool,
}

impl AppSpec {
    /// The workers bind their own ports: no corral listener, and corral binds no port
    /// for them (PM2's fork mode). A reload then stops each worker before its replacement.
    pub fn workers_bind_own_ports(&self) -> bool {
        !self.asked_ports && self.listen.is_empty()
    }

    /// The value a worker sees for `key` (the last one set wins, as in a shell).
    pub fn env_value(&self, key: &str) -> Option<&std::ffi::OsStr> {
        env_value(&self.env, key)
    }
}

/// The value of `key` in an environment list where later entries override earlier ones.
pub fn env_value<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a std::ffi::OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_os_str())
}

/// Variables that differ per worker slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerSlotEnv {
    /// Also name the slot (0..N-1) with this variable (PM2's `instance_var`), beside
    /// `NODE_APP_INSTANCE` and `CORRAL_WORKER_ID`.
    pub instance_var: Option<String>,
    /// Give this numeric variable its value plus the slot (PM2's `increment_var`:
    /// `PORT=3000` becomes 3000, 3001, ...).
    pub increment_var: Option<String>,
}

/// Limits on workers that are alive but sick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// A worker that announced heartbeats and sends none for this long is killed.
    pub heartbeat_timeout: Duration,
    /// Runtime lag above this is reported.
    pub lag_warning: Duration,
    /// Memory of a worker's whole process tree above which it is replaced gracefully.
    pub max_memory: Option<u64>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            heartbeat_timeout: Duration::from_secs(10),
            lag_warning: Duration::from_millis(1000),
            max_memory: None,
        }
    }
}

/// How a worker is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPolicy {
    /// Sent to the worker's process group to ask it to drain and exit.
    pub signal: Signal,
    /// After this long the process group gets SIGKILL.
    pub kill_timeout: Duration,
    /// Ask over the channel (`CORRAL_SHUTDOWN`, and `"shutdown"` as PM2 sends it)
    /// instead of with the signal; workers without a channel still get the signal.
    pub message: bool,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            signal: Signal::SIGTERM,
            kill_timeout: Duration::from_secs(10),
            message: false,
        }
    }
}

/// When a worker counts as ready to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyPolicy {
    /// When it sends `READY=1`. A worker that doesn't within `timeout` is stopped, or,
    /// with `assume_ready` (PM2's `listen_timeout`), taken as ready all the same.
    Notify {
        timeout: Duration,
        assume_ready: bool,
    },
    /// After `delay` alive, or at `READY=1` if that comes first.
    Delay { delay: Duration },
}

impl Default for ReadyPolicy {
    fn default() -> Self {
        ReadyPolicy::Delay {
            delay: Duration::from_secs(1),
        }
    }
}

/// How many workers to run, as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Count(usize),
    /// One per CPU this process may use.
    Max,
    /// One per usable CPU, less this many (at least one).
    MaxMinus(usize),
}

/// Why an instance count was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstancesError {
    #[error("invalid worker count `{0}`: expected a number like 4, `max` (or 0: one per CPU), or a negative number like -1 (CPUs less one)")]
    Invalid(String),
}

impl FromStr for Instances {
    type Err = InstancesError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Instances::Max);
        }
        if let Some(rest) = s.strip_prefix('-') {
            return match rest.parse::<usize>() {
                Ok(n) => Ok(Instances::MaxMinus(n)),
                Err(_) => Err(InstancesError::Invalid(s.to_owned())),
            };
        }
        match s.parse::<usize>() {
            // PM2's `instances: 0`: one per CPU, as `max`.
            Ok(0) => Ok(Instances::Max),
            Ok(n) => Ok(Instances::Count(n)),
            Err(_) => Err(InstancesError::Invalid(s.to_owned())),
        }
    }
}

impl Instances {
    /// The number of workers, given how many CPUs this process may use.
    pub fn resolve(self, cpus: usize) -> usize {
        match self {
            Instances::Count(n) => n,
            Instances::Max => cpus.max(1),
            Instances::MaxMinus(n) => cpus.saturating_sub(n).max(1),
        }
    }
}

/// No app runs more workers than this, whatever it asks for.
pub const MAX_WORKERS: usize = 4096;

/// Worker counts above this need the user to insist (`--force`): four per usable CPU,
/// and never less than 16.
pub fn worker_ceiling(cpus: usize) -> usize {
    cpus.saturating_mul(4).max(16)
}

/// Why a worker count was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerCountError {
    #[error("{count} workers is more than 4 per usable CPU ({ceiling} on this machine's {cpus})")]
    OverCeiling {
        count: usize,
        ceiling: usize,
        cpus: usize,
    },
    #[error("{count} workers is over corral's limit of {MAX_WORKERS}")]
    OverLimit { count: usize },
}

/// Checks a worker count the user asked for.
pub fn check_worker_count(count: usize, cpus: usize, force: bool) -> Result<(), WorkerCountError> {
    if count > MAX_WORKERS {
        return Err(WorkerCountError::OverLimit { count });
    }
    let ceiling = worker_ceiling(cpus);
    if count > ceiling && !force {
        return Err(WorkerCountError::OverCeiling {
            count,
            ceiling,
            cpus,
        });
    }
    Ok(())
}

/// CPUs this process may run on: its affinity mask and cgroup CPU quota both count.
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A listener as configured: an optional name (for `LISTEN_FDNAMES`) and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub name: Option<String>,
    pub addr: ListenAddr,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenAddr {
    /// A bare port: every address, IPv6 and IPv4 where the host has both.
    AnyPort(u16),
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP port, if this is a TCP address.
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddr::AnyPort(port) => Some(*port),
            ListenAddr::Tcp(addr) => Some(addr.port()),
            ListenAddr::Unix(_) => None,
        }
    }
}

/// Why a listen address was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenAddrError {
    #[error("invalid listen address `{0}`: expected PORT, HOST:PORT, [IPV6]:PORT or unix:PATH (for example 3000, 127.0.0.1:3000, [::1]:3000, unix:/run/app.sock)")]
    Syntax(String),
    #[error("invalid port in listen address `{0}`: ports are 0 to 65535")]
    Port(String),
    #[error("invalid host in listen address `{0}`: use an IP address or `localhost` (corral does not resolve other names)")]
    Host(String),
    #[error("invalid listener name `{0}`: a name may not be empty or contain `:`")]
    Name(String),
}

impl FromStr for ListenSpec {
    type Err = ListenAddrError;

    /// `ADDR` or `NAME=ADDR`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, addr) = match s.split_once('=') {
            Some((name, addr)) if !name.starts_with("unix:") => {
                if name.is_empty() || name.contains(':') {
                    return Err(ListenAddrError::Name(name.to_owned()));
                }
                (Some(name.to_owned()), addr)
            }
            _ => (None, s),
        };
        Ok(ListenSpec {
            name,
            addr: addr.parse()?,
        })
    }
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ListenAddrError::Syntax(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(syntax());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if s.is_empty() {
            return Err(syntax());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return parse_port(s, s).map(ListenAddr::AnyPort);
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(syntax)?;
        let port = parse_port(port, s)?;
        let ip = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            IpAddr::V6(
                v6.parse::<Ipv6Addr>()
                    .map_err(|_| ListenAddrError::Host(s.to_owned()))?,
            )
        } else if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else if host.contains(':') {
            // An unbracketed IPv6 address: the port boundary is ambiguous.
            return Err(syntax());
        } else {
            IpAddr::V4(
                host.parse::<Ipv4Addr>()
                    .map_err(|_| ListenAddrError::Host(s.to_owned()))?,
            )
        };
        Ok(ListenAddr::Tcp(SocketAddr::new(ip, port)))
    }
}

fn parse_port(port: &str, whole: &str) -> Result<u16, ListenAddrError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ListenAddrError::Syntax(whole.to_owned()));
    }
    port.parse()
        .map_err(|_| ListenAddrError::Port(whole.to_owned()))
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::AnyPort(port) => write!(f, "[::]:{port}"),
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_forms() {
        assert_eq!("3000".parse(), Ok(ListenAddr::AnyPort(3000)));
        assert_eq!(
            "127.0.0.1:0".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:80".parse(),
            Ok(ListenAddr::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            "localhost:8080".parse(),
            Ok(ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(ListenAddr::Unix("/tmp/a.sock".into()))
        );
    }

    #[test]
    fn rejects_bad_listen_addresses() {
        assert!(matches!(
            "".parse::<ListenAddr>(),
            Err(ListenAddrError::Syntax(_))
        ));
        assert!(matches!(
            "70000".parse::<ListenAddr>(),
            Err(ListenAddrError::Port(_))
        ));
        assert!(matches!(
            "example.com:80".parse::<ListenAddr>(),
            Err(ListenAddrError::Host(_))
        ));
        assert!(matches!(
            "::1:80".parse::<ListenAddr>(),
            Err(ListenAddrError::Syntax(_))
        ));
        assert!(matches!(
            "1.2.3.4:".parse::<ListenAddr>(),
            Err(ListenAddrError::Syntax(_))
        ));
        assert!(matches!(
            "unix:".parse::<ListenAddr>(),
            Err(ListenAddrError::Syntax(_))
        ));
    }

    #[test]
    fn listen_spec_takes_an_optional_name() {
        let spec: ListenSpec = "http=127.0.0.1:80".parse().unwrap();
        assert_eq!(spec.name.as_deref(), Some("http"));
        let spec: ListenSpec = "unix:/tmp/x=y.sock".parse().unwrap();
        assert_eq!(spec.name, None);
        assert!(matches!(
            "a:b=80".parse::<ListenSpec>(),
            Err(ListenAddrError::Name(_))
        ));
    }

    #[test]
    fn instances_resolve_against_cpus() {
        assert_eq!("max".parse::<Instances>().unwrap().resolve(4), 4);
        assert_eq!("-1".parse::<Instances>().unwrap().resolve(4), 3);
        assert_eq!("-9".parse::<Instances>().unwrap().resolve(4), 1);
        assert_eq!("3".parse::<Instances>().unwrap().resolve(4), 3);
        assert_eq!("0".parse::<Instances>(), Ok(Instances::Max));
        assert!(matches!(
            "two".parse::<Instances>(),
            Err(InstancesError::Invalid(_))
        ));
    }
}
