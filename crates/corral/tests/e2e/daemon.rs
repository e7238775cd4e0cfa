//! The daemon and its CLI, each test with a home (`CORRAL_HOME`) of its own.
//!
//! Longer than 500 lines: each test is one scenario read on its own; helpers every area shares are in `corral-testkit`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use corral_testkit::{eventually, get};

use crate::{fixture, home, CORRAL};
use corral_testkit::{pids, AppDetail, AppStatus, WorkerStatus};

type Home = corral_testkit::Home;

const T: Duration = Duration::from_secs(20);

#[test]
fn start_ls_reload_scale_stop_restart_delete() {
    let home = home("lifecycle");
    let fixture = fixture();
    let started = home.ok(&[
        "start",
        &fixture,
        "--name",
        "fx",
        "-i",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--ready",
        "notify",
    ]);
    assert!(
        started.starts_with("started fx (2 workers) on 127.0.0.1:"),
        "{started}"
    );
    let before = pids(&home.wait_online("fx", 2));
    let addr = home.addr("fx");
    assert!(get(addr, "/").unwrap().body.contains("app=fx"));
    let table = home.ok(&["ls"]);
    assert!(table.starts_with("id  app  slot  pid"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("online")).count(),
        3,
        "{table}"
    );

    home.ok(&["reload", "fx"]);
    assert!(eventually(T, || {
        let now = pids(&home.app("fx"));
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    }));
    assert_eq!(home.ok(&["scale", "fx", "+1"]).trim(), "fx: 2 → 3 workers");
    home.wait_online("fx", 3);
    assert_eq!(home.ok(&["stop", "fx"]).trim(), "stopped fx");
    assert_eq!(home.app("fx").status, AppStatus::Stopped);
    assert!(get(addr, "/").is_err(), "the port is released");
    assert_eq!(home.ok(&["restart", "fx"]).trim(), "restarted fx");
    home.wait_online("fx", 3); // a scale sticks across restart
    assert_eq!(home.ok(&["delete", "fx"]).trim(), "deleted fx");
    assert_eq!(home.apps(), vec![]);
}

#[test]
fn unknown_apps_and_bad_input_get_clear_errors() {
    let home = home("errors");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "api",
        "--listen",
        "127.0.0.1:0",
        "-i",
        "1",
    ]);
    assert_eq!(
        home.fails(&["stop", "apj"]).trim(),
        "error: no app named `apj`; did you mean `api`?"
    );
    assert!(home
        .fails(&["scale", "api", "lots"])
        .contains("invalid scale `lots`: expected N, +N or -N with N a whole number"));
    let duplicate = home.fails(&["start", &fixture, "--name", "api"]);
    assert!(
        duplicate.contains("an app named `api` exists (online)"),
        "{duplicate}"
    );
    let missing = home.fails(&["start", "no-such-app.js"]);
    assert!(missing.starts_with("error: no such script: "), "{missing}");
    assert!(missing.trim().ends_with("/no-such-app.js"), "{missing}");
    let json = home.fails(&["send", "api", "{nope"]);
    assert!(json.starts_with("error: `{nope` is not JSON"), "{json}");
}

/// `corral run`'s order works for `corral start` too: the program after `--`, flags
/// before it; with nothing to run, the error shows the three forms.
#[test]
fn start_takes_the_program_after_the_double_dash_as_corral_run_does() {
    let home = home("run-order");
    let fixture = fixture();
    home.ok(&["start", "--name", "fx", "-i", "1", "--", &fixture, "--flag"]);
    let app = home.wait_online("fx", 1);
    assert_eq!(app.command, vec![fixture.clone(), "--flag".into()]);
    let nothing = home.fails(&["start", "--name", "none"]);
    assert!(
        nothing.contains("`corral start` needs what to run")
            && nothing.contains("`corral start -i 2 -- node app.js`"),
        "{nothing}"
    );
}

#[test]
fn without_a_daemon_ls_is_empty_and_stop_says_so() {
    let home = home("nodaemon");
    assert_eq!(
        home.ok(&["ls"]).trim(),
        "no apps (start one with `corral start app.js`)"
    );
    let err = home.fails(&["stop", "x"]);
    assert!(
        err.starts_with("error: no corral daemon is running"),
        "{err}"
    );
}

#[test]
fn save_then_a_killed_daemon_then_resurrect_restores_every_app() {
    let home = home("resurrect");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "a",
        "-i",
        "2",
        "--listen",
        "127.0.0.1:0",
    ]);
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "b",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
        "-e",
        "GREETING=hi",
    ]);
    home.wait_online("a", 2);
    home.wait_online("b", 1);
    assert_eq!(
        home.ok(&["save"]).trim(),
        format!("saved 2 apps to {}/dump.json", home.dir.display())
    );
    let old_workers = pids(&home.app("a"));
    // The daemon and its holder both die: nothing can take the workers back (issue 13's
    // re-adoption needs the holder).
    let holder = home.holder_pid().expect("the daemon's holder runs");
    for pid in [home.daemon_pid(), holder] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    // Their channel ends with both: corral-worker workers drain and exit.
    assert!(eventually(T, || {
        old_workers
            .iter()
            .all(|&p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    }));
    let restored = home.ok(&["resurrect"]);
    assert!(
        restored.contains("started a (2 workers)") && restored.contains("started b (1 workers)"),
        "{restored}"
    );
    home.wait_online("a", 2);
    home.wait_online("b", 1);
    assert_eq!(get(home.addr("b"), "/env/GREETING").unwrap().body, "hi");
}

#[test]
fn the_control_socket_is_private_and_other_users_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let home = home("socket");
    home.ok(&["ping"]);
    let socket = home.dir.join("corral.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    if !nix::unistd::geteuid().is_root() {
        return; // checking the peer uid needs a second user
    }
    // Even with the file opened up, the daemon checks who is on the other end.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&home.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(CORRAL)
        .arg("ping")
        .env("CORRAL_HOME", &home.dir)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The CLI refuses a home that is not the user's own...
    assert!(
        err.contains("it belongs to uid 0, not to you (uid 65534)"),
        "{err}"
    );
    // ...and a client that connects anyway is refused by the daemon.
    let client = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        s.sendall(b'{\"version\":2,\"op\":\"ping\"}\\n')\n\
        print(s.makefile().readline())";
    let out = Command::new("python3")
        .args(["-c", client])
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("permission denied: this daemon belongs to uid 0"),
        "{answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn log_rotation_under_a_fast_writer_loses_no_line() {
    let home = home("logs");
    let fixture = fixture();
    let out = home.corral_env(
        &[
            "start",
            &fixture,
            "--name",
            "loud",
            "-i",
            "1",
            "--listen",
            "127.0.0.1:0",
            "-e",
            "FIXTURE_PRINT_LINES=20000",
        ],
        // The daemon this command starts keeps these limits.
        &[
            ("CORRAL_LOG_MAX_BYTES", "65536"),
            ("CORRAL_LOG_KEEP", "200"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = home.dir.join("logs");
    let base = logs.join("loud-0-out.log");
    let read_all = || {
        let mut text = String::new();
        for n in (1..=200).rev() {
            text += &std::fs::read_to_string(format!("{}.{n}", base.display())).unwrap_or_default();
        }
        text + &std::fs::read_to_string(&base).unwrap_or_default()
    };
    assert!(eventually(T, || read_all()
        .lines()
        .filter(|l| l.starts_with("line "))
        .count()
        >= 20000));
    let all = read_all();
    let lines: Vec<&str> = all.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines.len(), 20000, "no line lost or doubled");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("line slot=0 n={i} ")),
            "line {i}: {line}"
        );
    }
    assert!(
        std::path::Path::new(&format!("{}.30", base.display())).exists(),
        "it rotated"
    );
    let tail = home.ok(&["logs", "loud", "--lines", "1", "--out"]);
    assert!(tail.starts_with("[loud:0 out] "), "{tail}");
}

#[test]
fn corral_start_runs_an_unmodified_node_app_with_the_right_interpreter() {
    if std::env::var_os("CORRAL_SKIP_NODE").is_some()
        || !corral_testkit::have("node", "install Node.js 20+")
    {
        return;
    }
    let home = home("node");
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/node/plain.js");
    let app = app.canonicalize().unwrap().display().to_string();
    home.ok(&["start", &app, "-i", "2", "--listen", "127.0.0.1:0"]);
    let view = home.wait_online("plain", 2);
    assert_eq!(view.command[0], "node");
    let addr = home.addr("plain");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..500 {
        if let Some(pid) = get(addr, "/").ok().and_then(|r| r.pid()) {
            seen.insert(pid);
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), {
        let mut p = pids(&view);
        p.sort();
        p
    });
}

#[test]
fn describe_and_env_show_the_declared_environment_with_secrets_masked_and_flush_empties_logs() {
    let home = home("describe");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "api",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
        "-e",
        "API_TOKEN=s3cr3t",
        "-e",
        "MODE=prod",
    ]);
    home.wait_online("api", 1);
    let described = home.ok(&["describe", "api"]);
    assert!(described.contains("name      api"), "{described}");
    assert!(described.contains("  MODE=prod"), "{described}");
    assert!(described.contains("  API_TOKEN=****"), "{described}");
    assert!(!described.contains("s3cr3t"));
    let json: serde_json::Value =
        serde_json::from_str(&home.ok(&["env", "api", "--json"])).unwrap();
    assert_eq!(
        (json["MODE"].as_str(), json["API_TOKEN"].as_str()),
        (Some("prod"), Some("****"))
    );
    let env = home.ok(&["env", "api"]);
    assert!(env.lines().any(|l| l == "MODE=prod"), "{env}");
    assert!(
        !env.contains("SHELL="),
        "nothing from the invoking shell leaks in: {env}"
    );
    let detail: AppDetail = serde_json::from_str(&home.ok(&["describe", "api", "--json"])).unwrap();
    assert_eq!((detail.view.name.as_str(), detail.instances), ("api", 1));
    assert!(detail
        .env
        .iter()
        .any(|v| v.key == "API_TOKEN" && v.value == "****"));
    // The worker printed its start line; flush empties the files.
    assert!(eventually(T, || home
        .ok(&["logs", "api", "--out"])
        .contains("listening")));
    assert_eq!(
        home.ok(&["flush", "api"]).trim(),
        "flushed 1 log files of api"
    );
    assert!(!home.ok(&["logs", "api", "--out"]).contains("listening"));
}

/// Writes `name` with `text` into a fresh directory; returns its path.
fn config_file(home: &Home, name: &str, text: &str) -> PathBuf {
    let dir = home.dir.with_extension("configs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn ecosystem_files_in_every_format_start_the_right_apps_with_the_right_env() {
    let home = home("ecosystem");
    let fixture = fixture();
    let json = format!(
        r#"{{ "apps": [ {{ "name": "j", "script": "{fixture}", "instances": 2, "listen": "127.0.0.1:0",
            "env": {{ "MODE": "dev", "ONLY_BASE": "yes" }}, "env_production": {{ "MODE": "prod" }} }} ] }}"#
    );
    let yaml = format!("apps:\n  - name: y\n    script: {fixture}\n    instances: 1\n    listen: 127.0.0.1:0\n    env:\n      MODE: yaml\n");
    let toml = format!("[[app]]\nname = \"t\"\nscript = \"{fixture}\"\ninstances = 1\nlisten = [\"127.0.0.1:0\"]\n[app.env]\nMODE = \"toml\"\n");
    let js = format!(
        "module.exports = {{ apps: [{{ name: 'js', script: '{fixture}', instances: 1, listen: '127.0.0.1:0', env: {{ MODE: 'js-' + (1 + 1) }} }}] }};\n"
    );
    let files = [
        ("ecosystem.config.json", json, vec!["--env", "production"]),
        ("ecosystem.yml", yaml, vec![]),
        ("corral.toml", toml, vec![]),
        ("ecosystem.config.js", js, vec![]),
    ];
    for (name, text, extra) in &files {
        if name.ends_with(".js")
            && (std::env::var_os("CORRAL_SKIP_NODE").is_some()
                || !corral_testkit::have("node", "install Node.js 20+"))
        {
            continue;
        }
        let path = config_file(&home, name, text).display().to_string();
        let mut args = vec!["start", path.as_str()];
        args.extend(extra.iter().copied());
        home.ok(&args);
    }
    let mode = |app: &str| get(home.addr(app), "/env/MODE").unwrap().body;
    home.wait_online("j", 2);
    assert_eq!(mode("j"), "prod", "env_production overrides env");
    assert_eq!(get(home.addr("j"), "/env/ONLY_BASE").unwrap().body, "yes");
    home.wait_online("y", 1);
    assert_eq!(mode("y"), "yaml");
    home.wait_online("t", 1);
    assert_eq!(mode("t"), "toml");
    if std::env::var_os("CORRAL_SKIP_NODE").is_none() {
        home.wait_online("js", 1);
        assert_eq!(mode("js"), "js-2");
    }
}

#[test]
fn config_files_warn_about_unknown_keys_and_reject_bad_values_with_file_key_and_line() {
    let home = home("badconfig");
    let path = config_file(
        &home,
        "ecosystem.config.json",
        "{\n  \"apps\": [ {\n    \"script\": \"x.js\",\n    \"instances\": { \"n\": 2 }\n  } ]\n}\n",
    );
    let err = home.fails(&["start", &path.display().to_string()]);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}:4: apps[0].instances: expected a number, \"max\" or a negative number (CPUs less that many), got {{\"n\":2}}",
            path.display()
        )
    );
    let fixture = fixture();
    let path = config_file(
        &home,
        "typo.json",
        &format!(
            r#"{{"apps":[{{"name":"w","script":"{fixture}","instnces":2,"listen":"127.0.0.1:0"}}]}}"#
        ),
    );
    let out = home.corral(&["start", &path.display().to_string()]);
    assert!(out.status.success());
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(
        warn.contains(":1: apps[0].instnces: unknown key (did you mean `instances`?); ignored"),
        "{warn}"
    );
}

#[test]
fn the_systemd_unit_runs_the_daemon_with_resurrect_as_type_notify() {
    let home = home("startup");
    let unit = home.ok(&["startup", "systemd"]);
    assert!(unit.contains("Type=notify\n"), "{unit}");
    assert!(
        unit.contains(&format!("ExecStart={CORRAL} daemon --resurrect\n")),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("ExecStop={CORRAL} kill\n")),
        "{unit}"
    );
    assert!(
        unit.contains(&format!("Environment=CORRAL_HOME={}\n", home.dir.display())),
        "{unit}"
    );
}

#[test]
fn daemon_resurrect_restores_saved_apps_then_notifies_systemd_and_sigterm_drains() {
    let home = home("notify");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "svc",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]);
    home.wait_online("svc", 1);
    home.ok(&["save"]);
    home.ok(&["kill"]);
    // What systemd does: a notify socket, then `corral daemon --resurrect` in the foreground.
    let sock_path = home.dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    notify.set_read_timeout(Some(T)).unwrap();
    let mut daemon = Command::new(CORRAL)
        .args(["daemon", "--resurrect"])
        .env("CORRAL_HOME", &home.dir)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from the daemon");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    home.wait_online("svc", 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(eventually(T, || daemon.try_wait().unwrap().is_some()));
    assert!(daemon.wait().unwrap().success());
    let log = std::fs::read_to_string(home.dir.join("logs/svc-0-err.log")).unwrap();
    // Two drains in the worker's log: one for `corral kill`, one for the SIGTERM.
    assert_eq!(
        log.matches("drained").count(),
        2,
        "the worker drained before the daemon exited: {log}"
    );
}

#[test]
fn monit_renders_apps_under_tmux_and_its_keys_scale() {
    if !corral_testkit::have("tmux", "apt-get install tmux") {
        return;
    }
    let home = home("monit");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "shown",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]);
    home.wait_online("shown", 1);
    let session = format!("corral-monit-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux is installed (CI installs it)")
    };
    let command = format!("CORRAL_HOME={} {CORRAL} monit", home.dir.display());
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "34",
        &command,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    assert!(
        eventually(T, || {
            let s = screen();
            s.contains("shown")
                && s.contains(" cpu ")
                && s.contains(" memory ")
                && s.contains("output: shown")
        }),
        "{}",
        screen()
    );
    tmux(&["send-keys", "-t", &session, "+"]);
    assert!(
        eventually(T, || screen().contains("shown: 1 → 2 workers")),
        "{}",
        screen()
    );
    home.wait_online("shown", 2);
    tmux(&["send-keys", "-t", &session, "q"]);
    assert!(eventually(T, || !tmux(&["has-session", "-t", &session])
        .status
        .success()));
}

#[test]
fn time_stamps_log_lines_and_logs_json_parses() {
    let home = home("time");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "ts",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--time",
    ]);
    home.wait_online("ts", 1);
    assert!(eventually(T, || home
        .ok(&["logs", "ts", "--out"])
        .contains("listening")));
    let line = home.ok(&["logs", "ts", "--out", "--lines", "1"]);
    // [ts:0 out] 2026-11-21T20:50:01.123Z fixture pid=...
    let stamp = line.split(' ').nth(2).unwrap();
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
    let json = home.ok(&["logs", "ts", "--out", "--lines", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (v["app"].as_str(), v["slot"].as_u64(), v["stream"].as_str()),
        (Some("ts"), Some(0), Some("out"))
    );
    assert!(v["line"].as_str().unwrap().contains("listening"));
}

#[test]
fn reload_and_restart_read_the_config_file_again_and_a_removed_key_is_gone() {
    let home = home("rereads");
    let fixture = fixture();
    let write = |env: &str| {
        config_file(
            &home,
            "ecosystem.config.json",
            &format!(
                r#"{{"apps":[{{"name":"cfg","script":"{fixture}","instances":1,"listen":"127.0.0.1:0","wait_ready":true,"env":{{{env}}}}}]}}"#
            ),
        )
    };
    let path = write(r#""A":"1","B":"2""#).display().to_string();
    home.ok(&["start", &path]);
    let first = pids(&home.wait_online("cfg", 1));
    let env = |name: &str| get(home.addr("cfg"), &format!("/env/{name}")).unwrap().body;
    assert_eq!((env("A"), env("B")), ("1".to_string(), "2".to_string()));

    write(r#""A":"3""#);
    home.ok(&["reload", "cfg"]);
    assert!(eventually(T, || {
        let now = pids(&home.app("cfg"));
        now.len() == 1 && now != first && home.app("cfg").workers[0].status == WorkerStatus::Online
    }));
    assert!(
        eventually(T, || env("A") == "3"),
        "the new worker has the new value"
    );
    assert_eq!(
        env("B"),
        "B is not set",
        "a key removed from the file is gone"
    );

    write(r#""A":"4""#);
    home.ok(&["restart", "cfg"]);
    home.wait_online("cfg", 1);
    assert_eq!(env("A"), "4");
}

#[test]
fn an_env_file_next_to_the_app_is_read_at_start() {
    let home = home("envfile");
    let fixture = fixture();
    let dir = home.dir.with_extension("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "# settings\nexport GREETING=\"hello\"\n").unwrap();
    let out = Command::new(CORRAL)
        .args([
            "start",
            &fixture,
            "--name",
            "e",
            "-i",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--env-file",
            ".env",
        ])
        .current_dir(&dir)
        .env("CORRAL_HOME", &home.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    home.wait_online("e", 1);
    assert_eq!(get(home.addr("e"), "/env/GREETING").unwrap().body, "hello");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn out_file_with_merge_logs_puts_every_slot_in_one_file_that_logs_reads() {
    let home = home("outfile");
    let fixture = fixture();
    let dir = home.dir.with_extension("var");
    let file = dir.join("app.log");
    let file_arg = file.display().to_string();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "m",
        "-i",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--out-file",
        &file_arg,
        "--merge-logs",
    ]);
    home.wait_online("m", 2);
    assert!(eventually(T, || std::fs::read_to_string(&file).is_ok_and(
        |t| t.contains("slot=0 listening") && t.contains("slot=1 listening")
    )));
    let shown = home.ok(&["logs", "m", "--out"]);
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.starts_with("[m out] fixture"))
            .count(),
        2,
        "{shown}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn daemon_command_errors_snapshot() {
    let home = home("snapshots");
    let fixture = fixture();
    let mut out = String::new();
    let mut record = |title: &str, args: &[&str]| {
        let o = home.corral(args);
        let text =
            String::from_utf8_lossy(&o.stderr).replace(&home.dir.display().to_string(), "$HOME");
        out += &format!("$ corral {title}\nexit: {:?}\n{text}\n", o.status.code());
    };
    record("stop api  (no daemon)", &["stop", "api"]);
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "api",
        "-i",
        "1",
        "--listen",
        "127.0.0.1:0",
    ]);
    record("stop apj", &["stop", "apj"]);
    record("describe nothing-like-it", &["describe", "nothing-like-it"]);
    record("scale api lots", &["scale", "api", "lots"]);
    record("scale api 0", &["scale", "api", "0"]);
    record("send api {nope", &["send", "api", "{nope"]);
    record("signal SIGUSR1 api:7", &["signal", "SIGUSR1", "api:7"]);
    record("signal SIGNOPE api", &["signal", "SIGNOPE", "api"]);
    record("start missing.js", &["start", "/nonexistent/missing.js"]);
    record(
        "start --name api (duplicate)",
        &["start", &fixture, "--name", "api"],
    );
    record(
        "start with a bad cron",
        &[
            "start",
            &fixture,
            "--name",
            "c",
            "--cron-restart",
            "sometimes",
        ],
    );
    let bad = config_file(
        &home,
        "ecosystem.config.json",
        "{\"apps\": [ {\"script\": \"a.js\", \"min_uptime\": true} ]}",
    );
    let bad = bad.display().to_string();
    record("start ecosystem.config.json (bad value)", &["start", &bad]);
    let out = out.replace(
        &home.dir.with_extension("configs").display().to_string(),
        "$CONFIGS",
    );
    insta::assert_snapshot!(out);
}

#[test]
fn issue_24_signal_app_slot_reaches_that_slots_worker_from_the_board() {
    let home = home("signal-slot");
    let fixture = fixture();
    home.ok(&[
        "start",
        &fixture,
        "--name",
        "fx",
        "-i",
        "2",
        "--listen",
        "127.0.0.1:0",
    ]);
    let view = home.wait_online("fx", 2);
    let slot1 = view
        .workers
        .iter()
        .find(|w| w.slot == 1)
        .and_then(|w| w.pid)
        .expect("slot 1 runs");
    let said = home.ok(&["signal", "SIGUSR1", "fx:1"]);
    assert_eq!(said.trim(), format!("SIGUSR1 → fx:1 (pid {slot1})"));
    let out = home.corral(&["signal", "SIGUSR1", "fx:5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("fx has no running worker 5"), "{err}");
}

#[test]
fn issue_22_corral_input_writes_to_a_piped_stdin_and_says_how_when_the_app_has_none() {
    let home = crate::home("input");
    // `cat` copies its standard input to its output, which is the app's log.
    home.ok(&[
        "start", "--name", "cat", "--stdin", "pipe", "-i", "2", "--", "cat",
    ]);
    home.wait_online("cat", 2);
    let said = home.ok(&["input", "cat:1", "to one"]);
    assert!(said.contains("written to cat:1"), "{said}");
    let said = home.ok(&["input", "cat", "to all"]);
    assert!(said.contains("written to 2 workers of cat"), "{said}");
    let log = |slot: usize| {
        std::fs::read_to_string(home.dir.join(format!("logs/cat-{slot}-out.log")))
            .unwrap_or_default()
    };
    assert!(corral_testkit::eventually(T, || log(1).contains("to one")
        && log(0).contains("to all")
        && log(1).contains("to all")));
    assert!(!log(0).contains("to one"), "{}", log(0));
    home.ok(&["start", "--name", "quiet", "--", "sleep", "600"]);
    let refused = home.fails(&["input", "quiet", "x"]);
    assert!(
        refused.contains("start it with `--stdin pipe`"),
        "{refused}"
    );
    let refused = home.fails(&["input", "cat:7", "x"]);
    assert!(refused.contains("no worker serves slot 7"), "{refused}");
}

#[test]
fn issue_23_a_node_workers_setsid_child_holding_its_asked_port_is_killed_at_stop() {
    // Before: only corral's --listen sockets were looked for; a port a Node worker asked
    // for with listen(PORT) (the PM2 form) stayed held by the escaped child.
    if !corral_testkit::have("node", "install Node.js")
        || !corral_testkit::have("setsid", "apt-get install util-linux")
    {
        return;
    }
    let home = home("escaped-asked");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/escape_asked.js");
    let port = corral_testkit::free_port().to_string();
    let env = format!("PORT={port}");
    let start = [
        "start", "--name", "escn", "-i", "1", "--env", &env, "--", "node", script,
    ];
    home.ok(&start);
    home.wait_online("escn", 1);
    let escaped = || corral_testkit::processes_running(&["sleep", "313"]);
    assert!(eventually(T, || !escaped().is_empty()));
    home.ok(&["stop", "escn"]);
    assert!(
        eventually(T, || escaped().is_empty()),
        "{}",
        home.daemon_log()
    );
    assert!(
        home.daemon_log().contains("escn: killed pid"),
        "{}",
        home.daemon_log()
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        eventually(T, || std::net::TcpListener::bind(addr).is_ok()),
        "the port is free"
    );
    home.ok(&["delete", "escn"]);
}

#[test]
fn issue_23_a_workers_setsid_child_holding_the_port_is_killed_at_stop_and_the_app_starts_again() {
    // Before: the child left the worker's process group, so the stop's SIGKILL of the
    // group missed it; it kept the listener, and the next start failed with "address
    // already in use".
    let home = home("escaped");
    let listen = format!("127.0.0.1:{}", corral_testkit::free_port());
    let script = format!("setsid sleep 311 & exec {}", fixture());
    let start = [
        "start", "--name", "esc", "-i", "1", "--listen", &listen, "--", "sh", "-c", &script,
    ];
    home.ok(&start);
    home.wait_online("esc", 1);
    let escaped = || corral_testkit::processes_running(&["sleep", "311"]);
    assert!(eventually(T, || !escaped().is_empty()));
    home.ok(&["stop", "esc"]);
    assert!(
        eventually(T, || escaped().is_empty()),
        "{}",
        home.daemon_log()
    );
    assert!(
        home.daemon_log().contains("esc: killed pid")
            && home.daemon_log().contains("left its process group"),
        "{}",
        home.daemon_log()
    );
    home.ok(&["restart", "esc"]);
    home.wait_online("esc", 1);
    home.ok(&["delete", "esc"]);
    assert!(eventually(T, || escaped().is_empty()));
}
