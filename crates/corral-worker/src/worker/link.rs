//! The worker's side of its channel: the reader (welcome, handed-over connections,
//! messages, shutdown), the writer, acks that return dispatch credit, heartbeats.

use super::*;

pub(super) async fn watch_sigterm(inner: Arc<Inner>) {
    let kind = tokio::signal::unix::SignalKind::terminate();
    let Ok(mut term) = tokio::signal::unix::signal(kind) else {
        return;
    };
    term.recv().await;
    inner.shutdown.send_replace(true);
}

pub(super) async fn write_loop(
    fd: Arc<AsyncFd<OwnedFd>>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(line) = rx.recv().await {
        let mut sent = 0;
        while sent < line.len() {
            let Ok(mut guard) = fd.writable().await else {
                return;
            };
            match guard.try_io(|fd| {
                nix::sys::socket::send(
                    fd.as_raw_fd(),
                    &line[sent..],
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => sent += n,
                Ok(Err(_)) => return, // the supervisor is gone
                Err(_would_block) => continue,
            }
        }
    }
}

pub(super) async fn heartbeat_loop(inner: Arc<Inner>, every: Duration) {
    let mut expected = Instant::now() + every;
    loop {
        tokio::time::sleep_until(expected.into()).await;
        let now = Instant::now();
        let lag = now.saturating_duration_since(expected);
        expected = now + every;
        inner.send(&Message::Heartbeat {
            rss: own_rss(),
            lag_ms: lag.as_secs_f64() * 1000.0,
            active: inner.active.load(Ordering::Relaxed),
            requests: inner.requests.load(Ordering::Relaxed),
        });
    }
}

pub(super) fn own_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

/// Returns credit to the supervisor when connections were taken (at once: the
/// supervisor waits for it), and reports finished connections at most every
/// [`ACTIVE_EVERY`]. Notifications that pile up meanwhile become one ack.
pub(super) async fn ack_loop(inner: Arc<Inner>) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = inner.taken.notified() => {}
            _ = inner.dirty.notified() => {
                let since = last.elapsed();
                if since < ACTIVE_EVERY {
                    tokio::select! {
                        _ = tokio::time::sleep(ACTIVE_EVERY - since) => {}
                        _ = inner.taken.notified() => {}
                    }
                }
            }
        }
        // Let the reader hand over the rest of what it just read first.
        tokio::task::yield_now().await;
        last = Instant::now();
        inner.send(&Message::Ack {
            received: inner.received.load(Ordering::Acquire),
            active: inner.active.load(Ordering::Relaxed),
        });
    }
}

/// How often a change in open connections alone is reported (for least-loaded).
pub(super) const ACTIVE_EVERY: Duration = Duration::from_millis(20);

/// Reads the channel: welcome, handed-over connections, messages, shutdown.
pub(super) struct Reader {
    pub(super) fd: Arc<AsyncFd<OwnedFd>>,
    pub(super) inner: Arc<Inner>,
    pub(super) welcome: Option<oneshot::Sender<bool>>,
    pub(super) conns: Option<mpsc::UnboundedSender<Connection>>,
    pub(super) messages: mpsc::UnboundedSender<Incoming>,
}

impl Reader {
    pub(super) async fn run(mut self) {
        let mut lines = Lines::new();
        let mut fds: VecDeque<OwnedFd> = VecDeque::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let draining = *shutdown.borrow_and_update();
            if draining {
                // Everything corral handed over before the stop is already in the
                // socket: take it all, then tell `accept` there is no more.
                while let Ok(n) = recv(self.fd.get_ref().as_raw_fd(), &mut buf, &mut fds) {
                    if n == 0 || !self.consume(&mut lines, &buf[..n], &mut fds) {
                        break;
                    }
                }
                self.conns = None;
                return;
            }
            tokio::select! {
                ready = self.fd.readable() => {
                    let Ok(mut guard) = ready else { return };
                    match guard.try_io(|fd| recv(fd.as_raw_fd(), &mut buf, &mut fds)) {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            // The supervisor is gone: drain what we have and stop.
                            self.inner.shutdown.send_replace(true);
                        }
                        Ok(Ok(n)) => {
                            let bytes = buf[..n].to_vec();
                            self.consume(&mut lines, &bytes, &mut fds);
                        }
                        Err(_would_block) => {}
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Handles complete lines; false once the channel is unusable.
    fn consume(&mut self, lines: &mut Lines, bytes: &[u8], fds: &mut VecDeque<OwnedFd>) -> bool {
        for line in lines.push(bytes).into_iter().flatten() {
            match channel::decode(&line) {
                Ok(Frame::Corral(Message::Welcome { dispatch, .. })) => {
                    if let Some(tx) = self.welcome.take() {
                        let _ = tx.send(dispatch);
                    }
                }
                Ok(Frame::Corral(Message::Conn { fds: count, .. })) => {
                    // Each one sent counts as received, even one whose fd never came
                    // (this process was out of fds: the kernel closed it): its credit
                    // goes back, or dispatch to this worker would stop for good.
                    self.inner
                        .received
                        .fetch_add(u64::from(count), Ordering::AcqRel);
                    for _ in 0..count {
                        let Some(fd) = fds.pop_front() else { break };
                        // A connection that can't be wrapped (or arrives after the
                        // drain) is dropped: its client sees it close.
                        if let (Ok(stream), Some(conns)) = (Stream::from_fd(fd), &self.conns) {
                            let _ = conns.send(Connection::new(stream, &self.inner));
                        }
                    }
                    self.inner.taken.notify_one();
                }
                Ok(Frame::Corral(Message::Message { from, data })) => {
                    let _ = self.messages.send(Incoming { from, data });
                }
                Ok(Frame::Corral(Message::Shutdown {})) => {
                    self.inner.shutdown.send_replace(true);
                }
                Ok(Frame::User(data)) => {
                    let _ = self.messages.send(Incoming { from: None, data });
                }
                Ok(Frame::Corral(_)) | Err(_) => {}
            }
        }
        true
    }
}

/// One recvmsg: bytes into `buf`, fds appended to `fds`. A message whose fds did not
/// all fit still counts (the ones that came are kept): it is not a closed channel.
pub(super) fn recv(fd: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    // SAFETY: `fd` is the channel, open for the reader's whole life.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let received = corral_proto::fdpass::recv(fd, buf)?;
    fds.extend(received.fds);
    Ok(received.len)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream as StdUnix;

    use nix::sys::socket::{sendmsg, ControlMessage};

    use super::*;

    fn inner(out: Option<mpsc::UnboundedSender<Vec<u8>>>) -> Arc<Inner> {
        let mut inner = Inner::new(watch::channel(false).0);
        inner.out = out;
        Arc::new(inner)
    }

    struct Wired {
        supervisor: StdUnix,
        inner: Arc<Inner>,
        welcome: oneshot::Receiver<bool>,
        conns: mpsc::UnboundedReceiver<Connection>,
        messages: mpsc::UnboundedReceiver<Incoming>,
    }

    /// A reader on one end of a socketpair; the test plays the supervisor on the other.
    fn wired() -> Wired {
        let (supervisor, worker) = StdUnix::pair().expect("socketpair");
        let inner = inner(None);
        let (welcome_tx, welcome) = oneshot::channel();
        let (conns_tx, conns) = mpsc::unbounded_channel();
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let reader = Reader {
            fd: Arc::new(super::super::register(OwnedFd::from(worker)).expect("register")),
            inner: inner.clone(),
            welcome: Some(welcome_tx),
            conns: Some(conns_tx),
            messages: messages_tx,
        };
        tokio::spawn(reader.run());
        Wired {
            supervisor,
            inner,
            welcome,
            conns,
            messages,
        }
    }

    fn line(message: &Message) -> Vec<u8> {
        channel::encode(message)
    }

    /// Hands `n` connections over as corral does: one `CORRAL_CONN` line with the fds.
    fn hand_over(supervisor: &StdUnix, n: usize) -> Vec<StdUnix> {
        let pairs: Vec<(StdUnix, StdUnix)> =
            (0..n).map(|_| StdUnix::pair().expect("pair")).collect();
        let fds: Vec<RawFd> = pairs.iter().map(|(ours, _)| ours.as_raw_fd()).collect();
        let bytes = line(&Message::Conn {
            listener: 0,
            fds: n as u32,
        });
        let iov = [std::io::IoSlice::new(&bytes)];
        sendmsg::<()>(
            supervisor.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        // Our copies close here, as corral closes its own after sendmsg.
        pairs.into_iter().map(|(_, client)| client).collect()
    }

    #[tokio::test]
    async fn the_reader_takes_welcome_connections_messages_and_shutdown() {
        let mut w = wired();
        let mut to_worker = w.supervisor.try_clone().expect("clone");
        to_worker
            .write_all(&line(&Message::Welcome {
                version: PROTOCOL_VERSION,
                dispatch: true,
                window: 64,
            }))
            .expect("write");
        assert!(w.welcome.await.expect("welcome reaches the worker"));

        let clients = hand_over(&w.supervisor, 3);
        for _ in 0..3 {
            let conn = w.conns.recv().await.expect("a handed-over connection");
            drop(conn);
        }
        assert_eq!(w.inner.received.load(Ordering::Acquire), 3);
        drop(clients);

        to_worker
            .write_all(&line(&Message::Message {
                from: Some(1),
                data: serde_json::json!({"hello": 1}),
            }))
            .expect("write");
        to_worker
            .write_all(b"{\"cmd\":\"app\",\"x\":2}\n")
            .expect("write");
        let broadcast = w.messages.recv().await.expect("message");
        assert_eq!(
            broadcast,
            Incoming {
                from: Some(1),
                data: serde_json::json!({"hello": 1})
            }
        );
        let user = w.messages.recv().await.expect("user message");
        assert_eq!(user.from, None);
        assert_eq!(user.data["x"], 2);

        // Connections sent before the shutdown are still taken; then `accept` ends.
        let late = hand_over(&w.supervisor, 2);
        to_worker
            .write_all(&line(&Message::Shutdown {}))
            .expect("write");
        let mut after = 0;
        while let Some(conn) = w.conns.recv().await {
            drop(conn);
            after += 1;
        }
        assert_eq!(after, 2, "everything handed over before the stop is served");
        assert!(*w.inner.shutdown.borrow());
        drop(late);
    }

    #[tokio::test]
    async fn a_closed_channel_means_the_supervisor_is_gone_and_the_worker_drains() {
        let mut w = wired();
        drop(w.supervisor);
        assert!(w.conns.recv().await.is_none(), "accept ends");
        assert!(*w.inner.shutdown.borrow());
    }

    #[tokio::test]
    async fn a_bad_line_is_skipped_and_the_next_one_read() {
        let mut w = wired();
        let mut to_worker = w.supervisor.try_clone().expect("clone");
        to_worker.write_all(b"{not json\n").expect("write");
        to_worker.write_all(b"\"after\"\n").expect("write");
        let next = w.messages.recv().await.expect("the next line");
        assert_eq!(next.data, serde_json::json!("after"));
    }

    fn acks(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Ok(bytes) = rx.try_recv() {
            let text = String::from_utf8(bytes).expect("utf-8");
            match channel::decode(text.trim_end().as_bytes()) {
                Ok(Frame::Corral(Message::Ack { received, active })) => {
                    out.push((received, active))
                }
                other => panic!("not an ack: {other:?}"),
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn taken_connections_are_acked_at_once_and_finished_ones_coalesce() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inner = inner(Some(tx));
        tokio::spawn(ack_loop(inner.clone()));
        tokio::task::yield_now().await;

        inner.received.store(5, Ordering::Release);
        inner.active.store(5, Ordering::Relaxed);
        inner.taken.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(acks(&mut rx), vec![(5, 5)], "credit goes back at once");

        // Ten connections finishing in a burst are one report, not ten.
        for left in (0..5).rev() {
            inner.active.store(left, Ordering::Relaxed);
            inner.dirty.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(ACTIVE_EVERY * 2).await;
        let burst = acks(&mut rx);
        assert!(burst.len() <= 2, "{burst:?}");
        assert_eq!(burst.last(), Some(&(5, 0)), "the last count is reported");
    }
}
