//! Bodies as the forwarding layer handles them: the response a client
//! gets, and the request body an upstream gets. Each wrapper is one
//! concept in a file of its own:
//! - [`request`]: the request body, counted against its limit, with the
//!   client's faults recorded for the forwarding layer;
//! - [`tracked`]: a response counted in flight on its endpoint until it
//!   ends, and cut when the upstream goes quiet;
//! - [`encoded`]: a response compressed as it streams;
//! - [`observed`]: a response whose size and end are reported (metrics,
//!   access log, spans);
//! - guarded (here): a response that holds something until it ends.

mod encoded;
mod observed;
mod request;
mod tracked;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, header};
use http_body::{Body, Frame, SizeHint};

pub use encoded::EncodedBody;
pub use observed::{Observed, OnEnd};
pub use request::{FaultProbe, OverLimit, RequestBody};
pub use tracked::Tracked;

use super::error::ProxyError;
use crate::http::client::{UpstreamBody, UpstreamError};
use crate::plugins::transform::compress::Encoder;

/// The body the proxy answers with.
#[derive(Debug)]
pub enum ResponseBody {
    /// A complete body: small upstream responses, and answers produced by
    /// the gateway itself (errors, admin pages).
    Full(Option<Bytes>),
    /// Streamed from an upstream as the client reads it.
    Upstream(UpstreamBody),
    /// Another body, with what must be held until it is finished (a
    /// rate limiter's in-flight slot).
    Guarded(Box<ResponseBody>, Guards),
    /// Another body, compressed as it streams (`gzip`, `brotli`).
    Encoded(Box<EncodedBody>),
    /// A streamed upstream body, counted in flight on its endpoint until
    /// it ends, and cut when the upstream goes quiet for too long.
    Tracked(Box<Tracked>),
    /// A body of unknown size, counted, whose end is reported.
    Observed(Box<Observed>),
}

/// Held for as long as a response body is being sent.
pub type Guards = Box<[Box<dyn std::any::Any + Send + Sync>]>;

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    /// An upstream's body; a complete one is held as such.
    pub fn upstream(body: UpstreamBody) -> Self {
        match body {
            UpstreamBody::Complete(b) => ResponseBody::Full(b),
            other => ResponseBody::Upstream(other),
        }
    }

    /// `body` compressed by `encoder`.
    pub fn encoded(body: ResponseBody, encoder: Encoder) -> Self {
        ResponseBody::Encoded(Box::new(EncodedBody::new(body, encoder)))
    }
}

/// The plain-text answer for a request that failed.
pub fn error_response(e: &ProxyError) -> Response<ResponseBody> {
    let status = e.status();
    let body = format!(
        "{} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        e.client_text()
    );
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Guarded(b, _) => Pin::new(b.as_mut()).poll_frame(cx),
            ResponseBody::Tracked(t) => t.poll(cx),
            ResponseBody::Encoded(b) => b.poll_encoded(cx),
            ResponseBody::Observed(o) => o.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Guarded(b, _) => b.is_end_stream(),
            ResponseBody::Tracked(t) => t.is_end_stream(),
            ResponseBody::Encoded(b) => b.is_done(),
            ResponseBody::Observed(o) => o.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Guarded(b, _) => b.size_hint(),
            ResponseBody::Tracked(t) => t.size_hint(),
            ResponseBody::Encoded(_) => SizeHint::default(),
            ResponseBody::Observed(o) => o.size_hint(),
        }
    }
}
