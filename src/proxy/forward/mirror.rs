//! `RequestMirror`: a copy of a request goes to another upstream, and the
//! answer is thrown away.
//!
//! A mirror must never slow down or fail the request it copies, so:
//! - only requests without a body are mirrored (a copy of a streaming
//!   body would have to be buffered or would hold the client's pace to the
//!   mirror's); others are counted as `skipped_body`;
//! - the copy runs in a task of its own, after its head is encoded, and
//!   the request goes on at once;
//! - at most [`MAX_IN_FLIGHT`] copies are in flight in the process; past
//!   that, copies are dropped and counted;
//! - the copy's answer is read up to [`MAX_DRAIN`] bytes, so that its
//!   connection can go back to the pool, then dropped.
//!
//! A copy carries the same head the upstream gets (after the route's
//! filters), with the same deadlines.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::Worker;
use super::head::ForwardHead;
use crate::http::client::{self, Deadlines, Outgoing};
use crate::metrics::MIRRORED;
use crate::routing::{LoadBalancer, Mirror, PickInput, Route};

/// Copies in flight at most, in the whole process.
pub const MAX_IN_FLIGHT: usize = 256;
/// Bytes of a mirror's answer read before it is dropped.
pub const MAX_DRAIN: usize = 64 * 1024;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

fn count(result: &'static str) {
    metrics::counter!(MIRRORED, "result" => result).increment(1);
}

/// Whether this request is one of the mirror's share.
fn sampled(m: &Mirror) -> bool {
    m.numerator >= m.denominator || fastrand::u32(0..m.denominator) < m.numerator
}

/// Starts the route's mirrors for a request with head `head`; returns
/// before any of them is sent.
pub(super) async fn start(
    worker: &Worker,
    route: &Route,
    head: &ForwardHead<'_>,
    bodiless: bool,
    deadlines: Deadlines,
) {
    for m in route.mirrors.iter().filter(|m| sampled(m)) {
        if !bodiless {
            count("skipped_body");
            continue;
        }
        if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
            count("dropped");
            continue;
        }
        let input = PickInput {
            now: deadlines.started,
            hash: 0,
            exclude: &[],
        };
        let Some(endpoint) = m.upstream.pick(&LoadBalancer::default(), &input) else {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
            count("failed");
            continue;
        };
        // An empty body is complete at once: this only encodes the head.
        let Ok(mut out) = Outgoing::prepare(head, Empty::<Bytes>::new()).await else {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
            count("failed");
            continue;
        };
        let pool = worker.pool.clone();
        tokio::spawn(async move {
            match client::send(&pool, &endpoint, &mut out, deadlines).await {
                Ok(resp) => {
                    count("sent");
                    let mut body = resp.into_body();
                    let mut read = 0;
                    while read <= MAX_DRAIN {
                        match body.frame().await {
                            Some(Ok(frame)) => {
                                read += frame.data_ref().map_or(0, Bytes::len);
                            }
                            _ => break,
                        }
                    }
                }
                Err(_) => count("failed"),
            }
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
