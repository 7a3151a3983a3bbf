//! A response body the proxy cache streams from elsewhere than the
//! upstream: another request's upstream response (coalesced requests
//! follow it as it arrives), or a large entry read from disk as the
//! client reads it.

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::cache::flight::Follow;
use crate::cache::store::disk::FileBody;
use crate::http::client::UpstreamError;

/// See the module documentation.
#[derive(Debug)]
pub enum Follower {
    /// Another request's response, with its length when known.
    Flight(Follow, Option<u64>),
    File(FileBody),
}

impl Follower {
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let polled = match self {
            Follower::Flight(f, _) => f.poll_next(cx).map(|o| {
                o.map(|r| {
                    r.map_err(|e| {
                        UpstreamError::Io(std::io::Error::new(std::io::ErrorKind::Interrupted, e))
                    })
                })
            }),
            Follower::File(f) => f
                .poll_next(cx)
                .map(|o| o.map(|r| r.map_err(UpstreamError::Io))),
        };
        polled.map(|o| o.map(|r| r.map(Frame::data)))
    }

    pub(super) fn is_end_stream(&self) -> bool {
        match self {
            Follower::Flight(f, _) => f.is_end(),
            Follower::File(f) => f.is_empty() || f.is_end(),
        }
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        match self {
            Follower::Flight(_, Some(n)) => SizeHint::with_exact(*n),
            Follower::Flight(_, None) => SizeHint::default(),
            Follower::File(f) => SizeHint::with_exact(f.len()),
        }
    }
}
