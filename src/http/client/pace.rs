//! How long an exchange may wait while its request body still streams.
//!
//! The request timeout bounds the wait for an upstream's response head.
//! Counted from the request's start, it also ran while the client was
//! still uploading: a large file over a slow link got 504 however steadily
//! it moved, and the timeout was blamed on the endpoint, so a few slow
//! uploads could eject a healthy pod. So while the body streams only time
//! without progress counts: each chunk taken from the client restarts the
//! clock, and once the body is complete the upstream has the whole timeout
//! for its answer.
//!
//! When the clock runs out while the body streams, the side that stalled
//! is at fault: the client, if the gateway was waiting for its next bytes
//! (408, never counted against the endpoint); the upstream, if it had
//! stopped taking them (504).
//!
//! The body is read by another task than the one that waits (the
//! HTTP/1.1 client's body writer, or hyper's connection), so what it did
//! is kept in atomics.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// What a request body did, for the deadline of its exchange.
#[derive(Debug)]
pub struct Pace {
    /// The request's start; `last` counts from it.
    epoch: Instant,
    /// Microseconds from `epoch` to the last progress: a chunk taken from
    /// the client, or the body's end.
    last: AtomicU64,
    done: AtomicBool,
    /// Whether the body's reader is waiting for the client's next bytes.
    waiting: AtomicBool,
}

/// Who let a streaming body stall past the timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stalled {
    Client,
    Upstream,
}

impl Pace {
    /// The pace of a body whose request started at `started`.
    pub fn new(started: std::time::Instant) -> Arc<Pace> {
        Arc::new(Pace {
            epoch: Instant::from_std(started),
            last: AtomicU64::new(0),
            done: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        })
    }

    fn mark(&self) {
        let us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.fetch_max(us, Ordering::Relaxed);
    }

    /// When a wait that started at the request's start with `timeout`
    /// ends now: `Ok` with the new deadline when the body moved since (or
    /// ended, which gives the upstream `timeout` from then), `Err` with
    /// who stalled when the time is up.
    pub fn recheck(&self, timeout: Duration, now: Instant) -> Result<Instant, Stalled> {
        let last = self.epoch + Duration::from_micros(self.last.load(Ordering::Relaxed));
        let deadline = last + timeout;
        if deadline > now {
            return Ok(deadline);
        }
        if !self.done.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed) {
            Err(Stalled::Client)
        } else {
            Err(Stalled::Upstream)
        }
    }
}

/// A request body that reports its progress to a [`Pace`], when it has
/// one (a body that is already complete needs none).
#[derive(Debug)]
pub struct Paced<B> {
    inner: B,
    pace: Option<Arc<Pace>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: Option<Arc<Pace>>) -> Self {
        Paced { inner, pace }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Paced<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Some(pace) = &self.pace else {
            return polled;
        };
        match &polled {
            Poll::Pending => pace.waiting.store(true, Ordering::Relaxed),
            Poll::Ready(Some(Ok(_))) => {
                if self.inner.is_end_stream() {
                    pace.done.store(true, Ordering::Relaxed);
                }
                pace.waiting.store(false, Ordering::Relaxed);
                pace.mark();
            }
            Poll::Ready(Some(Err(_))) => pace.waiting.store(false, Ordering::Relaxed),
            Poll::Ready(None) => {
                pace.done.store(true, Ordering::Relaxed);
                pace.waiting.store(false, Ordering::Relaxed);
                pace.mark();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body whose chunks come from a channel: the client.
    struct Client(mpsc::Receiver<Bytes>);

    impl Body for Client {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn progress_moves_the_deadline_and_a_stall_names_who_stalled() {
        let t = Duration::from_secs(10);
        let start = Instant::now();
        let pace = Pace::new(start.into_std());
        let (tx, rx) = mpsc::channel(4);
        let mut paced = Paced::new(Client(rx), Some(pace.clone()));
        let at = |s: u64| start + Duration::from_secs(s);

        // Nothing read yet: the deadline is the request's own, and once it
        // passes the upstream is at fault (it never asked for the body).
        assert_eq!(pace.recheck(t, start), Ok(at(10)));
        assert_eq!(pace.recheck(t, at(10)), Err(Stalled::Upstream));

        // Waiting for the client, which sends a chunk 8 s in.
        assert!(futures_util::poll!(paced.frame()).is_pending());
        assert_eq!(pace.recheck(t, at(10)), Err(Stalled::Client));
        tokio::time::advance(Duration::from_secs(8)).await;
        tx.send(Bytes::from_static(b"x")).await.unwrap(); // ok: test code
        assert!(paced.frame().await.is_some());
        assert_eq!(pace.recheck(t, at(10)), Ok(at(18)));

        // The body ends 5 s later: the upstream has the whole timeout.
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(tx);
        assert!(paced.frame().await.is_none());
        assert_eq!(pace.recheck(t, at(20)), Ok(at(23)));
        assert_eq!(pace.recheck(t, at(23)), Err(Stalled::Upstream));
    }
}
