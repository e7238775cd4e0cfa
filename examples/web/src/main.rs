//! corral-web: an axum app in the shape production guides recommend, run by corral.
//!
//! - under `corral run`:  `corral run --listen 3000 -i max -- corral-web`
//! - as its own primary:  `corral-web --cluster 2 --listen 3000` (embedded cluster);
//!   `--metrics 127.0.0.1:9100` adds corral's Prometheus metrics and probes
//!
//! Routes: `/` (who served), `/health`, `/heavy?n=` (CPU work off the async runtime),
//! `POST /login?user=` + `GET /session` (sessions shared by all workers through Redis at
//! `REDIS_URL`, default redis://127.0.0.1:6379; in-memory, per worker, when Redis is
//! absent), `/config` (what the primary pushed, in cluster mode).

mod sessions;

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_core::cluster::{Cluster, ClusterEvent};
use corral_worker::Worker;
use serde::Deserialize;
use serde_json::json;

use sessions::Sessions;

#[derive(Clone)]
struct App {
    pid: u32,
    slot: Option<usize>,
    sessions: Arc<Sessions>,
    config: Arc<Mutex<serde_json::Value>>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cluster = flag_value(&args, "--cluster");
    let listen = flag_value(&args, "--listen").unwrap_or_else(|| "3000".into());
    let result = match cluster {
        Some(n) => run_cluster(&n, &listen, flag_value(&args, "--metrics")),
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(worker_main());
            Ok(())
        }
    };
    if let Err(message) = result {
        eprintln!("corral-web: {message}");
        std::process::exit(2);
    }
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).cloned()
}

/// The embedded cluster: this binary is its own primary. It pushes a config to every
/// worker that gets ready and prints the metrics workers report.
fn run_cluster(workers: &str, listen: &str, metrics: Option<String>) -> Result<(), String> {
    let workers: usize = workers
        .parse()
        .map_err(|_| format!("--cluster takes a number of workers, not `{workers}`"))?;
    let mut cluster = Cluster::builder()
        .workers(workers)
        .listen(listen)
        .name("corral-web");
    // The workers run this same binary: only the primary serves the metrics.
    if let (Some(addr), false) = (metrics, Cluster::is_worker()) {
        let addr = addr.parse().map_err(|_| {
            format!("--metrics takes an address such as 127.0.0.1:9100, not `{addr}`")
        })?;
        let (metrics, local) = corral_metrics::serve_on_thread(addr, None)
            .map_err(|e| format!("cannot serve --metrics on {addr}: {e}"))?;
        say(format_args!("primary: metrics on http://{local}/metrics"));
        metrics.started("corral-web", workers);
        cluster = cluster.on_report(metrics.observer("corral-web"));
    }
    cluster
        .on_event(|event, cluster| match event {
            ClusterEvent::Ready { slot, pid } => {
                say(format_args!(
                    "primary: worker {slot} (pid {pid}) is ready; pushing config"
                ));
                cluster.broadcast(json!({ "config": { "greeting": "hello from the primary" } }));
            }
            ClusterEvent::Message { slot, data, .. } => {
                say(format_args!("primary: worker {slot} reports {data}"));
            }
            ClusterEvent::Exit {
                slot,
                status,
                expected: false,
                ..
            } => {
                say(format_args!(
                    "primary: worker {slot} died ({status}); it is being replaced"
                ));
            }
            _ => {}
        })
        .run(worker_main)
        .map_err(|e| e.to_string())
}

/// A line on stdout; a closed or full stdout loses it rather than panicking.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

async fn worker_main() {
    let worker = match Worker::start().await {
        Ok(worker) => Arc::new(worker),
        Err(e) => {
            eprintln!("corral-web: {e}");
            std::process::exit(2);
        }
    };
    let app = App {
        pid: std::process::id(),
        slot: worker.slot(),
        sessions: Arc::new(Sessions::connect().await),
        config: Arc::new(Mutex::new(serde_json::Value::Null)),
    };
    if let Some(mut messages) = worker.messages() {
        let config = app.config.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                if let Some(new) = message.data.get("config") {
                    *config.lock().expect("config lock") = new.clone();
                }
            }
        });
    }
    let reporter = worker.clone();
    tokio::spawn(async move {
        // Metrics for the primary (or corral's output), every few seconds.
        let every = std::env::var("METRICS_EVERY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(every)).await;
            reporter.send(&json!({ "metrics": { "pid": std::process::id() } }));
        }
    });
    let router = Router::new()
        .route("/", get(index))
        .route("/health", get(|| async { "ok\n" }))
        .route("/heavy", get(heavy))
        .route("/login", post(login))
        .route("/session", get(session))
        .route("/config", get(config))
        .with_state(app);
    worker.ready();
    corral_worker::http::serve(
        &worker,
        hyper_util::service::TowerToHyperService::new(router),
    )
    .await;
}

async fn index(State(app): State<App>) -> String {
    format!("hello from pid {} slot {:?}\n", app.pid, app.slot)
}

#[derive(Deserialize)]
struct HeavyQuery {
    n: Option<u64>,
}

/// Counts primes below n: CPU work runs on the blocking pool, so this worker's other
/// connections (and its heartbeats) keep going meanwhile.
async fn heavy(Query(q): Query<HeavyQuery>) -> Response {
    let n = q.n.unwrap_or(100_000).min(50_000_000);
    match tokio::task::spawn_blocking(move || count_primes(n)).await {
        Ok(count) => Json(json!({ "n": n, "primes": count })).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn count_primes(n: u64) -> u64 {
    let n = n as usize;
    if n < 2 {
        return 0;
    }
    let mut sieve = vec![true; n];
    sieve[0] = false;
    sieve[1] = false;
    let mut i = 2;
    while i * i < n {
        if sieve[i] {
            (i * i..n).step_by(i).for_each(|j| sieve[j] = false);
        }
        i += 1;
    }
    sieve.iter().filter(|&&p| p).count() as u64
}

#[derive(Deserialize)]
struct LoginQuery {
    user: String,
}

async fn login(State(app): State<App>, Query(q): Query<LoginQuery>) -> Response {
    if q.user.is_empty() || q.user.len() > 64 {
        return (StatusCode::BAD_REQUEST, "user must be 1 to 64 characters\n").into_response();
    }
    match app.sessions.create(&q.user).await {
        Ok(sid) => (
            [(header::SET_COOKIE, format!("sid={sid}; HttpOnly; Path=/"))],
            Json(json!({ "user": q.user, "served_by": app.pid })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("session store: {e}\n"),
        )
            .into_response(),
    }
}

async fn session(State(app): State<App>, headers: HeaderMap) -> Response {
    let sid = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sid=").map(str::to_owned));
    let Some(sid) = sid else {
        return (
            StatusCode::UNAUTHORIZED,
            "no session cookie; POST /login?user=NAME first\n",
        )
            .into_response();
    };
    match app.sessions.user(&sid).await {
        Ok(Some(user)) => {
            Json(json!({ "user": user, "served_by": app.pid, "store": app.sessions.kind() }))
                .into_response()
        }
        Ok(None) => (StatusCode::UNAUTHORIZED, "session expired or unknown\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("session store: {e}\n"),
        )
            .into_response(),
    }
}

async fn config(State(app): State<App>) -> Json<serde_json::Value> {
    let config = app.config.lock().expect("config lock").clone();
    Json(json!({ "config": config, "served_by": app.pid }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_primes() {
        assert_eq!(count_primes(10), 4);
        assert_eq!(count_primes(100), 25);
        assert_eq!(count_primes(1), 0);
    }
}
