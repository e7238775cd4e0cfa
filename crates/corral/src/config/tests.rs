use std::time::Duration;

use corral_core::spec::Instances;

use super::*;
use crate::model::kinds::ReadyArg;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(app: &FileApp) -> Vec<(&str, &str)> {
    app.options
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn an_ecosystem_json_maps_pm2_keys_onto_the_typed_options() {
    let path = write(
        "ecosystem.config.json",
        r#"{ "apps": [ { "name": "api", "script": "server.js", "instances": "max",
            "max_memory_restart": "300M", "kill_timeout": 3000, "wait_ready": true,
            "env": { "MODE": "dev", "PORT": 3000 }, "env_production": { "MODE": "prod" },
            "args": "--verbose --port 1", "watch": true, "instnces": 2 } ] }"#,
    );
    let loaded = load(&path, Some("production")).unwrap();
    let app = &loaded.apps[0];
    let o = &app.options;
    assert_eq!(o.name.as_deref(), Some("api"));
    assert_eq!(o.instances, Instances::Max);
    assert_eq!(o.max_memory, Some(300 << 20));
    assert_eq!(o.kill_timeout, Duration::from_secs(3));
    assert_eq!(o.ready, ReadyArg::Notify);
    assert_eq!(o.watch, [PathBuf::from(".")]);
    assert_eq!(env(app), [("MODE", "prod"), ("PORT", "3000")]);
    assert_eq!(app.keys.args, ["--verbose", "--port", "1"]);
    // Everything not set has the flags' defaults.
    assert_eq!(o.restart_delay, AppOptions::default().restart_delay);
    assert_eq!(
        loaded.warnings,
        [format!(
            "{}:4: apps[0].instnces: unknown key (did you mean `instances`?); ignored",
            path.display()
        )]
    );
}

#[test]
fn pm2_defaults_and_spellings() {
    let path = write(
        "pm2.json",
        r#"{"apps":[{"script":"a.py","interpreter_args":"-u","exec_interpreter":"python3.11",
            "err_file":"e.log","out":"o.log","exp_backoff_restart_delay":100},
           {"script":"b.js","instances":0,"node_args":["--max-old-space-size=64"]}]}"#,
    );
    let loaded = load(&path, None).unwrap();
    let (a, b) = (&loaded.apps[0], &loaded.apps[1]);
    // PM2 runs one instance of an app that doesn't say; 0 is one per CPU.
    assert_eq!(a.options.instances, Instances::Count(1));
    assert_eq!(b.options.instances, Instances::Max);
    assert_eq!(a.keys.interpreter.as_deref(), Some("python3.11"));
    assert_eq!(a.options.error_file, Some(PathBuf::from("e.log")));
    assert_eq!(a.options.out_file, Some(PathBuf::from("o.log")));
    assert_eq!(a.options.restart_delay, Duration::from_millis(100));
    let config = ConfigRef {
        path: path.display().to_string(),
        profile: None,
    };
    let starts = loaded.start_apps(&config);
    let dir = loaded.dir.display().to_string();
    assert_eq!(
        starts[0].command,
        ["python3.11".into(), "-u".into(), format!("{dir}/a.py")]
    );
    assert_eq!(
        starts[1].command,
        [
            "node".into(),
            "--max-old-space-size=64".into(),
            format!("{dir}/b.js")
        ]
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn json_is_read_as_json5_and_apps_come_in_every_shape() {
    let path = write(
        "five.json",
        "{\n  // PM2 reads comments\n  apps: [{ script: 'a.js', name: 'a', },],\n}\n",
    );
    assert_eq!(load(&path, None).unwrap().apps.len(), 1);
    let path = write("list.json", r#"[{"script":"a.js"},{"script":"b.js"}]"#);
    assert_eq!(load(&path, None).unwrap().apps.len(), 2);
    let path = write("one.yaml", "script: a.js\nname: solo\n");
    let loaded = load(&path, None).unwrap();
    assert_eq!(loaded.apps[0].options.name.as_deref(), Some("solo"));
    let path = write(
        "broken.json",
        "{\n  apps: [\n    { script: 'a.js' \n  ]\n}\n",
    );
    let err = load(&path, None).unwrap_err();
    assert_eq!((err.key.as_str(), err.line), ("(syntax)", Some(4)), "{err}");
}

#[test]
fn corral_toml_uses_app_tables() {
    let path = write(
        "corral.toml",
        "[[app]]\nname = \"web\"\nscript = \"./bin/web\"\nlisten = [\"3000\", \"unix:/tmp/w.sock\"]\nbalance = \"round-robin\"\n",
    );
    let loaded = load(&path, None).unwrap();
    let o = &loaded.apps[0].options;
    assert_eq!(o.listen.len(), 2);
    assert_eq!(o.balance, corral_core::dispatch::Balance::RoundRobin);
}

#[test]
fn bad_values_name_the_file_the_line_of_their_app_and_the_key_path() {
    let path = write(
        "ecosystem.json",
        "{\n  \"apps\": [\n    { \"script\": \"a.js\", \"instances\": 2 },\n    {\n      \"script\": \"b.js\",\n      \"instances\": \"lots\"\n    }\n  ]\n}\n",
    );
    let err = load(&path, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:6: apps[1].instances: expected a number, \"max\" or a negative number (CPUs less that many), got \"lots\"",
            path.display()
        )
    );
    let path = write(
        "bad.json",
        "{\n  \"apps\": [ {\n    \"script\": \"a.js\",\n    \"env\": { \"A\": null }\n  } ]\n}\n",
    );
    let err = load(&path, None).unwrap_err();
    assert_eq!(err.key, "apps[0].env");
    assert_eq!(err.line, Some(4), "{err}");
    let path = write("broken.toml", "[[app]]\nname = \"x\nscript = \"y\"\n");
    let err = load(&path, None).unwrap_err();
    assert_eq!((err.key.as_str(), err.line), ("(syntax)", Some(2)), "{err}");
    let path = write("noscript.yaml", "apps:\n  - name: x\n");
    assert_eq!(
        load(&path, None).unwrap_err().message,
        "missing: every app needs a `script`"
    );
}

#[test]
fn issue_10_config_error_messages() {
    let cases = [
        ("instances.json", "{\"apps\": [{\"script\": \"a.js\"},\n  {\"script\": \"b.js\", \"instances\": \"lots\"}]}"),
        ("timeout.yaml", "apps:\n  - script: a.js\n    kill_timeout: soon\n"),
        ("memory.toml", "[[app]]\nscript = \"a\"\nmax_memory_restart = \"lots\"\n"),
        ("env.json", "{\"apps\": [{\"script\": \"a.js\",\n  \"env\": {\"PORT\": null}}]}"),
        ("mode.json", "{\"apps\": [{\"script\": \"a.js\",\n  \"exec_mode\": \"spawn\"}]}"),
        ("codes.json", "{\"apps\": [{\"script\": \"a.js\",\n  \"stop_exit_codes\": [300]}]}"),
        ("listen.json", "{\"apps\": [{\"script\": \"a.js\",\n  \"listen\": \"example.com:80\"}]}"),
        ("noscript.json", "{\"apps\": [{\"name\": \"x\"}]}"),
        ("empty.json", "{\"apps\": []}"),
        ("syntax.json", "{\"apps\": [\n  {\"script\": \"a.js\"\n]}"),
    ];
    let mut out = String::new();
    for (name, text) in cases {
        let path = write(name, text);
        let dir = path.parent().unwrap().display().to_string();
        let err = load(&path, None).unwrap_err().to_string();
        out.push_str(&err.replace(&dir, "$DIR"));
        out.push('\n');
    }
    insta::assert_snapshot!(out);
}

#[test]
fn a_missing_profile_warns_and_the_app_starts_with_env() {
    let path = write(
        "p.json",
        r#"{"apps":[{"name":"a","script":"a.js","env":{"X":"1"}},{"name":"b","script":"b.js","env_staging":{"X":"2"}}]}"#,
    );
    let loaded = load(&path, Some("staging")).unwrap();
    assert_eq!(env(&loaded.apps[0]), [("X", "1")]);
    assert_eq!(env(&loaded.apps[1]), [("X", "2")]);
    assert_eq!(
        loaded.warnings,
        [format!(
            "{}: apps[0] (a) has no `env_staging`; it starts with `env` only",
            path.display()
        )]
    );
}

#[test]
fn the_known_keys_are_serdes_own_field_list_with_aliases() {
    let fields = fields_of::<AppOptions>();
    for key in [
        "instances",
        "max_memory_restart",
        "wait_ready",
        "err_file",
        "cron",
    ] {
        assert!(fields.contains(&key), "{key} in {fields:?}");
    }
    assert!(fields_of::<FileKeys>().contains(&"node_args"));
}

#[test]
fn js_files_are_configs_only_when_named_like_one() {
    assert!(is_config(Path::new("ecosystem.config.js")));
    assert!(is_config(Path::new("pm2.config.cjs")));
    assert!(is_config(Path::new("ecosystem.config.mjs")));
    assert!(!is_config(Path::new("server.js")));
    assert!(is_config(Path::new("corral.toml")));
}
