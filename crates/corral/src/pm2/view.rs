//! PM2's views of the daemon's processes: `jlist` (PM2's JSON schema, one object per
//! process), `prettylist` (the same as Node's `util.inspect` prints it) and the `list`
//! table.

use corral_proto::control::{LogStream, WorkerView};
use serde_json::{json, Map, Value};

use super::procs::{status_word, Record};

/// One process in PM2's schema: `pid`, `name`, `pm_id`, `monit`, `pm2_env`.
pub fn process(record: &Record, worker: &WorkerView, now_ms: u64) -> Value {
    let facts = &record.facts;
    let options = &record.start.options;
    let pm_id = worker.pm_id.unwrap_or(record.view.id);
    let log = |stream: LogStream| {
        record
            .view
            .logs
            .iter()
            .find(|l| l.stream == stream && l.slot.is_none_or(|s| s == worker.slot))
            .map(|l| l.path.clone())
            .unwrap_or_default()
    };
    let mut env: Map<String, Value> = options
        .env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    // What corral adds to every worker's environment (launch.rs).
    env.entry("name").or_insert(json!(facts.name));
    env.entry("pm_id").or_insert(json!(pm_id.to_string()));
    env.insert("CORRAL_APP".into(), json!(record.view.name));
    let mut pm2_env = json!({
        "name": facts.name,
        "namespace": options.namespace.clone().unwrap_or_else(|| "default".into()),
        "env": env,
        "merge_logs": options.merge_logs,
        "autorestart": options.autorestart,
        "watch": !options.watch.is_empty(),
        "instance_var": options.instance_var.clone().unwrap_or_else(|| "NODE_APP_INSTANCE".into()),
        "node_args": facts.interpreter_args,
        "args": facts.args,
        "pm_exec_path": facts.script,
        "pm_cwd": options.cwd.as_ref().map_or_else(|| record.start.cwd.clone(), |c| c.display().to_string()),
        "exec_interpreter": facts.interpreter,
        "exec_mode": facts.exec_mode,
        "instances": record.view.workers.len().max(1),
        "pm_out_log_path": log(LogStream::Out),
        "pm_err_log_path": log(LogStream::Err),
        "kill_timeout": options.kill_timeout.as_millis() as u64,
        "restart_delay": options.restart_delay.as_millis() as u64,
        "stop_exit_codes": options.stop_exit_codes,
        "status": status_word(worker.status),
        "pm_uptime": now_ms.saturating_sub(worker.uptime_ms),
        "created_at": record.created_at_ms,
        "pm_id": pm_id,
        "restart_time": worker.restart_time,
        "unstable_restarts": worker.restarts,
        "version": "N/A",
        "corral_slot": worker.slot,
    });
    if let Some(pid_file) = &options.pid_file {
        pm2_env["pm_pid_path"] = json!(crate::log_layout::per_slot(pid_file, worker.slot));
    }
    json!({
        "pid": worker.pid.unwrap_or(0),
        "name": facts.name,
        "pm2_env": pm2_env,
        "pm_id": pm_id,
        "monit": { "memory": worker.memory, "cpu": (worker.cpu_percent * 10.0).round() / 10.0 },
    })
}

/// Every process of every app, in `pm_id` order.
pub fn processes(records: &[Record]) -> Vec<Value> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut all: Vec<(u32, Value)> = records
        .iter()
        .flat_map(|r| {
            r.processes()
                .into_iter()
                .map(move |w| (w.pm_id.unwrap_or(r.view.id), process(r, &w, now_ms)))
        })
        .collect();
    all.sort_by_key(|(id, _)| *id);
    all.into_iter().map(|(_, v)| v).collect()
}

/// Node's `util.inspect(value, { depth: null })`, uncoloured: what `prettylist` prints
/// and what scripts grep (`restart_time: 0`, `exec_mode: 'cluster_mode'`).
pub fn inspect(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(&b.to_string()),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&quote(s)),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(|v| nested(v, indent + 2)).collect();
            out.push_str(&group('[', ']', parts, indent));
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", key(k), nested(v, indent + 2)))
                .collect();
            out.push_str(&group('{', '}', parts, indent));
        }
    }
}

fn nested(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    write_value(&mut out, value, indent);
    out
}

/// On one line when short and flat (as Node prints `{ memory: 1, cpu: 0 }`), else one
/// entry per line.
fn group(open: char, close: char, parts: Vec<String>, indent: usize) -> String {
    let flat = parts.iter().all(|p| !p.contains('\n'));
    let width: usize = parts.iter().map(|p| p.len() + 2).sum::<usize>() + indent;
    if flat && parts.len() <= 6 && width <= 72 {
        return format!("{open} {} {close}", parts.join(", "));
    }
    let pad = " ".repeat(indent + 2);
    let body: Vec<String> = parts.iter().map(|p| format!("{pad}{p}")).collect();
    format!(
        "{open}\n{}\n{}{close}",
        body.join(",\n"),
        " ".repeat(indent)
    )
}

fn key(k: &str) -> String {
    let ident = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        k.to_owned()
    } else {
        quote(k)
    }
}

/// A string as Node quotes it: single quotes, unless it has some and no double ones.
fn quote(s: &str) -> String {
    let delim = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(delim);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c == delim => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(delim);
    out
}

/// `list`: PM2's table, sorted as `--sort FIELD[:asc|desc]` says (by id by default).
pub fn table(records: &[Record], sort: Option<&str>) -> Result<String, String> {
    let mut rows: Vec<Value> = processes(records);
    if let Some(sort) = sort {
        let (field, order) = sort.split_once(':').unwrap_or((sort, "asc"));
        let path: &[&str] = match field {
            "name" => &["name"],
            "id" => &["pm_id"],
            "pid" => &["pid"],
            "restarts" | "restart" => &["pm2_env", "restart_time"],
            "cpu" => &["monit", "cpu"],
            "memory" => &["monit", "memory"],
            "uptime" => &["pm2_env", "pm_uptime"],
            _ => {
                return Err(format!(
                    "--sort {field}: PM2 sorts by name, id, pid, restarts, cpu, memory or uptime"
                ))
            }
        };
        if !matches!(order, "asc" | "desc") {
            return Err(format!("--sort {sort}: the order is asc or desc"));
        }
        let pick = |p: &Value| path.iter().fold(p.clone(), |v, k| v[*k].clone());
        rows.sort_by(|a, b| compare(&pick(a), &pick(b)));
        if order == "desc" {
            rows.reverse();
        }
    }
    let header = [
        "id",
        "name",
        "namespace",
        "mode",
        "pid",
        "uptime",
        "↺",
        "status",
        "cpu",
        "mem",
        "watching",
    ];
    let cells: Vec<[String; 11]> = rows.iter().map(row_cells).collect();
    Ok(boxed(&header, &cells))
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        _ => a.as_str().unwrap_or("").cmp(b.as_str().unwrap_or("")),
    }
}

fn row_cells(p: &Value) -> [String; 11] {
    let env = &p["pm2_env"];
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let online = env["status"] == "online";
    let uptime = if online {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ms = now.saturating_sub(env["pm_uptime"].as_u64().unwrap_or(now));
        crate::render::duration(std::time::Duration::from_millis(ms))
    } else {
        "0".into()
    };
    let mode = match env["exec_mode"].as_str() {
        Some("cluster_mode") => "cluster",
        _ => "fork",
    };
    [
        text(&p["pm_id"]),
        text(&p["name"]),
        text(&env["namespace"]),
        mode.into(),
        if online { text(&p["pid"]) } else { "0".into() },
        uptime,
        text(&env["restart_time"]),
        text(&env["status"]),
        format!("{}%", text(&p["monit"]["cpu"])),
        crate::render::size(p["monit"]["memory"].as_u64().unwrap_or(0)),
        if env["watch"] == true {
            "enabled"
        } else {
            "disabled"
        }
        .into(),
    ]
}

/// A table drawn with box characters, as PM2 draws its list.
fn boxed<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |l: &str, m: &str, r: &str| {
        let bars: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}\n", bars.join(m))
    };
    let cells = |row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c}{} ", " ".repeat(w - c.chars().count())))
            .collect();
        format!("│{}│\n", padded.join("│"))
    };
    let mut out = line("┌", "┬", "┐");
    out.push_str(&cells(&header.map(str::to_owned)));
    out.push_str(&line("├", "┼", "┤"));
    for row in rows {
        out.push_str(&cells(row));
    }
    out.push_str(&line("└", "┴", "┘"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_prettylist_prints_as_node_inspects() {
        let v = json!([{
            "name": "api",
            "pm2_env": { "restart_time": 0, "exec_mode": "cluster_mode", "it's": "a\nb",
                "pm_out_log_path": "/home/u/.pm2/logs/api-out.log", "node_args": [],
                "env": {} },
            "monit": { "memory": 1024, "cpu": 0.5 }
        }]);
        // serde_json's maps keep keys sorted; greps for `key: value` don't mind.
        insta::assert_snapshot!(inspect(&v), @r#"
        [
          {
            monit: { cpu: 0.5, memory: 1024 },
            name: 'api',
            pm2_env: {
              env: {},
              exec_mode: 'cluster_mode',
              "it's": 'a\nb',
              node_args: [],
              pm_out_log_path: '/home/u/.pm2/logs/api-out.log',
              restart_time: 0
            }
          }
        ]
        "#);
        assert_eq!(inspect(&json!([])), "[]");
    }
}
