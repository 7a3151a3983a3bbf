//! A response body copied into a sink as it streams to the client: the
//! proxy cache stores an upstream response, and shares it with requests
//! waiting for it, while its client reads it, without holding the body
//! back until it is complete.
//!
//! If the client goes away before the end, the rest of the body is still
//! read (in a task of its own) when the sink wants it: other requests may
//! be following it, and a complete body can still be stored.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::ResponseBody;
use crate::http::client::UpstreamError;

/// Where a teed body goes.
pub trait Sink: Send + Sync + std::fmt::Debug {
    fn data(&mut self, chunk: &Bytes);
    /// The body ended completely.
    fn end(self: Box<Self>);
    /// The body failed (or was abandoned).
    fn fail(self: Box<Self>);
    /// Whether the body is still worth reading without a client.
    fn wants_rest(&self) -> bool;
}

/// See the module documentation.
#[derive(Debug)]
pub struct Tee {
    inner: ResponseBody,
    sink: Option<Box<dyn Sink>>,
}

impl Tee {
    pub fn wrap(inner: ResponseBody, sink: Box<dyn Sink>) -> ResponseBody {
        ResponseBody::Tee(Box::new(Tee {
            inner,
            sink: Some(sink),
        }))
    }

    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(sink), Some(data)) = (&mut self.sink, frame.data_ref()) {
                    sink.data(data);
                }
                if self.inner.is_end_stream()
                    && let Some(sink) = self.sink.take()
                {
                    sink.end();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(sink) = self.sink.take() {
                    sink.fail();
                }
            }
            Poll::Ready(None) => {
                if let Some(sink) = self.sink.take() {
                    sink.end();
                }
            }
        }
        polled
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        if !sink.wants_rest() {
            sink.fail();
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            sink.fail();
            return;
        };
        let mut rest = Tee {
            inner: std::mem::replace(&mut self.inner, ResponseBody::empty()),
            sink: Some(sink),
        };
        rt.spawn(async move {
            while let Some(frame) = std::future::poll_fn(|cx| rest.poll(cx)).await {
                if frame.is_err() {
                    break;
                }
            }
        });
    }
}
