//! App names and commands: the default name, what is allowed in one, the interpreter a
//! script runs with, and "did you mean" for names and keys.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use anyhow::bail;

/// The interpreter for a script, from its extension; for TypeScript, from its project:
/// Bun's (`bunfig.toml`) or Deno's (`deno.json`) in its directory or above, else node
/// (see [`check_typescript`]).
pub fn interpreter_for(script: &Path) -> Option<&'static str> {
    match script.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => Some("node"),
        Some("ts" | "mts" | "cts") => Some(typescript_runtime(script)),
        Some("py") => Some("python3"),
        Some("rb") => Some("ruby"),
        Some("sh") => Some("bash"),
        Some("php") => Some("php"),
        Some("pl") => Some("perl"),
        _ => None,
    }
}

fn typescript_runtime(script: &Path) -> &'static str {
    let mut dir = script.parent();
    while let Some(at) = dir {
        if at.join("bunfig.toml").is_file() {
            return "bun";
        }
        if at.join("deno.json").is_file() || at.join("deno.jsonc").is_file() {
            return "deno";
        }
        dir = at.parent();
    }
    "node"
}

/// Node strips TypeScript's types by default from these lines on: 22.18, then 23.6.
fn strips_types(version: &str) -> bool {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next()) {
        (Some(major), Some(minor)) => {
            major > 23 || (major == 23 && minor >= 6) || (major == 22 && minor >= 18)
        }
        _ => false,
    }
}

/// A TypeScript script for a node that can't strip its types is refused with the ways
/// to run it, rather than crash-looping on a syntax error. Flags that bring their own
/// loader (`--import tsx`, `--experimental-strip-types`) are left to work.
pub fn check_typescript(command: &[OsString]) -> anyhow::Result<()> {
    let Some(program) = command.first() else {
        return Ok(());
    };
    let is_node = Path::new(program)
        .file_name()
        .is_some_and(|n| n == "node" || n == "nodejs");
    let args: Vec<&str> = command[1..].iter().filter_map(|a| a.to_str()).collect();
    let Some(script) = args.iter().find(|a| !a.starts_with('-')) else {
        return Ok(());
    };
    let typescript = [".ts", ".mts", ".cts"].iter().any(|e| script.ends_with(e));
    let loader = args.iter().take_while(|a| a.starts_with('-')).any(|a| {
        [
            "--experimental-strip-types",
            "--experimental-transform-types",
            "--import",
            "--loader",
            "--require",
            "-r",
        ]
        .iter()
        .any(|f| a.starts_with(f))
    });
    if !is_node || !typescript || loader {
        return Ok(());
    }
    let version = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if strips_types(&version) {
        return Ok(());
    }
    bail!(
        "{script}: this node ({}) can't run TypeScript; Node 22.18+ or 23.6+ strips its types. \
         Use a newer node, --interpreter-args=--experimental-strip-types (Node 22.6+), \
         --interpreter tsx, or --interpreter bun or deno",
        if version.is_empty() {
            "its version unknown"
        } else {
            &version
        }
    )
}

/// The command that runs `script`: its interpreter (`interpreter`, or from the extension;
/// `none` for none) with `interpreter_args`, the script made absolute against `cwd`,
/// then `args`.
pub fn resolve_command(
    script: &OsStr,
    interpreter: Option<&str>,
    interpreter_args: &[String],
    args: &[OsString],
    cwd: &Path,
) -> Vec<OsString> {
    let path = Path::new(script);
    let mut command = Vec::new();
    if interpreter.is_none() && is_shell_line(script, cwd) {
        // PM2's `cmd: "node -e '...'"` / `pm2 start "cc a.c; ./a.out"`: a line for the shell.
        command.extend(["bash".into(), "-c".into(), script.to_owned()]);
        command.extend(args.iter().cloned());
        return command;
    }
    let interpreter = match interpreter {
        Some("none") => None,
        Some(program) => Some(program),
        None => interpreter_for(path),
    };
    if let Some(interpreter) = interpreter {
        command.push(OsString::from(interpreter));
        command.extend(interpreter_args.iter().map(OsString::from));
        // Deno runs a script with `run`, and a server needs more than its default
        // permissions; `--interpreter-args` says otherwise.
        if interpreter == "deno" && interpreter_args.is_empty() {
            command.extend(["run".into(), "-A".into()]);
        }
    }
    let is_path = path.components().count() > 1 || cwd.join(path).exists() || interpreter.is_some();
    if is_path && path.is_relative() {
        command.push(cwd.join(path).into_os_string());
    } else {
        command.push(script.to_owned());
    }
    command.extend(args.iter().cloned());
    command
}

/// A script with white space in it that names no file is a shell command line.
pub fn is_shell_line(script: &OsStr, cwd: &Path) -> bool {
    let text = script.to_string_lossy();
    text.contains(char::is_whitespace) && !cwd.join(script).exists()
}

/// Programs whose first non-flag argument names the app better than they do.
const INTERPRETERS: &[&str] = &[
    "node", "nodejs", "bun", "deno", "python", "python3", "ruby", "php", "perl", "bash", "sh",
    "java",
];

/// App names become file names and command targets: `[A-Za-z0-9._-]`, not starting with
/// a dot, and not a word the commands give a meaning (`all`).
pub fn check_app_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("--name may not be empty");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        bail!("invalid app name `{name}`: `{bad}` is not allowed; use letters, digits, `.`, `_` and `-`");
    }
    if name.starts_with('.') {
        bail!("invalid app name `{name}`: it may not start with `.`");
    }
    // A name that reads as a flag could be named by no command.
    if name.starts_with('-') {
        bail!("invalid app name `{name}`: it may not start with `-` (commands would read it as an option)");
    }
    if name.len() > 64 {
        bail!("invalid app name `{name}`: at most 64 characters");
    }
    if name == "all" {
        bail!("invalid app name `all`: commands use `all` for every app; pick another --name");
    }
    Ok(())
}

/// A name made from a command's file name: characters an app name can't have become `-`.
pub fn name_from(stem: &str) -> String {
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let name = name.trim_start_matches(['.', '-']);
    if name.is_empty() || name == "all" {
        "app".into()
    } else {
        name.into()
    }
}

pub(crate) fn stem(arg: &OsStr) -> Option<String> {
    Path::new(arg)
        .file_stem()
        .map(|s| name_from(&s.to_string_lossy()))
        .filter(|s| !s.is_empty())
}

/// `node server.js` → `server`; `./bin/api --port 1` → `api`.
pub(crate) fn default_name(command: &[OsString]) -> String {
    let program = command
        .first()
        .and_then(|p| stem(p))
        .unwrap_or_else(|| "app".into());
    if INTERPRETERS.contains(&program.as_str()) {
        if let Some(script) = command[1..]
            .iter()
            .find(|a| !a.to_string_lossy().starts_with('-'))
            .and_then(|a| stem(a))
        {
            return script;
        }
    }
    program
}

/// The closest known name to `wanted`, for "did you mean".
pub fn closest<'a>(wanted: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    names
        .map(|n| (edit_distance(wanted, n), n))
        .filter(|(d, n)| *d <= (n.len().max(wanted.len()) / 2).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// The closest of `known` to `wanted`, for "did you mean".
pub fn closest_key<'a>(wanted: &str, known: &[&'a str]) -> Option<&'a str> {
    let owned: Vec<String> = known.iter().map(|k| (*k).to_owned()).collect();
    let near = closest(wanted, owned.iter())?;
    known.iter().copied().find(|k| *k == near.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_26_typescript_runs_with_the_projects_runtime_else_node() {
        let dir = std::env::temp_dir().join(format!("corral-ts-{}", std::process::id()));
        for (project, marker, runtime) in [
            ("bun", Some("bunfig.toml"), "bun"),
            ("deno", Some("deno.json"), "deno"),
            ("plain", None, "node"),
        ] {
            let src = dir.join(project).join("src");
            std::fs::create_dir_all(&src).unwrap();
            if let Some(marker) = marker {
                std::fs::write(dir.join(project).join(marker), "").unwrap();
            }
            assert_eq!(
                interpreter_for(&src.join("app.ts")),
                Some(runtime),
                "{project}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn issue_26_node_strips_types_from_22_18_and_23_6() {
        for (version, strips) in [
            ("v20.20.2", false),
            ("v22.17.1", false),
            ("v22.18.0", true),
            ("v23.5.0", false),
            ("v23.6.0", true),
            ("v24.1.0", true),
            ("v26.0.0", true),
            ("", false),
        ] {
            assert_eq!(strips_types(version), strips, "{version}");
        }
    }

    #[test]
    fn issue_26_deno_runs_a_script_with_run_and_its_permissions() {
        let cwd = Path::new("/srv/app");
        let cmd = resolve_command("main.ts".as_ref(), Some("deno"), &[], &[], cwd);
        assert_eq!(
            cmd,
            ["deno", "run", "-A", "/srv/app/main.ts"].map(OsString::from)
        );
        let args = ["run".to_owned(), "--allow-net".to_owned()];
        let cmd = resolve_command("main.ts".as_ref(), Some("deno"), &args, &[], cwd);
        assert_eq!(
            cmd,
            ["deno", "run", "--allow-net", "/srv/app/main.ts"].map(OsString::from)
        );
    }

    #[test]
    fn issue_23_a_name_that_reads_as_a_flag_is_refused_and_a_config_name_made_safe() {
        let e = check_app_name("--no-autorestart").unwrap_err().to_string();
        assert!(e.contains("may not start with `-`"), "{e}");
        assert_eq!(name_from("--no-autorestart"), "no-autorestart");
        assert!(check_app_name("web-1").is_ok());
    }

    #[test]
    fn suggests_near_names_only() {
        let names = ["api".to_string(), "worker".to_string()];
        assert_eq!(closest("apj", names.iter()), Some(&names[0]));
        assert_eq!(closest("wroker", names.iter()), Some(&names[1]));
        assert_eq!(closest("database", names.iter()), None);
    }
}
