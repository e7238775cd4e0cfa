//! Issue 26: Bun and Deno, whose servers bind their own socket and can't take one from
//! corral, run on corral's socket through the bind shim (`--bind-shim auto`): reloads
//! under load lose nothing, both workers serve, nothing is left after the stop.

use corral_testkit::{processes_running, reloads_under_load, LoadReport, Requests};

use crate::CORRAL;

/// `tests/runtime-apps/NAME`.
fn app(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/runtime-apps/").to_owned() + name
}

fn have(runtime: &str) -> bool {
    corral_testkit::have(
        runtime,
        "from the npm registry: npm install @oven/bun-linux-x64 deno; .ci/run puts both on PATH",
    )
}

/// Three rolling reloads under `requests` load from 4 clients (with `flags`), then a
/// stop: what the load saw.
fn reloads(command: &[&str], flags: &[&str], requests: Requests) -> LoadReport {
    let (mut c, report) = reloads_under_load(CORRAL, command, flags, requests, 3);
    c.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(c.wait_exit(std::time::Duration::from_secs(30)).success());
    let script = command.last().expect("a script");
    assert!(
        corral_testkit::eventually(std::time::Duration::from_secs(10), || {
            processes_running(&[script]).is_empty()
        }),
        "a worker outlived the stop"
    );
    eprintln!(
        "{command:?}: {} ok, {} failed, {} pids",
        report.ok,
        report.failed,
        report.by_pid.len()
    );
    // Two workers before the reloads and two after each: every one served.
    assert!(report.by_pid.len() >= 6, "{report:?}");
    report
}

/// Bun running `tests/runtime-apps/SCRIPT`, 3 reloads under each load: 0 failed.
fn bun_loses_nothing(script: &str) {
    if !have("bun") {
        return;
    }
    let script = app(script);
    for requests in [Requests::Close, Requests::KeepAlive] {
        let report = reloads(&["bun", &script], &[], requests);
        assert_eq!(report.failed, 0, "{report:?}");
    }
}

#[test]
fn issue_26_bun_node_http_reloads_on_corrals_socket_losing_nothing() {
    bun_loses_nothing("bun_http.js");
}

#[test]
fn issue_26_bun_serve_reloads_on_corrals_socket_losing_nothing() {
    bun_loses_nothing("bun_serve.js");
}

#[test]
fn issue_26_deno_serve_reloads_on_corrals_socket_losing_nothing() {
    if !have("deno") {
        return;
    }
    let script = app("deno_serve.js");
    // Deno 2.9's server.shutdown() closes connections it has accepted and not yet
    // answered: here 0-8 of 50,000-220,000 across 3 reloads (more on a loaded machine),
    // in shared and reuseport mode alike. They fail with nothing sent back; nothing else
    // may fail.
    for requests in [Requests::KeepAlive, Requests::Close] {
        let report = reloads(&["deno", "run", "-A", &script], &[], requests);
        assert!(report.failed * 1000 <= report.ok, "{report:?}");
        let dropped = |e: &String| {
            [
                "connection closed before a response",
                "Broken pipe",
                "reset by peer",
            ]
            .iter()
            .any(|kind| e.contains(kind))
        };
        assert!(report.errors.iter().all(dropped), "{report:?}");
    }
}

#[test]
fn issue_26_a_typescript_app_runs_with_node_when_node_strips_types_and_else_says_what_to_use() {
    if !corral_testkit::have("node", "install Node.js") {
        return;
    }
    let version = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let numbers: Vec<u32> = version
        .trim_start_matches('v')
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    let strips = match numbers[..] {
        [major, minor, ..] => {
            major > 23 || (major == 23 && minor >= 6) || (major == 22 && minor >= 18)
        }
        _ => false,
    };
    let home = crate::home("typescript");
    let port = corral_testkit::free_port().to_string();
    let env = format!("PORT={port}");
    let script = app("server.ts");
    let start = ["start", &script, "--name", "ts", "-i", "2", "--env", &env];
    if strips {
        home.ok(&start);
        home.wait_online("ts", 2);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let answer = corral_testkit::get(addr, "/").expect("the TypeScript app answers");
        assert!(answer.body.contains("runtime=node-ts"), "{}", answer.body);
    } else {
        let said = home.fails(&start);
        assert!(
            said.contains(&format!("this node ({version}) can't run TypeScript")),
            "{said}"
        );
        assert!(said.contains("--interpreter tsx"), "{said}");
    }
}
