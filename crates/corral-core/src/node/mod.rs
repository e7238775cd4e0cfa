//! The Node adapter: what corral adds to a Node worker so an unmodified app serves on
//! corral's sockets, talks over Node's IPC channel and drains cleanly.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::dispatch::Balance;
use crate::listen::Listener;
use crate::spec::{AppSpec, ListenAddr, ReadyPolicy};

/// The preload module, shipped inside the binary.
pub const PRELOAD: &str = include_str!("preload.js");

/// How the adapter reaches a Node app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// corral starts `node` itself: Node's IPC channel, dispatched connections.
    Direct,
    /// corral starts a wrapper (`npm start`, `yarn dev`, `sh -c 'node app.js'`): the node
    /// process under it that listens on corral's port takes the role; its channel is
    /// plain JSON lines, and it accepts from the shared socket.
    Wrapped,
}

/// The adapter for a command, if it runs a Node app.
pub fn adapter_for(program: &Path, args: &[OsString]) -> Option<Adapter> {
    let name = program.file_name().and_then(|n| n.to_str())?;
    match name {
        "node" | "nodejs" => Some(Adapter::Direct),
        "npm" | "npx" | "yarn" | "pnpm" | "corepack" => Some(Adapter::Wrapped),
        "sh" | "bash" | "dash" | "zsh" => {
            let script = args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>();
            let runs_node = script.iter().any(|a| {
                a.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
                    .any(|word| {
                        matches!(
                            word.rsplit('/').next(),
                            Some("node" | "nodejs" | "npm" | "npx" | "yarn" | "pnpm")
                        )
                    })
            });
            runs_node.then_some(Adapter::Wrapped)
        }
        _ => None,
    }
}

/// What `--balance auto` means for `command` run as `workers` workers on `cpus` CPUs:
/// an app the Node adapter runs gets `reuseport` while it has a CPU per worker, where
/// it is as fast as shared mode and even across workers (bench/node.sh); with more
/// workers than CPUs it keeps shared mode, faster there if uneven (bench/balance.sh:
/// reuseport 0.72-0.88x shared at 8 workers on 2 CPUs). Any other app keeps `auto`
/// (round-robin for workers that use corral-worker, shared for the rest, decided at
/// each hello).
pub fn balance_for(balance: Balance, command: &[OsString], workers: usize, cpus: usize) -> Balance {
    let runs_node = command
        .split_first()
        .is_some_and(|(program, args)| adapter_for(Path::new(program), args).is_some());
    if balance == Balance::Auto && runs_node && workers <= cpus.max(1) {
        Balance::Reuseport
    } else {
        balance
    }
}

/// Writes the preload module into `dir` (corral's private runtime directory).
pub fn write_preload(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join("corral-node-preload.js");
    std::fs::write(&path, PRELOAD)?;
    Ok(path)
}

/// The variables a Node worker of `spec` gets on top of corral's usual ones. `channel_fd`
/// is the worker's end of its corral channel, which doubles as Node's IPC channel.
pub fn env(
    preload: &Path,
    spec: &AppSpec,
    listeners: &[Listener],
    channel_fd: usize,
    adapter: Adapter,
) -> Vec<(&'static str, OsString)> {
    let (ready, balance, kill_timeout) = (spec.ready, spec.balance, spec.stop.kill_timeout);
    let inherited_node_options = spec.env_value("NODE_OPTIONS");
    let mut options = OsString::from(format!("--require {}", preload.display()));
    if let Some(theirs) = inherited_node_options {
        options.push(" ");
        options.push(theirs);
    }
    let owned: Vec<String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // Exact addresses, so that listen(port, host) finds the right one and
            // listen(port) finds every one (IPv4 and IPv6) of that port.
            let key = match &l.local {
                ListenAddr::AnyPort(port) => format!("*:{port}"),
                ListenAddr::Tcp(addr) => addr.to_string(),
                ListenAddr::Unix(path) => path.display().to_string(),
            };
            format!("{key}={}", corral_proto::env::LISTEN_FDS_START as usize + i)
        })
        .collect();
    let mut vars = vec![
        ("NODE_OPTIONS", options),
        ("CORRAL_NODE_LISTENERS", owned.join(",").into()),
        (
            "CORRAL_KILL_TIMEOUT_MS",
            kill_timeout.as_millis().to_string().into(),
        ),
    ];
    if adapter == Adapter::Wrapped {
        // A wrapper that is node itself (npm) would take NODE_CHANNEL_FD for its own.
        vars.push(("CORRAL_NODE_WRAPPED", "1".into()));
        return finish(vars, ready);
    }
    vars.push(("NODE_CHANNEL_FD", channel_fd.to_string().into()));
    vars.push(("NODE_CHANNEL_SERIALIZATION_MODE", "json".into()));
    if spec.asked_ports {
        // listen(port) on a port corral has no listener for asks corral to bind it.
        // (Listeners travel only on Node's IPC channel, so not through a wrapper.)
        vars.push(("CORRAL_NODE_BIND", "1".into()));
    }
    // Node gets connections handed over only when a balance mode is asked for
    // explicitly; by default it accepts from the shared socket, which is fastest.
    // (Handles travel only on Node's IPC channel, so not through a wrapper.)
    if matches!(
        balance,
        Balance::RoundRobin | Balance::LeastLoaded | Balance::Sticky
    ) {
        vars.push(("CORRAL_NODE_DISPATCH", "1".into()));
    }
    if balance == Balance::Reuseport {
        vars.push(("CORRAL_NODE_TAKES", "1".into()));
    }
    finish(vars, ready)
}

fn finish(
    mut vars: Vec<(&'static str, OsString)>,
    ready: ReadyPolicy,
) -> Vec<(&'static str, OsString)> {
    if matches!(ready, ReadyPolicy::Notify { .. }) {
        // The app says when it is ready (process.send('ready')), as with PM2's wait_ready.
        vars.push(("CORRAL_WAIT_READY", "1".into()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_of_node_get_the_wrapped_adapter() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            adapter_for(Path::new("/usr/bin/node"), &[]),
            Some(Adapter::Direct)
        );
        assert_eq!(
            adapter_for(Path::new("/usr/bin/npm"), &args(&["start"])),
            Some(Adapter::Wrapped)
        );
        assert_eq!(
            adapter_for(
                Path::new("/bin/sh"),
                &args(&["-c", "node app.js; echo done"])
            ),
            Some(Adapter::Wrapped)
        );
        assert_eq!(
            adapter_for(Path::new("/bin/sh"), &args(&["-c", "python3 srv.py"])),
            None
        );
        assert_eq!(adapter_for(Path::new("/usr/bin/python3"), &[]), None);
    }

    #[test]
    fn auto_is_reuseport_for_node_apps_only() {
        let cmd = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let node = cmd(&["node", "app.js"]);
        assert_eq!(balance_for(Balance::Auto, &node, 2, 2), Balance::Reuseport);
        assert_eq!(
            balance_for(Balance::Auto, &cmd(&["npm", "start"]), 1, 2),
            Balance::Reuseport
        );
        assert_eq!(
            balance_for(Balance::Auto, &node, 8, 2),
            Balance::Auto,
            "more workers than CPUs: shared is faster"
        );
        assert_eq!(balance_for(Balance::Shared, &node, 2, 2), Balance::Shared);
        assert_eq!(
            balance_for(Balance::Reuseport, &node, 8, 2),
            Balance::Reuseport
        );
        assert_eq!(
            balance_for(Balance::Auto, &cmd(&["python3", "srv.py"]), 2, 2),
            Balance::Auto
        );
    }

    #[test]
    fn recognises_node_by_name() {
        assert_eq!(adapter_for(Path::new("nodejs"), &[]), Some(Adapter::Direct));
        assert_ne!(
            adapter_for(Path::new("/opt/node/bin/npm"), &[]),
            Some(Adapter::Direct)
        );
    }
}
