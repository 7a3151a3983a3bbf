//! Response bodies: streamed from an upstream, or generated locally.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use tokio::time::Sleep;

use super::upstream::{UpstreamBody, UpstreamError};
use crate::routing::InFlight;

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
    /// A streamed upstream body, counted in flight on its endpoint until
    /// it ends, and cut when the upstream goes quiet for too long.
    Tracked(Box<Tracked>),
}

/// See [`ResponseBody::Tracked`].
#[derive(Debug)]
pub struct Tracked {
    inner: ResponseBody,
    in_flight: Option<InFlight>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Tracked {
    pub fn wrap(inner: ResponseBody, in_flight: InFlight, idle: Option<Duration>) -> ResponseBody {
        ResponseBody::Tracked(Box::new(Tracked {
            inner,
            in_flight: Some(in_flight),
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        }))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Pending => {
                if let Some((limit, sleep)) = &mut self.idle
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    self.in_flight = None;
                    return Poll::Ready(Some(Err(UpstreamError::Idle(*limit))));
                }
            }
            Poll::Ready(Some(Ok(_))) => {
                if let Some((limit, sleep)) = &mut self.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *limit);
                }
            }
            Poll::Ready(_) => self.in_flight = None,
        }
        if self.inner.is_end_stream() {
            self.in_flight = None;
        }
        res
    }
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
            ResponseBody::Tracked(t) => t.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Hyper(b) => b.is_end_stream(),
            ResponseBody::Guarded(b, _) => b.is_end_stream(),
            ResponseBody::Tracked(t) => t.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Hyper(b) => b.size_hint(),
            ResponseBody::Guarded(b, _) => b.size_hint(),
            ResponseBody::Tracked(t) => t.inner.size_hint(),
        }
    }
}
