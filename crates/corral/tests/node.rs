//! `corral run` with an unmodified Node server that listens on `{fd: 3}`.
//!
//! Needs `node` on PATH (CI installs it); set CORRAL_SKIP_NODE=1 to skip knowingly.

use std::path::PathBuf;
use std::time::Duration;

use corral_testkit::{Corral, Load};
use nix::sys::signal::Signal;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const T: Duration = Duration::from_secs(20);

fn server_js() -> Option<String> {
    if std::env::var_os("CORRAL_SKIP_NODE").is_some() {
        return None;
    }
    let found = std::process::Command::new("node").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "node is not installed: install Node.js 20+ or set CORRAL_SKIP_NODE=1"
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/node/server.js");
    Some(path.canonicalize().unwrap().display().to_string())
}

#[test]
fn node_server_on_fd_3_serves_from_every_worker_and_reloads_without_failures() {
    let Some(server) = server_js() else { return };
    let c = Corral::start(
        CORRAL,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "-i",
            "2",
            "--ready",
            "delay:300ms",
            "--",
            "node",
            &server,
        ],
        &[],
    );
    c.wait_for("worker 0 ready", T);
    c.wait_for("worker 1 ready", T);
    let load = Load::start(c.addr(), 4, false, Duration::from_secs(60));
    assert!(load.wait_ok(300, T));
    for n in 1..=2 {
        let before = load.ok_so_far();
        c.signal(Signal::SIGHUP);
        c.wait_for_nth("reload done: 2 workers replaced", n, T);
        assert!(load.wait_ok(before + 300, T));
    }
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.by_pid.len() >= 2, "both workers served: {report:?}");
    assert!(c
        .output()
        .iter()
        .any(|l| l.contains("[server:0] listening on {\"fd\":3}")));
}
