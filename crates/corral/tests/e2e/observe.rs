//! Issue 12: `--metrics`: Prometheus metrics a real parser reads, scraped during a reload
//! under load, and `/readyz` following the workers as they start, crash and stop.
//!
//! Longer than 500 lines: each test is one scenario read on its own.

use std::net::SocketAddr;
use std::time::Duration;

use corral_testkit::{eventually, free_port, get, have, Corral, Load};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{fixture, home, CORRAL};

const T: Duration = Duration::from_secs(30);

/// `corral run` of the fixture with `--metrics` on a free port; corral and the port.
fn run(flags: &[&str], env: &[(&str, &str)]) -> (Corral, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let at = metrics.to_string();
    let fixture = fixture();
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "web",
        "--metrics",
        &at,
    ];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", &fixture]);
    let c = Corral::start(CORRAL, &args, env);
    c.wait_for("probes on /livez and /readyz", T);
    (c, metrics)
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path).map_or(0, |r| r.status)
}

/// Checks `text` with Prometheus' own Python client parser; None when it isn't installed.
fn parsed_by_prometheus(text: &str) -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        corral_testkit::skip("prometheus_client is not installed (pip install prometheus_client)");
        return None;
    }
    use std::io::Write;
    let script =
        "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  for f in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in f.samples: print(s.name, sorted(s.labels.items()), s.value)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn issue_12_metrics_scraped_during_a_reload_under_load_parse_and_show_it() {
    if !have("python3", "apt-get install python3") {
        return;
    }
    let (c, metrics) = run(&["-i", "2"], &[("FIXTURE_DRAIN_MS", "300")]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let load = Load::start(c.addr(), 4, true, Duration::from_secs(60));
    assert!(load.wait_ok(200, T));
    c.signal(Signal::SIGHUP);
    // Scrapes while the reload runs: each parses; one of them catches a slot's worker
    // that is not (yet) ready or a replacement, as the reload goes on.
    let mut scrapes = 0;
    while !c.output().iter().any(|l| l.contains("reload done")) && scrapes < 500 {
        let text = get(metrics, "/metrics").unwrap().body;
        if let Some(samples) = parsed_by_prometheus(&text) {
            assert!(samples.contains("corral_worker_ready"), "{samples}");
        }
        scrapes += 1;
    }
    c.wait_report("reload_finished", |r| r["replaced"] == 2, T);
    let text = get(metrics, "/metrics").unwrap().body;
    assert!(
        text.contains("corral_reloads_total{app=\"web\",outcome=\"done\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("corral_app_ready_workers{app=\"web\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE corral_worker_resident_memory_bytes gauge"),
        "{text}"
    );
    assert!(text.contains("corral_process_open_fds "), "{text}");
    if let Some(samples) = parsed_by_prometheus(&text) {
        assert!(
            samples.contains("corral_reloads_total [('app', 'web'), ('outcome', 'done')] 1"),
            "{samples}"
        );
    }
    assert_eq!(load.finish().failed, 0);
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

#[test]
fn issue_12_heartbeat_numbers_dispatch_counts_and_channel_drops_reach_the_metrics() {
    let (c, metrics) = run(
        &["-i", "2", "--balance", "round-robin"],
        &[("FIXTURE_HEARTBEAT_MS", "200")],
    );
    let first = c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    for _ in 0..200 {
        get(c.addr(), "/").unwrap();
    }
    let scrape = || get(metrics, "/metrics").unwrap().body;
    let total = |text: &str, family: &str| {
        (0..2)
            .filter_map(|slot| sample(text, &format!("{family}{{app=\"web\",slot=\"{slot}\"}}")))
            .sum::<f64>()
    };
    // Each of the 200 requests was a connection corral handed over and a worker served.
    assert!(
        eventually(T, || {
            let text = scrape();
            total(&text, "corral_worker_connections_dispatched_total") >= 200.0
                && total(&text, "corral_worker_requests_total") >= 200.0
        }),
        "{}",
        scrape()
    );
    let text = scrape();
    assert!(
        text.contains("corral_worker_event_loop_lag_seconds{app=\"web\",slot=\"0\"} "),
        "{text}"
    );
    assert!(
        text.contains("corral_worker_active_connections{app=\"web\",slot=\"1\"} "),
        "{text}"
    );
    let before = total(&text, "corral_worker_requests_total");
    // A crash: the slot's counters carry on from where they were.
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    c.ready_pid(0, 2, T);
    assert!(total(&scrape(), "corral_worker_requests_total") >= before);
    // A worker flooding its channel: what the rate limit drops is counted.
    get(c.addr(), "/abuse").unwrap();
    assert!(
        eventually(T, || sample(
            &scrape(),
            "corral_channel_messages_dropped_total{app=\"web\"}"
        )
        .is_some_and(|n| n > 0.0)),
        "{}",
        scrape()
    );
    if let Some(samples) = parsed_by_prometheus(&scrape()) {
        assert!(
            samples.contains("corral_worker_requests_total"),
            "{samples}"
        );
    }
}

#[test]
fn issue_12_readyz_follows_workers_as_they_start_crash_and_stop() {
    let (mut c, metrics) = run(
        &["-i", "2", "--ready", "notify", "--restart-delay", "2s"],
        &[
            ("FIXTURE_READY_DELAY_MS", "700"),
            ("FIXTURE_DRAIN_MS", "1500"),
        ],
    );
    // Starting: not ready until both workers are.
    assert_eq!(status(metrics, "/readyz"), 503);
    assert_eq!(status(metrics, "/livez"), 200);
    assert!(eventually(T, || status(metrics, "/readyz") == 200));
    assert!(get(metrics, "/readyz")
        .unwrap()
        .body
        .contains("web: 2 of 2 workers ready"));
    // A crash: not ready while the slot waits out its restart delay, ready again after.
    let pid = c.ready_pid(0, 1, T);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(eventually(T, || status(metrics, "/readyz") == 503));
    assert!(get(metrics, "/readyz")
        .unwrap()
        .body
        .contains("web: 1 of 2 workers ready"));
    assert!(eventually(T, || status(metrics, "/readyz") == 200));
    // Stopping: not ready from the first moment of the drain.
    c.signal(Signal::SIGTERM);
    assert!(eventually(T, || get(metrics, "/readyz")
        .is_ok_and(
            |r| r.status == 503 && r.body.contains("web is stopping")
        )));
    assert!(c.wait_exit(T).success());
}

#[test]
fn issue_12_a_taken_metrics_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let fixture = fixture();
    let mut c = Corral::start(
        CORRAL,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            &at,
            "--",
            &fixture,
        ],
        &[],
    );
    assert!(!c.wait_exit(T).success());
    let out = c.output().join("\n");
    assert!(
        out.contains(&format!("cannot serve --metrics on {at}")),
        "{out}"
    );
}

#[test]
fn issue_12_the_daemon_serves_metrics_and_probes_for_every_app() {
    let home = home("observe-daemon");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let at = metrics.to_string();
    let fixture = fixture();
    // CORRAL_METRICS reaches the daemon the CLI starts on demand (as --metrics does
    // for `corral daemon` in a unit file).
    let out = home.corral_env(
        &[
            "start",
            &fixture,
            "--name",
            "api",
            "-i",
            "2",
            "--listen",
            "127.0.0.1:0",
        ],
        &[("CORRAL_METRICS", &at)],
    );
    assert!(out.status.success(), "{out:?}");
    home.wait_online("api", 2);
    assert!(eventually(T, || status(metrics, "/readyz") == 200));
    let text = get(metrics, "/metrics").unwrap().body;
    assert!(
        text.contains("corral_app_ready_workers{app=\"api\"} 2\n"),
        "{text}"
    );
    home.ok(&["stop", "api"]);
    assert!(eventually(T, || status(metrics, "/readyz") == 503));
    home.ok(&["delete", "api"]);
    assert!(get(metrics, "/readyz")
        .unwrap()
        .body
        .contains("no app runs"));
}

#[test]
fn issue_12_a_socket_from_systemd_socket_activate_is_taken_not_bound() {
    if !have("systemd-socket-activate", "apt-get install systemd") {
        return;
    }
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let listen = format!("web={at}");
    let fixture = fixture();
    // systemd-socket-activate binds, then starts corral at the first connection, with the
    // socket as fd 3; binding it again would fail (address in use).
    let c = Corral::start(
        "systemd-socket-activate",
        &[
            "-l",
            &at,
            "--fdname=web",
            CORRAL,
            "run",
            "--listen",
            &listen,
            "--name",
            "web",
            "-i",
            "2",
            // systemd-socket-activate passes on only the environment it is told to.
            "--report-format",
            "json",
            "--",
            &fixture,
        ],
        &[],
    );
    let addr: SocketAddr = at.parse().unwrap();
    assert!(
        eventually(T, || get(addr, "/")
            .is_ok_and(|r| r.body.contains("app=web"))),
        "{:?}",
        c.output()
    );
    c.ready_pid(1, 1, T);
}

#[test]
fn issue_12_a_restart_under_a_socket_unit_loses_no_connection() {
    use std::io::{BufRead, Write};
    if !have("python3", "apt-get install python3") {
        return;
    }
    let holder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/fake_systemd.py");
    let fixture = fixture();
    let mut child = std::process::Command::new("python3")
        .args([
            holder,
            CORRAL,
            "run",
            "--listen",
            "web=127.0.0.1:@PORT@",
            "-i",
            "2",
            "--",
            &fixture,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run python3");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let port: u16 = first.strip_prefix("holding ").unwrap().parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(eventually(T, || get(addr, "/").is_ok()));
    let load = Load::start(addr, 4, false, Duration::from_secs(60));
    assert!(load.wait_ok(200, T));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "stopped");
    assert_eq!(lines.next().unwrap().unwrap(), "started again");
    let before = load.ok_so_far();
    assert!(load.wait_ok(before + 300, T), "the new corral serves");
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        report.by_pid.len() >= 4,
        "both corrals' workers served: {report:?}"
    );
    drop(stdin);
    let _ = child.wait();
}

#[test]
fn issue_12_corral_run_is_a_type_notify_service_with_a_watchdog() {
    let dir = std::env::temp_dir().join(format!("corral-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let systemd = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(T)).unwrap();
    let socket = path.display().to_string();
    let fixture = fixture();
    let mut c = Corral::start(
        CORRAL,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "-i",
            "2",
            "--ready",
            "notify",
            "--",
            &fixture,
        ],
        &[
            ("NOTIFY_SOCKET", &socket),
            ("WATCHDOG_USEC", "200000"),
            ("FIXTURE_READY_DELAY_MS", "300"),
        ],
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a message from corral");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut messages = Vec::new();
    while !messages.iter().any(|m: &String| m.contains("READY=1")) {
        messages.push(next());
    }
    // Ready only once both workers are.
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    assert!(
        messages.last().unwrap().contains("STATUS=2 workers ready"),
        "{messages:?}"
    );
    // The watchdog: pings every 100 ms.
    assert!((0..3).all(|_| next().contains("WATCHDOG=1")));
    c.signal(Signal::SIGTERM);
    assert!((0..20).map(|_| next()).any(|m| m.contains("STOPPING=1")));
    assert!(c.wait_exit(T).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cgroup with a CPU quota of one CPU (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), made
/// for the test; None where this machine doesn't let us make one.
fn one_cpu_cgroup() -> Option<std::path::PathBuf> {
    let name = format!("corral-test-{}", std::process::id());
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (dir, file, value) = if v2.exists() {
        (
            std::path::Path::new("/sys/fs/cgroup").join(&name),
            "cpu.max",
            "100000 100000",
        )
    } else {
        (
            std::path::Path::new("/sys/fs/cgroup/cpu").join(&name),
            "cpu.cfs_quota_us",
            "100000",
        )
    };
    std::fs::create_dir(&dir).ok()?;
    if std::fs::write(dir.join(file), value).is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

#[test]
fn issue_12_instances_max_counts_the_cpus_a_cgroup_quota_allows() {
    let Some(cgroup) = one_cpu_cgroup() else {
        eprintln!(
            "skipped: cannot make a cgroup with a CPU quota here (needs root and a cpu controller)"
        );
        return;
    };
    let fixture = fixture();
    let script = format!(
        "echo $$ > {}/cgroup.procs 2>/dev/null || echo $$ > {}/tasks; exec {CORRAL} run --listen 127.0.0.1:0 -i max -- {fixture}",
        cgroup.display(),
        cgroup.display()
    );
    let mut c = Corral::start("sh", &["-c", &script], &[]);
    c.wait_for("starting 1 workers", T);
    c.signal(Signal::SIGTERM);
    let _ = c.wait_exit(T);
    // The cgroup is empty once corral and its worker are gone.
    assert!(eventually(T, || std::fs::remove_dir(&cgroup).is_ok()));
}

#[test]
fn issue_12_the_kubernetes_manifests_pass_kubernetes_schemas() {
    if !have("kubernetes-validate", "pip install kubernetes-validate") {
        return;
    }
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/deployment.yaml"
    );
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", manifest])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for kind in [
        "deployment/myapp",
        "service/myapp",
        "horizontalpodautoscaler/myapp",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{text}"
        );
    }
}

/// Every line parsed as JSON; the test fails on the first that isn't.
fn json_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<serde_json::Value> {
    lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn issue_12_log_format_json_writes_every_line_as_a_json_object() {
    let fixture = fixture();
    let mut c = Corral::start(
        CORRAL,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "web",
            "-i",
            "2",
            "--log-format",
            "json",
            "--",
            &fixture,
        ],
        &[],
    );
    c.wait_report_nth("ready", 2, |_| true, T);
    c.signal(Signal::SIGHUP);
    c.wait_report("reload_finished", |_| true, T);
    c.signal(Signal::SIGTERM);
    assert!(c.wait_exit(T).success());
    let output = c.output();
    let lines = json_lines(output.iter().map(String::as_str).filter(|l| !l.is_empty()));
    let worker = lines
        .iter()
        .find(|v| v["stream"] == "out")
        .expect("a worker line");
    assert_eq!(worker["app"], "web");
    assert!(worker["pid"].is_u64() && worker["slot"].is_u64() && worker["time"].is_string());
    assert!(worker["line"].as_str().unwrap().contains("listening"));
    let finished = lines
        .iter()
        .find(|v| v["kind"] == "reload_finished")
        .unwrap();
    assert_eq!(finished["replaced"], 2);
    assert!(
        finished["took"].is_u64(),
        "durations are milliseconds: {finished}"
    );
    assert!(lines
        .iter()
        .any(|v| v["kind"] == "note" && v["message"] == "web: stopped"));
}

#[test]
fn issue_12_daemon_log_format_json_writes_every_event_as_a_json_object() {
    let home = home("observe-daemon-json");
    let fixture = fixture();
    let json = [("CORRAL_DAEMON_LOG_FORMAT", "json")];
    let args = [
        "start",
        &fixture,
        "--name",
        "api",
        "-i",
        "2",
        "--listen",
        "127.0.0.1:0",
    ];
    let out = home.corral_env(&args, &json);
    assert!(out.status.success(), "{out:?}");
    home.wait_online("api", 2);
    home.ok(&["reload", "api"]);
    assert!(eventually(T, || home
        .daemon_log()
        .contains("\"kind\":\"reload_finished\"")));
    let lines = json_lines(home.daemon_log().lines());
    // The daemon's own lines are notes; each app event carries its app, kind and fields.
    assert!(lines
        .iter()
        .any(|v| v["kind"] == "note" && v["message"].as_str().unwrap().contains("listening on")));
    let ready = lines
        .iter()
        .find(|v| v["kind"] == "ready")
        .expect("a ready event");
    assert_eq!(ready["app"], "api");
    assert!(ready["pid"].is_u64() && ready["slot"].is_u64() && ready["time"].is_string());
    assert!(ready["message"].as_str().unwrap().starts_with("worker "));
    let finished = lines
        .iter()
        .find(|v| v["kind"] == "reload_finished")
        .unwrap();
    assert_eq!(finished["replaced"], 2);
}

#[test]
fn issue_23_a_flood_of_idle_metrics_connections_leaves_probes_and_dispatch_answering() {
    // Before: idle connections to --metrics were each kept open for 30 s, so a flood
    // used up corral's fds: the app's round-robin dispatch and /livez stopped answering
    // ("Too many open files"), which under Kubernetes means pod restarts.
    let flood_size = 3000;
    assert!(corral_testkit::raise_open_files(flood_size + 512) > flood_size);
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (at, fixture) = (metrics.to_string(), fixture());
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "-i",
        "2",
        "--balance",
        "round-robin",
        "--metrics",
        &at,
        "--",
        &fixture,
    ];
    let c = Corral::start_with(CORRAL, &args, &[], |cmd| {
        corral_testkit::limit_open_files(cmd, 1024)
    });
    c.wait_for("probes on /livez and /readyz", T);
    c.ready_pid(1, 1, T);
    let baseline = corral_testkit::open_fds(c.pid());
    let rss_before = rss_kib(c.pid());
    let mut flood = Vec::new();
    for _ in 0..flood_size {
        let conn = std::net::TcpStream::connect_timeout(&metrics, Duration::from_secs(2));
        flood.extend(conn.ok());
    }
    assert!(
        flood.len() as u64 >= flood_size / 2,
        "{} connected",
        flood.len()
    );
    for _ in 0..5 {
        assert_eq!(status(metrics, "/livez"), 200, "/livez during the flood");
        let served = get(c.addr(), "/");
        assert!(
            served.is_ok_and(|r| r.status == 200),
            "dispatch during the flood"
        );
    }
    let during = corral_testkit::open_fds(c.pid());
    assert!(
        during <= baseline + 64 + 16,
        "{during} fds open, {baseline} before"
    );
    let rss_during = rss_kib(c.pid());
    drop(flood);
    assert!(eventually(T, || corral_testkit::open_fds(c.pid()) <= baseline + 4));
    let rss_after = rss_kib(c.pid());
    eprintln!(
        "{} flood connections: RSS {rss_before} KiB before, {rss_during} during, {rss_after} after",
        flood_size
    );
    // Before the cap it grew 31-46 MiB and stayed there.
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS {rss_after} KiB after, {rss_before} before"
    );
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
