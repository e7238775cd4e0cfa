//! The CLI's side of the control socket: connect (starting the daemon on demand), send
//! one request, read one response.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use corral_proto::control::{Envelope, Response, PROTOCOL_VERSION};

use crate::home::Home;
use crate::model::Request;

/// How long a freshly started daemon may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// No daemon serves the home (nothing listens on its socket).
#[derive(Debug, thiserror::Error)]
#[error("no corral daemon is running (for {0})")]
pub struct NoDaemon(pub String);

/// Whether `e` says that no daemon runs, as opposed to one that could not be reached.
pub fn is_no_daemon(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NoDaemon>().is_some()
}

/// How long a request is sent again while the daemon says to retry (it is updating).
const RETRY_FOR: Duration = Duration::from_secs(15);

/// Sends `request`; with `start`, starts the daemon first when none is running. While
/// the daemon updates itself, the request is sent again until the new binary answers.
pub fn request(home: &Home, request: Request, start: bool) -> anyhow::Result<Response> {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match request_once(home, &request, start)? {
            Response::Error { retry: true, .. } if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            response => return Ok(response),
        }
    }
}

fn request_once(home: &Home, request: &Request, start: bool) -> anyhow::Result<Response> {
    use std::io::ErrorKind;
    let stream = match UnixStream::connect(home.socket()) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            if !start {
                return Err(NoDaemon(home.dir.display().to_string()).into());
            }
            start_daemon(home)?
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot connect to the corral daemon at {}",
                    home.socket().display()
                )
            })
        }
    };
    exchange(stream, request, home)
}

fn exchange(mut stream: UnixStream, request: &Request, home: &Home) -> anyhow::Result<Response> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body: request.clone(),
    };
    let mut line = serde_json::to_vec(&envelope)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .context("cannot send to the corral daemon")?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("the corral daemon did not answer")?;
    if answer.is_empty() {
        bail!(
            "the corral daemon closed the connection without answering (it stopped or \
             restarted meanwhile); run the command again (the daemon's log: {})",
            home.daemon_log().display()
        );
    }
    let envelope: Envelope<Response> = serde_json::from_str(&answer).with_context(|| {
        format!(
            "the corral daemon answered something this corral (protocol v{PROTOCOL_VERSION}) \
             doesn't understand: {}; run `corral update` to move the daemon to this corral \
             in place (apps keep running), then retry",
            answer.trim()
        )
    })?;
    Ok(envelope.body)
}

/// Starts `corral daemon` in a session of its own, output to `daemon.log`, and waits
/// until it answers.
fn start_daemon(home: &Home) -> anyhow::Result<UnixStream> {
    home.create()?;
    home.spawn_daemon().with_context(|| {
        format!(
            "cannot start the corral daemon (log: {})",
            home.daemon_log().display()
        )
    })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(stream) = UnixStream::connect(home.socket()) {
            return Ok(stream);
        }
        if Instant::now() >= deadline {
            bail!(
                "the corral daemon did not start within {}s; see {}",
                START_TIMEOUT.as_secs(),
                home.daemon_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
