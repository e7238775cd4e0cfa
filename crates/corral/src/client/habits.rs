//! PM2's other habits: `report`, `init` (an ecosystem file), shell completions, the man page.

use std::path::PathBuf;

use anyhow::Context;
use corral_proto::control::Response;

use super::conn;
use crate::cli::InitArgs;
use crate::exit::Failure;
use crate::home::Home;
use crate::model::Request;

/// What a bug report needs: versions, the daemon and its apps, its recent messages.
pub fn report(home: &Home) -> Result<(), Failure> {
    let version = |program: &str| {
        std::process::Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "not found".into())
    };
    outln!("corral {}", env!("CARGO_PKG_VERSION"));
    outln!(
        "control protocol v{}",
        corral_proto::control::PROTOCOL_VERSION
    );
    let uname = nix::sys::utsname::uname().map_err(|e| Failure::Runtime(e.into()))?;
    outln!(
        "os {} {} {}",
        uname.sysname().to_string_lossy(),
        uname.release().to_string_lossy(),
        uname.machine().to_string_lossy()
    );
    outln!("usable cpus {}", corral_core::spec::usable_cpus());
    outln!("node {}", version("node"));
    outln!("home {}", home.dir.display());
    match conn::request(home, Request::Ping, false).map(Response::outcome) {
        Ok(Ok(message)) => outln!("daemon {message}"),
        Ok(Err(message)) => outln!("daemon error: {message}"),
        Err(e) => outln!("daemon not answering: {e:#}"),
    }
    outln!();
    if let Ok(Response::Apps { apps }) = conn::request(home, Request::List, false) {
        out!("{}", super::table::table(&apps));
    }
    let log = home.dir.join("daemon.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let recent: Vec<&str> = text.lines().rev().take(30).collect();
    outln!("\nlast {} lines of {}:", recent.len(), log.display());
    for line in recent.into_iter().rev() {
        outln!("{}", crate::secrets::mask_urls(line));
    }
    Ok(())
}

const ECOSYSTEM: &str = r#"// corral reads PM2 ecosystem files as they are: `corral start ecosystem.config.js`.
// Every key is optional but `script`. See docs/moving-from-pm2.md for all of them.
module.exports = {
  apps: [
    {
      name: 'app',
      script: './app.js',
      // One worker per usable CPU; corral shares the port your app listens on.
      instances: 'max',
      exec_mode: 'cluster',
      env: { NODE_ENV: 'development', PORT: 3000 },
      // `corral start ecosystem.config.js --env production`
      env_production: { NODE_ENV: 'production' },
      // Replace a worker (replacement first) above this much memory.
      max_memory_restart: '500M',
      // How long a worker may drain before it is killed (ms).
      kill_timeout: 10000,
      // Wait for process.send('ready') instead of 'listening'.
      // wait_ready: true,
      // corral's own: bind the port up front instead of when the app asks.
      // listen: '3000',
    },
  ],
};
"#;

const CORRAL_TOML: &str = r#"# corral's config file: `corral start corral.toml`. Every key is optional but
# `script`; PM2's key names work too. See docs/moving-from-pm2.md.

[[app]]
name = "app"
script = "./app.js"
# Where corral listens: the workers get it as fd 3 (or Node's listen(PORT)).
listen = ["3000"]
# One worker per usable CPU; "-1" is one less, or a number.
instances = "max"
# How long a worker may drain before it is killed.
kill_timeout = "10s"
# Replace a worker (replacement first) above this much memory.
max_memory_restart = "500M"

[app.env]
NODE_ENV = "production"
"#;

/// `init` / `ecosystem`: a commented starter file; never overwrites one.
pub fn init(args: &InitArgs) -> Result<(), Failure> {
    let (name, text) = if args.toml {
        ("corral.toml", CORRAL_TOML)
    } else {
        ("ecosystem.config.js", ECOSYSTEM)
    };
    let path = PathBuf::from(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot write {name} (is there one already?)"))
        .map_err(Failure::Runtime)?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {name}"))
        .map_err(Failure::Runtime)?;
    outln!("wrote {name}; start it with `corral start {name}`");
    Ok(())
}

/// `completions SHELL`: the script clap writes from the CLI's own definitions.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::Cli::command(), "corral", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    Ok(())
}

/// `man`: the manual page, roff, from the CLI's own definitions.
pub fn man() -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(crate::cli::Cli::command())
        .render(&mut out)
        .map_err(|e| Failure::Runtime(e.into()))?;
    out!("{}", String::from_utf8_lossy(&out));
    Ok(())
}
