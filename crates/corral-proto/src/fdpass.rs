//! Receiving bytes with the fds (`SCM_RIGHTS`) and credentials (`SCM_CREDENTIALS`) that
//! travel with them, so that every fd the kernel installs is owned, truncation included.
//!
//! Written on `libc` rather than `nix` because nix's `RecvMsg::cmsgs()` refuses to walk a
//! control buffer the kernel flagged `MSG_CTRUNC`: the fds it did install would have no
//! owner and leak, one batch per hostile message.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most fds the kernel puts on one message (`SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// What one `recvmsg` brought.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes written to the buffer; 0 at end of stream.
    pub len: usize,
    /// Every fd that arrived, owned: dropping one closes it.
    pub fds: Vec<OwnedFd>,
    /// The sender's pid, when credentials were passed (`SO_PASSCRED`).
    pub pid: Option<i32>,
    /// The control data did not fit (`MSG_CTRUNC`): the kernel closed the fds beyond
    /// the room given; the ones in `fds` are still ours.
    pub fds_truncated: bool,
    /// A datagram was longer than the buffer (`MSG_TRUNC`); its tail is gone.
    pub data_truncated: bool,
}

/// One non-blocking `recvmsg` with room for [`MAX_FDS`] fds and credentials.
/// `WouldBlock` when nothing is queued.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    recv_with_room(fd, buf, MAX_FDS)
}

/// [`recv`] with room for only `max_fds` fds (the rest are cut and closed by the kernel).
pub fn recv_with_room(fd: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> io::Result<Received> {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let room = unsafe {
        libc::CMSG_SPACE((max_fds * size_of::<RawFd>()) as u32)
            + libc::CMSG_SPACE(size_of::<libc::ucred>() as u32)
    } as usize;
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; room.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = room as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    let len = loop {
        // SAFETY: msg points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut received = Received {
        len,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        data_truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        ..Received::default()
    };
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with cmsghdrs; the
    // CMSG_* macros walk only within that length.
    unsafe { take_control(&msg, &mut received) };
    Ok(received)
}

/// Moves every fd and the credentials out of the control data into `out`.
///
/// # Safety
/// `msg` must be a msghdr that `recvmsg` just filled.
unsafe fn take_control(msg: &libc::msghdr, out: &mut Received) {
    let mut cmsg = libc::CMSG_FIRSTHDR(msg);
    while !cmsg.is_null() {
        let header = &*cmsg;
        let data = libc::CMSG_DATA(cmsg);
        let payload = header.cmsg_len as usize - libc::CMSG_LEN(0) as usize;
        match (header.cmsg_level, header.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..payload / size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    out.fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) if payload >= size_of::<libc::ucred>() => {
                let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                out.pid = Some(cred.pid);
            }
            _ => {}
        }
        cmsg = libc::CMSG_NXTHDR(msg, cmsg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    /// The fd-counting test must not see another test's sockets come and go.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// Sends `bytes` with `fds` copies of stdin's fd attached.
    fn send_with_fds(socket: BorrowedFd<'_>, bytes: &[u8], fds: usize) {
        let list: Vec<RawFd> = vec![0; fds];
        let size = size_of_val(list.as_slice()) as u32;
        // SAFETY: plain arithmetic and a msghdr pointing at live buffers.
        unsafe {
            let mut control = vec![0u64; (libc::CMSG_SPACE(size) as usize).div_ceil(8)];
            let mut iov = libc::iovec {
                iov_base: bytes.as_ptr() as *mut _,
                iov_len: bytes.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
            std::ptr::copy_nonoverlapping(list.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds);
            assert!(libc::sendmsg(socket.as_raw_fd(), &msg, 0) >= 0);
        }
    }

    #[test]
    fn every_fd_of_a_truncated_message_is_owned_and_closed() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = UnixDatagram::pair().unwrap();
        let before = open_fds();
        for _ in 0..20 {
            send_with_fds(a.as_fd(), b"STATUS=hi", 20);
            let mut buf = [0u8; 64];
            let got = recv_with_room(b.as_fd(), &mut buf, 4).unwrap();
            assert!(got.fds_truncated);
            // Room for 4 fds, plus what the credentials' room holds when unused.
            assert!((4..20).contains(&got.fds.len()), "{}", got.fds.len());
            assert_eq!(&buf[..got.len], b"STATUS=hi");
        }
        assert_eq!(open_fds(), before, "no fd outlives its message");
    }

    #[test]
    fn the_full_room_takes_the_kernels_maximum() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(a.as_fd(), b"x", MAX_FDS);
        let mut buf = [0u8; 8];
        let got = recv(b.as_fd(), &mut buf).unwrap();
        assert!(!got.fds_truncated);
        assert_eq!(got.fds.len(), MAX_FDS);
    }

    #[test]
    fn an_empty_queue_would_block_and_a_closed_peer_reads_zero() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 8];
        let err = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap().len, 0);
    }

    #[test]
    fn credentials_name_the_sender() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = UnixDatagram::pair().unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option.
        unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            );
        }
        a.send(b"READY=1").unwrap();
        let mut buf = [0u8; 16];
        let got = recv(b.as_fd(), &mut buf).unwrap();
        assert_eq!(got.pid, Some(std::process::id() as i32));
    }
}
