//! A connection a worker serves, accepted or handed over, counted while it is open.

use super::*;

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn from_fd(fd: OwnedFd) -> io::Result<Stream> {
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
pub struct RequestCounter(pub(super) Arc<Inner>);

impl RequestCounter {
    pub fn add(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A client connection, TCP or Unix. Counts as active until dropped.
pub struct Connection {
    stream: Stream,
    inner: Arc<Inner>,
    shed: Arc<Shed>,
}

/// How a connection that has sent nothing is closed from outside to make room: its
/// next read ends (EOF), so the app's server closes it as a client that went away.
#[derive(Default)]
pub(super) struct Shed {
    closed: std::sync::atomic::AtomicBool,
    read_any: std::sync::atomic::AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Shed {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn silent(&self) -> bool {
        !self.read_any.load(Ordering::Acquire) && !self.closed.load(Ordering::Acquire)
    }
}

impl Inner {
    /// With `open` connections at the room there is, closes the oldest that has sent
    /// nothing (a slowloris, or an idle flood): a client that talks gets served instead.
    fn make_room(&self, open: u64) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if open >= self.room {
            while let Some(weak) = fresh.pop_front() {
                if let Some(shed) = weak.upgrade().filter(|s| s.silent()) {
                    shed.close();
                    break;
                }
            }
        }
        // Entries of connections that talked or ended go, so the list stays short.
        if fresh.len() as u64 >= 2 * open.max(64) {
            fresh.retain(|w| w.upgrade().is_some_and(|s| s.silent()));
        }
    }
}

impl Connection {
    pub(super) fn new(stream: Stream, inner: &Arc<Inner>) -> Self {
        let open = inner.active.fetch_add(1, Ordering::AcqRel) + 1;
        inner.make_room(open);
        let shed = Arc::new(Shed::default());
        inner
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Arc::downgrade(&shed));
        Connection {
            stream,
            inner: inner.clone(),
            shed,
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
        let this = self.get_mut();
        if this.shed.closed.load(Ordering::Acquire) {
            return Poll::Ready(Ok(())); // made room for another: an end of stream
        }
        let before = buf.filled().len();
        let polled = match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        };
        if !this.shed.read_any.load(Ordering::Relaxed) {
            match &polled {
                Poll::Ready(Ok(())) if buf.filled().len() > before => {
                    this.shed.read_any.store(true, Ordering::Release);
                }
                Poll::Pending => {
                    *this.shed.waker.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(cx.waker().clone());
                }
                _ => {}
            }
        }
        polled
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
