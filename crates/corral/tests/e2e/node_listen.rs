//! Issue 21: real Node frameworks (plain `http`, Express, Fastify, hapi) in every
//! `listen()` form their docs show, under `--listen` of an IPv4 loopback address, an IPv6
//! loopback address and every interface. A port corral listens on is served by corral's
//! socket whatever host the app names; a differing address is said once.
//!
//! Needs `node` and `npm ci --prefix tests/node-apps` (CI does both).

use std::net::SocketAddr;
use std::time::Duration;

use corral_testkit::{free_port, get, Corral};

use crate::CORRAL;

const T: Duration = Duration::from_secs(30);

const FORMS: [&str; 6] = ["none", "0.0.0.0", "::", "localhost", "127.0.0.1", "options"];

/// Where corral listens, as `--listen` takes it.
#[derive(Clone, Copy, Debug)]
enum At {
    V4,
    V6,
    Every,
}

impl At {
    fn flag(self, port: u16) -> String {
        match self {
            At::V4 => format!("127.0.0.1:{port}"),
            At::V6 => format!("[::1]:{port}"),
            At::Every => port.to_string(),
        }
    }

    fn connect(self, port: u16) -> SocketAddr {
        match self {
            At::V4 | At::Every => SocketAddr::from(([127, 0, 0, 1], port)),
            At::V6 => format!("[::1]:{port}").parse().expect("an IPv6 address"),
        }
    }

    /// Whether corral says the app's `form` is served at another address than it asked.
    /// None: it depends on what the resolver gives first (Fastify resolves `localhost`
    /// itself, and listens on each address it gets).
    fn says_served_on(self, framework: &str, form: &str) -> Option<bool> {
        if framework == "fastify" && matches!(form, "none" | "localhost") {
            return matches!(self, At::Every).then_some(false);
        }
        Some(!matches!(
            (self, form),
            (At::Every, _) | (_, "none" | "localhost") | (At::V4, "127.0.0.1")
        ))
    }
}

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// corral running `framework`'s app with a listener per form, on ports that were free a
/// moment before. Another test may take one of them in between: then corral says
/// "address already in use" at once, and this tries other ports.
fn start_on_free_ports(framework: &str, at: At, app: &str) -> (Corral, Vec<u16>) {
    for _ in 0..3 {
        let ports: Vec<u16> = FORMS.iter().map(|_| free_port()).collect();
        let listen: Vec<String> = ports.iter().map(|&p| at.flag(p)).collect();
        let mut args = vec!["run", "-i", "2", "--name", framework];
        for l in &listen {
            args.extend(["--listen", l]);
        }
        args.extend(["--", "node", app]);
        let joined = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let c = Corral::start(
            CORRAL,
            &args,
            &[("FRAMEWORK", framework), ("PORTS", &joined)],
        );
        let started = |c: &Corral| {
            c.output()
                .iter()
                .any(|l| l.contains("\"kind\":\"spawned\""))
        };
        let taken = |c: &Corral| c.output().iter().any(|l| l.contains("already in use"));
        corral_testkit::eventually(T, || started(&c) || taken(&c));
        if !taken(&c) {
            return (c, ports);
        }
    }
    panic!("no free ports for {framework} in 3 tries");
}

/// Runs `framework` with one server per form, each on a port of its own that corral
/// listens on at `at`, and checks that every server answers there, from both workers'
/// start on, with no worker lost and each differing address said exactly once.
fn every_form_serves(framework: &str, at: At) {
    if matches!(at, At::V6) && !ipv6_loopback() {
        corral_testkit::skip("this host has no IPv6 loopback (::1)");
        return;
    }
    let Some(app) = corral_testkit::node_file("tests/node-apps", "listen-forms.js") else {
        return;
    };
    let (c, ports) = start_on_free_ports(framework, at, &app);
    c.ready_pid(0, 1, T);
    c.ready_pid(1, 1, T);
    for (form, port) in FORMS.iter().zip(&ports) {
        c.wait_for(&format!("{framework} {form} listening on {port}"), T);
    }
    for (form, &port) in FORMS.iter().zip(&ports) {
        let answer = get(at.connect(port), "/").unwrap_or_else(|e| {
            panic!(
                "{framework} {form} on {}: {e}\n{}",
                at.flag(port),
                c.output().join("\n")
            )
        });
        assert!(
            answer.body.starts_with(&format!("{framework} {form} pid=")),
            "{framework} {form} on {}: {}",
            at.flag(port),
            answer.body
        );
    }
    let output = c.output();
    let reports = |kind: &str| -> Vec<serde_json::Value> {
        output
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["kind"] == kind)
            .collect()
    };
    let everything = output.join("\n");
    for kind in ["exited", "port_refused", "port_bound"] {
        assert!(reports(kind).is_empty(), "no {kind}: {everything}");
    }
    let served_on = reports("port_served_on");
    for (form, port) in FORMS.iter().zip(&ports) {
        let said: Vec<_> = served_on
            .iter()
            .filter(|r| {
                r["on"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(&format!(":{port}"))
            })
            .collect();
        match at.says_served_on(framework, form) {
            Some(true) => assert_eq!(
                said.len(),
                1,
                "{form}: said once, by one of 2 workers: {everything}"
            ),
            Some(false) => assert!(said.is_empty(), "{form}: nothing to say: {everything}"),
            None => assert!(said.len() <= 1, "{form}: {everything}"),
        }
    }
    let corrals = at.flag(0).trim_end_matches('0').to_owned();
    for r in &served_on {
        let on = r["on"].as_str().unwrap_or("");
        assert!(
            on.starts_with(&corrals),
            "served on corral's {corrals}: {r}"
        );
    }
}

#[test]
fn issue_21_plain_http_serves_every_listen_form_on_an_ipv4_loopback_listener() {
    every_form_serves("http", At::V4);
}

#[test]
fn issue_21_plain_http_serves_every_listen_form_on_an_ipv6_loopback_listener() {
    every_form_serves("http", At::V6);
}

#[test]
fn issue_21_plain_http_serves_every_listen_form_on_every_interface() {
    every_form_serves("http", At::Every);
}

#[test]
fn issue_21_express_serves_every_listen_form_on_an_ipv4_loopback_listener() {
    every_form_serves("express", At::V4);
}

#[test]
fn issue_21_express_serves_every_listen_form_on_an_ipv6_loopback_listener() {
    every_form_serves("express", At::V6);
}

#[test]
fn issue_21_express_serves_every_listen_form_on_every_interface() {
    every_form_serves("express", At::Every);
}

#[test]
fn issue_21_fastify_serves_every_listen_form_on_an_ipv4_loopback_listener() {
    every_form_serves("fastify", At::V4);
}

#[test]
fn issue_21_fastify_serves_every_listen_form_on_an_ipv6_loopback_listener() {
    every_form_serves("fastify", At::V6);
}

#[test]
fn issue_21_fastify_serves_every_listen_form_on_every_interface() {
    every_form_serves("fastify", At::Every);
}

#[test]
fn issue_21_hapi_serves_every_listen_form_on_an_ipv4_loopback_listener() {
    every_form_serves("hapi", At::V4);
}

#[test]
fn issue_21_hapi_serves_every_listen_form_on_an_ipv6_loopback_listener() {
    every_form_serves("hapi", At::V6);
}

#[test]
fn issue_21_hapi_serves_every_listen_form_on_every_interface() {
    every_form_serves("hapi", At::Every);
}

/// The same under the daemon: `corral start --listen 127.0.0.1:P` with Fastify's
/// documented container form (`host: '0.0.0.0'`) and hapi's `host: 'localhost'`, and a
/// reload that replaces both workers of each.
#[test]
fn issue_21_the_daemon_serves_fastify_on_0_0_0_0_and_hapi_on_localhost_under_listen_127_0_0_1() {
    let Some(app) = corral_testkit::node_file("tests/node-apps", "listen-forms.js") else {
        return;
    };
    let home = crate::home("node-listen-forms");
    for (framework, form) in [("fastify", "0.0.0.0"), ("hapi", "localhost")] {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let (fw, ports, forms) = (
            format!("FRAMEWORK={framework}"),
            format!("PORTS={port}"),
            format!("FORMS={form}"),
        );
        home.ok(&[
            "start", "--name", framework, "-i", "2", "--listen", &listen, "-e", &fw, "-e", &ports,
            "-e", &forms, "--", "node", &app,
        ]);
        let before = corral_testkit::pids(&home.wait_online(framework, 2));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let answer = get(addr, "/").expect("served on corral's listener");
        assert!(
            answer.body.starts_with(&format!("{framework} {form}")),
            "{}",
            answer.body
        );
        home.ok(&["reload", framework]);
        assert!(
            corral_testkit::eventually(T, || {
                let now = corral_testkit::pids(&home.app(framework));
                now.len() == 2 && now.iter().all(|p| !before.contains(p))
            }),
            "both workers replaced: {}",
            home.daemon_log()
        );
        assert!(get(addr, "/").is_ok_and(|a| a.body.starts_with(framework)));
        assert_eq!(home.app(framework).restarts, 0, "{}", home.daemon_log());
    }
    let log = home.daemon_log();
    assert!(
        log.contains(&"the app asked for 0.0.0.0:".to_string())
            && log.contains("serving it on corral's 127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains("already in use"), "{log}");
}
