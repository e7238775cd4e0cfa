//! corral-web under `corral run` and as an embedded cluster, with a real redis-server.
//!
//! Needs `redis-server` on PATH (CI installs it); without it (or with CORRAL_SKIP_REDIS=1)
//! the Redis tests say they skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_testkit::{eventually, free_port, Corral};
use nix::sys::signal::Signal;

const WEB: &str = env!("CARGO_BIN_EXE_corral-web");
const T: Duration = Duration::from_secs(20);

fn corral_bin() -> String {
    let path = PathBuf::from(WEB).with_file_name("corral");
    assert!(
        path.exists(),
        "{} is missing: run the tests with --workspace",
        path.display()
    );
    path.display().to_string()
}

/// A throwaway redis-server on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Option<Redis> {
        if std::env::var_os("CORRAL_SKIP_REDIS").is_some() {
            return None;
        }
        if !corral_testkit::have("redis-server", "apt-get install redis-server") {
            return None;
        }
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let up = eventually(T, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "redis-server did not come up on port {port}");
        Some(Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange: (status, headers, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, T).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: t\r\n{cookie}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        headers.push_str(&line);
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).unwrap();
    let code = status.split(' ').nth(1).unwrap().parse().unwrap();
    (code, headers, body)
}

fn login(addr: SocketAddr, user: &str) -> String {
    let (code, headers, body) = request(addr, "POST", &format!("/login?user={user}"), None);
    assert_eq!(code, 200, "{body}");
    let cookie = headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

fn session(addr: SocketAddr, cookie: &str) -> serde_json::Value {
    let (code, _, body) = request(addr, "GET", "/session", Some(cookie));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn run_web(env: &[(&str, &str)]) -> Corral {
    let corral = corral_bin();
    Corral::start(
        &corral,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "-i",
            "2",
            "--ready",
            "notify",
            "--balance",
            "round-robin",
            "--",
            WEB,
        ],
        env,
    )
}

#[test]
fn a_redis_session_survives_another_worker_a_reload_and_a_killed_worker() {
    let Some(redis) = Redis::start() else { return };
    let c = run_web(&[("REDIS_URL", &redis.url)]);
    let a = Corral::pid_in(&c.wait_for("worker 0 ready", T));
    c.wait_for("worker 1 ready", T);
    let addr = c.addr();
    let cookie = login(addr, "ann");
    let served: std::collections::BTreeSet<_> = (0..4)
        .map(|_| {
            let s = session(addr, &cookie);
            assert_eq!(s["user"], "ann");
            assert_eq!(s["store"], "redis");
            s["served_by"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(served.len(), 2, "round-robin: both workers saw the session");
    c.signal(Signal::SIGHUP);
    c.wait_for("reload done: 2 workers replaced", T);
    assert_eq!(session(addr, &cookie)["user"], "ann");
    let new_a = Corral::pid_in(&c.wait_for_nth("worker 0 ready", 2, T));
    assert_ne!(new_a, a);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new_a), Signal::SIGKILL).unwrap();
    c.wait_for_nth("worker 0 ready", 3, T);
    for _ in 0..4 {
        assert_eq!(session(addr, &cookie)["user"], "ann");
    }
}

#[test]
fn without_redis_it_says_so_and_keeps_sessions_in_memory() {
    let port = free_port(); // nothing listens there
    let url = format!("redis://127.0.0.1:{port}");
    let c = run_web(&[("REDIS_URL", &url)]);
    c.wait_for("worker 0 ready", T);
    c.wait_for(&format!("Redis at {url} is not reachable"), T);
    c.wait_for("Start redis-server or set REDIS_URL", T);
    let (code, _, body) = request(c.addr(), "GET", "/health", None);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
}

#[test]
fn heavy_work_does_not_block_the_worker() {
    let corral = corral_bin();
    let c = Corral::start(
        &corral,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "-i",
            "1",
            "--ready",
            "notify",
            "--",
            WEB,
        ],
        &[("REDIS_URL", "redis://127.0.0.1:1")],
    );
    c.wait_for("worker 0 ready", T);
    let addr = c.addr();
    let heavy = std::thread::spawn(move || {
        let answer = request(addr, "GET", "/heavy?n=40000000", None);
        (answer, std::time::Instant::now())
    });
    // The heavy request is in flight on the only worker; /health must still answer,
    // and before the heavy one finishes.
    let mut health_done = None;
    for _ in 0..50 {
        let (code, _, _) = request(addr, "GET", "/health", None);
        assert_eq!(code, 200);
        health_done = Some(std::time::Instant::now());
        if heavy.is_finished() {
            break;
        }
    }
    let ((code, _, body), heavy_done) = heavy.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"primes\":2433654"), "{body}");
    assert!(
        health_done.unwrap() < heavy_done,
        "health answered while heavy ran"
    );
}

#[test]
fn as_an_embedded_cluster_the_primary_pushes_config_and_hears_metrics() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = Corral::start(
        WEB,
        &[
            "--cluster",
            "2",
            "--listen",
            &listen,
            "--metrics",
            "127.0.0.1:0",
        ],
        &[
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("METRICS_EVERY_MS", "200"),
        ],
    );
    c.wait_for("primary: worker 0 (pid", T);
    c.wait_for("primary: worker 1 (pid", T);
    // corral's own metrics and probes, served by the primary (issue 12).
    let metrics_line = c.wait_for("primary: metrics on http://", T);
    let metrics: SocketAddr = metrics_line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let readyz = |path: &str| request(metrics, "GET", path, None);
    assert!(corral_testkit::eventually(T, || readyz("/readyz").0 == 200));
    assert!(readyz("/readyz")
        .2
        .contains("corral-web: 2 of 2 workers ready"));
    assert_eq!(readyz("/livez").0, 200);
    c.wait_for("primary: worker 0 reports {\"metrics\"", T);
    c.wait_for("primary: worker 1 reports {\"metrics\"", T);
    let addr: SocketAddr = listen.parse().unwrap();
    let mut servers = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (code, _, body) = request(addr, "GET", "/config", None);
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["config"]["greeting"], "hello from the primary", "{body}");
        servers.insert(v["served_by"].as_i64().unwrap());
    }
    assert_eq!(servers.len(), 2, "both workers got the config");
    let (code, _, text) = readyz("/metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains("corral_app_ready_workers{app=\"corral-web\"} 2\n"),
        "{text}"
    );
    // The heartbeats' numbers arrive with the next heartbeat (every second).
    let counted = || readyz("/metrics").2;
    assert!(
        corral_testkit::eventually(T, || counted()
            .contains("# TYPE corral_worker_requests_total counter")),
        "{}",
        counted()
    );
    c.signal(Signal::SIGTERM);
    assert!(c.wait_exit(T).success());
}

#[test]
fn issue_8_the_embedded_cluster_survives_a_full_stdout_and_stderr() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = Corral::start_with(
        WEB,
        &["--cluster", "2", "--listen", &listen],
        &[
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("METRICS_EVERY_MS", "50"),
        ],
        |cmd| {
            cmd.stdout(corral_testkit::dev_full())
                .stderr(corral_testkit::dev_full());
        },
    );
    let addr: SocketAddr = listen.parse().unwrap();
    let mut servers = std::collections::BTreeSet::new();
    assert!(eventually(T, || {
        if let Ok(response) = corral_testkit::get(addr, "/config") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&response.body) {
                servers.insert(v["served_by"].as_i64().unwrap_or(0));
            }
        }
        servers.len() == 2
    }));
    c.signal(Signal::SIGHUP);
    for _ in 0..20 {
        assert_eq!(corral_testkit::get(addr, "/config").unwrap().status, 200);
    }
    c.signal(Signal::SIGTERM);
    assert!(c.wait_exit(T).success());
}
