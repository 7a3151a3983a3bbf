//! Distributed tracing: W3C Trace Context on the way in and out, and the
//! spans of a request, exported over OTLP.
//!
//! Per request the proxy only parses `traceparent`, decides whether the
//! request is sampled (an incoming decision is kept; a new trace is sampled
//! at the configured ratio) and draws span ids, so that the upstream gets
//! a `traceparent` whose parent is the attempt that reached it. Spans are
//! built only for sampled requests, when the request ends, from the times
//! the pipeline recorded: a server span, a client span per upstream
//! attempt, and a span per plugin that waited on a service (forwardAuth,
//! Redis limits, JWKS). They go to a bounded queue; a task of the
//! gateway's runtime exports them in batches with `opentelemetry-otlp`
//! (gRPC or HTTP/protobuf). A full queue drops spans, never slows a
//! request.
//!
//! The queue is a locked list rather than a channel: a channel woke the
//! export task, on another thread, for nearly every sampled request (a
//! system call and two context switches on the worker's core). Workers
//! append, and wake the task only when a batch is full; otherwise it
//! takes what is there every [`LINGER`].

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tokio::sync::Notify;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A request's place in a trace.
#[derive(Clone, Debug)]
pub struct Context {
    pub trace_id: [u8; 16],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// This request's server span.
    pub span: [u8; 8],
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged.
    pub state: Option<HeaderValue>,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

/// Parses a `traceparent` value (W3C Trace Context §3.2): version, trace
/// id, parent id and flags, in lower-case hex. All-zero ids, version
/// `ff`, and anything malformed are rejected; a later version's extra
/// fields are ignored, as the spec asks.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = decode::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace: [u8; 16] = decode(&v[3..35])?;
    let parent: [u8; 8] = decode(&v[36..52])?;
    let flags = decode::<1>(&v[53..55])?[0];
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags & 1 == 1))
}

/// Lower-case hex of `bytes` into `out`, which is twice as long.
pub(super) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = H[usize::from(b >> 4)];
        pair[1] = H[usize::from(b & 0xf)];
    }
}

/// The `traceparent` a next hop gets: this trace, `parent` as its caller.
/// Every proxied request gets one, sampled or not, so it is written in
/// place rather than formatted.
pub fn traceparent(trace: &[u8; 16], parent: &[u8; 8], sampled: bool) -> HeaderValue {
    // Hex digits and dashes only.
    HeaderValue::from_bytes(&traceparent_text(trace, parent, sampled)).unwrap_or(
        HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"),
    )
}

/// The text of a `traceparent`, on the stack: the proxy writes it straight
/// into the upstream's request head.
pub fn traceparent_text(trace: &[u8; 16], parent: &[u8; 8], sampled: bool) -> [u8; 55] {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut text[3..35], trace);
    hex_into(&mut text[36..52], parent);
    if sampled {
        text[54] = b'1';
    }
    text
}

/// Random bits from a per-thread xorshift generator seeded from the
/// system's random source; ids need to be unique, not secret.
fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).is_err() {
                let here = 0u8;
                seed = (std::ptr::from_ref(&here) as u64 ^ u64::from(std::process::id())).to_le_bytes();
            }
            u64::from_le_bytes(seed) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A new, non-zero span id.
pub fn span_id() -> [u8; 8] {
    random().to_be_bytes()
}

/// How traces are exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Grpc,
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http" | "http/protobuf" => Ok(Protocol::HttpProtobuf),
            _ => Err(format!("expected grpc or http/protobuf, got {s:?}")),
        }
    }
}

/// Tracing settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The OTLP endpoint, e.g. `http://collector:4317` (gRPC) or
    /// `http://collector:4318/v1/traces` (HTTP).
    pub endpoint: String,
    pub protocol: Protocol,
    /// The share of new traces sampled, 0 to 1.
    pub ratio: f64,
    pub service_name: String,
}

/// Spans queued for export at most.
const QUEUE: usize = 8192;
/// Spans exported in one call at most.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const LINGER: Duration = Duration::from_millis(500);

/// Finished spans waiting for the export task.
#[derive(Debug, Default)]
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    /// Told when the spans reach a batch, and when the tracer is gone.
    full: Notify,
    /// Set when the tracer is dropped: the task exports what is left and
    /// ends.
    closed: AtomicBool,
}

/// Makes trace decisions and queues finished spans.
#[derive(Debug)]
pub struct Tracer {
    /// New traces are sampled when a random 32-bit value is below.
    keep_below: u64,
    /// Shared with the export task, which ends once the tracer is gone
    /// and what was queued is exported.
    queue: Arc<Queue>,
    scope: InstrumentationScope,
}

impl Tracer {
    /// Starts exporting (the export task runs on the current Tokio
    /// runtime).
    pub fn start(settings: &Settings) -> Result<Tracer, String> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
        use opentelemetry_sdk::trace::SpanExporter as _;
        let timeout = Duration::from_secs(10);
        let mut exporter = match settings.protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&settings.endpoint)
                .with_timeout(timeout)
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_headers(Default::default())
                .with_endpoint(&settings.endpoint)
                .with_timeout(timeout)
                .build(),
        }
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let queue = Arc::new(Queue::default());
        tokio::spawn(export(exporter, queue.clone()));
        Ok(Tracer {
            keep_below: (settings.ratio.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64 + 1,
            queue,
            scope: InstrumentationScope::builder("sluicegate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// The request's trace context, from its headers or new.
    pub fn context(&self, headers: &HeaderMap) -> Context {
        let incoming = headers
            .get(&TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()));
        match incoming {
            Some((trace_id, parent, sampled)) => Context {
                trace_id,
                parent: Some(parent),
                span: span_id(),
                sampled,
                state: headers.get(&TRACESTATE).cloned(),
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&random().to_be_bytes());
                trace_id[8..].copy_from_slice(&random().to_be_bytes());
                Context {
                    trace_id,
                    parent: None,
                    span: span_id(),
                    sampled: self.keep_below > u64::from(u32::MAX)
                        || (random() >> 32) < self.keep_below,
                    state: None,
                }
            }
        }
    }

    /// Queues the spans of a finished request (sampled ones only). They
    /// are taken, not cloned: their names and attributes move into the
    /// queued spans as they are.
    pub fn finish(&self, ctx: &Context, request: ServerSpan, children: Vec<ChildSpan>) {
        if !ctx.sampled {
            return;
        }
        let flags = TraceFlags::SAMPLED;
        let state = ctx
            .state
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let trace = TraceId::from_bytes(ctx.trace_id);
        let server = SpanContext::new(
            trace,
            SpanId::from_bytes(ctx.span),
            flags,
            false,
            state.clone(),
        );
        // A full queue drops the spans: export must never slow requests.
        let Ok(mut spans) = self.queue.spans.lock() else {
            return;
        };
        let before = spans.len();
        if before + 1 + children.len() > QUEUE {
            return;
        }
        spans.push(SpanData {
            span_context: server,
            parent_span_id: ctx.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: ctx.parent.is_some(),
            span_kind: SpanKind::Server,
            name: request.name,
            start_time: request.start,
            end_time: request.end,
            attributes: request.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if request.error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: self.scope.clone(),
        });
        for c in children {
            spans.push(SpanData {
                span_context: SpanContext::new(
                    trace,
                    SpanId::from_bytes(c.span),
                    flags,
                    false,
                    state.clone(),
                ),
                parent_span_id: SpanId::from_bytes(ctx.span),
                parent_span_is_remote: false,
                span_kind: c.kind,
                name: c.name,
                start_time: c.start,
                end_time: c.end,
                attributes: c.attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: if c.error {
                    Status::error("")
                } else {
                    Status::Unset
                },
                instrumentation_scope: self.scope.clone(),
            });
        }
        let full = before < BATCH && spans.len() >= BATCH;
        drop(spans);
        if full {
            self.queue.full.notify_one();
        }
    }
}

/// The server span of a request.
#[derive(Debug)]
pub struct ServerSpan {
    pub name: Cow<'static, str>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub error: bool,
}

/// A span under a request's server span: an upstream attempt, or a plugin
/// that waited on a service.
#[derive(Debug)]
pub struct ChildSpan {
    pub span: [u8; 8],
    pub kind: SpanKind,
    pub name: Cow<'static, str>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub error: bool,
}

/// Attributes of the OpenTelemetry HTTP semantic conventions.
pub fn server_attributes(
    method: &str,
    path: &str,
    route: Option<&str>,
    status: u16,
    host: Option<&str>,
    client: IpAddr,
) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new("url.path", path.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("client.address", client.to_string()),
    ];
    if let Some(r) = route {
        a.push(KeyValue::new("http.route", r.to_owned()));
    }
    if let Some(h) = host {
        a.push(KeyValue::new("server.address", h.to_owned()));
    }
    a
}

/// Attributes of an upstream attempt.
pub fn attempt_attributes(endpoint: SocketAddr, status: Option<u16>) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("server.address", endpoint.ip().to_string()),
        KeyValue::new("server.port", i64::from(endpoint.port())),
    ];
    if let Some(s) = status {
        a.push(KeyValue::new("http.response.status_code", i64::from(s)));
    }
    a
}

/// The attributes of a call to an LLM provider, after OpenTelemetry's
/// GenAI conventions.
pub fn ai_call_attributes(
    provider: &'static str,
    server: &str,
    model: &str,
    instance: &str,
    status: Option<u16>,
    tokens: Option<(u64, u64)>,
) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", "chat"),
        KeyValue::new("gen_ai.provider.name", provider),
        KeyValue::new("gen_ai.request.model", model.to_owned()),
        KeyValue::new("server.address", server.to_owned()),
        KeyValue::new("sluicegate.ai.instance", instance.to_owned()),
    ];
    if let Some(s) = status {
        a.push(KeyValue::new("http.response.status_code", i64::from(s)));
    }
    if let Some((input, output)) = tokens {
        a.push(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
        a.push(KeyValue::new("gen_ai.usage.output_tokens", output as i64));
    }
    a
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.full.notify_one();
    }
}

/// Exports what the workers queued: when a batch is full, or every
/// [`LINGER`]; ends once the tracer is gone and its spans are exported.
async fn export(exporter: opentelemetry_otlp::SpanExporter, queue: Arc<Queue>) {
    use opentelemetry_sdk::trace::SpanExporter as _;
    loop {
        tokio::select! {
            () = queue.full.notified() => {}
            () = tokio::time::sleep(LINGER) => {}
        }
        // Read before taking the spans: a tracer gone by now queues none
        // after them.
        let closed = queue.closed.load(Ordering::Acquire);
        let mut spans = match queue.spans.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return,
        };
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(BATCH));
            let batch = std::mem::replace(&mut spans, rest);
            let n = batch.len();
            if let Err(e) = exporter.export(batch).await {
                tracing::warn!(error = %e, spans = n, "OTLP export failed; spans dropped");
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracer sampling everything, exporting to a closed port.
    fn unreachable_tracer() -> Tracer {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // ok: test code
        let endpoint = format!("http://{}/v1/traces", closed.local_addr().unwrap()); // ok: test code
        drop(closed);
        Tracer::start(&Settings {
            endpoint,
            protocol: Protocol::HttpProtobuf,
            ratio: 1.0,
            service_name: "test".into(),
        })
        .unwrap() // ok: test code
    }

    fn server_span() -> ServerSpan {
        let now = SystemTime::now();
        ServerSpan {
            name: "GET".into(),
            start: now,
            end: now,
            attributes: Vec::new(),
            error: false,
        }
    }

    /// The queue holds at most [`QUEUE`] spans, and a full batch wakes the
    /// export task at once rather than after [`LINGER`].
    #[tokio::test]
    async fn the_queue_is_bounded_and_a_full_batch_is_taken_at_once() {
        let tracer = unreachable_tracer();
        let ctx = tracer.context(&HeaderMap::new());
        assert!(ctx.sampled);
        for _ in 0..QUEUE + 100 {
            tracer.finish(&ctx, server_span(), Vec::new());
        }
        let queued = || tracer.queue.spans.lock().unwrap().len(); // ok: test code
        assert_eq!(queued(), QUEUE);
        // Taken long before the linger has passed.
        let started = std::time::Instant::now();
        while queued() > 0 {
            assert!(started.elapsed() < LINGER / 2, "still queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A dropped tracer's export task takes what is left and ends.
    #[tokio::test]
    async fn the_export_task_ends_with_its_tracer() {
        let tracer = unreachable_tracer();
        let ctx = tracer.context(&HeaderMap::new());
        tracer.finish(&ctx, server_span(), Vec::new());
        let queue = Arc::downgrade(&tracer.queue);
        drop(tracer);
        let started = std::time::Instant::now();
        while let Some(q) = queue.upgrade() {
            // One failed export (the exporter retries) at most.
            assert!(started.elapsed() < Duration::from_secs(10), "still running");
            drop(q);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn hex(bytes: &[u8]) -> String {
        let mut out = vec![0; bytes.len() * 2];
        hex_into(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn traceparents_parse_strictly() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, s) = parse_traceparent(ok).unwrap();
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p), "00f067aa0ba902b7");
        assert!(s);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version may add fields.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz")
                .is_some_and(|(_, _, s)| !s)
        );
    }

    #[test]
    fn traceparents_round_trip() {
        let v = traceparent(&[7; 16], &[9; 8], true);
        assert_eq!(v, "00-07070707070707070707070707070707-0909090909090909-01");
        let (t, p, s) = parse_traceparent(v.as_bytes()).unwrap();
        assert_eq!((t, p, s), ([7; 16], [9; 8], true));
        let v = traceparent(&[0xab; 16], &[0x1f; 8], false);
        assert_eq!(v, "00-abababababababababababababababab-1f1f1f1f1f1f1f1f-00");
    }
}
