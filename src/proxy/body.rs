//! Response bodies: streamed from an upstream, or generated locally.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::upstream::{UpstreamBody, UpstreamError};

/// The body the proxy answers with.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from an upstream as the client reads it. Boxed: it is
    /// large, and most responses are small enough to be `Full`.
    Upstream(Box<UpstreamBody>),
    /// A complete body: small upstream responses, and answers produced by
    /// the gateway itself (errors, admin pages).
    Full(Option<Bytes>),
    /// Streamed from a backend reached through hyper's client (TLS,
    /// HTTP/2), trailers included.
    Hyper(hyper::body::Incoming),
    /// Another body, with what must be held until it is finished (a
    /// rate limiter's in-flight slot).
    Guarded(Box<ResponseBody>, Guards),
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
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b.as_mut()).poll_frame(cx),
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            ResponseBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(UpstreamError::Hyper),
            ResponseBody::Guarded(b, _) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Hyper(b) => b.is_end_stream(),
            ResponseBody::Guarded(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Hyper(b) => b.size_hint(),
            ResponseBody::Guarded(b, _) => b.size_hint(),
        }
    }
}
