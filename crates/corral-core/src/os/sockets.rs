//! Which listening sockets a worker's process tree holds, read from /proc: to tell a
//! worker that ignores the socket corral gave it (and binds a port of its own).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use crate::process::Pid;

/// How a worker's process tree uses corral's listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerUse {
    /// It still holds at least one of corral's listeners.
    pub holds_ours: bool,
    /// TCP sockets it listens on that corral did not give it.
    pub own: Vec<SocketAddr>,
}

/// The inode of the socket behind `fd`.
pub fn inode_of(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat fills the zeroed struct; an invalid fd makes it fail, nothing else.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st) == 0).then_some(st.st_ino)
    }
}

/// What the tree under `root` listens on, next to corral's listener `inodes`.
pub fn listener_use(root: Pid, ours: &[u64]) -> ListenerUse {
    let held: HashSet<u64> = super::memory::tree_pids(root)
        .into_iter()
        .flat_map(socket_inodes)
        .collect();
    let listening = listening_tcp();
    let mut own: Vec<SocketAddr> = held
        .iter()
        .filter(|inode| !ours.contains(inode))
        .filter_map(|inode| listening.get(inode).copied())
        .collect();
    own.sort();
    own.dedup();
    ListenerUse {
        holds_ours: ours.iter().any(|inode| held.contains(inode)),
        own,
    }
}

/// The listening TCP sockets the tree under `root` holds, by inode: corral's listeners,
/// ports corral bound at a worker's request, and the worker's own.
pub fn listening_inodes_of(root: Pid) -> Vec<u64> {
    let listening = listening_tcp();
    let mut held: Vec<u64> = super::memory::tree_pids(root)
        .into_iter()
        .flat_map(socket_inodes)
        .filter(|inode| listening.contains_key(inode))
        .collect();
    held.sort_unstable();
    held.dedup();
    held
}

fn socket_inodes(pid: Pid) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Processes of this user, other than this one, its ancestors and `except`, that hold
/// one of the sockets `inodes`. Once an app's workers and every copy corral keeps are
/// gone, what is left holding its listener escaped the worker's process group (a child
/// that called `setsid()`, a double-forking daemon) and would keep the port from the
/// next start. An ancestor holding it is the one that passed it down (systemd's socket
/// unit, a wrapper that bound it): its owner, never an escapee.
pub fn holders_of(inodes: &[u64], except: &[Pid]) -> Vec<Pid> {
    use std::os::unix::fs::MetadataExt;
    if inodes.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as Pid;
    let ancestors = ancestors_of(me);
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Pid>().ok())
        .filter(|&pid| pid != me && !except.contains(&pid) && !ancestors.contains(&pid))
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid))
        .filter(|&pid| socket_inodes(pid).iter().any(|i| inodes.contains(i)))
        .collect()
}

/// The parent of `pid`, its parent, and so on up to PID 1.
fn ancestors_of(pid: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    let mut at = pid;
    while let Some(parent) = super::memory::parent_of(at) {
        let Ok(parent) = Pid::try_from(parent) else {
            break;
        };
        if parent <= 0 || out.contains(&parent) {
            break;
        }
        out.push(parent);
        at = parent;
    }
    out
}

/// A process [`kill_holders`] found holding a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped {
    pub pid: Pid,
    pub command: String,
    pub killed: bool,
}

impl std::fmt::Display for Escaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pid {} (`{}`), which held its listener after its workers stopped: a worker's child that left its process group",
            if self.killed { "killed" } else { "could not kill" },
            self.pid,
            self.command
        )
    }
}

/// SIGKILLs each of [`holders_of`]`(inodes, except)`, and says who they were.
pub fn kill_holders(inodes: &[u64], except: &[Pid]) -> Vec<Escaped> {
    holders_of(inodes, except)
        .into_iter()
        .map(|pid| {
            let command = super::memory::command_line(pid);
            let killed = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok();
            Escaped {
                pid,
                command,
                killed,
            }
        })
        .collect()
}

/// Listening TCP sockets (IPv4 and IPv6) by inode.
fn listening_tcp() -> HashMap<u64, SocketAddr> {
    let mut out = HashMap::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(|l| parse_line(l, v6)));
    }
    out
}

/// One line of /proc/net/tcp{,6}: `sl local rem st ... uid timeout inode`; state 0A is LISTEN.
fn parse_line(line: &str, v6: bool) -> Option<(u64, SocketAddr)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&"0A") {
        return None;
    }
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 { parse_v6(ip)? } else { parse_v4(ip)? };
    let inode = fields.get(9)?.parse().ok()?;
    Some((inode, SocketAddr::new(ip, port)))
}

/// The kernel prints each 32-bit word in host (little-endian) byte order.
fn parse_v4(hex: &str) -> Option<IpAddr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(word.to_le_bytes())))
}

fn parse_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines_of_both_families() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_line(v4, false),
            Some((12345, "127.0.0.1:8080".parse().unwrap()))
        );
        let v6 = "   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_line(v6, true),
            Some((777, "[::1]:3000".parse().unwrap()))
        );
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_line(&established, false), None);
    }

    #[test]
    fn the_listening_sockets_a_process_holds_are_found_and_others_are_not() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let me = std::process::id() as Pid;
        let held = listening_inodes_of(me);
        assert!(held.contains(&inode_of(listener.as_raw_fd()).unwrap()));
        assert!(!held.contains(&inode_of(client.as_raw_fd()).unwrap()));
    }

    #[test]
    fn ancestors_run_from_the_parent_up_and_never_include_this_process() {
        let me = std::process::id() as Pid;
        let up = ancestors_of(me);
        assert_eq!(up.first(), Some(&(nix::unistd::getppid().as_raw())));
        assert!(!up.contains(&me));
    }

    #[test]
    fn issue_23_finds_a_child_that_holds_a_listener_and_not_this_process() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = inode_of(listener.as_raw_fd()).unwrap();
        assert!(
            holders_of(&[inode], &[]).is_empty(),
            "this process is left out"
        );
        // A child that inherits the socket (not close-on-exec in its copy) holds it.
        let dup = nix::unistd::dup(&listener).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        // spawn returns once the child has exec'd, holding its inherited fds.
        assert_eq!(holders_of(&[inode], &[]), vec![pid]);
        assert!(holders_of(&[inode], &[pid]).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        drop(dup);
    }

    #[test]
    fn sees_this_process_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let found = listener_use(std::process::id() as Pid, &[]);
        assert!(found.own.contains(&addr), "{found:?}");
        use std::os::fd::AsRawFd;
        let inode = inode_of(listener.as_raw_fd()).unwrap();
        let found = listener_use(std::process::id() as Pid, &[inode]);
        assert!(found.holds_ours && !found.own.contains(&addr));
    }
}
