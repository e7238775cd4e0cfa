//! Writing lines from threads of their own, so that a reader that stalls (a paused pager,
//! a stuck log shipper, a full disk) stalls no one who must not wait.
//!
//! Two kinds of lines: worker output ([`spawn_log_writer`]), which may push back on the
//! workers through the bounded channel their pumps send into, as a terminal would; and
//! the supervisor's own notes ([`Notes`]), which never wait: when the queue is full they
//! are dropped and counted, and the count is written once the writer catches up.
//! Write errors (EPIPE, ENOSPC) lose the line, never the writer.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::output::LogLine;

/// Notes waiting for the writer at most; past this they are dropped and counted.
pub const NOTES_QUEUED: usize = 1024;

enum Item {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// A handle for queueing the supervisor's own lines; cheap to clone.
#[derive(Clone)]
pub struct Notes {
    tx: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

impl Notes {
    /// Starts a thread writing queued lines to `sink`. After lines were dropped, it
    /// writes `dropped(count)` once it has written the next line.
    pub fn spawn<W, D>(sink: W, dropped: D) -> Notes
    where
        W: Write + Send + 'static,
        D: Fn(u64) -> Vec<u8> + Send + 'static,
    {
        let (tx, rx) = sync_channel(NOTES_QUEUED);
        let counter = Arc::new(AtomicU64::new(0));
        let count = counter.clone();
        std::thread::Builder::new()
            .name("corral-notes".into())
            .spawn(move || write_notes(rx, sink, &count, dropped))
            .expect("a thread for corral's own output");
        Notes {
            tx,
            dropped: counter,
        }
    }

    /// Queues one line (with its newline) without ever waiting.
    pub fn line(&self, line: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Item::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits up to `timeout` for every line queued so far to be written; false when the
    /// sink is still stalled.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = oneshot::channel();
        let mut item = Item::Flush(done);
        let queued = tokio::time::timeout(timeout, async {
            loop {
                match self.tx.try_send(item) {
                    Ok(()) => return true,
                    Err(TrySendError::Full(back)) => item = back,
                    Err(TrySendError::Disconnected(_)) => return false,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let Ok(true) = queued.await else {
            return false;
        };
        tokio::time::timeout(timeout, written).await.is_ok()
    }
}

fn write_notes<W: Write>(
    rx: Receiver<Item>,
    mut sink: W,
    dropped: &AtomicU64,
    message: impl Fn(u64) -> Vec<u8>,
) {
    while let Ok(item) = rx.recv() {
        match item {
            Item::Line(line) => {
                let _ = sink.write_all(&line);
            }
            Item::Flush(done) => {
                let _ = sink.flush();
                let _ = done.send(());
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = sink.write_all(&message(lost));
        }
    }
}

/// Starts a thread that hands every worker line to `write` until the senders are gone;
/// the receiver fires then. Errors are the writer's to count or ignore; it must not panic.
pub fn spawn_log_writer(
    mut rx: mpsc::Receiver<LogLine>,
    mut write: impl FnMut(&LogLine) + Send + 'static,
) -> oneshot::Receiver<()> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("corral-output".into())
        .spawn(move || {
            while let Some(line) = rx.blocking_recv() {
                write(&line);
            }
            let _ = done.send(());
        })
        .expect("a thread for worker output");
    finished
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that blocks every write until the gate opens.
    struct Gated {
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.gate;
            let mut open = lock.lock().expect("gate");
            while !*open {
                open = cvar.wait(open).expect("gate");
            }
            self.out.lock().expect("out").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stalled_sink_never_blocks_a_note_and_the_loss_is_counted() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Gated {
            gate: gate.clone(),
            out: out.clone(),
        };
        let notes = Notes::spawn(sink, |n| format!("{n} dropped\n").into_bytes());
        let total = NOTES_QUEUED * 3;
        for i in 0..total {
            notes.line(format!("note {i}\n").into_bytes());
        }
        assert!(
            !notes.flush(Duration::from_millis(50)).await,
            "still stalled"
        );
        {
            let (lock, cvar) = &*gate;
            *lock.lock().expect("gate") = true;
            cvar.notify_all();
        }
        assert!(notes.flush(Duration::from_secs(10)).await);
        let text = String::from_utf8(out.lock().expect("out").clone()).expect("utf-8");
        let written = text.lines().filter(|l| l.starts_with("note ")).count();
        let dropped: usize = text
            .lines()
            .filter_map(|l| l.strip_suffix(" dropped"))
            .map(|n| n.parse::<usize>().expect("a count"))
            .sum();
        assert_eq!(written + dropped, total, "{text}");
        assert!(dropped > 0);
    }

    #[test]
    fn write_errors_lose_lines_not_the_writer() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
        }
        let notes = Notes::spawn(Full, |_| Vec::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for _ in 0..10 {
            notes.line(b"x\n".to_vec());
            assert!(runtime.block_on(notes.flush(Duration::from_secs(5))));
        }
    }
}
