//! The request body as the upstream gets it: counted against the route's
//! limit as it streams, and with the client's own failures recorded, so
//! that the forwarding layer can tell a broken or abandoned body (the
//! client's fault) from a failing upstream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::proxy::error::{ClientFault, ProxyError};
use crate::proxy::server::{ClientBody, ClientBodyError};

/// A client's request body on its way to the upstream. With a limit
/// (`requestBodyLimit`), the bytes are counted as they stream: past the
/// limit the body fails, for good, and [`RequestBody::over_limit`]
/// resolves, so that the exchange can be abandoned with `413`.
#[derive(Debug)]
pub struct RequestBody {
    /// Taken only when the body is dropped.
    inner: Option<ClientBody>,
    limit: Option<Box<Limit>>,
    /// Where a failure of the client's is recorded; only for bodies that
    /// are still to be read.
    fault: Option<FaultProbe>,
    /// What [`RequestBody::settle`] read, given out first.
    first: Option<Box<Result<Frame<Bytes>, ClientBodyError>>>,
}

/// Tells whether, and how, the client failed its request body. Shared
/// between the body, wherever it is being read, and the forwarding layer.
#[derive(Clone, Debug, Default)]
pub struct FaultProbe(Arc<Fault>);

#[derive(Debug, Default)]
struct Fault {
    kind: AtomicU8,
    limit: AtomicU64,
    /// Body bytes read from the client so far.
    received: AtomicU64,
}

impl FaultProbe {
    const NONE: u8 = 0;
    const FRAMING: u8 = 1;
    const ABORTED: u8 = 2;
    const TOO_LARGE: u8 = 3;

    fn set(&self, kind: u8) {
        let _ =
            self.0
                .kind
                .compare_exchange(Self::NONE, kind, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn record(&self, e: &ClientBodyError) {
        self.set(if e.is_framing() {
            Self::FRAMING
        } else {
            Self::ABORTED
        });
    }

    fn too_large(&self, limit: u64) {
        self.0.limit.store(limit, Ordering::Relaxed);
        self.set(Self::TOO_LARGE);
    }

    /// Body bytes read from the client so far.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }

    /// What the body's failure means for the request, if it failed on the
    /// client's side: its own broken or abandoned body, or one over the
    /// route's limit.
    pub fn error(&self) -> Option<ProxyError> {
        match self.0.kind.load(Ordering::Relaxed) {
            Self::FRAMING => Some(ProxyError::Client(ClientFault::Framing)),
            Self::ABORTED => Some(ProxyError::Client(ClientFault::Aborted)),
            Self::TOO_LARGE => Some(ProxyError::BodyTooLarge {
                limit: self.0.limit.load(Ordering::Relaxed),
            }),
            _ => None,
        }
    }
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
        let fault = (!inner.is_end_stream()).then(FaultProbe::default);
        RequestBody {
            inner: Some(inner),
            limit,
            fault,
            first: None,
        }
    }

    /// Looks at an HTTP/2 or HTTP/3 body without waiting. Those protocols
    /// may mark a request's end after its head (an empty DATA frame with
    /// END_STREAM, a QUIC FIN of its own), so a `GET` is not known to have
    /// no body when its head arrives. A body that has already ended
    /// becomes none: both upstream clients then send the request without
    /// body framing (rather than a chunked framing of nothing) and may
    /// retry it. A frame read here is given out first. HTTP/1.1 bodies are
    /// framed by their head and not looked at.
    pub async fn settle(&mut self) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        let may_end_here = matches!(inner, ClientBody::Hyper(_) | ClientBody::H3(_))
            && !inner.is_end_stream()
            && inner.size_hint().exact().is_none_or(|n| n == 0);
        if !may_end_here {
            return;
        }
        let polled = std::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(Bytes::is_empty) => {}
                    polled => return Poll::Ready(polled),
                }
            }
        })
        .await;
        match polled {
            Poll::Ready(None) => {
                self.inner = Some(ClientBody::Empty);
                self.fault = None;
            }
            Poll::Ready(Some(frame)) => self.first = Some(Box::new(frame)),
            Poll::Pending => {}
        }
    }

    /// Where the client's failures of this body are recorded; `None` for
    /// a body already complete.
    pub fn fault_probe(&self) -> Option<FaultProbe> {
        self.fault.clone()
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
        let frame = match this.first.take() {
            Some(first) => Some(*first),
            None => ready!(Pin::new(inner).poll_frame(cx)),
        };
        if let Some(probe) = &this.fault {
            match &frame {
                Some(Err(e)) => probe.record(e),
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        probe
                            .0
                            .received
                            .fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                None => {}
            }
        }
        if let (Some(Ok(f)), Some(limit)) = (&frame, this.limit.as_mut())
            && let Some(data) = f.data_ref()
        {
            limit.seen = limit.seen.saturating_add(data.len() as u64);
            if limit.seen > limit.max {
                limit.exceeded = true;
                if let Some(probe) = &this.fault {
                    probe.too_large(limit.max);
                }
                if let Some(tx) = limit.signal.take() {
                    let _ = tx.send(limit.max);
                }
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge(limit.max))));
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(RequestBodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.exceeded().is_none()
            && self.first.is_none()
            && self.inner.as_ref().is_none_or(Body::is_end_stream)
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
