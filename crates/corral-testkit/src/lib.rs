//! Helpers for corral's integration tests: run the real `corral` binary, watch its output
//! with deadlines, and drive HTTP load against it.

mod home;
mod http;
mod load;
mod process;

pub use corral_proto::control::{AppDetail, AppStatus, AppView, LogLineView, WorkerStatus};
pub use home::{pids, Home};
pub use http::{free_port, get, get_after, get_from, KeepAlive, Response};
pub use load::{reloads_under_load, Load, LoadReport, Requests};
pub use process::{
    dev_full, fixture_bin, limit_open_files, limit_processes, open_fds, processes_running,
    raise_open_files, Corral,
};

/// Polls `check` every 20ms until it holds (true) or `timeout` passes (false).
pub fn eventually(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `tool` is on PATH; when it is not, says the test is skipped and `how` to get
/// it (see [`skip`]).
pub fn have(tool: &str, how: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip(&format!("`{tool}` is not installed ({how})"));
    }
    found
}

/// Says why a test is skipped. Under `CI=true` a skip is a failure instead: CI installs
/// every tool the tests use (`.ci/run`), so a missing one is a broken CI, not a reason
/// to pass without testing.
pub fn skip(why: &str) {
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true but the test would be skipped: {why}"
    );
    eprintln!("skipped: {why}");
}

/// `REPO/package/name`: a file of a Node package in the repository, with its
/// dependencies installed; None, saying how to enable the test, when `CORRAL_SKIP_NODE`
/// is set or node or the package's `node_modules` is missing (see [`skip`]).
pub fn node_file(package: &str, name: &str) -> Option<String> {
    if std::env::var_os("CORRAL_SKIP_NODE").is_some() {
        eprintln!("skipped: CORRAL_SKIP_NODE is set");
        return None;
    }
    let found = std::process::Command::new("node").arg("--version").output();
    let Some(version) = found.ok().filter(|o| o.status.success()) else {
        skip("node is not installed (install Node.js 22+)");
        return None;
    };
    // Said with every test, so that a failure names the Node line it ran on.
    eprintln!("node {}", String::from_utf8_lossy(&version.stdout).trim());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(package);
    if !dir.join("node_modules").is_dir() {
        skip(&format!(
            "{package}'s npm packages are not installed (run `npm ci --prefix {package}`)"
        ));
        return None;
    }
    let path = dir.join(name).canonicalize().expect("the file exists");
    Some(path.display().to_string())
}
