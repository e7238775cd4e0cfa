//! What the supervisor does with each message a worker sends on its channel.

use std::time::Duration;

use corral_proto::channel::{BindFailure, Frame, Message};

use super::asked::{self, Asked};
use super::workers::OsProcesses;
use crate::channel::{Input, RATE_PER_SEC};
use crate::group::{ChannelProblem, Event, Group, Report};
use crate::process::Pid;

/// Handles one channel input from `pid` and gives the group the events it means.
pub(super) fn apply(
    group: &mut Group<OsProcesses>,
    pid: Pid,
    input: Input,
    reports: &super::Reports,
) {
    for event in handle(group, pid, input, reports) {
        group.handle_event(std::time::Instant::now(), event);
    }
}

/// Handles one channel input from `pid`; returns the events it means for the group.
fn handle(
    group: &mut Group<OsProcesses>,
    pid: Pid,
    input: Input,
    reports: &super::Reports,
) -> Vec<Event> {
    let Some(slot) = group.slot_of(pid) else {
        return Vec::new(); // from a worker already reaped
    };
    let problem = |problem: ChannelProblem| {
        let _ = reports.send(Report::ChannelProblem { slot, pid, problem });
    };
    let procs = group.processes_mut();
    if let Some(channel) = procs.channel(pid) {
        // The worker is alive and talking: a good moment to send what it didn't take yet.
        let _ = channel.flush();
    }
    match input {
        Input::Frame(Frame::Corral(message)) => {
            return corral(procs, pid, slot, message, &problem, reports)
        }
        // Node apps say `process.send('ready')`, as under PM2 with wait_ready.
        Input::Frame(Frame::User(serde_json::Value::String(s))) if s == "ready" => {
            return vec![Event::Notify {
                pid,
                notices: vec![corral_proto::notify::Notice::Ready],
            }];
        }
        Input::Frame(Frame::User(value)) => {
            let _ = reports.send(Report::Message {
                slot,
                pid,
                data: value,
            });
        }
        Input::Bad(error) => problem(ChannelProblem::BadLine {
            error: error.to_string(),
        }),
        Input::Flooded { dropped } => {
            let _ = reports.send(Report::ChannelFlooded {
                slot,
                pid,
                dropped,
                per_second: RATE_PER_SEC as u32,
            });
        }
        Input::Closed => {}
    }
    Vec::new()
}

fn corral(
    procs: &mut OsProcesses,
    pid: Pid,
    slot: usize,
    message: Message,
    problem: &dyn Fn(ChannelProblem),
    reports: &super::Reports,
) -> Vec<Event> {
    match message {
        Message::Hello {
            dispatch,
            heartbeat_ms,
            node,
            ..
        } => {
            if let Err(e) = procs.hello(pid, slot, dispatch, node) {
                problem(ChannelProblem::HelloUnanswered {
                    error: e.to_string(),
                });
            }
            let heartbeat = heartbeat_ms.map(Duration::from_millis);
            vec![Event::Hello { pid, heartbeat }]
        }
        Message::Ready {} => vec![Event::Notify {
            pid,
            notices: vec![corral_proto::notify::Notice::Ready],
        }],
        Message::Heartbeat {
            lag_ms,
            rss,
            active,
            requests,
        } => {
            let lag = Duration::from_secs_f64((lag_ms / 1000.0).clamp(0.0, 86_400.0));
            let _ = reports.send(Report::Vitals {
                slot,
                pid,
                rss,
                lag,
                active,
                requests,
                dispatched: procs.dispatcher.sent_to(pid),
            });
            vec![Event::Heartbeat { pid, lag }]
        }
        Message::Ack { received, active } => {
            procs.dispatcher.ack(pid, received, active);
            Vec::new()
        }
        Message::Broadcast { data } => {
            broadcast(procs, pid, slot, data, problem);
            Vec::new()
        }
        Message::Bind { port, host } => {
            bind_for(procs, pid, slot, port, host, reports);
            Vec::new()
        }
        Message::ServedOn { asked, on } => {
            served_on(procs, reports, slot, pid, asked, on.join(", "));
            Vec::new()
        }
        Message::Welcome { .. }
        | Message::Conn { .. }
        | Message::Message { .. }
        | Message::Bound { .. }
        | Message::Shutdown {} => {
            problem(ChannelProblem::SupervisorOnly);
            Vec::new()
        }
    }
}

/// A worker's message to every other worker of the app.
fn broadcast(
    procs: &mut OsProcesses,
    pid: Pid,
    slot: usize,
    data: serde_json::Value,
    problem: &dyn Fn(ChannelProblem),
) {
    let message = Message::Message {
        from: Some(slot),
        data,
    };
    let mut refused = 0;
    for (_, channel) in procs.other_channels(pid) {
        if channel.send(&message).is_err() {
            refused += 1;
        }
    }
    if refused > 0 {
        problem(ChannelProblem::BroadcastRefused { workers: refused });
    }
}

/// A worker's `listen(port)` on a port corral has no listener for: bind it (once for the
/// app) and hand it over, or tell the worker why not, as Node would.
fn bind_for(
    procs: &mut OsProcesses,
    pid: Pid,
    slot: usize,
    port: u16,
    host: Option<String>,
    reports: &super::Reports,
) {
    let refuse = |procs: &mut OsProcesses, failure: BindFailure| {
        if let Some(channel) = procs.channel(pid) {
            let _ = channel.send(&Message::Bound {
                port,
                host: host.clone(),
                error: Some(failure),
            });
        }
    };
    let Some(addr) = asked::address(port, host.as_deref()) else {
        return refuse(
            procs,
            BindFailure {
                code: "EINVAL".into(),
                errno: -libc::EINVAL,
                message: format!(
                    "corral binds IP addresses only, not `{}`",
                    host.clone().unwrap_or_default()
                ),
            },
        );
    };
    if !procs.is_node(pid) {
        return refuse(
            procs,
            BindFailure {
                code: "EINVAL".into(),
                errno: -libc::EINVAL,
                message: "corral hands asked-for ports to Node workers only".into(),
            },
        );
    }
    let (fd, listener) = match procs.ask_port(addr.clone(), slot) {
        Asked::New {
            fd,
            listener,
            local,
        } => {
            let _ = reports.send(Report::PortBound {
                slot,
                pid,
                addr: local,
            });
            (fd, listener)
        }
        Asked::Known { fd, listener } => (fd, listener),
        Asked::ServedOn { fd, listener, on } => {
            served_on(procs, reports, slot, pid, addr.to_string(), on);
            (fd, listener)
        }
        Asked::Failed { addr, failure } => {
            let _ = reports.send(Report::PortRefused {
                slot,
                pid,
                addr,
                error: failure.message.clone(),
            });
            return refuse(procs, failure);
        }
    };
    if let Some(channel) = procs.channel(pid) {
        if let Err(e) = channel.send_node_listener(port, host.as_deref(), listener, fd) {
            let _ = reports.send(Report::ChannelProblem {
                slot,
                pid,
                problem: ChannelProblem::PortNotHanded {
                    error: e.to_string(),
                },
            });
        }
    }
}

/// The app asked for `asked` and is served on corral's `on`: said once per app and address.
fn served_on(
    procs: &mut OsProcesses,
    reports: &super::Reports,
    slot: usize,
    pid: Pid,
    asked: String,
    on: String,
) {
    if procs.asked.first_served_on(&asked) {
        let _ = reports.send(Report::PortServedOn {
            slot,
            pid,
            asked,
            on,
        });
    }
}
