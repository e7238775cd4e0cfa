//! The control socket's front: accepting connections, reading each one's request and
//! writing its answer; and pausing all that for an update, so that the exec waits until
//! every accepted connection is answered and later ones wait for the next binary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::Msg;
use crate::daemon::journal;
use crate::daemon::refusal::Refusal;
use crate::model::Request;
use crate::render;
use corral_proto::control::{Envelope, Response, PROTOCOL_VERSION};

/// The daemon's handle on its front.
pub(super) struct Front {
    paused: watch::Sender<bool>,
    parked: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

/// The accepting side's.
pub(super) struct Side {
    paused: watch::Receiver<bool>,
    parked: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
}

impl Front {
    pub(super) fn new() -> (Front, Side) {
        let (paused, watched) = watch::channel(false);
        let (parked, in_flight) = (Arc::default(), Arc::<AtomicUsize>::default());
        let side = Side {
            paused: watched,
            parked: Arc::clone(&parked),
            in_flight: Arc::clone(&in_flight),
        };
        (
            Front {
                paused,
                parked,
                in_flight,
            },
            side,
        )
    }

    /// Accepts nothing more until [`Front::resume`].
    pub(super) fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub(super) fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Paused, and every connection accepted before has been answered (or given up).
    pub(super) fn quiet(&self) -> bool {
        self.parked.load(Ordering::SeqCst) && self.in_flight.load(Ordering::SeqCst) == 0
    }
}

/// A connection being served, counted until it ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections that have not sent their request yet, at most; a new one closes the
/// oldest, so idle connections can never lock real clients out.
const MAX_PENDING: usize = 128;
/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request read (a whole config's environment fits many times over).
pub const MAX_REQUEST: u64 = 16 * 1024 * 1024;

/// Accepts control connections until the daemon exits. Out of fds (EMFILE, ENFILE) or
/// memory, it waits and tries again, however long that lasts. Paused (an update), it
/// accepts nothing: connections wait in the socket's backlog.
pub(super) async fn accept_loop(
    listener: UnixListener,
    tx: mpsc::UnboundedSender<Msg>,
    mut side: Side,
) {
    let (read_tx, mut read_rx) = mpsc::unbounded_channel::<u64>();
    let mut pending: std::collections::VecDeque<(u64, tokio::task::AbortHandle)> =
        Default::default();
    let mut next = 0u64;
    let mut backoff = Backoff::default();
    loop {
        if *side.paused.borrow_and_update() {
            side.parked.store(true, Ordering::SeqCst);
            if side.paused.wait_for(|paused| !*paused).await.is_err() {
                return;
            }
            side.parked.store(false, Ordering::SeqCst);
        }
        tokio::select! {
            _ = side.paused.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = Backoff::default();
                    if pending.len() >= MAX_PENDING {
                        if let Some((_, oldest)) = pending.pop_front() {
                            oldest.abort();
                        }
                    }
                    let id = next;
                    next += 1;
                    let guard = InFlight::new(&side.in_flight);
                    let task = tokio::spawn(connection(stream, tx.clone(), read_tx.clone(), id, guard));
                    pending.push_back((id, task.abort_handle()));
                }
                Err(e) if e.raw_os_error().is_some_and(corral_core::os::out_of_resources) => {
                    let wait = backoff.next();
                    if backoff.should_say() {
                        journal::say(&format!(
                            "control socket: cannot accept ({e}); retrying every {}",
                            render::duration(wait)
                        ));
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(_) => {} // the client gave up before we took it (ECONNABORTED...)
            },
            Some(id) = read_rx.recv() => pending.retain(|(i, _)| *i != id),
        }
    }
}

/// Exponential waits from 10 ms to 1 s; says so once per streak, then every 100th time.
#[derive(Default)]
struct Backoff {
    tries: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = Duration::from_millis(10u64 << self.tries.min(7));
        self.tries += 1;
        wait.min(Duration::from_secs(1))
    }

    fn should_say(&self) -> bool {
        self.tries % 100 == 1
    }
}

/// One request per connection, from our own user only.
async fn connection(
    stream: UnixStream,
    tx: mpsc::UnboundedSender<Msg>,
    read: mpsc::UnboundedSender<u64>,
    id: u64,
    guard: InFlight,
) {
    let peer = getsockopt(&stream, PeerCredentials).map(|c| c.uid());
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let (read_half, mut write) = stream.into_split();
    // Read the request even from a stranger, so that the refusal reaches it rather than
    // a broken pipe; one line of at most MAX_REQUEST, within REQUEST_TIMEOUT.
    let mut line = Vec::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read_half, MAX_REQUEST + 1));
    let got = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let _ = read.send(id);
    if !matches!(got, Ok(Ok(n)) if n > 0) {
        return; // idle, closed, or broken: nobody to answer
    }
    if peer.as_ref().ok() == Some(&me) {
        if let Some(exe) = update_request(&line) {
            // Answered by whichever binary runs in the end: the connection goes along.
            let read_half = reader.into_inner().into_inner();
            if let Some(stream) = read_half
                .reunite(write)
                .ok()
                .and_then(|s| s.into_std().ok())
            {
                drop(guard); // its answer comes after the exec
                let _ = tx.send(Msg::Update(exe, stream));
            }
            return;
        }
    }
    let response = if line.len() as u64 > MAX_REQUEST {
        Refusal::TooLarge {
            limit_mib: MAX_REQUEST / (1024 * 1024),
        }
        .into()
    } else {
        answer(peer.ok() == Some(me), me, &line, &tx).await
    };
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body: response,
    };
    if let Ok(mut bytes) = serde_json::to_vec(&envelope) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}

/// Whether `line` is a `corral update` request, whatever its protocol version (any corral
/// may move the daemon to a binary of its choice), and the binary it names, if any.
fn update_request(line: &[u8]) -> Option<Option<String>> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    (value["op"] == "update").then(|| value["exe"].as_str().map(str::to_owned))
}

async fn answer(
    same_user: bool,
    me: u32,
    line: &[u8],
    tx: &mpsc::UnboundedSender<Msg>,
) -> Response {
    if !same_user {
        return Refusal::Stranger { owner: me }.into();
    }
    match serde_json::from_slice::<Envelope<Request>>(line) {
        Ok(envelope) if envelope.version == PROTOCOL_VERSION => {
            let (reply, answer) = oneshot::channel();
            let _ = tx.send(Msg::Request(envelope.body, reply));
            answer
                .await
                .unwrap_or_else(|_| Refusal::ShuttingDown.into())
        }
        Ok(envelope) => Refusal::Protocol {
            daemon: env!("CARGO_PKG_VERSION"),
            ours: PROTOCOL_VERSION,
            theirs: envelope.version,
        }
        .into(),
        Err(e) => Refusal::BadRequest(e).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    #[test]
    fn issue_24_the_accept_backoff_starts_at_10ms_and_stops_at_a_second() {
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
