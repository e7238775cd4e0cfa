//! Bounded HTTP load from a few client threads, counting what succeeded and what failed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{get_after, KeepAlive};

/// How each client of a [`Load`] sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    /// One kept-alive connection per client, reopened after a failure.
    KeepAlive,
    /// A new connection per request, with `Connection: close`.
    Close,
    /// Like `Close`, from a client that waits 50 ms between connecting and sending, so
    /// a worker that accepts while it stops holds connections with nothing read yet.
    SlowClose,
}

impl From<bool> for Requests {
    /// `true` is keep-alive, `false` one connection per request.
    fn from(keep_alive: bool) -> Requests {
        if keep_alive {
            Requests::KeepAlive
        } else {
            Requests::Close
        }
    }
}

const SLOW_CLIENT_PAUSE: Duration = Duration::from_millis(50);

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: usize,
    /// The first few failures, for the assertion message.
    pub errors: Vec<String>,
    /// Successful answers per worker pid.
    pub by_pid: BTreeMap<i32, usize>,
    /// The longest a successful request took.
    pub slowest: Duration,
}

impl LoadReport {
    /// Panics unless every worker of `pids` served its even share of the answers, within
    /// `tolerance` (0.10 = ±10%).
    pub fn assert_even_shares(&self, pids: &[i32], tolerance: f64) {
        let share = self.ok as f64 / pids.len() as f64;
        for pid in pids {
            let got = self.by_pid.get(pid).copied().unwrap_or(0) as f64;
            assert!(
                (got - share).abs() <= share * tolerance,
                "worker {pid} served {got} of {} (even share {share:.0}): {:?}",
                self.ok,
                self.by_pid
            );
        }
    }
}

/// Client threads that send requests until [`Load::finish`], a time limit or a count limit,
/// whichever comes first.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    report: Arc<Mutex<LoadReport>>,
}

impl Load {
    pub fn start(
        addr: SocketAddr,
        clients: usize,
        requests: impl Into<Requests>,
        limit: Duration,
    ) -> Load {
        let requests = requests.into();
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let deadline = Instant::now() + limit;
        let threads = (0..clients)
            .map(|_| {
                let (stop, report) = (stop.clone(), report.clone());
                std::thread::spawn(move || client(addr, requests, deadline, &stop, &report))
            })
            .collect();
        Load {
            stop,
            threads,
            report,
        }
    }

    /// Successful requests so far.
    pub fn ok_so_far(&self) -> usize {
        self.report.lock().expect("report").ok
    }

    /// Waits until at least `n` requests have succeeded (or `timeout`).
    pub fn wait_ok(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.ok_so_far() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let report = self.report.lock().expect("report").clone();
        report
    }
}

const MAX_REQUESTS_PER_CLIENT: usize = 1_000_000;

fn client(
    addr: SocketAddr,
    requests: Requests,
    deadline: Instant,
    stop: &AtomicBool,
    report: &Mutex<LoadReport>,
) {
    let mut ka = KeepAlive::new(addr);
    let started = Instant::now();
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return;
        }
        let asked = Instant::now();
        let result = match requests {
            Requests::KeepAlive => ka.get("/"),
            Requests::Close => get_after(addr, "/", Duration::ZERO),
            Requests::SlowClose => get_after(addr, "/", SLOW_CLIENT_PAUSE),
        };
        let mut r = report.lock().expect("report");
        match result {
            Ok(resp) if resp.status == 200 => {
                r.ok += 1;
                r.slowest = r.slowest.max(asked.elapsed());
                if let Some(pid) = resp.pid() {
                    *r.by_pid.entry(pid).or_default() += 1;
                }
            }
            Ok(resp) => {
                r.failed += 1;
                if r.errors.len() < 10 {
                    r.errors
                        .push(format!("status {}: {}", resp.status, resp.body));
                }
            }
            Err(e) => {
                r.failed += 1;
                if r.errors.len() < 10 {
                    let at = started.elapsed().as_millis();
                    r.errors.push(format!("at {at} ms ({}): {e}", utc_now()));
                }
                drop(r);
                ka = KeepAlive::new(addr);
            }
        }
    }
}

/// The time of day in UTC, `hh:mm:ss.mmm`, to find a failure in timestamped logs.
fn utc_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (s, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    format!("{:02}:{:02}:{:02}.{ms:03}", s / 3600, s / 60 % 60, s % 60)
}

/// `corral run` of `command` with 2 workers on a loopback port, `reloads` rolling
/// reloads (SIGHUP) under load from 4 clients, each waited for and followed by more
/// served requests; returns corral (still running) and what the load saw.
pub fn reloads_under_load(
    corral_bin: &str,
    command: &[&str],
    flags: &[&str],
    requests: impl Into<Requests>,
    reloads: usize,
) -> (crate::Corral, LoadReport) {
    const T: Duration = Duration::from_secs(60);
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--name", "app", "-i", "2"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    let c = crate::Corral::start(corral_bin, &args, &[]);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    let load = Load::start(c.addr(), 4, requests, Duration::from_secs(120));
    assert!(
        load.wait_ok(200, T),
        "no load got through: {:?}",
        c.output()
    );
    for n in 1..=reloads {
        let before = load.ok_so_far();
        c.signal(nix::sys::signal::Signal::SIGHUP);
        c.wait_report_nth("reload_finished", n, |r| r["replaced"] == 2, T);
        assert!(load.wait_ok(before + 200, T));
    }
    c.wait_report_nth("exited", 2 * reloads, |r| r["expected"] == true, T);
    (c, load.finish())
}
