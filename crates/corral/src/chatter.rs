//! What corral writes on a worker's behalf (its messages, `STATUS=` lines, channel
//! problems, lag warnings) is bounded per worker: a burst, then a steady rate; the rest
//! is counted and the count said with the next line that goes out.

use std::collections::HashMap;
use std::time::Instant;

use corral_core::group::Report;

use crate::render;

/// Lines a worker may have written for it in a burst...
const BURST: f64 = 50.0;
/// ...and per second after that.
const PER_SECOND: f64 = 10.0;

struct Bucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

/// Token buckets by (app, slot).
#[derive(Default)]
pub struct Chatter {
    buckets: HashMap<(String, usize), Bucket>,
}

/// What to do with a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write it; first say that lines of a worker were suppressed, when some were.
    Write { suppressed: Option<Suppressed> },
    /// The first report over the worker's rate: say that its lines are now counted.
    Throttled { slot: usize },
    /// Over the worker's rate: counted, not written.
    Drop,
}

/// `count` lines about the worker in `slot` were not written.
#[derive(Debug, PartialEq, Eq)]
pub struct Suppressed {
    pub slot: usize,
    pub count: u64,
}

/// A line to write: the report's own text, or a note about suppressed lines.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    Report(String),
    Note(String),
}

impl Chatter {
    /// The lines to write for `report` of `app`: what was suppressed, then the report
    /// itself; none when the worker is over its rate.
    pub fn lines(&mut self, app: &str, report: &Report, now: Instant) -> Vec<Said> {
        if report.is_quiet() {
            return Vec::new();
        }
        match self.admit(app, report, now) {
            Admit::Drop => Vec::new(),
            Admit::Throttled { slot } => vec![Said::Note(render::throttled(slot))],
            Admit::Write { suppressed } => suppressed
                .map(|s| Said::Note(render::suppressed(s.slot, s.count)))
                .into_iter()
                .chain([Said::Report(render::report(report))])
                .collect(),
        }
    }

    pub fn admit(&mut self, app: &str, report: &Report, now: Instant) -> Admit {
        let Some(slot) = chatty_slot(report) else {
            return Admit::Write { suppressed: None };
        };
        let bucket = self
            .buckets
            .entry((app.to_owned(), slot))
            .or_insert(Bucket {
                tokens: BURST,
                last: now,
                suppressed: 0,
            });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * PER_SECOND).min(BURST);
        if bucket.tokens < 1.0 {
            bucket.suppressed += 1;
            if bucket.suppressed == 1 {
                return Admit::Throttled { slot };
            }
            return Admit::Drop;
        }
        bucket.tokens -= 1.0;
        let count = std::mem::take(&mut bucket.suppressed);
        Admit::Write {
            suppressed: (count > 0).then_some(Suppressed { slot, count }),
        }
    }
}

/// The slot of a report that a worker can cause at will; `None` for the supervisor's own.
fn chatty_slot(report: &Report) -> Option<usize> {
    match report {
        Report::Message { slot, .. }
        | Report::Status { slot, .. }
        | Report::ChannelProblem { slot, .. }
        | Report::ChannelFlooded { slot, .. }
        | Report::Lag { slot, .. } => Some(*slot),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(slot: usize) -> Report {
        Report::Status {
            slot,
            pid: 1,
            text: "x".into(),
        }
    }

    #[test]
    fn a_burst_then_a_rate_per_worker_and_the_rest_is_counted() {
        let mut chatter = Chatter::default();
        let t0 = Instant::now();
        let admitted: Vec<Admit> = (0..1000)
            .map(|_| chatter.admit("a", &status(0), t0))
            .collect();
        let written = admitted
            .iter()
            .filter(|a| matches!(a, Admit::Write { .. }))
            .count();
        assert_eq!(written, BURST as usize);
        assert_eq!(admitted[BURST as usize], Admit::Throttled { slot: 0 });
        // Another worker has a bucket of its own; the supervisor's reports pass.
        let clear = Admit::Write { suppressed: None };
        assert_eq!(chatter.admit("a", &status(1), t0), clear);
        let scaled = Report::Scaled { from: 1, to: 2 };
        assert_eq!(chatter.admit("a", &scaled, t0), clear);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            chatter.admit("a", &status(0), later),
            Admit::Write {
                suppressed: Some(Suppressed {
                    slot: 0,
                    count: 1000 - BURST as u64
                })
            }
        );
    }
}
