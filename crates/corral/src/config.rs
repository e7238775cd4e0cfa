//! Config files — `corral.toml` and PM2 ecosystem files (`.json`, `.yaml`, `.js`) — turned
//! into the arguments of `corral start`, one list per app, with warnings for keys corral
//! doesn't know and errors that name the file, the key and the line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// A config file's apps, as `corral start` arguments, and what to tell the user.
#[derive(Debug, Default)]
pub struct Loaded {
    pub apps: Vec<Vec<String>>,
    pub warnings: Vec<String>,
    /// Where relative paths in the file start from.
    pub dir: PathBuf,
}

/// A config value that can't be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
    Yaml,
    Js,
}

/// Whether `path` names a config file (rather than a script to run).
pub fn is_config(path: &Path) -> bool {
    format_of(path).is_some()
}

fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?;
    let ext = path.extension()?.to_str()?;
    match ext {
        "toml" => Some(Format::Toml),
        "json" => Some(Format::Json),
        "yaml" | "yml" => Some(Format::Yaml),
        // A .js file is a script to run, unless it is named like a PM2 config.
        "js" | "cjs" if name.contains(".config.") || name.starts_with("ecosystem") => {
            Some(Format::Js)
        }
        _ => None,
    }
}

/// Reads `path`; `profile` selects `env_<profile>` (PM2's `--env production`).
pub fn load(path: &Path, profile: Option<&str>) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let fail = |key: &str, message: String| ConfigError {
        file: file.clone(),
        key: key.to_owned(),
        line: None,
        message,
    };
    let format = format_of(path).ok_or_else(|| fail("(file)", "not a config file".into()))?;
    let source = std::fs::read_to_string(path).map_err(|e| fail("(file)", e.to_string()))?;
    let value = parse(path, format, &source).map_err(|(line, message)| ConfigError {
        file: file.clone(),
        key: "(syntax)".into(),
        line,
        message,
    })?;
    let (list_key, apps) = match (format, &value) {
        (Format::Toml, v) => ("app", v.get("app")),
        (_, v) => ("apps", v.get("apps")),
    };
    let apps = apps.and_then(Value::as_array).ok_or_else(|| {
        fail(
            list_key,
            format!("expected a list of apps under `{list_key}`"),
        )
    })?;
    if apps.is_empty() {
        return Err(fail(
            list_key,
            format!(
                "no apps: `{list_key}` is empty; add at least one app with a `name` and a `script`"
            ),
        ));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut loaded = Loaded {
        dir,
        ..Loaded::default()
    };
    for (i, app) in apps.iter().enumerate() {
        let at = format!("{list_key}[{i}]");
        let app = app
            .as_object()
            .ok_or_else(|| fail(&at, "expected a table of settings".into()))?;
        let context = Context {
            file: &file,
            source: &source,
            prefix: at,
        };
        let argv = to_argv(app, profile, &context, &mut loaded.warnings)?;
        loaded.apps.push(argv);
    }
    Ok(loaded)
}

fn parse(path: &Path, format: Format, source: &str) -> Result<Value, (Option<usize>, String)> {
    match format {
        Format::Toml => toml::from_str::<toml::Value>(source)
            .map_err(|e| {
                let line = e.span().map(|s| source[..s.start].lines().count().max(1));
                (line, e.message().to_owned())
            })
            .and_then(|v| serde_json::to_value(v).map_err(|e| (None, e.to_string()))),
        Format::Json => serde_json::from_str(source).map_err(|e| (Some(e.line()), e.to_string())),
        Format::Yaml => serde_norway::from_str::<Value>(source)
            .map_err(|e| (e.location().map(|l| l.line()), e.to_string())),
        Format::Js => eval_js(path),
    }
}

/// How long a `.js` config may take to evaluate, unless `CORRAL_CONFIG_TIMEOUT` says
/// otherwise (`30s`, `500ms`).
const JS_TIMEOUT: Duration = Duration::from_secs(10);

/// Evaluates the module, then writes it as JSON on what was stdout; anything the config
/// itself prints (console.log) goes to stderr, so it can't spoil the JSON.
const JS_EVALUATOR: &str = "\
const out = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
const c = require(process.argv[1]);
out(JSON.stringify(c && c.default || c) + '\\n');
process.exit(0);
";

/// A `.js` ecosystem file is a Node module: node evaluates it and prints it as JSON,
/// within a time limit (a config that loops or waits forever is stopped and named).
fn eval_js(path: &Path) -> Result<Value, (Option<usize>, String)> {
    use std::io::Read;
    let absolute = std::fs::canonicalize(path).map_err(|e| (None, e.to_string()))?;
    let timeout = std::env::var("CORRAL_CONFIG_TIMEOUT")
        .ok()
        .and_then(|t| humantime::parse_duration(&t).ok())
        .unwrap_or(JS_TIMEOUT);
    let mut child = std::process::Command::new("node")
        .args(["-e", JS_EVALUATOR, &absolute.display().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| (None, format!("evaluating a .js config needs node ({e}); use .json, .yaml or corral.toml instead")))?;
    // Read both pipes from threads, so a config that prints a lot can't block node.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    None,
                    format!(
                        "node did not finish evaluating it within {} (does it loop or wait for something?); \
                         set CORRAL_CONFIG_TIMEOUT to allow longer",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err((
            None,
            format!(
                "node could not load it: {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
        ));
    }
    serde_json::from_slice(&stdout).map_err(|e| (None, e.to_string()))
}

struct Context<'a> {
    file: &'a str,
    source: &'a str,
    prefix: String,
}

impl Context<'_> {
    fn boolean(&self, key: &str, value: &Value) -> Result<bool, ConfigError> {
        value
            .as_bool()
            .ok_or_else(|| self.error(key, "expected true or false"))
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: format!("{}.{key}", self.prefix),
            line: line_of(self.source, key),
            message: message.into(),
        }
    }
}

/// The line where `key` is first set (approximate for files with several apps).
fn line_of(source: &str, key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let single = format!("'{key}'");
    source
        .lines()
        .position(|line| {
            let t = line.trim_start();
            // A quoted key anywhere (JSON and JS put several on one line), or a bare
            // `key =` / `key:` at the start (TOML, YAML).
            line.contains(&quoted)
                || line.contains(&single)
                || t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']))
                || t.strip_prefix("- ").is_some_and(|r| r.starts_with(key))
        })
        .map(|i| i + 1)
}

/// Every key corral understands, for "did you mean".
const KNOWN: &[&str] = &[
    "env_file",
    "name",
    "script",
    "args",
    "cwd",
    "interpreter",
    "instances",
    "exec_mode",
    "env",
    "max_memory_restart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "kill_timeout",
    "listen_timeout",
    "wait_ready",
    "shutdown_with_message",
    "listen",
    "balance",
    "ready",
    "ready_timeout",
    "kill_signal",
    "watchdog",
    "heartbeat_timeout",
    "lag_warning",
    "autorestart",
    "cron_restart",
    "watch",
    "ignore_watch",
    "out_file",
    "error_file",
    "merge_logs",
    "node_args",
    "interpreter_args",
    "time",
    "vizion",
    "source_map_support",
];

/// PM2 keys that corral reads but does not act on yet.
const NOT_YET: &[&str] = &[
    "node_args",
    "interpreter_args",
    "vizion",
    "source_map_support",
];

fn to_argv(
    app: &Map<String, Value>,
    profile: Option<&str>,
    cx: &Context,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let script = match app.get("script") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(cx.error(
                "script",
                "expected the path of the script or program to run",
            ))
        }
        None => return Err(cx.error("script", "missing: every app needs a `script`")),
    };
    let mut argv = vec![script];
    for (key, value) in app {
        let text = || scalar(value).ok_or_else(|| cx.error(key, "expected a string or a number"));
        match key.as_str() {
            "script" | "args" | "env" | "exec_mode" => {}
            "name" | "cwd" | "interpreter" | "max_memory_restart" | "balance" | "ready"
            | "kill_signal" => {
                let name = match key.as_str() {
                    "max_memory_restart" => "max-memory",
                    "kill_signal" => "kill-signal",
                    other => other,
                };
                push_flag(&mut argv, name, text()?);
            }
            "instances" => push_flag(&mut argv, "instances", text()?),
            "max_restarts" => push_flag(&mut argv, "max-restarts", text()?),
            "min_uptime"
            | "restart_delay"
            | "exp_backoff_restart_delay"
            | "kill_timeout"
            | "listen_timeout"
            | "ready_timeout"
            | "watchdog"
            | "heartbeat_timeout"
            | "lag_warning" => {
                let name = match key.as_str() {
                    "min_uptime" => "min-uptime",
                    "restart_delay" | "exp_backoff_restart_delay" => "restart-delay",
                    "kill_timeout" => "kill-timeout",
                    "listen_timeout" | "ready_timeout" => "ready-timeout",
                    "heartbeat_timeout" => "heartbeat-timeout",
                    "lag_warning" => "lag-warning",
                    other => other,
                };
                push_flag(
                    &mut argv,
                    name,
                    duration(value).ok_or_else(|| {
                        cx.error(
                            key,
                            "expected milliseconds (a number) or a duration like \"2s\"",
                        )
                    })?,
                );
            }
            "wait_ready" => {
                if cx.boolean(key, value)? {
                    push_flag(&mut argv, "ready", "notify".into());
                }
            }
            "shutdown_with_message" => {
                if cx.boolean(key, value)? {
                    argv.push("--shutdown-with-message".into());
                }
            }
            "watch" => match value {
                Value::Bool(true) => argv.push("--watch".into()),
                Value::Bool(false) => {}
                other => {
                    let dirs = list_of(other).ok_or_else(|| {
                        cx.error(key, "expected true, a directory or a list of them")
                    })?;
                    for dir in dirs {
                        argv.push(format!("--watch={dir}"));
                    }
                }
            },
            "ignore_watch" => {
                let patterns = list_of(value)
                    .ok_or_else(|| cx.error(key, "expected a pattern or a list of them"))?;
                for pattern in patterns {
                    push_flag(&mut argv, "ignore-watch", pattern);
                }
            }
            "cron_restart" => push_flag(&mut argv, "cron-restart", text()?),
            "time" => {
                if cx.boolean(key, value)? {
                    argv.push("--time".into());
                }
            }
            // corral writes one timestamp format (RFC 3339, UTC); any format turns it on.
            "log_date_format" => argv.push("--time".into()),
            "autorestart" => {
                if !cx.boolean(key, value)? {
                    argv.push("--no-autorestart".into());
                }
            }
            "env_file" => push_flag(&mut argv, "env-file", text()?),
            "out_file" => push_flag(&mut argv, "out-file", text()?),
            "error_file" => push_flag(&mut argv, "error-file", text()?),
            "merge_logs" => {
                if cx.boolean(key, value)? {
                    argv.push("--merge-logs".into());
                }
            }
            "listen" => {
                for addr in list_of(value)
                    .ok_or_else(|| cx.error(key, "expected an address or a list of them"))?
                {
                    push_flag(&mut argv, "listen", addr);
                }
            }
            k if k.starts_with("env_") => {}
            k if NOT_YET.contains(&k) => warnings.push(format!(
                "{}: {}.{k} is not supported by corral yet; ignored",
                cx.file, cx.prefix
            )),
            k => {
                let hint = crate::daemon::closest_key(k, KNOWN)
                    .map(|near| format!(" (did you mean `{near}`?)"))
                    .unwrap_or_default();
                warnings.push(format!(
                    "{}: unknown key {}.{k}{hint}; ignored",
                    cx.file, cx.prefix
                ));
            }
        }
    }
    if app.get("exec_mode").and_then(Value::as_str) == Some("fork")
        && !app.contains_key("instances")
    {
        push_flag(&mut argv, "instances", "1".into());
    }
    for (key, value) in env_of(app, profile, cx)? {
        push_flag(&mut argv, "env", format!("{key}={value}"));
    }
    if let Some(args) = app.get("args") {
        let args = match args {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            other => {
                list_of(other).ok_or_else(|| cx.error("args", "expected a string or a list"))?
            }
        };
        if !args.is_empty() {
            argv.push("--".into());
            argv.extend(args);
        }
    }
    Ok(argv)
}

/// `env`, overridden by `env_<profile>` when one is asked for.
fn env_of(
    app: &Map<String, Value>,
    profile: Option<&str>,
    cx: &Context,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut read = |key: &str| -> Result<(), ConfigError> {
        let Some(table) = app.get(key) else {
            return Ok(());
        };
        let table = table
            .as_object()
            .ok_or_else(|| cx.error(key, "expected a table of NAME = value"))?;
        for (name, value) in table {
            let value = scalar(value).ok_or_else(|| {
                cx.error(
                    &format!("{key}.{name}"),
                    "expected a string, number or boolean",
                )
            })?;
            vars.retain(|(n, _)| n != name);
            vars.push((name.clone(), value));
        }
        Ok(())
    };
    read("env")?;
    if let Some(profile) = profile {
        let key = format!("env_{profile}");
        if !app.contains_key(&key) {
            return Err(cx.error(
                &key,
                format!("--env {profile} asks for `{key}`, which this app doesn't have"),
            ));
        }
        read(&key)?;
    }
    Ok(vars)
}

fn push_flag(argv: &mut Vec<String>, name: &str, value: String) {
    argv.push(format!("--{name}"));
    argv.push(value);
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list_of(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

/// PM2 durations are milliseconds; strings may carry a unit.
fn duration(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_u64().map(|ms| format!("{ms}ms")),
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
            Some(format!("{s}ms"))
        }
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corral-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn an_ecosystem_json_maps_pm2_keys() {
        let path = write(
            "ecosystem.config.json",
            r#"{ "apps": [ { "name": "api", "script": "server.js", "instances": "max",
                "max_memory_restart": "300M", "kill_timeout": 3000, "wait_ready": true,
                "env": { "MODE": "dev", "PORT": 3000 }, "env_production": { "MODE": "prod" },
                "args": "--verbose --port 1", "watch": true, "instnces": 2 } ] }"#,
        );
        let loaded = load(&path, Some("production")).unwrap();
        assert_eq!(
            loaded.apps[0],
            // Keys in name order, then env (the profile's values last), then args.
            [
                "server.js",
                "--instances",
                "max",
                "--kill-timeout",
                "3000ms",
                "--max-memory",
                "300M",
                "--name",
                "api",
                "--ready",
                "notify",
                "--watch",
                "--env",
                "PORT=3000",
                "--env",
                "MODE=prod",
                "--",
                "--verbose",
                "--port",
                "1"
            ]
            .map(String::from)
        );
        assert_eq!(
            loaded.warnings,
            [format!(
                "{}: unknown key apps[0].instnces (did you mean `instances`?); ignored",
                path.display()
            )]
        );
    }

    #[test]
    fn corral_toml_uses_app_tables() {
        let path = write(
            "corral.toml",
            "[[app]]\nname = \"web\"\nscript = \"./bin/web\"\nlisten = [\"3000\", \"unix:/tmp/w.sock\"]\nbalance = \"round-robin\"\n",
        );
        let loaded = load(&path, None).unwrap();
        assert_eq!(
            loaded.apps[0],
            [
                "./bin/web",
                "--balance",
                "round-robin",
                "--listen",
                "3000",
                "--listen",
                "unix:/tmp/w.sock",
                "--name",
                "web"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn yaml_works_too() {
        let path = write(
            "ecosystem.yml",
            "apps:\n  - name: q\n    script: worker.py\n    instances: 2\n",
        );
        let loaded = load(&path, None).unwrap();
        assert_eq!(
            loaded.apps[0],
            ["worker.py", "--instances", "2", "--name", "q"].map(String::from)
        );
    }

    #[test]
    fn bad_values_name_the_file_key_and_line() {
        let path = write(
            "bad.json",
            "{\n  \"apps\": [ {\n    \"script\": \"a.js\",\n    \"kill_timeout\": [1]\n  } ]\n}\n",
        );
        let err = load(&path, None).unwrap_err();
        assert_eq!(err.key, "apps[0].kill_timeout");
        assert_eq!(err.line, Some(4));
        assert!(err.to_string().ends_with("bad.json:4: apps[0].kill_timeout: expected milliseconds (a number) or a duration like \"2s\""), "{err}");
        let path = write("broken.toml", "[[app]]\nname = \"x\nscript = \"y\"\n");
        let err = load(&path, None).unwrap_err();
        assert_eq!(err.key, "(syntax)");
        assert_eq!(err.line, Some(2), "{err}");
        let path = write("noscript.yaml", "apps:\n  - name: x\n");
        assert_eq!(
            load(&path, None).unwrap_err().message,
            "missing: every app needs a `script`"
        );
    }

    #[test]
    fn a_missing_profile_is_an_error() {
        let path = write("p.json", r#"{"apps":[{"script":"a.js"}]}"#);
        let err = load(&path, Some("staging")).unwrap_err();
        assert_eq!(
            err.message,
            "--env staging asks for `env_staging`, which this app doesn't have"
        );
    }

    #[test]
    fn js_files_are_configs_only_when_named_like_one() {
        assert!(is_config(Path::new("ecosystem.config.js")));
        assert!(is_config(Path::new("pm2.config.cjs")));
        assert!(!is_config(Path::new("server.js")));
        assert!(is_config(Path::new("corral.toml")));
    }
}
