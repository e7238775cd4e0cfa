//! Runs `corral` as a child process and waits on what it prints.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The fixture worker binary, built next to `corral` by `cargo nextest run --workspace`.
pub fn fixture_bin(corral_bin: &str) -> PathBuf {
    let path = Path::new(corral_bin).with_file_name("corral-fixture");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo nextest run --workspace` (or `cargo build -p corral-testkit` first)",
        path.display()
    );
    path
}

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running `corral` whose stdout and stderr lines are collected as they arrive.
/// Dropping it SIGKILLs corral (its workers die with it).
pub struct Corral {
    child: Child,
    lines: Lines,
    status: Option<ExitStatus>,
}

impl Corral {
    /// Starts `bin` with `args` and extra environment variables. corral's own events
    /// come as JSON lines (`CORRAL_REPORT_FORMAT=json`), so that tests wait on data
    /// ([`Corral::wait_report`], [`Corral::ready_pid`]) and not on wording; a test of
    /// the wording passes `CORRAL_REPORT_FORMAT=text` in `env`.
    pub fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Corral {
        Corral::start_with(bin, args, env, |_| {})
    }

    /// [`Corral::start`] with a last say on the command (resource limits, say).
    pub fn start_with(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Corral {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("WORKERS")
            .env("CORRAL_REPORT_FORMAT", "json")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn corral");
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        // A stream the caller redirected elsewhere counts as already ended.
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ] {
            match stream {
                Some(stream) => collect(stream, lines.clone()),
                None => lines
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(EOF_MARK.into()),
            }
        }
        Corral {
            child,
            lines,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything printed so far, stdout and stderr in arrival order.
    pub fn output(&self) -> Vec<String> {
        self.lines
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `find` finds what it looks for in the lines so far, and returns it.
    /// Panics with `what` and the whole output when `timeout` passes first.
    fn wait_lines<T>(
        &self,
        timeout: Duration,
        what: impl FnOnce() -> String,
        mut find: impl FnMut(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.lines;
        let mut lines = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(found) = find(&lines) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {}; output:\n{}",
                    what(),
                    lines.join("\n")
                );
            }
            lines = cvar
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `count` lines contain `needle`; returns the last of them.
    /// Panics with the whole output when `timeout` passes first.
    pub fn wait_for_nth(&self, needle: &str, count: usize, timeout: Duration) -> String {
        self.wait_lines(
            timeout,
            || format!("{count} line(s) containing {needle:?}"),
            |lines| {
                lines
                    .iter()
                    .filter(|l| l.contains(needle))
                    .nth(count - 1)
                    .cloned()
            },
        )
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits for the `nth` (from 1) event of `kind` that `matches`, and returns it. Needs
    /// `--report-format json`; panics with the whole output when `timeout` passes first.
    pub fn wait_report_nth(
        &self,
        kind: &str,
        nth: usize,
        matches: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> serde_json::Value {
        self.wait_lines(
            timeout,
            || format!("event {nth} of kind {kind:?}"),
            |lines| {
                lines
                    .iter()
                    .filter_map(|l| report_of(l))
                    .filter(|r| r["kind"] == kind && matches(r))
                    .nth(nth - 1)
            },
        )
    }

    /// [`Corral::wait_report_nth`] for the first such event.
    pub fn wait_report(
        &self,
        kind: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> serde_json::Value {
        self.wait_report_nth(kind, 1, matches, timeout)
    }

    /// The pid of the `nth` worker to get ready in `slot` (`--report-format json`).
    pub fn ready_pid(&self, slot: u64, nth: usize, timeout: Duration) -> i32 {
        let ready = self.wait_report_nth("ready", nth, |r| r["slot"] == slot, timeout);
        ready["pid"].as_i64().expect("a ready event has a pid") as i32
    }

    /// The address of the first TCP listener, from corral's "listening on" line.
    pub fn addr(&self) -> SocketAddr {
        let line = self.wait_for("listening on ", Duration::from_secs(10));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .expect("address after 'listening on'");
        addr.parse().expect("a socket address")
    }

    /// The pid in a line like "worker 1 ready (pid 1234, ...)".
    pub fn pid_in(line: &str) -> i32 {
        let rest = line.split("pid ").nth(1).expect("a pid in the line");
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().expect("pid digits")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal corral");
    }

    /// Waits for corral to exit, polling until `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // Let the reader threads take the last lines.
                self.wait_for_eof(Duration::from_secs(5));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "corral did not exit within {timeout:?}; output:\n{}",
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_eof(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.lines;
        let mut lines = lock.lock().unwrap_or_else(|e| e.into_inner());
        while lines.iter().filter(|l| l.as_str() == EOF_MARK).count() < 2 {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            lines = cvar.wait_timeout(lines, deadline - now).expect("lines").0;
        }
        lines.retain(|l| l != EOF_MARK);
    }
}

const EOF_MARK: &str = "\u{0}eof";

fn collect(stream: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches('\n')
                        .to_owned();
                    let (lock, cvar) = &*lines;
                    lock.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    cvar.notify_all();
                }
            }
        }
        let (lock, cvar) = &*lines;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(EOF_MARK.into());
        cvar.notify_all();
    });
}

impl Drop for Corral {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Makes `cmd` start with at most `limit` open files (soft and hard), for
/// [`Corral::start_with`].
pub fn limit_open_files(cmd: &mut Command, limit: u64) {
    set_limit_before_exec(cmd, libc::RLIMIT_NOFILE, limit);
}

/// Makes `cmd` start with at most `limit` processes for its user (soft and hard).
pub fn limit_processes(cmd: &mut Command, limit: u64) {
    set_limit_before_exec(cmd, libc::RLIMIT_NPROC, limit);
}

fn set_limit_before_exec(cmd: &mut Command, resource: libc::__rlimit_resource_t, limit: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and changes only the child.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(resource, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How many fds process `pid` has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `/dev/full` opened for writing: every write fails with ENOSPC, like a full disk.
pub fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full")
}

/// The event in one line of corral's output, if it is one.
fn report_of(line: &str) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("kind")?;
    Some(value)
}

/// Pids of the processes whose command line is exactly `argv`.
pub fn processes_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Raises this process's soft limit of open files to `want` (or its hard limit), for
/// tests that open thousands of connections; the limit it now has.
pub fn raise_open_files(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        rl.rlim_cur = want.min(rl.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    rl.rlim_cur
}
