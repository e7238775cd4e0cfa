//! The holder: a small process beside the daemon that keeps a copy of every app's
//! listeners, worker channels and output pipes, with the state they belong to, so that
//! the daemon's death is not its apps' death. A daemon that starts finds it at
//! `holder.sock` and takes the apps back (re-adoption); the holder then serves that
//! daemon.
//!
//! The link is a `SOCK_SEQPACKET` socket (each write one packet, fds attached):
//! `+`/`-`/`R` and a process group id (the keeper's records, `os::keeper`: started, gone,
//! ready); `S` with a snapshot's length, fd count and entry name (an app, or "" for the
//! daemon's own part), followed by `D` packets carrying it; `X` and an app's name to drop
//! its entry at once (answered `K`); `B` for a daemon that stopped every app itself; `G`
//! from a daemon asking for it all (answered `P` with the groups, every entry, `E`).
//!
//! Why a process of its own and not systemd's fd store: the workers must outlive the
//! daemon wherever it runs (a shell, a container, systemd), and the fd store alone keeps
//! fds, not the state they belong to.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};

use crate::home::Home;

/// Largest packet: room for JSON chunks, far below the socket buffer.
const CHUNK: usize = 48 * 1024;
/// Fds per packet, below the kernel's 253.
const FDS_PER_PACKET: usize = 200;
/// How long a stop waits for the holder to let an app's sockets go.
const FORGET_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a daemon waits for the holder's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a packet waits for room on a full link. A holder that reads drains it in
/// microseconds; one that does not (stopped, stuck) must not hold up the daemon's state
/// task, which then replaces it.
const SEND_WAIT: Duration = Duration::from_millis(250);
/// After the daemon died, how long the holder waits for a daemon before it starts one.
const RESTART_AFTER: Duration = Duration::from_millis(500);
/// And how long it gives each daemon it started to come.
const RESTART_EVERY: Duration = Duration::from_secs(10);
/// How many daemons it starts before it only waits (for the CLI, systemd).
const RESTARTS: u32 = 5;

/// A snapshot as it travels: the document (which names its fds by the numbers the
/// daemon had) and the fds, in order.
pub struct Snapshot {
    pub json: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Starts a holder for `home`; returns the daemon's end of the link.
pub fn spawn(home: &Home) -> io::Result<(OwnedFd, i32)> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = seqpacket_pair()?;
    let theirs_raw = theirs.as_raw_fd();
    // This very binary, even when a newer one replaced it on disk.
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg("__holder")
        .env("CORRAL_HOME", &home.dir)
        .stdin(std::process::Stdio::null());
    // SAFETY: dup2 and setsid are async-signal-safe and touch no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(theirs_raw, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    Ok((ours, child.id() as i32))
}

/// The running holder of `home`, if one answers.
pub fn connect(home: &Home) -> Option<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = socket::UnixAddr::new(&home.dir.join("holder.sock")).ok()?;
    socket::connect(fd.as_raw_fd(), &addr).ok()?;
    Some(fd)
}

/// Sends one packet with `fds`, waiting at most [`SEND_WAIT`] for room.
fn send(link: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let deadline = Instant::now() + SEND_WAIT;
    loop {
        let sent = socket::sendmsg::<()>(
            link.as_raw_fd(),
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        );
        match sent {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !writable(link, left) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the holder takes nothing from its link",
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `link` has room for a packet within `timeout`.
pub fn writable(link: BorrowedFd<'_>, timeout: Duration) -> bool {
    ready(link, nix::poll::PollFlags::POLLOUT, timeout)
}

/// Sends the snapshot of entry `name` (an app; "" for the daemon's own part, which also
/// lists the apps: entries of others are dropped). `json` names `fds` (in the order
/// given) by their numbers here.
pub fn send_snapshot(
    link: BorrowedFd<'_>,
    name: &str,
    json: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    let mut header = vec![b'S'];
    header.extend_from_slice(&(json.len() as u64).to_le_bytes());
    header.extend_from_slice(&(fds.len() as u32).to_le_bytes());
    header.extend_from_slice(name.as_bytes());
    send(link, &header, &[])?;
    send_data(link, json, fds)
}

/// The `D` packets of a snapshot.
fn send_data(link: BorrowedFd<'_>, json: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let (mut bytes, mut fds) = (json, fds);
    while !bytes.is_empty() || !fds.is_empty() {
        let (now, rest) = bytes.split_at(bytes.len().min(CHUNK));
        let (these, others) = fds.split_at(fds.len().min(FDS_PER_PACKET));
        send(link, &[b"D".as_slice(), now].concat(), these)?;
        (bytes, fds) = (rest, others);
    }
    Ok(())
}

/// Makes the holder close what it holds of app `name` (stopped or deleted: its ports
/// must be free when the client hears so), and waits for it to say it did.
pub fn forget(link: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    send(link, &[b"X".as_slice(), name.as_bytes()].concat(), &[])?;
    match receive(link, FORGET_TIMEOUT)? {
        Some((packet, _)) if packet.first() == Some(&b'K') => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no answer to forget",
        )),
    }
}

/// Tells the holder that the daemon stopped every app itself: nothing to hold.
pub fn bye(link: BorrowedFd<'_>) -> io::Result<()> {
    send(link, b"B", &[])
}

/// What a holder kept: the last snapshot of each entry (the daemon's own part under
/// ""), and each process group it saw started with whether its worker got ready.
pub type Kept = (BTreeMap<String, Snapshot>, Vec<(i32, bool)>);

/// Waits up to `timeout` for `fd` to be readable.
fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    ready(fd, nix::poll::PollFlags::POLLIN, timeout)
}

/// Waits up to `timeout` for `fd` to be ready for `events`.
fn ready(fd: BorrowedFd<'_>, events: nix::poll::PollFlags, timeout: Duration) -> bool {
    let mut polls = [nix::poll::PollFd::new(fd, events)];
    let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
    matches!(nix::poll::poll(&mut polls, nix::poll::PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Receives one packet (blocking up to `timeout`); None at the end of the link.
fn receive(link: BorrowedFd<'_>, timeout: Duration) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    if !readable(link, timeout) {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut buf = vec![0u8; CHUNK + 64];
    let got = corral_proto::fdpass::recv(link, &mut buf)?;
    if got.len == 0 && got.fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(got.len);
    Ok(Some((buf, got.fds)))
}

/// Reads the `D` packets of a snapshot whose `S` header is `header`; returns its entry
/// name and the snapshot. Other packets in between go to `aside`, which says whether it
/// took them: the keeper's records come from the engines' threads at any time.
fn receive_snapshot(
    link: BorrowedFd<'_>,
    header: &[u8],
    timeout: Duration,
    mut aside: impl FnMut(&[u8]) -> bool,
) -> io::Result<(String, Snapshot)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a broken snapshot header");
    let field = |range: std::ops::Range<usize>| header.get(range).ok_or_else(bad);
    let len = u64::from_le_bytes(field(1..9)?.try_into().map_err(|_| bad())?);
    let count = u32::from_le_bytes(field(9..13)?.try_into().map_err(|_| bad())?);
    let name = String::from_utf8_lossy(&header[13..]).into_owned();
    let mut snapshot = Snapshot {
        json: Vec::with_capacity(len as usize),
        fds: Vec::with_capacity(count as usize),
    };
    while (snapshot.json.len() as u64) < len || snapshot.fds.len() < count as usize {
        match receive(link, timeout)? {
            Some((packet, fds)) if packet.first() == Some(&b'D') => {
                snapshot.json.extend_from_slice(&packet[1..]);
                snapshot.fds.extend(fds);
            }
            Some((packet, _)) if aside(&packet) => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a snapshot cut short",
                ))
            }
        }
    }
    Ok((name, snapshot))
}

/// Asks the holder at the end of `link` for what it holds. The process groups it saw
/// started come along, and whether each one's worker got ready: the last snapshot may
/// be older than both.
pub fn fetch(link: BorrowedFd<'_>) -> io::Result<Option<Kept>> {
    send(link, b"G", &[])?;
    let groups: Vec<(i32, bool)> = match receive(link, ANSWER_TIMEOUT)? {
        Some((packet, _)) if packet.first() == Some(&b'P') => packet[1..]
            .chunks_exact(5)
            .map(|c| (i32::from_le_bytes([c[0], c[1], c[2], c[3]]), c[4] == 1))
            .collect(),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "no group list")),
    };
    let mut entries = BTreeMap::new();
    loop {
        match receive(link, ANSWER_TIMEOUT)? {
            Some((header, _)) if header.first() == Some(&b'S') => {
                let (name, snapshot) = receive_snapshot(link, &header, ANSWER_TIMEOUT, |_| false)?;
                entries.insert(name, snapshot);
            }
            Some((end, _)) if end.first() == Some(&b'E') => break,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a reply cut short",
                ))
            }
        }
    }
    if entries.is_empty() && groups.is_empty() {
        return Ok(None);
    }
    Ok(Some((entries, groups)))
}

/// The holder's whole life: `corral __holder`, its link to the daemon at fd 3.
pub fn run(home: &Home) -> anyhow::Result<()> {
    // SAFETY: fd 3 is the link the daemon set up before exec, and nothing else owns it.
    let link = unsafe { OwnedFd::from_raw_fd(3) };
    let listener = listen(&home.dir.join("holder.sock"))?;
    let mut holder = Holder {
        daemon: Some(link),
        entries: BTreeMap::new(),
        groups: Vec::new(),
        orphaned_at: None,
        restarts: 0,
        home: home.clone(),
    };
    holder.serve(&listener);
    let _ = std::fs::remove_file(home.dir.join("holder.sock"));
    Ok(())
}

fn listen(path: &Path) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &socket::UnixAddr::new(path)?)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket::listen(&fd, socket::Backlog::new(8)?)?;
    Ok(fd)
}

struct Holder {
    /// The daemon it serves; None after that daemon died, until another comes.
    daemon: Option<OwnedFd>,
    /// The last snapshot of each app, and the daemon's own part ("").
    entries: BTreeMap<String, Snapshot>,
    /// Process groups the daemon started and has not seen end, and whether their
    /// worker got ready.
    groups: Vec<(i32, bool)>,
    orphaned_at: Option<Instant>,
    restarts: u32,
    home: Home,
}

impl Holder {
    fn serve(&mut self, listener: &OwnedFd) {
        loop {
            let mut polls = vec![nix::poll::PollFd::new(
                listener.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            if let Some(daemon) = &self.daemon {
                polls.push(nix::poll::PollFd::new(
                    daemon.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                ));
            }
            let _ = nix::poll::poll(&mut polls, nix::poll::PollTimeout::from(200u16));
            let ready: Vec<bool> = polls
                .iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            if ready.get(1) == Some(&true) && !self.on_daemon_packet() {
                return; // told the apps are all stopped
            }
            if ready[0] {
                self.accept(listener);
            }
            if self.daemon.is_none() && self.entries.is_empty() && self.groups.is_empty() {
                return; // nothing to hold
            }
            self.maybe_restart_daemon();
        }
    }

    /// Handles one packet from the daemon; false when the holder should end.
    fn on_daemon_packet(&mut self) -> bool {
        let Some(daemon) = &self.daemon else {
            return true;
        };
        match receive(daemon.as_fd(), Duration::ZERO) {
            Ok(Some((packet, _))) => match packet.first() {
                Some(b'+' | b'-' | b'R') => {
                    record(&mut self.groups, &packet);
                }
                Some(b'S') => {
                    let groups = &mut self.groups;
                    let got = receive_snapshot(daemon.as_fd(), &packet, ANSWER_TIMEOUT, |p| {
                        record(groups, p)
                    });
                    if let Ok((name, snapshot)) = got {
                        if name.is_empty() {
                            let apps = listed_apps(&snapshot.json);
                            self.entries.retain(|n, _| n.is_empty() || apps.contains(n));
                        }
                        self.entries.insert(name, snapshot);
                    }
                }
                Some(b'X') => {
                    let name = String::from_utf8_lossy(&packet[1..]).into_owned();
                    self.entries.remove(&name);
                    let _ = send(daemon.as_fd(), b"K", &[]);
                }
                Some(b'B') => return false,
                _ => {}
            },
            Ok(None) => {
                // The daemon died: hold everything for the next one.
                self.daemon = None;
                self.orphaned_at = Some(Instant::now());
                self.restarts = 0;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(_) => {
                self.daemon = None;
                self.orphaned_at = Some(Instant::now());
            }
        }
        true
    }

    /// A daemon that starts asks for what is held; it becomes the daemon served.
    fn accept(&mut self, listener: &OwnedFd) {
        let Ok(raw) = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) else {
            return;
        };
        // SAFETY: accept4 returned a new fd nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(raw) };
        let me = nix::unistd::geteuid().as_raw();
        let peer = socket::getsockopt(&conn, socket::sockopt::PeerCredentials).map(|c| c.uid());
        if peer.ok() != Some(me) {
            return;
        }
        match receive(conn.as_fd(), ANSWER_TIMEOUT) {
            Ok(Some((packet, _))) if packet.first() == Some(&b'G') => {}
            _ => return,
        }
        if self.answer(conn.as_fd()).is_ok() {
            self.daemon = Some(conn);
            self.orphaned_at = None;
        }
    }

    /// `P` (the groups), each entry (`S` and `D`s), then `E`.
    fn answer(&self, conn: BorrowedFd<'_>) -> io::Result<()> {
        let groups: Vec<u8> = self
            .groups
            .iter()
            .flat_map(|&(g, ready)| g.to_le_bytes().into_iter().chain([ready as u8]))
            .collect();
        send(conn, &[b"P".as_slice(), &groups].concat(), &[])?;
        for (name, snapshot) in &self.entries {
            let fds: Vec<RawFd> = snapshot.fds.iter().map(AsRawFd::as_raw_fd).collect();
            send_snapshot(conn, name, &snapshot.json, &fds)?;
        }
        send(conn, b"E", &[])
    }

    /// Without a daemon for a while, starts one (not under systemd: its `Restart=` does).
    fn maybe_restart_daemon(&mut self) {
        let Some(since) = self.orphaned_at else {
            return;
        };
        if std::env::var_os("INVOCATION_ID").is_some() || self.restarts >= RESTARTS {
            return;
        }
        let due = RESTART_AFTER + RESTART_EVERY * self.restarts;
        if since.elapsed() < due {
            return;
        }
        self.restarts += 1;
        let _ = self.home.spawn_daemon();
    }
}

/// Applies a keeper record (`+`, `-` or `R` and a group) to `groups`; false if
/// `packet` is none.
fn record(groups: &mut Vec<(i32, bool)>, packet: &[u8]) -> bool {
    let &[op, a, b, c, d] = packet else {
        return false;
    };
    let pgid = i32::from_le_bytes([a, b, c, d]);
    match op {
        b'+' => groups.push((pgid, false)),
        b'-' => groups.retain(|&(g, _)| g != pgid),
        b'R' => groups
            .iter_mut()
            .filter(|(g, _)| *g == pgid)
            .for_each(|(_, ready)| *ready = true),
        _ => return false,
    }
    true
}

/// The app names the daemon's own part lists (`{"names": [...]}`).
fn listed_apps(json: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Names {
        #[serde(default)]
        names: Vec<String>,
    }
    serde_json::from_slice::<Names>(json)
        .map(|n| n.names)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_travels_with_its_fds_in_order_and_its_entry_name() {
        let (a, b) = seqpacket_pair().unwrap();
        // More fds than fit in one packet, and more JSON than one chunk.
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..FDS_PER_PACKET + 5)
            .map(|_| nix::unistd::pipe().unwrap())
            .collect();
        let fds: Vec<RawFd> = pipes.iter().map(|(r, _)| r.as_raw_fd()).collect();
        let json = vec![b'x'; CHUNK * 2 + 7];
        let sender = std::thread::spawn(move || {
            send_snapshot(a.as_fd(), "api", &json, &fds).unwrap();
            (a, pipes)
        });
        let (header, _) = receive(b.as_fd(), ANSWER_TIMEOUT).unwrap().unwrap();
        let (name, snapshot) =
            receive_snapshot(b.as_fd(), &header, ANSWER_TIMEOUT, |_| false).unwrap();
        let (_a, pipes) = sender.join().unwrap();
        assert_eq!(name, "api");
        assert_eq!(snapshot.json.len(), CHUNK * 2 + 7);
        assert_eq!(snapshot.fds.len(), pipes.len());
        // The 7th fd that arrived is the 7th pipe: a byte written there comes out of it.
        nix::unistd::write(&pipes[6].1, b"!").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&snapshot.fds[6], &mut buf).unwrap(), 1);
    }

    #[test]
    fn issue_23_a_holder_that_reads_nothing_fails_a_send_within_the_wait_never_blocks() {
        let (a, _b) = seqpacket_pair().unwrap();
        let packet = vec![b'D'; CHUNK];
        let mut sent = 0;
        let failed = loop {
            let asked = Instant::now();
            let result = send(a.as_fd(), &packet, &[]);
            assert!(asked.elapsed() < SEND_WAIT * 4, "{:?}", asked.elapsed());
            match result {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "the link never filled");
        };
        assert_eq!(failed.kind(), io::ErrorKind::TimedOut, "{failed}");
        assert!(!writable(a.as_fd(), Duration::ZERO));
    }

    #[test]
    fn issue_23_records_in_the_middle_of_a_snapshot_are_applied_and_it_arrives_whole() {
        let (a, b) = seqpacket_pair().unwrap();
        let json = vec![b'x'; CHUNK + 10];
        let mut header = vec![b'S'];
        header.extend_from_slice(&(json.len() as u64).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(b"api");
        send(a.as_fd(), &header, &[]).unwrap();
        send(a.as_fd(), &[b"D".as_slice(), &json[..CHUNK]].concat(), &[]).unwrap();
        // An engine's thread starts a worker meanwhile.
        send(
            a.as_fd(),
            &[b"+".as_slice(), &42i32.to_le_bytes()].concat(),
            &[],
        )
        .unwrap();
        send(a.as_fd(), &[b"D".as_slice(), &json[CHUNK..]].concat(), &[]).unwrap();
        let mut groups = Vec::new();
        let (first, _) = receive(b.as_fd(), ANSWER_TIMEOUT).unwrap().unwrap();
        let (name, snapshot) = receive_snapshot(b.as_fd(), &first, ANSWER_TIMEOUT, |p| {
            record(&mut groups, p)
        })
        .unwrap();
        assert_eq!((name.as_str(), snapshot.json), ("api", json));
        assert_eq!(groups, vec![(42, false)]);
    }

    #[test]
    fn the_apps_a_daemon_part_lists_are_read_from_it() {
        let names = listed_apps(br#"{"version":1,"names":["api","web"],"next_id":3}"#);
        assert_eq!(names, vec!["api".to_owned(), "web".to_owned()]);
        assert!(listed_apps(b"not json").is_empty());
    }
}
