//! Issue 22: the binary invoked as `pm2` speaks PM2's dialect: PM2's flags, verbs,
//! defaults and per-process views, over the same daemon. Each test is one of the
//! behaviours PM2's own e2e scripts check (`test/e2e/cli/*.sh`), written here against
//! apps of our own.
//!
//! Longer than 500 lines: each test is one scenario read on its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use corral_testkit::{eventually, have};
use serde_json::Value;

use crate::CORRAL;

const T: Duration = Duration::from_secs(20);

/// A private PM2_HOME and a `pm2` link to the binary under test; the daemon is killed
/// on drop.
struct Pm2 {
    dir: PathBuf,
    bin: PathBuf,
}

impl Pm2 {
    fn new(name: &str) -> Pm2 {
        let dir = std::env::temp_dir().join(format!("corral-pm2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("app")).unwrap();
        let bin = dir.join("bin/pm2");
        std::os::unix::fs::symlink(CORRAL, &bin).unwrap();
        Pm2 { dir, bin }
    }

    /// With a copy of the binary named `pm2` instead of a link, as a package that
    /// installs it under PM2's name does.
    fn copied(name: &str) -> Pm2 {
        let pm2 = Pm2::new(name);
        std::fs::remove_file(&pm2.bin).unwrap();
        std::fs::copy(CORRAL, &pm2.bin).unwrap();
        pm2
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    fn app_dir(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// Writes `text` as the app directory's file `name`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.app_dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .current_dir(self.app_dir())
            .env("PM2_HOME", self.home())
            .env_remove("WORKERS")
            .envs(env.iter().copied())
            .output()
            .expect("run pm2")
    }

    fn ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run_env(args, env);
        assert!(
            out.status.success(),
            "pm2 {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_env(args, &[])
    }

    /// stderr of a command that must fail with exit code 1 (PM2's error exit).
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run_env(args, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "pm2 {args:?} should fail with 1"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn jlist(&self) -> Vec<Value> {
        let text = self.ok(&["jlist"]);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("jlist: {e}: {text}"))
    }

    /// (pm_id, name, status, restart_time, exec_mode) of every process.
    fn rows(&self) -> Vec<(u64, String, String, u64, String)> {
        self.jlist()
            .iter()
            .map(|p| {
                let env = &p["pm2_env"];
                (
                    p["pm_id"].as_u64().unwrap(),
                    p["name"].as_str().unwrap().to_owned(),
                    env["status"].as_str().unwrap().to_owned(),
                    env["restart_time"].as_u64().unwrap(),
                    env["exec_mode"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn times(&self) -> Vec<u64> {
        self.rows().into_iter().map(|r| r.3).collect()
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = self.run_env(&["kill"], &[]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node() -> bool {
    have("node", "apt-get install nodejs")
}

/// An app that only stays up, printing a line now and then.
const IDLE: &str = "setInterval(() => console.log('tick'), 500);\n";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn issue_22_start_is_one_fork_mode_process_and_ids_names_scripts_and_regexes_are_targets() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("targets");
    pm2.file("echo.js", IDLE);
    let started = pm2.ok(&["start", "echo.js"]);
    assert!(started.contains("Starting"), "{started}");
    assert_eq!(
        pm2.rows(),
        [(0, "echo".into(), "online".into(), 0, "fork_mode".into())]
    );
    // The same script again is refused without -f, as PM2 refuses it.
    let refused = pm2.fails(&["start", "echo.js"]);
    assert!(refused.contains("Script already launched"), "{refused}");
    pm2.ok(&["start", "echo.js", "-f", "-i", "2"]);
    let rows = pm2.rows();
    let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids, [0, 1, 2]);
    assert!(rows.iter().all(|r| r.1 == "echo"), "{rows:?}");
    assert_eq!(rows[1].4, "cluster_mode");
    // By id: the app that has process 0; by name: every app called echo.
    pm2.ok(&["restart", "0"]);
    assert_eq!(pm2.times(), [1, 0, 0]);
    pm2.ok(&["restart", "echo"]);
    assert_eq!(pm2.times(), [2, 1, 1]);
    pm2.ok(&["reload", "all"]);
    assert_eq!(pm2.times(), [3, 2, 2]);
    pm2.ok(&["reset", "echo"]);
    assert_eq!(pm2.times(), [0, 0, 0]);
    // By script, and several targets in one command.
    pm2.ok(&["stop", "echo.js"]);
    assert!(
        pm2.rows().iter().all(|r| r.2 == "stopped"),
        "{:?}",
        pm2.rows()
    );
    // Smart start: a name that runs already is restarted (a stopped app counts none).
    pm2.ok(&["start", "echo"]);
    assert!(pm2.rows().iter().all(|r| r.2 == "online" && r.3 == 0));
    pm2.file("other.js", IDLE);
    pm2.ok(&["start", "other.js", "--name", "web-1"]);
    pm2.ok(&["stop", "/web-[0-9]/"]);
    let other = pm2.rows().into_iter().find(|r| r.1 == "web-1").unwrap();
    assert_eq!(other.2, "stopped");
    pm2.ok(&["delete", "echo", "web-1"]);
    assert!(pm2.jlist().is_empty());
    let missing = pm2.fails(&["restart", "nothing"]);
    assert!(missing.contains("nothing not found"), "{missing}");
    pm2.fails(&["stop", "all"]);
    // With no process left, numbering starts again at 0.
    pm2.ok(&["start", "other.js"]);
    assert_eq!(pm2.rows()[0].0, 0);
}

#[test]
fn issue_22_an_app_inherits_the_callers_environment_and_update_env_refreshes_it() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("env");
    pm2.file(
        "env.js",
        "console.log('TEST_VARIABLE=' + process.env.TEST_VARIABLE);\nsetInterval(() => {}, 1000);\n",
    );
    let out = pm2.app_dir().join("out.log");
    let said = |value: &str| {
        let line = format!("TEST_VARIABLE={value}");
        eventually(T, || read(&out).contains(&line))
    };
    pm2.ok_env(
        &[
            "start",
            "env.js",
            "-o",
            "out.log",
            "--merge-logs",
            "--name",
            "env",
        ],
        &[("TEST_VARIABLE", "first")],
    );
    assert!(said("first"), "{}", read(&out));
    // A restart keeps the environment the app started with...
    pm2.ok_env(&["restart", "env"], &[("TEST_VARIABLE", "second")]);
    std::fs::write(&out, "").unwrap();
    pm2.ok_env(&["restart", "env"], &[("TEST_VARIABLE", "second")]);
    assert!(said("first"), "{}", read(&out));
    // ...unless asked to take the caller's.
    pm2.ok_env(
        &["restart", "env", "--update-env"],
        &[("TEST_VARIABLE", "third")],
    );
    assert!(said("third"), "{}", read(&out));
    pm2.ok_env(&["reload", "env", "-a"], &[("TEST_VARIABLE", "fourth")]);
    assert!(said("fourth"), "{}", read(&out));
    assert_eq!(pm2.times(), [4]);
}

#[test]
fn issue_22_config_files_on_disk_and_on_stdin_with_only_env_objects_and_command_lines() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("files");
    pm2.file(
        "env.js",
        "console.log('VALUE=' + process.env.VALUE);\nsetInterval(() => {}, 1000);\n",
    );
    let config = r#"{"apps": [
        {"name": "one", "script": "env.js", "out_file": "one.log", "merge_logs": true,
         "env": {"VALUE": {"nested": true}}},
        {"name": "many", "script": "env.js", "instances": 2},
        {"name": "line", "cmd": "node -e 'console.log(1 + 1); setInterval(() => {}, 1000)'",
         "log": "line.log", "merge_logs": true}
    ]}"#;
    pm2.file("apps.json", config);
    pm2.ok(&["start", "apps.json", "--only", "one"]);
    assert_eq!(pm2.rows().len(), 1);
    let one = pm2.app_dir().join("one.log");
    assert!(
        eventually(T, || read(&one).contains(r#"VALUE={"nested":true}"#)),
        "an env value that is a table reaches the app as its JSON: {}",
        read(&one)
    );
    pm2.ok(&["delete", "all"]);
    let mut piped = Command::new(&pm2.bin)
        .args(["start", "-"])
        .current_dir(pm2.app_dir())
        .env("PM2_HOME", pm2.home())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), config.as_bytes()).unwrap();
    assert!(piped.wait().unwrap().success());
    let rows = pm2.rows();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|r| r.2 == "online"), "{rows:?}");
    let line = pm2.app_dir().join("line.log");
    assert!(
        eventually(T, || read(&line).contains('2')),
        "{}",
        read(&line)
    );
    pm2.ok(&["startOrRestart", "apps.json"]);
    assert_eq!(pm2.times(), [1, 1, 1, 1]);
    pm2.ok(&["stop", "apps.json"]);
    assert!(pm2.rows().iter().all(|r| r.2 == "stopped"));
}

#[test]
fn issue_22_save_keeps_a_backup_and_resurrect_falls_back_on_it_when_the_dump_breaks() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("dump");
    pm2.file("echo.js", IDLE);
    pm2.ok(&["start", "echo.js", "-i", "2"]);
    let dump = pm2.home().join("dump.pm2");
    let backup = pm2.home().join("dump.pm2.bak");
    pm2.ok(&["save"]);
    assert!(dump.is_file() && !backup.exists());
    pm2.ok(&["dump"]);
    assert!(backup.is_file(), "the second save keeps the first as .bak");
    pm2.ok(&["delete", "all"]);
    std::fs::write(&dump, "[{").unwrap();
    let said = pm2.ok(&["resurrect"]);
    assert!(said.contains("dump.pm2.bak"), "{said}");
    assert!(!dump.exists(), "the broken dump is moved aside");
    assert!(pm2.home().join("dump.pm2.broken").is_file(), "and kept");
    assert_eq!(pm2.rows().len(), 2);
    // The daemon's pid, where PM2 users' scripts read it.
    let pid: i32 = read(&pm2.home().join("pm2.pid")).trim().parse().unwrap();
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
}

#[test]
fn issue_22_pid_files_prettylist_sort_and_watch_as_pm2_shows_them() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("views");
    pm2.file("http.js", IDLE);
    pm2.file("other.js", IDLE);
    pm2.ok(&["start", "http.js", "-p", "http.pid", "--watch"]);
    let pid_file = pm2.app_dir().join("http-0.pid");
    let pid = pm2.jlist()[0]["pid"].as_i64().unwrap();
    assert_eq!(read(&pid_file).trim(), pid.to_string());
    let pretty = pm2.ok(&["prettylist"]);
    for shown in [
        "restart_time: 0",
        "exec_mode: 'fork_mode'",
        "watch: true",
        "status: 'online'",
    ] {
        assert!(pretty.contains(shown), "{shown} in {pretty}");
    }
    // PM2's stop turns watching off, and a restart --watch flips it.
    pm2.ok(&["stop", "http"]);
    assert!(
        eventually(T, || !pid_file.exists()),
        "the pid file goes with the worker"
    );
    assert!(pm2.ok(&["prettylist"]).contains("watch: false"));
    pm2.ok(&["restart", "http"]);
    assert!(pm2.ok(&["prettylist"]).contains("watch: false"));
    pm2.ok(&["restart", "http", "--watch"]);
    assert!(pm2.ok(&["prettylist"]).contains("watch: true"));
    pm2.ok(&["start", "other.js"]);
    let at = |list: &str, name: &str| list.find(name).unwrap();
    let asc = pm2.ok(&["list", "--sort", "name"]);
    assert!(at(&asc, "http") < at(&asc, "other"), "{asc}");
    let desc = pm2.ok(&["ls", "--sort=name:desc"]);
    assert!(at(&desc, "http") > at(&desc, "other"), "{desc}");
    let bad = pm2.run_env(&["list", "--sort", "colour"], &[]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("PM2 sorts by name"));
    let pids = pm2.ok(&["pid", "other"]);
    assert_eq!(pids.lines().count(), 1, "{pids}");
}

#[test]
fn issue_22_reload_with_pm2_kill_use_message_sends_shutdown_and_no_corral_message() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("message");
    pm2.file(
        "listen.js",
        "process.on('message', (m) => console.log('got', JSON.stringify(m)));\nsetInterval(() => {}, 1000);\n",
    );
    pm2.ok_env(
        &["start", "listen.js", "-o", "out.log", "--merge-logs"],
        &[("PM2_KILL_USE_MESSAGE", "true")],
    );
    pm2.ok(&["reload", "listen"]);
    let out = pm2.app_dir().join("out.log");
    assert!(
        eventually(T, || read(&out).contains(r#"got "shutdown""#)),
        "{}",
        read(&out)
    );
    assert!(!read(&out).contains("CORRAL_"), "{}", read(&out));
}

/// Reads lines from standard input and says which process got each.
const READS_STDIN: &str =
    "const rl = require('readline').createInterface({ input: process.stdin });
rl.on('line', (l) => console.log(`${process.env.NODE_APP_INSTANCE} got ${l}`));
rl.on('close', () => console.log('stdin closed'));
";

#[test]
fn issue_22_pm2_send_writes_to_one_processs_stdin_across_an_update_and_a_killed_daemon() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("send");
    pm2.file("stdin.js", READS_STDIN);
    pm2.ok(&[
        "start",
        "stdin.js",
        "-i",
        "2",
        "-o",
        "out.log",
        "--merge-logs",
    ]);
    let out = pm2.app_dir().join("out.log");
    let got = |line: &str| {
        assert!(
            eventually(T, || read(&out).contains(line)),
            "no `{line}` in {}",
            read(&out)
        )
    };
    pm2.ok(&["send", "1", "first"]);
    got("1 got first");
    assert!(!read(&out).contains("0 got first"), "{}", read(&out));
    let refused = pm2.fails(&["send", "stdin", "x"]);
    assert!(refused.contains("runs 2 processes"), "{refused}");
    // The pipes' write ends cross an update and wait in the holder while no daemon runs.
    pm2.ok(&["update"]);
    pm2.ok(&["send", "0", "after-update"]);
    got("0 got after-update");
    let pid: i32 = read(&pm2.home().join("pm2.pid")).trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(T, || {
        let now = read(&pm2.home().join("pm2.pid"));
        now.trim().parse::<i32>().is_ok_and(|p| p != pid)
            && pm2.run_env(&["ping"], &[]).status.success()
    }));
    pm2.ok(&["send", "1", "after-death"]);
    got("1 got after-death");
    assert!(!read(&out).contains("stdin closed"), "{}", read(&out));
    assert_eq!(pm2.times(), vec![0, 0], "no process restarted");
    // One process of several: corral acts on the app, and says so.
    let stop = pm2.run_env(&["stop", "1"], &[]);
    let said = String::from_utf8_lossy(&stop.stderr);
    assert!(
        said.contains("id 1 is one of 2 processes of stdin"),
        "{said}"
    );
}

#[test]
fn issue_22_corral_pm2_is_the_same_dialect_and_refused_flags_say_why() {
    if !node() {
        return;
    }
    let pm2 = Pm2::new("subcommand");
    pm2.file("echo.js", IDLE);
    let out = Command::new(CORRAL)
        .args([
            "pm2",
            "start",
            "echo.js",
            "--restart-delay",
            "5000",
            "--stop-exit-codes",
            "3",
        ])
        .current_dir(pm2.app_dir())
        .env("PM2_HOME", pm2.home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = &pm2.jlist()[0]["pm2_env"];
    assert_eq!(env["restart_delay"], 5000);
    assert_eq!(env["stop_exit_codes"], serde_json::json!([3]));
    let refused = pm2.run_env(&["start", "echo.js", "--uid", "1000"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("corral can't honour --uid"));
    let none = pm2.run_env(&[], &[]);
    assert!(!none.status.success(), "pm2 alone is an error, as PM2's");
}

#[test]
fn issue_22_a_copy_of_corral_installed_as_pm2_starts_its_daemon() {
    // Before: the daemon it started was a `pm2 daemon` in PM2's dialect ("not a command
    // corral serves"), and every command waited 10 s for a daemon that never came.
    let pm2 = Pm2::copied("copied");
    let said = pm2.ok(&["ping"]);
    assert!(said.contains("pong"), "{said}");
}
