//! Response bodies: streamed from an upstream, or generated locally,
//! possibly compressed on the way; and the request body as the upstream
//! gets it, counted against a limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use tokio::time::Sleep;

use super::client::{ClientBody, ClientBodyError};
use super::upstream::{UpstreamBody, UpstreamError};
use crate::plugins::transform::compress::{self, Encoder};
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
    /// Another body, compressed as it streams (`gzip`, `brotli`).
    Encoded(Box<EncodedBody>),
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

    /// `body` compressed by `encoder`.
    pub fn encoded(body: ResponseBody, encoder: Encoder) -> Self {
        ResponseBody::Encoded(Box::new(EncodedBody {
            inner: body,
            encoder,
            state: EncodeState::Streaming,
        }))
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
            ResponseBody::Encoded(b) => b.poll_encoded(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Hyper(b) => b.is_end_stream(),
            ResponseBody::Guarded(b, _) => b.is_end_stream(),
            ResponseBody::Tracked(t) => t.inner.is_end_stream(),
            ResponseBody::Encoded(b) => matches!(b.state, EncodeState::Done),
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
            ResponseBody::Encoded(_) => SizeHint::default(),
        }
    }
}

/// A response body compressed frame by frame. Compressed bytes are passed
/// on whenever the upstream pauses (flushed, so that the client can decode
/// them at once: server-sent events are not held back) or once enough
/// have gathered; the whole body is never buffered. Trailers follow the
/// end of the compressed stream.
#[derive(Debug)]
pub struct EncodedBody {
    inner: ResponseBody,
    encoder: Encoder,
    state: EncodeState,
}

#[derive(Debug)]
enum EncodeState {
    Streaming,
    /// The compressed stream is complete; the upstream's trailers remain.
    Trailers(HeaderMap),
    Done,
}

impl EncodedBody {
    fn poll_encoded(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let data = |b: Bytes| Poll::Ready(Some(Ok(Frame::data(b))));
        loop {
            match std::mem::replace(&mut self.state, EncodeState::Done) {
                EncodeState::Done => return Poll::Ready(None),
                EncodeState::Trailers(t) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                EncodeState::Streaming => self.state = EncodeState::Streaming,
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => {
                        self.encoder.write(&bytes)?;
                        if compress::worth_sending(&self.encoder) {
                            return data(self.encoder.take());
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let out = self.encoder.finish()?;
                            self.state = EncodeState::Trailers(trailers);
                            if !out.is_empty() {
                                return data(out);
                            }
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.state = EncodeState::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.state = EncodeState::Done;
                    let out = self.encoder.finish()?;
                    return if out.is_empty() {
                        Poll::Ready(None)
                    } else {
                        data(out)
                    };
                }
                // The upstream has nothing more for now: what it sent so
                // far goes out decodable rather than waiting for more.
                Poll::Pending => {
                    let out = self.encoder.flush()?;
                    return if out.is_empty() {
                        Poll::Pending
                    } else {
                        data(out)
                    };
                }
            }
        }
    }
}

/// A client's request body on its way to the upstream. With a limit
/// (`requestBodyLimit`), the bytes are counted as they stream: past the
/// limit the body fails, for good, and [`RequestBody::over_limit`]
/// resolves, so that the exchange can be abandoned with `413`.
#[derive(Debug)]
pub struct RequestBody {
    /// Taken only when the body is dropped.
    inner: Option<ClientBody>,
    limit: Option<Box<Limit>>,
}

/// What a client still sends after its body was refused is read and
/// dropped, up to this much for up to [`LINGER_TIME`], as nginx's
/// lingering close does: closing with unread data would reset the
/// connection, and an HTTP/1.1 client still sending could lose its `413`.
const LINGER_BYTES: u64 = 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

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
    Client(#[from] ClientBodyError),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

impl RequestBody {
    pub fn new(inner: ClientBody, max: Option<u64>) -> RequestBody {
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
        RequestBody {
            inner: Some(inner),
            limit,
        }
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
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
        self.exceeded().is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.exceeded().is_none() {
            return;
        }
        let Some(mut rest) = self.inner.take().filter(|b| !b.is_end_stream()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut read = 0u64;
                while let Some(Ok(frame)) =
                    std::future::poll_fn(|cx| Pin::new(&mut rest).poll_frame(cx)).await
                {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
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
