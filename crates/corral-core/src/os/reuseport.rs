//! SO_REUSEPORT groups that corral owns whole: one more member socket per slot, the
//! classic BPF program that steers new connections to the slots that have a worker, and
//! the length of a member's accept queue.
//!
//! Written on libc directly: socket2 binds the members but has no call for
//! SO_ATTACH_REUSEPORT_CBPF or a listener's queue length, and no crate wraps them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use socket2::{SockRef, Socket, Type};

/// `SO_ATTACH_REUSEPORT_CBPF` from asm-generic/socket.h (every architecture corral is
/// built for; libc exports it for Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// The kernel's cap on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// Binds and listens another member of `primary`'s reuseport group: same address, same
/// IPv6-only setting, same backlog. Members join the group's index in the order they
/// listen, which is what [`steer`] counts on.
pub fn member_of(primary: BorrowedFd<'_>, backlog: i32) -> io::Result<OwnedFd> {
    let primary = SockRef::from(&primary);
    let local = primary.local_addr()?;
    let domain = primary.domain()?;
    let socket = Socket::new(domain, Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if domain == socket2::Domain::IPV6 {
        socket.set_only_v6(primary.only_v6()?)?;
    }
    socket.bind(&local)?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Makes the group of `member` send each new connection to one of `live` (indices in the
/// group), at random: an even spread, and no connection for a slot whose worker is gone.
/// With no live index the kernel's own hash picks, as with no program.
pub fn steer(member: BorrowedFd<'_>, live: &[u32]) -> io::Result<()> {
    let program = program(live);
    if program.len() > MAX_INSNS {
        return Err(io::Error::other("too many slots to steer"));
    }
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            member.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// `A = random % live.len()`, then the `A`th live index. A return past the group's end
/// makes the kernel fall back to its hash.
fn program(live: &[u32]) -> Vec<libc::sock_filter> {
    use libc::{BPF_A, BPF_ABS, BPF_ALU, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MOD, BPF_RET, BPF_W};
    let Some((&last, rest)) = live.split_last() else {
        return vec![insn(BPF_RET | BPF_K, 0, 0, u32::MAX)];
    };
    let random = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
    let mut p = vec![
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, random),
        insn(BPF_ALU | BPF_MOD | BPF_K, 0, 0, live.len() as u32),
    ];
    if live.iter().enumerate().all(|(i, &l)| l == i as u32) {
        p.push(insn(BPF_RET | BPF_A, 0, 0, 0));
        return p;
    }
    for (i, &index) in rest.iter().enumerate() {
        p.push(insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, i as u32));
        p.push(insn(BPF_RET | BPF_K, 0, 0, index));
    }
    p.push(insn(BPF_RET | BPF_K, 0, 0, last));
    p
}

/// Connections waiting in a listener's accept queue (TCP_INFO's `tcpi_unacked` is the
/// accept backlog for a listening socket).
pub fn queued(listener: impl AsFd) -> io::Result<u32> {
    // SAFETY: tcp_info is plain data; getsockopt fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes for the call.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info.tcpi_unacked)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    fn group(n: usize) -> Vec<OwnedFd> {
        let first = Socket::new(socket2::Domain::IPV4, Type::STREAM.cloexec(), None).unwrap();
        first.set_reuse_port(true).unwrap();
        first
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        first.listen(64).unwrap();
        let first: OwnedFd = first.into();
        let mut all = vec![];
        for _ in 1..n {
            all.push(member_of(first.as_fd(), 64).unwrap());
        }
        all.insert(0, first);
        all
    }

    fn wait_queued(fd: &OwnedFd, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while queued(fd).unwrap() < n {
            assert!(Instant::now() < deadline, "never queued {n}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn connections_go_only_to_the_live_members() {
        let socks = group(3);
        steer(socks[0].as_fd(), &[2]).unwrap();
        let addr = TcpListener::from(socks[0].try_clone().unwrap())
            .local_addr()
            .unwrap();
        let clients: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_queued(&socks[2], 20);
        assert_eq!(queued(&socks[0]).unwrap(), 0);
        assert_eq!(queued(&socks[1]).unwrap(), 0);
        steer(socks[0].as_fd(), &[0, 2]).unwrap();
        // Backlogs are 64: 40 more fit whatever the draw.
        let more: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while queued(&socks[0]).unwrap() + queued(&socks[2]).unwrap() < 60 {
            assert!(Instant::now() < deadline, "the 40 never queued");
            std::thread::yield_now();
        }
        assert!(queued(&socks[0]).unwrap() > 0, "slot 0 is live again");
        assert_eq!(queued(&socks[1]).unwrap(), 0, "slot 1 is not live");
        drop((clients, more));
    }

    #[test]
    fn the_program_returns_a_live_index_for_every_draw() {
        // The jump table, read as the kernel would for each value of A.
        let live = [1, 4, 7];
        let p = program(&live);
        for a in 0..3u32 {
            let mut pc = 2;
            let found = loop {
                let i = &p[pc];
                if i.code == (libc::BPF_RET | libc::BPF_K) as u16 {
                    break i.k;
                }
                pc += 1 + if a == i.k { i.jt } else { i.jf } as usize;
            };
            assert_eq!(found, live[a as usize]);
        }
        assert_eq!(program(&[0, 1, 2]).len(), 3, "the identity needs no table");
        assert_eq!(program(&[])[0].k, u32::MAX);
    }
}
