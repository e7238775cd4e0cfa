//! Issue 9: unmodified third-party apps drain without a failed request, whatever their own
//! shutdown code. The apps live in `tests/node-apps` (real Express, NestJS, ws, ...
//! from npm; `npm ci --prefix tests/node-apps`, which CI runs).

use std::path::PathBuf;
use std::time::Duration;

use corral_testkit::{Corral, Load, LoadReport};
use nix::sys::signal::Signal;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const T: Duration = Duration::from_secs(30);

/// `tests/node-apps/NAME`, or None (with a message) when Node tests are skipped.
fn node_app(name: &str) -> Option<String> {
    if std::env::var_os("CORRAL_SKIP_NODE").is_some() {
        eprintln!("skipped: CORRAL_SKIP_NODE is set");
        return None;
    }
    let found = std::process::Command::new("node").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "node is not installed: install Node.js 20+ or set CORRAL_SKIP_NODE=1"
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node-apps");
    assert!(
        dir.join("node_modules").is_dir(),
        "run `npm ci --prefix tests/node-apps` first (or set CORRAL_SKIP_NODE=1)"
    );
    Some(dir.join(name).canonicalize().unwrap().display().to_string())
}

/// `reloads` rolling reloads of `command` (2 workers) under load; what the load saw.
fn reloads_under_load(
    command: &[&str],
    flags: &[&str],
    keep_alive: bool,
    reloads: usize,
) -> (Corral, LoadReport) {
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--name", "app", "-i", "2"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    let c = Corral::start(CORRAL, &args, &[]);
    c.wait_for("worker 0 ready", T);
    c.wait_for("worker 1 ready", T);
    let load = Load::start(c.addr(), 4, keep_alive, Duration::from_secs(120));
    assert!(
        load.wait_ok(200, T),
        "no load got through: {:?}",
        c.output()
    );
    for n in 1..=reloads {
        let before = load.ok_so_far();
        c.signal(Signal::SIGHUP);
        c.wait_for_nth("reload done: 2 workers replaced", n, T);
        assert!(load.wait_ok(before + 200, T));
    }
    c.wait_for_nth("stopped: exit code 0", 2 * reloads, T);
    (c, load.finish())
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

fn fixture() -> String {
    corral_testkit::fixture_bin(CORRAL).display().to_string()
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
    c.wait_for("worker 0 ready", T);
    c.wait_for("worker 1 ready", T);
    let load = Load::start(c.addr(), 4, keep_alive, Duration::from_secs(60));
    assert!(load.wait_ok(200, T));
    std::fs::write(&deploy, "FIXTURE_READY_THEN_EXIT_MS=300\n").unwrap();
    c.signal(Signal::SIGHUP);
    c.wait_for(
        "within the 1s settle window; the old workers keep serving",
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
