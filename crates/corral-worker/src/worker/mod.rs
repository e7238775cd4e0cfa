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

mod conn;
mod link;

use conn::Stream;
pub use conn::{Connection, RequestCounter};
use link::{ack_loop, heartbeat_loop, watch_sigterm, write_loop, Reader};

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
    /// Connections that have sent nothing yet, oldest first (see [`Inner::make_room`]).
    fresh: Mutex<VecDeque<std::sync::Weak<conn::Shed>>>,
    /// Open connections past which the oldest silent one is closed for a new one.
    room: u64,
}

/// Fds kept free for a new connection's arrival, the listeners, logs and the runtime:
/// a process at its fd limit cannot even receive the next connection (the kernel
/// closes it), so idle connections that never send a byte would lock everyone out.
fn room_for_connections() -> u64 {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    soft.saturating_sub(32 + soft / 16)
}

impl Inner {
    fn new(shutdown: watch::Sender<bool>) -> Inner {
        Inner {
            out: None,
            shutdown,
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            received: AtomicU64::new(0),
            taken: Notify::new(),
            dirty: Notify::new(),
            fresh: Mutex::new(VecDeque::new()),
            room: room_for_connections(),
        }
    }

    fn send(&self, message: &Message) {
        if let Some(out) = &self.out {
            let _ = out.send(channel::encode(message));
        }
    }
}

type Handed = tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection>>;

enum Source {
    Dispatched(Handed),
    /// Accepts from its own listeners; corral may still hand it connections (those left
    /// on a reuseport slot whose worker is gone).
    Shared {
        listeners: Vec<Listener>,
        handed: Handed,
    },
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
        let mut inner = Inner::new(shutdown);
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
        let (conns_tx, conns_rx) = mpsc::unbounded_channel();
        let mut conns_rx = Some(conns_rx);
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
                source = conns_rx
                    .take()
                    .map(|rx| Source::Dispatched(Handed::new(rx)));
            }
            if let Some(every) = options.heartbeat {
                tokio::spawn(heartbeat_loop(inner.clone(), every));
            }
            tokio::spawn(ack_loop(inner.clone()));
        }
        let source = match source {
            Some(source) => source,
            None if inherited.is_empty() => return Err(StartError::NoListeners),
            None => Source::Shared {
                listeners: inherited
                    .into_iter()
                    .map(|l| into_listener(l.fd))
                    .collect::<io::Result<_>>()?,
                handed: Handed::new(conns_rx.expect("taken only when dispatched")),
            },
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
            Source::Shared { listeners, handed } => {
                let mut shutdown = self.inner.shutdown.subscribe();
                loop {
                    if *shutdown.borrow_and_update() {
                        // The channel reader ends the stream after the last one corral
                        // handed over before the stop.
                        return handed.lock().await.recv().await;
                    }
                    tokio::select! {
                        Some(conn) = async { handed.lock().await.recv().await } => return Some(conn),
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
