//! Parsing of sd_notify datagrams (`READY=1\nSTATUS=...`), as sent to `NOTIFY_SOCKET`.

/// One assignment from an sd_notify datagram that corral acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: the worker serves requests.
    Ready,
    /// `RELOADING=1`: the worker reloads its configuration.
    Reloading,
    /// `STOPPING=1`: the worker begins to shut down.
    Stopping,
    /// `STATUS=...`: free-form status text.
    Status(String),
    /// `WATCHDOG=1`: the worker is alive.
    Watchdog,
    /// `WATCHDOG=trigger`: the worker asks to be treated as hung.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=...`: the worker changes its watchdog interval.
    WatchdogUsec(u64),
    /// `ERRNO=...`: the worker reports a failure as an errno value.
    Errno(i32),
}

/// Parses a datagram. Unknown or malformed assignments are skipped: a worker must never be
/// able to break its supervisor with what it writes here.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    let text = String::from_utf8_lossy(datagram);
    text.split('\n').filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Notice> {
    let (key, value) = line.split_once('=')?;
    let notice = match key {
        "READY" if value == "1" => Notice::Ready,
        "RELOADING" if value == "1" => Notice::Reloading,
        "STOPPING" if value == "1" => Notice::Stopping,
        "STATUS" => Notice::Status(value.to_owned()),
        "WATCHDOG" if value == "1" => Notice::Watchdog,
        "WATCHDOG" if value == "trigger" => Notice::WatchdogTrigger,
        "WATCHDOG_USEC" => Notice::WatchdogUsec(value.parse().ok()?),
        "ERRNO" => Notice::Errno(value.parse().ok()?),
        _ => return None,
    };
    Some(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_assignments() {
        let got = parse(b"READY=1\nSTATUS=warming up\nWATCHDOG=1\nMAINPID=7\n");
        assert_eq!(
            got,
            vec![
                Notice::Ready,
                Notice::Status("warming up".into()),
                Notice::Watchdog
            ]
        );
    }

    #[test]
    fn skips_garbage_without_failing() {
        let got = parse(b"\xff\xfe\nREADY=0\nWATCHDOG_USEC=abc\nnoequals\nERRNO=5");
        assert_eq!(got, vec![Notice::Errno(5)]);
    }

    #[test]
    fn status_keeps_equals_signs() {
        assert_eq!(parse(b"STATUS=a=b"), vec![Notice::Status("a=b".into())]);
    }
}
