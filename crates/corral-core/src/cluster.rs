//! The embedded cluster: a Rust binary that is its own primary, as a Node script uses
//! `cluster.isPrimary` / `cluster.fork()`.
//!
//! ```no_run
//! use corral_core::cluster::{Cluster, ClusterEvent};
//!
//! Cluster::builder()
//!     .workers(2)
//!     .listen("127.0.0.1:3000")
//!     .on_event(|event, cluster| {
//!         if let ClusterEvent::Ready { .. } = event {
//!             cluster.broadcast(serde_json::json!({ "config": 1 }));
//!         }
//!     })
//!     .run(|| async {
//!         // In each worker: take connections with corral-worker's `Worker`.
//!     })
//!     .expect("cluster");
//! ```
//!
//! The primary re-executes the current binary for each worker (never `fork` in a
//! multithreaded process); the workers find `CORRAL_CLUSTER_WORKER` set and run the
//! closure passed to [`Builder::run`]. Everything else is the same engine as `corral run`.

use std::future::Future;

use corral_proto::env;
use tokio::sync::mpsc;

use crate::dispatch::Balance;
use crate::group::{Control, Outcome, Report};
use crate::listen::{self, BindError};
use crate::process::{ExitStatus, Pid};
use crate::restart::RestartPolicy;
use crate::spec::{
    AppSpec, HealthPolicy, Instances, ListenAddrError, ListenSpec, ReadyPolicy, StopPolicy,
};
use crate::supervisor::Command;
use crate::supervisor::{self, RunError};

/// Entry point; see the module docs.
pub struct Cluster;

impl Cluster {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Whether this process is one of the cluster's workers.
    pub fn is_worker() -> bool {
        std::env::var_os(env::CORRAL_CLUSTER_WORKER).is_some()
    }
}

/// What the primary sees happen.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// A worker process started.
    Online {
        slot: usize,
        pid: Pid,
    },
    Ready {
        slot: usize,
        pid: Pid,
    },
    Exit {
        slot: usize,
        pid: Pid,
        status: ExitStatus,
        expected: bool,
    },
    /// A worker sent a message (`worker.send(..)`).
    Message {
        slot: usize,
        pid: Pid,
        data: serde_json::Value,
    },
    /// Anything else the engine reports (restarts, reloads, health).
    Other(Report),
}

impl From<Report> for ClusterEvent {
    fn from(report: Report) -> Self {
        match report {
            Report::Spawned { slot, pid, .. } => ClusterEvent::Online { slot, pid },
            Report::Ready { slot, pid, .. } => ClusterEvent::Ready { slot, pid },
            Report::Exited {
                slot,
                pid,
                status,
                expected,
                ..
            } => ClusterEvent::Exit {
                slot,
                pid,
                status,
                expected,
            },
            Report::Message { slot, pid, data } => ClusterEvent::Message { slot, pid, data },
            other => ClusterEvent::Other(other),
        }
    }
}

/// What the primary can ask of its workers.
#[derive(Debug, Clone)]
pub struct Handle {
    controls: mpsc::Sender<Command>,
}

impl Handle {
    /// Sends `data` to every worker (it arrives in `Worker::messages()`).
    pub fn broadcast(&self, data: serde_json::Value) {
        let _ = self.controls.try_send(Command::Message(data));
    }

    /// Rolling reload: replaces every worker without dropping connections.
    pub fn reload(&self) {
        let _ = self.controls.try_send(Control::Reload.into());
    }

    /// Graceful stop; `run` returns once every worker has exited.
    pub fn stop(&self) {
        let _ = self.controls.try_send(Control::Stop.into());
    }
}

/// Why the cluster could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Listen(#[from] ListenAddrError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot find this program's own executable to start workers")]
    Exe(#[source] std::io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("every worker gave up; nothing is running")]
    Failed,
}

type EventHandler = Box<dyn FnMut(&ClusterEvent, &Handle) + Send>;
type ReportHandler = Box<dyn FnMut(&Report) + Send>;

/// Configures a cluster. Defaults: one worker per usable CPU, `auto` balance, the same
/// restart, stop and health policies as `corral run`.
pub struct Builder {
    name: Option<String>,
    instances: Instances,
    listen: Vec<String>,
    balance: Balance,
    ready: ReadyPolicy,
    restart: RestartPolicy,
    stop: StopPolicy,
    health: HealthPolicy,
    on_event: Option<EventHandler>,
    on_report: Option<ReportHandler>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            name: None,
            instances: Instances::Max,
            listen: Vec::new(),
            balance: Balance::Auto,
            // Workers of an embedded cluster use corral-worker, which says when it is ready.
            ready: ReadyPolicy::Notify {
                timeout: std::time::Duration::from_secs(30),
                assume_ready: false,
            },
            restart: RestartPolicy::default(),
            stop: StopPolicy::default(),
            health: HealthPolicy::default(),
            on_event: None,
            on_report: None,
        }
    }
}

impl Builder {
    pub fn workers(mut self, n: usize) -> Self {
        self.instances = Instances::Count(n.max(1));
        self
    }

    pub fn instances(mut self, instances: Instances) -> Self {
        self.instances = instances;
        self
    }

    /// An address as `corral run --listen` takes it; checked when the cluster runs.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen.push(addr.into());
        self
    }

    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn ready(mut self, ready: ReadyPolicy) -> Self {
        self.ready = ready;
        self
    }

    pub fn health(mut self, health: HealthPolicy) -> Self {
        self.health = health;
        self
    }

    pub fn stop_policy(mut self, stop: StopPolicy) -> Self {
        self.stop = stop;
        self
    }

    /// Called in the primary for every event, with a handle to message or reload workers.
    pub fn on_event(
        mut self,
        handler: impl FnMut(&ClusterEvent, &Handle) + Send + 'static,
    ) -> Self {
        self.on_event = Some(Box::new(handler));
        self
    }

    /// Called in the primary with every report of the engine as it is (the same
    /// reports `corral run` prints), before `on_event`: for metrics
    /// (`corral_metrics::Metrics::observer`) or logs of your own.
    pub fn on_report(mut self, handler: impl FnMut(&Report) + Send + 'static) -> Self {
        self.on_report = Some(Box::new(handler));
        self
    }

    /// In a worker: runs `worker` to completion on a fresh runtime. In the primary:
    /// supervises the workers until SIGTERM/SIGINT (or [`Handle::stop`]).
    pub fn run<F, Fut>(self, worker: F) -> Result<(), ClusterError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?;
        if Cluster::is_worker() {
            runtime.block_on(worker());
            return Ok(());
        }
        let spec = self.spec()?;
        let listeners = listen::bind_all(&spec.listen, spec.balance.reuseport())?;
        let _ = crate::os::become_subreaper();
        crate::os::keeper::start().map_err(ClusterError::Runtime)?;
        let handlers = (self.on_event, self.on_report);
        runtime.block_on(primary(spec, listeners, handlers))
    }

    fn spec(&self) -> Result<AppSpec, ClusterError> {
        let exe = std::env::current_exe().map_err(ClusterError::Exe)?;
        let mut command = vec![exe.clone().into_os_string()];
        command.extend(std::env::args_os().skip(1));
        let listen = self
            .listen
            .iter()
            .map(|a| a.parse::<ListenSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let mut env: Vec<_> = std::env::vars_os().collect();
        env.push((env::CORRAL_CLUSTER_WORKER.into(), "1".into()));
        let name = self.name.clone().unwrap_or_else(|| {
            exe.file_stem()
                .map_or("app".into(), |s| s.to_string_lossy().into_owned())
        });
        Ok(AppSpec {
            name,
            command,
            cwd: None,
            env,
            instances: self.instances.resolve(crate::spec::usable_cpus()),
            listen,
            ready: self.ready,
            settle: std::time::Duration::from_secs(1),
            restart: self.restart,
            stop: self.stop,
            watchdog: None,
            die_with_supervisor: true,
            balance: self.balance,
            health: self.health,
            asked_ports: false,
            per_slot: Default::default(),
            stdin_pipe: false,
        })
    }
}

async fn primary(
    spec: AppSpec,
    listeners: Vec<listen::Listener>,
    (mut on_event, mut on_report): (Option<EventHandler>, Option<ReportHandler>),
) -> Result<(), ClusterError> {
    let (controls_tx, controls) = mpsc::channel(64);
    let (reports, mut report_rx) = mpsc::unbounded_channel();
    let (logs, log_rx) = mpsc::channel::<crate::output::LogLine>(1024);
    let handle = Handle {
        controls: controls_tx.clone(),
    };
    let signals = crate::signals::forward(controls_tx).map_err(ClusterError::Runtime)?;
    // Worker output goes to the primary's own stdout/stderr, whole lines at a time, from
    // a thread: a stalled or closed stdout must not stop supervision.
    let printed = crate::writer::spawn_log_writer(log_rx, |line| {
        use std::io::Write;
        let mut text = Vec::with_capacity(line.text.len() + 1);
        text.extend_from_slice(&line.text);
        text.push(b'\n');
        let _ = match line.stream {
            crate::output::Stream::Stdout => std::io::stdout().lock().write_all(&text),
            crate::output::Stream::Stderr => std::io::stderr().lock().write_all(&text),
        };
    });
    // The handler is the app's code and may block (a println! to a stalled terminal):
    // it runs on a thread of its own, never on the supervisor's.
    let (event_tx, event_rx) = std::sync::mpsc::channel::<Report>();
    let handler = std::thread::Builder::new()
        .name("corral-cluster-events".into())
        .spawn(move || {
            while let Ok(report) = event_rx.recv() {
                if let Some(observe) = on_report.as_mut() {
                    observe(&report);
                }
                if let Some(handler) = on_event.as_mut() {
                    handler(&ClusterEvent::from(report), &handle);
                }
            }
        })
        .map_err(ClusterError::Runtime)?;
    let events = tokio::spawn(async move {
        while let Some(report) = report_rx.recv().await {
            let _ = event_tx.send(report);
        }
    });
    let channels = supervisor::Channels {
        controls,
        reports: supervisor::Reports::channel(reports),
        logs,
        reap_all: true,
    };
    let outcome = supervisor::run(
        &spec,
        &listeners,
        &crate::signals::runtime_dir(),
        channels,
        None,
    )
    .await;
    signals.abort();
    let _ = events.await;
    drop(handler); // detached: a handler stuck on a stalled stdout must not hold up the exit
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), printed).await;
    match outcome? {
        // The embedded cluster never asks for a hand-over.
        Outcome::Stopped | Outcome::HandedOver => Ok(()),
        Outcome::Failed => Err(ClusterError::Failed),
    }
}
