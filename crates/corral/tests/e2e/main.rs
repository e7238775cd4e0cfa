//! corral's end-to-end tests, in one binary: each module drives the real `corral`
//! binary (`corral run`, the daemon and its CLI) against fixture workers from
//! `corral-testkit` and real servers (Node, Python, Ruby, PHP, Go), one module per area.
//!
//! Helpers every area uses live in `corral-testkit` (`Home`, `Corral`, `Load`,
//! `reloads_under_load`); the few here tie them to this binary.

mod cli_errors;
mod daemon;
mod dispatch;
mod drain;
mod faults;
mod node;
mod node_listen;
mod observe;
mod pm2;
mod pm2_dialect;
mod recipes;
mod reuseport;
mod run;
mod runtimes;
mod upgrade;

/// The corral binary under test.
pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// The fixture worker's path.
pub fn fixture() -> String {
    corral_testkit::fixture_bin(CORRAL).display().to_string()
}

/// A private `CORRAL_HOME` for a daemon test named `name`.
pub fn home(name: &str) -> corral_testkit::Home {
    corral_testkit::Home::new(CORRAL, name)
}
