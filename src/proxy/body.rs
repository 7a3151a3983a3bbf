//! Response bodies: streamed from an upstream, or generated locally.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::Checkin;

/// The body the proxy answers with.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from an upstream; the connection goes back to the pool once
    /// the body has been read to its end.
    Upstream(UpstreamBody),
    /// A complete body produced by the gateway (errors, admin pages).
    Full(Option<Bytes>),
}

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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// An upstream response body that returns its connection to the pool when
/// it has been read completely. A body dropped early (client gone) takes
/// its connection with it, because the rest of the response would still be
/// in flight on it.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    checkin: Option<Checkin>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, checkin: Option<Checkin>) -> Self {
        UpstreamBody { inner, checkin }
    }

    fn finish(&mut self) {
        if let Some(c) = self.checkin.take() {
            c.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.checkin = None,
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}
