//! Balanced dispatch, worker messages and health policing, end to end: the real binary
//! handing connections to corral-fixture workers (which use corral-worker).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use corral_testkit::{fixture_bin, get, get_from, Corral, Load};
use nix::sys::signal::Signal;

use crate::CORRAL;

const T: Duration = Duration::from_secs(20);

fn start(flags: &[&str], env: &[(&str, &str)]) -> Corral {
    let fixture = fixture_bin(CORRAL).display().to_string();
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "fx",
        "--ready",
        "notify",
        // The test waits on corral's events as data, not on their wording.
        "--report-format",
        "json",
    ];
    args.extend_from_slice(flags);
    args.push("--");
    args.push(&fixture);
    Corral::start(CORRAL, &args, env)
}

fn wait_ready(c: &Corral, workers: usize) -> Vec<i32> {
    (0..workers as u64)
        .map(|slot| c.ready_pid(slot, 1, T))
        .collect()
}

/// The first event of `kind` about the worker `pid`.
fn about(c: &Corral, kind: &str, pid: i32) -> serde_json::Value {
    c.wait_report(kind, |r| r["pid"] == pid, T)
}

#[test]
fn workers_using_corral_worker_get_dispatched_connections_by_default() {
    let c = start(&["-i", "2"], &[]);
    wait_ready(&c, 2);
    let answer = get(c.addr(), "/").unwrap();
    assert_eq!(answer.field("mode"), Some("dispatched"));
    let c = start(&["-i", "1", "--balance", "shared"], &[]);
    wait_ready(&c, 1);
    assert_eq!(get(c.addr(), "/").unwrap().field("mode"), Some("shared"));
}

#[test]
fn round_robin_gives_each_worker_its_share_of_10k_connections() {
    let c = start(&["-i", "3", "--balance", "round-robin"], &[]);
    let pids = wait_ready(&c, 3);
    let load = Load::start(c.addr(), 4, false, Duration::from_secs(60));
    assert!(load.wait_ok(10_000, Duration::from_secs(60)));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    report.assert_even_shares(&pids, 0.10);
}

/// Share of requests the slow worker (slot 0) served under `mode`.
fn slow_worker_share(mode: &str) -> f64 {
    let c = start(
        &["-i", "2", "--balance", mode],
        &[("FIXTURE_SLOW_SLOT", "0:200")],
    );
    let pids = wait_ready(&c, 2);
    let load = Load::start(c.addr(), 8, false, Duration::from_secs(60));
    assert!(load.wait_ok(400, T));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    report.by_pid.get(&pids[0]).copied().unwrap_or(0) as f64 / report.ok as f64
}

#[test]
fn least_loaded_keeps_traffic_away_from_a_worker_stuck_on_slow_requests() {
    let least = slow_worker_share("least-loaded");
    let round = slow_worker_share("round-robin");
    assert!(
        least < 0.1,
        "least-loaded sent {:.0}% to the slow worker",
        least * 100.0
    );
    assert!(
        round > 0.3,
        "round-robin sent {:.0}% to the slow worker",
        round * 100.0
    );
}

fn pid_of_client(c: &Corral, ip: IpAddr) -> i32 {
    get_from(c.addr(), ip, "/").unwrap().pid().unwrap()
}

#[test]
fn sticky_keeps_each_client_on_one_worker_and_scale_down_moves_only_the_removed_workers_clients() {
    let c = start(&["-i", "3", "--balance", "sticky"], &[]);
    let pids = wait_ready(&c, 3);
    let clients: Vec<IpAddr> = (1..=30)
        .map(|i| IpAddr::from([127, 0, 0, 10 + i]))
        .collect();
    let mut before = BTreeMap::new();
    for &ip in &clients {
        let first = pid_of_client(&c, ip);
        for _ in 0..5 {
            assert_eq!(pid_of_client(&c, ip), first, "client {ip} moved");
        }
        before.insert(ip, first);
    }
    let used: BTreeSet<i32> = before.values().copied().collect();
    assert_eq!(
        used.len(),
        3,
        "30 clients spread over all 3 workers: {before:?}"
    );
    c.signal(Signal::SIGTTOU);
    let stopped = about(&c, "exited", pids[2]);
    assert_eq!(
        (stopped["slot"].as_u64(), &stopped["expected"]),
        (Some(2), &true.into())
    );
    for (&ip, &old) in &before {
        let now = pid_of_client(&c, ip);
        if old != pids[2] {
            assert_eq!(now, old, "client {ip} of a remaining worker moved");
        } else {
            assert_ne!(now, old);
        }
    }
}

#[test]
fn broadcast_reaches_every_other_worker_and_messages_reach_the_supervisor() {
    let c = start(&["-i", "3", "--balance", "round-robin"], &[]);
    let pids = wait_ready(&c, 3);
    let sender = get(c.addr(), "/broadcast?msg=hello")
        .unwrap()
        .pid()
        .unwrap();
    for &pid in pids.iter().filter(|&&p| p != sender) {
        c.wait_for(&format!("fixture pid={pid} got message from worker"), T);
    }
    assert!(!c
        .output()
        .iter()
        .any(|l| l.contains(&format!("fixture pid={sender} got message"))));
    let from = get(c.addr(), "/send?msg=status-ok").unwrap().pid().unwrap();
    let message = about(&c, "message", from);
    assert_eq!(message["data"], "status-ok");
}

#[test]
fn a_hung_worker_is_replaced_within_its_heartbeat_timeout() {
    let c = start(
        &["-i", "1", "--heartbeat-timeout", "1s"],
        &[("FIXTURE_HANG_AFTER", "1"), ("FIXTURE_HEARTBEAT_MS", "200")],
    );
    let hung = wait_ready(&c, 1)[0];
    let _ = get(c.addr(), "/");
    about(&c, "watchdog_timeout", hung);
    let new = c.ready_pid(0, 2, T);
    assert_ne!(new, hung);
    assert_eq!(get(c.addr(), "/").unwrap().pid(), Some(new));
}

#[test]
fn a_leaking_worker_is_replaced_at_the_limit_without_failed_requests() {
    let c = start(
        &["-i", "2", "--max-memory", "40M"],
        &[("FIXTURE_LEAK_KB", "256")],
    );
    wait_ready(&c, 2);
    let load = Load::start(c.addr(), 4, true, Duration::from_secs(60));
    let over = c.wait_report("memory_limit", |_| true, T);
    assert_eq!(over["limit"], 40 << 20);
    c.wait_report("spawned", |r| !r["replacing"].is_null(), T);
    let replaced = c.wait_report("exited", |r| r["expected"] == true, T);
    let before = load.ok_so_far();
    assert!(load.wait_ok(before + 200, T));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}; {replaced}");
}

#[test]
fn channel_abuse_is_reported_and_the_supervisor_keeps_serving() {
    let c = start(&["-i", "2"], &[]);
    wait_ready(&c, 2);
    let abuser = get(c.addr(), "/abuse").unwrap().pid().unwrap();
    c.wait_for(&format!("fixture pid={abuser} abused its channel"), T);
    let problem = |what: &'static str| {
        move |r: &serde_json::Value| r["pid"] == abuser && r["problem"]["problem"] == what
    };
    let bad = c.wait_report("channel_problem", problem("bad_line"), T);
    assert!(
        bad["problem"]["error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{bad}"
    );
    c.wait_report(
        "channel_problem",
        |r| problem("bad_line")(r) && r["problem"]["error"].as_str().unwrap().contains("65536"),
        T,
    );
    about(&c, "channel_flooded", abuser);
    let load = Load::start(c.addr(), 2, false, T);
    assert!(load.wait_ok(500, T));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.by_pid.len(), 2, "both workers still get connections");
}

#[test]
fn connections_a_killed_worker_never_took_go_to_another_worker() {
    // A worker stuck before reading its channel still gets connections handed over;
    // when it dies they must not die with it.
    let dir = std::env::temp_dir().join(format!("corral-test-untaken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let deploy = dir.join("deploy");
    std::fs::write(&deploy, "FIXTURE_HANG_AFTER=1\nFIXTURE_HANG_SLOT=0\n").unwrap();
    let deploy_env = deploy.display().to_string();
    let c = start(
        &[
            "-i",
            "2",
            "--balance",
            "round-robin",
            "--heartbeat-timeout",
            "1s",
        ],
        &[
            ("FIXTURE_DEPLOY", &deploy_env),
            ("FIXTURE_HEARTBEAT_MS", "200"),
        ],
    );
    let pids = wait_ready(&c, 2);
    let addr = c.addr();
    // The first request goes to slot 0 and hangs it; its replacement will be healthy.
    let first = get(addr, "/").unwrap();
    assert_eq!(first.pid(), Some(pids[0]));
    c.wait_for("hanging after 1 requests", T);
    std::fs::remove_dir_all(&dir).unwrap();
    // Round-robin hands every other connection to the hung worker, which never reads them.
    let waiting: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get(addr, "/")))
        .collect();
    about(&c, "watchdog_timeout", pids[0]);
    let answers: Vec<_> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    let recovered = about(&c, "recovered", pids[0]);
    assert!(recovered["connections"].as_u64() > Some(0), "{recovered}");
    assert_eq!(ok, 6, "{answers:?} (workers {pids:?})");
}
