//! Upgrading corral in place (`corral update`, `corral run`'s SIGURG): check the new
//! binary, then `exec` it with everything handed over (same pid), or, when that fails,
//! `exec` this very binary again with the same hand-over and the reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use corral_core::handover;

/// How long the new binary may take to answer its check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary this process was started from, as the path names it now: after a package
/// upgrade, the new binary at the same path (Linux marks the old one ` (deleted)`).
pub fn installed_exe() -> PathBuf {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// Runs `exe __handover check` and makes sure it takes this corral's hand-over: a
/// binary that can't start, or can't take over, is found out before anything is stopped.
pub fn check(exe: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    // A group of its own, killed whole on a timeout: a wrapper script's children would
    // otherwise outlive the check, holding its output pipes.
    let mut child = std::process::Command::new(exe)
        .args(["__handover", "check"])
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    // Output is read to its end on threads, and judged by itself: `corral run` reaps every
    // child of its process (it may be PID 1), this one's exit status included.
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let Ok(said) = stdout.recv_timeout(CHECK_TIMEOUT) else {
        corral_core::os::signal_group(child.id() as i32, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        anyhow::bail!(
            "{} did not answer its check within {}s",
            exe.display(),
            CHECK_TIMEOUT.as_secs()
        );
    };
    let err = stderr.recv_timeout(CHECK_TIMEOUT).unwrap_or_default();
    // None: reaped by the supervisor already.
    let status = child.wait().ok();
    let expected = handover::check_line();
    if status.is_none_or(|s| s.success()) && said.lines().any(|l| l.trim() == expected) {
        return Ok(());
    }
    let detail = err.lines().find(|l| !l.trim().is_empty());
    anyhow::bail!(
        "{} can't take over from this corral: `{} __handover check` {}{}{}",
        exe.display(),
        exe.display(),
        status.map_or_else(|| "ended".to_owned(), |s| s.to_string()),
        if said.trim().is_empty() {
            " and said nothing".to_owned()
        } else {
            format!(" and said `{}`", said.trim())
        },
        detail.map(|d| format!(": {d}")).unwrap_or_default()
    )
}

/// Becomes `exe` with `doc`; when that fails, becomes this binary again with `doc` and
/// the reason, so the apps go on under the old corral. Returns only when both failed.
pub fn exec<T>(doc: T, exe: &Path) -> anyhow::Error
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let (doc, error) = handover::exec(doc, exe, None);
    let why = format!("{:#}", anyhow::Error::from(error));
    let (_doc, again) = handover::exec(doc, Path::new("/proc/self/exe"), Some(&why));
    anyhow::Error::from(again).context(format!(
        "{why}; and corral could not go back to its own binary either"
    ))
}

/// The answer to `corral __handover check`.
pub fn answer_check() {
    outln!("{}", handover::check_line());
}

/// Why an earlier attempt went back to this binary, as a sentence.
pub fn failed_attempt() -> Option<String> {
    handover::failed_attempt().map(|why| format!("the upgrade did not happen: {why}"))
}

/// The document a previous binary of this process handed over, if any (`what` names the
/// one that wrote it, for the error). One this binary can't take sends the process back
/// to the binary that wrote it; this returns only when that failed too.
pub fn take_over<T: serde::de::DeserializeOwned>(what: &str) -> anyhow::Result<Option<T>> {
    match handover::take::<T>() {
        None => Ok(None),
        Some(Ok(doc)) => {
            handover::finish_taking();
            Ok(Some(doc))
        }
        Some(Err(e)) => {
            let why = format!("{:#}", anyhow::Error::from(e));
            let back = handover::fall_back(&format!(
                "{} could not take over: {why}",
                installed_exe().display()
            ));
            anyhow::bail!(
                "cannot take over from the previous {what}: {why}; and going back to it failed: {back}"
            )
        }
    }
}
