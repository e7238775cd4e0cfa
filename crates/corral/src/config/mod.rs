//! Config files — `corral.toml` and PM2 ecosystem files (`.json` read as JSON5, `.yaml`,
//! `.js`/`.cjs`/`.mjs`) — read into the typed options model: each app's keys deserialize
//! straight into [`AppOptions`] (PM2's key names are its serde aliases) and [`FileKeys`]
//! (what only files say: script, args, interpreter...). Unknown keys warn with a
//! suggestion; bad values fail naming the file, the line and the key path.
//!
//! Longer than 500 lines because PM2's file shapes (apps list, single app, TOML tables, JS modules) and their located errors read best side by side; the tests are in `tests.rs`.
//!
//! Longer than 500 lines: one reader per file format and the error positions they share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use corral_proto::control::ConfigRef;

use crate::model::names::{check_app_name, closest_key, name_from, resolve_command};
use crate::model::{AppOptions, LogFormat, StartApp};

pub mod start;

/// A config file's apps, typed, and what to tell the user.
#[derive(Debug)]
pub struct Loaded {
    pub apps: Vec<FileApp>,
    pub warnings: Vec<String>,
    /// Where relative paths in the file start from (absolute).
    pub dir: PathBuf,
}

/// One app of a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileApp {
    pub options: AppOptions,
    pub keys: FileKeys,
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
        "json" | "json5" => Some(Format::Json),
        "yaml" | "yml" => Some(Format::Yaml),
        // A .js file is a script to run, unless it is named like a PM2 config.
        "js" | "cjs" | "mjs" if name.contains(".config.") || name.starts_with("ecosystem") => {
            Some(Format::Js)
        }
        _ => None,
    }
}

/// What only a config file says about an app (the rest is [`AppOptions`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FileKeys {
    /// The script or program to run (PM2's `cmd` too).
    #[serde(alias = "cmd")]
    pub script: Option<String>,
    /// The app's arguments: a string (split on white space) or a list.
    #[serde(deserialize_with = "words")]
    pub args: Vec<String>,
    /// The program that runs the script (`none`: run it directly).
    #[serde(alias = "exec_interpreter")]
    pub interpreter: Option<String>,
    /// Arguments for the interpreter, before the script (`-u` for python, node flags).
    #[serde(alias = "node_args", deserialize_with = "words")]
    pub interpreter_args: Vec<String>,
    /// PM2's `log_type`: `json` writes worker lines as PM2's JSON objects.
    pub log_type: Option<String>,
    /// Keys PM2 files carry that have no meaning under corral; read so they don't warn.
    pub vizion: Option<Value>,
    pub source_map_support: Option<Value>,
    pub treekill: Option<Value>,
    pub pmx: Option<Value>,
    pub automation: Option<Value>,
    pub autostart: Option<Value>,
}

/// A string split on white space, or a list of scalars.
fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(de::Error::custom("expected a string or a list of strings")),
            })
            .collect(),
        other => Err(de::Error::custom(format!(
            "expected a string or a list of strings, got {other}"
        ))),
    }
}

/// Reads `path`; `profile` selects `env_<profile>` (PM2's `--env production`).
pub fn load(path: &Path, profile: Option<&str>) -> Result<Loaded, ConfigError> {
    load_in(path, profile, None)
}

/// [`load`], with relative paths taken from `base` instead of the file's directory (a
/// config read from standard input is the caller's directory's).
pub fn load_in(
    path: &Path,
    profile: Option<&str>,
    base: Option<&Path>,
) -> Result<Loaded, ConfigError> {
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
    let deploy = value.get("deploy").is_some();
    // PM2 gives `--env PROFILE` the variables of `deploy.PROFILE.env` too.
    let deploy_env = profile.and_then(|p| {
        value
            .get("deploy")?
            .get(p)?
            .get("env")?
            .as_object()
            .cloned()
    });
    let (list_key, apps) = app_list(format, value).map_err(|(key, m)| fail(&key, m))?;
    let dir = base.unwrap_or_else(|| {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    });
    let dir = std::fs::canonicalize(dir).map_err(|e| fail("(file)", e.to_string()))?;
    let mut loaded = Loaded {
        dir,
        apps: Vec::new(),
        warnings: Vec::new(),
    };
    if deploy {
        loaded.warnings.push(format!(
            "{file}: deploy: PM2's deploy sections are not corral's job (deploy with your CI, then `corral startOrReload {}`); ignored but for the `env` of the profile --env names",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    let mut seen = Seen::default();
    for (i, app) in apps.into_iter().enumerate() {
        let cx = Context {
            file: &file,
            source: &source,
            prefix: format!("{list_key}[{i}]"),
            earlier: &seen,
        };
        let app = read_app(app, profile, deploy_env.as_ref(), &cx, &mut loaded.warnings)?;
        seen.count(&app.1);
        loaded.apps.push(app.0);
    }
    Ok(loaded)
}

/// The apps of a file: `apps: [...]` (`[[app]]` in TOML), a list of apps, or one app.
fn app_list(format: Format, value: Value) -> Result<(String, Vec<Value>), (String, String)> {
    let key = if format == Format::Toml {
        "app"
    } else {
        "apps"
    };
    let apps = match value {
        Value::Array(apps) => return non_empty("(top level)".into(), apps),
        Value::Object(mut top) => match top.remove(key) {
            Some(Value::Array(apps)) => apps,
            Some(_) => return Err((key.into(), format!("expected a list of apps under `{key}`"))),
            None if top.contains_key("script") => {
                return Ok(("(app)".into(), vec![Value::Object(top)]))
            }
            None => {
                return Err((
                    key.into(),
                    format!("expected a list of apps under `{key}`, a list of apps, or one app with a `script`"),
                ))
            }
        },
        _ => return Err(("(top level)".into(), "expected apps".into())),
    };
    non_empty(key.into(), apps)
}

fn non_empty(key: String, apps: Vec<Value>) -> Result<(String, Vec<Value>), (String, String)> {
    if apps.is_empty() {
        return Err((
            key.clone(),
            format!("no apps: `{key}` is empty; add at least one app with a `name` and a `script`"),
        ));
    }
    Ok((key, apps))
}

fn parse(path: &Path, format: Format, source: &str) -> Result<Value, (Option<usize>, String)> {
    match format {
        Format::Toml => toml::from_str::<toml::Value>(source)
            .map_err(|e| {
                let line = e.span().map(|s| source[..s.start].lines().count().max(1));
                (line, e.message().to_owned())
            })
            .and_then(|v| serde_json::to_value(v).map_err(|e| (None, e.to_string()))),
        // PM2 reads .json files as JSON5: comments and trailing commas are fine.
        Format::Json => json5::from_str::<Value>(source).map_err(|e| {
            let line = e.position().map(|p| p.line + 1);
            let message = e.to_string();
            let message = match message.rsplit_once(" at ") {
                Some((text, _)) if line.is_some() => text.to_owned(),
                _ => message,
            };
            (line, message)
        }),
        Format::Yaml => serde_norway::from_str::<Value>(source)
            .map_err(|e| (e.location().map(|l| l.line()), e.to_string())),
        Format::Js => eval_js(path),
    }
}

/// How long a `.js` config may take to evaluate, unless `CORRAL_CONFIG_TIMEOUT` says
/// otherwise (`30s`, `500ms`).
const JS_TIMEOUT: Duration = Duration::from_secs(10);

/// Evaluates the module (CommonJS or ESM: `import()` loads both; a CommonJS module's
/// exports are its default), then writes it as JSON on what was stdout; anything the
/// config itself prints (console.log) goes to stderr, so it can't spoil the JSON.
const JS_EVALUATOR: &str = "\
const out = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
import(require('url').pathToFileURL(process.argv[1]).href).then((m) => {
  const c = m.default !== undefined ? m.default : m;
  out(JSON.stringify(c) + '\\n');
  process.exit(0);
}, (e) => { console.error(e && e.stack || String(e)); process.exit(1); });
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

/// How many earlier apps set each key: the n-th app that sets a key finds its line at
/// the key's n-th place in the file.
#[derive(Default)]
struct Seen(std::collections::HashMap<String, usize>);

impl Seen {
    fn count(&mut self, keys: &[String]) {
        for key in keys {
            *self.0.entry(key.clone()).or_default() += 1;
        }
    }
}

struct Context<'a> {
    file: &'a str,
    source: &'a str,
    prefix: String,
    earlier: &'a Seen,
}

impl Context<'_> {
    /// An error at `path` (a key, or a key path like `env.PORT`).
    fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let last = path.rsplit('.').next().unwrap_or(path);
        let first = path.split('.').next().unwrap_or(path);
        let nth = self.earlier.0.get(first).copied().unwrap_or(0);
        ConfigError {
            file: self.file.to_owned(),
            key: format!("{}.{path}", self.prefix),
            line: line_of(self.source, last, nth),
            message: message.into(),
        }
    }

    fn warn(&self, warnings: &mut Vec<String>, path: &str, message: &str) {
        let e = self.error(path, message);
        warnings.push(e.to_string());
    }
}

/// The line where `key` is set for the `nth` time (0: the first).
fn line_of(source: &str, key: &str, nth: usize) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let single = format!("'{key}'");
    let bare = |line: &str| {
        let t = line.trim_start();
        let t = t
            .strip_prefix("- ")
            .unwrap_or(t)
            .trim_start_matches(['{', ' ']);
        // `key =` (TOML), `key:` (YAML, JS, JSON5), possibly after `{` or `- `.
        t.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']))
    };
    let places: Vec<usize> = source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(&quoted) || line.contains(&single) || bare(line))
        .map(|(i, _)| i + 1)
        .collect();
    places.get(nth).or(places.first()).copied()
}

/// The keys a struct reads, aliases included: serde's own field list, caught by a
/// deserializer that stops as soon as the struct names its fields.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Catch<'a>(&'a std::cell::Cell<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for Catch<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.set(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let fields = std::cell::Cell::new(&[][..]);
    let _ = T::deserialize(Catch(&fields));
    fields.get()
}

/// Reads one app; returns it and the keys it set.
fn read_app(
    app: Value,
    profile: Option<&str>,
    deploy_env: Option<&Map<String, Value>>,
    cx: &Context,
    warnings: &mut Vec<String>,
) -> Result<(FileApp, Vec<String>), ConfigError> {
    let Value::Object(mut app) = app else {
        return Err(cx.error("", "expected a table of settings"));
    };
    let keys: Vec<String> = app.keys().cloned().collect();
    warn_unknown(&app, cx, warnings);
    apply_profile(&mut app, profile, cx, warnings)?;
    if let Some(extra) = deploy_env {
        if let Value::Object(env) = app
            .entry("env")
            .or_insert_with(|| Value::Object(Map::new()))
        {
            env.extend(extra.clone());
        }
    }
    let pm2_instances = !app.contains_key("instances");
    let value = Value::Object(app);
    let mut options: AppOptions = typed(&value, cx)?;
    let keys_only: FileKeys = typed(&value, cx)?;
    match keys_only.script.as_deref() {
        Some(s) if !s.is_empty() => {}
        Some(_) => {
            return Err(cx.error(
                "script",
                "expected the path of the script or program to run",
            ))
        }
        None => return Err(cx.error("script", "missing: every app needs a `script`")),
    }
    if let Some(name) = options.name.clone() {
        if check_app_name(&name).is_err() {
            // PM2 takes any name; corral's become file names and targets.
            let safe = name_from(&name);
            cx.warn(
                warnings,
                "name",
                &format!("`{name}` is not a name corral can use in file names and commands; the app is called `{safe}`"),
            );
            options.name = Some(safe);
        }
    }
    match keys_only.log_type.as_deref() {
        Some("json") => options.log_format = LogFormat::Pm2Json,
        None | Some("raw" | "") => {}
        Some(other) => {
            return Err(cx.error("log_type", format!("expected \"json\", got \"{other}\"")))
        }
    }
    if pm2_instances {
        // PM2 runs one instance of an app that doesn't say how many.
        options.instances = corral_core::spec::Instances::Count(1);
    }
    Ok((
        FileApp {
            options,
            keys: keys_only,
        },
        keys,
    ))
}

/// Deserializes the app into `T`, an error naming the key path.
fn typed<T: for<'de> Deserialize<'de>>(value: &Value, cx: &Context) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde's `invalid type: ...` messages name Rust types; say what the key takes.
        cx.error(&path, message)
    })
}

fn warn_unknown(app: &Map<String, Value>, cx: &Context, warnings: &mut Vec<String>) {
    let known: Vec<&str> = fields_of::<AppOptions>()
        .iter()
        .chain(fields_of::<FileKeys>())
        .copied()
        .collect();
    for key in app.keys() {
        if known.contains(&key.as_str()) || key.starts_with("env_") {
            continue;
        }
        if key == "deploy" {
            warnings.push(format!(
                "{}: {}.deploy: PM2's deploy sections are not corral's job (use your CI or PM2's deploy); ignored",
                cx.file, cx.prefix
            ));
            continue;
        }
        let hint = closest_key(key, &known)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        cx.warn(warnings, key, &format!("unknown key{hint}; ignored"));
    }
}

/// Merges `env_<profile>` over `env`. An app without that profile starts with `env`, as
/// under PM2, with a warning.
fn apply_profile(
    app: &mut Map<String, Value>,
    profile: Option<&str>,
    cx: &Context,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let Some(profile) = profile else {
        return Ok(());
    };
    let key = format!("env_{profile}");
    let Some(extra) = app.get(&key).cloned() else {
        let name = app
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        warnings.push(format!(
            "{}: {}{name} has no `{key}`; it starts with `env` only",
            cx.file, cx.prefix
        ));
        return Ok(());
    };
    let Value::Object(extra) = extra else {
        return Err(cx.error(&key, "expected a table of NAME: value"));
    };
    let env = app
        .entry("env")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(env) = env else {
        return Err(cx.error("env", "expected a table of NAME: value"));
    };
    env.extend(extra);
    Ok(())
}

impl Loaded {
    /// The apps as start requests: commands resolved against the file's directory (or an
    /// app's `cwd`), and the file to read again on reload and restart.
    pub fn start_apps(&self, config: &ConfigRef) -> Vec<StartApp> {
        self.apps
            .iter()
            .map(|app| {
                let base = match &app.options.cwd {
                    Some(cwd) => self.dir.join(cwd),
                    None => self.dir.clone(),
                };
                let keys = &app.keys;
                let script = keys.script.clone().unwrap_or_default();
                let command = resolve_command(
                    script.as_ref(),
                    keys.interpreter.as_deref(),
                    &keys.interpreter_args,
                    &keys.args.iter().map(Into::into).collect::<Vec<_>>(),
                    &base,
                );
                StartApp {
                    command: command
                        .iter()
                        .map(|c| c.to_string_lossy().into_owned())
                        .collect(),
                    cwd: self.dir.display().to_string(),
                    options: app.options.clone(),
                    config: Some(config.clone()),
                    scaled: None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
