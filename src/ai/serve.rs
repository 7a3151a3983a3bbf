//! Serving one AI request: the front door (which endpoint the path
//! names: OpenAI's chat completions and models, or Anthropic's messages),
//! the prompt plugins, then the instances in order until one answers.
//!
//! An attempt that fails with a `fallbackOn` condition before anything
//! reached the client moves the request to the next instance, up to
//! `maxAttempts` and within the request's total time; a streamed answer
//! is committed only once its first token is in hand, so that a stream
//! that breaks before then still falls back, and one that breaks later is
//! ended rather than switched. Every attempt feeds its instance's passive
//! health and the metrics.
//!
//! Provider calls go through [`crate::http::client::fetch::stream`]: the
//! gateway's own client, its DNS resolver and connection pools. The
//! client's own headers are never sent (its `Authorization` least of
//! all); the instance's key is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use tracing::{debug, warn};

use super::answer::{AiBody, End, Relay, error_response, json_response};
use super::config::{AiRoute, Instance};
use super::error::{AiError, Failure};
use super::facts::{CallRecord, Facts};
use super::outgoing::{self, Outgoing};
use super::request::{ChatCall, check_model};
use super::select;
use super::wire::{self, Decoder, Wire, emit::Emitter, messages};
use crate::http::client::fetch::{self, FetchError, StreamOptions, Streaming, TimedBody};
use crate::metrics::ai as m;
use crate::plugins::{TokenMeter, TokenUsage};

/// The most of a whole answer read.
const MAX_ANSWER: usize = 32 << 20;
/// The most of an error answer read, for its message.
const MAX_ERROR: usize = 64 << 10;
/// The time allowed to read an error answer.
const ERROR_READ: Duration = Duration::from_secs(2);

/// One AI request, as the proxy hands it over.
#[derive(Debug)]
pub struct Call<'a> {
    pub method: &'a Method,
    /// The request's normalized path.
    pub path: &'a str,
    pub body: Bytes,
    pub consumer: Option<Arc<str>>,
    /// Charged with the answer's tokens once it ends.
    pub meters: Vec<Box<dyn TokenMeter>>,
    /// When the request arrived.
    pub started: Instant,
    /// Filled in when the request is logged or traced.
    pub facts: Option<Arc<Facts>>,
}

/// What a successful attempt produced.
enum Answer {
    Whole(Bytes, Option<TokenUsage>),
    Stream(Box<Relay>),
}

impl AiRoute {
    /// Answers one request; every failure is an OpenAI-style error.
    pub async fn serve(&self, call: Call<'_>) -> Response<AiBody> {
        match self.dispatch(call).await {
            Ok(r) => r,
            Err(e) => {
                debug!(route = %self.route, error = %e, "AI request not answered");
                error_response(&e)
            }
        }
    }

    async fn dispatch(&self, call: Call<'_>) -> Result<Response<AiBody>, AiError> {
        let path = call.path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            if *call.method != Method::POST {
                return Err(AiError::Method("POST"));
            }
            return self.chat(call).await;
        }
        if path.ends_with("/messages") {
            if *call.method != Method::POST {
                return Ok(messages_error(&AiError::Method("POST")));
            }
            return Ok(self.messages(call).await);
        }
        if path.ends_with("/models") {
            if !matches!(*call.method, Method::GET | Method::HEAD) {
                return Err(AiError::Method("GET"));
            }
            return Ok(self.models());
        }
        Err(AiError::NotFound(path.to_owned()))
    }

    /// `GET .../models`: the models clients may ask for (the allowed
    /// ones, else those the instances force).
    fn models(&self) -> Response<AiBody> {
        let mut ids: Vec<(&str, &str)> = Vec::new();
        if self.allowed_models.is_empty() {
            for i in self.instances.iter() {
                if let Some(m) = &i.model
                    && !ids.iter().any(|(id, _)| id == &&**m)
                {
                    ids.push((m, wire::provider_name(i.provider)));
                }
            }
        } else {
            for m in self.allowed_models.iter() {
                let owner = self
                    .instances
                    .iter()
                    .find(|i| i.model.as_deref() == Some(m))
                    .map_or("sluicegate", |i| wire::provider_name(i.provider));
                ids.push((m, owner));
            }
        }
        let data: Vec<serde_json::Value> = ids
            .into_iter()
            .map(|(id, owner)| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
            .collect();
        let body = serde_json::json!({"object": "list", "data": data});
        json_response(StatusCode::OK, Bytes::from(body.to_string()))
    }

    /// `POST .../messages`: the Anthropic Messages front door, through
    /// the same pipeline as chat completions, its answer and errors in
    /// Anthropic's shape.
    async fn messages(&self, mut call: Call<'_>) -> Response<AiBody> {
        let result = match messages::request(&call.body) {
            Ok(body) => {
                call.body = body;
                self.chat(call).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let body = match body {
                    AiBody::Full(Some(b)) => AiBody::full(messages::whole(&b)),
                    AiBody::Stream(mut relay) => {
                        relay.reframe();
                        AiBody::Stream(relay)
                    }
                    other => other,
                };
                Response::from_parts(parts, body)
            }
            Err(e) => {
                debug!(route = %self.route, error = %e, "AI request not answered");
                messages_error(&e)
            }
        }
    }

    /// The model label of metrics: bounded by configuration.
    fn model_label(&self, inst: &Instance, asked: Option<&str>) -> Arc<str> {
        match (&inst.model, asked) {
            (Some(m), _) => m.clone(),
            (None, Some(a)) if self.allowed_models.iter().any(|m| m == a) => a.into(),
            _ => "other".into(),
        }
    }

    async fn chat(&self, call: Call<'_>) -> Result<Response<AiBody>, AiError> {
        let mut req = ChatCall::parse(&call.body)?;
        if let Some(t) = &self.templates {
            t.apply(&mut req)?;
        }
        req.messages()?;
        if let Some(g) = &self.guard {
            g.check(&req)?;
        }
        if let Some(d) = &self.decorator {
            d.apply(&mut req);
        }
        let asked = req.model().map(str::to_owned);
        if let Some(a) = &asked {
            check_model(a)?;
            if !self.allowed_models.is_empty() && !self.allowed_models.iter().any(|m| m == a) {
                return Err(AiError::BadRequest(format!(
                    "model {a:?} is not allowed on this route"
                )));
            }
        }
        let deadline = call.started + self.timeouts.total;
        let order = select::order(&self.choices, &self.health, Instant::now());
        let mut meters = Some(call.meters);
        let mut last = None;
        for i in order.into_iter().take(self.max_attempts) {
            let inst = &self.instances[i];
            let Some(model) = inst.model.as_deref().or(asked.as_deref()) else {
                return Err(AiError::BadRequest("model: is required".into()));
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = Some(AiError::failed(
                    Failure::Timeout,
                    "the request's time ran out",
                ));
                break;
            }
            let out = outgoing::request(
                inst.wire,
                &req,
                model,
                inst.settings(self.default_max_tokens),
            )?;
            let start = Instant::now();
            let result = self.attempt(inst, &req, model, out, left).await;
            let status = match &result {
                Ok(_) => Some(200),
                Err(e) => Some(e.status().as_u16()),
            };
            if let Some(f) = &call.facts {
                f.update(|r| {
                    r.calls.push(CallRecord {
                        instance: inst.name.clone(),
                        provider: wire::provider_name(inst.provider),
                        server: inst.host.clone(),
                        model: model.into(),
                        start,
                        end: Instant::now(),
                        status,
                        usage: None,
                    });
                });
            }
            match result {
                Ok(answer) => {
                    self.health.success(i);
                    m::record_call(&self.route, &inst.name, "ok");
                    let end = End {
                        route: self.route.clone(),
                        instance: inst.name.clone(),
                        model: self.model_label(inst, asked.as_deref()),
                        consumer: call.consumer.clone(),
                        meters: meters.take().unwrap_or_default(),
                        started: call.started,
                        prompt_estimate: req.prompt_estimate(),
                        facts: call.facts.clone(),
                    };
                    if let Some(f) = &call.facts {
                        f.update(|r| r.instance = Some(inst.name.clone()));
                    }
                    return Ok(respond(answer, end));
                }
                Err(e) => {
                    let Some(failure) = e.failure() else {
                        m::record_call(&self.route, &inst.name, "refused");
                        return Err(e);
                    };
                    m::record_call(&self.route, &inst.name, failure.as_str());
                    if let Some(time) = self.health.failure(i, Instant::now()) {
                        m::record_ejection(&self.route, &inst.name);
                        warn!(route = %self.route, instance = %inst.name, ?time, "provider instance set aside after failures");
                    }
                    debug!(route = %self.route, instance = %inst.name, error = %e, "provider call failed");
                    if self.fallback & failure.bit() == 0 {
                        return Err(e);
                    }
                    m::record_fallback(&self.route, &inst.name, failure.as_str());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(AiError::Unavailable))
    }

    /// One call to `inst`, up to a committed answer.
    async fn attempt(
        &self,
        inst: &Instance,
        req: &ChatCall,
        model: &str,
        out: Outgoing,
        left: Duration,
    ) -> Result<Answer, AiError> {
        let target = inst.target.get().map_err(|e| {
            warn!(route = %self.route, instance = %inst.name, error = %e, "provider TLS settings unusable");
            AiError::failed(Failure::ConnectFailure, "the provider cannot be reached")
        })?;
        let path = out
            .path
            .parse()
            .map_err(|_| AiError::BadRequest("the request names no usable model".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(if req.stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        if let Some(k) = &inst.key {
            k.apply(&mut headers);
        }
        if inst.wire == Wire::Anthropic
            && let Ok(v) = HeaderValue::try_from(inst.api_version.as_str())
        {
            headers.insert("anthropic-version", v);
        }
        let request = fetch::Request {
            method: Method::POST,
            path_and_query: path,
            headers,
            body: out.body,
        };
        let first = self.timeouts.first_token.min(left);
        let options = StreamOptions {
            connect: self.timeouts.connect,
            first_byte: first,
            total: left,
            reuse: true,
        };
        let started = Instant::now();
        let s = fetch::stream(target, request, &options)
            .await
            .map_err(|e| self.fetch_failed(inst, e))?;
        if !s.status.is_success() {
            return Err(self.provider_error(inst, s).await);
        }
        let first_deadline = started + first;
        if req.stream {
            let mut relay = Box::new(Relay::new(
                s.body,
                Decoder::new(inst.wire, req.client_usage),
                Emitter::new(model, req.client_usage),
            ));
            relay.prime(first_deadline).await?;
            return Ok(Answer::Stream(relay));
        }
        let body = tokio::time::timeout_at(first_deadline.into(), read(s.body, MAX_ANSWER))
            .await
            .map_err(|_| AiError::failed(Failure::Timeout, "the provider did not answer in time"))?
            .map_err(|e| {
                debug!(instance = %inst.name, error = %e, "reading the provider's answer failed");
                AiError::failed(Failure::ServerError, "the provider's answer failed")
            })?;
        let (bytes, usage) = wire::complete(inst.wire, &body)?;
        Ok(Answer::Whole(bytes, usage))
    }

    fn fetch_failed(&self, inst: &Instance, e: FetchError) -> AiError {
        debug!(route = %self.route, instance = %inst.name, error = %e, "provider call failed");
        match e {
            FetchError::Timeout(_) => {
                AiError::failed(Failure::Timeout, "the provider did not answer in time")
            }
            FetchError::Resolve { .. } | FetchError::Connect(_) | FetchError::NoTls => {
                AiError::failed(Failure::ConnectFailure, "the provider cannot be reached")
            }
            FetchError::Exchange(_) | FetchError::Status(_) => {
                AiError::failed(Failure::ServerError, "the provider's connection failed")
            }
        }
    }

    /// The error a provider's non-2xx answer is.
    async fn provider_error(&self, inst: &Instance, s: Streaming) -> AiError {
        let status = s.status;
        let body = tokio::time::timeout(ERROR_READ, read(s.body, MAX_ERROR))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut message = wire::error_message(inst.wire, &body)
            .unwrap_or_else(|| format!("the provider answered {}", status.as_u16()));
        if let Some(k) = &inst.key {
            message = k.scrub(&message);
        }
        if message.len() > 1024 {
            let mut cut = 1024;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        match status.as_u16() {
            429 => AiError::Provider {
                failure: Some(Failure::RateLimited),
                status,
                message,
                retry_after: s.headers.get(RETRY_AFTER).cloned(),
            },
            401 | 403 => {
                warn!(route = %self.route, instance = %inst.name, status = status.as_u16(), provider = %message, "the provider refused the gateway's key");
                AiError::Provider {
                    failure: Some(Failure::ServerError),
                    status: StatusCode::BAD_GATEWAY,
                    message: AiError::Credentials.to_string(),
                    retry_after: None,
                }
            }
            400..=499 => AiError::Provider {
                failure: None,
                status,
                message,
                retry_after: None,
            },
            _ => AiError::failed(
                Failure::ServerError,
                format!("the provider failed ({}): {message}", status.as_u16()),
            ),
        }
    }
}

/// An error in Anthropic's shape, with the headers OpenAI's would carry.
fn messages_error(e: &AiError) -> Response<AiBody> {
    let mut resp = json_response(e.status(), messages::error_body(e.status(), &e.to_string()));
    if let Some((name, value)) = e.headers() {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// The client's answer, accounted for.
fn respond(answer: Answer, end: End) -> Response<AiBody> {
    match answer {
        Answer::Whole(bytes, usage) => {
            let chars = bytes.len() as u64;
            end.finish(usage, chars, None);
            json_response(StatusCode::OK, bytes)
        }
        Answer::Stream(mut relay) => {
            if let Some(at) = relay.first_token() {
                end.first_token(at);
            }
            relay.arm(end);
            let mut resp = Response::new(AiBody::Stream(relay));
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
    }
}

/// Reads at most `limit` bytes of a body.
async fn read(mut body: TimedBody, limit: usize) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > limit {
                return Err(format!("the answer is larger than {limit} bytes"));
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}
