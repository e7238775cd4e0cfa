//! corral's bind shim (`shim/bind.c`, built by `build.rs`): preloaded into workers whose
//! server binds its own socket and can't take corral's (Bun, Deno), it turns their
//! `bind()` of a port corral listens on into corral's socket, so queued connections
//! survive their crashes and reloads like any other worker's.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The shared object, empty when the build had no C compiler.
const SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libcorral_bind.so"));

/// Runtimes whose servers can't take an inherited socket, by program name (the exact
/// name, not any path that contains it: `/opt/bunker/node` is node).
const BINDING_RUNTIMES: [&str; 2] = ["bun", "deno"];

/// Whether `command` starts one of [`BINDING_RUNTIMES`].
pub fn binds_itself(command: &[OsString]) -> bool {
    command
        .first()
        .and_then(|program| Path::new(program).file_name())
        .and_then(OsStr::to_str)
        .is_some_and(|name| BINDING_RUNTIMES.contains(&name))
}

/// Adds the shim to `LD_PRELOAD` in `env` (before what is there already).
pub fn preload(env: &mut Vec<(OsString, OsString)>) -> anyhow::Result<()> {
    let path = installed()?;
    let mut value = path.into_os_string();
    if let Some(at) = env.iter().position(|(k, _)| k == "LD_PRELOAD") {
        let (_, before) = env.remove(at);
        if !before.is_empty() {
            value.push(":");
            value.push(before);
        }
    }
    env.push(("LD_PRELOAD".into(), value));
    Ok(())
}

/// The shim as a file, written once per build into a directory only this user can
/// write to (a file others could replace would run their code in every worker).
fn installed() -> anyhow::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if SHIM.is_empty() {
        bail!(
            "this corral was built without its bind shim (no C compiler at build time); \
             rebuild it with gcc or clang installed, or pass --bind-shim off"
        );
    }
    let uid = nix::unistd::geteuid().as_raw();
    let dir = corral_core::signals::runtime_dir().join(format!("corral-shim-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not a directory of this user's that only it can write to; remove it, or pass --bind-shim off",
            dir.display()
        );
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    SHIM.hash(&mut hasher);
    let path = dir.join(format!("corral-bind-{:016x}.so", hasher.finish()));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == SHIM.len() as u64) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".corral-bind-{}.tmp", std::process::id()));
    std::fs::write(&tmp, SHIM)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write corral's bind shim to {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bun_and_deno_are_known_by_their_program_name_only() {
        let cmd = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
        assert!(binds_itself(&cmd("bun app.js")));
        assert!(binds_itself(&cmd("/usr/local/bin/deno run -A app.ts")));
        assert!(!binds_itself(&cmd("/opt/bunker/node app.js")));
        assert!(!binds_itself(&cmd("node bun.js")));
    }

    #[test]
    fn the_shim_goes_first_in_ld_preload_and_keeps_what_was_there() {
        let mut env = vec![("LD_PRELOAD".into(), "/usr/lib/libjemalloc.so".into())];
        preload(&mut env).unwrap();
        let value = env[0].1.to_str().unwrap().to_owned();
        let (shim, rest) = value.split_once(':').unwrap();
        assert!(
            shim.ends_with(".so") && Path::new(shim).is_file(),
            "{value}"
        );
        assert_eq!(rest, "/usr/lib/libjemalloc.so");
    }
}
