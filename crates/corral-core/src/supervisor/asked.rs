//! Ports an app asks for at run time — Node's `listen(port)` in cluster mode with no
//! configured listener — bound once by corral, kept for the app's life (reloads and
//! crashes included) and handed to every worker that asks, as Node's cluster primary
//! does for its workers.

use std::os::fd::RawFd;

use corral_proto::channel::BindFailure;

use crate::listen::{self, Listener};
use crate::spec::ListenAddr;

/// The listeners bound for workers that asked.
#[derive(Default)]
pub(super) struct AskedPorts {
    bound: Vec<(ListenAddr, Listener)>,
}

/// What asking for a port came to.
pub(super) enum Asked {
    /// Bound now, for the first worker that asked: `local` is where it listens.
    New {
        fd: RawFd,
        local: String,
    },
    /// Bound before, for another worker or an earlier one.
    Known {
        fd: RawFd,
    },
    Failed {
        addr: String,
        failure: BindFailure,
    },
}

/// The address Node means by `listen(port[, host])`: no host (or `::`) is every address
/// on both stacks; otherwise the IP given (`localhost` is 127.0.0.1).
pub(super) fn address(port: u16, host: Option<&str>) -> Option<ListenAddr> {
    match host {
        None | Some("" | "::") => Some(ListenAddr::AnyPort(port)),
        Some(host) if host.contains(':') => format!("[{host}]:{port}").parse().ok(),
        Some(host) => format!("{host}:{port}").parse().ok(),
    }
}

impl AskedPorts {
    pub(super) fn ask(&mut self, addr: ListenAddr) -> Asked {
        if let Some((_, listener)) = self.bound.iter().find(|(a, _)| *a == addr) {
            return Asked::Known {
                fd: listener.raw_fd(),
            };
        }
        let name = format!("asked{}", self.bound.len());
        match listen::bind(name, &addr, false) {
            Ok(listener) => {
                let fd = listener.raw_fd();
                let local = listener.local.to_string();
                self.bound.push((addr, listener));
                Asked::New { fd, local }
            }
            Err(e) => Asked::Failed {
                addr: addr.to_string(),
                failure: BindFailure {
                    code: errno_name(e.error.raw_os_error().unwrap_or(0)).to_owned(),
                    errno: -e.error.raw_os_error().unwrap_or(0),
                    message: e.to_string(),
                },
            },
        }
    }
}

/// The `code` Node gives a listen error.
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EACCES => "EACCES",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        _ => "EINVAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_bound_once_and_shared_by_every_asker() {
        let mut asked = AskedPorts::default();
        let addr = address(0, Some("127.0.0.1")).expect("an IP host");
        let first = match asked.ask(addr.clone()) {
            Asked::New { fd, local } => {
                assert!(local.starts_with("127.0.0.1:"), "{local}");
                fd
            }
            _ => panic!("first ask binds"),
        };
        match asked.ask(addr) {
            Asked::Known { fd } => assert_eq!(fd, first),
            _ => panic!("second ask reuses"),
        }
    }

    #[test]
    fn a_port_in_use_fails_as_node_says_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut asked = AskedPorts::default();
        match asked.ask(address(port, Some("127.0.0.1")).unwrap()) {
            Asked::Failed { failure, .. } => {
                assert_eq!(failure.code, "EADDRINUSE");
                assert_eq!(failure.errno, -libc::EADDRINUSE);
            }
            _ => panic!("the port is taken"),
        }
    }

    #[test]
    fn hosts_mean_what_node_means() {
        assert_eq!(address(80, None), Some(ListenAddr::AnyPort(80)));
        assert_eq!(address(80, Some("::")), Some(ListenAddr::AnyPort(80)));
        assert_eq!(
            address(80, Some("::1")),
            Some(ListenAddr::Tcp("[::1]:80".parse().unwrap()))
        );
        assert_eq!(address(80, Some("example.com")), None);
    }
}
