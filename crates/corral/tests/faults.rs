//! Issue 8's fault suite: what workers, the terminal, the disk and the OS throw at the
//! supervisor. Each test is bounded, uses loopback only, and asserts no timings.

use std::path::PathBuf;
use std::time::Duration;

use corral_testkit::{eventually, get, limit_open_files, open_fds, Corral};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const T: Duration = Duration::from_secs(20);

fn worker_script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workers")
        .join(name)
        .display()
        .to_string()
}

/// Whether `tool` is on PATH; says how to get it when it is not.
fn have(tool: &str, how: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: `{tool}` is not installed ({how})");
    }
    found
}

#[test]
fn issue_8_fds_on_notify_datagrams_are_closed_and_their_status_kept() {
    if !have("python3", "apt-get install python3") {
        return;
    }
    let script = worker_script("notify_fds.py");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "fds",
        "-i",
        "2",
        "--ready",
        "notify",
        "--",
        "python3",
        &script,
    ];
    let env = [("FDS_ROUNDS", "20"), ("FDS_PER", "20")];
    let c = Corral::start_with(CORRAL, &args, &env, |cmd| limit_open_files(cmd, 64));
    let first = c.wait_for("worker 0 ready", T);
    c.wait_for("worker 1 ready", T);
    // Every datagram's STATUS= is read, though its fds did not all fit.
    c.wait_for_nth("status: round 19", 2, T);
    let settled = open_fds(c.pid());
    // 40 datagrams × 20 fds went by; a leak of even one per datagram would show.
    assert!(settled < 40, "corral holds {settled} fds");
    // At a limit of 64 fds, a replacement still starts (and sends 20 more datagrams).
    kill(Pid::from_raw(Corral::pid_in(&first)), Signal::SIGKILL).unwrap();
    c.wait_for_nth("status: round 19", 3, T);
    c.wait_for_nth(" ready (pid", 3, T);
    assert!(
        eventually(T, || open_fds(c.pid()) <= settled),
        "fds after the replacement: {} (before: {settled})",
        open_fds(c.pid())
    );
    assert!(get(c.addr(), "/").is_ok());
}
