//! The body of an AI answer: complete in hand, or relayed from the
//! provider's stream event by event ([`Relay`]), each piece re-framed as
//! OpenAI chunks and handed on as soon as it is whole, never gathered.
//!
//! A relay is primed before the answer is committed: it reads until the
//! first token is ready to go, so that a provider that fails before then
//! leaves the request free to try another instance ([`Relay::prime`]).
//! Once the client has the answer's head, the relay keeps its instance.
//!
//! When the answer ends (completely, cut by the provider or the time
//! limit, or dropped because the client left), its accounting runs once
//! ([`End`]): token metrics, the request's duration, and the token
//! budgets' charges. A stream whose provider never reported usage is
//! charged an estimate, so that leaving early does not make a request
//! free.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::error::{AiError, Failure};
use super::facts::Facts;
use super::sse;
use super::wire::Decoder;
use super::wire::emit::Emitter;
use super::wire::messages_stream::Reframer;
use crate::http::client::UpstreamError;
use crate::http::client::fetch::TimedBody;
use crate::metrics::ai::{self as m, CallLabels, TokenCounts};
use crate::plugins::{TokenMeter, TokenUsage};

/// An AI answer's body.
#[derive(Debug)]
pub enum AiBody {
    Full(Option<Bytes>),
    Stream(Box<Relay>),
}

impl AiBody {
    pub fn full(b: Bytes) -> AiBody {
        AiBody::Full(Some(b))
    }
}

impl Body for AiBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            AiBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            AiBody::Stream(r) => r.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AiBody::Full(b) => b.is_none(),
            AiBody::Stream(r) => r.done && r.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AiBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            AiBody::Full(None) => SizeHint::with_exact(0),
            AiBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A complete JSON answer.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<AiBody> {
    let mut resp = Response::new(AiBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The client's answer to a request that failed.
pub fn error_response(e: &AiError) -> Response<AiBody> {
    let mut resp = json_response(e.status(), e.body());
    if let Some((name, value)) = e.headers() {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// What happens once an answer ends.
#[derive(Debug)]
pub struct End {
    pub route: Arc<str>,
    pub instance: Arc<str>,
    /// The model as metrics name it (bounded by configuration).
    pub model: Arc<str>,
    pub consumer: Option<Arc<str>>,
    pub meters: Vec<Box<dyn TokenMeter>>,
    /// When the request arrived.
    pub started: Instant,
    /// Prompt tokens charged when the provider never said.
    pub prompt_estimate: u64,
    pub facts: Option<Arc<Facts>>,
}

impl End {
    fn labels(&self) -> CallLabels<'_> {
        CallLabels {
            route: &self.route,
            instance: &self.instance,
            model: &self.model,
        }
    }

    /// Records the answer's time to first token.
    pub fn first_token(&self, at: Instant) {
        let ttft = at.saturating_duration_since(self.started);
        m::record_ttft(self.labels(), ttft);
        if let Some(f) = &self.facts {
            f.update(|r| r.ttft = Some(ttft));
        }
    }

    /// Accounts for the answer: what the provider reported, or an
    /// estimate from the prompt and the `completion_chars` sent.
    pub fn finish(
        self,
        usage: Option<TokenUsage>,
        completion_chars: u64,
        cut: Option<&'static str>,
    ) {
        let now = Instant::now();
        let usage = usage.unwrap_or(TokenUsage {
            prompt: self.prompt_estimate,
            completion: completion_chars.div_ceil(4),
        });
        let labels = self.labels();
        m::record_usage(
            labels,
            self.consumer.as_deref(),
            TokenCounts {
                prompt: usage.prompt,
                completion: usage.completion,
            },
        );
        m::record_duration(labels, now.saturating_duration_since(self.started));
        if let Some(reason) = cut {
            m::record_cut(&self.route, &self.instance, reason);
        }
        for meter in self.meters {
            meter.charge(usage);
        }
        if let Some(f) = &self.facts {
            f.update(|r| {
                r.usage = Some(usage);
                if let Some(c) = r.calls.last_mut() {
                    c.end = now;
                    c.usage = Some(usage);
                }
            });
        }
    }
}

/// A provider's stream relayed to the client.
#[derive(Debug)]
pub struct Relay {
    upstream: TimedBody,
    sse: sse::Decoder,
    decoder: Decoder,
    em: Emitter,
    /// Written while priming, sent first.
    pending: Option<Bytes>,
    done: bool,
    end: Option<End>,
    /// Re-frames the OpenAI chunks for the Messages front door.
    reframe: Option<Reframer>,
}

impl Relay {
    pub fn new(upstream: TimedBody, decoder: Decoder, em: Emitter) -> Relay {
        Relay {
            upstream,
            sse: sse::Decoder::default(),
            decoder,
            em,
            pending: None,
            done: false,
            end: None,
            reframe: None,
        }
    }

    /// Sends the answer as Anthropic Messages events instead of OpenAI
    /// chunks.
    pub fn reframe(&mut self) {
        self.reframe = Some(Reframer::new());
    }

    /// What goes to the client of `chunks`, if anything.
    fn out(&mut self, chunks: Bytes) -> Option<Bytes> {
        match &mut self.reframe {
            None => Some(chunks),
            Some(r) => r.feed(&chunks),
        }
    }

    /// When the first token went out (or the answer ended without one).
    pub fn first_token(&self) -> Option<Instant> {
        self.em.first_token
    }

    /// Reads until the first token (or a complete answer without one) is
    /// ready, by `deadline`. A stream that fails or ends before that is
    /// the provider's failure, and nothing reached the client.
    pub async fn prime(&mut self, deadline: Instant) -> Result<(), AiError> {
        loop {
            if self.em.first_token.is_some() || self.em.finished {
                self.pending = self.em.take();
                return Ok(());
            }
            if self.em.failed {
                return Err(AiError::failed(
                    Failure::ServerError,
                    "the provider's stream failed before its first token",
                ));
            }
            let frame = tokio::time::timeout_at(deadline.into(), self.upstream.frame()).await;
            match frame {
                Err(_) => {
                    return Err(AiError::failed(
                        Failure::Timeout,
                        "the provider sent no token in time",
                    ));
                }
                Ok(None) => {
                    self.decoder.end(&mut self.em);
                    if !self.em.finished {
                        return Err(AiError::failed(
                            Failure::ServerError,
                            "the provider's stream ended before its first token",
                        ));
                    }
                    self.done = true;
                }
                Ok(Some(Err(e))) => {
                    let failure = match e {
                        UpstreamError::Expired(_) => Failure::Timeout,
                        _ => Failure::ServerError,
                    };
                    return Err(AiError::failed(
                        failure,
                        "the provider's stream failed before its first token",
                    ));
                }
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data()
                        && let Err(e) = self.feed(&data)
                    {
                        return Err(AiError::failed(Failure::ServerError, e));
                    }
                }
            }
        }
    }

    /// Commits the relay: from now on its end is accounted for.
    pub fn arm(&mut self, end: End) {
        if self.done {
            end.finish(self.em.usage, self.em.completion_chars, None);
        } else {
            self.end = Some(end);
        }
    }

    /// Decodes the events a piece completes.
    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.sse.push(data);
        while let Some(ev) = self.sse.next_event().map_err(|e| e.to_string())? {
            if self.em.ended() {
                continue;
            }
            self.decoder.event(&ev, &mut self.em)?;
        }
        Ok(())
    }

    /// Reads what the provider already sent after the end of the answer
    /// (usually just the end of its body), without waiting, so that a
    /// connection that is done goes back to its pool.
    fn drain(&mut self, cx: &mut Context<'_>) {
        for _ in 0..4 {
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                _ => return,
            }
        }
    }

    /// Ends the relay, accounting for it.
    fn close(&mut self, cut: Option<&'static str>) {
        self.done = true;
        if let Some(end) = self.end.take() {
            end.finish(self.em.usage, self.em.completion_chars, cut);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        if let Some(p) = self.pending.take()
            && let Some(b) = self.out(p)
        {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        loop {
            if self.done {
                let last = self.em.take().and_then(|b| self.out(b));
                return Poll::Ready(last.map(|b| Ok(Frame::data(b))));
            }
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data()
                        && let Err(e) = self.feed(&data)
                    {
                        tracing::debug!(error = %e, "provider stream unreadable");
                        self.em
                            .error("the provider's stream could not be read", "stream_cut");
                        self.close(Some("unreadable"));
                    } else if self.em.failed {
                        self.close(Some("provider_error"));
                    } else if self.em.finished {
                        self.drain(cx);
                        self.close(None);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let (message, reason) = match e {
                        UpstreamError::Expired(_) => {
                            ("the answer took longer than the route allows", "timeout")
                        }
                        _ => ("the provider's stream failed", "provider_error"),
                    };
                    tracing::debug!(error = %e, "provider stream failed");
                    self.em.error(message, "stream_cut");
                    self.close(Some(reason));
                }
                Poll::Ready(None) => {
                    let clean = self.decoder.end(&mut self.em);
                    if !clean {
                        self.em
                            .error("the provider's stream ended early", "stream_cut");
                    }
                    self.close((!clean).then_some("incomplete"));
                }
            }
            if let Some(b) = self.em.take().and_then(|b| self.out(b)) {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
        }
    }
}

impl Drop for Relay {
    /// A relay dropped before its end: the client left. Dropping the
    /// provider's body closes its connection, which cancels the call.
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end.finish(
                self.em.usage,
                self.em.completion_chars,
                Some("client_closed"),
            );
        }
    }
}
