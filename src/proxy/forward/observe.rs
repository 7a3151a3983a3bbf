//! What the pipeline learns about one request for its access log line,
//! its spans and its size metrics, and the one place they are written
//! when the request ends.
//!
//! Nothing here runs unless needed: without an access log or a tracer
//! only the sizes are recorded, and a body of known size needs no wrapper
//! to learn its size.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body as _;
use opentelemetry::trace::SpanKind;

use super::head::TraceHeaders;
use crate::proxy::body::{FaultProbe, Observed, OnEnd, ResponseBody};
use crate::proxy::server::{ClientBody, ClientInfo};
use crate::routing::Route;
use crate::telemetry::Telemetry;
use crate::telemetry::access_log::Line;
use crate::telemetry::trace::{self, ChildSpan, ServerSpan};

pub(super) static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// One attempt on an endpoint.
#[derive(Debug)]
pub(super) struct AttemptRecord {
    pub endpoint: SocketAddr,
    pub span: [u8; 8],
    pub start: Instant,
    pub end: Instant,
    pub status: Option<u16>,
}

/// A plugin that waited on a service.
#[derive(Debug)]
pub(super) struct WaitRecord {
    pub plugin: &'static str,
    pub start: Instant,
    pub end: Instant,
    pub answered: Option<u16>,
}

/// What the pipeline notes about a request on its way: its exchange, when
/// something is written at its end (the gateway logs, or the trace is
/// sampled), and its trace context, carried to the upstream whenever the
/// gateway traces.
///
/// They are apart because at a 1% trace ratio most requests of a gateway
/// that does not log only carry their context: an exchange (about 500
/// bytes, moved a few times and with a reference to count) for each of
/// them was most of what tracing cost them.
///
/// A request nobody observes (a background refresh) notes nothing.
#[derive(Default)]
pub(super) struct Notes<'a> {
    pub exchange: Option<&'a mut Exchange>,
    pub trace: Option<&'a trace::Context>,
}

/// Starts observing a request: its trace context when the gateway traces,
/// and its exchange when something will be written at its end.
pub(super) fn start(
    telemetry: &Arc<Telemetry>,
    req: &Request<ClientBody>,
    client: &ClientInfo,
    start: Instant,
) -> (Option<Exchange>, Option<trace::Context>) {
    if !telemetry.enabled() {
        return (None, None);
    }
    let trace = telemetry.tracer.as_ref().map(|t| t.context(req.headers()));
    let keep = telemetry.access_log.is_some() || trace.as_ref().is_some_and(|t| t.sampled);
    let exchange = keep.then(|| Exchange::start(telemetry, req, client, start));
    (exchange, trace)
}

/// What the upstream is told of the trace, and the span id it names as
/// its caller: the first attempt's.
pub(super) fn propagation(ctx: &trace::Context) -> ([u8; 8], TraceHeaders) {
    let span = trace::span_id();
    let headers = TraceHeaders {
        traceparent: trace::traceparent_text(&ctx.trace_id, &span, ctx.sampled),
        keep_state: ctx.state.is_some(),
    };
    (span, headers)
}

/// The facts of one request that is logged or whose trace is sampled.
#[derive(Debug)]
pub(super) struct Exchange {
    telemetry: Arc<Telemetry>,
    start: Instant,
    wall: SystemTime,
    /// The trace context, put in when the request ends (the pipeline
    /// reads it from [`Notes`]).
    pub trace: Option<trace::Context>,
    method: Method,
    host: Option<HeaderValue>,
    /// The request's path (and query): a counted share of its head.
    path: Option<PathAndQuery>,
    client: IpAddr,
    protocol: &'static str,
    user_agent: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub route: Option<Arc<Route>>,
    pub consumer: Option<Arc<str>>,
    pub answered_by: Option<&'static str>,
    pub attempts: Vec<AttemptRecord>,
    pub waits: Vec<WaitRecord>,
    /// What the AI gateway did, on a route with `aiProxy`.
    pub ai: Option<Arc<crate::ai::Facts>>,
    status: u16,
    request_bytes: Option<u64>,
    probe: Option<FaultProbe>,
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

impl Exchange {
    /// Starts collecting. The exchange lives in the request's own future,
    /// not a heap slot of its own; it is boxed only when a response body
    /// of unknown length takes it along to its end.
    fn start(
        telemetry: &Arc<Telemetry>,
        req: &Request<ClientBody>,
        client: &ClientInfo,
        start: Instant,
    ) -> Exchange {
        let headers = req.headers();
        Exchange {
            telemetry: telemetry.clone(),
            start,
            wall: crate::telemetry::wall::at(start),
            trace: None,
            method: req.method().clone(),
            host: req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .or_else(|| headers.get(header::HOST).cloned()),
            path: req.uri().path_and_query().cloned(),
            client: client.peer_ip,
            protocol: protocol(req.version()),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            request_id: headers.get(&X_REQUEST_ID).cloned(),
            route: None,
            consumer: None,
            answered_by: None,
            attempts: Vec::new(),
            waits: Vec::new(),
            ai: None,
            status: 0,
            request_bytes: None,
            probe: None,
        }
    }

    /// Notes the request body, to learn its size at the end.
    pub fn request_body(&mut self, exact: Option<u64>, probe: Option<FaultProbe>) {
        self.request_bytes = exact;
        self.probe = probe;
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.wall + at.saturating_duration_since(self.start)
    }

    fn write(self, response_bytes: u64, end: Instant) {
        let request_bytes = self
            .request_bytes
            .or_else(|| self.probe.as_ref().map(FaultProbe::received))
            .unwrap_or(0);
        if let Some(r) = &self.route {
            r.metrics.sizes(request_bytes, response_bytes, end);
        }
        let ai = self.ai.as_ref().map(|f| f.snapshot());
        if let (Some(tracer), Some(ctx)) = (&self.telemetry.tracer, &self.trace)
            && ctx.sampled
        {
            let route = self.route.as_ref().map(|r| &*r.name);
            let name = match route {
                Some(r) => format!("{} {r}", self.method),
                None => self.method.to_string(),
            };
            let host = self.host.as_ref().and_then(|h| h.to_str().ok());
            let server = ServerSpan {
                name: name.into(),
                start: self.wall,
                end: self.wall(end),
                attributes: trace::server_attributes(
                    self.method.as_str(),
                    self.path.as_ref().map_or("", PathAndQuery::path),
                    route,
                    self.status,
                    host,
                    self.client,
                ),
                error: self.status >= 500,
            };
            let mut children = Vec::with_capacity(self.attempts.len() + self.waits.len());
            for a in &self.attempts {
                children.push(ChildSpan {
                    span: a.span,
                    kind: SpanKind::Client,
                    name: self.method.to_string().into(),
                    start: self.wall(a.start),
                    end: self.wall(a.end),
                    attributes: trace::attempt_attributes(a.endpoint, a.status),
                    error: a.status.is_none_or(|s| s >= 500),
                });
            }
            for c in ai.iter().flat_map(|r| r.calls.iter()) {
                children.push(ChildSpan {
                    span: trace::span_id(),
                    kind: SpanKind::Client,
                    name: format!("chat {}", c.model).into(),
                    start: self.wall(c.start),
                    end: self.wall(c.end),
                    attributes: trace::ai_call_attributes(
                        c.provider,
                        &c.server,
                        &c.model,
                        &c.instance,
                        c.status,
                        c.usage.map(|u| (u.prompt, u.completion)),
                    ),
                    error: c.status.is_none_or(|s| s >= 400),
                });
            }
            for w in &self.waits {
                let mut attributes =
                    vec![opentelemetry::KeyValue::new("sluicegate.plugin", w.plugin)];
                if let Some(s) = w.answered {
                    attributes.push(opentelemetry::KeyValue::new(
                        "http.response.status_code",
                        i64::from(s),
                    ));
                }
                children.push(ChildSpan {
                    span: trace::span_id(),
                    kind: SpanKind::Internal,
                    name: format!("plugin {}", w.plugin).into(),
                    start: self.wall(w.start),
                    end: self.wall(w.end),
                    attributes,
                    error: false,
                });
            }
            tracer.finish(ctx, server, children);
        }
        // The line borrows the request's values; they are freed after it
        // is formatted.
        let Some(log) = self.telemetry.access_log.as_ref() else {
            return;
        };
        let upstream = self.attempts.last();
        let calls = ai.as_ref().map_or(0, |r| r.calls.len() as u32);
        log.log(&Line {
            time: Some(self.wall),
            client: Some(self.client),
            method: Some(self.method.as_str()),
            host: self.host.as_ref().map(HeaderValue::as_bytes),
            path: Some(self.path.as_ref().map_or("", PathAndQuery::path)),
            protocol: self.protocol,
            status: self.status,
            request_bytes,
            response_bytes,
            route: self.route.as_ref().map(|r| &*r.name),
            upstream: upstream.map(|a| a.endpoint),
            attempts: self.attempts.len() as u32 + calls,
            duration: end - self.start,
            upstream_duration: upstream.map(|a| a.end - a.start),
            consumer: self.consumer.as_deref(),
            request_id: self.request_id.as_ref().map(HeaderValue::as_bytes),
            trace_id: self.trace.as_ref().map(|t| t.trace_id),
            answered_by: self.answered_by,
            user_agent: self.user_agent.as_ref().map(HeaderValue::as_bytes),
            ai_instance: ai.as_ref().and_then(|r| r.instance.as_deref()),
            tokens: ai
                .as_ref()
                .and_then(|r| r.usage)
                .map(|u| (u.prompt, u.completion)),
            ttft: ai.as_ref().and_then(|r| r.ttft),
        });
    }

    /// The response as it leaves: its size is known now, or when its body
    /// ends.
    pub fn finish(mut self, resp: Response<ResponseBody>, now: Instant) -> Response<ResponseBody> {
        self.status = resp.status().as_u16();
        match resp.body().size_hint().exact() {
            Some(n) => {
                self.write(n, now);
                resp
            }
            None => resp.map(|b| Observed::wrap(b, Box::new(self))),
        }
    }
}

impl OnEnd for Exchange {
    fn end(self: Box<Self>, bytes: u64, _complete: bool) {
        (*self).write(bytes, Instant::now());
    }
}

/// Records the sizes of a request nobody logs or traces, once known.
pub(super) struct Sizes {
    pub route: Arc<Route>,
    pub request_bytes: Option<u64>,
    pub probe: Option<FaultProbe>,
}

impl Sizes {
    pub fn finish(self, resp: Response<ResponseBody>, now: Instant) -> Response<ResponseBody> {
        match resp.body().size_hint().exact() {
            Some(n) => {
                self.record(n, now);
                resp
            }
            None => resp.map(|b| Observed::wrap(b, Box::new(self))),
        }
    }

    fn record(&self, response_bytes: u64, now: Instant) {
        let request_bytes = self
            .request_bytes
            .or_else(|| self.probe.as_ref().map(FaultProbe::received))
            .unwrap_or(0);
        self.route.metrics.sizes(request_bytes, response_bytes, now);
    }
}

impl OnEnd for Sizes {
    fn end(self: Box<Self>, bytes: u64, _complete: bool) {
        self.record(bytes, Instant::now());
    }
}
