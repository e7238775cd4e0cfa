//! Handing a running supervisor to a new binary of itself (`corral update`, `corral run`'s
//! upgrade signal): the fds that survive `exec`, and instants written so that the new
//! process reads them back as the same moments.
//!
//! The state is serialized to JSON with each fd as its number. [`collect_fds`] notes every
//! fd a value serializes, so the caller can clear close-on-exec on exactly those; [`Fd`]'s
//! deserialization takes ownership of the number again (and sets close-on-exec back).

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of the handover document. A binary adopts only a document it knows.
pub const VERSION: u32 = 2;

/// An fd that crosses `exec`: serialized as its number.
#[derive(Debug)]
pub struct Fd(pub OwnedFd);

thread_local! {
    static COLLECTED: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// While set, deserializing an [`Fd`] duplicates the number instead of taking it.
    static TRIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// While set, the fds of a document that travelled through a holder: the writer's
    /// number of each, and the fd it arrived as here.
    static REMAP: RefCell<Option<std::collections::HashMap<RawFd, OwnedFd>>> = const { RefCell::new(None) };
}

/// Reads a document written in another process, whose fds were `numbers` there and
/// arrived here as `fds`, in the same order. Fds the document does not name are closed.
pub fn from_json_with_fds<T: serde::de::DeserializeOwned>(
    json: serde_json::Value,
    numbers: &[RawFd],
    fds: Vec<OwnedFd>,
) -> serde_json::Result<T> {
    let map = numbers.iter().copied().zip(fds).collect();
    REMAP.with(|r| *r.borrow_mut() = Some(map));
    let doc = serde_json::from_value(json);
    REMAP.with(|r| r.borrow_mut().take());
    doc
}

/// Serializes `value` to JSON and returns every fd it contains.
pub fn collect_fds<T: Serialize>(value: &T) -> serde_json::Result<(Vec<u8>, Vec<RawFd>)> {
    COLLECTED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let bytes = serde_json::to_vec(value);
    let fds = COLLECTED
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    Ok((bytes?, fds))
}

impl Serialize for Fd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = self.0.as_raw_fd();
        COLLECTED.with(|c| {
            if let Some(fds) = c.borrow_mut().as_mut() {
                fds.push(raw);
            }
        });
        s.serialize_i32(raw)
    }
}

impl<'de> Deserialize<'de> for Fd {
    /// Only sound in the process the document was handed to, once: the number is an fd
    /// that process inherited and nothing else owns.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fd, D::Error> {
        let raw = i32::deserialize(d)?;
        let remapped = REMAP.with(|r| r.borrow_mut().as_mut().map(|map| map.remove(&raw)));
        match remapped {
            Some(Some(fd)) => return Ok(Fd(fd)),
            Some(None) => return Err(serde::de::Error::custom(format!("fd {raw} did not arrive"))),
            None => {}
        }
        // SAFETY: see above; fstat first, so a number that is not open is an error, not UB.
        if nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(raw) }).is_err() {
            return Err(serde::de::Error::custom(format!("fd {raw} is not open")));
        }
        if TRIAL.with(|t| t.get()) {
            // SAFETY: checked open above; the duplicate is ours alone.
            let dup = unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned();
            return dup.map(Fd).map_err(serde::de::Error::custom);
        }
        // SAFETY: an inherited fd nothing else in this process owns (see above).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = set_cloexec(fd.as_fd(), true);
        Ok(Fd(fd))
    }
}

impl Fd {
    /// A duplicate of `fd` (the same open file).
    pub fn dup(fd: BorrowedFd<'_>) -> std::io::Result<Fd> {
        fd.try_clone_to_owned().map(Fd)
    }
}

/// Sets or clears close-on-exec.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// CLOCK_MONOTONIC, which `Instant` reads on Linux and which `exec` keeps.
fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes only into `ts`; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `at` as nanoseconds of CLOCK_MONOTONIC: the same number in any process of the machine.
pub fn to_mono(at: Instant) -> i128 {
    let (now, mono) = (Instant::now(), monotonic());
    let offset = if at >= now {
        at.duration_since(now).as_nanos() as i128
    } else {
        -(now.duration_since(at).as_nanos() as i128)
    };
    mono.as_nanos() as i128 + offset
}

/// The instant of a [`to_mono`] number.
pub fn from_mono(ns: i128) -> Instant {
    let (now, mono) = (Instant::now(), monotonic().as_nanos() as i128);
    let offset = ns - mono;
    let magnitude = Duration::from_nanos(offset.unsigned_abs().min(u64::MAX as u128) as u64);
    if offset >= 0 {
        now + magnitude
    } else {
        now.checked_sub(magnitude).unwrap_or(now)
    }
}

/// `#[serde(with = "crate::handover::mono")]` for `Instant` fields.
pub mod mono {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        to_mono(*at).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        i128::deserialize(d).map(from_mono)
    }
}

/// `#[serde(with = "crate::handover::mono_opt")]` for `Option<Instant>` fields.
pub mod mono_opt {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        at.map(to_mono).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Option::<i128>::deserialize(d).map(|ns| ns.map(from_mono))
    }
}

/// Why a running app can't be handed over right now; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refused {
    #[error("a reload or scale-down is running; try again when it is done")]
    RollingOut,
    #[error("the app is stopping")]
    Stopping,
    #[error("a worker's channel or output could not be handed over: {0}")]
    Io(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_survive_the_round_trip_through_monotonic_nanoseconds() {
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_secs(5),
            now - Duration::from_millis(1500),
        ] {
            let back = from_mono(to_mono(at));
            let error = if back > at { back - at } else { at - back };
            assert!(error < Duration::from_millis(5), "{error:?}");
        }
    }

    #[test]
    fn fds_are_collected_as_they_are_serialized_and_taken_back_on_deserialization() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = Fd(OwnedFd::from(a));
        let raw = fd.0.as_raw_fd();
        let original = vec![fd];
        let (json, fds) = collect_fds(&original).unwrap();
        assert_eq!(fds, vec![raw]);
        let back: Vec<Fd> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back[0].0.as_raw_fd(), raw);
        // Both own the same number in this one process: only one may close it.
        std::mem::forget(back);
    }
}

/// The variable that names the fd of the hand-over document in the new process.
pub const DOCUMENT_ENV: &str = "CORRAL_HANDOVER_FD";
/// The fd of the binary that handed over, for the new one to go back to when it can't
/// take over.
pub const FALLBACK_ENV: &str = "CORRAL_HANDOVER_FALLBACK_FD";
/// Set when the new binary went back to the old one: why it could not take over.
pub const FAILED_ENV: &str = "CORRAL_HANDOVER_FAILED";
/// What `corral __handover check` prints: the document versions a binary takes.
pub fn check_line() -> String {
    format!("corral-handover {VERSION}")
}

/// Why `exec` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot write the hand-over document")]
    Document(#[source] std::io::Error),
    #[error("cannot run {exe}")]
    Exec {
        exe: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Replaces this process with `exe` (same pid, same arguments, same environment plus
/// [`DOCUMENT_ENV`]), handing it `doc` and every fd `doc` holds. Returns only when that
/// failed, with `doc` taken back whole: nothing has changed for the caller.
/// With `failed`, the new process learns that this is a retry after an upgrade that did
/// not happen, and why ([`failed_attempt`]).
pub fn exec<T: Serialize + serde::de::DeserializeOwned>(
    doc: T,
    exe: &std::path::Path,
    failed: Option<&str>,
) -> (T, ExecError) {
    let (json, fds) = match collect_fds(&doc) {
        Ok(done) => done,
        Err(e) => return (doc, ExecError::Document(e.into())),
    };
    let memfd = match document(&json) {
        Ok(fd) => fd,
        Err(e) => return (doc, ExecError::Document(e)),
    };
    // The numbers in `json` own the fds from here: taken back by deserializing on failure.
    std::mem::forget(doc);
    for &fd in &fds {
        // SAFETY: `fd` is open: `doc` held it, and nothing closed it since.
        let _ = set_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, false);
    }
    let fallback = std::fs::File::open("/proc/self/exe")
        .ok()
        .map(OwnedFd::from);
    if let Some(fd) = &fallback {
        let _ = set_cloexec(fd.as_fd(), false);
    }
    let mut vars = vec![(DOCUMENT_ENV.to_owned(), memfd.as_raw_fd().to_string())];
    if let Some(fd) = &fallback {
        vars.push((FALLBACK_ENV.to_owned(), fd.as_raw_fd().to_string()));
    }
    if let Some(why) = failed {
        vars.push((FAILED_ENV.to_owned(), why.to_owned()));
    }
    let error = execve(exe, &vars);
    drop(memfd);
    drop(fallback);
    let doc = serde_json::from_slice(&json).expect("a document this process just wrote");
    (
        doc,
        ExecError::Exec {
            exe: exe.to_owned(),
            source: error,
        },
    )
}

/// A memfd holding `json`, read from its start, inherited across exec.
fn document(json: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    // SAFETY: a NUL-terminated name; no flags (the fd is meant to survive exec).
    let raw = unsafe { libc::memfd_create(c"corral-handover".as_ptr(), 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.write_all(json)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// execve with this process's arguments and environment, `vars` set; returns its error.
fn execve(exe: &std::path::Path, vars: &[(String, String)]) -> std::io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| CString::new(b).ok();
    let Some(path) = cstr(exe.as_os_str().as_bytes()) else {
        return std::io::ErrorKind::InvalidInput.into();
    };
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| cstr(a.as_bytes()))
        .collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !vars.iter().any(|(n, _)| k == n.as_str()) && k != FAILED_ENV)
        .filter_map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect();
    envp.extend(
        vars.iter()
            .filter_map(|(k, v)| cstr(format!("{k}={v}").as_bytes())),
    );
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    std::io::Error::last_os_error()
}

/// Why a hand-over document could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("cannot read the hand-over document (fd {fd})")]
    Read {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("the hand-over document is version {found}; this corral takes version {VERSION}")]
    Version { found: u64 },
    #[error("the hand-over document does not fit this corral")]
    Parse(#[source] serde_json::Error),
}

/// The document a previous binary of this process handed over, if any: read once (the
/// variables are removed so children never see them).
pub fn take<T: serde::de::DeserializeOwned>() -> Option<Result<T, TakeError>> {
    let raw: RawFd = std::env::var(DOCUMENT_ENV).ok()?.parse().ok()?;
    Some(read_document(raw))
}

fn read_document<T: serde::de::DeserializeOwned>(raw: RawFd) -> Result<T, TakeError> {
    use std::io::{Read, Seek};
    let read_error = |source| TakeError::Read { fd: raw, source };
    // SAFETY: an fd the previous binary left open for us; borrowed, so it stays open for
    // a fallback that reads it again.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let mut file = std::fs::File::from(borrowed.try_clone_to_owned().map_err(read_error)?);
    let mut json = Vec::new();
    file.rewind().map_err(read_error)?;
    file.read_to_end(&mut json).map_err(read_error)?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(TakeError::Parse)?;
    let found = value["version"].as_u64().unwrap_or(0);
    if found != u64::from(VERSION) {
        return Err(TakeError::Version { found });
    }
    // A trial on duplicates first: a document that fails halfway must leave every fd
    // open for the binary this process goes back to.
    TRIAL.with(|t| t.set(true));
    let trial = serde_json::from_value::<T>(value.clone());
    TRIAL.with(|t| t.set(false));
    drop(trial.map_err(TakeError::Parse)?);
    serde_json::from_value(value).map_err(TakeError::Parse)
}

/// After the document was taken: closes it and the fallback binary, and clears the
/// variables, so neither reaches a worker.
pub fn finish_taking() {
    let _ = FAILED.set(std::env::var(FAILED_ENV).ok());
    for var in [DOCUMENT_ENV, FALLBACK_ENV, FAILED_ENV] {
        if let Some(raw) = std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
        {
            // SAFETY: fds the previous binary left for us, and nothing here took them.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        // SAFETY (edition 2021: safe fn): called while the process has one thread.
        std::env::remove_var(var);
    }
}

/// [`FAILED_ENV`] as it was when the document was taken (the variable is gone then).
static FAILED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Why the previous binary gave up taking over and came back here, if it did.
pub fn failed_attempt() -> Option<String> {
    match FAILED.get() {
        Some(failed) => failed.clone(),
        None => std::env::var(FAILED_ENV).ok(),
    }
}

/// Goes back to the binary that handed over (the document still unread by anyone),
/// telling it `why`. Returns only if that is impossible.
pub fn fall_back(why: &str) -> std::io::Error {
    if failed_attempt().is_some() {
        return std::io::ErrorKind::AlreadyExists.into(); // this is the fallback already
    }
    let Some(raw) = std::env::var(FALLBACK_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return std::io::ErrorKind::NotFound.into();
    };
    let document = std::env::var(DOCUMENT_ENV).unwrap_or_default();
    let vars = [
        (DOCUMENT_ENV.to_owned(), document),
        (FAILED_ENV.to_owned(), why.to_owned()),
    ];
    execve(std::path::Path::new(&format!("/proc/self/fd/{raw}")), &vars)
}
