//! Response bodies: streamed from an upstream, or generated locally; and
//! the request body as the upstream gets it, counted against a limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

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

/// A client's request body on its way to the upstream. With a limit
/// (`requestBodyLimit`), the bytes are counted as they stream: past the
/// limit the body fails, for good, and [`RequestBody::over_limit`]
/// resolves, so that the exchange can be abandoned with `413`.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: Option<Box<Limit>>,
}

#[derive(Debug)]
struct Limit {
    max: u64,
    seen: u64,
    exceeded: bool,
    signal: Option<oneshot::Sender<u64>>,
    over: Option<oneshot::Receiver<u64>>,
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error(transparent)]
    Client(#[from] hyper::Error),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

impl RequestBody {
    pub fn new(inner: Incoming, max: Option<u64>) -> RequestBody {
        let limit = max.map(|max| {
            let (tx, rx) = oneshot::channel();
            Box::new(Limit {
                max,
                seen: 0,
                exceeded: false,
                signal: Some(tx),
                over: Some(rx),
            })
        });
        RequestBody { inner, limit }
    }

    /// Resolves, to the limit, once the body has passed it; never without
    /// one.
    pub fn over_limit(&mut self) -> OverLimit {
        OverLimit(self.limit.as_mut().and_then(|l| l.over.take()))
    }

    /// The limit, once the body has passed it.
    pub fn exceeded(&self) -> Option<u64> {
        self.limit.as_ref().filter(|l| l.exceeded).map(|l| l.max)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(max) = this.exceeded() {
            return Poll::Ready(Some(Err(RequestBodyError::TooLarge(max))));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let (Some(Ok(f)), Some(limit)) = (&frame, this.limit.as_mut())
            && let Some(data) = f.data_ref()
        {
            limit.seen = limit.seen.saturating_add(data.len() as u64);
            if limit.seen > limit.max {
                limit.exceeded = true;
                if let Some(tx) = limit.signal.take() {
                    let _ = tx.send(limit.max);
                }
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge(limit.max))));
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(RequestBodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.exceeded().is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// See [`RequestBody::over_limit`].
pub struct OverLimit(Option<oneshot::Receiver<u64>>);

impl Future for OverLimit {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let Some(rx) = self.0.as_mut() else {
            return Poll::Pending;
        };
        match ready!(Pin::new(rx).poll(cx)) {
            Ok(max) => Poll::Ready(max),
            // The body was dropped within its limit.
            Err(_) => {
                self.0 = None;
                Poll::Pending
            }
        }
    }
}
