//! Sockets handed to corral itself by systemd (socket activation: `LISTEN_FDS` for our
//! own pid), taken over instead of bound, so `systemctl restart corral` never closes the
//! port: connections that arrive while corral restarts wait in the socket's queue.

use std::os::fd::{FromRawFd, OwnedFd};

use corral_proto::env;
use socket2::SockRef;

use crate::listen::{self, BindError, Listener};
use crate::spec::{ListenAddr, ListenSpec};

/// One socket systemd passed.
#[derive(Debug)]
pub struct Inherited {
    fd: OwnedFd,
    /// From `LISTEN_FDNAMES`.
    name: Option<String>,
    local: ListenAddr,
}

/// The listening sockets systemd passed to this process, taken over (close-on-exec, so
/// workers only get them as corral hands them on). Empty when `LISTEN_PID` is not ours.
pub fn inherited() -> Vec<Inherited> {
    let ours = std::env::var(env::LISTEN_PID).ok() == Some(std::process::id().to_string());
    let count: i32 = match std::env::var(env::LISTEN_FDS)
        .ok()
        .and_then(|n| n.parse().ok())
    {
        Some(n) if ours && n > 0 => n,
        _ => return Vec::new(),
    };
    let names: Vec<String> = std::env::var(env::LISTEN_FDNAMES)
        .unwrap_or_default()
        .split(':')
        .map(str::to_owned)
        .collect();
    (0..count)
        .filter_map(|i| {
            let raw = env::LISTEN_FDS_START + i;
            // SAFETY: systemd's protocol gives this process fds 3..3+LISTEN_FDS; nothing
            // else in corral has taken them (this runs before anything opens a file).
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let _ = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            let local = local_of(&fd)?;
            let name = names.get(i as usize).filter(|n| !n.is_empty()).cloned();
            Some(Inherited { fd, name, local })
        })
        .collect()
}

fn local_of(fd: &OwnedFd) -> Option<ListenAddr> {
    let addr = SockRef::from(fd).local_addr().ok()?;
    if let Some(tcp) = addr.as_socket() {
        return Some(ListenAddr::Tcp(tcp));
    }
    addr.as_pathname().map(|p| ListenAddr::Unix(p.to_owned()))
}

impl Inherited {
    /// Whether this socket is the one `spec` asks for: by name (`--listen NAME=ADDR`
    /// and systemd's `FileDescriptorName=`), else by address.
    fn serves(&self, spec: &ListenSpec) -> bool {
        if let (Some(want), Some(have)) = (&spec.name, &self.name) {
            return want == have;
        }
        match (&spec.addr, &self.local) {
            (ListenAddr::AnyPort(port), ListenAddr::Tcp(local)) => {
                local.port() == *port && local.ip().is_unspecified()
            }
            (wanted, local) => wanted == local,
        }
    }

    /// What it listens on.
    pub fn local(&self) -> &ListenAddr {
        &self.local
    }
}

/// Every listener of `specs`: taken from `inherited` when systemd passed it, bound
/// otherwise. What is taken is removed from `inherited`.
pub fn bind_or_adopt(
    specs: &[ListenSpec],
    inherited: &mut Vec<Inherited>,
    reuseport: bool,
) -> Result<Vec<Listener>, BindError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = listen::name_of(i, spec);
            match inherited.iter().position(|s| s.serves(spec)) {
                Some(at) => {
                    let socket = inherited.remove(at);
                    Ok(Listener::adopted(
                        name,
                        spec.addr.clone(),
                        socket.local,
                        socket.fd,
                    ))
                }
                None => listen::bind(name, &spec.addr, reuseport),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(listener: &std::net::TcpListener, name: Option<&str>) -> Inherited {
        let fd = OwnedFd::from(listener.try_clone().unwrap());
        Inherited {
            local: local_of(&fd).unwrap(),
            fd,
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn a_passed_socket_is_taken_by_address_or_name_and_the_rest_are_bound() {
        let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = passed.local_addr().unwrap();
        let mut sockets = vec![inherited(&passed, None)];
        let specs: Vec<ListenSpec> = vec![
            at.to_string().parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
        let listeners = bind_or_adopt(&specs, &mut sockets, false).unwrap();
        assert!(sockets.is_empty(), "taken");
        assert_eq!(listeners[0].local, ListenAddr::Tcp(at));
        assert_ne!(listeners[1].local, ListenAddr::Tcp(at));
        let mut named = vec![inherited(&passed, Some("web"))];
        let specs: Vec<ListenSpec> = vec!["web=[::1]:1".parse().unwrap()];
        let listeners = bind_or_adopt(&specs, &mut named, false).unwrap();
        assert_eq!(
            listeners[0].local,
            ListenAddr::Tcp(at),
            "by name, whatever the address"
        );
    }
}
