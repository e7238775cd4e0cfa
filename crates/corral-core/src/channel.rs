//! The supervisor's end of each worker channel: the socketpair, a reader task that turns
//! bytes into frames (with size and rate limits), and non-blocking sends, fds included.
//!
//! Longer than 500 lines with its tests; the channel itself is about 210.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use corral_proto::channel::{self, DecodeError, Frame, Lines, Message};
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::process::Pid;

/// Messages a worker may send per second on average, and in a burst, before the
/// surplus is dropped (and counted).
pub const RATE_PER_SEC: f64 = 2000.0;
pub const BURST: f64 = 4000.0;

/// What a worker's channel produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Frame(Frame),
    /// A line that could not be decoded; the channel stays open.
    Bad(DecodeError),
    /// This many messages were dropped for exceeding the rate limit since the last report.
    Flooded {
        dropped: u64,
    },
    /// The worker closed its end (or exited).
    Closed,
}

/// The worker's end, to install in the child, and the supervisor's end.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((theirs, ours))
}

/// Bytes of unsent messages a channel may hold for a worker that doesn't read; past
/// this, further messages to it are dropped.
pub const MAX_BACKLOG: usize = 256 * 1024;

/// The supervisor side of one channel.
#[derive(Debug)]
pub struct Channel {
    tx: OwnedWriteHalf,
    /// The unsent tail of a line (and whole lines after it), waiting for the worker to read.
    backlog: Vec<u8>,
    /// Stops the reader, for a hand-over (`crate::handover`).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<Vec<u8>>>,
}

/// A channel as it crosses `exec`: the supervisor's end, the unfinished line read from
/// it, and what was not sent yet.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ChannelState {
    pub fd: crate::handover::Fd,
    pub unread: Vec<u8>,
    pub backlog: Vec<u8>,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the worker is not reading its channel ({0} bytes waiting)")]
    Backlogged(usize),
    #[error("the channel is closed")]
    Io(#[from] io::Error),
}

impl Channel {
    /// Wraps the supervisor's end and spawns its reader, which sends `(pid, input)` to `sink`.
    pub fn start(ours: OwnedFd, pid: Pid, sink: mpsc::Sender<(Pid, Input)>) -> io::Result<Channel> {
        Channel::resume(
            ChannelState {
                fd: crate::handover::Fd(ours),
                unread: Vec::new(),
                backlog: Vec::new(),
            },
            pid,
            sink,
        )
    }

    /// Continues a channel another supervisor handed over.
    pub fn resume(
        state: ChannelState,
        pid: Pid,
        sink: mpsc::Sender<(Pid, Input)>,
    ) -> io::Result<Channel> {
        let std = std::os::unix::net::UnixStream::from(state.fd.0);
        std.set_nonblocking(true)?;
        let (rx, tx) = UnixStream::from_std(std)?.into_split();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        let mut lines = Lines::new();
        lines.push(&state.unread);
        tokio::spawn(read_loop(rx, pid, sink, lines, (stop_rx, stopped_tx)));
        Ok(Channel {
            tx,
            backlog: state.backlog,
            stop: Some(stop),
            stopped: Some(stopped),
        })
    }

    /// Asks the reader to stop after what it has read is passed on; the receiver gets
    /// the unfinished line it held once it has stopped (an error: it had ended already).
    pub fn stop_reading(&mut self) -> Option<tokio::sync::oneshot::Receiver<Vec<u8>>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.stopped.take()
    }

    /// The channel's state while it runs on: a duplicate of its socket. What waits to be
    /// sent is left out: sent a moment later, a copy sent again by whoever takes the
    /// snapshot would reach the worker twice, or split a line.
    pub fn snapshot(&self) -> io::Result<ChannelState> {
        Ok(ChannelState {
            fd: crate::handover::Fd::dup(self.tx.as_ref().as_fd())?,
            unread: Vec::new(),
            backlog: Vec::new(),
        })
    }

    /// After the reader stopped: the channel's state, with the `unread` line it gave back.
    pub fn into_state(self, unread: Vec<u8>) -> io::Result<ChannelState> {
        let fd = crate::handover::Fd::dup(self.tx.as_ref().as_fd())?;
        // Dropping a write half shuts the socket's write direction down, which the
        // worker would read as the end of its channel (and drain).
        self.tx.forget();
        Ok(ChannelState {
            fd,
            unread,
            backlog: self.backlog,
        })
    }

    /// Sends one message without blocking; what the socket doesn't take now waits in
    /// the backlog, up to [`MAX_BACKLOG`].
    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        self.queue(&channel::encode(message))
    }

    /// Sends a user value (a broadcast from another worker, a message from the user).
    pub fn send_user(&mut self, value: &serde_json::Value) -> Result<(), SendError> {
        self.queue(&channel::encode_user(value))
    }

    /// Hands `fds` over with a `CORRAL_CONN` line, only when nothing else is waiting
    /// (so the line and its fds leave together). On success the caller closes its copies.
    pub fn send_conns(&mut self, listener: u32, fds: &[RawFd]) -> Result<(), SendError> {
        let line = channel::encode(&Message::Conn {
            listener,
            fds: fds.len() as u32,
        });
        self.send_with_fds(&line, fds)
    }

    /// Hands one connection to a Node worker, framed as Node's handle passing.
    pub fn send_node_conn(&mut self, listener: u32, fd: RawFd) -> Result<(), SendError> {
        self.send_node_handle(&channel::encode_node_conn(listener), fd)
    }

    /// Hands a listening socket a Node worker asked for (`CORRAL_BIND`) to it.
    pub fn send_node_listener(
        &mut self,
        port: u16,
        host: Option<&str>,
        listener: u32,
        fd: RawFd,
    ) -> Result<(), SendError> {
        self.send_node_handle(&channel::encode_node_bound(port, host, listener), fd)
    }

    /// Every socket that reaches a Node worker over its IPC is made non-blocking first:
    /// libuv opens a handle it receives that way as it is (its own senders' sockets
    /// always are non-blocking), and a blocking one stops the worker's event loop in
    /// accept(), read() or write(). A listener left blocking hung every worker that
    /// lost the race for a connection until the next one came; a dispatched connection,
    /// its worker while a slow client read a big answer. Node's cluster primary hands
    /// over non-blocking sockets; so does corral.
    fn send_node_handle(&mut self, line: &[u8], fd: RawFd) -> Result<(), SendError> {
        // SAFETY: the caller holds `fd` open for this call (it is sending it).
        let _ = crate::os::set_nonblocking(unsafe { BorrowedFd::borrow_raw(fd) });
        self.send_with_fds(line, &[fd])
    }

    /// Sends `line` with `fds` attached to its first byte, only when nothing else is
    /// waiting, so that the line and its fds leave together.
    fn send_with_fds(&mut self, line: &[u8], fds: &[RawFd]) -> Result<(), SendError> {
        self.flush()?;
        if !self.backlog.is_empty() {
            return Err(SendError::Backlogged(self.backlog.len()));
        }
        let sent = self.write(line, fds)?;
        self.backlog.extend_from_slice(&line[sent..]);
        Ok(())
    }

    /// Whether connections can be handed over right now.
    #[cfg(test)]
    fn is_clear(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Writes as much of the backlog as the socket takes.
    pub fn flush(&mut self) -> Result<(), SendError> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let backlog = std::mem::take(&mut self.backlog);
        let sent = self.write(&backlog, &[])?;
        self.backlog = backlog[sent..].to_vec();
        Ok(())
    }

    fn queue(&mut self, line: &[u8]) -> Result<(), SendError> {
        self.flush()?;
        if self.backlog.len() + line.len() > MAX_BACKLOG {
            return Err(SendError::Backlogged(self.backlog.len()));
        }
        if self.backlog.is_empty() {
            let sent = self.write(line, &[])?;
            self.backlog.extend_from_slice(&line[sent..]);
        } else {
            self.backlog.extend_from_slice(line);
        }
        Ok(())
    }

    /// One non-blocking sendmsg; returns how many bytes went (0 when the socket is full).
    fn write(&self, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
        let raw = self.tx.as_ref().as_raw_fd();
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(bytes)];
        loop {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match sendmsg::<()>(raw, &iov, cmsgs, flags, None) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) if fds.is_empty() => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Token bucket: one token per message.
struct Rate {
    tokens: f64,
    last: Instant,
    dropped: u64,
    reported: Instant,
}

impl Rate {
    fn new() -> Self {
        let now = Instant::now();
        Rate {
            tokens: BURST,
            last: now,
            dropped: 0,
            reported: now,
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * RATE_PER_SEC).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Dropped count to report, at most once a second.
    fn due_report(&mut self, now: Instant) -> Option<u64> {
        if self.dropped > 0 && now.duration_since(self.reported) >= Duration::from_secs(1) {
            self.reported = now;
            Some(std::mem::take(&mut self.dropped))
        } else {
            None
        }
    }
}

/// Until asked to stop: `stop.0` fires, and the unfinished line goes back on `stop.1`.
type Stop = (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<Vec<u8>>,
);

async fn read_loop(
    rx: OwnedReadHalf,
    pid: Pid,
    sink: mpsc::Sender<(Pid, Input)>,
    mut lines: Lines,
    stop: Stop,
) {
    let (mut stop_rx, stopped) = stop;
    let mut stop_armed = true;
    let mut rate = Rate::new();
    // Decode errors are reported like floods: a burst, then counted.
    let mut bad = Rate::new();
    loop {
        let batch = tokio::select! {
            biased;
            asked = &mut stop_rx, if stop_armed => {
                if asked.is_ok() {
                    let _ = stopped.send(lines.unfinished().to_vec());
                    return;
                }
                stop_armed = false; // the channel is gone: nobody will ask
                continue;
            }
            batch = read_lines(&rx, &mut lines) => batch,
        };
        let Some(batch) = batch else { break };
        let now = Instant::now();
        // Acks are running totals: only the newest of a read matters, and it is never
        // dropped, or credit could stay lost while the worker waits for connections.
        let mut ack = None;
        for line in batch {
            let input = match line {
                Ok(line) => match channel::decode(&line) {
                    Ok(frame @ Frame::Corral(Message::Ack { .. })) => {
                        ack = Some(frame);
                        continue;
                    }
                    // Node's own bookkeeping (a NODE_HANDLE_ACK per connection handed to
                    // a Node worker): nothing for corral, and not counted as traffic.
                    Ok(Frame::User(value)) if channel::is_node_internal(&value) => continue,
                    _ if !rate.allow(now) => continue,
                    Ok(frame) => Input::Frame(frame),
                    Err(e) if bad.allow(now) => Input::Bad(e),
                    Err(_) => continue,
                },
                Err(e) if bad.allow(now) => Input::Bad(e),
                Err(_) => continue,
            };
            if sink.send((pid, input)).await.is_err() {
                return;
            }
        }
        if let Some(frame) = ack {
            if sink.send((pid, Input::Frame(frame))).await.is_err() {
                return;
            }
        }
        if let Some(dropped) = rate.due_report(now) {
            let _ = sink.send((pid, Input::Flooded { dropped })).await;
        }
    }
    if rate.dropped > 0 {
        let dropped = rate.dropped;
        let _ = sink.send((pid, Input::Flooded { dropped })).await;
    }
    let _ = sink.send((pid, Input::Closed)).await;
}

/// The lines one read completed (through the shared scratch buffer: an idle channel
/// holds none); None once the worker's end is closed.
async fn read_lines(
    rx: &OwnedReadHalf,
    lines: &mut Lines,
) -> Option<Vec<Result<Vec<u8>, DecodeError>>> {
    loop {
        rx.readable().await.ok()?;
        match crate::scratch::read_into(|buf| rx.try_read(buf), |bytes| lines.push(bytes)) {
            Ok(batch) => return batch,
            Err(e) if crate::scratch::retry(&e) => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn frames_garbage_and_close_arrive_in_order() {
        let (theirs, ours) = pair().unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let _channel = Channel::start(ours, 7, tx).unwrap();
        let mut worker = std::os::unix::net::UnixStream::from(theirs);
        worker
            .write_all(b"{\"cmd\":\"CORRAL_READY\"}\nnot json\n\"hello\"\n")
            .unwrap();
        drop(worker);
        let mut got = Vec::new();
        while let Some((pid, input)) = rx.recv().await {
            assert_eq!(pid, 7);
            got.push(input);
        }
        assert_eq!(got[0], Input::Frame(Frame::Corral(Message::Ready {})));
        assert!(matches!(got[1], Input::Bad(DecodeError::NotJson(_))));
        assert_eq!(
            got[2],
            Input::Frame(Frame::User(serde_json::json!("hello")))
        );
        assert_eq!(got[3], Input::Closed);
    }

    #[tokio::test]
    async fn a_flood_is_cut_and_counted() {
        let (theirs, ours) = pair().unwrap();
        let (tx, mut rx) = mpsc::channel(100_000);
        let _channel = Channel::start(ours, 1, tx).unwrap();
        let writer = std::thread::spawn(move || {
            let mut worker = std::os::unix::net::UnixStream::from(theirs);
            let line = b"{\"x\":1}\n".repeat(20_000);
            worker.write_all(&line).unwrap();
        });
        let (mut frames, mut dropped) = (0u64, 0u64);
        while let Some((_, input)) = rx.recv().await {
            match input {
                Input::Frame(_) => frames += 1,
                Input::Flooded { dropped: n } => dropped += n,
                Input::Closed => break,
                Input::Bad(e) => panic!("{e}"),
            }
        }
        writer.join().unwrap();
        assert_eq!(frames + dropped, 20_000);
        assert!(
            dropped > 0 && frames < 20_000,
            "frames {frames}, dropped {dropped}"
        );
    }

    #[tokio::test]
    async fn fds_travel_with_the_conn_line() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        use std::io::IoSliceMut;
        let (theirs, ours) = pair().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut channel = Channel::start(ours, 1, tx).unwrap();
        let (a, _b) = pair().unwrap();
        channel.send_conns(0, &[a.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            theirs.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fds: Vec<RawFd> = msg
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds,
                _ => vec![],
            })
            .collect();
        let n = msg.bytes;
        assert_eq!(fds.len(), 1);
        assert_eq!(
            &buf[..n],
            b"{\"cmd\":\"CORRAL_CONN\",\"listener\":0,\"fds\":1}\n"
        );
    }
}

#[cfg(test)]
mod backlog_tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_does_not_read_never_blocks_the_supervisor() {
        let (_theirs, ours) = pair().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let mut channel = Channel::start(ours, 1, tx).unwrap();
        let big = serde_json::Value::String("x".repeat(16 * 1024));
        let mut refused = 0;
        for _ in 0..200 {
            if let Err(SendError::Backlogged(_)) = channel.send_user(&big) {
                refused += 1;
            }
        }
        assert!(refused > 0, "the backlog is bounded");
        assert!(!channel.is_clear());
        let (a, _b) = pair().unwrap();
        assert!(matches!(
            channel.send_conns(0, &[a.as_raw_fd()]),
            Err(SendError::Backlogged(_))
        ));
    }
}
