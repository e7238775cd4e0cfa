//! Issue 14: `--balance reuseport`, a SO_REUSEPORT socket per slot that corral owns:
//! the kernel spreads connections, each worker accepts itself, and no connection is
//! lost when a slot loses its worker (crash, hang, scale-down) or reloads. Run against
//! corral-fixture, real Node (`examples/node/plain.js`) and Python's stdlib server.

use std::path::PathBuf;
use std::time::Duration;

use corral_testkit::{fixture_bin, get, have, reloads_under_load, Corral, Load};
use nix::sys::signal::Signal;

use crate::CORRAL;

const T: Duration = Duration::from_secs(30);

/// `command` with `workers` workers in reuseport mode, ready when they say so (the
/// fixture) or when they listen (`flags` may say otherwise).
fn start(workers: &str, flags: &[&str], command: &[&str], env: &[(&str, &str)]) -> Corral {
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "rp",
        "-i",
        workers,
        "--balance",
        "reuseport",
    ];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    Corral::start(CORRAL, &args, env)
}

fn fixture() -> String {
    fixture_bin(CORRAL).display().to_string()
}

fn wait_ready(c: &Corral, workers: u64) -> Vec<i32> {
    (0..workers).map(|slot| c.ready_pid(slot, 1, T)).collect()
}

#[test]
fn issue_14_reuseport_spreads_connections_evenly_and_each_worker_accepts_itself() {
    let fixture = fixture();
    let c = start("4", &["--ready", "notify"], &[&fixture], &[]);
    let pids = wait_ready(&c, 4);
    assert_eq!(
        get(c.addr(), "/").unwrap().field("mode"),
        Some("shared"),
        "the worker accepts from its own socket; corral hands nothing over"
    );
    let load = Load::start(c.addr(), 4, false, Duration::from_secs(60));
    assert!(load.wait_ok(4_000, Duration::from_secs(60)));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    // Each connection picks a slot at random: 1000 expected each, a standard
    // deviation of about 27, so ±25% is never noise.
    report.assert_even_shares(&pids, 0.25);
}

#[test]
fn issue_14_reuseport_gives_a_hung_workers_queue_to_the_others() {
    let fixture = fixture();
    let c = start(
        "2",
        &["--ready", "notify", "--heartbeat-timeout", "1s"],
        &[&fixture],
        &[
            ("FIXTURE_HANG_AFTER", "1"),
            ("FIXTURE_HANG_SLOT", "0"),
            ("FIXTURE_HEARTBEAT_MS", "200"),
        ],
    );
    let pids = wait_ready(&c, 2);
    let addr = c.addr();
    // Connections spread at random, one at a time, until slot 0 answers one and hangs:
    // after that, those steered to it wait on its socket, where nobody accepts.
    let mut sent = 0;
    while get(addr, "/").unwrap().pid() != Some(pids[0]) {
        sent += 1;
        assert!(sent < 200, "slot 0 never got a connection");
    }
    c.wait_for("hanging after 1 requests", T);
    let waiting: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || get(addr, "/")))
        .collect();
    c.wait_report("watchdog_timeout", |r| r["pid"] == pids[0], T);
    let answers: Vec<_> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", c.output().join("\n"));
    let taken = c.wait_report("queue_taken", |r| r["slot"] == 0, T);
    assert!(taken["connections"].as_u64() > Some(0), "{taken}");
}

#[test]
fn issue_14_reuseport_loses_nothing_across_reloads() {
    let fixture = fixture();
    for keep_alive in [true, false] {
        let (c, report) = reloads_under_load(
            CORRAL,
            &[&fixture],
            &["--balance", "reuseport", "--ready", "notify"],
            keep_alive,
            3,
        );
        assert_eq!(report.failed, 0, "keep-alive {keep_alive}: {report:?}");
        assert!(report.by_pid.len() >= 4, "{report:?}");
        drop(c);
    }
}

#[test]
fn issue_14_reuseport_loses_nothing_queued_on_a_worker_that_exits_under_load() {
    // Slot 0's worker stops accepting after 1000 connections, answers them and exits
    // 3: what a crash could lose beyond the connections a worker holds (which are its
    // own, in any server) is what waits on its socket, and corral hands that to slot 1.
    let fixture = fixture();
    let c = start(
        "2",
        &["--ready", "notify"],
        &[&fixture],
        &[("FIXTURE_QUIT_AFTER", "1000"), ("FIXTURE_CRASH_SLOT", "0")],
    );
    wait_ready(&c, 2);
    let load = Load::start(c.addr(), 8, false, Duration::from_secs(60));
    c.wait_report_nth("exited", 3, |r| r["slot"] == 0, Duration::from_secs(60));
    c.wait_report("queue_taken", |r| r["slot"] == 0, T);
    assert!(load.wait_ok(load.ok_so_far() + 500, T));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}\n{}", c.output().join("\n"));
}

pub fn python_stdlib() -> Option<String> {
    if !have("python3", "apt-get install python3") {
        return None;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/recipes/python/stdlib_server.py");
    Some(path.display().to_string())
}

#[test]
fn issue_14_reuseport_scales_a_server_without_a_corral_channel_down_losing_nothing() {
    // Python's stdlib server knows nothing of corral: connections queued on a removed
    // slot's socket can't be handed to it, so the slot's worker takes them before it
    // is told to drain.
    let Some(server) = python_stdlib() else {
        return;
    };
    let c = start("4", &[], &["python3", &server], &[]);
    wait_ready(&c, 4);
    let load = Load::start(c.addr(), 8, false, Duration::from_secs(90));
    assert!(load.wait_ok(300, T));
    for to in [3, 2, 1] {
        let before = load.ok_so_far();
        c.signal(Signal::SIGTTOU);
        c.wait_report("scaled", |r| r["to"] == to, T);
        assert!(load.wait_ok(before + 300, T));
    }
    c.wait_report_nth("exited", 3, |r| r["expected"] == true, T);
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}\n{}", c.output().join("\n"));
}

#[test]
fn issue_14_reuseport_reloads_python_stdlib_losing_nothing() {
    let Some(server) = python_stdlib() else {
        return;
    };
    for keep_alive in [true, false] {
        let (c, report) = reloads_under_load(
            CORRAL,
            &["python3", &server],
            &["--balance", "reuseport"],
            keep_alive,
            3,
        );
        assert_eq!(
            report.failed,
            0,
            "keep-alive {keep_alive}: {report:?}\n{}",
            c.output().join("\n")
        );
        // Each worker listens on its slot's socket, which is corral's as much as the
        // first one: no "serves none of corral's connections" (checked 1s after ready).
        let wrong: Vec<String> = c
            .output()
            .into_iter()
            .filter(|l| l.contains("listener_unused"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
    }
}
