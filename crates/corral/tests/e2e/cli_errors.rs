//! What `corral run` says, and how it exits, when the command line is wrong.

use std::process::Command;

use crate::CORRAL;

/// Exit code and stderr of `corral ARGS`, with anything machine-specific replaced.
fn run(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(CORRAL)
        .args(args)
        .env_remove("WORKERS")
        .envs(env.iter().copied())
        .output()
        .expect("run corral");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    format!(
        "exit: {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn unknown_flag() {
    insta::assert_snapshot!(run(&["run", "--bogus", "--", "true"], &[]));
}

#[test]
fn missing_command() {
    insta::assert_snapshot!(run(&["run", "--listen", "3000"], &[]));
}

#[test]
fn listen_address_that_is_not_an_address() {
    insta::assert_snapshot!(run(&["run", "--listen", "nope", "--", "true"], &[]));
}

#[test]
fn listen_port_out_of_range() {
    insta::assert_snapshot!(run(
        &["run", "--listen", "127.0.0.1:70000", "--", "true"],
        &[]
    ));
}

#[test]
fn listen_host_that_is_a_name() {
    insta::assert_snapshot!(run(
        &["run", "--listen", "example.com:80", "--", "true"],
        &[]
    ));
}

#[test]
fn listen_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["run", "--listen", &addr, "--", "true"], &[]);
    insta::assert_snapshot!(out.replace(&addr, "127.0.0.1:PORT"));
}

#[test]
fn unknown_command() {
    insta::assert_snapshot!(run(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--",
            "no-such-command-xyz"
        ],
        &[]
    ));
}

#[test]
fn command_that_is_not_executable() {
    insta::assert_snapshot!(run(&["run", "--", "/etc/hostname"], &[]));
}

#[test]
fn worker_count_that_is_not_a_number() {
    insta::assert_snapshot!(run(&["run", "-i", "lots", "--", "true"], &[]));
}

#[test]
fn worker_count_over_the_hard_limit() {
    insta::assert_snapshot!(run(&["run", "-i", "5000", "--force", "--", "true"], &[]));
}

#[test]
fn workers_env_that_is_not_a_number() {
    insta::assert_snapshot!(run(&["run", "--", "true"], &[("WORKERS", "many")]));
}

#[test]
fn ready_mode_that_does_not_exist() {
    insta::assert_snapshot!(run(&["run", "--ready", "sometimes", "--", "true"], &[]));
}

#[test]
fn duration_without_a_unit() {
    insta::assert_snapshot!(run(&["run", "--kill-timeout", "10", "--", "true"], &[]));
}

#[test]
fn signal_that_does_not_exist() {
    insta::assert_snapshot!(run(&["run", "--kill-signal", "SIGNOPE", "--", "true"], &[]));
}

#[test]
fn cwd_that_does_not_exist() {
    insta::assert_snapshot!(run(
        &["run", "--cwd", "/nonexistent/dir", "--", "true"],
        &[]
    ));
}
