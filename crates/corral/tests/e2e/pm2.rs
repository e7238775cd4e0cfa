//! Issue 10: PM2 ecosystem files as PM2 users write them (the corpus in
//! `tests/ecosystem`), started, listed, served, reloaded under load and stopped.
//!
//! Longer than 500 lines: each test is one scenario read on its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use corral_testkit::{eventually, free_port, get, have, Home, KeepAlive, Load};

use crate::CORRAL;
use corral_testkit::{pids, AppStatus};

const T: Duration = Duration::from_secs(30);

/// A copy of the corpus beside `home`, `__PORT__` replaced by `port`; the path of `file`.
fn corpus(home: &Home, file: &str, port: u16) -> String {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/ecosystem");
    let to = home.dir.with_extension("ecosystem");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("__PORT__", &port.to_string());
        std::fs::write(to.join(path.file_name().unwrap()), text).unwrap();
    }
    to.join(file).display().to_string()
}

/// Node is needed for the corpus's app (and `.js` configs).
fn node() -> bool {
    have("node", "apt-get install nodejs")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn issue_10_the_canonical_cluster_mode_file_shares_the_port_and_reloads_losing_nothing() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-cluster");
    let port = free_port();
    let file = corpus(&home, "cluster.config.js", port);
    let started = home.ok(&["start", &file, "--env", "production"]);
    assert!(started.contains("started web (2 workers)"), "{started}");
    home.wait_online("web", 2);
    // No `listen` key: the workers' listen(PORT) got the port corral bound for the app.
    answers(port, "app=web mode=production");
    let listen = home.app("web").listen.join(" ");
    assert!(
        listen.contains(&format!("[::]:{port} (asked by the app)")),
        "{listen}"
    );
    for keep_alive in [true, false] {
        let load = Load::start(local(port), 4, keep_alive, Duration::from_secs(120));
        assert!(load.wait_ok(200, T));
        for _ in 0..3 {
            let old = pids(&home.wait_online("web", 2));
            home.ok(&["reload", "web"]);
            assert!(
                eventually(T, || {
                    let now = pids(&home.app("web"));
                    now.len() == 2 && now.iter().all(|p| !old.contains(p))
                }),
                "the reload replaced both workers: {:?}",
                home.app("web")
            );
            let before = load.ok_so_far();
            assert!(load.wait_ok(before + 300, T));
        }
        let report = load.finish();
        assert_eq!(
            report.failed,
            0,
            "keep-alive {keep_alive}: {report:?}\n{}",
            home.daemon_log()
        );
        assert!(
            report.by_pid.len() >= 4,
            "old and new workers served: {report:?}"
        );
    }
    home.ok(&["stop", "web"]);
    assert!(eventually(T, || get(local(port), "/").is_err()));
    // The port is the app's for its life: a restart binds it again.
    home.ok(&["restart", "web"]);
    home.wait_online("web", 2);
    answers(port, "app=web");
}

/// Node workers take the port they asked for over Node's IPC, where libuv does not make
/// a handle non-blocking: a blocking listener left the workers that lost the race for
/// a new connection waiting in accept() with their event loops stopped, so their
/// kept-alive clients waited until the next connect or the 10 s watchdog (the CI
/// failure of `..._reloads_losing_nothing`, 3 of 154,755 requests).
#[test]
fn issue_10_a_new_connection_never_stalls_the_workers_that_did_not_take_it() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-stall");
    let port = free_port();
    let file = corpus(&home, "cluster.config.js", port);
    home.ok(&["start", &file]);
    let workers = pids(&home.wait_online("web", 2));
    answers(port, "app=web");
    // One kept-alive connection to each worker.
    let mut kept = Vec::new();
    for _ in 0..50 {
        let mut client = KeepAlive::new(local(port));
        let pid = client.get("/").expect("an answer").pid().expect("a pid");
        if !kept.iter().any(|(p, _)| *p == pid) {
            kept.push((pid, client));
        }
        if kept.len() == 2 {
            break;
        }
    }
    assert_eq!(kept.len(), 2, "no connection to each of {workers:?}");
    for round in 0..10 {
        get(local(port), "/").expect("a new connection is served");
        for (pid, client) in &mut kept {
            let answer = client.get("/").unwrap_or_else(|e| {
                panic!("round {round}: worker {pid} stalled after a connect: {e}")
            });
            assert_eq!(answer.pid(), Some(*pid));
        }
    }
}

#[test]
fn issue_10_every_file_shape_starts_cleanly() {
    if !node() || !have("python3", "apt-get install python3") {
        return;
    }
    let home = Home::new(CORRAL, "pm2-shapes");
    for (file, apps) in [
        ("commented.json", &["json5"][..]),
        ("list.json", &["api", "ticker"]),
        ("single.yaml", &["solo"]),
        ("esm.config.mjs", &["esm"]),
    ] {
        let port = free_port();
        let path = corpus(&home, file, port);
        let out = home.corral(&["start", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {stderr}");
        assert!(!stderr.contains("warning"), "{file}: {stderr}");
        for app in apps {
            // PM2 runs one instance of an app that doesn't say how many.
            home.wait_online(app, 1);
        }
        // Ready by the delay (1 s) may come before a slow start's listen(): wait for it.
        answers(port, &format!("app={}", apps[0]));
    }
    // `out_file: "NULL"` throws the output away: no file named NULL anywhere.
    let dir = home.dir.with_extension("ecosystem");
    assert!(!dir.join("NULL").exists());
    assert!(!home.dir.join("NULL").exists());
}

#[test]
fn issue_10_a_missing_profile_warns_and_interpreter_args_reach_python() {
    if !node() || !have("python3", "apt-get install python3") {
        return;
    }
    let home = Home::new(CORRAL, "pm2-profiles");
    let port = free_port();
    let path = corpus(&home, "profiles.json", port);
    let out = home.corral(&["start", &path, "--env", "production"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("apps[1] (plain) has no `env_production`; it starts with `env` only"),
        "{stderr}"
    );
    home.wait_online("prod", 1);
    home.wait_online("plain", 1);
    answers(port, "mode=production");
    // `interpreter_args: ["-u"]`: python's output is unbuffered, so it reaches the log.
    assert!(
        eventually(T, || home
            .ok(&["logs", "plain", "--lines", "5"])
            .contains("tick ")),
        "{}",
        home.ok(&["logs", "plain"])
    );
    let command = home.app("plain").command;
    assert_eq!(command[..2], ["python3", "-u"], "{command:?}");
}

#[test]
fn issue_10_a_port_in_use_reaches_the_apps_listen_callback_as_node_says_it() {
    if !node() {
        return;
    }
    let taken = std::net::TcpListener::bind("[::]:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let home = Home::new(CORRAL, "pm2-inuse");
    let path = corpus(&home, "commented.json", port);
    home.ok(&["start", &path]);
    let log = home.dir.join("logs/json5-0-err.log");
    assert!(
        eventually(T, || std::fs::read_to_string(&log).is_ok_and(
            |t| t.contains(&format!("listen failed: EADDRINUSE listen {port}"))
        )),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    assert!(
        eventually(T, || home.daemon_log().contains(&format!(
            "asked for [::]:{port}: cannot listen on [::]:{port}: address already in use"
        ))),
        "{}",
        home.daemon_log()
    );
    // `ls` tells the truth: a crash-looping app is not "online", and says why.
    assert!(
        eventually(T, || home.app("json5").status == AppStatus::Degraded),
        "{:?}",
        home.app("json5")
    );
    let table = home.ok(&["ls"]);
    assert!(table.contains("restarting (exit code 1 after"), "{table}");
}

#[test]
fn issue_10_scale_and_reloaded_settings_survive_restart_and_save_kill_resurrect() {
    let home = Home::new(CORRAL, "pm2-state");
    let fixture = corral_testkit::fixture_bin(CORRAL).display().to_string();
    let dir = home.dir.with_extension("state");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ecosystem.json");
    let write = |mode: &str| {
        let text = format!(
            r#"{{"apps":[{{"name":"fx","script":"{fixture}","listen":"127.0.0.1:0","env":{{"MODE":"{mode}"}}}}]}}"#
        );
        std::fs::write(&file, text).unwrap();
    };
    write("first");
    let file = file.display().to_string();
    home.ok(&["start", &file]);
    home.wait_online("fx", 1);
    home.ok(&["scale", "fx", "+2"]);
    home.wait_online("fx", 3);
    home.ok(&["restart", "fx"]);
    home.wait_online("fx", 3);
    // New settings from the file, by a reload: they stick too.
    write("second");
    home.ok(&["reload", &file]);
    assert!(eventually(T, || home
        .ok(&["env", "fx"])
        .contains("MODE=second")));
    home.wait_online("fx", 3);
    home.ok(&["save"]);
    let workers = pids(&home.app("fx"));
    // PM2's save, kill, resurrect. (A SIGKILLed daemon's apps would live on and be
    // taken back by the next daemon: issue 13.)
    home.ok(&["kill"]);
    assert!(eventually(T, || workers
        .iter()
        .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())));
    let restored = home.ok(&["resurrect"]);
    assert!(restored.contains("started fx (3 workers)"), "{restored}");
    home.wait_online("fx", 3);
    assert!(home.ok(&["env", "fx"]).contains("MODE=second"));
}

#[test]
fn issue_10_unstartup_removes_what_startup_installed() {
    let home = Home::new(CORRAL, "pm2-unstartup");
    let fake_home = home.dir.with_extension("user");
    std::fs::create_dir_all(&fake_home).unwrap();
    let corral = |args: &[&str]| {
        Command::new(CORRAL)
            .args(args)
            .env("CORRAL_HOME", &home.dir)
            .env("HOME", &fake_home)
            .output()
            .unwrap()
    };
    let none = corral(&["unstartup", "systemd", "--user"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no unit at"));
    assert!(corral(&["startup", "systemd", "--user", "--install"])
        .status
        .success());
    let unit = fake_home.join(".config/systemd/user/corral.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Environment=\"PATH="), "{text}");
    assert!(
        text.contains("LimitNOFILE=") && text.contains("ExecReload="),
        "{text}"
    );
    let removed = corral(&["unstartup", "systemd", "--user"]);
    assert!(removed.status.success(), "{removed:?}");
    assert!(!unit.exists());
}

/// Waits until the app on `port` answers with `text` (old workers serve on for the
/// settle window after their replacements are ready).
fn answers(port: u16, text: &str) {
    assert!(
        eventually(T, || get(local(port), "/")
            .is_ok_and(|r| r.body.contains(text))),
        "never answered {text}: {:?}",
        get(local(port), "/")
    );
}

/// The pids of `name`'s workers once it has `n` online, after they differ from `old`.
fn replaced(home: &Home, name: &str, n: usize, old: &[i32]) -> Vec<i32> {
    assert!(
        eventually(T, || {
            let now = pids(&home.app(name));
            now.len() == n && now.iter().all(|p| !old.contains(p))
        }),
        "{name}'s workers were not replaced: {:?}",
        home.app(name)
    );
    pids(&home.wait_online(name, n))
}

#[test]
fn issue_10_verbs_act_on_a_config_files_apps_and_on_ids() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-verbs");
    let port = free_port();
    let file = corpus(&home, "cluster.config.js", port);
    home.ok(&["startOrReload", &file]);
    let first = pids(&home.wait_online("web", 2));
    // `start` of a file whose apps run: they take its settings and reload.
    home.ok(&["start", &file, "--env", "production"]);
    let second = replaced(&home, "web", 2, &first);
    answers(port, "mode=production");
    home.ok(&["startOrRestart", &file]);
    let third = replaced(&home, "web", 2, &second);
    answers(port, "mode=-");
    home.ok(&["reload", &file, "--env", "production"]);
    let fourth = replaced(&home, "web", 2, &third);
    answers(port, "mode=production");
    // Numeric ids, as `ls` shows them.
    let id = home.app("web").id.to_string();
    assert!(
        home.ok(&["ls"]).contains(&format!("{id}   web")),
        "{}",
        home.ok(&["ls"])
    );
    home.ok(&["restart", &id]);
    replaced(&home, "web", 2, &fourth);
    let jlist: serde_json::Value = serde_json::from_str(&home.ok(&["jlist"])).unwrap();
    assert_eq!(jlist[0]["name"], "web");
    assert_eq!(home.ok(&["jlist"]).trim().lines().count(), 1);
    assert!(home.ok(&["prettylist"]).lines().count() > 10);
    let (log, moved) = (
        home.dir.join("logs/web-0-out.log"),
        home.dir.join("logs/web-0-out.log.rotated"),
    );
    std::fs::rename(&log, &moved).unwrap();
    home.ok(&["reloadLogs"]);
    home.ok(&["reload", &id]);
    assert!(eventually(T, || std::fs::read_to_string(&log)
        .is_ok_and(|t| t.contains("listening on"))));
    home.ok(&["reset", &id]);
    assert_eq!(home.app("web").restarts, 0);
    home.ok(&["stop", &file]);
    assert!(eventually(T, || home.app("web").status == AppStatus::Stopped));
    home.ok(&["delete", &file]);
    assert_eq!(home.apps(), vec![]);
    let report = home.ok(&["report"]);
    assert!(report.starts_with("corral "), "{report}");
    assert!(report.contains("daemon pong from daemon"), "{report}");
}

#[test]
fn issue_10_init_writes_a_starter_file_that_starts() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-init");
    let dir = home.dir.with_extension("init");
    std::fs::create_dir_all(&dir).unwrap();
    let init = |args: &[&str]| {
        Command::new(CORRAL)
            .args(args)
            .current_dir(&dir)
            .env("CORRAL_HOME", &home.dir)
            .output()
            .unwrap()
    };
    assert!(init(&["init"]).status.success());
    assert!(!init(&["ecosystem"]).status.success(), "never overwrites");
    assert!(init(&["init", "--toml"]).status.success());
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/ecosystem/app.js"),
        dir.join("app.js"),
    )
    .unwrap();
    for file in ["ecosystem.config.js", "corral.toml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let port = free_port().to_string();
        std::fs::write(dir.join(file), text.replace("3000", &port)).unwrap();
        let out = init(&["start", file]);
        assert!(out.status.success(), "{file}: {out:?}");
        home.wait_online("app", corral_core::spec::usable_cpus());
        home.ok(&["delete", "app"]);
    }
}

#[test]
fn issue_10_fork_mode_with_increment_var_and_instance_var() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-increment");
    // Each fork-mode instance binds its own.
    let port = two_free_ports();
    let file = corpus(&home, "increment.json", port);
    home.ok(&["start", &file]);
    home.wait_online("inc", 2);
    let id = home.app("inc").id.to_string();
    for slot in 0..2u16 {
        answers(port + slot, &format!("inst={slot} pm_id={id} name=inc"));
    }
    // Fork mode: the workers bound their own ports; corral bound none for them.
    let listen = home.app("inc").listen.join(" ");
    assert!(!listen.contains("asked by the app"), "{listen}");
}

#[test]
fn issue_10_log_type_json_log_date_format_stop_exit_codes_and_namespaces() {
    if !node() || !have("python3", "apt-get install python3") {
        return;
    }
    let home = Home::new(CORRAL, "pm2-logs");
    let port = free_port();
    let file = corpus(&home, "logs.config.js", port);
    home.ok(&["start", &file]);
    home.wait_online("jsonlog", 1);
    let logs = home.dir.join("logs");
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    assert!(eventually(T, || read("jsonlog-0-out.log").contains("listening on")));
    let line: serde_json::Value =
        serde_json::from_str(read("jsonlog-0-out.log").lines().next().unwrap()).unwrap();
    assert_eq!(line["app_name"], "jsonlog");
    assert_eq!(line["type"], "out");
    assert_eq!(line["process_id"], 0);
    assert!(line["message"]
        .as_str()
        .unwrap()
        .starts_with("listening on"));
    // "YYYY-MM-DD HH:mm Z": local time with its offset, then the line.
    assert!(eventually(T, || read("stamped-0-out.log").contains(" tick ")));
    let stamped = read("stamped-0-out.log");
    let first = stamped.lines().next().unwrap();
    let (date, rest) = first.split_at(23);
    assert!(rest.starts_with(" tick "), "{first}");
    assert_eq!(&date[4..5], "-");
    assert!(
        date[17..].starts_with('+') || date[17..].starts_with('-'),
        "{first}"
    );
    // Exit code 3 is a stop exit code: done, not restarted.
    assert!(
        eventually(T, || home.daemon_log().contains(
            "once: worker 0 is not restarted: exit code 3 is one of its stop exit codes"
        )),
        "{}",
        home.daemon_log()
    );
    assert_eq!(home.app("once").restarts, 0);
    // A namespace names its apps at once.
    let restarted = home.ok(&["restart", "shop"]);
    assert_eq!(restarted.trim(), "restarted jsonlog, stamped");
}

#[test]
fn issue_12_completions_and_the_man_page_come_from_the_cli_definitions() {
    let out = Command::new(CORRAL)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("startOrReload"), "every verb completes");
    if have("bash", "apt-get install bash") {
        // bash takes it: the function is defined and bound to `corral`.
        let check = Command::new("bash")
            .args(["-c", "source /dev/stdin; complete -p corral"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(
            String::from_utf8_lossy(&check.stdout).contains("corral"),
            "{check:?}"
        );
    }
    for shell in ["zsh", "fish"] {
        assert!(Command::new(CORRAL)
            .args(["completions", shell])
            .output()
            .unwrap()
            .status
            .success());
    }
    let man = Command::new(CORRAL).arg("man").output().unwrap();
    let page = String::from_utf8(man.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH corral"),
        "{page}"
    );
    assert!(page.contains("startOrReload"), "every verb is in the page");
}

/// Two free loopback ports in a row, P and P+1 (`increment_var: 'PORT'`).
fn two_free_ports() -> u16 {
    (0..50)
        .map(|_| free_port())
        .find(|&p| p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
        .expect("two free ports in a row")
}

/// Every one of several requests in a row to `port` is answered by instance `slot`.
fn every_request_answered(port: u16, slot: u16) -> Vec<i32> {
    (0..6)
        .map(|n| {
            let answer = get(local(port), "/")
                .unwrap_or_else(|e| panic!("request {n} to {port} (instance {slot}): {e}"));
            assert!(
                answer.body.contains(&format!("inst={slot} ")),
                "{port}: {}",
                answer.body
            );
            answer.pid().expect("the app says its pid")
        })
        .collect()
}

#[test]
fn issue_21_reload_of_a_fork_mode_app_whose_workers_bind_their_own_ports_restarts_each_and_says_so()
{
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-fork-reload");
    let port = two_free_ports();
    let file = corpus(&home, "increment.json", port);
    home.ok(&["start", &file]);
    let before = pids(&home.wait_online("inc", 2));
    for reload in [vec!["reload", file.as_str()], vec!["reload", "inc"]] {
        let old = pids(&home.app("inc"));
        let said = home.ok(&reload);
        assert!(said.contains("reloaded inc: 2 workers replaced"), "{said}");
        assert!(
            said.contains("each stopped before its replacement started"),
            "{said}"
        );
        assert!(
            said.contains("cluster mode reloads with zero downtime"),
            "{said}"
        );
        let now = replaced(&home, "inc", 2, &old);
        for slot in 0..2u16 {
            let served = every_request_answered(port + slot, slot);
            assert!(
                served.iter().all(|p| now.contains(p)),
                "new code serves: {served:?} {now:?}"
            );
        }
    }
    assert!(pids(&home.app("inc")).iter().all(|p| !before.contains(p)));
    assert_eq!(home.app("inc").restarts, 0, "{}", home.daemon_log());
    assert!(
        !home.daemon_log().contains("aborted"),
        "{}",
        home.daemon_log()
    );
}

#[test]
fn issue_21_a_reload_restart_or_scale_that_cannot_deploy_fails_with_the_reason() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-bad-reload");
    let dir = home.dir.with_extension("app");
    std::fs::create_dir_all(&dir).unwrap();
    let app = dir.join("app.js");
    let broken = dir.join("broken");
    // The deploy that breaks: the new code throws at start, as a bad release does.
    std::fs::write(
        &app,
        "if (require('fs').existsSync(process.env.BROKEN)) throw new Error('bad release');\n\
         require('http').createServer((q, s) => s.end(`pid=${process.pid}\\n`)).listen(process.env.PORT);\n",
    )
    .unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = format!("BROKEN={}", broken.display());
    let app = app.display().to_string();
    home.ok(&[
        "start", "--name", "web", "-i", "2", "--listen", &listen, "-e", &env, "--", "node", &app,
    ]);
    let before = pids(&home.wait_online("web", 2));
    std::fs::write(&broken, "").unwrap();
    let said = home.fails(&["reload", "web"]);
    assert!(said.contains("web: reload aborted"), "{said}");
    assert!(
        said.contains("exited before it was ready (exit code 1)"),
        "{said}"
    );
    assert!(said.contains("the old workers keep serving"), "{said}");
    assert_eq!(pids(&home.app("web")), before, "the old workers serve on");
    assert!(get(local(port), "/").is_ok_and(|r| r.pid().is_some_and(|p| before.contains(&p))));
    // A restart with the bad release can't keep the old workers: it says they did not
    // come up, and why.
    let said = home.fails(&["restart", "web"]);
    assert!(
        said.contains("web: a worker did not come up: worker"),
        "{said}"
    );
    assert!(said.contains("exit code 1"), "{said}");
    // The fix, deployed: the same verbs now succeed.
    std::fs::remove_file(&broken).unwrap();
    let said = home.ok(&["restart", "web"]);
    assert!(said.contains("restarted web"), "{said}");
    home.wait_online("web", 2);
    let said = home.ok(&["reload", "web"]);
    assert!(said.contains("reloaded web: 2 workers replaced"), "{said}");
    // A scale-up is answered once the added worker is up...
    let said = home.ok(&["scale", "web", "3"]);
    assert!(said.contains("web: 2 → 3 workers"), "{said}");
    let online = home
        .app("web")
        .workers
        .iter()
        .filter(|w| w.status == corral_testkit::WorkerStatus::Online)
        .count();
    assert_eq!(online, 3, "{:?}", home.app("web"));
    // ...and fails with the reason when it is not.
    std::fs::write(&broken, "").unwrap();
    let said = home.fails(&["scale", "web", "4"]);
    assert!(
        said.contains("web: a worker did not come up: worker 3"),
        "{said}"
    );
}

#[test]
fn issue_21_cluster_mode_increment_var_answers_every_port_on_every_start_and_reload() {
    if !node() {
        return;
    }
    let home = Home::new(CORRAL, "pm2-increment-cluster");
    let port = two_free_ports();
    let fork = corpus(&home, "increment.json", port);
    let file = fork.replace("increment.json", "increment-cluster.json");
    let text = std::fs::read_to_string(&fork).unwrap();
    std::fs::write(&file, text.replace("\"fork\"", "\"cluster\"")).unwrap();
    for _ in 0..3 {
        home.ok(&["start", &file]);
        home.wait_online("inc", 2);
        for slot in 0..2u16 {
            every_request_answered(port + slot, slot);
        }
        let old = pids(&home.app("inc"));
        home.ok(&["reload", &file]);
        replaced(&home, "inc", 2, &old);
        for slot in 0..2u16 {
            every_request_answered(port + slot, slot);
        }
        home.ok(&["delete", "inc"]);
    }
}
