//! fork + exec of one worker, with its listeners at fd 3.. and `LISTEN_PID` set to its own pid.
//!
//! Written by hand rather than with `std::process::Command` because `LISTEN_PID` must hold
//! the child's pid, known only after fork, and a multithreaded parent may not allocate or
//! call `setenv` between fork and exec. Everything the child needs (argv, envp, the fd
//! plan, a buffer for the pid digits) is built before fork; the child only patches bytes
//! in that buffer and makes async-signal-safe calls.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use corral_proto::env;

use crate::process::{Pid, SpawnError};

/// What to run. Build it once per worker, then [`spawn`].
pub struct Command {
    /// Resolved program path (see [`super::resolve_program`]).
    pub program: PathBuf,
    /// argv, including argv[0].
    pub args: Vec<OsString>,
    /// The complete environment, without `LISTEN_PID`, which `spawn` adds.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// Listening sockets to hand over as fds 3, 4, ... (borrowed; they stay open here).
    pub listen_fds: Vec<RawFd>,
    /// Further fds installed right after the listeners (the worker's channel end).
    pub extra_fds: Vec<RawFd>,
    /// SIGKILL the worker if the supervisor dies.
    pub die_with_parent: bool,
    /// A pipe at fd 0 instead of `/dev/null`; its write end comes back in [`Child::stdin`].
    pub stdin_pipe: bool,
}

/// A started worker: its pid (= process group id) and the read ends of its output.
pub struct Child {
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The write end of its standard input (non-blocking), with [`Command::stdin_pipe`].
    pub stdin: Option<OwnedFd>,
}

/// Everything the child touches, allocated before fork.
struct Prepared {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` then room for the digits and a NUL; patched in the child.
    listen_pid: Option<Vec<u8>>,
    cwd: Option<CString>,
}

fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::Os(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        ))
    })
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

fn prepare(cmd: &Command) -> Result<Prepared, SpawnError> {
    let program = cstring(cmd.program.clone().into_os_string().into_vec(), "program")?;
    let argv = cmd
        .args
        .iter()
        .map(|a| cstring(a.clone().into_vec(), "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = cmd
        .env
        .iter()
        .filter(|(k, _)| k != env::LISTEN_PID)
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            cstring(kv, "an environment variable")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<_> = envp.iter().map(|e| e.as_ptr()).collect();
    // A Node worker that may ask for ports needs LISTEN_PID even without listeners: its
    // adapter knows by it that this process is the app.
    let asks = cmd.env.iter().any(|(k, _)| k == "CORRAL_NODE_BIND");
    let listen_pid = (!cmd.listen_fds.is_empty() || asks).then(|| {
        let mut buf = LISTEN_PID_PREFIX.to_vec();
        buf.resize(LISTEN_PID_PREFIX.len() + 24, 0);
        buf
    });
    if let Some(buf) = &listen_pid {
        envp_ptrs.push(buf.as_ptr().cast());
    }
    envp_ptrs.push(std::ptr::null());
    let cwd = match &cmd.cwd {
        Some(dir) => Some(cstring(dir.clone().into_os_string().into_vec(), "cwd")?),
        None => None,
    };
    Ok(Prepared {
        program,
        _argv: argv,
        argv_ptrs,
        _envp: envp,
        envp_ptrs,
        listen_pid,
        cwd,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Os(e.into()))
}

/// Starts `cmd` in a new process group whose id is the child's pid.
pub fn spawn(cmd: &Command) -> Result<Child, SpawnError> {
    let mut prepared = prepare(cmd)?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (fail_r, fail_w) = pipe()?;
    let devnull = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SpawnError::Os(e.into()))?;
    let stdin = cmd.stdin_pipe.then(stdin_pipe).transpose()?;
    let fd0 = stdin
        .as_ref()
        .map_or(devnull.as_raw_fd(), |(r, _)| r.as_raw_fd());
    // fds the child installs at 0, 1, 2, 3, ... in this order.
    let mut plan: Vec<RawFd> = vec![fd0, out_w.as_raw_fd(), err_w.as_raw_fd()];
    plan.extend_from_slice(&cmd.listen_fds);
    plan.extend_from_slice(&cmd.extra_fds);
    let parent = std::process::id() as libc::pid_t;

    // Block every signal across fork so that no handler of the parent's runs in the
    // child before exec; the child resets dispositions and unblocks.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid, writable sigset_t values.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child branch calls only async-signal-safe functions and never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see `child`.
        unsafe {
            child(
                &mut prepared,
                &mut plan,
                fail_w.as_raw_fd(),
                cmd.die_with_parent,
                parent,
            )
        }
    }
    let fork_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(SpawnError::Os(fork_error));
    }
    // Also set here: whichever of parent and child runs first, the group exists before
    // anyone signals it.
    // SAFETY: plain syscall on our own child.
    unsafe { libc::setpgid(pid, pid) };
    let stdin = stdin.map(|(theirs, ours)| {
        drop(theirs);
        ours
    });
    drop((out_w, err_w, fail_w, devnull));
    if let Some(errno) = read_exec_failure(fail_r) {
        return Err(SpawnError::Exec {
            program: cmd.program.display().to_string(),
            source: io::Error::from_raw_os_error(errno),
        });
    }
    Ok(Child {
        pid,
        stdout: out_r,
        stderr: err_r,
        stdin,
    })
}

/// A worker's standard input: the read end for the child, the write end non-blocking, so
/// that a worker that does not read never stalls the supervisor's loop.
fn stdin_pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (read, write) = pipe()?;
    let flags = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| SpawnError::Os(e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| SpawnError::Os(e.into()))?;
    Ok((read, write))
}

/// Waits for exec: the pipe closes on success (CLOEXEC) or carries the errno on failure.
fn read_exec_failure(fail_r: OwnedFd) -> Option<i32> {
    let mut file = std::fs::File::from(fail_r);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match io::Read::read(&mut file, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    (got == 4).then(|| i32::from_ne_bytes(buf))
}

/// The child side, between fork and exec. No allocation, no locks: only syscalls and
/// writes into memory prepared before fork.
unsafe fn child(
    prepared: &mut Prepared,
    plan: &mut [RawFd],
    fail_w: RawFd,
    die_with_parent: bool,
    parent: libc::pid_t,
) -> ! {
    let fail = |fail_w: RawFd| -> ! {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(fail_w, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    };
    libc::setpgid(0, 0);
    if die_with_parent {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(127);
        }
    }
    // Dispositions the parent ignored (Rust ignores SIGPIPE) survive exec; reset all.
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

    // Move every source fd (and the failure pipe) above the target range first, so
    // installing one never clobbers another that is still to be installed.
    let floor = plan.len() as RawFd;
    let mut fail_w = fail_w;
    if fail_w < floor {
        fail_w = libc::fcntl(fail_w, libc::F_DUPFD_CLOEXEC, floor);
        if fail_w < 0 {
            libc::_exit(127);
        }
    }
    for fd in plan.iter_mut() {
        if *fd < floor {
            let moved = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, floor);
            if moved < 0 {
                fail(fail_w);
            }
            *fd = moved;
        }
    }
    for (target, &source) in plan.iter().enumerate() {
        // dup2 clears FD_CLOEXEC on the new fd, so these survive exec.
        if libc::dup2(source, target as RawFd) < 0 {
            fail(fail_w);
        }
    }
    if let Some(buf) = prepared.listen_pid.as_mut() {
        write_decimal(&mut buf[LISTEN_PID_PREFIX.len()..], libc::getpid() as u64);
    }
    if let Some(cwd) = &prepared.cwd {
        if libc::chdir(cwd.as_ptr()) < 0 {
            fail(fail_w);
        }
    }
    libc::execve(
        prepared.program.as_ptr(),
        prepared.argv_ptrs.as_ptr(),
        prepared.envp_ptrs.as_ptr(),
    );
    fail(fail_w)
}

/// Writes `n` in decimal followed by a NUL, without allocating.
fn write_decimal(out: &mut [u8], mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    out[len] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_decimal_terminates_with_nul() {
        let mut buf = [0xffu8; 24];
        write_decimal(&mut buf, 40213);
        assert_eq!(&buf[..6], b"40213\0");
        write_decimal(&mut buf, 0);
        assert_eq!(&buf[..2], b"0\0");
    }
}
