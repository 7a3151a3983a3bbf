//! A response body whose end is observed: the bytes it carried are
//! counted, and whoever wanted to know (the route's size metric, the
//! access log, the request's spans) is told once it ends, or is dropped
//! by a client that left.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::ResponseBody;
use crate::http::client::UpstreamError;

/// Told once when a response body ends.
pub trait OnEnd: Send + Sync {
    /// `bytes` of body were sent; `complete` says whether it ended as it
    /// should (not cut by an error or a client that left).
    fn end(self: Box<Self>, bytes: u64, complete: bool);
}

/// See the module documentation.
pub struct Observed {
    inner: ResponseBody,
    bytes: u64,
    on_end: Option<Box<dyn OnEnd>>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Observed {
    pub fn wrap(inner: ResponseBody, on_end: Box<dyn OnEnd>) -> ResponseBody {
        ResponseBody::Observed(Box::new(Observed {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }))
    }

    fn end(&mut self, complete: bool) {
        if let Some(e) = self.on_end.take() {
            e.end(self.bytes, complete);
        }
    }

    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.end(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(false),
            Poll::Ready(None) => self.end(true),
            Poll::Pending => {}
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

impl Drop for Observed {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.end(complete);
    }
}
