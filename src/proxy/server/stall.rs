//! HTTP/2 streams as their connection's supervisor sees them: how many
//! are open, when the last one ended, and whether one has stopped moving.
//!
//! A client that keeps its connection but stops granting flow-control
//! window to one stream leaves that stream's response body unpolled: hyper
//! writes nothing it has no window for. The body, and with it the
//! upstream connection and the endpoint's in-flight slot, would then be
//! held for as long as the client likes. Each stream's body is therefore
//! held in a slot the supervisor can empty: once a stream has waited for
//! the client longer than its send timeout, its body is dropped, which
//! releases the upstream side; the stream itself ends when hyper next
//! looks at it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::http::client::UpstreamError;

/// The streams of one HTTP/2 connection.
pub struct Streams {
    origin: Instant,
    /// Woken when a response starts streaming, so that the supervisor
    /// starts watching for stalls.
    pub streaming: tokio::sync::Notify,
    open: AtomicUsize,
    /// Whether any stream was ever opened.
    opened: AtomicBool,
    /// When the last stream ended, in milliseconds since `origin`.
    last_end: AtomicU64,
    bodies: Mutex<Vec<Weak<Slot>>>,
}

impl Streams {
    pub fn new(origin: Instant) -> Arc<Self> {
        Arc::new(Streams {
            origin,
            streaming: tokio::sync::Notify::new(),
            open: AtomicUsize::new(0),
            opened: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
            bodies: Mutex::new(Vec::new()),
        })
    }

    /// Counts a stream open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened.store(true, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    pub fn ever_opened(&self) -> bool {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn is_idle(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0
    }

    /// When the connection last became idle.
    pub fn idle_since(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_end.load(Ordering::Relaxed))
    }

    /// Holds `body` where [`Streams::release_stalled`] can reach it.
    pub fn watch<B>(self: &Arc<Self>, body: B, send_timeout: Duration) -> Watched<B>
    where
        B: Body<Data = Bytes, Error = UpstreamError> + Send + Unpin + 'static,
    {
        let slot = Arc::new(Slot {
            body: Mutex::new(Some(Box::new(body))),
            waiting_since: AtomicU64::new(0),
            send_timeout,
        });
        let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies.retain(|w| w.strong_count() > 0);
        bodies.push(Arc::downgrade(&slot));
        drop(bodies);
        self.streaming.notify_one();
        Watched {
            slot,
            origin: self.origin,
            _open: self.open(),
            _marker: std::marker::PhantomData,
        }
    }

    /// Drops the bodies of streams that have waited for the client longer
    /// than their send timeout; returns how many.
    pub fn release_stalled(&self, now: Instant) -> usize {
        let now_ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        let mut released = 0;
        for slot in bodies.iter().filter_map(Weak::upgrade) {
            let since = slot.waiting_since.load(Ordering::Relaxed);
            if since == 0 || now_ms < since - 1 + slot.send_timeout.as_millis() as u64 {
                continue;
            }
            let taken = slot
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if taken.is_some() {
                released += 1;
            }
        }
        released
    }

    /// Whether some stream's body is waiting for the client.
    #[cfg(test)]
    fn any_waiting(&self) -> bool {
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies
            .iter()
            .filter_map(Weak::upgrade)
            .any(|s| s.waiting_since.load(Ordering::Relaxed) != 0)
    }
}

/// A stream counted open.
pub struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = s.origin.elapsed().as_millis() as u64;
        s.last_end.store(ms, Ordering::Relaxed);
        s.open.fetch_sub(1, Ordering::Relaxed);
    }
}

type Inner = Box<dyn Body<Data = Bytes, Error = UpstreamError> + Send + Unpin>;

struct Slot {
    body: Mutex<Option<Inner>>,
    /// Since when (milliseconds since the origin, plus one) a frame has
    /// been handed to hyper without it asking for the next; 0 when it is
    /// asking.
    waiting_since: AtomicU64,
    send_timeout: Duration,
}

/// A stream's response body, held in a slot the supervisor can empty.
pub struct Watched<B> {
    slot: Arc<Slot>,
    origin: Instant,
    _open: OpenStream,
    _marker: std::marker::PhantomData<fn() -> B>,
}

impl<B> std::fmt::Debug for Watched<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

impl<B> Body for Watched<B> {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        let slot = &this.slot;
        slot.waiting_since.store(0, Ordering::Relaxed);
        let mut body = slot.body.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(inner) = body.as_mut() else {
            return Poll::Ready(Some(Err(UpstreamError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            )))));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            let ms = this.origin.elapsed().as_millis() as u64 + 1;
            slot.waiting_since.store(ms, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.slot
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.slot
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Endless;

    impl Body for Endless {
        type Data = Bytes;
        type Error = UpstreamError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_not_polled_for_its_send_timeout_loses_its_body() {
        let streams = Streams::new(Instant::now());
        let mut body = streams.watch(Endless, Duration::from_secs(10));
        assert!(!streams.is_idle());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.unwrap().is_ok());
        assert!(streams.any_waiting());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(streams.release_stalled(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(streams.release_stalled(Instant::now()), 1);
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.unwrap().is_err());
        drop(body);
        assert!(streams.is_idle());
    }
}
