//! Prometheus metrics (`/metrics`) and Kubernetes probes (`/livez`, `/readyz`) over
//! HTTP for corral's engine: `corral run`, the daemon (every app) and the embedded
//! cluster. One task owns the [`Board`]; the supervisor sends it reports, the HTTP side
//! asks it questions.
//!
//! In an embedded cluster (its primary has no runtime of its own to lend):
//!
//! ```no_run
//! use corral_core::cluster::Cluster;
//!
//! let mut cluster = Cluster::builder().workers(2).name("web");
//! // Workers run this same binary: only the primary serves metrics.
//! if !Cluster::is_worker() {
//!     let (metrics, _addr) =
//!         corral_metrics::serve_on_thread("127.0.0.1:9100".parse().unwrap(), None).unwrap();
//!     metrics.started("web", 2);
//!     cluster = cluster.on_report(metrics.observer("web"));
//! }
//! cluster.run(|| async { /* a worker */ }).unwrap();
//! ```

mod board;
mod conns;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use corral_core::group::Report;
use corral_core::process::Pid;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

pub use board::{Board, Usage};

enum Msg {
    Started(String, usize),
    Forget(String),
    Report(String, Report),
    Pids(oneshot::Sender<Vec<Pid>>),
    Render(Box<Scrape>, oneshot::Sender<String>),
    Ready(oneshot::Sender<Result<String, String>>),
}

/// What a scrape read from /proc, off the board's task.
struct Scrape {
    usage: BTreeMap<Pid, Usage>,
    own: Usage,
    open_fds: usize,
}

/// A handle on the board's task. Cheap to clone; sending never waits.
#[derive(Clone)]
pub struct Metrics {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Metrics {
    /// Starts the board's task; `min_ready` is what `/readyz` asks of each app (None: all).
    pub fn spawn(min_ready: Option<usize>) -> Metrics {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut board = Board::new(min_ready);
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Started(app, n) => board.started(&app, n),
                    Msg::Forget(app) => board.forget(&app),
                    Msg::Report(app, report) => board.apply(&app, &report),
                    Msg::Pids(reply) => {
                        let _ = reply.send(board.pids());
                    }
                    Msg::Render(scrape, reply) => {
                        let _ =
                            reply.send(board.render(&scrape.usage, scrape.own, scrape.open_fds));
                    }
                    Msg::Ready(reply) => {
                        let _ = reply.send(board.readiness());
                    }
                }
            }
        });
        Metrics { tx }
    }

    pub fn started(&self, app: &str, instances: usize) {
        let _ = self.tx.send(Msg::Started(app.to_owned(), instances));
    }

    pub fn forget(&self, app: &str) {
        let _ = self.tx.send(Msg::Forget(app.to_owned()));
    }

    pub fn report(&self, app: &str, report: &Report) {
        let _ = self.tx.send(Msg::Report(app.to_owned(), report.clone()));
    }

    /// A callback that hands every report of `app` to the board, for
    /// `corral_core::cluster::Builder::on_report`.
    pub fn observer(&self, app: &str) -> impl FnMut(&Report) + Send + 'static {
        let (metrics, app) = (self.clone(), app.to_owned());
        move |report| metrics.report(&app, report)
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).ok()?;
        rx.await.ok()
    }

    async fn scrape(&self) -> Option<String> {
        let pids = self.ask(Msg::Pids).await?;
        let scrape = tokio::task::spawn_blocking(move || read_proc(&pids))
            .await
            .ok()?;
        self.ask(|reply| Msg::Render(Box::new(scrape), reply)).await
    }
}

/// Memory and CPU of `pids` (whole trees for memory) and of corral itself.
fn read_proc(pids: &[Pid]) -> Scrape {
    use corral_core::os::memory::{cpu_ticks, tree_rss};
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let me = std::process::id() as Pid;
    let mut roots = pids.to_vec();
    roots.push(me);
    let memory = tree_rss(&roots);
    let usage_of = |pid: Pid| Usage {
        memory: memory.get(&pid).copied().unwrap_or(0),
        cpu_seconds: cpu_ticks(pid).unwrap_or(0) as f64 / hz,
    };
    let own = Usage {
        // corral's own process only, not its workers.
        memory: corral_core::os::memory::rss(me).unwrap_or(0),
        ..usage_of(me)
    };
    Scrape {
        usage: pids.iter().map(|&p| (p, usage_of(p))).collect(),
        own,
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
    }
}

/// Starts the board and serves it on `addr` from a thread of their own, for a process
/// without a tokio runtime to lend (the embedded cluster's primary). They run until the
/// process exits.
pub fn serve_on_thread(
    addr: SocketAddr,
    min_ready: Option<usize>,
) -> std::io::Result<(Metrics, SocketAddr)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("corral-metrics".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => return drop(tx.send(Err(e))),
            };
            runtime.block_on(async move {
                let metrics = Metrics::spawn(min_ready);
                let served = serve(addr, metrics.clone()).await;
                let failed = served.is_err();
                let _ = tx.send(served.map(|local| (metrics, local)));
                if !failed {
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the metrics thread ended before it served"))?
}

/// Serves `/metrics`, `/livez` and `/readyz` on `addr` until the runtime ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let mut conns = conns::Conns::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of fds: the scraper retries; corral must not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            if !conns.make_room() {
                continue; // every open one is mid-request: this one is closed
            }
            let flags = std::sync::Arc::new(conns::Flags::default());
            let task = tokio::spawn(connection(stream, metrics.clone(), flags.clone()));
            conns.add(flags, task.abort_handle());
        }
    });
    Ok(local)
}

/// Serves one connection for 30 s at most, saying when it is within a request.
async fn connection(
    stream: tokio::net::TcpStream,
    metrics: Metrics,
    flags: std::sync::Arc<conns::Flags>,
) {
    use std::sync::atomic::Ordering;
    let shared = flags.clone();
    let service = hyper::service::service_fn(move |req| {
        let (metrics, flags) = (metrics.clone(), shared.clone());
        async move {
            flags.busy.store(true, Ordering::Release);
            let response = answer(req, metrics).await;
            flags.busy.store(false, Ordering::Release);
            response
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(conns::HEAD_TIMEOUT);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        http.serve_connection(io, service),
    )
    .await;
    flags.ended.store(true, Ordering::Release);
}

async fn answer<B>(req: Request<B>, metrics: Metrics) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, kind, body) = match req.uri().path() {
        "/metrics" => match metrics.scrape().await {
            Some(text) => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "stopping\n".into(),
            ),
        },
        // Answered by the board's task: the supervisor's runtime is turning.
        "/livez" => match metrics.ask(Msg::Ready).await {
            Some(_) => (StatusCode::OK, "text/plain", "ok\n".into()),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "stopping\n".into(),
            ),
        },
        "/readyz" => match metrics.ask(Msg::Ready).await {
            Some(Ok(text)) => (StatusCode::OK, "text/plain", format!("{text}\n")),
            Some(Err(why)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "stopping\n".into(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "corral serves /metrics, /livez and /readyz\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    Ok(response)
}
