//! `corral run` end to end: the real binary supervising corral-fixture workers.
//!
//! Longer than 500 lines: each test is one scenario read on its own; helpers every area shares are in `corral-testkit`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corral_testkit::{eventually, get, Corral, KeepAlive, Load};
use nix::sys::signal::Signal;

use crate::{fixture, CORRAL};

const T: Duration = Duration::from_secs(20);

/// corral with the fixture, on a loopback port chosen by the kernel.
fn start(flags: &[&str], env: &[(&str, &str)]) -> Corral {
    let fixture = fixture();
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--name", "fx"];
    args.extend_from_slice(flags);
    args.push("--");
    args.push(&fixture);
    Corral::start(CORRAL, &args, env)
}

/// Requests until every pid in `pids` has answered, or the deadline.
fn pids_answering(c: &Corral, want: usize) -> BTreeSet<i32> {
    let addr = c.addr();
    let deadline = Instant::now() + T;
    let mut seen = BTreeSet::new();
    for _ in 0..20_000 {
        if seen.len() >= want || Instant::now() >= deadline {
            break;
        }
        if let Some(pid) = get(addr, "/").ok().and_then(|r| r.pid()) {
            seen.insert(pid);
        }
    }
    seen
}

#[test]
fn every_worker_serves_with_its_slot_and_environment() {
    let c = start(&["-i", "3", "--ready", "notify", "-e", "GREETING=hi"], &[]);
    for slot in 0..3 {
        c.ready_pid(slot, 1, T);
    }
    let pids = pids_answering(&c, 3);
    assert_eq!(pids.len(), 3, "pids that answered: {pids:?}");
    let addr = c.addr();
    let env = |name: &str| get(addr, &format!("/env/{name}")).unwrap().body;
    assert_eq!(env("CORRAL_APP"), "fx");
    assert_eq!(env("PORT"), addr.port().to_string());
    assert_eq!(env("GREETING"), "hi");
    let answer = get(addr, "/").unwrap();
    // The worker took over fd 3 only because LISTEN_PID matched its own pid.
    assert_eq!(answer.field("fdnames"), Some("listen0"));
    assert!(["0", "1", "2"].contains(&answer.field("slot").unwrap()));
    assert_eq!(answer.field("instance"), answer.field("slot"));
}

#[test]
fn a_killed_worker_under_load_is_replaced_in_its_slot() {
    let c = start(&["-i", "2", "--ready", "notify"], &[]);
    let old = c.ready_pid(1, 1, T);
    c.ready_pid(0, 1, T);
    let load = Load::start(c.addr(), 2, false, T);
    assert!(load.wait_ok(200, T));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
    let exited = c.wait_report("exited", |r| r["pid"] == old, T);
    assert_eq!(exited["status"]["signal"], 9);
    assert_eq!(exited["expected"], false);
    let new = c.ready_pid(1, 2, T);
    assert_ne!(new, old);
    let before = load.ok_so_far();
    assert!(load.wait_ok(before + 500, T));
    let report = load.finish();
    assert!(
        report.by_pid.contains_key(&new),
        "the replacement serves: {report:?}"
    );
    // Only requests the killed process had already accepted can fail, one per client.
    assert!(report.failed <= 2, "{report:?}");
}

fn reloads_under_load(keep_alive: bool) {
    reloads_under_load_with(keep_alive, "auto");
}

fn reloads_under_load_with(keep_alive: bool, balance: &str) {
    // Replacements take a while to get ready and old workers a while to exit, so every
    // reload overlaps plenty of traffic.
    let c = start(
        &[
            "-i",
            "2",
            "--ready",
            "notify",
            "--kill-timeout",
            "10s",
            "--balance",
            balance,
        ],
        &[
            ("FIXTURE_READY_DELAY_MS", "150"),
            ("FIXTURE_DRAIN_MS", "200"),
        ],
    );
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let load = Load::start(c.addr(), 4, keep_alive, Duration::from_secs(60));
    assert!(load.wait_ok(200, T));
    for n in 1..=5 {
        let before = load.ok_so_far();
        c.signal(if n % 2 == 0 {
            Signal::SIGUSR2
        } else {
            Signal::SIGHUP
        });
        c.wait_report_nth("reload_finished", n, |r| r["replaced"] == 2, T);
        // Each reload happens under traffic, not in a quiet moment.
        assert!(load.wait_ok(before + 200, T));
    }
    // Once every old worker has exited, all traffic goes to the newest ones.
    c.wait_report_nth("exited", 10, |r| r["status"]["code"] == 0, T);
    let before = load.ok_so_far();
    assert!(load.wait_ok(before + 200, T));
    let report = load.finish();
    assert_eq!(
        report.failed, 0,
        "failed requests during 5 reloads: {report:?}"
    );
    let last = |slot: u64| c.ready_pid(slot, 6, T);
    assert!(
        report.by_pid.contains_key(&last(0)) || report.by_pid.contains_key(&last(1)),
        "the newest workers served: {:?}",
        report.by_pid
    );
    assert!(report.ok > 1000, "{report:?}");
}

#[test]
fn five_rolling_reloads_under_load_fail_no_request_with_connection_close() {
    reloads_under_load(false);
}

#[test]
fn five_rolling_reloads_under_load_fail_no_request_with_keep_alive() {
    reloads_under_load(true);
}

#[test]
fn five_rolling_reloads_under_load_fail_no_request_in_shared_mode_with_connection_close() {
    reloads_under_load_with(false, "shared");
}

#[test]
fn five_rolling_reloads_under_load_fail_no_request_in_shared_mode_with_keep_alive() {
    reloads_under_load_with(true, "shared");
}

#[test]
fn a_reload_whose_replacements_never_get_ready_is_aborted_and_the_old_workers_serve() {
    let dir = tempdir("never-ready");
    let deploy = dir.join("deploy");
    let deploy_env = deploy.display().to_string();
    let c = start(
        &["-i", "2", "--ready", "notify", "--ready-timeout", "1s"],
        &[("FIXTURE_DEPLOY", &deploy_env)],
    );
    let a = c.ready_pid(0, 1, T);
    let b = c.ready_pid(1, 1, T);
    std::fs::write(&deploy, "FIXTURE_NEVER_READY=1\n").unwrap();
    let load = Load::start(c.addr(), 2, true, T);
    c.signal(Signal::SIGHUP);
    c.wait_report("ready_timeout", |r| r["timeout"] == 1000, T);
    c.wait_report(
        "reload_aborted",
        |r| r["slot"] == 0 && r["reason"]["not_ready_in_time"] == 1000,
        T,
    );
    let before = load.ok_so_far();
    assert!(load.wait_ok(before + 200, T));
    let report = load.finish();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(pids_answering(&c, 2), BTreeSet::from([a, b]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_reload_whose_replacement_crashes_is_aborted() {
    let dir = tempdir("crashing-deploy");
    let deploy = dir.join("deploy");
    let deploy_env = deploy.display().to_string();
    let c = start(
        &["-i", "1", "--ready", "notify"],
        &[("FIXTURE_DEPLOY", &deploy_env)],
    );
    let old = c.ready_pid(0, 1, T);
    std::fs::write(&deploy, "FIXTURE_EXIT_AT_START=4\n").unwrap();
    c.signal(Signal::SIGHUP);
    c.wait_report(
        "reload_aborted",
        |r| r["slot"] == 0 && r["reason"]["exited_before_ready"]["code"] == 4,
        T,
    );
    assert_eq!(get(c.addr(), "/").unwrap().pid(), Some(old));
    // Once the deploy is fixed, the next reload goes through.
    std::fs::remove_file(&deploy).unwrap();
    c.signal(Signal::SIGHUP);
    c.wait_report("reload_finished", |r| r["replaced"] == 1, T);
    c.wait_report("exited", |r| r["pid"] == old, T);
    assert_ne!(get(c.addr(), "/").unwrap().pid(), Some(old));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigterm_lets_an_in_flight_slow_request_finish() {
    let mut c = start(&["-i", "1", "--ready", "notify"], &[]);
    c.ready_pid(0, 1, T);
    let addr = c.addr();
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=1500"));
    c.wait_for("slow request started", T);
    c.signal(Signal::SIGTERM);
    let response = slow.join().unwrap().expect("the slow request completes");
    assert_eq!(response.status, 200);
    assert!(response.body.contains("slow=1500"));
    assert!(c.wait_exit(T).success());
    assert!(c.output().iter().any(|l| l.contains("fx: stopped")));
    assert!(
        get(addr, "/").is_err(),
        "the listener is closed once corral exits"
    );
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_after_the_timeout() {
    let mut c = start(
        &["-i", "1", "--ready", "notify", "--kill-timeout", "1s"],
        &[("FIXTURE_IGNORE_SIGTERM", "1")],
    );
    c.ready_pid(0, 1, T);
    let asked = Instant::now();
    c.signal(Signal::SIGTERM);
    c.wait_report(
        "kill_timeout",
        |r| r["timeout"] == 1000 && r["signal"] == "SIGTERM",
        T,
    );
    assert!(c.wait_exit(T).success());
    assert!(asked.elapsed() >= Duration::from_secs(1));
    assert!(c
        .output()
        .iter()
        .any(|l| l.contains("stopped: signal SIGKILL")));
}

#[test]
fn a_second_sigterm_kills_at_once() {
    let mut c = start(
        &["-i", "1", "--ready", "notify", "--kill-timeout", "60s"],
        &[("FIXTURE_IGNORE_SIGTERM", "1")],
    );
    c.ready_pid(0, 1, T);
    c.signal(Signal::SIGTERM);
    c.wait_report("stopping", |r| r["workers"] == 1 && r["forced"] == false, T);
    c.signal(Signal::SIGINT);
    c.wait_report("stopping", |r| r["workers"] == 1 && r["forced"] == true, T);
    assert!(c.wait_exit(T).success());
}

#[test]
fn a_crash_loop_backs_off_and_gives_up_with_a_nonzero_exit() {
    let mut c = start(
        &["-i", "1", "--max-restarts", "3", "--restart-delay", "50ms"],
        &[("FIXTURE_EXIT_AT_START", "1")],
    );
    let status = c.wait_exit(T);
    assert_eq!(status.code(), Some(1));
    let out = c.output();
    let restarts: Vec<&String> = out.iter().filter(|l| l.contains("restarting in")).collect();
    let delays: Vec<&str> = restarts
        .iter()
        .map(|l| {
            l.split("restarting in ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(delays, ["50ms", "100ms", "200ms"], "{out:#?}");
    let spawned = out
        .iter()
        .filter(|l| l.contains("worker 0 started"))
        .count();
    assert_eq!(spawned, 4, "first start plus 3 restarts, then no more");
    assert!(out.iter().any(|l| l.contains(
        "worker 0 gave up: it exited 4 times in a row before it was ready or within 1s of starting"
    )));
    assert!(out
        .iter()
        .any(|l| l.contains("error: every worker of `fx` gave up; nothing is running")));
}

#[test]
fn ttin_and_ttou_add_and_remove_a_worker() {
    let c = start(&["-i", "1", "--ready", "notify"], &[]);
    c.ready_pid(0, 1, T);
    c.signal(Signal::SIGTTIN);
    c.wait_report("scaled", |r| r["from"] == 1 && r["to"] == 2, T);
    let added = c.ready_pid(1, 1, T);
    assert_eq!(pids_answering(&c, 2).len(), 2);
    c.signal(Signal::SIGTTOU);
    c.wait_report("scaled", |r| r["from"] == 2 && r["to"] == 1, T);
    let stopped = c.wait_report("exited", |r| r["pid"] == added, T);
    assert_eq!(stopped["status"]["code"], 0);
    c.signal(Signal::SIGTTOU);
    c.wait_report("scale_refused", |r| r["reason"] == "last_worker", T);
}

#[test]
fn a_hung_worker_is_killed_by_the_watchdog_and_replaced() {
    let c = start(
        &["-i", "1", "--ready", "notify", "--watchdog", "1s"],
        &[("FIXTURE_HANG_AFTER", "1")],
    );
    let hung = c.ready_pid(0, 1, T);
    let _ = get(c.addr(), "/");
    c.wait_report("watchdog_timeout", |r| r["pid"] == hung, T);
    let new = c.ready_pid(0, 2, T);
    assert_ne!(new, hung);
}

#[test]
fn worker_output_lines_are_prefixed_and_never_mixed() {
    let c = start(&["-i", "2"], &[("FIXTURE_PRINT_LINES", "3000")]);
    c.wait_for_nth("line slot=", 6000, T);
    let mut counts = [0usize; 2];
    for line in c.output().iter().filter(|l| l.contains("line slot=")) {
        let (prefix, rest) = line.split_once("] ").expect("prefixed");
        let slot: usize = prefix.strip_prefix("[fx:").unwrap().parse().unwrap();
        assert!(rest.starts_with(&format!("line slot={slot} n=")), "{line}");
        assert_eq!(rest.len(), 200, "a whole line: {line}");
        assert!(rest.ends_with("xxxx"));
        counts[slot] += 1;
    }
    assert_eq!(counts, [3000, 3000]);
}

#[test]
fn orphans_of_workers_are_reaped() {
    let c = start(
        &["-i", "1", "--ready", "notify"],
        &[("FIXTURE_ORPHAN", "1")],
    );
    c.ready_pid(0, 1, T);
    assert_orphan_reaped(c.pid());
}

/// The fixture's orphaned `sleep 1` is reparented to `parent` (subreaper or PID 1), which
/// has one worker; once the orphan exits it must be reaped, not left a zombie.
fn assert_orphan_reaped(parent: i32) {
    assert!(
        eventually(T, || children_of(parent).len() == 2),
        "the orphan was reparented to corral: {:?}",
        children_of(parent)
    );
    assert!(
        eventually(T, || children_of(parent).len() == 1),
        "zombies left under corral: {:?}",
        children_of(parent)
    );
}

/// (pid, state) of every process whose parent is `parent`, but corral's keeper.
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.trim().to_owned()) else {
            continue;
        };
        let mut fields = after.split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let keeper = stat.contains("(corral-keeper)");
        if ppid == parent && !keeper {
            out.push((
                entry.file_name().to_string_lossy().parse().unwrap_or(0),
                state,
            ));
        }
    }
    out
}

#[test]
fn serves_on_a_unix_socket() {
    let dir = tempdir("unix");
    let path = dir.join("app.sock");
    let listen = format!("unix:{}", path.display());
    let fixture = fixture();
    let c = Corral::start(
        CORRAL,
        &[
            "run", "--listen", &listen, "-i", "1", "--ready", "notify", "--", &fixture,
        ],
        &[],
    );
    c.ready_pid(0, 1, T);
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("slot=0"));
    drop(c);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn keep_alive_client_sees_connection_close_from_a_draining_worker() {
    let c = start(&["-i", "1", "--ready", "notify"], &[]);
    let old = c.ready_pid(0, 1, T);
    let mut client = KeepAlive::new(c.addr());
    assert_eq!(client.get("/").unwrap().pid(), Some(old));
    c.signal(Signal::SIGHUP);
    c.wait_report("reload_finished", |_| true, T);
    c.wait_for(&format!("fixture pid={old} draining"), T);
    let last_from_old = client.get("/").unwrap();
    assert_eq!(last_from_old.pid(), Some(old));
    assert!(
        last_from_old.close,
        "the draining worker ends the connection politely"
    );
    assert_ne!(client.get("/").unwrap().pid(), Some(old));
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sigusr1_is_forwarded_to_every_worker() {
    let c = start(&["-i", "2", "--ready", "notify"], &[]);
    let a = c.ready_pid(0, 1, T);
    let b = c.ready_pid(1, 1, T);
    c.signal(Signal::SIGUSR1);
    c.wait_for(&format!("fixture pid={a} got SIGUSR1"), T);
    c.wait_for(&format!("fixture pid={b} got SIGUSR1"), T);
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_gracefully_on_sigterm() {
    if std::env::var_os("CORRAL_SKIP_PID1").is_some() {
        return;
    }
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs `unshare --pid` (util-linux, run as root); set CORRAL_SKIP_PID1=1 to skip it"
    );
    let fixture = fixture();
    let mut c = Corral::start(
        "unshare",
        &[
            "--pid",
            "--fork",
            "--kill-child",
            CORRAL,
            "run",
            "--listen",
            "127.0.0.1:0",
            "-i",
            "1",
            "--ready",
            "notify",
            "--",
            &fixture,
        ],
        &[("FIXTURE_ORPHAN", "1")],
    );
    c.ready_pid(0, 1, T);
    let corral = children_of(c.pid())[0].0;
    let status = std::fs::read_to_string(format!("/proc/{corral}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "corral is PID 1 in its namespace: {nspid}"
    );
    assert_orphan_reaped(corral);
    assert_eq!(get(c.addr(), "/").unwrap().status, 200);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(corral), Signal::SIGTERM).unwrap();
    assert!(c.wait_exit(T).success());
    assert!(c
        .output()
        .iter()
        .any(|l| l.contains("worker 0") && l.contains("stopped: exit code 0")));
}

#[test]
fn max_workers_follow_the_cpu_affinity() {
    let fixture = fixture();
    // Pinned to one CPU: `max` means 1, and `-1` (one less than max) still means 1.
    for instances in ["max", "-1"] {
        let args = [
            "-c",
            "0",
            CORRAL,
            "run",
            "--listen",
            "127.0.0.1:0",
            "-i",
            instances,
            "--name",
            "fx",
            "--",
            &fixture,
        ];
        let c = Corral::start("taskset", &args, &[]);
        c.wait_for("fx: starting 1 workers", T);
    }
}

#[test]
fn a_worker_that_crashes_after_n_requests_is_restarted_while_the_other_serves() {
    // Each worker lives for longer than --min-uptime, so these crashes are "stable".
    let c = start(
        &["-i", "2", "--ready", "notify", "--min-uptime", "5ms"],
        &[("FIXTURE_CRASH_AFTER", "50")],
    );
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let load = Load::start(c.addr(), 1, false, T);
    // 400 requests mean at least 6 crashes, each followed by a restart in the same slot.
    assert!(load.wait_ok(400, T));
    let report = load.finish();
    let crashes = c
        .output()
        .iter()
        .filter(|l| l.contains("exited unexpectedly: exit code 3"))
        .count();
    assert!(crashes >= 6, "{crashes} crashes: {:?}", c.output());
    // The fixture exits right after answering, so no request is lost.
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        !c.output().iter().any(|l| l.contains("gave up")),
        "stable crashes never give up"
    );
}

#[test]
fn status_text_from_a_worker_is_shown() {
    let c = start(
        &["-i", "1", "--ready", "notify"],
        &[("FIXTURE_STATUS", "warming caches")],
    );
    c.wait_report(
        "status",
        |r| r["slot"] == 0 && r["text"] == "warming caches",
        T,
    );
}

#[test]
fn a_file_change_under_watch_reloads_and_ignored_paths_do_not() {
    let dir = tempdir("watch");
    std::fs::create_dir_all(dir.join("node_modules")).unwrap();
    let watched = dir.display().to_string();
    let c = start(
        &[
            "-i",
            "1",
            "--ready",
            "notify",
            "--watch",
            &watched,
            "--ignore-watch",
            "*.tmp",
        ],
        &[],
    );
    c.ready_pid(0, 1, T);
    std::fs::write(dir.join("node_modules/x.js"), "noise").unwrap();
    std::fs::write(dir.join("scratch.tmp"), "noise").unwrap();
    std::fs::write(dir.join("app.conf"), "v2").unwrap();
    c.wait_for("app.conf changed: reloading", T);
    c.wait_report("reload_finished", |r| r["replaced"] == 1, T);
    assert!(!c
        .output()
        .iter()
        .any(|l| l.contains("node_modules") || l.contains("scratch.tmp")));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cron_restart_reloads_on_schedule() {
    // Every second (croner takes an optional seconds field first).
    let c = start(
        &[
            "-i",
            "1",
            "--ready",
            "notify",
            "--cron-restart",
            "* * * * * *",
        ],
        &[],
    );
    c.ready_pid(0, 1, T);
    c.wait_for("scheduled reload (* * * * * *)", T);
    c.wait_report("reload_finished", |r| r["replaced"] == 1, T);
}

#[test]
fn without_autorestart_corral_ends_when_the_workers_have_exited() {
    let mut c = start(
        &["-i", "1", "--ready", "notify", "--no-autorestart"],
        &[("FIXTURE_CRASH_AFTER", "1")],
    );
    c.ready_pid(0, 1, T);
    let _ = get(c.addr(), "/");
    c.wait_report("not_restarted", |r| r["slot"] == 0, T);
    // A job that ran to its end is a stop, not a failure.
    assert!(c.wait_exit(T).success());
}

#[test]
fn issue_14_the_first_crash_after_a_stable_run_restarts_at_once_the_next_backs_off() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    // --min-uptime 0s: every worker that got ready ran stably.
    let c = start(&["-i", "1", "--min-uptime", "0s"], &[]);
    let first = c.ready_pid(0, 1, T);
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    c.wait_report(
        "restart_scheduled",
        |r| r["slot"] == 0 && r["delay"] == 0,
        T,
    );
    let second = c.ready_pid(0, 2, T);
    assert!(eventually(T, || get(c.addr(), "/")
        .is_ok_and(|r| r.pid() == Some(second))));
    kill(Pid::from_raw(second), Signal::SIGKILL).unwrap();
    c.wait_report(
        "restart_scheduled",
        |r| r["slot"] == 0 && r["delay"] == 100,
        T,
    );
    c.ready_pid(0, 3, T);
}

#[test]
fn issue_24_the_keeper_names_itself_in_ps_instead_of_repeating_corral_run() {
    let c = start(&["-i", "1"], &[]);
    c.ready_pid(0, 1, T);
    let parent = c.pid();
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .expect("children of corral run");
    let lines: Vec<String> = children
        .split_whitespace()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .collect();
    let keeper = format!("corral keeper of pid {parent} (kills its workers if it dies)");
    assert!(
        lines.iter().any(|l| l.trim_end() == keeper),
        "no child shows {keeper:?}: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("run --listen")),
        "a child repeats corral's command line: {lines:?}"
    );
}
