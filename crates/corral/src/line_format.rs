//! How a line of worker output is written, in log files and on the terminal: as it is,
//! time-stamped (RFC 3339 UTC, or PM2's `log_date_format` in local time), or as one JSON
//! object: corral's (time, app, slot, pid, stream, line) or PM2's (`log_type: json`, with
//! PM2's field names so log shippers set up for PM2 read it unchanged).

use corral_core::group::Report;
use corral_core::output::{LogLine, Stream};

/// Which JSON object a line becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Json {
    /// time, app, slot, pid, stream, line.
    Corral,
    /// PM2's: message, timestamp, type, process_id, app_name.
    Pm2,
}

/// The options that shape each line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineFormat {
    /// Start each line with the time.
    pub time: bool,
    /// PM2's `log_date_format` (dayjs tokens: `YYYY-MM-DD HH:mm:ss.SSS Z`), as strftime.
    pub date_format: Option<String>,
    /// One JSON object per line.
    pub json: Option<Json>,
}

impl LineFormat {
    pub fn new(time: bool, date_format: Option<&str>, json: Option<Json>) -> LineFormat {
        LineFormat {
            time: time || date_format.is_some(),
            date_format: date_format.map(strftime_of),
            json,
        }
    }

    /// The time as this format writes it.
    pub fn stamp(&self) -> String {
        match &self.date_format {
            Some(format) => chrono::Local::now().format(format).to_string(),
            None => humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }
    }

    /// Appends one line of `app`'s worker, without a newline.
    pub fn write(&self, out: &mut Vec<u8>, app: &str, line: &LogLine) {
        let stream = match line.stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        let text = String::from_utf8_lossy(&line.text);
        let value = match self.json {
            None => {
                if self.time {
                    out.extend_from_slice(self.stamp().as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(&line.text);
                return;
            }
            Some(Json::Corral) => serde_json::json!({
                "time": self.stamp(),
                "app": app,
                "slot": line.slot,
                "pid": line.pid,
                "stream": stream,
                "line": text,
            }),
            Some(Json::Pm2) => serde_json::json!({
                "message": text,
                "timestamp": self.stamp(),
                "type": stream,
                "process_id": line.slot,
                "app_name": app,
            }),
        };
        serde_json::to_writer(&mut *out, &value).expect("a JSON value writes to memory");
    }

    /// One of corral's own events as a JSON object: time, app, the report's kind and
    /// fields, and its `message` as the terminal would show it.
    pub fn event(&self, app: &str, report: Option<&Report>, message: &str) -> Vec<u8> {
        let mut value = report
            .and_then(|r| serde_json::to_value(r).ok())
            .unwrap_or_else(|| serde_json::json!({ "kind": "note" }));
        if let Some(object) = value.as_object_mut() {
            object.insert("time".into(), self.stamp().into());
            object.insert("app".into(), app.into());
            object.insert("message".into(), message.into());
        }
        let mut out = serde_json::to_vec(&value).expect("a JSON value writes to memory");
        out.push(b'\n');
        out
    }
}

/// A dayjs/moment format (what PM2 files hold) as a strftime format for chrono.
pub fn strftime_of(dayjs: &str) -> String {
    const TOKENS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("SSS", "%3f"),
        ("YY", "%y"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("HH", "%H"),
        ("hh", "%I"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("ZZ", "%z"),
        ("Z", "%:z"),
        ("M", "%-m"),
        ("D", "%-d"),
        ("H", "%-H"),
        ("h", "%-I"),
        ("m", "%-M"),
        ("s", "%-S"),
        ("A", "%p"),
        ("a", "%P"),
    ];
    let mut out = String::new();
    let mut rest = dayjs;
    'outer: while let Some(c) = rest.chars().next() {
        if c == '[' {
            // dayjs escapes literal text in brackets.
            if let Some(end) = rest.find(']') {
                out.push_str(&rest[1..end].replace('%', "%%"));
                rest = &rest[end + 1..];
                continue;
            }
        }
        for (token, spec) in TOKENS {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(spec);
                rest = after;
                continue 'outer;
            }
        }
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm2_date_formats_become_strftime() {
        assert_eq!(strftime_of("YYYY-MM-DD HH:mm Z"), "%Y-%m-%d %H:%M %:z");
        assert_eq!(
            strftime_of("YYYY-MM-DD HH:mm:ss.SSS"),
            "%Y-%m-%d %H:%M:%S.%3f"
        );
        assert_eq!(strftime_of("[at] HH:mm 100%"), "at %H:%M 100%%");
    }

    fn line(slot: usize, stream: Stream, text: &[u8]) -> LogLine {
        LogLine {
            slot,
            pid: 42,
            stream,
            text: text.to_vec(),
        }
    }

    #[test]
    fn json_lines_carry_corrals_fields() {
        let format = LineFormat::new(false, None, Some(Json::Corral));
        let mut out = Vec::new();
        format.write(&mut out, "api", &line(1, Stream::Stdout, b"hi"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["app"], "api");
        assert_eq!((v["slot"].as_u64(), v["pid"].as_u64()), (Some(1), Some(42)));
        assert_eq!(
            (v["stream"].as_str(), v["line"].as_str()),
            (Some("out"), Some("hi"))
        );
        let event = format.event("api", Some(&Report::Scaled { from: 1, to: 2 }), "scaled");
        let v: serde_json::Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["to"].as_u64()),
            (Some("scaled"), Some(2))
        );
        assert_eq!(v["message"], "scaled");
    }

    #[test]
    fn json_lines_carry_pm2s_fields() {
        let format = LineFormat::new(false, None, Some(Json::Pm2));
        let mut out = Vec::new();
        format.write(
            &mut out,
            "api",
            &line(1, Stream::Stderr, b"boom \"quoted\""),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "boom \"quoted\"");
        assert_eq!(v["type"], "err");
        assert_eq!(v["process_id"], 1);
        assert_eq!(v["app_name"], "api");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_date_format_turns_stamps_on() {
        let format = LineFormat::new(false, Some("YYYY"), None);
        let mut out = Vec::new();
        format.write(&mut out, "a", &line(0, Stream::Stdout, b"x"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.len() == 6 && text.ends_with(" x"), "{text}");
    }
}
