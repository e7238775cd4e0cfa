//! `corral run`: one app in the foreground, with signals mapped to engine controls.

mod service;
mod upgrade;

use std::time::Duration;

use anyhow::Context;
use corral_core::group::{Outcome, Report};
use corral_core::listen::Listener;
use corral_core::supervisor::{self, Channels, RunError};
use corral_core::writer::{self, Notes};
use corral_core::AppSpec;
use tokio::sync::mpsc;

use crate::chatter::{Chatter, Said};
use crate::cli::{EventFormat, RunArgs};
use crate::exit::Failure;
use crate::render;

/// How long, after the last worker exited, output still in flight may take to arrive.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

pub fn run(args: RunArgs) -> Result<(), Failure> {
    // What a previous binary of this process handed over (an upgrade in place), and
    // sockets systemd passed, are taken before anything else can open a file.
    let adopted = upgrade::take_over()?;
    let mut passed = match adopted {
        Some(_) => Vec::new(), // taken when this process first started
        None => corral_core::activation::inherited(),
    };
    let cwd = std::env::current_dir()
        .context("cannot read the current directory")
        .map_err(Failure::Runtime)?;
    let triggers = args.app.triggers(&cwd).map_err(Failure::Usage)?;
    let lines = args.app.line_format();
    let observe = args.observe.clone();
    let json_reports = args.report_format == EventFormat::Json || lines.json.is_some();
    let spec = args
        .into_spec(
            std::env::vars_os().collect(),
            corral_core::spec::usable_cpus(),
        )
        .map_err(Failure::Usage)?;
    // A typo in the command is reported before anything is bound or started.
    supervisor::resolve(&spec).map_err(|e| Failure::Usage(e.into()))?;
    let (listeners, engine, from) = match adopted {
        Some(doc) => {
            let from = doc.from.clone();
            let (listeners, engine) = doc.take();
            (listeners, Some(engine), Some(from))
        }
        None => (
            corral_core::activation::bind_or_adopt(
                &spec.listen,
                &mut passed,
                spec.balance.reuseport(),
            )
            .map_err(|e| Failure::Runtime(e.into()))?,
            None,
            None,
        ),
    };
    for unused in &passed {
        errln!(
            "[corral] warning: systemd passed a socket on {} that no --listen names; closing it",
            unused.local()
        );
    }
    drop(passed);
    // Orphans of workers are reparented to us and reaped, whether or not we are PID 1.
    let _ = corral_core::os::become_subreaper();
    // If corral is killed, the keeper kills what its workers left (grandchildren too).
    // After an upgrade in place it is the keeper the previous binary started.
    corral_core::os::keeper::start()
        .context("cannot start corral's keeper process")
        .map_err(Failure::Runtime)?;
    let adopt = engine.map(|engine| Adopt { engine, from });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)?;
    runtime.block_on(supervise(
        spec,
        listeners,
        triggers,
        lines,
        observe,
        json_reports,
        adopt,
    ))
}

/// Workers a previous binary of this process handed over, and its version.
struct Adopt {
    engine: Box<corral_core::supervisor::Handed>,
    from: Option<String>,
}

async fn supervise(
    spec: AppSpec,
    listeners: Vec<Listener>,
    triggers: crate::triggers::Triggers,
    lines: crate::line_format::LineFormat,
    observe: crate::model::ObserveArgs,
    json_reports: bool,
    adopt: Option<Adopt>,
) -> Result<(), Failure> {
    let notes = Notes::spawn(std::io::stderr(), |n| {
        render::note(&format!(
            "{n} report lines dropped while stderr was blocked"
        ))
    });
    let speaker = Speaker {
        notes: notes.clone(),
        lines: lines.clone(),
        json: json_reports,
        app: spec.name.clone(),
    };
    let (control_tx, controls) = mpsc::channel(16);
    let (handed_tx, handed_rx) = tokio::sync::oneshot::channel();
    let inputs = Inputs::install(&triggers, control_tx, handed_tx, &speaker)?;
    let (reports, report_rx) = mpsc::unbounded_channel();
    let (logs, log_rx) = mpsc::channel(1024);
    let all_written = write_logs(spec.name.clone(), log_rx, lines);
    let say = |text: &str| speaker.say(None, text);
    let metrics = observe.serve(say).await.map_err(Failure::Runtime)?;
    if let Some(metrics) = &metrics {
        metrics.started(&spec.name, spec.instances);
    }
    let service = service::Service::new(spec.instances);
    let watchdog = service::start_watchdog();
    let report_task = tokio::spawn(print_reports(report_rx, speaker.clone(), metrics, service));

    match &adopt {
        Some(adopt) => say(&adopted_line(&spec.name, adopt)),
        None => say_starting(&spec, &listeners, &say),
    }

    let channels = Channels {
        controls,
        reports: supervisor::Reports::channel(reports),
        logs,
        reap_all: true,
    };
    let outcome = supervisor::run(
        &spec,
        &listeners,
        &corral_core::signals::runtime_dir(),
        channels,
        adopt.map(|a| a.engine),
    )
    .await;
    inputs.signals.abort();
    // Once the engine handed over, the upgrade task has what it gave back.
    let handed = match outcome {
        Ok(Outcome::HandedOver) => handed_rx.await.ok(),
        _ => None,
    };
    inputs.upgrades.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let _ = tokio::time::timeout(OUTPUT_GRACE, report_task).await;
    // Workers are gone (or handed over); let the last lines they wrote reach the terminal.
    let _ = tokio::time::timeout(OUTPUT_GRACE, all_written).await;
    if let Ok(Outcome::HandedOver) = outcome {
        notes.flush(OUTPUT_GRACE).await;
        return Err(exec_upgrade(handed, listeners));
    }
    let inodes: Vec<u64> = listeners
        .iter()
        .filter_map(|l| corral_core::os::sockets::inode_of(l.raw_fd()))
        .collect();
    drop(listeners);
    for escaped in corral_core::os::sockets::kill_holders(&inodes, &[]) {
        say(&format!("{}: {escaped}", spec.name));
    }
    if let Ok(Outcome::Stopped) = outcome {
        say(&format!("{}: stopped", spec.name));
    }
    notes.flush(OUTPUT_GRACE).await;
    ended(outcome, &spec.name)
}

/// Writes the workers' lines to stdout on a thread; the receiver hears once all are written.
/// A terminal that is gone (EPIPE) or full (ENOSPC) loses lines, never the supervisor.
fn write_logs(
    app: String,
    logs: mpsc::Receiver<corral_core::output::LogLine>,
    lines: crate::line_format::LineFormat,
) -> tokio::sync::oneshot::Receiver<()> {
    let mut buf = Vec::new();
    writer::spawn_log_writer(logs, move |line| {
        let _ = render::log_line(&app, line, &mut buf, &lines);
    })
}

/// What sends the engine its controls besides the caller: `--watch` and
/// `--cron-restart`, SIGURG's upgrade, and the forwarded signals.
struct Inputs {
    _triggers: crate::triggers::Running,
    upgrades: tokio::task::JoinHandle<()>,
    signals: tokio::task::JoinHandle<()>,
}

impl Inputs {
    fn install(
        triggers: &crate::triggers::Triggers,
        control_tx: mpsc::Sender<supervisor::Command>,
        handed_tx: tokio::sync::oneshot::Sender<(std::path::PathBuf, Box<supervisor::Handed>)>,
        speaker: &Speaker,
    ) -> Result<Inputs, Failure> {
        let on_trigger = speaker.clone();
        let triggers = crate::triggers::start(triggers, control_tx.clone(), move |m| {
            on_trigger.say(None, &m)
        })
        .map_err(Failure::Runtime)?;
        let on_upgrade = speaker.clone();
        let upgrades = upgrade::on_signal(control_tx.clone(), handed_tx, move |m| {
            on_upgrade.say(None, m)
        })
        .context("cannot install the upgrade signal's handler (SIGURG)")
        .map_err(Failure::Runtime)?;
        let signals = corral_core::signals::forward(control_tx)
            .context("cannot install signal handlers")
            .map_err(Failure::Runtime)?;
        Ok(Inputs {
            _triggers: triggers,
            upgrades,
            signals,
        })
    }
}

/// The engine handed over: `exec` the new binary with it, or say why not (an `exec`
/// that works never returns).
fn exec_upgrade(
    handed: Option<(std::path::PathBuf, Box<supervisor::Handed>)>,
    listeners: Vec<Listener>,
) -> Failure {
    let Some((exe, engine)) = handed else {
        return Failure::Runtime(anyhow::anyhow!(
            "the engine handed over, but nothing came of it"
        ));
    };
    match upgrade::RunDoc::new(listeners, engine).context("cannot hand the listeners over") {
        Ok(doc) => Failure::Runtime(crate::upgrade::exec(doc, &exe)),
        Err(e) => Failure::Runtime(e),
    }
}

/// How `corral run` ends, from how its engine did.
fn ended(outcome: Result<Outcome, RunError>, name: &str) -> Result<(), Failure> {
    match outcome {
        Ok(Outcome::Stopped | Outcome::HandedOver) => Ok(()),
        Ok(Outcome::Failed) => Err(Failure::Runtime(anyhow::anyhow!(
            "every worker of `{name}` gave up; nothing is running (see the output above for why)"
        ))),
        Err(e @ (RunError::Command { .. } | RunError::NoCommand)) => Err(Failure::Usage(e.into())),
        Err(e) => Err(Failure::Runtime(e.into())),
    }
}

fn say_starting(spec: &AppSpec, listeners: &[Listener], say: &impl Fn(&str)) {
    for l in listeners {
        say(&format!(
            "{}: listening on {} (fd name {})",
            spec.name, l.local, l.name
        ));
    }
    let shown: Vec<_> = spec
        .command
        .iter()
        .map(|a| crate::secrets::mask_urls(&a.to_string_lossy()).into_owned())
        .collect();
    say(&format!(
        "{}: starting {} workers: {}",
        spec.name,
        spec.instances,
        shown.join(" ")
    ));
}

/// What the binary that took over says first.
fn adopted_line(app: &str, adopt: &Adopt) -> String {
    let version = env!("CARGO_PKG_VERSION");
    match crate::upgrade::failed_attempt() {
        Some(why) => format!("{app}: {why}; still corral {version}, workers kept"),
        None => format!(
            "{app}: upgraded in place from corral {} to {version} (pid {}); workers kept",
            adopt.from.as_deref().unwrap_or("?"),
            std::process::id()
        ),
    }
}

/// corral's own lines: `[corral] text`, or with `--report-format json` (or
/// `--log-format json`) one JSON event each (the report's kind and fields beside the text).
#[derive(Clone)]
struct Speaker {
    notes: Notes,
    lines: crate::line_format::LineFormat,
    json: bool,
    app: String,
}

impl Speaker {
    fn say(&self, report: Option<&Report>, text: &str) {
        let bytes = if self.json {
            self.lines.event(&self.app, report, text)
        } else {
            render::note(text)
        };
        self.notes.line(bytes);
    }
}

async fn print_reports(
    mut rx: mpsc::UnboundedReceiver<Report>,
    speaker: Speaker,
    metrics: Option<corral_metrics::Metrics>,
    mut service: service::Service,
) {
    let mut chatter = Chatter::default();
    while let Some(report) = rx.recv().await {
        service.apply(&report);
        if let Some(metrics) = &metrics {
            metrics.report(&speaker.app, &report);
        }
        for said in chatter.lines(&speaker.app, &report, std::time::Instant::now()) {
            match said {
                Said::Report(text) => speaker.say(Some(&report), &text),
                Said::Note(text) => speaker.say(None, &text),
            }
        }
    }
}
