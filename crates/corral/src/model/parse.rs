//! Value parsers for options typed as text: durations, sizes, signals, `--ready`,
//! `--env`, env files. clap and config files use the same ones.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::kinds::{EnvArg, ReadyArg};

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write a duration like 500ms, 2s or 1m"))
}

pub(crate) fn parse_ready(s: &str) -> Result<ReadyArg, String> {
    if s == "notify" {
        return Ok(ReadyArg::Notify);
    }
    match s.strip_prefix("delay:") {
        Some(d) => parse_duration(d).map(ReadyArg::Delay),
        None => Err("expected `notify` or `delay:DURATION` (for example delay:2s)".into()),
    }
}

pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal has number {n}"));
    }
    name.parse::<Signal>()
        .map_err(|_| "expected a signal name like SIGTERM, TERM, SIGINT or SIGQUIT".into())
}

/// `512M`, `1G`, `300MiB`, `1048576`: binary units, as PM2's max_memory_restart.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || "expected a size like 512M, 1G or 300MiB".to_string();
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(bad()),
    };
    match n.checked_mul(1 << shift) {
        Some(0) | None => Err(bad()),
        Some(bytes) => Ok(bytes),
    }
}

/// The variables of an env file: `KEY=VALUE` lines, `#` comments, an optional `export `,
/// values optionally in single or double quotes. Errors name the file and line.
pub fn read_env_file(path: &Path) -> anyhow::Result<Vec<(OsString, OsString)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --env-file {}", path.display()))?;
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!(
                "{}:{}: expected KEY=VALUE, found `{line}`",
                path.display(),
                i + 1
            );
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!(
                "{}:{}: `{key}` is not a variable name",
                path.display(),
                i + 1
            );
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| value.strip_prefix(*open)?.strip_suffix(*close))
            .unwrap_or(value);
        vars.push((OsString::from(key), OsString::from(unquoted)));
    }
    Ok(vars)
}

/// `KEY=VALUE`, or a bare profile name for a config file's `env_<profile>` (PM2's
/// `--env production`).
pub(crate) fn parse_env(s: &str) -> Result<EnvArg, String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(EnvArg::Var(key.into(), value.into())),
        None if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Ok(EnvArg::Profile(s.into()))
        }
        _ => Err("expected KEY=VALUE (or a profile name with a config file)".into()),
    }
}
