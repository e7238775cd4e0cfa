//! Reads a worker's stdout and stderr and turns them into whole lines for the log sink.

use std::os::fd::OwnedFd;

use tokio::sync::mpsc;

use crate::process::Pid;

/// Lines longer than this are passed on in pieces of this size, so one runaway writer
/// can't make the supervisor buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// How long an unterminated line waits for the rest of it before it is passed on.
pub const PARTIAL_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a worker wrote, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub slot: usize,
    pub pid: Pid,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// A running [`pump`], which can be stopped to hand its pipe over (`crate::handover`).
pub struct Pump {
    stop: tokio::sync::oneshot::Sender<()>,
    stopped: tokio::sync::oneshot::Receiver<(OwnedFd, Vec<u8>)>,
}

impl Pump {
    /// Stops reading after the lines already read are passed on; resolves to the pipe and
    /// the unfinished line, or None when the pump had already ended (EOF).
    pub async fn stop(self) -> Option<(OwnedFd, Vec<u8>)> {
        let _ = self.stop.send(());
        self.stopped.await.ok()
    }
}

/// Spawns a task that forwards every line from `fd` until EOF (when the worker and any
/// child that inherited its output have exited). When the sink is full, the task waits,
/// and so the worker's writes eventually block: output is slowed, never dropped.
///
/// An idle pump holds no buffer (see `scratch`): only what is not yet a whole line is
/// kept between reads. `pending` is an unfinished line a previous pump handed over.
pub fn pump(
    fd: OwnedFd,
    slot: usize,
    pid: Pid,
    stream: Stream,
    sink: mpsc::Sender<LogLine>,
    pending: Vec<u8>,
) -> Option<Pump> {
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
    let (stop, mut stop_rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut pending = pending;
        let line = |text| LogLine {
            slot,
            pid,
            stream,
            text,
        };
        let mut stop_armed = true;
        loop {
            let read = tokio::select! {
                biased;
                asked = &mut stop_rx, if stop_armed => {
                    if asked.is_ok() {
                        if let Ok(fd) = receiver.into_nonblocking_fd() {
                            let _ = stopped_tx.send((fd, pending));
                        }
                        return;
                    }
                    stop_armed = false; // the handle is gone: nobody will ask
                    continue;
                }
                more = read_some(&receiver, &mut pending) => more,
                // A prompt or a `write('x')` with no newline: shown once the worker
                // pauses, not held until a newline that may never come.
                () = tokio::time::sleep(PARTIAL_AFTER), if !pending.is_empty() => {
                    if sink.send(line(std::mem::take(&mut pending))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if !read {
                break;
            }
            let mut start = 0;
            while let Some((text, next)) = next_line(&pending[start..]) {
                start += next;
                if sink.send(line(text)).await.is_err() {
                    return;
                }
            }
            pending.drain(..start);
            if pending.is_empty() {
                pending = Vec::new(); // give the memory back while the worker is quiet
            }
        }
        if !pending.is_empty() {
            let _ = sink.send(line(pending)).await;
        }
    });
    Some(Pump { stop, stopped })
}

/// Appends what the pipe has to `pending`; false at EOF or on an error.
async fn read_some(receiver: &tokio::net::unix::pipe::Receiver, pending: &mut Vec<u8>) -> bool {
    loop {
        if receiver.readable().await.is_err() {
            return false;
        }
        let read = crate::scratch::read_into(
            |buf| receiver.try_read(buf),
            |bytes| pending.extend_from_slice(bytes),
        );
        match read {
            Ok(Some(())) => return true,
            Ok(None) => return false,
            Err(e) if crate::scratch::retry(&e) => continue,
            Err(_) => return false,
        }
    }
}

/// The first whole line of `pending` without its newline (or its first MAX_LINE bytes
/// when no newline comes that soon) and where the rest starts; None while the line is
/// still being written.
fn next_line(pending: &[u8]) -> Option<(Vec<u8>, usize)> {
    let window = &pending[..pending.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Some((pending[..i].to_vec(), i + 1)),
        None if pending.len() >= MAX_LINE => Some((pending[..MAX_LINE].to_vec(), MAX_LINE)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn lines_of(input: Vec<u8>) -> Vec<Vec<u8>> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let _pump = pump(r, 0, 1, Stream::Stdout, tx, Vec::new());
        std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            w.write_all(&input).unwrap();
        });
        let mut out = Vec::new();
        while let Some(line) = rx.recv().await {
            out.push(line.text);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_the_unterminated_tail() {
        let got = lines_of(b"one\ntwo\n\nthree".to_vec()).await;
        assert_eq!(
            got,
            vec![
                b"one".to_vec(),
                b"two".to_vec(),
                b"".to_vec(),
                b"three".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn issue_22_an_unterminated_line_is_passed_on_when_the_worker_pauses() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let _pump = pump(r, 0, 1, Stream::Stderr, tx, Vec::new());
        let (said, heard) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            w.write_all(b"errwrite").unwrap();
            // Held open until the partial line got through: no EOF flushes it.
            heard.recv().unwrap();
            w.write_all(b"rest\n").unwrap();
        });
        let first = rx.recv().await.expect("the partial line");
        assert_eq!(first.text, b"errwrite");
        said.send(()).unwrap();
        assert_eq!(rx.recv().await.expect("the next line").text, b"rest");
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn cuts_runaway_lines_into_bounded_pieces() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        let got = lines_of(input).await;
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 10]);
    }
}
