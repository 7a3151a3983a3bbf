//! The access log: one line per request, written by a thread of its own.
//!
//! A worker formats each finished request's line (JSON or logfmt text,
//! [`super::access_format`]) into a text buffer of its own and goes on; the
//! writer thread takes the buffers whole, swapping each for an empty one,
//! and writes them: every [`TICK`], or as soon as a buffer holds
//! [`WRITE`] bytes. A worker never waits for the disk and never wakes the
//! writer per line.
//!
//! Why workers format their own lines: handing the request's values to the
//! writer instead (a queue of structs of about 400 bytes, formatted on the
//! writer's side) wrote every line into queue memory last touched
//! thousands of requests earlier, long out of the core's cache; that
//! handover cost a worker more than formatting the line does, and the
//! values' reference counts then changed on two threads. A buffer swapped
//! back and forth is small and reused at once, so it stays in cache.
//!
//! When the writer falls behind (a flood, a slow disk) a worker's buffer
//! stops at [`LIMIT`] and further lines are dropped and counted
//! (`sluicegate_access_log_dropped_total`) rather than slowing requests or
//! growing memory. Sampling keeps a share of successful requests; errors
//! (status 400 and above) are always logged.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::access_format::LineFormatter;
use crate::metrics::ACCESS_LOG_DROPPED;

/// A buffer this full is handed to the writer at once, rather than at the
/// next tick. Each hand-over wakes the writer (a futex call and, on a
/// busy core, a context switch), so it is a few hundred lines; buffers of
/// this size, swapped back and forth, still stay in a core's cache.
const WRITE: usize = 128 * 1024;

/// A buffer this full takes no more lines until the writer has taken it.
const LIMIT: usize = 1024 * 1024;

/// How long the writer sleeps when no buffer filled up first: the delay of
/// a line at low rates.
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

/// What the log says about one request, borrowed from the request's own
/// values: a line is formatted while they are alive, so nothing is
/// copied, counted or freed for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Line<'a> {
    pub time: Option<SystemTime>,
    pub client: Option<IpAddr>,
    pub method: Option<&'a str>,
    pub host: Option<&'a [u8]>,
    pub path: Option<&'a str>,
    pub protocol: &'static str,
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub route: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub attempts: u32,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub consumer: Option<&'a str>,
    pub request_id: Option<&'a [u8]>,
    pub trace_id: Option<[u8; 16]>,
    pub answered_by: Option<&'static str>,
    pub user_agent: Option<&'a [u8]>,
    /// The AI provider instance that answered.
    pub ai_instance: Option<&'a str>,
    /// Tokens of an AI answer: prompt and completion.
    pub tokens: Option<(u64, u64)>,
    /// An AI stream's time to first token.
    pub ttft: Option<Duration>,
}

/// The text one thread formatted and the writer has not taken yet.
#[derive(Debug)]
struct Shard {
    formatter: LineFormatter,
    text: Vec<u8>,
}

/// What the workers and the writer share.
#[derive(Debug)]
struct Shared {
    /// One per thread that logs, as far as there are enough: a thread
    /// takes the one of its index (see [`thread_index`]), so workers do not
    /// share a lock.
    shards: Box<[Mutex<Shard>]>,
    closed: AtomicBool,
    dropped: AtomicU64,
}

/// The running access log; stops its writer, once it wrote what is left,
/// when dropped.
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
    /// Requests under 400 are logged when a random 32-bit value is below.
    keep_below: u64,
}

impl AccessLog {
    /// Starts the writer thread, writing to `out`.
    pub fn start(settings: Settings, out: Box<dyn Write + Send>) -> io::Result<AccessLog> {
        let keep_below = (settings.sample.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64 + 1;
        let threads = std::thread::available_parallelism().map_or(4, usize::from);
        let shards = (0..(threads * 2).clamp(2, 64))
            .map(|_| {
                Mutex::new(Shard {
                    formatter: LineFormatter::new(settings.format, &settings.fields),
                    text: Vec::new(),
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            shards,
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let theirs = shared.clone();
        let writer = std::thread::Builder::new()
            .name("sluicegate-access-log".into())
            .spawn(move || write_lines(&theirs, out))?
            .thread()
            .clone();
        Ok(AccessLog {
            shared,
            writer,
            keep_below,
        })
    }

    /// Logs `line` if sampling keeps it; never waits for the writer.
    pub fn log(&self, line: &Line<'_>) {
        if line.status < 400
            && self.keep_below <= u64::from(u32::MAX)
            && sample() >= self.keep_below
        {
            return;
        }
        let shards = &self.shared.shards;
        let Ok(mut shard) = shards[thread_index() % shards.len()].lock() else {
            return;
        };
        let before = shard.text.len();
        if before >= LIMIT {
            drop(shard);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(ACCESS_LOG_DROPPED).increment(1);
            return;
        }
        let Shard { formatter, text } = &mut *shard;
        formatter.write(text, line);
        text.push(b'\n');
        let filled = before < WRITE && text.len() >= WRITE;
        drop(shard);
        if filled {
            self.writer.unpark();
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

/// This thread's index among those that log, given on first use.
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
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

/// Takes every buffer that has text, swapping in the empty one it wrote
/// last, and writes it; then sleeps until a tick passes or a buffer
/// fills. Ends once the log is closed and what was left is written, or
/// when `out` fails.
fn write_lines(shared: &Shared, mut out: Box<dyn Write + Send>) {
    let mut spare: Vec<u8> = Vec::with_capacity(WRITE * 2);
    loop {
        let closing = shared.closed.load(Ordering::Acquire);
        let mut wrote = false;
        for shard in &shared.shards {
            {
                let Ok(mut s) = shard.lock() else { continue };
                if s.text.is_empty() {
                    continue;
                }
                std::mem::swap(&mut s.text, &mut spare);
            }
            if out.write_all(&spare).is_err() {
                return;
            }
            spare.clear();
            wrote = true;
        }
        if wrote && out.flush().is_err() {
            return;
        }
        if closing {
            return;
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

    /// A sink that keeps what it is given, and blocks while `gate` is
    /// held.
    #[derive(Clone, Default)]
    struct Sink {
        gate: Arc<Mutex<()>>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(status: u16, path: &str) -> Line<'_> {
        Line {
            time: None,
            client: None,
            method: Some("GET"),
            host: None,
            path: Some(path),
            protocol: "HTTP/1.1",
            status,
            request_bytes: 0,
            response_bytes: 2,
            route: Some("r"),
            upstream: None,
            attempts: 1,
            duration: Duration::from_micros(1500),
            upstream_duration: None,
            consumer: None,
            request_id: None,
            trace_id: None,
            answered_by: None,
            user_agent: None,
            ai_instance: None,
            tokens: None,
            ttft: None,
        }
    }

    fn written(sink: &Sink, want: usize) -> Vec<serde_json::Value> {
        for _ in 0..500 {
            let text = sink.got.lock().unwrap().clone();
            let lines: Vec<_> = text
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).expect("each line is whole JSON"))
                .collect();
            if lines.len() >= want {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("fewer than {want} lines written");
    }

    #[test]
    fn lines_of_several_threads_arrive_whole() {
        let sink = Sink::default();
        let log = Arc::new(AccessLog::start(Settings::default(), Box::new(sink.clone())).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        log.log(&line(200, &format!("/t{t}/{i}")));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let lines = written(&sink, 8000);
        assert_eq!(lines.len(), 8000);
        assert_eq!(log.dropped(), 0);
        for t in 0..4 {
            let mine = lines
                .iter()
                .filter(|l| l["path"].as_str().unwrap().starts_with(&format!("/t{t}/")))
                .count();
            assert_eq!(mine, 2000);
        }
    }

    #[test]
    fn a_stuck_writer_costs_lines_not_memory() {
        let sink = Sink::default();
        let gate = sink.gate.lock().unwrap();
        let log = AccessLog::start(Settings::default(), Box::new(sink.clone())).unwrap();
        // About 200 bytes a line: 20,000 lines are four times a buffer's
        // limit, whatever the writer took before it got stuck.
        let sent = 20_000;
        for i in 0..sent {
            log.log(&line(500, &format!("/p/{i}")));
        }
        let dropped = log.dropped();
        assert!(dropped > 0, "nothing dropped");
        drop(gate);
        drop(log);
        let lines = written(&sink, sent - dropped as usize);
        assert_eq!(lines.len() as u64 + dropped, sent as u64);
        // What was kept is the oldest: each buffer keeps its first lines.
        assert_eq!(lines[0]["path"], "/p/0");
    }
}
