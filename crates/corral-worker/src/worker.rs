//! The async worker: channel handshake, dispatched or shared accept, heartbeats, acks,
//! messages and the drain signal.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corral_proto::channel::{self, Frame, Lines, Message, PROTOCOL_VERSION};
use corral_proto::env;
use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// How long to wait for the supervisor's welcome before serving the shared way.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(2);

/// How the worker starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Treat SIGTERM as the signal to drain (corral's default stop signal).
    pub sigterm: bool,
    /// Heartbeat interval; corral kills a worker whose heartbeats stop.
    pub heartbeat: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sigterm: true,
            heartbeat: Some(Duration::from_secs(1)),
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no listener to serve on: run this program under corral with --listen")]
    NoListeners,
    #[error(transparent)]
    Listeners(#[from] crate::ListenersError),
    #[error("{var} is not a usable fd: {value:?}")]
    Channel { var: &'static str, value: String },
    #[error("cannot set up the worker")]
    Io(#[from] io::Error),
}

/// A message from the supervisor: a broadcast of another worker (`from` is its slot) or
/// a message from the supervisor or the user (`from` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub from: Option<usize>,
    pub data: serde_json::Value,
}

struct Inner {
    out: Option<mpsc::UnboundedSender<Vec<u8>>>,
    shutdown: watch::Sender<bool>,
    active: AtomicU64,
    requests: AtomicU64,
    /// Connections taken off the channel, in all.
    received: AtomicU64,
    /// Connections were taken off the channel: ack now.
    taken: Notify,
    /// Connections finished: report the new count soon.
    dirty: Notify,
}

impl Inner {
    fn send(&self, message: &Message) {
        if let Some(out) = &self.out {
            let _ = out.send(channel::encode(message));
        }
    }
}

enum Source {
    Dispatched(tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection>>),
    Shared(Vec<Listener>),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A worker process's side of corral. See the crate docs.
pub struct Worker {
    inner: Arc<Inner>,
    source: Source,
    messages: Mutex<Option<mpsc::UnboundedReceiver<Incoming>>>,
    slot: Option<usize>,
    names: Vec<String>,
}

impl Worker {
    /// Takes over the listeners and the channel corral passed, with default [`Options`].
    pub async fn start() -> Result<Worker, StartError> {
        Worker::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<Worker, StartError> {
        let mut inherited = crate::listeners()?;
        let names = inherited.iter().map(|l| l.name.clone()).collect();
        let slot = std::env::var(env::CORRAL_WORKER_ID)
            .ok()
            .and_then(|s| s.parse().ok());
        let (shutdown, _) = watch::channel(false);
        let (messages_tx, messages_rx) = mpsc::unbounded_channel();
        let mut inner = Inner {
            out: None,
            shutdown,
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            received: AtomicU64::new(0),
            taken: Notify::new(),
            dirty: Notify::new(),
        };
        let channel = take_channel_fd()?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        if channel.is_some() {
            inner.out = Some(out_tx);
        }
        let inner = Arc::new(inner);
        if options.sigterm {
            tokio::spawn(watch_sigterm(inner.clone()));
        }
        let mut source = None;
        if let Some(fd) = channel {
            let fd = Arc::new(register(fd)?);
            tokio::spawn(write_loop(fd.clone(), out_rx));
            inner.send(&Message::Hello {
                version: PROTOCOL_VERSION,
                dispatch: true,
                heartbeat_ms: options.heartbeat.map(|h| h.as_millis() as u64),
                node: false,
            });
            let (welcome_tx, welcome_rx) = oneshot::channel();
            let (conns_tx, conns_rx) = mpsc::unbounded_channel();
            let reader = Reader {
                fd,
                inner: inner.clone(),
                welcome: Some(welcome_tx),
                conns: Some(conns_tx),
                messages: messages_tx,
            };
            tokio::spawn(reader.run());
            let dispatched = matches!(
                tokio::time::timeout(WELCOME_TIMEOUT, welcome_rx).await,
                Ok(Ok(true))
            );
            if dispatched {
                // corral accepts for us now; our copies of the listeners only cost fds.
                drop(std::mem::take(&mut inherited));
                source = Some(Source::Dispatched(tokio::sync::Mutex::new(conns_rx)));
            }
            if let Some(every) = options.heartbeat {
                tokio::spawn(heartbeat_loop(inner.clone(), every));
            }
            tokio::spawn(ack_loop(inner.clone()));
        }
        let source = match source {
            Some(source) => source,
            None if inherited.is_empty() => return Err(StartError::NoListeners),
            None => Source::Shared(
                inherited
                    .into_iter()
                    .map(|l| into_listener(l.fd))
                    .collect::<io::Result<_>>()?,
            ),
        };
        Ok(Worker {
            inner,
            source,
            messages: Mutex::new(Some(messages_rx)),
            slot,
            names,
        })
    }

    /// The worker's stable slot (`CORRAL_WORKER_ID`).
    pub fn slot(&self) -> Option<usize> {
        self.slot
    }

    /// The names of the listeners corral passed (`LISTEN_FDNAMES`), in order.
    pub fn listener_names(&self) -> &[String] {
        &self.names
    }

    /// Whether connections are handed over by corral (rather than accepted from the
    /// shared socket).
    pub fn dispatched(&self) -> bool {
        matches!(self.source, Source::Dispatched(_))
    }

    /// The next connection, or `None` once the worker should drain: stop accepting,
    /// finish what it has. Connections corral handed over before the stop are all
    /// returned first.
    pub async fn accept(&self) -> Option<Connection> {
        match &self.source {
            Source::Dispatched(conns) => conns.lock().await.recv().await,
            Source::Shared(listeners) => {
                let mut shutdown = self.inner.shutdown.subscribe();
                loop {
                    if *shutdown.borrow_and_update() {
                        return None;
                    }
                    tokio::select! {
                        accepted = accept_any(listeners) => match accepted {
                            Ok(stream) => return Some(Connection::new(stream, &self.inner)),
                            // Out of fds or a connection reset before accept: try again
                            // shortly rather than spin.
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        },
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Tells corral this worker serves requests.
    pub fn ready(&self) {
        if self.inner.out.is_some() {
            self.inner.send(&Message::Ready {});
        } else {
            let _ = crate::ready();
        }
    }

    /// Resolves when the worker should drain (SIGTERM or corral's shutdown message).
    pub async fn shutdown(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Becomes `true` when the worker should drain.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Counts one handled request (reported in heartbeats).
    pub fn request_done(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A cheap handle that counts requests, for code that outlives a borrow of the worker.
    pub fn request_counter(&self) -> RequestCounter {
        RequestCounter(self.inner.clone())
    }

    /// Sends a user message to the supervisor (shown in its output and events).
    pub fn send(&self, data: &serde_json::Value) {
        if let Some(out) = &self.inner.out {
            let _ = out.send(channel::encode_user(data));
        }
    }

    /// Sends `data` to every other worker of the app.
    pub fn broadcast(&self, data: serde_json::Value) {
        self.inner.send(&Message::Broadcast { data });
    }

    /// Messages from other workers and the supervisor. Can be taken once.
    pub fn messages(&self) -> Option<mpsc::UnboundedReceiver<Incoming>> {
        self.messages.lock().expect("messages lock").take()
    }
}

fn take_channel_fd() -> Result<Option<OwnedFd>, StartError> {
    let Ok(value) = std::env::var(env::CORRAL_CHANNEL_FD) else {
        return Ok(None);
    };
    let bad = || StartError::Channel {
        var: env::CORRAL_CHANNEL_FD,
        value: value.clone(),
    };
    let fd: RawFd = value.trim().parse().map_err(|_| bad())?;
    // SAFETY: F_GETFD only queries the fd table.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad());
    }
    // SAFETY: as in `listeners`: open, and owned by nothing else in this process.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        std::env::remove_var(env::CORRAL_CHANNEL_FD);
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(fd.as_raw_fd())?;
    // SAFETY: the AsyncFd owns the fd, so it stays open and the same for its life.
    unsafe {
        AsyncFd::register_with_interest(
            fd,
            tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
        )
    }
    .map_err(|e| e.into_parts().1)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_unix_socket(fd: RawFd) -> bool {
    use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike, SockaddrStorage};
    getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|a| a.family())
        == Some(AddressFamily::Unix)
}

fn into_listener(fd: OwnedFd) -> io::Result<Listener> {
    if is_unix_socket(fd.as_raw_fd()) {
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(Listener::Unix(UnixListener::from_std(std)?))
    } else {
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(std)?))
    }
}

async fn accept_any(listeners: &[Listener]) -> io::Result<Stream> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            let polled = match l {
                Listener::Tcp(l) => l.poll_accept(cx).map_ok(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
                Listener::Unix(l) => l.poll_accept(cx).map_ok(|(s, _)| Stream::Unix(s)),
            };
            if polled.is_ready() {
                return polled;
            }
        }
        Poll::Pending
    })
    .await
}

async fn watch_sigterm(inner: Arc<Inner>) {
    let kind = tokio::signal::unix::SignalKind::terminate();
    let Ok(mut term) = tokio::signal::unix::signal(kind) else {
        return;
    };
    term.recv().await;
    inner.shutdown.send_replace(true);
}

async fn write_loop(fd: Arc<AsyncFd<OwnedFd>>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
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

async fn heartbeat_loop(inner: Arc<Inner>, every: Duration) {
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

fn own_rss() -> u64 {
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
async fn ack_loop(inner: Arc<Inner>) {
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
const ACTIVE_EVERY: Duration = Duration::from_millis(20);

/// Reads the channel: welcome, handed-over connections, messages, shutdown.
struct Reader {
    fd: Arc<AsyncFd<OwnedFd>>,
    inner: Arc<Inner>,
    welcome: Option<oneshot::Sender<bool>>,
    conns: Option<mpsc::UnboundedSender<Connection>>,
    messages: mpsc::UnboundedSender<Incoming>,
}

impl Reader {
    async fn run(mut self) {
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
                    for _ in 0..count {
                        let Some(fd) = fds.pop_front() else { break };
                        self.inner.received.fetch_add(1, Ordering::AcqRel);
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
fn recv(fd: RawFd, buf: &mut [u8], fds: &mut VecDeque<OwnedFd>) -> io::Result<usize> {
    // SAFETY: `fd` is the channel, open for the reader's whole life.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let received = corral_proto::fdpass::recv(fd, buf)?;
    fds.extend(received.fds);
    Ok(received.len)
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn from_fd(fd: OwnedFd) -> io::Result<Stream> {
        if is_unix_socket(fd.as_raw_fd()) {
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            Ok(Stream::Unix(UnixStream::from_std(std)?))
        } else {
            let std = std::net::TcpStream::from(fd);
            std.set_nonblocking(true)?;
            let _ = std.set_nodelay(true);
            Ok(Stream::Tcp(TcpStream::from_std(std)?))
        }
    }
}

/// Counts handled requests for the heartbeats; see [`Worker::request_counter`].
#[derive(Clone)]
pub struct RequestCounter(Arc<Inner>);

impl RequestCounter {
    pub fn add(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client connection, TCP or Unix. Counts as active until dropped.
pub struct Connection {
    stream: Stream,
    inner: Arc<Inner>,
}

impl Connection {
    fn new(stream: Stream, inner: &Arc<Inner>) -> Self {
        inner.active.fetch_add(1, Ordering::AcqRel);
        Connection {
            stream,
            inner: inner.clone(),
        }
    }

    /// The client's address (TCP only).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.stream {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
        self.inner.dirty.notify_one();
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
