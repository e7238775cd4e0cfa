//! Builds corral's bind shim (`shim/bind.c`) into a shared object the binary embeds
//! (`bind_shim.rs`). Compiled by hand with the system's C compiler: the `cc` crate
//! builds static archives for linking into Rust, not a `.so` to preload into others.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/bind.c");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("libcorral_bind.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && Command::new(&cc)
            .args(["-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-o"])
            .arg(&out)
            .arg("shim/bind.c")
            .arg("-ldl")
            .status()
            .is_ok_and(|s| s.success());
    if !built {
        // The binary then says, where the shim is asked for, that it has none.
        println!("cargo:warning=no C compiler ({cc}): corral is built without its bind shim");
        std::fs::write(&out, b"").expect("write an empty shim");
    }
}
