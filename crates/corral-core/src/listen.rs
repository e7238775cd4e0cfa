//! Binds the app's listening sockets, once, before any worker starts; they live as long as corral.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::spec::{ListenAddr, ListenSpec};

/// Kernel caps this at net.core.somaxconn; ask for plenty so bursts queue instead of failing.
const BACKLOG: i32 = 4096;

/// A bound, listening socket owned by the supervisor.
#[derive(Debug)]
pub struct Listener {
    /// The name for `LISTEN_FDNAMES`.
    pub name: String,
    /// What the user asked for.
    pub requested: ListenAddr,
    /// What was bound (with the real port when 0 was asked for).
    pub local: ListenAddr,
    /// The first socket of a SO_REUSEPORT group corral owns (see `os::reuseport`).
    pub reuseport: bool,
    socket: OwnedFd,
    unix_path: Option<PathBuf>,
}

/// Why a listener could not be bound. The OS error is part of the message (in words,
/// with a hint) rather than a `source`, so that it is not printed twice.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {}{}", reason(error), hint(error, addr))]
pub struct BindError {
    pub addr: ListenAddr,
    pub error: io::Error,
}

fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        _ => {
            let text = e.to_string();
            // io::Error's Display appends " (os error N)"; the kind alone reads better.
            text.split(" (os error")
                .next()
                .unwrap_or(&text)
                .to_lowercase()
        }
    }
}

fn hint(e: &io::Error, addr: &ListenAddr) -> String {
    match (e.kind(), addr) {
        (io::ErrorKind::AddrInUse, ListenAddr::Unix(path)) => format!(
            " (another process serves {}; stop it or pick another path)",
            path.display()
        ),
        (io::ErrorKind::AddrInUse, _) => {
            " (another process listens there; stop it or pick another port)".into()
        }
        (io::ErrorKind::PermissionDenied, ListenAddr::Unix(_)) => {
            " (check the directory's permissions)".into()
        }
        (io::ErrorKind::PermissionDenied, _) => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)".into()
        }
        (io::ErrorKind::AddrNotAvailable, _) => " (no network interface has that address)".into(),
        _ => String::new(),
    }
}

impl Listener {
    /// A socket bound by someone else (systemd) and handed to corral: kept, never
    /// unlinked.
    pub(crate) fn adopted(
        name: String,
        requested: ListenAddr,
        local: ListenAddr,
        socket: OwnedFd,
    ) -> Listener {
        Listener {
            name,
            requested,
            local,
            reuseport: false,
            socket,
            unix_path: None,
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The TCP port, for `PORT`.
    pub fn port(&self) -> Option<u16> {
        match &self.local {
            ListenAddr::AnyPort(port) => Some(*port),
            ListenAddr::Tcp(addr) => Some(addr.port()),
            ListenAddr::Unix(_) => None,
        }
    }
}

/// A listener as it crosses `exec` (`crate::handover`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ListenerState {
    name: String,
    requested: ListenAddr,
    local: ListenAddr,
    reuseport: bool,
    unix_path: Option<PathBuf>,
    fd: crate::handover::Fd,
}

impl Listener {
    /// What the next binary needs to go on listening with this very socket. The Unix
    /// socket's path stays: the new owner removes it when the app stops.
    pub fn hand_over(self) -> io::Result<ListenerState> {
        let state = self.snapshot()?;
        self.release();
        Ok(state)
    }

    /// Closes this copy of a socket whose [`Listener::snapshot`] lives on elsewhere:
    /// its Unix path stays for the new owner.
    pub fn release(mut self) {
        self.unix_path = None;
    }

    /// The same as [`Listener::hand_over`], as a duplicate, while this one stays in use.
    pub fn snapshot(&self) -> io::Result<ListenerState> {
        Ok(ListenerState {
            name: self.name.clone(),
            requested: self.requested.clone(),
            local: self.local.clone(),
            reuseport: self.reuseport,
            unix_path: self.unix_path.clone(),
            fd: crate::handover::Fd::dup(self.socket.as_fd())?,
        })
    }

    /// The listener a [`Listener::hand_over`] described.
    pub fn resume(state: ListenerState) -> Listener {
        Listener {
            name: state.name,
            requested: state.requested,
            local: state.local,
            reuseport: state.reuseport,
            socket: state.fd.0,
            unix_path: state.unix_path,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds every listener or none: on the first failure, the ones already bound are closed.
/// `reuseport` makes each TCP listener the first of a SO_REUSEPORT group that corral
/// fills with a socket per slot (`--balance reuseport`).
pub fn bind_all(specs: &[ListenSpec], reuseport: bool) -> Result<Vec<Listener>, BindError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| bind(name_of(i, spec), &spec.addr, reuseport))
        .collect()
}

/// The name for `LISTEN_FDNAMES` of the `i`th listener.
pub fn name_of(i: usize, spec: &ListenSpec) -> String {
    spec.name.clone().unwrap_or_else(|| format!("listen{i}"))
}

/// Binds one listener.
pub fn bind(name: String, addr: &ListenAddr, reuseport: bool) -> Result<Listener, BindError> {
    let err = |error| BindError {
        addr: addr.clone(),
        error,
    };
    let (socket, local, unix_path) = match addr {
        ListenAddr::AnyPort(port) => {
            let (socket, local) = bind_any(*port, reuseport).map_err(err)?;
            (socket, local, None)
        }
        ListenAddr::Tcp(sa) => {
            let socket = bind_tcp(*sa, true, reuseport).map_err(err)?;
            let local = local_tcp(&socket).map_err(err)?;
            (socket, ListenAddr::Tcp(local), None)
        }
        ListenAddr::Unix(path) => {
            let socket = bind_unix(path).map_err(err)?;
            (socket, addr.clone(), Some(path.clone()))
        }
    };
    Ok(Listener {
        name,
        requested: addr.clone(),
        local,
        reuseport: reuseport && unix_path.is_none(),
        socket: socket.into(),
        unix_path,
    })
}

/// A bare port: dual-stack `[::]`, or `0.0.0.0` on hosts without IPv6.
fn bind_any(port: u16, reuseport: bool) -> io::Result<(Socket, ListenAddr)> {
    let v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let socket = match bind_tcp(v6, false, reuseport) {
        Ok(socket) => socket,
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            bind_tcp(SocketAddr::from(([0, 0, 0, 0], port)), false, reuseport)?
        }
        Err(e) => return Err(e),
    };
    let local = local_tcp(&socket)?;
    Ok((socket, ListenAddr::AnyPort(local.port())))
}

fn bind_tcp(addr: SocketAddr, v6_only: bool, reuseport: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
    }
    if reuseport && addr.port() != 0 {
        // A SO_REUSEPORT bind would quietly join another server's group on this port
        // (same user): a plain bind first says "in use" as without reuseport. (A server
        // that binds between the two joins ours; it gets no connections from corral's
        // steering, but this is not proof against it.)
        drop(bind_tcp(addr, v6_only, false)?);
    }
    socket.set_reuse_port(reuseport)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

fn local_tcp(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))
}

fn bind_unix(path: &std::path::Path) -> io::Result<Socket> {
    remove_stale_socket(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// A socket file nobody accepts on is left over from an earlier run: remove it. One
/// that accepts belongs to a live server: refuse. Anything else is not ours to delete.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket exists at that path",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::ErrorKind::AddrInUse.into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenSpec {
        s.parse().unwrap()
    }

    fn bind_all_plain(specs: &[ListenSpec]) -> Result<Vec<Listener>, BindError> {
        bind_all(specs, false)
    }

    #[test]
    fn a_reuseport_listener_still_finds_a_port_in_use() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = bind_all(&[spec(&addr)], true).unwrap_err();
        assert_eq!(err.error.kind(), io::ErrorKind::AddrInUse);
        let first = bind_all(&[spec("127.0.0.1:0")], true).unwrap();
        assert!(first[0].reuseport);
        let again = format!("127.0.0.1:{}", first[0].port().unwrap());
        let err = bind_all(&[spec(&again)], true).unwrap_err();
        assert_eq!(
            err.error.kind(),
            io::ErrorKind::AddrInUse,
            "not joined to ours"
        );
    }

    #[test]
    fn binds_port_zero_and_reports_the_real_port() {
        let listeners = bind_all_plain(&[spec("127.0.0.1:0")]).unwrap();
        assert_ne!(listeners[0].port(), Some(0));
        assert_eq!(listeners[0].name, "listen0");
    }

    #[test]
    fn port_in_use_is_a_clear_error() {
        let first = bind_all_plain(&[spec("127.0.0.1:0")]).unwrap();
        let taken = format!("127.0.0.1:{}", first[0].port().unwrap());
        let err = bind_all_plain(&[spec(&taken)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot listen on {taken}: address already in use (another process listens there; stop it or pick another port)")
        );
    }

    #[test]
    fn unix_socket_replaces_a_stale_file_and_removes_it_on_drop() {
        let dir = std::env::temp_dir().join(format!("corral-listen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "std leaves the socket file behind");
        let listeners = bind_all_plain(&[spec(&format!("unix:{}", path.display()))]).unwrap();
        let err = bind_all_plain(&[spec(&format!("unix:{}", path.display()))]).unwrap_err();
        assert_eq!(err.error.kind(), io::ErrorKind::AddrInUse);
        drop(listeners);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_to_replace_a_regular_file() {
        let path = std::env::temp_dir().join(format!("corral-not-a-socket-{}", std::process::id()));
        std::fs::write(&path, b"data").unwrap();
        let err = bind_all_plain(&[spec(&format!("unix:{}", path.display()))]).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
    }
}
