//! Helpers for corral's integration tests: run the real `corral` binary, watch its output
//! with deadlines, and drive HTTP load against it.

mod home;
mod http;
mod load;
mod process;

pub use home::Home;
pub use http::{free_port, get, get_from, KeepAlive, Response};
pub use load::{Load, LoadReport};
pub use process::{dev_full, fixture_bin, limit_open_files, limit_processes, open_fds, Corral};

/// Polls `check` every 20ms until it holds (true) or `timeout` passes (false).
pub fn eventually(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
