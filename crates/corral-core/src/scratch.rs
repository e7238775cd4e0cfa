//! One read buffer per runtime thread, shared by the tasks that wait on many mostly quiet
//! fds (worker output pipes, worker channels, notify sockets), so that a quiet worker costs no buffer:
//! a daemon with a thousand idle apps would otherwise hold a thousand 64 KiB buffers.

use std::cell::RefCell;
use std::io;

/// As large as the largest read any user makes (a channel line's limit).
const SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SIZE]);
}

/// Runs `f` with this thread's buffer. `f` may not use this module again.
pub fn with<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH.with(|scratch| f(&mut scratch.borrow_mut()))
}

/// Reads once with `read` into this thread's buffer and gives what came to `take`:
/// `Ok(None)` at EOF, `WouldBlock` when nothing was there after all. Neither closure may
/// read through this module again.
pub fn read_into<T>(
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    take: impl FnOnce(&[u8]) -> T,
) -> io::Result<Option<T>> {
    with(|scratch| match read(scratch)? {
        0 => Ok(None),
        n => Ok(Some(take(&scratch[..n]))),
    })
}

/// Whether a failed non-blocking read should just be tried again once readable.
pub fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_over_what_was_read_and_says_eof() {
        let got = read_into(
            |buf| {
                buf[..3].copy_from_slice(b"abc");
                Ok(3)
            },
            <[u8]>::to_vec,
        );
        assert_eq!(got.unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_into(|_| Ok(0), <[u8]>::to_vec).unwrap(), None);
        let would_block = read_into(|_| Err(io::ErrorKind::WouldBlock.into()), <[u8]>::to_vec);
        assert!(retry(&would_block.unwrap_err()));
    }
}
