//! Issue 9: unmodified third-party apps drain without a failed request, whatever their own
//! shutdown code. The apps live in `tests/node-apps` (real Express, NestJS, ws, ...
//! from npm; `npm ci --prefix tests/node-apps`, which CI runs).
//!
//! Longer than 500 lines: each test is one real app's scenario, read on its own.

use std::time::Duration;

use corral_testkit::{Corral, Load, LoadReport};
use nix::sys::signal::Signal;

use crate::{fixture, home, CORRAL};

const T: Duration = Duration::from_secs(60);

/// `tests/node-apps/NAME`, or None (with a message) when Node tests are skipped.
fn node_app(name: &str) -> Option<String> {
    corral_testkit::node_file("tests/node-apps", name)
}

/// `reloads` rolling reloads of `command` (2 workers) under load; what the load saw.
fn reloads_under_load(
    command: &[&str],
    flags: &[&str],
    keep_alive: bool,
    reloads: usize,
) -> (Corral, LoadReport) {
    corral_testkit::reloads_under_load(CORRAL, command, flags, keep_alive, reloads)
}

fn assert_no_failures(what: &str, report: &LoadReport) {
    assert_eq!(report.failed, 0, "{what}: {report:?}");
}

#[test]
fn issue_9_the_tutorials_sigterm_handler_loses_nothing_with_keep_alive() {
    let Some(app) = node_app("tutorial.js") else {
        return;
    };
    let (c, report) = reloads_under_load(&["node", &app], &[], true, 3);
    assert_no_failures("tutorial handler, keep-alive", &report);
    // The app's own handler still ran, after corral's drain.
    c.wait_for("tutorial: HTTP server closed", T);
}

#[test]
fn issue_9_the_tutorials_sigterm_handler_loses_nothing_with_connection_close() {
    let Some(app) = node_app("tutorial.js") else {
        return;
    };
    let (_c, report) = reloads_under_load(&["node", &app], &[], false, 3);
    assert_no_failures("tutorial handler, Connection: close", &report);
}

#[test]
fn issue_9_nestjs_shutdown_hooks_lose_nothing_and_still_run() {
    let Some(app) = node_app("nest.js") else {
        return;
    };
    let (c, report) = reloads_under_load(&["node", &app], &[], true, 3);
    assert_no_failures("NestJS enableShutdownHooks, keep-alive", &report);
    c.wait_for("nest: shutdown hook ran (SIGTERM)", T);
}

#[test]
fn issue_9_nestjs_in_round_robin_loses_nothing() {
    let Some(app) = node_app("nest.js") else {
        return;
    };
    let (_c, report) = reloads_under_load(&["node", &app], &["--balance", "round-robin"], true, 3);
    assert_no_failures("NestJS, round-robin, keep-alive", &report);
}

/// A deploy that says READY=1 before it has loaded, then dies (gunicorn without
/// --preload and a broken app): the settle window catches it and the old workers stay.
fn a_broken_deploy_that_said_ready_is_rolled_back(balance: &str, keep_alive: bool) {
    let deploy = std::env::temp_dir().join(format!(
        "corral-settle-{balance}-{keep_alive}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&deploy);
    let fixture = fixture();
    let deploy_env = deploy.display().to_string();
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "-i",
        "2",
        "--ready",
        "notify",
        "--balance",
        balance,
        "--",
        &fixture,
    ];
    let c = Corral::start(CORRAL, &args, &[("FIXTURE_DEPLOY", &deploy_env)]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let load = Load::start(c.addr(), 4, keep_alive, Duration::from_secs(60));
    assert!(load.wait_ok(200, T));
    std::fs::write(&deploy, "FIXTURE_READY_THEN_EXIT_MS=300\n").unwrap();
    c.signal(Signal::SIGHUP);
    c.wait_report(
        "reload_aborted",
        |r| r["reason"]["exited_while_settling"]["settle"] == 1000,
        T,
    );
    let before = load.ok_so_far();
    assert!(load.wait_ok(before + 500, T), "the old workers serve on");
    let report = load.finish();
    let _ = std::fs::remove_file(&deploy);
    assert_no_failures(&format!("broken deploy, {balance}"), &report);
    assert!(!c.output().iter().any(|l| l.contains("reload done")));
}

#[test]
fn issue_9_a_deploy_that_dies_right_after_ready_is_rolled_back_in_shared_mode() {
    a_broken_deploy_that_said_ready_is_rolled_back("shared", true);
}

#[test]
fn issue_9_a_deploy_that_dies_right_after_ready_is_rolled_back_in_round_robin() {
    a_broken_deploy_that_said_ready_is_rolled_back("round-robin", false);
}

/// A self-signed key and certificate for localhost, made with openssl in `dir`.
fn tls_pair(dir: &std::path::Path) -> Option<(String, String)> {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        corral_testkit::skip("openssl is not installed (apt-get install openssl)");
        return None;
    }
    Some((key.display().to_string(), cert.display().to_string()))
}

#[test]
fn issue_9_http2_sessions_get_goaway_and_no_stream_fails_across_reloads() {
    let (Some(app), Some(client)) = (node_app("h2.js"), node_app("h2load.js")) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("corral-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some((key, cert)) = tls_pair(&dir) else {
        return;
    };
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "h2",
        "-i",
        "2",
        "--",
        "node",
        &app,
    ];
    let mut c = Corral::start(CORRAL, &args, &[("TLS_KEY", &key), ("TLS_CERT", &cert)]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let stop = dir.join("stop");
    let load = std::process::Command::new("node")
        .arg(&client)
        .arg(format!("https://{}", c.addr()))
        .env("STOP_FILE", &stop)
        .env("SESSIONS", "4")
        .env("STREAMS", "4")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for n in 1..=3 {
        c.signal(Signal::SIGHUP);
        c.wait_report_nth("reload_finished", n, |r| r["replaced"] == 2, T);
    }
    std::fs::write(&stop, "").unwrap();
    let out = load.wait_with_output().unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the load client's JSON summary");
    assert_eq!(summary["failed"], 0, "HTTP/2 streams failed: {summary}");
    assert!(summary["ok"].as_u64().unwrap() > 100, "{summary}");
    assert!(
        summary["goaways"].as_u64().unwrap() >= 6,
        "each drained worker sent GOAWAY: {summary}"
    );
    c.signal(Signal::SIGTERM);
    assert!(c.wait_exit(T).success());
    let output = c.output().join("\n");
    assert!(
        !output.contains("Warning"),
        "no warning from a draining worker:\n{output}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// 8 WebSocket clients on a 2-worker `ws` app, then a reload; the close codes they saw.
/// A client script of `tests/node-apps` run against `url`, once it said `first` (all its
/// clients connected); it ends with one JSON line, its summary.
struct NodeClients {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl NodeClients {
    fn start(script: &str, url: String, first: &str) -> Self {
        let mut child = std::process::Command::new("node")
            .arg(script)
            .arg(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node runs the client script");
        let out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut clients = NodeClients { child, out };
        assert_eq!(clients.line(), first);
        clients
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut line).expect("the script's output");
        line.trim().to_owned()
    }

    fn tell(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped");
        std::io::Write::write_all(stdin, format!("{text}\n").as_bytes()).expect("the script reads");
    }

    fn summary(mut self) -> serde_json::Value {
        let line = self.line();
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

fn websockets_across_a_reload(follow_docs: bool) -> (Corral, Vec<u64>) {
    let (app, client) = (
        node_app("ws.js").unwrap(),
        node_app("wsclients.js").unwrap(),
    );
    let follow = if follow_docs { "1" } else { "0" };
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "ws",
        "-i",
        "2",
        "--kill-timeout",
        "2s",
        "--",
        "node",
        &app,
    ];
    let c = Corral::start(CORRAL, &args, &[("FOLLOW_CORRAL_DOCS", follow)]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let clients = NodeClients::start(&client, format!("ws://{}", c.addr()), "all open");
    c.signal(Signal::SIGHUP);
    c.wait_report("reload_finished", |r| r["replaced"] == 2, T);
    let summary = clients.summary();
    let codes = summary["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    (c, codes)
}

#[test]
fn issue_9_websocket_apps_that_follow_the_docs_close_cleanly_with_1001() {
    if node_app("ws.js").is_none() {
        return;
    }
    let (c, codes) = websockets_across_a_reload(true);
    assert_eq!(codes, vec![1001; 8], "close codes the clients saw");
    assert!(!c.output().iter().any(|l| l.contains("still open after")));
}

#[test]
fn issue_21_websockets_the_app_leaves_open_are_closed_with_1001_and_nothing_is_killed() {
    if node_app("ws.js").is_none() {
        return;
    }
    let (c, codes) = websockets_across_a_reload(false);
    assert_eq!(codes, vec![1001; 8], "closed as going away, not cut (1006)");
    let output = c.output().join("\n");
    assert!(
        !output.contains("\"kind\":\"kill_timeout\""),
        "no SIGKILL: {output}"
    );
    assert!(!output.contains("still open after"), "{output}");
}

#[test]
fn issue_21_socket_io_clients_reconnect_across_a_reload_with_every_message_acknowledged() {
    let (Some(app), Some(clients)) = (node_app("socketio.js"), node_app("sioclients.js")) else {
        return;
    };
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "sio",
        "-i",
        "2",
        "--kill-timeout",
        "5s",
        "--",
        "node",
        &app,
    ];
    let c = Corral::start(CORRAL, &args, &[]);
    let old = [c.ready_pid(0, 1, T), c.ready_pid(1, 1, T)];
    let mut clients = NodeClients::start(&clients, format!("http://{}", c.addr()), "all connected");
    c.signal(Signal::SIGHUP);
    c.wait_report("reload_finished", |r| r["replaced"] == 2, T);
    for pid in old {
        c.wait_report("exited", |r| r["pid"] == pid, T);
    }
    // Both old workers are gone: every client now talks to a new one.
    let new = [c.ready_pid(0, 2, T), c.ready_pid(1, 2, T)];
    clients.tell("stop");
    let summary = clients.summary();
    let output = c.output().join("\n");
    assert_eq!(summary["timedOut"], false, "{summary}\n{output}");
    assert_eq!(summary["failed"], 0, "no echo lost: {summary}");
    let reasons = summary["reasons"].as_array().unwrap();
    // A client that reconnected to the other old worker is moved again when it drains.
    assert!(
        (8..=16).contains(&reasons.len()),
        "each client was moved once or twice: {summary}"
    );
    assert!(reasons.iter().all(|r| r == "transport close"), "{summary}");
    for (client, pids) in summary["pids"].as_array().unwrap().iter().enumerate() {
        let last = pids.as_array().unwrap().last().and_then(|p| p.as_i64());
        assert!(
            last.is_some_and(|p| new.contains(&(p as i32))),
            "client {client} ends on a new worker: {pids} (new {new:?}): {summary}\n{output}"
        );
    }
    assert!(
        !output.contains("\"kind\":\"kill_timeout\""),
        "no SIGKILL: {output}"
    );
}

#[test]
fn issue_9_a_cluster_module_app_runs_its_worker_branch_and_loses_nothing() {
    let Some(app) = node_app("cluster-app.js") else {
        return;
    };
    let (c, report) = reloads_under_load(&["node", &app], &[], true, 3);
    assert_no_failures("cluster-module app, keep-alive", &report);
    let output = c.output().join("\n");
    assert!(
        !output.contains("forking"),
        "no process ran the primary branch:\n{output}"
    );
    assert!(output.contains("cluster-app: worker 1 (pid"), "{output}");
    assert!(output.contains("cluster-app: worker 2 (pid"), "{output}");
}

/// A port free on both 127.0.0.1 and ::1.
fn dual_stack_port() -> u16 {
    for _ in 0..50 {
        let port = corral_testkit::free_port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both stacks");
}

fn one_port_on_two_stacks(balance: &str) {
    let Some(plain) = node_app("../../examples/node/plain.js") else {
        return;
    };
    let port = dual_stack_port();
    let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
    let args = [
        "run",
        "--listen",
        &v4,
        "--listen",
        &v6,
        "-i",
        "2",
        "--balance",
        balance,
        "--",
        "node",
        &plain,
    ];
    let c = Corral::start(CORRAL, &args, &[]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let loads = [v4, v6].map(|a| Load::start(a.parse().unwrap(), 2, true, Duration::from_secs(60)));
    for load in &loads {
        assert!(load.wait_ok(100, T), "both stacks are served");
    }
    c.signal(Signal::SIGHUP);
    c.wait_report("reload_finished", |r| r["replaced"] == 2, T);
    for (load, stack) in loads.into_iter().zip(["IPv4", "IPv6"]) {
        let before = load.ok_so_far();
        assert!(load.wait_ok(before + 100, T));
        assert_no_failures(&format!("{stack}, {balance}"), &load.finish());
    }
}

#[test]
fn issue_9_listen_port_is_served_on_both_stacks_in_shared_mode() {
    one_port_on_two_stacks("shared");
}

#[test]
fn issue_9_listen_port_is_served_on_both_stacks_in_round_robin() {
    one_port_on_two_stacks("round-robin");
}

#[test]
fn issue_9_npm_start_reaches_the_app_and_loses_nothing() {
    let Some(app) = node_app("tutorial.js") else {
        return;
    };
    let dir = std::path::Path::new(&app)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let npm = ["npm", "--prefix", &dir, "start"];
    for keep_alive in [true, false] {
        let (c, report) = reloads_under_load(&npm, &[], keep_alive, 3);
        assert_no_failures(&format!("npm start, keep-alive {keep_alive}"), &report);
        assert!(!c.output().iter().any(|l| l.contains("EADDRINUSE")));
    }
}

#[test]
fn issue_9_an_fd_3_app_behind_a_shell_keeps_its_drain_time() {
    let Some(server) = node_app("../../examples/node/server.js") else {
        return;
    };
    // `; true` keeps the shell: it is the worker's leader and exits at SIGTERM at once.
    let script = format!("node {server}; true");
    for keep_alive in [true, false] {
        let (_c, report) = reloads_under_load(&["sh", "-c", &script], &[], keep_alive, 3);
        assert_no_failures(&format!("sh -c, keep-alive {keep_alive}"), &report);
    }
}

#[test]
fn issue_9_a_worker_that_binds_a_port_of_its_own_is_named() {
    // A stdlib Python server that ignores fd 3 and binds its own port, as a server
    // configured with its own address (puma -b tcp://..., a hard-coded port) does.
    let script = "import http.server, socketserver\n\
        srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
        print('own port', srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let home = home("drain-own-port");
    home.ok(&[
        "start",
        "python3",
        "--name",
        "own",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--",
        "-c",
        script,
    ]);
    home.wait_online("own", 1);
    let log = || home.daemon_log();
    assert!(
        corral_testkit::eventually(T, || log()
            .contains("of its own. If that is where it serves")),
        "{}",
        log()
    );
    assert!(log().contains("it listens on 127.0.0.1:"), "{}", log());
    assert!(corral_testkit::eventually(T, || home
        .ok(&["ls"])
        .contains("online (own port)")));
}

#[test]
fn issue_9_fastify_close_hooks_lose_nothing_and_still_run() {
    let Some(app) = node_app("fastify.js") else {
        return;
    };
    let (c, report) = reloads_under_load(&["node", &app], &[], true, 3);
    assert_no_failures(
        "Fastify with onClose and a SIGTERM handler, keep-alive",
        &report,
    );
    c.wait_for("fastify: onClose hook ran", T);
}

/// A WSGI app for gunicorn in a directory of its own; `broken` makes its import fail.
fn wsgi_app(dir: &std::path::Path, broken: bool) {
    let source = if broken {
        "raise RuntimeError('a broken deploy')\n"
    } else {
        "import os\n\
         def app(environ, start_response):\n\
         \x20   body = f'pid={os.getpid()}\\n'.encode()\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n\
         \x20   return [body]\n"
    };
    std::fs::write(dir.join("wsgi.py"), source).unwrap();
}

/// gunicorn (from PyPI), as its users run it: it takes corral's socket by LISTEN_FDS and
/// says READY=1 (sd_notify) when its arbiter starts, before its workers import the app.
#[test]
fn issue_9_gunicorn_reloads_lose_nothing_and_a_broken_deploy_is_rolled_back() {
    let found = std::process::Command::new("gunicorn")
        .arg("--version")
        .output();
    if !found.is_ok_and(|o| o.status.success()) {
        corral_testkit::skip("gunicorn is not installed (pip install gunicorn)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("corral-gunicorn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    wsgi_app(&dir, false);
    let chdir = dir.display().to_string();
    let gunicorn = ["gunicorn", "-w", "2", "--chdir", &chdir, "wsgi:app"];
    for keep_alive in [false, true] {
        let (_c, report) = reloads_under_load(&gunicorn, &["--ready", "notify"], keep_alive, 3);
        assert_no_failures(&format!("gunicorn, keep-alive {keep_alive}"), &report);
    }
    // The new version can't import: gunicorn has said READY=1 already, then exits 3,
    // about half a second later on an idle machine and seconds later on a busy one:
    // a settle window of a few seconds, as docs/drain.md advises for gunicorn.
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "-i",
        "2",
        "--ready",
        "notify",
        "--settle",
        "5s",
        "--",
    ];
    args.extend_from_slice(&gunicorn);
    let c = Corral::start(CORRAL, &args, &[]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    // gunicorn says READY=1 before its workers import the app: the deploy must wait
    // until all 4 old workers (2 gunicorns × -w 2) have imported it, or a slow one
    // would import the broken version (an in-place deploy's race, not corral's).
    let mut booted = std::collections::BTreeSet::new();
    assert!(
        corral_testkit::eventually(T, || {
            booted.extend(
                corral_testkit::get(c.addr(), "/")
                    .ok()
                    .and_then(|r| r.pid()),
            );
            booted.len() == 4
        }),
        "the old gunicorns' workers answered: {booted:?}"
    );
    let load = Load::start(c.addr(), 4, false, Duration::from_secs(120));
    assert!(load.wait_ok(200, T));
    wsgi_app(&dir, true);
    c.signal(Signal::SIGHUP);
    c.wait_report(
        "reload_aborted",
        |r| r["reason"]["exited_while_settling"]["settle"] == 5000,
        T,
    );
    let before = load.ok_so_far();
    assert!(
        load.wait_ok(before + 300, T),
        "the old gunicorns serve on: {:?}",
        c.output()
    );
    assert_no_failures("gunicorn, broken deploy", &load.finish());
    let _ = std::fs::remove_dir_all(&dir);
}
