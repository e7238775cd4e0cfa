//! The fixture's own contract. Being an integration test of this package also makes
//! `cargo nextest run --workspace` build the `corral-fixture` binary that corral's tests run.

use std::process::Command;

const FIXTURE: &str = env!("CARGO_BIN_EXE_corral-fixture");

#[test]
fn exits_at_start_with_the_code_asked_for() {
    let status = Command::new(FIXTURE)
        .env("FIXTURE_EXIT_AT_START", "7")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn refuses_to_run_without_an_inherited_listener() {
    let out = Command::new(FIXTURE)
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a listener"));
}
