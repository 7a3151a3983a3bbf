//! The access log: one line per request, written by a thread of its own.
//!
//! A worker hands each finished request's facts ([`Line`], mostly
//! reference-counted values, no formatting) to a bounded queue and goes on;
//! the writer thread formats them (JSON or logfmt text), buffers the
//! output and flushes it whenever the queue runs dry. When the writer falls
//! behind (a flood, a slow disk) lines are dropped and counted
//! (`sluicegate_access_log_dropped_total`) rather than slowing requests or
//! growing memory. Sampling keeps a share of successful requests; errors
//! (status 400 and above) are always logged.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};

use crate::metrics::ACCESS_LOG_DROPPED;

/// Lines queued for the writer at most.
const QUEUE: usize = 16 * 1024;

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// logfmt: `key=value` pairs, values quoted when needed.
    Text,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "text" | "logfmt" => Ok(Format::Text),
            _ => Err(format!("expected json or text, got {s:?}")),
        }
    }
}

/// A field of the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Time,
    Client,
    Method,
    Host,
    Path,
    Protocol,
    Status,
    RequestBytes,
    ResponseBytes,
    Route,
    Upstream,
    Attempts,
    Duration,
    UpstreamDuration,
    Consumer,
    RequestId,
    TraceId,
    AnsweredBy,
    UserAgent,
}

impl Field {
    /// Every field, in the order lines show them.
    pub const ALL: [Field; 19] = [
        Field::Time,
        Field::Client,
        Field::Method,
        Field::Host,
        Field::Path,
        Field::Protocol,
        Field::Status,
        Field::RequestBytes,
        Field::ResponseBytes,
        Field::Route,
        Field::Upstream,
        Field::Attempts,
        Field::Duration,
        Field::UpstreamDuration,
        Field::Consumer,
        Field::RequestId,
        Field::TraceId,
        Field::AnsweredBy,
        Field::UserAgent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::Client => "client",
            Field::Method => "method",
            Field::Host => "host",
            Field::Path => "path",
            Field::Protocol => "protocol",
            Field::Status => "status",
            Field::RequestBytes => "request_bytes",
            Field::ResponseBytes => "response_bytes",
            Field::Route => "route",
            Field::Upstream => "upstream",
            Field::Attempts => "attempts",
            Field::Duration => "duration_ms",
            Field::UpstreamDuration => "upstream_ms",
            Field::Consumer => "consumer",
            Field::RequestId => "request_id",
            Field::TraceId => "trace_id",
            Field::AnsweredBy => "answered_by",
            Field::UserAgent => "user_agent",
        }
    }
}

impl FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Field::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                format!("unknown field {s:?}; fields: {}", names.join(", "))
            })
    }
}

/// Access log settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub format: Format,
    /// Fields written, in this order; all when empty.
    pub fields: Vec<Field>,
    /// The share of requests under 400 that are logged, 0 to 1.
    pub sample: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            format: Format::Json,
            fields: Vec::new(),
            sample: 1.0,
        }
    }
}

/// What the log says about one request.
#[derive(Debug, Default)]
pub struct Line {
    pub time: Option<SystemTime>,
    pub client: Option<IpAddr>,
    pub method: Option<Method>,
    pub host: Option<HeaderValue>,
    pub path: Option<Arc<str>>,
    pub protocol: &'static str,
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub route: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub attempts: u32,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub consumer: Option<Arc<str>>,
    pub request_id: Option<HeaderValue>,
    pub trace_id: Option<[u8; 16]>,
    pub answered_by: Option<&'static str>,
    pub user_agent: Option<HeaderValue>,
}

/// The running access log; stops its writer when the last handle goes.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Line>,
    /// Requests under 400 are logged when a random 32-bit value is below.
    keep_below: u64,
}

impl AccessLog {
    /// Starts the writer thread, writing to `out`.
    pub fn start(settings: Settings, out: Box<dyn Write + Send>) -> io::Result<AccessLog> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let keep_below = (settings.sample.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64 + 1;
        std::thread::Builder::new()
            .name("sluicegate-access-log".into())
            .spawn(move || write_lines(rx, settings, out))?;
        Ok(AccessLog { tx, keep_below })
    }

    /// Logs `line` if sampling keeps it; never waits.
    pub fn log(&self, line: Line) {
        if line.status < 400
            && self.keep_below <= u64::from(u32::MAX)
            && sample() >= self.keep_below
        {
            return;
        }
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::counter!(ACCESS_LOG_DROPPED).increment(1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// A random 32-bit value, from a per-thread xorshift generator.
fn sample() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            // Differs per thread: the address of this thread's own value.
            let here = 0u8;
            (u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ std::ptr::from_ref(&here) as u64)
                | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x >> 32
    })
}

fn write_lines(rx: Receiver<Line>, settings: Settings, out: Box<dyn Write + Send>) {
    let fields = if settings.fields.is_empty() {
        Field::ALL.to_vec()
    } else {
        settings.fields
    };
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut text = String::with_capacity(512);
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            text.clear();
            match settings.format {
                Format::Json => json(&mut text, &line, &fields),
                Format::Text => logfmt(&mut text, &line, &fields),
            }
            text.push('\n');
            if out.write_all(text.as_bytes()).is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        // The queue ran dry: what was written goes out now.
        if out.flush().is_err() {
            return;
        }
    }
}

/// A field's value, or `None` when the line has none.
enum Value<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    Number(u64),
    Millis(Duration),
    Owned(String),
}

fn value(line: &Line, f: Field) -> Option<Value<'_>> {
    Some(match f {
        Field::Time => Value::Owned(httpdate_rfc3339(line.time?)),
        Field::Client => Value::Owned(line.client?.to_string()),
        Field::Method => Value::Text(line.method.as_ref()?.as_str()),
        Field::Host => Value::Bytes(line.host.as_ref()?.as_bytes()),
        Field::Path => Value::Text(line.path.as_deref()?),
        Field::Protocol => Value::Text(line.protocol),
        Field::Status => Value::Number(u64::from(line.status)),
        Field::RequestBytes => Value::Number(line.request_bytes),
        Field::ResponseBytes => Value::Number(line.response_bytes),
        Field::Route => Value::Text(line.route.as_deref()?),
        Field::Upstream => Value::Owned(line.upstream?.to_string()),
        Field::Attempts => Value::Number(u64::from(line.attempts)),
        Field::Duration => Value::Millis(line.duration),
        Field::UpstreamDuration => Value::Millis(line.upstream_duration?),
        Field::Consumer => Value::Text(line.consumer.as_deref()?),
        Field::RequestId => Value::Bytes(line.request_id.as_ref()?.as_bytes()),
        Field::TraceId => Value::Owned(hex(&line.trace_id?)),
        Field::AnsweredBy => Value::Text(line.answered_by?),
        Field::UserAgent => Value::Bytes(line.user_agent.as_ref()?.as_bytes()),
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// RFC 3339 in UTC with milliseconds.
fn httpdate_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Year, month, day of a day count since 1970-01-01 (the proleptic
/// Gregorian calendar; Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn json(out: &mut String, line: &Line, fields: &[Field]) {
    out.push('{');
    let mut first = true;
    for &f in fields {
        let Some(v) = value(line, f) else { continue };
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(f.name());
        out.push_str("\":");
        match v {
            Value::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Millis(d) => {
                let _ = write!(out, "{:.3}", d.as_secs_f64() * 1e3);
            }
            Value::Text(t) => json_string(out, t.as_bytes()),
            Value::Bytes(b) => json_string(out, b),
            Value::Owned(s) => json_string(out, s.as_bytes()),
        }
    }
    out.push('}');
}

/// A JSON string; bytes that are not UTF-8 (header values may carry
/// obs-text) are written as U+FFFD.
fn json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn logfmt(out: &mut String, line: &Line, fields: &[Field]) {
    let mut first = true;
    for &f in fields {
        let Some(v) = value(line, f) else { continue };
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(f.name());
        out.push('=');
        match v {
            Value::Number(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Millis(d) => {
                let _ = write!(out, "{:.3}", d.as_secs_f64() * 1e3);
            }
            Value::Text(t) => logfmt_value(out, t.as_bytes()),
            Value::Bytes(b) => logfmt_value(out, b),
            Value::Owned(s) => logfmt_value(out, s.as_bytes()),
        }
    }
}

/// A value, quoted (as a JSON string) when it has spaces, quotes, `=` or
/// anything outside printable ASCII.
fn logfmt_value(out: &mut String, bytes: &[u8]) {
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if plain {
        // Printable ASCII only: valid UTF-8.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
    } else {
        json_string(out, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_733_456_789_123)),
            client: Some("10.0.0.9".parse().unwrap()),
            method: Some(Method::POST),
            host: Some(HeaderValue::from_static("shop.test")),
            path: Some("/a b/\"q\"".into()),
            protocol: "HTTP/1.1",
            status: 201,
            request_bytes: 12,
            response_bytes: 3,
            route: Some("default/shop/api".into()),
            upstream: Some("10.1.0.4:8080".parse().unwrap()),
            attempts: 2,
            duration: Duration::from_micros(1500),
            upstream_duration: Some(Duration::from_micros(1200)),
            consumer: None,
            request_id: Some(HeaderValue::from_static("r-1")),
            trace_id: Some([0xab; 16]),
            answered_by: None,
            user_agent: Some(HeaderValue::from_bytes(b"curl/8 \xff").unwrap()),
        }
    }

    #[test]
    fn json_lines_have_the_fields_that_have_values() {
        let mut out = String::new();
        json(&mut out, &line(), &Field::ALL);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["time"], "2024-12-06T03:46:29.123Z");
        assert_eq!(v["client"], "10.0.0.9");
        assert_eq!(v["path"], "/a b/\"q\"");
        assert_eq!(v["status"], 201);
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream"], "10.1.0.4:8080");
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["user_agent"], "curl/8 \u{fffd}");
        assert!(v.get("consumer").is_none(), "{out}");
    }

    #[test]
    fn text_lines_quote_what_needs_it_and_keep_field_order() {
        let mut out = String::new();
        logfmt(
            &mut out,
            &line(),
            &[Field::Status, Field::Path, Field::Host, Field::Duration],
        );
        assert_eq!(
            out,
            "status=201 path=\"/a b/\\\"q\\\"\" host=shop.test duration_ms=1.500"
        );
    }

    #[test]
    fn fields_parse_by_name() {
        assert_eq!("route".parse(), Ok(Field::Route));
        assert!("nope".parse::<Field>().unwrap_err().contains("request_id"));
        assert_eq!("TEXT".parse(), Ok(Format::Text));
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_428), (2025, 12, 6));
    }
}
