//! `describe` and `env`: one app in full, and its workers' declared environment.

use corral_proto::control::{AppDetail, EnvVar, Response};

use super::{conn, unexpected};
use crate::exit::Failure;
use crate::home::Home;
use crate::model::Request;

pub fn describe(home: &Home, name: String, json: bool) -> Result<(), Failure> {
    let detail = match ask(home, Request::Describe { name })? {
        Response::Described { app } => app,
        other => return Err(unexpected(other)),
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&detail).expect("views serialize")
        );
    } else {
        out!("{}", text(&detail));
    }
    Ok(())
}

/// `env`: KEY=VALUE lines, or with `json` one object.
pub fn env(home: &Home, name: String, json: bool) -> Result<(), Failure> {
    let vars = match ask(home, Request::Env { name })? {
        Response::Env { vars } => vars,
        other => return Err(unexpected(other)),
    };
    if json {
        let map: serde_json::Map<String, serde_json::Value> = vars
            .into_iter()
            .map(|v| (v.key, serde_json::Value::String(v.value)))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&map).expect("env serializes")
        );
    } else {
        for EnvVar { key, value } in vars {
            outln!("{key}={value}");
        }
    }
    Ok(())
}

fn ask(home: &Home, request: Request) -> Result<Response, Failure> {
    conn::request(home, request, false).map_err(Failure::Runtime)
}

/// `describe` for people: one `key   value` line each, then the environment.
fn text(detail: &AppDetail) -> String {
    let view = &detail.view;
    let or_dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    let logs: Vec<&str> = view.logs.iter().map(|f| f.path.as_str()).collect();
    let mut lines = vec![
        format!("name      {}", view.name),
        format!("status    {}", view.status),
        format!("command   {}", view.command.join(" ")),
        format!(
            "cwd       {}",
            detail.cwd.clone().unwrap_or_else(|| "-".into())
        ),
        format!("listen    {}", or_dash(view.listen.join(" "))),
        format!(
            "workers   {} ({} restarts)",
            detail.instances, view.restarts
        ),
        format!("balance   {}", detail.balance),
        format!("logs      {}", or_dash(logs.join(" "))),
        "env".to_owned(),
    ];
    lines.extend(
        detail
            .env
            .iter()
            .map(|v| format!("  {}={}", v.key, v.value)),
    );
    lines.join("\n") + "\n"
}
