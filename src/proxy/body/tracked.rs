//! A response body counted in flight on the endpoint that sends it, and
//! cut when the upstream goes quiet for longer than the route allows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::ResponseBody;
use crate::http::client::UpstreamError;
use crate::routing::InFlight;

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

    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
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

    pub(super) fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
