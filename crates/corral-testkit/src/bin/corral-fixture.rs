//! corral-fixture: an HTTP worker for corral's tests that answers with its pid and slot, and
//! misbehaves when asked to through `FIXTURE_*` environment variables.
//!
//! | variable | effect |
//! |---|---|
//! | `FIXTURE_EXIT_AT_START=CODE` | exit with CODE before doing anything |
//! | `FIXTURE_READY_THEN_EXIT_MS=MS` | send READY=1 at once, serve nothing, exit 3 after MS (a server that says it is ready before its workers load, then fails) |
//! | `FIXTURE_CRASH_AFTER=N` | exit 3 right after answering the Nth request |
//! | `FIXTURE_HANG_AFTER=N` | after the Nth request, block the whole process: no answers, no watchdog |
//! | `FIXTURE_IGNORE_SIGTERM=1` | ignore SIGTERM (corral must SIGKILL it) |
//! | `FIXTURE_DRAIN_MS=MS` | after draining, wait this long before exiting |
//! | `FIXTURE_IDLE_GRACE_MS=MS` | while draining, close idle keep-alive connections after this (default 1000) |
//! | `FIXTURE_NEVER_READY=1` | never send READY=1 |
//! | `FIXTURE_READY_DELAY_MS=MS` | wait this long before sending READY=1 |
//! | `FIXTURE_HEARTBEAT_MS=MS` | heartbeat interval (default 1000) |
//! | `FIXTURE_SLOW_SLOT=SLOT:MS` | the worker in SLOT takes MS for every request |
//! | `FIXTURE_HANG_SLOT=SLOT` | only the worker in SLOT hangs (with `FIXTURE_HANG_AFTER`) |
//! | `FIXTURE_QUIT_AFTER=N` | stop accepting after N connections, finish them, exit 3 (a crash that drops none of its own) |
//! | `FIXTURE_CRASH_SLOT=SLOT` | only the worker in SLOT crashes or quits (with `FIXTURE_CRASH_AFTER`, `FIXTURE_QUIT_AFTER`) |
//! | `FIXTURE_STATUS=TEXT` | send `STATUS=TEXT` just before READY=1 |
//! | `FIXTURE_LEAK_KB=KB` | keep KB of touched memory per request |
//! | `FIXTURE_PRINT_LINES=N` | print N numbered 200-byte lines to stdout at start |
//! | `FIXTURE_ORPHAN=1` | leave a short-lived orphan process behind at start |
//! | `FIXTURE_DEPLOY=PATH` | if PATH exists, its `KEY=VALUE` lines are added to these at start (a "deploy") |
//!
//! SIGUSR1 prints `got SIGUSR1` on stderr.
//! Routes: `/` (pid, slot, NODE_APP_INSTANCE, app, inherited listener names, mode),
//! `/broadcast?msg=TEXT` and `/send?msg=TEXT` (channel messages), `/abuse` (write
//! garbage, an overlong line and a flood on the channel, beside the real traffic), `/slow?ms=N`, `/env/NAME`.
//! Drain on SIGTERM: stop accepting, finish in-flight requests, answer the next request on
//! each kept-alive connection with `Connection: close`, close idle ones after the grace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

struct State {
    requests: AtomicUsize,
    active: AtomicUsize,
    idle: Notify,
    draining: watch::Receiver<bool>,
    grace: Duration,
    leak: Mutex<Vec<Vec<u8>>>,
    identity: String,
    worker: Arc<corral_worker::Worker>,
}

/// Applies the "deployed" settings, so a test can change what the next worker does.
fn apply_deploy() {
    let Ok(path) = std::env::var("FIXTURE_DEPLOY") else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            // Single-threaded at this point.
            std::env::set_var(key.trim(), value.trim());
        }
    }
}

fn main() {
    apply_deploy();
    if let Some(fd) = std::env::var("CORRAL_CHANNEL_FD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        let _ = CHANNEL_FD.set(fd);
    }
    if let Some(code) = env_num("FIXTURE_EXIT_AT_START") {
        eprintln!("fixture: exiting at start with code {code} as asked");
        std::process::exit(code as i32);
    }
    if let Some(ms) = env_num("FIXTURE_READY_THEN_EXIT_MS") {
        let _ = corral_worker::ready();
        std::thread::sleep(Duration::from_millis(ms));
        eprintln!("fixture: failed to load after saying READY=1, as asked");
        std::process::exit(3);
    }
    if env_flag("FIXTURE_IGNORE_SIGTERM") {
        // SAFETY: setting a disposition to SIG_IGN installs no handler code.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::SIGTERM,
                nix::sys::signal::SigHandler::SigIgn,
            )
        }
        .expect("ignore SIGTERM");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve());
}

async fn serve() {
    let options = corral_worker::Options {
        // A handler would undo SIG_IGN, so an ignoring fixture never installs one.
        sigterm: !env_flag("FIXTURE_IGNORE_SIGTERM"),
        heartbeat: Some(Duration::from_millis(
            env_num("FIXTURE_HEARTBEAT_MS").unwrap_or(1000),
        )),
    };
    let worker = Arc::new(
        corral_worker::Worker::start_with(options)
            .await
            .expect("corral-fixture needs a listener: run it under corral with --listen"),
    );
    let pid = std::process::id();
    let slot = std::env::var("CORRAL_WORKER_ID").unwrap_or_default();
    let app = std::env::var("CORRAL_APP").unwrap_or_default();
    let instance = std::env::var("NODE_APP_INSTANCE").unwrap_or_default();
    let mode = if worker.dispatched() {
        "dispatched"
    } else {
        "shared"
    };
    println!("fixture pid={pid} slot={slot} listening mode={mode}");
    if let Some(n) = env_num("FIXTURE_PRINT_LINES") {
        print_lines(n, &slot);
    }
    if env_flag("FIXTURE_ORPHAN") {
        let _ = std::process::Command::new("sh")
            .args(["-c", "sleep 1 &"])
            .status();
    }
    let (drain_tx, draining) = watch::channel(false);
    let state = Arc::new(State {
        requests: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        idle: Notify::new(),
        draining,
        grace: Duration::from_millis(env_num("FIXTURE_IDLE_GRACE_MS").unwrap_or(1000)),
        leak: Mutex::new(Vec::new()),
        identity: format!(
            "pid={pid} slot={slot} instance={instance} app={app} fdnames={} mode={mode}",
            worker.listener_names().join(":")
        ),
        worker: worker.clone(),
    });
    // Installed before READY=1, so a forwarded SIGUSR1 never meets the default action.
    let usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("SIGUSR1 handler");
    tokio::spawn(report_usr1(pid, usr1));
    if let Some(messages) = worker.messages() {
        tokio::spawn(print_messages(pid, messages));
    }
    tokio::spawn(send_ready(worker.clone()));
    tokio::spawn(watchdog());
    let quit_after = env_num("FIXTURE_QUIT_AFTER").filter(|_| in_slot("FIXTURE_CRASH_SLOT"));
    let mut accepted = 0;
    while let Some(conn) = worker.accept().await {
        accepted += 1;
        state.active.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            connection(Box::new(conn), &state).await;
            if state.active.fetch_sub(1, Ordering::SeqCst) == 1 {
                state.idle.notify_one();
            }
        });
        if quit_after.is_some_and(|n| accepted >= n) {
            break;
        }
    }
    let _ = drain_tx.send(true);
    eprintln!("fixture pid={pid} draining");
    while state.active.load(Ordering::SeqCst) > 0 {
        let idle = state.idle.notified();
        if state.active.load(Ordering::SeqCst) == 0 {
            break;
        }
        idle.await;
    }
    if let Some(ms) = env_num("FIXTURE_DRAIN_MS") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    eprintln!("fixture pid={pid} drained");
    if quit_after.is_some() {
        eprintln!("fixture pid={pid} quitting after {accepted} connections as asked");
        std::process::exit(3);
    }
}

/// Writes what a broken or hostile worker might on its channel, from a thread of its own
/// on a duplicate of the channel fd, while the real worker goes on normally.
/// The channel fd, noted before corral-worker takes (and unsets) `CORRAL_CHANNEL_FD`.
static CHANNEL_FD: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

fn abuse_channel() {
    use std::os::fd::BorrowedFd;
    let Some(&fd) = CHANNEL_FD.get() else {
        return;
    };
    // SAFETY: the channel fd stays open for the worker's life; the duplicate is owned
    // by the thread.
    let dup = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .expect("dup channel");
    let out = std::os::unix::net::UnixStream::from(dup);
    std::thread::spawn(move || {
        let flood = b"{\"cmd\":\"CORRAL_HEARTBEAT\"}\n".repeat(50_000);
        for chunk in [
            &b"this is not json\n"[..],
            &vec![b'x'; 200 * 1024],
            b"\n",
            &flood,
        ] {
            write_fully(&out, chunk);
        }
        eprintln!("fixture pid={} abused its channel", std::process::id());
    });
}

/// Writes all of `bytes` on a socket whose file description is non-blocking (the
/// worker library made it so).
fn write_fully(mut out: &std::os::unix::net::UnixStream, mut bytes: &[u8]) {
    use std::io::Write;
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return,
        }
    }
}

async fn print_messages(
    pid: u32,
    mut messages: tokio::sync::mpsc::UnboundedReceiver<corral_worker::Incoming>,
) {
    while let Some(m) = messages.recv().await {
        let from = m
            .from
            .map_or("supervisor".to_string(), |s| format!("worker {s}"));
        println!("fixture pid={pid} got message from {from}: {}", m.data);
    }
}

/// Says so on stderr when SIGUSR1 arrives, so tests can see that corral forwarded it.
async fn report_usr1(pid: u32, mut usr1: tokio::signal::unix::Signal) {
    while usr1.recv().await.is_some() {
        eprintln!("fixture pid={pid} got SIGUSR1");
    }
}

fn print_lines(n: u64, slot: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let line = format!("line slot={slot} n={i} ");
        let pad = "x".repeat(200 - line.len());
        let _ = writeln!(out, "{line}{pad}");
    }
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

async fn send_ready(worker: Arc<corral_worker::Worker>) {
    if env_flag("FIXTURE_NEVER_READY") {
        return;
    }
    if let Some(ms) = env_num("FIXTURE_READY_DELAY_MS") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Ok(text) = std::env::var("FIXTURE_STATUS") {
        let _ = corral_worker::status(&text);
    }
    worker.ready();
}

async fn watchdog() {
    let Some(interval) = corral_worker::watchdog_interval() else {
        return;
    };
    loop {
        let _ = corral_worker::watchdog();
        tokio::time::sleep(interval / 4).await;
    }
}

struct Request {
    path: String,
    close: bool,
}

/// Takes one request head (and skips its body) off the front of `buf`, when complete.
fn parse(buf: &mut Vec<u8>) -> Option<Request> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let _method = parts.next();
    let path = parts.next().unwrap_or("/").to_owned();
    let http10 = parts.next() == Some("HTTP/1.0");
    let mut close = http10;
    let mut body = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close")
                || (http10 && !value.eq_ignore_ascii_case("keep-alive"));
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().unwrap_or(0);
        }
    }
    if buf.len() < end + 4 + body {
        return None;
    }
    buf.drain(..end + 4 + body);
    Some(Request { path, close })
}

async fn connection(mut conn: Box<dyn Conn>, state: &State) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut draining = state.draining.clone();
    loop {
        if let Some(request) = parse(&mut buf) {
            let (status, body) = respond(&request.path, state).await;
            let close = request.close || *state.draining.borrow();
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            let written = async {
                conn.write_all(head.as_bytes()).await?;
                conn.write_all(body.as_bytes()).await?;
                conn.flush().await
            };
            if written.await.is_err() {
                return;
            }
            after_request(state);
            if close {
                let _ = conn.shutdown().await;
                return;
            }
            continue;
        }
        let idle = buf.is_empty();
        let n = tokio::select! {
            n = conn.read(&mut chunk) => n,
            _ = idle_too_long(&mut draining, state.grace), if idle => return,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn idle_too_long(draining: &mut watch::Receiver<bool>, grace: Duration) {
    if draining.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(grace).await;
}

async fn respond(path: &str, state: &State) -> (&'static str, String) {
    if let Some((slot, ms)) = std::env::var("FIXTURE_SLOW_SLOT").ok().and_then(|v| {
        Some((
            v.split_once(':')?.0.to_owned(),
            v.split_once(':')?.1.parse().ok()?,
        ))
    }) {
        if std::env::var("CORRAL_WORKER_ID").is_ok_and(|s| s == slot) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    if let Some(ms) = path.strip_prefix("/slow?ms=") {
        let ms = ms.parse().unwrap_or(1000);
        eprintln!("fixture pid={} slow request started", std::process::id());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return ("200 OK", format!("{} slow={ms}\n", state.identity));
    }
    if path == "/abuse" {
        abuse_channel();
        return ("200 OK", format!("{} abusing\n", state.identity));
    }
    if let Some(text) = path.strip_prefix("/broadcast?msg=") {
        state.worker.broadcast(text.into());
        return ("200 OK", format!("{} broadcast\n", state.identity));
    }
    if let Some(text) = path.strip_prefix("/send?msg=") {
        state.worker.send(&text.into());
        return ("200 OK", format!("{} sent\n", state.identity));
    }
    if let Some(name) = path.strip_prefix("/env/") {
        return match std::env::var(name) {
            Ok(value) => ("200 OK", value),
            Err(_) => ("404 Not Found", format!("{name} is not set")),
        };
    }
    if let Some(kb) = env_num("FIXTURE_LEAK_KB") {
        let block = vec![1u8; kb as usize * 1024];
        state.leak.lock().expect("leak lock").push(block);
    }
    ("200 OK", format!("{}\n", state.identity))
}

/// Whether this worker is the one the slot variable `var` names (every worker without it).
fn in_slot(var: &str) -> bool {
    std::env::var(var).map_or(true, |slot| {
        std::env::var("CORRAL_WORKER_ID").is_ok_and(|s| s == slot)
    })
}

fn after_request(state: &State) {
    state.worker.request_done();
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let crashes_here = in_slot("FIXTURE_CRASH_SLOT");
    if crashes_here && env_num("FIXTURE_CRASH_AFTER").is_some_and(|limit| n as u64 >= limit) {
        eprintln!(
            "fixture pid={} crashing after {n} requests as asked",
            std::process::id()
        );
        std::process::exit(3);
    }
    let hangs_here = in_slot("FIXTURE_HANG_SLOT");
    if hangs_here && env_num("FIXTURE_HANG_AFTER").is_some_and(|limit| n as u64 >= limit) {
        eprintln!(
            "fixture pid={} hanging after {n} requests as asked",
            std::process::id()
        );
        // Blocks the only runtime thread: nothing is answered, no watchdog is sent.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
