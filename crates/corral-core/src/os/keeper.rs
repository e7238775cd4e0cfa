//! The keeper: a tiny process that outlives the supervisor just long enough to SIGKILL
//! every worker process group it had, so that nothing corral started (a server behind
//! `sh -c` or `npm start` included) keeps serving its ports after corral is killed.
//!
//! PDEATHSIG reaches only a worker's first process; the grandchildren are what survive.
//! A cgroup would catch even processes that leave their group (`setsid`), but one can
//! rarely be created where corral runs (containers, user sessions without delegation),
//! so corral records process groups instead, which every wrapper's children stay in.
//!
//! The supervisor tells the keeper each group it creates and forgets, over a pipe whose
//! write end only the supervisor holds (close-on-exec). When the supervisor dies, for any
//! reason, the pipe ends; the keeper kills every group still recorded and exits.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, OnceLock};

use crate::process::Pid;

/// Where the records go: the keeper's pipe, or a daemon's holder (see [`attach`]).
static KEEPER: Mutex<Option<Sink>> = Mutex::new(None);

/// What a holder that takes no records (stopped, stuck) makes happen (see [`on_stall`]).
static ON_STALL: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

struct Sink {
    file: File,
    /// A holder's link, written without waiting: a record must never hold up the worker
    /// start (and the dispatch of its engine) that sends it. The keeper's pipe is
    /// written in full: the keeper does nothing but read it.
    link: bool,
}

impl Sink {
    fn new(fd: std::os::fd::OwnedFd) -> Sink {
        let link = nix::sys::stat::fstat(&fd).is_ok_and(|st| {
            nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                .contains(nix::sys::stat::SFlag::S_IFSOCK)
        });
        Sink {
            file: File::from(fd),
            link,
        }
    }
}

fn keeper() -> std::sync::MutexGuard<'static, Option<Sink>> {
    KEEPER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `hook` whenever a record cannot go to the holder at once (its link is full):
/// that record is lost, and the holder should be replaced by one that gets everything.
/// The hook runs on the sender's thread and must not block. Set once.
pub fn on_stall(hook: impl Fn() + Send + Sync + 'static) {
    let _ = ON_STALL.set(Box::new(hook));
}

/// Groups the keeper can hold; past this, a group is not recorded (PDEATHSIG still
/// reaches its leader). A fixed table, so the keeper never allocates after fork.
const CAPACITY: usize = 16_384;

/// A record on the pipe: `+` or `-` and the group id, little-endian.
const RECORD: usize = 5;

/// Starts the keeper, once per process. Call it before starting other threads is best,
/// but the keeper allocates nothing after fork, so it is safe either way.
pub fn start() -> io::Result<()> {
    if keeper().is_some() {
        return Ok(());
    }
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let devnull = File::open("/dev/null")?;
    let title = Title::new(std::process::id());
    // SAFETY: the child only makes async-signal-safe calls and never returns.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { keep(read.as_raw_fd(), devnull.as_raw_fd(), title.as_ref()) },
        _ => {
            drop(read);
            *keeper() = Some(Sink::new(write));
            Ok(())
        }
    }
}

/// The keeper's pipe, for the binary this process execs into (`crate::handover`): the
/// keeper keeps its record of every group, and sees no end of the pipe.
pub fn hand_over() -> Option<crate::handover::Fd> {
    keeper()
        .as_ref()
        .and_then(|sink| crate::handover::Fd::dup(std::os::fd::AsFd::as_fd(&sink.file)).ok())
}

/// Takes the keeper a previous binary of this process started (see [`hand_over`]).
pub fn adopt(pipe: crate::handover::Fd) {
    *keeper() = Some(Sink::new(pipe.0));
}

/// Sends the records to `link` from now on: a daemon's holder, which keeps the groups
/// alive for the next daemon instead of killing them (`SOCK_SEQPACKET`: a record is a
/// packet).
pub fn attach(link: std::os::fd::OwnedFd) {
    *keeper() = Some(Sink::new(link));
}

/// A duplicate of where the records go.
pub fn link() -> Option<std::os::fd::OwnedFd> {
    keeper().as_ref().and_then(|sink| {
        std::os::fd::AsFd::as_fd(&sink.file)
            .try_clone_to_owned()
            .ok()
    })
}

/// Records process group `pgid`: killed if the supervisor dies before [`forget`].
pub fn watch(pgid: Pid) {
    send(b'+', pgid);
}

/// The worker leading group `pgid` got ready: a daemon's holder remembers it, so that a
/// daemon that takes the worker back knows it even when its snapshot is older.
pub fn ready(pgid: Pid) {
    send(b'R', pgid);
}

/// The group is gone (its leader reaped, the rest killed): nothing to do for it.
pub fn forget(pgid: Pid) {
    send(b'-', pgid);
}

fn send(op: u8, pgid: Pid) {
    use nix::sys::socket::MsgFlags;
    let mut keeper = keeper();
    let Some(sink) = keeper.as_mut() else {
        return;
    };
    let mut record = [op, 0, 0, 0, 0];
    record[1..].copy_from_slice(&pgid.to_le_bytes());
    if !sink.link {
        // Under PIPE_BUF, so atomic; a keeper that is gone (EPIPE) changes nothing here.
        let _ = sink.file.write_all(&record);
        return;
    }
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let sent = nix::sys::socket::send(sink.file.as_raw_fd(), &record, flags);
    if sent == Err(nix::errno::Errno::EAGAIN) {
        if let Some(hook) = ON_STALL.get() {
            hook();
        }
    }
}

/// What `ps` shows for the keeper instead of its parent's command line, which a fork
/// copies: two identical `corral run ...` lines left users guessing which to signal.
/// Linux reads a command line from the process's own memory, so the keeper writes over
/// its copy of the argument area (as nginx and PostgreSQL retitle their workers);
/// `PR_SET_MM` would need `CAP_SYS_RESOURCE`, and no crate does this for a fork child.
struct Title {
    area: *mut u8,
    len: usize,
    text: Vec<u8>,
}

impl Title {
    /// Found before fork, since the child may not allocate.
    fn new(parent: u32) -> Option<Title> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may hold spaces: the 3rd field first, so
        // arg_start (48th) and arg_end (49th) are the 46th and 47th.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(45);
        let start: usize = fields.next()?.parse().ok()?;
        let end: usize = fields.next()?.parse().ok()?;
        let text = format!("corral keeper of pid {parent} (kills its workers if it dies)");
        (end > start).then(|| Title {
            area: start as *mut u8,
            len: end - start,
            text: text.into_bytes(),
        })
    }

    /// Writes the title over the argument area, cut to fit, the rest zeroed.
    ///
    /// # Safety
    /// Only in the keeper, which never reads its arguments again.
    unsafe fn write(&self) {
        let keep = self.text.len().min(self.len - 1);
        std::ptr::copy_nonoverlapping(self.text.as_ptr(), self.area, keep);
        std::ptr::write_bytes(self.area.add(keep), 0, self.len - keep);
    }
}

/// The keeper's whole life.
///
/// # Safety
/// Only in the child right after fork.
unsafe fn keep(pipe: RawFd, devnull: RawFd, title: Option<&Title>) -> ! {
    // Out of the terminal's process group, so a Ctrl-C meant for corral does not end the
    // keeper before corral has finished with its workers.
    libc::setpgid(0, 0);
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
    ] {
        libc::signal(signal, libc::SIG_IGN);
    }
    libc::prctl(libc::PR_SET_NAME, c"corral-keeper".as_ptr(), 0, 0, 0);
    if let Some(title) = title {
        title.write();
    }
    // Hold nothing of corral's: no listener (the port must close with corral), no pipe
    // of its terminal.
    for fd in 0..3 {
        libc::dup2(devnull, fd);
    }
    libc::dup2(pipe, 3);
    if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
        for fd in 4..65_536 {
            libc::close(fd);
        }
    }
    let mut groups = [0 as Pid; CAPACITY];
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        let n = libc::read(3, buf[have..].as_mut_ptr().cast(), buf.len() - have);
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
        let whole = have - have % RECORD;
        for record in buf[..whole].chunks_exact(RECORD) {
            let pgid = Pid::from_le_bytes([record[1], record[2], record[3], record[4]]);
            apply(&mut groups, record[0], pgid);
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
    for &pgid in groups.iter().filter(|&&g| g > 1) {
        libc::kill(-pgid, libc::SIGKILL);
    }
    libc::_exit(0)
}

fn apply(groups: &mut [Pid], op: u8, pgid: Pid) {
    match op {
        b'+' => {
            if let Some(free) = groups.iter_mut().find(|g| **g == 0) {
                *free = pgid;
            }
        }
        b'-' => {
            if let Some(known) = groups.iter_mut().find(|g| **g == pgid) {
                *known = 0;
            }
        }
        _ => {} // `R` (ready) is for a daemon's holder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_23_a_full_holder_link_calls_the_stall_hook_and_never_blocks() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static STALLS: AtomicUsize = AtomicUsize::new(0);
        on_stall(|| {
            STALLS.fetch_add(1, Ordering::SeqCst);
        });
        let (ours, _theirs) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        attach(ours);
        let started = std::time::Instant::now();
        // Far more records than a socket buffer holds; nobody reads them.
        for pgid in 0..100_000 {
            watch(pgid);
            if STALLS.load(Ordering::SeqCst) > 0 {
                break;
            }
        }
        assert!(STALLS.load(Ordering::SeqCst) > 0, "the link never filled");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        *keeper() = None;
    }

    #[test]
    fn records_are_added_and_forgotten() {
        let mut groups = [0; 4];
        apply(&mut groups, b'+', 10);
        apply(&mut groups, b'+', 11);
        apply(&mut groups, b'-', 10);
        apply(&mut groups, b'+', 12);
        assert_eq!(groups, [12, 11, 0, 0]);
    }
}
