//! `corral startup` / `unstartup`: a systemd unit that runs the daemon with the saved apps.

use std::path::PathBuf;

use anyhow::{anyhow, Context};

use crate::cli::StartupArgs;
use crate::exit::Failure;
use crate::home::Home;

/// A systemd unit running the daemon in the foreground with the saved apps.
/// `path` is the PATH the user had when asking for it, so that interpreters installed
/// per user (nvm's node, pyenv's python) are found as in their shell.
pub fn systemd_unit(exe: &str, home: &Home, user: Option<&str>, path: &str) -> String {
    let (user_line, wanted_by) = match user {
        Some(name) => (format!("User={name}\n"), "multi-user.target"),
        None => (String::new(), "default.target"),
    };
    // systemd would read `%` and `$` in an Environment= value itself.
    let path = path.replace('%', "%%").replace('$', "$$");
    format!(
        "[Unit]\n\
         Description=corral process manager\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         {user_line}\
         Environment=CORRAL_HOME={home}\n\
         Environment=\"PATH={path}\"\n\
         LimitNOFILE=65536\n\
         ExecStart={exe} daemon --resurrect\n\
         ExecReload={exe} reload all\n\
         ExecStop={exe} kill\n\
         # corral drains its workers itself (ExecStop); give it the time its apps' kill\n\
         # timeouts need. KillMode=process: when the daemon dies, its apps and its holder\n\
         # live on, and the daemon Restart= starts takes them back.\n\
         KillMode=process\n\
         TimeoutStopSec=60\n\
         Restart=on-failure\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        home = home.dir.display(),
    )
}

pub fn startup(home: &Home, args: &crate::cli::StartupArgs) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .context("cannot find the corral executable")
        .map_err(Failure::Runtime)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let unit = systemd_unit(
        &exe.display().to_string(),
        home,
        (!args.user).then_some(user.as_str()),
        &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    if !args.install {
        out!("{unit}");
        return Ok(());
    }
    let (path, _) = unit_path(args.user).map_err(Failure::Runtime)?;
    let enable = if args.user {
        "systemctl --user daemon-reload && systemctl --user enable --now corral".to_owned()
    } else {
        format!("systemctl daemon-reload && systemctl enable --now corral-{user}")
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .map_err(Failure::Runtime)?;
    }
    std::fs::write(&path, unit)
        .with_context(|| {
            format!(
                "cannot write {} (system units need root; try --user)",
                path.display()
            )
        })
        .map_err(Failure::Runtime)?;
    outln!("wrote {}; now run: {enable}", path.display());
    Ok(())
}

/// Where `startup --install` writes its unit, and how to disable it.
pub fn unit_path(user_unit: bool) -> anyhow::Result<(PathBuf, String)> {
    if user_unit {
        let config = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("HOME is not set"))?
            .join(".config/systemd/user");
        return Ok((
            config.join("corral.service"),
            "systemctl --user disable --now corral".into(),
        ));
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    Ok((
        PathBuf::from(format!("/etc/systemd/system/corral-{user}.service")),
        format!("systemctl disable --now corral-{user}"),
    ))
}

/// `unstartup`: removes the unit `startup --install` wrote.
pub fn unstartup(args: &StartupArgs) -> Result<(), Failure> {
    let (path, disable) = unit_path(args.user).map_err(Failure::Runtime)?;
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
