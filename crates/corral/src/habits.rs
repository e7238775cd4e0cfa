//! PM2 habits and the CLI's own odds and ends: the verbs PM2 users type (`startOrReload`,
//! `reload ecosystem.config.js`, `reset`, `reloadLogs`, `report`, `init`, `unstartup`,
//! `jlist`), shell completions and the man page.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

use crate::cli::{InitArgs, StartupArgs, Target};
use crate::daemon::client;
use crate::daemon::protocol::{ApplyMode, ConfigRef, Request, Response, StartApp};
use crate::daemon::Home;
use crate::exit::Failure;

/// A config file's apps as start requests with their names, warnings said; every app is
/// checked before any is acted on.
fn file_apps(path: &Path, profile: Option<String>) -> Result<Vec<(StartApp, String)>, Failure> {
    let loaded =
        crate::config::load(path, profile.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
    for warning in &loaded.warnings {
        errln!("warning: {warning}");
    }
    let config = ConfigRef {
        path: std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string(),
        profile,
    };
    loaded
        .start_apps(&config)
        .into_iter()
        .map(|app| {
            let parsed = crate::daemon::parse::parse_start(&app)
                .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
            Ok((app, parsed.spec.name))
        })
        .collect()
}

/// Every app of a config file: started if not running, else given the file's settings
/// and reloaded (or restarted).
pub fn apply_file(
    home: &Home,
    path: &Path,
    profile: Option<String>,
    mode: ApplyMode,
) -> Result<(), Failure> {
    let mut failed = 0;
    for (app, _) in file_apps(path, profile)? {
        let request = Request::Apply {
            app: Box::new(app),
            mode,
        };
        match client::request(home, request, true).map_err(Failure::Runtime)? {
            Response::Ok { message, .. } if message.is_empty() => {}
            Response::Ok { message, .. } => outln!("{message}"),
            Response::Error { message } => {
                errln!("error: {message}");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        return Ok(());
    }
    Err(Failure::Runtime(anyhow!(
        "{failed} of the apps in {} did not start or reload (see above)",
        path.display()
    )))
}

/// What `stop|restart|reload|delete FILE` does to each app of the file.
pub enum FileVerb {
    /// reload, restart: take the file's settings (starting what doesn't run).
    Apply(ApplyMode),
    Stop,
    Delete,
}

/// `stop|restart|reload|delete FILE`: the verb for each app of the file. None when the
/// target is not a config file.
pub fn on_file(home: &Home, target: &Target, verb: FileVerb) -> Option<Result<(), Failure>> {
    let path = Path::new(&target.target);
    if !crate::config::is_config(path) || !path.is_file() {
        return None;
    }
    let request: fn(String) -> Request = match verb {
        FileVerb::Apply(mode) => return Some(apply_file(home, path, target.profile.clone(), mode)),
        FileVerb::Stop => |target| Request::Stop { target },
        FileVerb::Delete => |target| Request::Delete { target },
    };
    Some(each_app_of(home, path, request))
}

fn each_app_of(home: &Home, path: &Path, request: fn(String) -> Request) -> Result<(), Failure> {
    for (_, name) in file_apps(path, None)? {
        match client::request(home, request(name), false).map_err(Failure::Runtime)? {
            Response::Ok { message, .. } if message.is_empty() => {}
            Response::Ok { message, .. } => outln!("{message}"),
            Response::Error { message } => errln!("error: {message}"),
        }
    }
    Ok(())
}

/// `jlist` (one line) and `prettylist` (indented): `ls` as JSON.
pub fn json_list(home: &Home, pretty: bool) -> Result<(), Failure> {
    let apps = crate::commands::listed(home)?;
    let text = if pretty {
        serde_json::to_string_pretty(&apps)
    } else {
        serde_json::to_string(&apps)
    };
    outln!("{}", text.expect("views serialize"));
    Ok(())
}

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
        crate::daemon::protocol::PROTOCOL_VERSION
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
    match client::request(home, Request::Ping, false) {
        Ok(Response::Ok { message, .. }) => outln!("daemon {message}"),
        Ok(Response::Error { message }) => outln!("daemon error: {message}"),
        Err(e) => outln!("daemon not answering: {e:#}"),
    }
    outln!();
    if let Ok(Response::Ok { apps, .. }) = client::request(home, Request::List, false) {
        out!("{}", crate::commands::table(&apps));
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

/// `unstartup`: removes the unit `startup --install` wrote.
pub fn unstartup(args: &StartupArgs) -> Result<(), Failure> {
    let (path, disable) = crate::commands::unit_path(args.user).map_err(Failure::Runtime)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {
            outln!("removed {}; now run: {disable}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::Runtime(anyhow!(
            "no unit at {} (nothing to remove)",
            path.display()
        ))),
        Err(e) => Err(Failure::Runtime(
            anyhow::Error::from(e).context(format!("cannot remove {}", path.display())),
        )),
    }
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
