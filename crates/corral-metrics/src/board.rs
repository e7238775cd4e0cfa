//! What the metrics endpoint knows: every app's workers as the engine's reports describe
//! them, rendered in Prometheus' text exposition format, and the readiness verdict.
//!
//! Longer than 500 lines with its tests; the board itself is under 450.

use std::collections::BTreeMap;
use std::fmt::Write;

use corral_core::board::{SlotBoard, SlotRow, WorkerStatus};
use corral_core::group::Report;
use corral_core::process::Pid;

/// The states a worker slot is in, one series each (`corral_worker_state`).
const STATES: [&str; 6] = [
    "starting",
    "ready",
    "restarting",
    "errored",
    "exited",
    "stopped",
];

/// Every app's numbers.
#[derive(Default)]
pub struct Board {
    apps: BTreeMap<String, SlotBoard>,
    /// Ready workers an app needs for `/readyz` (None: all of them).
    min_ready: Option<usize>,
}

/// The series of `corral_worker_state` a slot's status counts in.
fn state(status: WorkerStatus) -> &'static str {
    match status {
        WorkerStatus::Starting => "starting",
        WorkerStatus::Online | WorkerStatus::OnlineOwnPort | WorkerStatus::OnlineSocketClosed => {
            "ready"
        }
        WorkerStatus::Restarting => "restarting",
        WorkerStatus::Errored => "errored",
        WorkerStatus::Exited => "exited",
        WorkerStatus::Stopping | WorkerStatus::Stopped => "stopped",
    }
}

/// What `/proc` says about a worker right now, for the gauges read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub memory: u64,
    pub cpu_seconds: f64,
}

impl Board {
    pub fn new(min_ready: Option<usize>) -> Board {
        Board {
            apps: BTreeMap::new(),
            min_ready,
        }
    }

    /// `app` starts (again) with `instances` workers.
    pub fn started(&mut self, app: &str, instances: usize) {
        self.apps
            .entry(app.to_owned())
            .or_insert_with(|| SlotBoard::new(instances))
            .relaunched(instances);
    }

    /// `app` is gone (deleted).
    pub fn forget(&mut self, app: &str) {
        self.apps.remove(app);
    }

    pub fn apply(&mut self, app: &str, report: &Report) {
        let board = self
            .apps
            .entry(app.to_owned())
            .or_insert_with(|| SlotBoard::new(0));
        board.apply(report, std::time::Instant::now());
    }

    /// The pids whose memory and CPU the next scrape reads.
    pub fn pids(&self) -> Vec<Pid> {
        self.apps.values().flat_map(|a| a.pids()).collect()
    }

    /// Ready when every app has its minimum of ready workers and none is stopping; the
    /// text says why not.
    pub fn readiness(&self) -> Result<String, String> {
        if self.apps.is_empty() {
            return Err("no app runs".into());
        }
        let mut ok = Vec::new();
        for (name, app) in &self.apps {
            let ready = app.ready();
            let needed = self
                .min_ready
                .unwrap_or(app.instances())
                .min(app.instances());
            if app.stopping() {
                return Err(format!("{name} is stopping"));
            }
            if ready < needed.max(1) {
                return Err(format!("{name}: {ready} of {needed} workers ready"));
            }
            ok.push(format!(
                "{name}: {ready} of {} workers ready",
                app.instances()
            ));
        }
        Ok(ok.join("\n"))
    }

    /// Every metric, in the text exposition format (version 0.0.4).
    pub fn render(&self, usage: &BTreeMap<Pid, Usage>, own: Usage, open_fds: usize) -> String {
        let mut out = String::new();
        self.app_families(&mut out);
        self.worker_families(&mut out, usage);
        self.heartbeat_families(&mut out);
        own_families(&mut out, own, open_fds);
        out
    }

    /// Per app: worker counts, readiness and the app's event counters.
    fn app_families(&self, out: &mut String) {
        let apps = || self.apps.iter();
        family(
            out,
            "corral_app_workers",
            "gauge",
            "Workers the app should run.",
            apps().map(|(n, a)| (app_labels(n), a.instances() as f64)),
        );
        family(
            out,
            "corral_app_ready_workers",
            "gauge",
            "Workers of the app that are ready to serve.",
            apps().map(|(n, a)| (app_labels(n), a.ready() as f64)),
        );
        family(
            out,
            "corral_app_stopping",
            "gauge",
            "1 while the app stops.",
            apps().map(|(n, a)| (app_labels(n), f64::from(u8::from(a.stopping())))),
        );
        family(
            out,
            "corral_app_crash_looping_slots",
            "gauge",
            "Slots that gave up after too many unstable exits (errored).",
            apps().map(|(n, a)| {
                (
                    app_labels(n),
                    a.rows()
                        .filter(|(_, s)| s.status == WorkerStatus::Errored)
                        .count() as f64,
                )
            }),
        );
        let reloads = apps().flat_map(|(n, a)| {
            let c = a.counters();
            [("done", c.reloads_done), ("aborted", c.reloads_aborted)]
                .map(|(outcome, v)| (format!("{},outcome=\"{outcome}\"", app_labels(n)), v as f64))
        });
        family(out, "corral_reloads_total", "counter", "Rolling reloads, by outcome (aborted: a replacement failed and the old workers kept serving).", reloads);
        family(
            out,
            "corral_connections_recovered_total",
            "counter",
            "Connections handed to a worker that died before taking them, given to another.",
            apps().map(|(n, a)| (app_labels(n), a.counters().recovered as f64)),
        );
        family(
            out,
            "corral_memory_limit_replacements_total",
            "counter",
            "Workers replaced for going over --max-memory.",
            apps().map(|(n, a)| (app_labels(n), a.counters().memory_replacements as f64)),
        );
        family(
            out,
            "corral_lag_warnings_total",
            "counter",
            "Times a worker's timers fired later than --lag-warning.",
            apps().map(|(n, a)| (app_labels(n), a.counters().lag_warnings as f64)),
        );
        family(
            out,
            "corral_channel_messages_dropped_total",
            "counter",
            "Messages from workers dropped over the channel rate limit.",
            apps().map(|(n, a)| (app_labels(n), a.counters().channel_dropped as f64)),
        );
    }

    /// Per slot: state, restarts, usage, heartbeat numbers.
    fn worker_families(&self, out: &mut String, usage: &BTreeMap<Pid, Usage>) {
        let apps = || self.apps.iter();
        let slots =
            || apps().flat_map(|(n, a)| a.rows().map(move |(s, slot)| (slot_labels(n, s), slot)));
        family(
            out,
            "corral_worker_up",
            "gauge",
            "1 when the slot has a running worker.",
            slots().map(|(l, s)| (l, f64::from(u8::from(s.pid.is_some())))),
        );
        family(
            out,
            "corral_worker_ready",
            "gauge",
            "1 when the slot's worker is ready to serve.",
            slots().map(|(l, s)| (l, f64::from(u8::from(s.is_ready())))),
        );
        let states = slots().flat_map(|(l, s)| {
            STATES.map(|state| {
                (
                    format!("{l},state=\"{state}\""),
                    f64::from(u8::from(self::state(s.status) == state)),
                )
            })
        });
        family(
            out,
            "corral_worker_state",
            "gauge",
            "The slot's state: 1 for the current one.",
            states,
        );
        family(
            out,
            "corral_worker_restarts_total",
            "counter",
            "Times the slot's worker exited unexpectedly.",
            slots().map(|(l, s)| (l, s.unexpected_exits as f64)),
        );
        let used = |pick: fn(&Usage) -> f64| {
            slots().filter_map(move |(l, s)| Some((l, pick(usage.get(&s.pid?)?))))
        };
        family(
            out,
            "corral_worker_resident_memory_bytes",
            "gauge",
            "Resident memory of the worker's whole process tree.",
            used(|u| u.memory as f64),
        );
        family(
            out,
            "corral_worker_cpu_seconds_total",
            "counter",
            "CPU time of the slot's current worker process.",
            used(|u| u.cpu_seconds),
        );
    }

    /// Per slot, from the workers' heartbeats.
    fn heartbeat_families(&self, out: &mut String) {
        let apps = || self.apps.iter();
        let slots =
            || apps().flat_map(|(n, a)| a.rows().map(move |(s, slot)| (slot_labels(n, s), slot)));
        family(
            out,
            "corral_worker_event_loop_lag_seconds",
            "gauge",
            "How late the current worker's timers fired, from its last heartbeat.",
            slots().filter_map(|(l, s)| Some((l, s.current_vitals()?.lag.as_secs_f64()))),
        );
        let heard = |pick: fn(&SlotRow) -> u64| {
            slots()
                .filter(|(_, s)| s.heard())
                .map(move |(l, s)| (l, pick(s) as f64))
        };
        family(
            out,
            "corral_worker_active_connections",
            "gauge",
            "Open connections of the slot's workers (a draining one included), from heartbeats.",
            heard(SlotRow::active),
        );
        let counted = |pick: fn(&SlotRow) -> u64| {
            slots()
                .filter(move |(_, s)| s.heard() || pick(s) > 0)
                .map(move |(l, s)| (l, pick(s) as f64))
        };
        family(
            out,
            "corral_worker_requests_total",
            "counter",
            "Requests the slot's workers served, from heartbeats (workers that count them: corral-worker, Node).",
            counted(SlotRow::requests),
        );
        family(
            out,
            "corral_worker_connections_dispatched_total",
            "counter",
            "Connections corral handed to the slot's workers (round-robin, least-loaded, sticky).",
            counted(SlotRow::dispatched),
        );
    }
}

/// corral's own process: memory, CPU, fds.
fn own_families(out: &mut String, own: Usage, open_fds: usize) {
    family(
        out,
        "corral_process_resident_memory_bytes",
        "gauge",
        "corral's own resident memory.",
        [(String::new(), own.memory as f64)].into_iter(),
    );
    family(
        out,
        "corral_process_cpu_seconds_total",
        "counter",
        "corral's own CPU time.",
        [(String::new(), own.cpu_seconds)].into_iter(),
    );
    family(
        out,
        "corral_process_open_fds",
        "gauge",
        "File descriptors corral holds.",
        [(String::new(), open_fds as f64)].into_iter(),
    );
}

/// One metric family: HELP, TYPE, then each sample (`labels` without braces; empty for
/// none). A family with no samples is left out.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, f64)>,
) {
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn app_labels(app: &str) -> String {
    format!("app=\"{}\"", escape(app))
}

fn slot_labels(app: &str, slot: usize) -> String {
    format!("app=\"{}\",slot=\"{slot}\"", escape(app))
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use corral_core::process::ExitStatus;

    use super::*;

    fn board() -> Board {
        let mut b = Board::new(None);
        b.started("web", 2);
        for (slot, pid) in [(0, 10), (1, 11)] {
            b.apply(
                "web",
                &Report::Spawned {
                    slot,
                    pid,
                    replacing: None,
                },
            );
        }
        b
    }

    fn ready(b: &mut Board, slot: usize, pid: Pid) {
        b.apply(
            "web",
            &Report::Ready {
                slot,
                pid,
                after: Duration::ZERO,
            },
        );
    }

    #[test]
    fn readiness_follows_the_workers() {
        let mut b = board();
        assert_eq!(b.readiness(), Err("web: 0 of 2 workers ready".into()));
        ready(&mut b, 0, 10);
        ready(&mut b, 1, 11);
        assert!(b.readiness().is_ok());
        b.apply(
            "web",
            &Report::Exited {
                slot: 1,
                pid: 11,
                status: ExitStatus::Code(1),
                uptime: Duration::ZERO,
                expected: false,
            },
        );
        assert_eq!(b.readiness(), Err("web: 1 of 2 workers ready".into()));
        b.min_ready = Some(1);
        assert!(b.readiness().is_ok());
        b.apply(
            "web",
            &Report::Stopping {
                workers: 2,
                forced: false,
            },
        );
        assert_eq!(b.readiness(), Err("web is stopping".into()));
    }

    fn vitals(slot: usize, pid: Pid, requests: u64, dispatched: u64) -> Report {
        Report::Vitals {
            slot,
            pid,
            rss: 0,
            lag: Duration::from_millis(250),
            active: 1,
            requests,
            dispatched,
        }
    }

    #[test]
    fn heartbeat_counters_survive_replacements_and_never_go_down() {
        let mut b = board();
        ready(&mut b, 0, 10);
        b.apply("web", &vitals(0, 10, 40, 50));
        b.apply("web", &vitals(0, 10, 0, 0)); // a heartbeat without numbers
        let text = b.render(&BTreeMap::new(), Usage::default(), 0);
        assert!(
            text.contains("corral_worker_requests_total{app=\"web\",slot=\"0\"} 40\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_worker_event_loop_lag_seconds{app=\"web\",slot=\"0\"} 0.25\n"),
            "{text}"
        );
        // Replaced: the old worker drains beside the new one, then exits.
        ready(&mut b, 0, 12);
        b.apply("web", &vitals(0, 12, 5, 6));
        b.apply("web", &vitals(0, 10, 45, 50));
        let text = b.render(&BTreeMap::new(), Usage::default(), 0);
        assert!(
            text.contains("corral_worker_requests_total{app=\"web\",slot=\"0\"} 50\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_worker_active_connections{app=\"web\",slot=\"0\"} 2\n"),
            "{text}"
        );
        b.apply(
            "web",
            &Report::Exited {
                slot: 0,
                pid: 10,
                status: ExitStatus::Code(0),
                uptime: Duration::ZERO,
                expected: true,
            },
        );
        let text = b.render(&BTreeMap::new(), Usage::default(), 0);
        assert!(
            text.contains("corral_worker_requests_total{app=\"web\",slot=\"0\"} 50\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "corral_worker_connections_dispatched_total{app=\"web\",slot=\"0\"} 56\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("corral_worker_active_connections{app=\"web\",slot=\"0\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn renders_families_with_escaped_labels() {
        let mut b = board();
        ready(&mut b, 0, 10);
        b.apply(
            "web",
            &Report::ReloadFinished {
                replaced: 2,
                took: Duration::ZERO,
                tickets: vec![],
            },
        );
        b.apply("we\"b", &Report::Scaled { from: 0, to: 0 });
        let usage = BTreeMap::from([(
            10,
            Usage {
                memory: 4096,
                cpu_seconds: 1.5,
            },
        )]);
        let text = b.render(&usage, Usage::default(), 7);
        assert!(
            text.contains("# TYPE corral_reloads_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_reloads_total{app=\"web\",outcome=\"done\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_worker_ready{app=\"web\",slot=\"0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_worker_state{app=\"web\",slot=\"1\",state=\"starting\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_worker_resident_memory_bytes{app=\"web\",slot=\"0\"} 4096\n"),
            "{text}"
        );
        assert!(text.contains("app=\"we\\\"b\""), "{text}");
        assert!(text.contains("corral_process_open_fds 7\n"), "{text}");
    }
}
