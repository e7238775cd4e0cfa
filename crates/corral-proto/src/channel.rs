//! The worker channel: one JSON object per line, as Node's IPC channel frames it in json mode.
//!
//! Messages corral defines carry `"cmd": "CORRAL_<NAME>"`; any other JSON value on the
//! channel is a user message. Connection fds travel as SCM_RIGHTS on the bytes of the
//! `CORRAL_CONN` message that announces them.

use serde::{Deserialize, Serialize};

/// Bumped when a message changes meaning; both sides say theirs in hello/welcome.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side accepts; a longer one is discarded whole.
pub const MAX_LINE: usize = 64 * 1024;

/// The messages corral defines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd")]
pub enum Message {
    /// Worker → supervisor, first thing: who it is and what it can do.
    #[serde(rename = "CORRAL_HELLO")]
    Hello {
        version: u32,
        /// The worker takes connections handed over the channel.
        #[serde(default)]
        dispatch: bool,
        /// The worker sends heartbeats at least this often.
        #[serde(default)]
        heartbeat_ms: Option<u64>,
        /// The worker is Node reading this channel as its IPC channel: connections
        /// must come one per message, framed as Node's own handle passing.
        #[serde(default)]
        node: bool,
    },
    /// Supervisor → worker, in answer to hello.
    #[serde(rename = "CORRAL_WELCOME")]
    Welcome {
        version: u32,
        /// Connections will arrive over the channel: don't accept on the inherited listeners.
        dispatch: bool,
        /// How many connections may be outstanding before the worker acks.
        window: u32,
    },
    /// Worker → supervisor: ready to serve.
    #[serde(rename = "CORRAL_READY")]
    Ready {},
    /// Worker → supervisor: alive, with numbers for health policing.
    #[serde(rename = "CORRAL_HEARTBEAT")]
    Heartbeat {
        #[serde(default)]
        rss: u64,
        /// How late the worker's timers fire (event-loop / runtime lag), in ms.
        #[serde(default)]
        lag_ms: f64,
        #[serde(default)]
        active: u64,
        #[serde(default)]
        requests: u64,
    },
    /// Supervisor → worker: `fds` connections accepted on listener `listener` come with
    /// this line as SCM_RIGHTS.
    #[serde(rename = "CORRAL_CONN")]
    Conn { listener: u32, fds: u32 },
    /// Worker → supervisor: `received` connections taken off the channel since it
    /// started (a running total, so a lost ack is made good by the next); `active` open now.
    #[serde(rename = "CORRAL_ACK")]
    Ack { received: u64, active: u64 },
    /// Worker → supervisor: deliver `data` to every other worker of the app.
    #[serde(rename = "CORRAL_BROADCAST")]
    Broadcast { data: serde_json::Value },
    /// Supervisor → worker: a message from another worker (`from` is its slot) or from
    /// the supervisor (`from` absent).
    #[serde(rename = "CORRAL_MESSAGE")]
    Message {
        #[serde(default)]
        from: Option<usize>,
        data: serde_json::Value,
    },
    /// Supervisor → worker: drain and exit.
    #[serde(rename = "CORRAL_SHUTDOWN")]
    Shutdown {},
    /// Worker → supervisor: the app listens on a TCP port corral has no listener for
    /// (Node's `listen(port)` in cluster mode). corral binds it once, keeps it for the
    /// app's life and hands it to every worker that asks, as Node's cluster primary does.
    #[serde(rename = "CORRAL_BIND")]
    Bind {
        port: u16,
        #[serde(default)]
        host: Option<String>,
    },
    /// Worker → supervisor: the app listened on `asked`, a port corral listens on at
    /// other addresses; the worker serves it on corral's sockets at `on`.
    #[serde(rename = "CORRAL_SERVED_ON")]
    ServedOn { asked: String, on: Vec<String> },
    /// Supervisor → worker: the answer to `CORRAL_BIND`. With no `error`, the listening
    /// socket comes with it (to a Node worker as Node's own handle passing).
    #[serde(rename = "CORRAL_BOUND")]
    Bound {
        port: u16,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        error: Option<BindFailure>,
    },
}

/// Why corral could not bind a port a worker asked for, as Node reports listen errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindFailure {
    /// `EADDRINUSE`, `EACCES`, ...
    pub code: String,
    pub errno: i32,
    pub message: String,
}

/// One decoded line.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Corral(Message),
    /// Any JSON that is not a `CORRAL_*` command.
    User(serde_json::Value),
}

/// Why a line could not be decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("unknown corral command `{0}`")]
    UnknownCommand(String),
    #[error("malformed `{cmd}` message: {reason}")]
    Malformed { cmd: String, reason: String },
    #[error("line longer than {MAX_LINE} bytes, discarded")]
    TooLong,
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<Frame, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let cmd = match value.get("cmd").and_then(|c| c.as_str()) {
        Some(cmd) if cmd.starts_with("CORRAL_") => cmd.to_owned(),
        _ => return Ok(Frame::User(value)),
    };
    serde_json::from_value::<Message>(value)
        .map(Frame::Corral)
        .map_err(|e| {
            let reason = e.to_string();
            if reason.starts_with("unknown variant") {
                DecodeError::UnknownCommand(cmd)
            } else {
                DecodeError::Malformed { cmd, reason }
            }
        })
}

/// Encodes a message as one line, newline included.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = serde_json::to_vec(message).expect("corral messages always serialize");
    out.push(b'\n');
    out
}

/// The line that hands a listening socket to a Node worker: Node's IPC handle message
/// (type `net.Native`: the raw handle) wrapping a `CORRAL_BOUND` for `port` and `host`.
pub fn encode_node_bound(port: u16, host: Option<&str>, listener: u32) -> Vec<u8> {
    let value = serde_json::json!({
        "cmd": "NODE_HANDLE",
        "type": "net.Native",
        "msg": { "cmd": "CORRAL_BOUND", "port": port, "host": host, "listener": listener },
    });
    encode_user(&value)
}

/// The line that hands one connection to a Node worker: Node's own IPC handle message
/// (`NODE_HANDLE`, type `net.Socket`) wrapping a `CORRAL_CONN` for listener `listener`.
/// Node answers each with `{"cmd":"NODE_HANDLE_ACK"}`.
pub fn encode_node_conn(listener: u32) -> Vec<u8> {
    let value = serde_json::json!({
        "cmd": "NODE_HANDLE",
        "type": "net.Socket",
        "msg": { "cmd": "CORRAL_CONN", "listener": listener, "fds": 1 },
    });
    encode_user(&value)
}

/// Whether a user value is one of Node's own IPC messages (`{"cmd":"NODE_..."}`).
pub fn is_node_internal(value: &serde_json::Value) -> bool {
    value
        .get("cmd")
        .and_then(|c| c.as_str())
        .is_some_and(|c| c.starts_with("NODE_"))
}

/// Encodes any user value as one line, newline included.
pub fn encode_user(value: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).expect("JSON values always serialize");
    out.push(b'\n');
    out
}

/// Splits a byte stream into lines, at most [`MAX_LINE`] bytes each; a longer line is
/// reported once as [`DecodeError::TooLong`] and skipped up to its newline.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    discarding: bool,
}

impl Lines {
    pub fn new() -> Self {
        Lines::default()
    }

    /// Feeds bytes in and returns every line they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Result<Vec<u8>, DecodeError>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest, complete) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if self.discarding {
                if complete {
                    self.discarding = false;
                }
                continue;
            }
            if self.buf.len() + chunk.len() > MAX_LINE {
                self.buf.clear();
                out.push(Err(DecodeError::TooLong));
                self.discarding = !complete;
                continue;
            }
            self.buf.extend_from_slice(chunk);
            if complete {
                let line = std::mem::take(&mut self.buf);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(Ok(line));
                }
            }
        }
        out
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The unfinished line itself (empty while a line too long is being skipped), for a
    /// reader that continues elsewhere.
    pub fn unfinished(&self) -> &[u8] {
        if self.discarding {
            &[]
        } else {
            &self.buf
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn corral_messages_round_trip() {
        let messages = [
            Message::Hello {
                version: 1,
                dispatch: true,
                heartbeat_ms: Some(1000),
                node: false,
            },
            Message::Welcome {
                version: 1,
                dispatch: true,
                window: 64,
            },
            Message::Ready {},
            Message::Heartbeat {
                rss: 1,
                lag_ms: 0.5,
                active: 2,
                requests: 3,
            },
            Message::Conn {
                listener: 0,
                fds: 3,
            },
            Message::Ack {
                received: 3,
                active: 1,
            },
            Message::Broadcast {
                data: json!({"k": [1, 2]}),
            },
            Message::Message {
                from: Some(1),
                data: json!("hi"),
            },
            Message::Shutdown {},
        ];
        for m in messages {
            let line = encode(&m);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode(&line[..line.len() - 1]), Ok(Frame::Corral(m)));
        }
    }

    #[test]
    fn wire_names_are_the_node_style_cmd_field() {
        let line = encode(&Message::Ready {});
        assert_eq!(line, b"{\"cmd\":\"CORRAL_READY\"}\n");
    }

    #[test]
    fn anything_else_is_a_user_message() {
        assert_eq!(decode(b"\"ready\""), Ok(Frame::User(json!("ready"))));
        assert_eq!(
            decode(br#"{"cmd":"NODE_CLUSTER","x":1}"#),
            Ok(Frame::User(json!({"cmd":"NODE_CLUSTER","x":1})))
        );
    }

    #[test]
    fn bad_lines_are_errors_not_panics() {
        assert!(matches!(decode(b"{nope"), Err(DecodeError::NotJson(_))));
        assert_eq!(
            decode(br#"{"cmd":"CORRAL_EXPLODE"}"#),
            Err(DecodeError::UnknownCommand("CORRAL_EXPLODE".into()))
        );
        assert!(matches!(
            decode(br#"{"cmd":"CORRAL_ACK","received":"many"}"#),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn lines_are_split_across_reads() {
        let mut lines = Lines::new();
        assert!(lines.push(b"{\"a\":").is_empty());
        let got = lines.push(b"1}\n\n{\"b\":2}\n{\"c\"");
        assert_eq!(
            got,
            vec![Ok(b"{\"a\":1}".to_vec()), Ok(b"{\"b\":2}".to_vec())]
        );
        assert_eq!(lines.pending(), 4);
    }

    /// A cheap, deterministic stand-in for the fuzz target (`fuzz/`), run on every test run.
    #[test]
    fn random_bytes_never_panic_or_grow_the_buffer() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\":,\n ,0123456789abcCORRAL_ACKcmd\xff";
        let mut lines = Lines::new();
        for _ in 0..2000 {
            let len = (next() % 300) as usize;
            let chunk: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for line in lines.push(&chunk).into_iter().flatten() {
                let _ = decode(&line);
            }
            assert!(lines.pending() <= MAX_LINE);
        }
    }

    #[test]
    fn an_overlong_line_is_dropped_once_and_the_next_one_survives() {
        let mut lines = Lines::new();
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(lines.push(&long), vec![Err(DecodeError::TooLong)]);
        assert!(
            lines.push(&long).is_empty(),
            "still discarding, reported once"
        );
        assert_eq!(lines.push(b"tail\n{}\n"), vec![Ok(b"{}".to_vec())]);
    }
}
