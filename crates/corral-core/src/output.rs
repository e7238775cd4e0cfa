//! Reads a worker's stdout and stderr and turns them into whole lines for the log sink.

use std::os::fd::OwnedFd;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::process::Pid;

/// Lines longer than this are passed on in pieces of this size, so one runaway writer
/// can't make the supervisor buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Spawns a task that forwards every line from `fd` until EOF (when the worker and any
/// child that inherited its output have exited). When the sink is full, the task waits,
/// and so the worker's writes eventually block: output is slowed, never dropped.
pub fn pump(fd: OwnedFd, slot: usize, pid: Pid, stream: Stream, sink: mpsc::Sender<LogLine>) {
    let receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(receiver) => receiver,
        Err(_) => return, // not a pipe: nothing to read
    };
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::with_capacity(16 * 1024, receiver);
        let mut line = Vec::new();
        loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(chunk) => chunk,
            };
            let room = MAX_LINE - line.len();
            let (take, complete) = match chunk.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len().min(room), line.len() + chunk.len() >= MAX_LINE),
            };
            line.extend_from_slice(&chunk[..take]);
            reader.consume(take);
            if complete {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                let text = std::mem::take(&mut line);
                let msg = LogLine {
                    slot,
                    pid,
                    stream,
                    text,
                };
                if sink.send(msg).await.is_err() {
                    return;
                }
            }
        }
        if !line.is_empty() {
            let _ = sink
                .send(LogLine {
                    slot,
                    pid,
                    stream,
                    text: line,
                })
                .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn lines_of(input: Vec<u8>) -> Vec<Vec<u8>> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        pump(r, 0, 1, Stream::Stdout, tx);
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
    async fn cuts_runaway_lines_into_bounded_pieces() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        let got = lines_of(input).await;
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 10]);
    }
}
