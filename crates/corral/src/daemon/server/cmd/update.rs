//! `update`: the daemon becomes the corral binary the client names (`exec`, same pid),
//! handing every app's engine over without a worker noticing; or, when anything stands
//! in the way, stays as it is and says why.
//!
//! Order: check the new binary (`__handover check`); ask every engine to hand over
//! (a reload or stop under way refuses); wait for each engine's state and listeners and
//! for its log writer to finish; write the document; exec. A refusal, or an exec that
//! fails, gives every engine back its workers in this process.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use corral_core::handover::{self, Fd};
use corral_core::listen::{Listener, ListenerState};
use corral_core::supervisor::{HandOverResult, Handed};

use crate::daemon::server::*;
use corral_core::board::SlotBoard;

/// How long an app's log writer may take to write what its workers said last.
const LOGS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// An engine that handed over: its listeners and its state.
type Engine = (Vec<Listener>, Box<Handed>);

/// How long, once every engine has handed over, the exec waits for the connections
/// accepted before the front paused to be answered.
const QUIET_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// An update under way.
pub(in crate::daemon::server) struct Updating {
    exe: PathBuf,
    conn: UnixStream,
    /// The apps whose engines are handing over: what each has given back so far.
    apps: BTreeMap<String, Handing>,
    refused: Vec<String>,
    /// When the exec goes ahead even if the front is not quiet yet.
    quiet_by: Option<std::time::Instant>,
    /// A [`Msg::UpdateTick`] is on its way.
    ticking: bool,
}

#[derive(Default)]
struct Handing {
    answered: bool,
    engine: Option<Box<Handed>>,
    listeners: Option<Vec<Listener>>,
}

impl Handing {
    fn done(&self) -> bool {
        self.answered && (self.engine.is_none() || self.listeners.is_some())
    }
}

/// What the daemon hands to the binary it becomes.
#[derive(serde::Serialize, serde::Deserialize)]
pub(in crate::daemon) struct DaemonDoc {
    version: u32,
    pub from: String,
    /// The home's lock (flock), held across the exec.
    lock: Option<Fd>,
    /// The control socket, listening all along.
    control: Option<Fd>,
    pub keeper: Option<Fd>,
    /// The holder's pid, which its link (a socket pair this pid made) can't tell.
    #[serde(default)]
    pub holder_pid: Option<i32>,
    /// The `corral update` connection, answered by whichever binary runs in the end
    /// (none in a snapshot for the holder).
    reply: Option<Fd>,
    next_id: u32,
    apps: Vec<AppDoc>,
}

impl DaemonDoc {
    /// What a holder kept: `apps`, the daemon's next id and the version that wrote it.
    pub(in crate::daemon::server) fn held(
        from: String,
        next_id: u32,
        apps: Vec<AppDoc>,
    ) -> DaemonDoc {
        DaemonDoc {
            version: handover::VERSION,
            from,
            lock: None,
            control: None,
            keeper: None,
            holder_pid: None,
            reply: None,
            next_id,
            apps,
        }
    }

    /// Whether a binary of this version can take it.
    pub(in crate::daemon) fn fits(&self) -> bool {
        self.version == handover::VERSION
    }

    /// Marks the workers of `ready` ready, engines and rows (see `Handed::mark_ready`).
    pub(in crate::daemon) fn mark_ready(&mut self, ready: &[i32]) {
        for app in &mut self.apps {
            if let Some(engine) = &mut app.engine {
                engine.handed.mark_ready(ready);
            }
            for row in app.board.rows_mut() {
                if row.pid.is_some_and(|p| ready.contains(&p))
                    && row.status == corral_proto::control::WorkerStatus::Starting
                {
                    row.status = corral_proto::control::WorkerStatus::Online;
                }
            }
        }
    }

    /// Every process group its engines hold.
    pub(in crate::daemon) fn groups(&self) -> Vec<i32> {
        let engines = self.apps.iter().filter_map(|a| a.engine.as_ref());
        engines.flat_map(|e| e.handed.groups()).collect()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(in crate::daemon::server) struct AppDoc {
    id: u32,
    start: StartApp,
    status: Status,
    listen: Vec<String>,
    board: SlotBoard,
    engine: Option<EngineDoc>,
}

impl AppDoc {
    /// The process groups its engine holds.
    pub(in crate::daemon::server) fn groups(&self) -> Vec<i32> {
        self.engine
            .as_ref()
            .map(|e| e.handed.groups())
            .unwrap_or_default()
    }

    pub(in crate::daemon::server) fn of(app: &App, engine: Option<EngineDoc>) -> AppDoc {
        AppDoc {
            id: app.id,
            start: app.start.clone(),
            status: app.status,
            listen: app.listen.clone(),
            board: app.board.clone(),
            engine,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(in crate::daemon::server) struct EngineDoc {
    listeners: Vec<ListenerState>,
    handed: Box<Handed>,
}

impl From<corral_core::supervisor::EngineSnapshot> for EngineDoc {
    fn from(e: corral_core::supervisor::EngineSnapshot) -> EngineDoc {
        EngineDoc {
            listeners: e.listeners,
            handed: e.engine,
        }
    }
}

impl DaemonDoc {
    /// The lock and the control socket; the keeper is adopted on the way.
    pub(in crate::daemon) fn take_daemon_fds(
        &mut self,
    ) -> anyhow::Result<(std::fs::File, std::os::fd::OwnedFd)> {
        if let Some(keeper) = self.keeper.take() {
            corral_core::os::keeper::adopt(keeper);
        }
        match (self.lock.take(), self.control.take()) {
            (Some(lock), Some(control)) => Ok((std::fs::File::from(lock.0), control.0)),
            _ => anyhow::bail!("the hand-over document has no lock or control socket"),
        }
    }
}

/// Copies of every handed-over engine's listeners.
fn listener_states(
    engines: &BTreeMap<String, Engine>,
) -> anyhow::Result<BTreeMap<String, Vec<ListenerState>>> {
    let copies = engines.iter().map(|(name, (listeners, _))| {
        let states: std::io::Result<Vec<_>> = listeners.iter().map(Listener::snapshot).collect();
        states.map(|states| (name.clone(), states))
    });
    copies
        .collect::<std::io::Result<_>>()
        .context("cannot pass the listeners on")
}

/// Writes `response` on a control connection the state task holds itself.
fn answer(conn: UnixStream, response: Response) {
    use std::io::Write;
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body: response,
    };
    if let Ok(mut bytes) = serde_json::to_vec(&envelope) {
        bytes.push(b'\n');
        let mut conn = conn;
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
        let _ = conn.write_all(&bytes);
    }
}

fn not_updated(why: &str) -> Response {
    Refusal::NotUpdated(why.to_owned()).into()
}

impl Daemon {
    /// Checks `exe` (by default the binary now at the daemon's own path) off the state
    /// task, then goes on in [`Daemon::update_checked`].
    pub(in crate::daemon::server) fn update(&mut self, exe: Option<String>, conn: UnixStream) {
        if let Some(why) = self.cannot_update() {
            return answer(conn, not_updated(why));
        }
        self.checking_update = true;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let exe = exe.map_or_else(crate::upgrade::installed_exe, PathBuf::from);
            let target = exe.clone();
            let checked = tokio::task::spawn_blocking(move || crate::upgrade::check(&target))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| format!("{e:#}")));
            let _ = tx.send(Msg::UpdateChecked { exe, conn, checked });
        });
    }

    fn cannot_update(&self) -> Option<&'static str> {
        if self.killing.is_some() {
            Some("the daemon is stopping")
        } else if self.updating.is_some() || self.checking_update {
            Some("an update is already under way; run it again once that one has answered")
        } else {
            None
        }
    }

    pub(in crate::daemon::server) fn update_checked(
        &mut self,
        exe: PathBuf,
        conn: UnixStream,
        checked: Result<(), String>,
    ) {
        self.checking_update = false;
        if let Err(why) = checked {
            return answer(conn, not_updated(&why));
        }
        if let Some(why) = self.cannot_update() {
            return answer(conn, not_updated(why));
        }
        let mut updating = Updating {
            exe,
            conn,
            apps: BTreeMap::new(),
            refused: Vec::new(),
            quiet_by: None,
            ticking: false,
        };
        // From now on connections wait for whichever binary runs in the end.
        self.front.pause();
        for app in self.apps.values().filter(|a| a.controls.is_some()) {
            let (request, answered) = corral_core::supervisor::hand_over_request();
            if let Err(e) = send(app, request) {
                updating.refused.push(e.to_string());
                continue;
            }
            updating.apps.insert(app.name.clone(), Handing::default());
            let (tx, name) = (self.tx.clone(), app.name.clone());
            tokio::spawn(async move {
                let result = answered.get().await;
                let _ = tx.send(Msg::HandOverAnswer(name, result));
            });
        }
        journal::say(&format!(
            "update: handing {} apps over to {}",
            updating.apps.len(),
            updating.exe.display()
        ));
        self.updating = Some(updating);
    }

    pub(in crate::daemon::server) fn hand_over_answer(
        &mut self,
        name: &str,
        result: HandOverResult,
    ) {
        let Some(updating) = &mut self.updating else {
            return;
        };
        let Some(handing) = updating.apps.get_mut(name) else {
            return;
        };
        handing.answered = true;
        match result {
            Ok(engine) => handing.engine = Some(engine),
            Err(refused) => updating.refused.push(format!("{name}: {refused}")),
        }
    }

    /// An engine that handed over has ended: its listeners.
    pub(in crate::daemon::server) fn released(&mut self, name: &str, listeners: Vec<Listener>) {
        if let Some(handing) = self.updating.as_mut().and_then(|u| u.apps.get_mut(name)) {
            handing.listeners = Some(listeners);
        }
    }

    /// Whether every engine has answered, and the update can go on.
    pub(in crate::daemon::server) fn update_ready(&self) -> bool {
        self.updating
            .as_ref()
            .is_some_and(|u| u.apps.values().all(Handing::done))
    }

    /// Once every connection accepted before the front paused has been answered (or
    /// after [`QUIET_WITHIN`]), execs the new binary; or gives the engines back their
    /// workers and says why not.
    pub(in crate::daemon::server) async fn finish_update(&mut self) {
        let Some(updating) = self.updating.as_mut() else {
            return;
        };
        let now = std::time::Instant::now();
        let by = *updating.quiet_by.get_or_insert(now + QUIET_WITHIN);
        if !self.front.quiet() && now < by {
            if !std::mem::replace(&mut updating.ticking, true) {
                self.send_later(std::time::Duration::from_millis(10), Msg::UpdateTick);
            }
            return;
        }
        let Some(updating) = self.updating.take() else {
            return;
        };
        self.exec_update(updating).await;
        // Still here: not updated, and this binary answers again.
        self.front.resume();
    }

    /// A tick of [`Daemon::finish_update`]'s wait.
    pub(in crate::daemon::server) fn update_tick(&mut self) {
        if let Some(updating) = self.updating.as_mut() {
            updating.ticking = false;
        }
    }

    async fn exec_update(&mut self, updating: Updating) {
        let Updating {
            exe,
            conn,
            apps,
            refused,
            ..
        } = updating;
        let engines: BTreeMap<String, Engine> = apps
            .into_iter()
            .filter_map(|(name, h)| Some((name, (h.listeners?, h.engine?))))
            .collect();
        if !refused.is_empty() {
            self.resume(engines);
            return answer(conn, not_updated(&refused.join("; ")));
        }
        for app in self.apps.values_mut() {
            if let Some(task) = app.log_task.take() {
                let _ = tokio::time::timeout(LOGS_GRACE, task).await;
            }
        }
        // Every fd is duplicated before anything is let go: out of fds, nothing changed.
        let copies = self
            .own_fds(&conn)
            .and_then(|own| Ok((own, listener_states(&engines)?)));
        let (own, listeners) = match copies {
            Ok(copies) => copies,
            Err(e) => {
                self.resume(engines);
                return answer(conn, not_updated(&format!("{e:#}")));
            }
        };
        drop(conn);
        let doc = self.document(engines, own, listeners);
        journal::say(&format!(
            "update: becoming {} (pid {})",
            exe.display(),
            std::process::id()
        ));
        journal::flush().await;
        let (doc, error) = handover::exec(doc, &exe, None);
        let why = format!("{:#}", anyhow::Error::from(error));
        journal::say(&format!("update: {why}; the apps go on here"));
        if let Some(reply) = self.adopt_engines(doc) {
            answer(reply, not_updated(&why));
        }
    }

    /// Gives every engine its workers back, in this process.
    fn resume(&mut self, engines: BTreeMap<String, Engine>) {
        for (name, engine) in engines {
            self.relaunch_adopted(&name, engine);
        }
    }

    fn relaunch_adopted(&mut self, name: &str, engine: Engine) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        if let Err(e) = launch(app, &self.home, &self.tx, Some(engine)) {
            journal::say(&format!("{name}: cannot take its workers back: {e}"));
        }
    }

    /// Duplicates of the home's lock, the control socket and the `corral update`
    /// connection `conn`, for the document.
    fn own_fds(&self, conn: &UnixStream) -> anyhow::Result<[Fd; 3]> {
        let lock = self.lock.as_ref().context("the daemon holds no lock")?;
        let control = self
            .control
            .as_ref()
            .context("no control socket to pass on")?;
        let dup = |fd| Fd::dup(fd).context("cannot pass the daemon's own sockets on");
        Ok([
            dup(lock.as_fd())?,
            dup(control.as_fd())?,
            dup(conn.as_fd())?,
        ])
    }

    /// The document for the next binary: every app, the engines that handed over (their
    /// listeners' copies in `listeners`; the originals are let go here), and `own` fds.
    fn document(
        &self,
        mut engines: BTreeMap<String, Engine>,
        own: [Fd; 3],
        mut listeners: BTreeMap<String, Vec<ListenerState>>,
    ) -> DaemonDoc {
        let apps = self
            .apps
            .values()
            .map(|app| {
                let engine = engines.remove(&app.name).map(|(originals, handed)| {
                    originals.into_iter().for_each(Listener::release);
                    EngineDoc {
                        listeners: listeners.remove(&app.name).unwrap_or_default(),
                        handed,
                    }
                });
                AppDoc::of(app, engine)
            })
            .collect();
        let [lock, control, reply] = own;
        DaemonDoc {
            version: handover::VERSION,
            from: env!("CARGO_PKG_VERSION").to_owned(),
            lock: Some(lock),
            control: Some(control),
            keeper: corral_core::os::keeper::hand_over(),
            holder_pid: self.holder_pid,
            reply: Some(reply),
            next_id: self.next_id,
            apps,
        }
    }

    /// Takes over the apps of `doc` (from a previous binary, or this one's own after a
    /// failed exec); returns the connection of the `corral update` that asked.
    pub(in crate::daemon) fn adopt_engines(&mut self, doc: DaemonDoc) -> Option<UnixStream> {
        self.next_id = self.next_id.max(doc.next_id);
        for mut app_doc in doc.apps {
            let engine = app_doc.engine.take().map(|e| {
                let listeners = e.listeners.into_iter().map(Listener::resume).collect();
                (listeners, e.handed)
            });
            let name = match self.apps.values().find(|a| a.id == app_doc.id) {
                Some(app) => app.name.clone(),
                None => match self.restore_app(app_doc) {
                    Ok(app) => {
                        let name = app.name.clone();
                        self.apps.insert(name.clone(), Box::new(app));
                        name
                    }
                    Err(e) => {
                        journal::say(&format!("update: an app can't be taken over: {e}"));
                        continue;
                    }
                },
            };
            if let Some(engine) = engine {
                self.relaunch_adopted(&name, engine);
            }
        }
        doc.reply.map(|fd| UnixStream::from(fd.0))
    }

    fn restore_app(&self, doc: AppDoc) -> Result<App, String> {
        let Parsed {
            spec,
            triggers,
            lines,
            layout,
        } = parse_start(&doc.start)?;
        let mut app = App::new(doc.start, spec, triggers);
        app.id = doc.id;
        app.lines = lines;
        app.layout = layout;
        app.log_generation = self.log_generation.clone();
        app.status = doc.status;
        app.listen = doc.listen;
        app.board = doc.board;
        Ok(app)
    }

    /// How many apps and workers a document hands over, for the first words of the new binary.
    pub(in crate::daemon) fn adopted_summary(&self) -> String {
        let running = self.apps.values().filter(|a| a.controls.is_some()).count();
        let workers: usize = self.apps.values().map(|a| a.board.pids().count()).sum();
        format!("{running} apps, {workers} workers kept")
    }
}

/// Answers the `corral update` that led here, from the binary that took over.
pub(in crate::daemon) fn answer_update(conn: UnixStream, from: &str, summary: &str) {
    let version = env!("CARGO_PKG_VERSION");
    let response = match crate::upgrade::failed_attempt() {
        Some(why) => not_updated(&why),
        None => Response::ok(format!(
            "daemon {} updated in place from corral {from} to {version}: {summary}",
            std::process::id()
        )),
    };
    answer(conn, response);
}
