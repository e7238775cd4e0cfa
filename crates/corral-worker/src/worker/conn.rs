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
}

impl Connection {
    pub(super) fn new(stream: Stream, inner: &Arc<Inner>) -> Self {
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
