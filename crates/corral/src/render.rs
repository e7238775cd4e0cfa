//! Turns engine reports and worker output into the lines a person reads.
//!
//! Longer than 500 lines because it is every sentence corral says about its workers, one match arm each, plus a snapshot test of all of them.

use std::io::Write;
use std::time::Duration;

use corral_core::group::{AbortReason, ChannelProblem, Report, RolloutKind, ScaleRefusal};
use corral_core::output::{LogLine, Stream};

/// A duration the way people say it: 850ms, 1.2s, 2m5s.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = ms / 100;
        if tenths % 10 == 0 {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let s = d.as_secs();
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// A byte count in binary units: 1.5 MiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One line of corral's own, as written to the terminal: `[corral] text\n`.
pub fn note(text: &str) -> Vec<u8> {
    format!("[corral] {text}\n").into_bytes()
}

/// The text of a report, without the `[corral]` prefix.
pub fn report(r: &Report) -> String {
    match r {
        Report::Spawned { slot, pid, replacing: None } => format!("worker {slot} started (pid {pid})"),
        Report::Spawned { slot, pid, replacing: Some(old) } => {
            format!("worker {slot} replacement started (pid {pid}, replacing pid {old})")
        }
        Report::SpawnFailed { slot, error, giving_up: false } => {
            format!("worker {slot} could not start: {error}")
        }
        Report::SpawnFailed { slot, error, giving_up: true } => format!(
            "worker {slot} could not start: {error}; not retrying until the command is fixed"
        ),
        Report::Ready { slot, pid, after } => {
            format!("worker {slot} ready (pid {pid}, after {})", duration(*after))
        }
        Report::Status { slot, pid, text } => {
            format!("worker {slot} (pid {pid}) status: {}", clip(text))
        }
        Report::Exited { slot, pid, status, uptime, expected: true } => {
            format!("worker {slot} (pid {pid}) stopped: {status} after {}", duration(*uptime))
        }
        Report::Exited { slot, pid, status, uptime, expected: false } => {
            format!("worker {slot} (pid {pid}) exited unexpectedly: {status} after {}", duration(*uptime))
        }
        Report::RestartScheduled { slot, delay, unstable } => {
            let tail = if *unstable > 0 {
                format!(" ({unstable} unstable exits in a row)")
            } else {
                String::new()
            };
            if delay.is_zero() {
                format!("worker {slot} restarting now (first crash after a stable run){tail}")
            } else {
                format!("worker {slot} restarting in {}{tail}", duration(*delay))
            }
        }
        Report::GaveUp { slot, unstable, min_uptime } => format!(
            "worker {slot} gave up: it exited {unstable} times in a row before it was ready or within {} of starting; \
             fix the app, then reload (SIGHUP) to try again",
            duration(*min_uptime)
        ),
        Report::ReadyTimeout { slot, pid, timeout } => format!(
            "worker {slot} (pid {pid}) did not send READY=1 within {}; stopping it (raise --ready-timeout if it needs longer)",
            duration(*timeout)
        ),
        Report::Paused { paused, grace } => format!(
            "corral could not run for {} (the machine or corral was paused or starved); workers get {} to be heard before any counts as hung",
            duration(*paused),
            duration(*grace)
        ),
        Report::WatchdogTimeout { slot, pid, silent_for } => format!(
            "worker {slot} (pid {pid}) is hung: no heartbeat or WATCHDOG=1 for {}; killing its process group",
            duration(*silent_for)
        ),
        Report::KillTimeout { slot, pid, signal, timeout } => format!(
            "worker {slot} (pid {pid}) still running {} after {}; sent SIGKILL to its process group",
            duration(*timeout),
            signal.as_str()
        ),
        Report::ReloadStarted {
            workers,
            stop_first: false,
        } => format!("reload: replacing {workers} workers one at a time"),
        Report::ReloadStarted {
            workers,
            stop_first: true,
        } => format!(
            "reload: restarting {workers} workers one at a time, each stopped before its replacement starts: \
             they bind their own ports (fork mode), so each is down while it restarts; \
             cluster mode (exec_mode: 'cluster', or --listen) reloads with zero downtime"
        ),
        Report::ReloadQueued => "reload already running; another one will follow it".into(),
        Report::ReloadFinished { replaced, took, .. } => {
            format!("reload done: {replaced} workers replaced in {}", duration(*took))
        }
        Report::ReloadAborted {
            slot,
            reason,
            rollout,
            ..
        } => {
            let why = match reason {
                AbortReason::SpawnFailed(e) => format!("could not start: {e}"),
                AbortReason::ExitedBeforeReady(status) => {
                    format!("exited before it was ready ({status})")
                }
                AbortReason::NotReadyInTime(t) => {
                    format!("did not get ready within {}", duration(*t))
                }
                AbortReason::ExitedWhileSettling {
                    status,
                    after,
                    settle,
                } => format!(
                    "exited {} after it said it was ready ({status}), within the {} settle window",
                    duration(*after),
                    duration(*settle)
                ),
            };
            let what = match rollout {
                RolloutKind::Reload => "reload",
                RolloutKind::Replacement => "replacement",
            };
            format!("{what} aborted: the replacement for worker {slot} {why}; the old workers keep serving")
        }
        Report::Lag { slot, pid, lag } => format!(
            "worker {slot} (pid {pid}) is lagging: its timers fire {} late (blocking work on the event loop?)",
            duration(*lag)
        ),
        Report::MemoryLimit {
            slot,
            pid,
            rss,
            limit,
        } => format!(
            "worker {slot} (pid {pid}) uses {} (limit {}); replacing it gracefully",
            size(*rss),
            size(*limit)
        ),
        Report::NotRestarted {
            slot,
            stop_code: None,
        } => format!("worker {slot} is not restarted (autorestart is off)"),
        Report::NotRestarted {
            slot,
            stop_code: Some(code),
        } => format!("worker {slot} is not restarted: exit code {code} is one of its stop exit codes"),
        Report::ListenerUnused {
            slot,
            pid,
            ours,
            own,
            holds_ours,
        } => {
            let ours = ours.join(", ");
            let where_it_listens = if own.is_empty() {
                String::new()
            } else {
                format!("; it listens on {} of its own", own.join(", "))
            };
            if *holds_ours {
                format!(
                    "worker {slot} (pid {pid}) is ready{where_it_listens}. If that is where it serves, \
                     it ignores corral's {ours}: bind the socket corral passes (fd 3, LISTEN_FDS) or the same address"
                )
            } else {
                format!(
                    "worker {slot} (pid {pid}) is ready but has closed the socket corral gave it ({ours}){where_it_listens}: \
                     it serves none of corral's connections; bind fd 3 (LISTEN_FDS) or {ours}"
                )
            }
        }
        Report::AcceptStarved { error, retry } => format!(
            "cannot accept waiting connections: {error}; retrying every {} until fds free up (raise `ulimit -n`)",
            duration(*retry)
        ),
        Report::Recovered {
            slot,
            pid,
            connections,
        } => format!(
            "worker {slot} (pid {pid}) died before taking {connections} handed-over connections; they go to other workers"
        ),
        Report::QueueTaken { slot, connections } => format!(
            "{connections} connections waited on worker {slot}'s socket when its last process ended; they go to other workers"
        ),
        Report::SteerFailed { error } => format!(
            "cannot keep new connections off slots without a worker: {error}; the kernel's hash spreads them over every slot, and corral hands what waits on an empty slot to the others"
        ),
        Report::Message { slot, pid, data } => {
            format!("message from worker {slot} (pid {pid}): {}", clip(&data.to_string()))
        }
        Report::ChannelFlooded {
            slot,
            pid,
            dropped,
            per_second,
        } => format!(
            "worker {slot} (pid {pid}) floods its channel: dropped {dropped} messages over the limit of {per_second} a second"
        ),
        Report::Vitals { slot, pid, .. } => format!("worker {slot} (pid {pid}) heartbeat"),
        Report::ChannelProblem { slot, pid, problem } => {
            format!("worker {slot} (pid {pid}) {}", channel_problem(problem))
        }
        Report::Scaled { from, to } => format!("scaled from {from} to {to} workers"),
        Report::PortBound { slot, pid, addr } => format!(
            "worker {slot} (pid {pid}) listens on a port of no --listen: corral listens on {addr} for the app and hands it to every worker (add `--listen {port}` to bind it up front)",
            port = addr.rsplit(':').next().unwrap_or(addr)
        ),
        Report::PortServedOn {
            slot,
            pid,
            asked,
            on,
        } => format!(
            "worker {slot} (pid {pid}): the app asked for {asked}; serving it on corral's {on}"
        ),
        Report::PortRefused {
            slot,
            pid,
            addr,
            error,
        } => format!("worker {slot} (pid {pid}) asked for {addr}: {error}"),
        Report::ScaleRefused { reason } => match reason {
            ScaleRefusal::LastWorker => {
                "cannot scale down: already at 1 worker; stop the app to stop it".to_owned()
            }
            ScaleRefusal::OverLimit { limit } => {
                format!("cannot scale up: over the limit of {limit} workers")
            }
        },
        Report::RespecFailed { error } => format!(
            "the new settings cannot start workers ({error}); the running command stays"
        ),
        Report::Stopping { workers, forced: false } => format!(
            "stopping {workers} workers gracefully (send the signal again to kill them now)"
        ),
        Report::Stopping { workers, forced: true } => format!("killing {workers} workers now"),
    }
}

/// What corral writes in a worker's name is at most this long.
const CLIP: usize = 1024;

/// `text`, cut to [`CLIP`] bytes (on a character boundary) with the full length said.
fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= CLIP {
        return text.into();
    }
    let mut end = CLIP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len()).into()
}

/// Says that a worker's lines are counted from now on (its rate limit).
pub fn throttled(slot: usize) -> String {
    format!("worker {slot}: more than 10 lines a second about it; counting them instead of logging")
}

/// Says that `count` lines about the worker in `slot` were not written (its rate limit).
pub fn suppressed(slot: usize, count: u64) -> String {
    format!("worker {slot}: {count} lines about it were not logged (over 10 a second)")
}

/// Writes one worker line as `[app:slot] text` (with `--time`, `[app:slot] <time> text`;
/// with `--log-format json`, one JSON object), in a single write so lines from different
/// workers never mix.
pub fn log_line(
    app: &str,
    line: &LogLine,
    buf: &mut Vec<u8>,
    format: &crate::line_format::LineFormat,
) -> std::io::Result<()> {
    buf.clear();
    if format.json.is_none() {
        buf.extend_from_slice(format!("[{app}:{}] ", line.slot).as_bytes());
    }
    format.write(buf, app, line);
    buf.push(b'\n');
    match line.stream {
        Stream::Stdout => std::io::stdout().lock().write_all(buf),
        Stream::Stderr => std::io::stderr().lock().write_all(buf),
    }
}

/// What went wrong on a worker's channel, after "worker N (pid P)".
fn channel_problem(problem: &ChannelProblem) -> String {
    match problem {
        ChannelProblem::BadLine { error } => format!("sent a bad line on its channel: {error}"),
        ChannelProblem::HelloUnanswered { error } => format!("could not be answered: {error}"),
        ChannelProblem::BroadcastRefused { workers } => format!(
            "broadcast not delivered to {workers} workers that are not reading their channel"
        ),
        ChannelProblem::SupervisorOnly => {
            "sent a message only the supervisor may send; ignored".to_owned()
        }
        ChannelProblem::PortNotHanded { error } => {
            format!("could not be handed the port it asked for: {error}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(1000)), "1s");
        assert_eq!(duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(duration(Duration::from_secs(125)), "2m5s");
    }

    /// One of every report, as a user reads it: a change of wording shows in review.
    #[test]
    fn every_report_reads_as_a_sentence() {
        use corral_core::process::ExitStatus;
        use nix::sys::signal::Signal;
        let ms = Duration::from_millis;
        let reports = vec![
            Report::Spawned {
                slot: 0,
                pid: 101,
                replacing: None,
            },
            Report::Spawned {
                slot: 1,
                pid: 102,
                replacing: Some(99),
            },
            Report::SpawnFailed {
                slot: 0,
                error: "no such file".into(),
                giving_up: true,
            },
            Report::SpawnFailed {
                slot: 0,
                error: "out of pids".into(),
                giving_up: false,
            },
            Report::Ready {
                slot: 0,
                pid: 101,
                after: ms(340),
            },
            Report::Status {
                slot: 0,
                pid: 101,
                text: "warming caches".into(),
            },
            Report::Exited {
                slot: 0,
                pid: 101,
                status: ExitStatus::Code(1),
                uptime: ms(44),
                expected: false,
            },
            Report::Exited {
                slot: 0,
                pid: 101,
                status: ExitStatus::Signal(9),
                uptime: ms(3000),
                expected: true,
            },
            Report::RestartScheduled {
                slot: 0,
                delay: Duration::ZERO,
                unstable: 0,
            },
            Report::RestartScheduled {
                slot: 0,
                delay: ms(200),
                unstable: 2,
            },
            Report::GaveUp {
                slot: 0,
                unstable: 10,
                min_uptime: ms(1000),
            },
            Report::ReadyTimeout {
                slot: 0,
                pid: 101,
                timeout: ms(30_000),
            },
            Report::Paused {
                paused: ms(4200),
                grace: ms(3000),
            },
            Report::WatchdogTimeout {
                slot: 0,
                pid: 101,
                silent_for: ms(10_500),
            },
            Report::KillTimeout {
                slot: 0,
                pid: 101,
                signal: Signal::SIGTERM,
                timeout: ms(10_000),
            },
            Report::ReloadStarted {
                workers: 2,
                stop_first: false,
            },
            Report::ReloadStarted {
                workers: 2,
                stop_first: true,
            },
            Report::ReloadQueued,
            Report::ReloadFinished {
                replaced: 2,
                took: ms(2300),
                tickets: vec![],
            },
            Report::ReloadAborted {
                slot: 1,
                reason: AbortReason::ExitedBeforeReady(ExitStatus::Code(3)),
                rollout: RolloutKind::Reload,
                tickets: vec![],
            },
            Report::ReloadAborted {
                slot: 0,
                reason: AbortReason::NotReadyInTime(ms(5000)),
                rollout: RolloutKind::Replacement,
                tickets: vec![],
            },
            Report::Lag {
                slot: 0,
                pid: 101,
                lag: ms(1500),
            },
            Report::MemoryLimit {
                slot: 0,
                pid: 101,
                rss: 600 << 20,
                limit: 512 << 20,
            },
            Report::NotRestarted {
                slot: 0,
                stop_code: Some(0),
            },
            Report::NotRestarted {
                slot: 0,
                stop_code: None,
            },
            Report::ListenerUnused {
                slot: 0,
                pid: 101,
                ours: vec!["127.0.0.1:3000".into()],
                own: vec!["0.0.0.0:4000".into()],
                holds_ours: true,
            },
            Report::AcceptStarved {
                error: "Too many open files".into(),
                retry: ms(100),
            },
            Report::Recovered {
                slot: 0,
                pid: 101,
                connections: 3,
            },
            Report::QueueTaken {
                slot: 1,
                connections: 4,
            },
            Report::SteerFailed {
                error: "Operation not permitted (os error 1)".into(),
            },
            Report::Message {
                slot: 0,
                pid: 101,
                data: serde_json::json!({"hello": "world"}),
            },
            Report::ChannelFlooded {
                slot: 0,
                pid: 101,
                dropped: 500,
                per_second: 1000,
            },
            Report::ChannelProblem {
                slot: 0,
                pid: 101,
                problem: ChannelProblem::SupervisorOnly,
            },
            Report::ChannelProblem {
                slot: 0,
                pid: 101,
                problem: ChannelProblem::BroadcastRefused { workers: 2 },
            },
            Report::Scaled { from: 2, to: 3 },
            Report::PortBound {
                slot: 0,
                pid: 101,
                addr: "[::]:3000".into(),
            },
            Report::PortServedOn {
                slot: 0,
                pid: 101,
                asked: "0.0.0.0:3000".into(),
                on: "127.0.0.1:3000".into(),
            },
            Report::PortRefused {
                slot: 0,
                pid: 101,
                addr: "0.0.0.0:80".into(),
                error: "permission denied".into(),
            },
            Report::ScaleRefused {
                reason: ScaleRefusal::LastWorker,
            },
            Report::ScaleRefused {
                reason: ScaleRefusal::OverLimit { limit: 4096 },
            },
            Report::RespecFailed {
                error: "no such program: nodee".into(),
            },
            Report::Stopping {
                workers: 2,
                forced: false,
            },
            Report::Stopping {
                workers: 2,
                forced: true,
            },
        ];
        let text: Vec<String> = reports.iter().map(report).collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
