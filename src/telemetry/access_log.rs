//! The access log: one line per request, written by a thread of its own.
//!
//! A worker hands each finished request's facts ([`Line`], mostly
//! reference-counted values, no formatting) to a bounded queue and goes on;
//! the writer thread, woken by a timer or by every [`WAKE_EVERY`]th line
//! rather than by each line, formats them (JSON or logfmt text,
//! [`super::access_format`]) in batches and writes each batch at once. When the writer falls behind (a flood, a slow disk)
//! lines are dropped and counted (`sluicegate_access_log_dropped_total`)
//! rather than slowing requests or growing memory. Sampling keeps a share of successful requests; errors
//! (status 400 and above) are always logged.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};

use super::access_format::LineFormatter;
use crate::metrics::ACCESS_LOG_DROPPED;

/// Lines queued for the writer at most. The queue is a ring of lines
/// (about 400 bytes each) that the worker writes into and the writer reads
/// from: small enough to stay in a core's cache. A ring of 16k lines
/// (7 MB) made every send a cache miss, which cost a worker more than the
/// rest of the access log together.
const QUEUE: usize = 2048;

/// Every this many lines sent, the sender wakes the writer, so the queue
/// is drained long before it is full whatever the request rate. One
/// wake-up (a futex call) per batch rather than per line: a wake-up per
/// request, often on the worker's own core, cost more than formatting the
/// line.
const WAKE_EVERY: usize = QUEUE / 8;

/// How long the writer sleeps once the queue is empty, when no sender
/// wakes it first: the delay of a line at low rates.
const TICK: Duration = Duration::from_millis(20);

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
    AiInstance,
    PromptTokens,
    CompletionTokens,
    TimeToFirstToken,
}

impl Field {
    /// Every field, in the order lines show them.
    pub const ALL: [Field; 23] = [
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
        Field::AiInstance,
        Field::PromptTokens,
        Field::CompletionTokens,
        Field::TimeToFirstToken,
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
            Field::AiInstance => "ai_instance",
            Field::PromptTokens => "prompt_tokens",
            Field::CompletionTokens => "completion_tokens",
            Field::TimeToFirstToken => "ttft_ms",
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
    /// The AI provider instance that answered.
    pub ai_instance: Option<Arc<str>>,
    /// Tokens of an AI answer: prompt and completion.
    pub tokens: Option<(u64, u64)>,
    /// An AI stream's time to first token.
    pub ttft: Option<Duration>,
}

/// The running access log; stops its writer when the last handle goes.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Line>,
    /// Lines sent and not yet taken by the writer. The writer may take a
    /// line before its sender counts it, so the count may wrap below zero
    /// for a moment: it is only compared for equality.
    queued: Arc<AtomicUsize>,
    writer: std::thread::Thread,
    /// Requests under 400 are logged when a random 32-bit value is below.
    keep_below: u64,
}

impl AccessLog {
    /// Starts the writer thread, writing to `out`.
    pub fn start(settings: Settings, out: Box<dyn Write + Send>) -> io::Result<AccessLog> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let keep_below = (settings.sample.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64 + 1;
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let writer = std::thread::Builder::new()
            .name("sluicegate-access-log".into())
            .spawn(move || write_lines(rx, &taken, settings, out))?
            .thread()
            .clone();
        Ok(AccessLog {
            tx,
            queued,
            writer,
            keep_below,
        })
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
            Ok(()) => {
                if self.queued.fetch_add(1, Ordering::Relaxed).wrapping_add(1) == WAKE_EVERY {
                    self.writer.unpark();
                }
            }
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

fn write_lines(
    rx: Receiver<Line>,
    queued: &AtomicUsize,
    settings: Settings,
    mut out: Box<dyn Write + Send>,
) {
    let mut formatter = LineFormatter::new(settings.format, &settings.fields);
    // Lines gather here and go out in writes of about this size.
    const WRITE: usize = 64 * 1024;
    let mut batch = Vec::with_capacity(WRITE + 4096);
    loop {
        let mut taken = 0;
        loop {
            let line = match rx.try_recv() {
                Ok(line) => line,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.write_all(&batch).and_then(|()| out.flush());
                    return;
                }
            };
            taken += 1;
            formatter.write(&mut batch, &line);
            batch.push(b'\n');
            // The line's values are released here, on the writer's time.
            drop(line);
            if batch.len() >= WRITE {
                if out.write_all(&batch).is_err() {
                    return;
                }
                batch.clear();
            }
        }
        // The queue ran dry: what was written goes out now, then the
        // writer naps until the next batch.
        queued.fetch_sub(taken, Ordering::Relaxed);
        if !batch.is_empty() {
            if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
                return;
            }
            batch.clear();
        }
        std::thread::park_timeout(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse_by_name() {
        assert_eq!("route".parse(), Ok(Field::Route));
        assert!("nope".parse::<Field>().unwrap_err().contains("request_id"));
        assert_eq!("TEXT".parse(), Ok(Format::Text));
    }
}
