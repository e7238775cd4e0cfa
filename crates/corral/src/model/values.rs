//! How app option values are read from config files and the control socket, and written
//! back: PM2's forms (milliseconds as numbers, `true` for `wait_ready`, one value or a
//! list) and corral's text forms (`2s`, `max`, `127.0.0.1:3000`). Used as
//! `#[serde(with = "...")]` on [`crate::model::AppOptions`], so flags, files, requests and
//! the dump all read one model.

use std::path::PathBuf;
use std::time::Duration;

use corral_core::dispatch::Balance;
use corral_core::spec::{Instances, ListenAddr, ListenSpec};
use nix::sys::signal::Signal;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::kinds::{BindShim, ExecMode, LogFormat, ReadyArg, StdinMode};

/// A scalar as text: strings as they are, numbers and booleans written out.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One scalar or a list of them, as texts.
fn texts<'de, D: Deserializer<'de>>(d: D, expected: &str) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                scalar_text(v).ok_or_else(|| de::Error::custom(format!("expected {expected}")))
            })
            .collect(),
        other => scalar_text(&other)
            .map(|s| vec![s])
            .ok_or_else(|| de::Error::custom(format!("expected {expected}"))),
    }
}

/// Durations: PM2 writes milliseconds (`3000`, `"3000"`); corral's forms (`"3s"`) work too.
pub mod duration {
    use super::*;

    pub const EXPECTED: &str = "expected milliseconds (a number) or a duration like \"2s\"";

    pub fn parse(value: &Value) -> Result<Duration, String> {
        match value {
            Value::Number(n) => n
                .as_u64()
                .map(Duration::from_millis)
                .ok_or_else(|| format!("{EXPECTED}, got {n}")),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{EXPECTED}, got \"{s}\"")),
            Value::String(s) => {
                humantime::parse_duration(s).map_err(|_| format!("{EXPECTED}, got \"{s}\""))
            }
            other => Err(format!("{EXPECTED}, got {other}")),
        }
    }

    pub fn text(d: &Duration) -> String {
        humantime::format_duration(*d).to_string()
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&Value::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// An optional duration (`null` or absent: none).
pub mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| duration::text(&d)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => duration::parse(&v).map(Some).map_err(de::Error::custom),
        }
    }
}

/// Values with a text form of their own (`Display` and a parser): instances, balance,
/// signals, readiness.
pub trait Text: Sized {
    fn to_text(&self) -> String;
    fn from_value(value: &Value) -> Result<Self, String>;
}

pub mod text {
    use super::*;

    pub fn serialize<T: Text, S: Serializer>(t: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_text())
    }

    pub fn deserialize<'de, T: Text, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::from_value(&Value::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// One value with a text form, or a list of them (`listen`).
pub mod text_list {
    use super::*;

    pub fn serialize<T: Text, S: Serializer>(t: &[T], s: S) -> Result<S::Ok, S::Error> {
        t.iter().map(Text::to_text).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, T: Text, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|v| T::from_value(v).map_err(de::Error::custom))
                .collect(),
            v => T::from_value(&v)
                .map(|t| vec![t])
                .map_err(de::Error::custom),
        }
    }
}

/// Texts from one string or a list (`ignore_watch`).
pub mod strings {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        texts(d, "a string or a list of them")
    }
}

/// Exit codes: one number or a list (PM2's `stop_exit_codes`).
pub fn codes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    texts(d, "an exit code (0 to 255) or a list of them")?
        .iter()
        .map(|t| {
            t.parse::<u8>().map_err(|_| {
                de::Error::custom(format!("expected exit codes from 0 to 255, got {t}"))
            })
        })
        .collect()
}

/// Paths from one string or a list (`env_file`).
pub mod paths {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(texts(d, "a path or a list of them")?
            .into_iter()
            .map(PathBuf::from)
            .collect())
    }
}

/// PM2's `watch`: `true` (the app's directory), `false`, a directory or a list of them.
pub mod watch {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        paths::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(vec![PathBuf::from(".")]),
            Value::Bool(false) | Value::Null => Ok(Vec::new()),
            other => paths::deserialize(other)
                .map_err(|_| de::Error::custom("expected true, a directory or a list of them")),
        }
    }
}

/// The environment: a table of `NAME: value` (strings, numbers and booleans, as PM2
/// files write them), or a list of `[NAME, value]` pairs, the order kept.
pub mod env {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        let expected = "expected a table of NAME: value";
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::Object(table) => table
                .iter()
                .map(|(name, value)| match (scalar_text(value), value) {
                    (Some(text), _) => Ok((name.clone(), text)),
                    // As PM2 passes them: a table or a list becomes its JSON text.
                    (None, Value::Object(_) | Value::Array(_)) => {
                        Ok((name.clone(), value.to_string()))
                    }
                    (None, _) => Err(de::Error::custom(format!(
                        "{name}: expected a string, number, boolean, table or list"
                    ))),
                })
                .collect(),
            Value::Array(pairs) => pairs
                .iter()
                .map(|pair| match pair {
                    Value::Array(kv) if kv.len() == 2 => {
                        match (scalar_text(&kv[0]), scalar_text(&kv[1])) {
                            (Some(k), Some(v)) => Ok((k, v)),
                            _ => Err(de::Error::custom(expected)),
                        }
                    }
                    _ => Err(de::Error::custom(expected)),
                })
                .collect(),
            _ => Err(de::Error::custom(expected)),
        }
    }
}

/// Sizes: bytes as a number, or `512M`, `1G`, `300MiB`.
pub mod opt_size {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Number(n) => match n.as_u64() {
                Some(bytes) if bytes > 0 => Ok(Some(bytes)),
                _ => Err(de::Error::custom(format!(
                    "expected a size like 512M, 1G or 300MiB, got {n}"
                ))),
            },
            Value::String(s) => crate::model::parse::parse_size(&s)
                .map(Some)
                .map_err(|e| de::Error::custom(format!("{e}, got \"{s}\""))),
            other => Err(de::Error::custom(format!(
                "expected a size like 512M, 1G or 300MiB, got {other}"
            ))),
        }
    }
}

fn got(value: &Value) -> String {
    format!("got {value}")
}

impl Text for Instances {
    fn to_text(&self) -> String {
        match self {
            Instances::Count(n) => n.to_string(),
            Instances::Max => "max".into(),
            Instances::MaxMinus(n) => format!("-{n}"),
        }
    }

    /// PM2's forms: a count, `max` or `0` (one per CPU), `-N` (CPUs less N).
    fn from_value(value: &Value) -> Result<Self, String> {
        let expected = "expected a number, \"max\" or a negative number (CPUs less that many)";
        let text = match value {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => return Err(format!("{expected}, {}", got(other))),
        };
        text.parse()
            .map_err(|_| format!("{expected}, {}", got(value)))
    }
}

/// A clap value enum's text: its flag spelling.
fn enum_text<T: clap::ValueEnum>(t: &T) -> String {
    t.to_possible_value()
        .expect("no variant is skipped")
        .get_name()
        .to_owned()
}

/// A clap value enum from its flag spelling, or one of PM2's other spellings (`aliases`).
fn enum_from<T: clap::ValueEnum>(value: &Value, aliases: &[(&str, &str)]) -> Result<T, String> {
    let text = value.as_str().unwrap_or_default();
    let text = aliases
        .iter()
        .find(|(alias, _)| *alias == text)
        .map_or(text, |(_, to)| to);
    T::from_str(text, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .map(|v| format!("\"{}\"", enum_text(v)))
            .collect();
        format!("expected {}, {}", names.join(" or "), got(value))
    })
}

impl Text for ExecMode {
    fn to_text(&self) -> String {
        enum_text(self)
    }

    /// PM2 writes `cluster`, `cluster_mode`, `fork` or `fork_mode`.
    fn from_value(value: &Value) -> Result<Self, String> {
        enum_from(value, &[("cluster_mode", "cluster"), ("fork_mode", "fork")])
    }
}

impl Text for BindShim {
    fn to_text(&self) -> String {
        enum_text(self)
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        enum_from(value, &[])
    }
}

impl Text for StdinMode {
    fn to_text(&self) -> String {
        enum_text(self)
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        enum_from(value, &[])
    }
}

impl Text for LogFormat {
    fn to_text(&self) -> String {
        enum_text(self)
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        enum_from(
            value,
            &[("raw", "text"), ("", "text"), ("pm2_json", "pm2-json")],
        )
    }
}

impl Text for Balance {
    fn to_text(&self) -> String {
        self.to_string()
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        let text = scalar_text(value).unwrap_or_default();
        text.parse::<Balance>().map_err(|e| e.to_string())
    }
}

impl Text for Signal {
    fn to_text(&self) -> String {
        self.as_str().to_owned()
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        let text =
            scalar_text(value).ok_or_else(|| format!("expected a signal name, {}", got(value)))?;
        crate::model::parse::parse_signal(&text)
    }
}

impl Text for ReadyArg {
    fn to_text(&self) -> String {
        match self {
            ReadyArg::Notify => "notify".into(),
            ReadyArg::Delay(d) => format!("delay:{}", duration::text(d)),
        }
    }

    /// `notify`, `delay:DURATION`, or PM2's `wait_ready` boolean.
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Bool(true) => Ok(ReadyArg::Notify),
            Value::Bool(false) => Ok(ReadyArg::default()),
            Value::String(s) => crate::model::parse::parse_ready(s),
            other => Err(format!(
                "expected `notify`, `delay:DURATION` or true/false, {}",
                got(other)
            )),
        }
    }
}

impl Text for ListenSpec {
    /// What parses back to the same listener.
    fn to_text(&self) -> String {
        let addr = match &self.addr {
            ListenAddr::AnyPort(port) => port.to_string(),
            other => other.to_string(),
        };
        match &self.name {
            Some(name) => format!("{name}={addr}"),
            None => addr,
        }
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        let text = scalar_text(value).ok_or_else(|| {
            format!(
                "expected an address like 3000 or 127.0.0.1:3000, {}",
                got(value)
            )
        })?;
        text.parse()
            .map_err(|e: corral_core::spec::ListenAddrError| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::AppOptions;

    #[test]
    fn options_survive_the_wire_and_the_dump_unchanged() {
        let mut options = AppOptions {
            listen: vec!["3000".parse().unwrap(), "api=127.0.0.1:0".parse().unwrap()],
            instances: "-1".parse().unwrap(),
            max_memory: Some(300 << 20),
            watchdog: Some(std::time::Duration::from_millis(1500)),
            ready: crate::model::kinds::ReadyArg::Notify,
            kill_signal: nix::sys::signal::Signal::SIGINT,
            autorestart: false,
            ..AppOptions::default()
        };
        options.env = vec![("B".into(), "2".into()), ("A".into(), "1".into())];
        let json = serde_json::to_string(&options).unwrap();
        let back: AppOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, options, "{json}");
    }

    #[test]
    fn pm2_spellings_of_modes_and_their_errors() {
        use super::Text;
        use crate::model::kinds::{ExecMode, LogFormat};
        let v = |s: &str| serde_json::Value::String(s.into());
        assert_eq!(
            ExecMode::from_value(&v("cluster_mode")),
            Ok(ExecMode::Cluster)
        );
        assert_eq!(ExecMode::from_value(&v("fork")), Ok(ExecMode::Fork));
        assert_eq!(LogFormat::from_value(&v("json")), Ok(LogFormat::Json));
        assert_eq!(
            ExecMode::from_value(&v("spawn")),
            Err("expected \"cluster\" or \"fork\", got \"spawn\"".into())
        );
        assert_eq!(ExecMode::Fork.to_text(), "fork");
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let from_nothing: AppOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(from_nothing, AppOptions::default());
        assert_eq!(
            from_nothing.kill_timeout,
            std::time::Duration::from_secs(10)
        );
        assert!(from_nothing.autorestart);
    }
}
