//! Ports an app asks for at run time — Node's `listen(port)` in cluster mode with no
//! configured listener — bound once by corral, kept for the app's life (reloads and
//! crashes included) and handed to every worker that asks, as Node's cluster primary
//! does for its workers.

use std::os::fd::RawFd;

use corral_proto::channel::BindFailure;

use super::slots::SlotSockets;
use crate::listen::{self, Listener};
use crate::spec::ListenAddr;

/// The listeners bound for workers that asked.
#[derive(Default)]
pub(super) struct AskedPorts {
    bound: Vec<AskedPort>,
    /// Reuseport mode: each asked port is a group with a socket per slot.
    reuseport: bool,
    /// How many listeners the app has configured (asked ports are numbered after them).
    configured: u32,
    /// Addresses workers listened on that corral serves on its own sockets of the same
    /// port instead, already reported.
    served_on: std::collections::BTreeSet<String>,
}

struct AskedPort {
    addr: ListenAddr,
    listener: Listener,
    slots: SlotSockets,
}

/// What asking for a port came to.
pub(super) enum Asked {
    /// Bound now, for the first worker that asked: `local` is where it listens.
    New {
        fd: RawFd,
        listener: u32,
        local: String,
    },
    /// Bound before, for another worker or an earlier one.
    Known {
        fd: RawFd,
        listener: u32,
    },
    /// The app asked for another address of a port corral bound for it before (and
    /// can't bind beside it): served on that one, at `on`.
    ServedOn {
        fd: RawFd,
        listener: u32,
        on: String,
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
    /// No port asked for yet; `reuseport` gives each asked port a socket per slot, and
    /// asked ports are numbered after the app's `configured` listeners.
    pub(super) fn new(reuseport: bool, configured: u32) -> Self {
        AskedPorts {
            bound: Vec::new(),
            reuseport,
            configured,
            served_on: Default::default(),
        }
    }

    /// Whether `asked` is reported for the first time (a worker listened there and is
    /// served on corral's sockets of that port).
    pub(super) fn first_served_on(&mut self, asked: &str) -> bool {
        self.served_on.insert(asked.to_owned())
    }

    /// The socket for the worker of `slot` on `addr`: its slot's own in reuseport mode
    /// (`now` tells a new group which slots have workers), else the one every worker shares.
    pub(super) fn ask(&mut self, addr: ListenAddr, slot: usize, now: &SlotSockets) -> Asked {
        if let Some(i) = self.bound.iter().position(|a| a.addr == addr) {
            return match self.slot_fd(i, slot) {
                Ok(fd) => Asked::Known {
                    fd,
                    listener: self.configured + i as u32,
                },
                Err(error) => failed(&addr, error),
            };
        }
        let name = format!("asked{}", self.bound.len());
        match listen::bind(name, &addr, self.reuseport) {
            Ok(listener) => {
                let index = self.configured + self.bound.len() as u32;
                let local = listener.local.to_string();
                let mut slots = SlotSockets::joining(&listener, index, now);
                // Steering that fails leaves the kernel's hash, as for configured ports.
                let _ = slots.steer_now();
                self.bound.push(AskedPort {
                    addr: addr.clone(),
                    listener,
                    slots,
                });
                match self.slot_fd(self.bound.len() - 1, slot) {
                    Ok(fd) => Asked::New {
                        fd,
                        listener: index,
                        local,
                    },
                    Err(error) => failed(&addr, error),
                }
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AddrInUse => {
                // Most likely against corral's own socket of that port, for this app.
                match self.bound.iter().position(|a| a.addr.port() == addr.port()) {
                    Some(i) => match self.slot_fd(i, slot) {
                        Ok(fd) => Asked::ServedOn {
                            fd,
                            listener: self.configured + i as u32,
                            on: self.bound[i].listener.local.to_string(),
                        },
                        Err(error) => failed(&addr, error),
                    },
                    None => failed(&addr, e.error),
                }
            }
            Err(e) => failed(&addr, e.error),
        }
    }

    fn slot_fd(&mut self, i: usize, slot: usize) -> std::io::Result<RawFd> {
        let port = &mut self.bound[i];
        if !port.slots.enabled() {
            return Ok(port.listener.raw_fd());
        }
        let fd = port.slots.fds_for(slot)?[0];
        // Steering that fails leaves the kernel's hash, as for configured ports.
        let _ = port.slots.asked_by(slot);
        Ok(fd)
    }

    /// The slot sockets of every asked port (reuseport mode), to keep in step with the
    /// configured listeners'.
    pub(super) fn groups(&mut self) -> impl Iterator<Item = &mut SlotSockets> {
        self.bound.iter_mut().map(|p| &mut p.slots)
    }
}

/// The ports asked for, as they cross `exec` (`crate::handover`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct AskedState {
    bound: Vec<(ListenAddr, listen::ListenerState, super::slots::SlotsState)>,
    reuseport: bool,
    configured: u32,
}

impl AskedPorts {
    /// Everything, for the binary that takes over: the listeners are let go here (their
    /// Unix paths stay for the new owner).
    pub(super) fn hand_over(self) -> std::io::Result<AskedState> {
        let state = self.snapshot()?;
        self.bound.into_iter().for_each(|p| p.listener.release());
        Ok(state)
    }

    /// The same, as duplicates, while the ports stay in use here.
    pub(super) fn snapshot(&self) -> std::io::Result<AskedState> {
        let bound = self
            .bound
            .iter()
            .map(|p| Ok((p.addr.clone(), p.listener.snapshot()?, p.slots.hand_over()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(AskedState {
            bound,
            reuseport: self.reuseport,
            configured: self.configured,
        })
    }

    pub(super) fn resume(state: AskedState) -> AskedPorts {
        let bound = state
            .bound
            .into_iter()
            .map(|(addr, listener, slots)| {
                let listener = Listener::resume(listener);
                let slots = SlotSockets::resume(std::slice::from_ref(&listener), slots);
                AskedPort {
                    addr,
                    listener,
                    slots,
                }
            })
            .collect();
        AskedPorts {
            bound,
            reuseport: state.reuseport,
            configured: state.configured,
            served_on: Default::default(),
        }
    }
}

/// A bind of `addr` (the group's first socket, or a slot's) that failed with `error`,
/// worded as every bind error is.
fn failed(addr: &ListenAddr, error: std::io::Error) -> Asked {
    let errno = error.raw_os_error().unwrap_or(0);
    let error = listen::BindError {
        addr: addr.clone(),
        error,
    };
    Asked::Failed {
        addr: addr.to_string(),
        failure: BindFailure {
            code: errno_name(errno).to_owned(),
            errno: -errno,
            message: error.to_string(),
        },
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
        let now = SlotSockets::new(&[]);
        let addr = address(0, Some("127.0.0.1")).expect("an IP host");
        let first = match asked.ask(addr.clone(), 0, &now) {
            Asked::New { fd, local, .. } => {
                assert!(local.starts_with("127.0.0.1:"), "{local}");
                fd
            }
            _ => panic!("first ask binds"),
        };
        match asked.ask(addr, 1, &now) {
            Asked::Known { fd, .. } => assert_eq!(fd, first),
            _ => panic!("second ask reuses"),
        }
    }

    #[test]
    fn a_port_in_use_fails_as_node_says_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut asked = AskedPorts::default();
        match asked.ask(
            address(port, Some("127.0.0.1")).unwrap(),
            0,
            &SlotSockets::new(&[]),
        ) {
            Asked::Failed { failure, .. } => {
                assert_eq!(failure.code, "EADDRINUSE");
                assert_eq!(failure.errno, -libc::EADDRINUSE);
            }
            _ => panic!("the port is taken"),
        }
    }

    #[test]
    fn in_reuseport_mode_each_slot_gets_its_own_socket_of_an_asked_port() {
        let mut asked = AskedPorts::new(true, 2);
        let now = SlotSockets::new(&[]);
        let addr = address(0, Some("127.0.0.1")).expect("an IP host");
        let (zero, index) = match asked.ask(addr.clone(), 0, &now) {
            Asked::New { fd, listener, .. } => (fd, listener),
            _ => panic!("first ask binds"),
        };
        assert_eq!(index, 2, "numbered after the configured listeners");
        match asked.ask(addr, 1, &now) {
            Asked::Known { fd, listener } => {
                assert_ne!(fd, zero, "slot 1 has its own socket");
                assert_eq!(listener, 2);
            }
            _ => panic!("second ask finds the port"),
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
