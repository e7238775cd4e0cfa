//! Names of the environment variables corral sets for each worker, and what they hold.

/// First file descriptor of the inherited listeners (systemd socket activation).
pub const LISTEN_FDS_START: i32 = 3;
/// Number of inherited listening sockets, starting at fd 3.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the listeners are meant for; a process whose pid differs must ignore them.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Colon-separated names of the inherited listeners, in fd order.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// Path of the datagram socket that takes sd_notify messages (`READY=1`, ...).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Watchdog interval in microseconds: the worker sends `WATCHDOG=1` at least this often.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid `WATCHDOG_USEC` is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// Name of the app the worker belongs to.
pub const CORRAL_APP: &str = "CORRAL_APP";
/// Stable slot of the worker, `0..N-1`; a replacement inherits its predecessor's slot.
pub const CORRAL_WORKER_ID: &str = "CORRAL_WORKER_ID";
/// Same value as `CORRAL_WORKER_ID`, for apps written for PM2.
pub const NODE_APP_INSTANCE: &str = "NODE_APP_INSTANCE";
/// Port of the first TCP listener.
pub const PORT: &str = "PORT";
/// The fd of the worker's end of its channel to the supervisor (newline-delimited JSON).
pub const CORRAL_CHANNEL_FD: &str = "CORRAL_CHANNEL_FD";
/// Set in the workers of an embedded cluster (`corral_core::Cluster`): this process is
/// a worker, not the primary.
pub const CORRAL_CLUSTER_WORKER: &str = "CORRAL_CLUSTER_WORKER";
/// Overrides the configured number of workers when set.
pub const WORKERS: &str = "WORKERS";

/// Variables that describe how *corral itself* was started (for example by systemd) and
/// must never leak into a worker, because they would describe the wrong fds or pids.
pub const NOT_INHERITED: &[&str] = &[
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    NOTIFY_SOCKET,
    WATCHDOG_USEC,
    WATCHDOG_PID,
];
