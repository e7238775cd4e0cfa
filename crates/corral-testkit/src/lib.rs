//! Helpers for corral's integration tests: run the real `corral` binary, watch its output
//! with deadlines, and drive HTTP load against it.

mod home;
mod http;
mod load;
mod process;

pub use home::Home;
pub use http::{free_port, get, get_from, KeepAlive, Response};
pub use load::{reloads_under_load, Load, LoadReport};
pub use process::{dev_full, fixture_bin, limit_open_files, limit_processes, open_fds, Corral};

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

/// Whether `tool` is on PATH; when it is not, says the test is skipped and `how` to get it.
pub fn have(tool: &str, how: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: `{tool}` is not installed ({how})");
    }
    found
}

/// `REPO/package/name`: a file of a Node package in the repository, with its
/// dependencies installed; None (saying so) when `CORRAL_SKIP_NODE` is set. Panics with
/// the fix when node or the package's `node_modules` is missing.
pub fn node_file(package: &str, name: &str) -> Option<String> {
    if std::env::var_os("CORRAL_SKIP_NODE").is_some() {
        eprintln!("skipped: CORRAL_SKIP_NODE is set");
        return None;
    }
    let found = std::process::Command::new("node").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "node is not installed: install Node.js 20+ or set CORRAL_SKIP_NODE=1"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(package);
    assert!(
        dir.join("node_modules").is_dir(),
        "run `npm ci --prefix {package}` first (or set CORRAL_SKIP_NODE=1)"
    );
    let path = dir.join(name).canonicalize().expect("the file exists");
    Some(path.display().to_string())
}
