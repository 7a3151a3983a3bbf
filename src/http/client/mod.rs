//! The upstream side: a lean HTTP/1.1 client that runs inside the
//! request's own task, hyper for TLS and HTTP/2 backends, and
//! [`fetch`] for the gateway's own calls.
//!
//! One request is one exchange on one connection: write the head (and a
//! small body in the same write), read the response head, then stream the
//! response body as the caller reads it. A longer request body is written
//! by a helper task so that request and response can flow at the same time.
//! Compared with a general-purpose client there is no connection task and
//! no channel between tasks on the way, which is most of the per-request
//! cost of proxying.

mod body;
mod conn;
pub mod fetch;
mod hyper;
mod pace;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::{Body, Frame};
use tokio::io::AsyncWriteExt;
use tracing::debug;

pub use self::hyper::{Clients, Protocol, Tls, send as send_with_protocol};
pub use body::{Switched, UpstreamBody};
pub use conn::{Peer, Pool, PoolConfig};

use super::io::Source;
use super::timer::LazyDeadline;
use super::wire::{self, BodyFraming, RequestFraming, ResponseHead, WireError};
use conn::Conn;
use pace::{Pace, Paced, Stalled};

/// Why an exchange with an upstream failed after connecting.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("connection closed before a response arrived")]
    ClosedEarly,
    #[error("connection closed in the middle of the response body")]
    Truncated,
    #[error("the client's request body failed")]
    ClientBody,
    #[error("the client sent none of the rest of its body for {0:?}")]
    ClientBodyStalled(Duration),
    #[error(transparent)]
    Hyper(#[from] ::hyper::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("no response bytes for {0:?}")]
    Idle(Duration),
    #[error("unexpected 101 response")]
    UnexpectedSwitch,
    #[error("a 101 response that does not complete the WebSocket handshake asked for")]
    InvalidSwitch,
    #[error("the response took longer than {0:?}")]
    Expired(Duration),
}

/// Why a request could not be exchanged with an upstream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("upstream {addr} sent no response within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("upstream {addr} failed: {source}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: UpstreamError,
    },
    #[error("the request cannot be sent: {0}")]
    Request(&'static str),
}

/// Per-request deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// When the request arrived; the clock is read once per request.
    pub started: Instant,
    pub connect: Duration,
    pub request: Duration,
}

/// A request head as it goes to an upstream: what the client layer needs
/// to write it, whoever decided its fields.
pub trait Head {
    fn method(&self) -> &Method;
    /// Origin-form target: path and query.
    fn target(&self) -> &str;
    /// The host the request is for: `:authority` over HTTP/2.
    fn authority(&self) -> Option<&HeaderValue>;
    /// Whether the request asks to switch protocols.
    fn upgrade(&self) -> bool;
    /// The whole head in HTTP/1.1 form, with `framing`.
    fn encode(&self, out: &mut Vec<u8>, framing: RequestFraming);
    /// The fields for hyper's client, which adds the framing itself.
    fn header_map(&self, http2: bool) -> HeaderMap;
}

/// What a request body must be to be sent upstream.
pub trait OutBody: Body<Data = Bytes> + Send + Unpin + 'static {}
impl<B: Body<Data = Bytes> + Send + Unpin + 'static> OutBody for B {}

/// A request body that is either complete in hand or still streaming.
enum ReqBody<B> {
    /// Everything there is (possibly nothing), sent with the head.
    Inline(Bytes),
    /// The rest is read from the client while the exchange runs.
    Streaming {
        body: B,
        first: Option<Frame<Bytes>>,
        chunked: bool,
    },
}

/// Why a request body could not even start.
#[derive(Debug, thiserror::Error)]
#[error("the request body failed before it was sent")]
pub struct BodyFailed;

/// Looks at the body without waiting: bodies that are already complete
/// (no body, or a small one that arrived with the head) are sent in the
/// same write as the head, and the request can be retried.
///
/// A body that fails at once (broken framing, a client gone) fails the
/// request here, before anything reaches the upstream.
async fn classify<B: OutBody>(
    method: &Method,
    mut body: B,
) -> Result<(RequestFraming, ReqBody<B>), BodyFailed> {
    if body.is_end_stream() {
        let framing = if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            RequestFraming::Length(0)
        } else {
            RequestFraming::None
        };
        return Ok((framing, ReqBody::Inline(Bytes::new())));
    }
    let exact = body.size_hint().exact();
    let framing = exact.map_or(RequestFraming::Chunked, RequestFraming::Length);
    let chunked = framing == RequestFraming::Chunked;
    let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
    let first = match polled {
        Poll::Ready(Some(Ok(frame))) => Some(frame),
        Poll::Ready(Some(Err(_))) => return Err(BodyFailed),
        Poll::Ready(None) | Poll::Pending => None,
    };
    if let (Some(frame), Some(n)) = (&first, exact)
        && body.is_end_stream()
        && let Some(data) = frame.data_ref()
        && data.len() as u64 == n
    {
        return Ok((framing, ReqBody::Inline(data.clone())));
    }
    Ok((
        framing,
        ReqBody::Streaming {
            body,
            first,
            chunked,
        },
    ))
}

/// A request ready to be sent, possibly several times: its encoded head
/// and its body, which is kept for another attempt when it was complete
/// in hand.
pub struct Outgoing<B> {
    head: Vec<u8>,
    method: Method,
    body: Option<ReqBody<B>>,
}

impl<B: OutBody> Outgoing<B> {
    /// Encodes the head and looks at the body (see [`classify`]).
    pub async fn prepare(request: &impl Head, body: B) -> Result<Outgoing<B>, BodyFailed> {
        let method = request.method().clone();
        let (framing, body) = classify(&method, body).await?;
        let mut head = Vec::with_capacity(512);
        request.encode(&mut head, framing);
        Ok(Outgoing {
            head,
            method,
            body: Some(body),
        })
    }

    /// Whether the request can be sent again: its body, if any, is in
    /// hand, and no attempt consumed it.
    pub fn replayable(&self) -> bool {
        matches!(self.body, Some(ReqBody::Inline(_)))
    }
}

/// Sends a request to `peer` and returns the response once its head
/// arrived. A `101` answer's body is the switched connection
/// ([`UpstreamBody::Switched`]). A failure to connect leaves `out` as it
/// was, so the request can go to another endpoint.
pub async fn send<P: Peer + 'static, B: OutBody>(
    pool: &Arc<Pool>,
    peer: &Arc<P>,
    out: &mut Outgoing<B>,
    deadlines: Deadlines,
) -> Result<Response<UpstreamBody>, Error> {
    let addr = peer.addr();
    let method = &out.method;
    let head = &out.head;
    let body = &mut out.body;
    let upstream_err = |source: UpstreamError| Error::Exchange { addr, source };

    let deadline = tokio::time::Instant::from_std(deadlines.started + deadlines.request);
    let timed_out = Error::Timeout {
        addr,
        timeout: deadlines.request,
    };
    let exchange = async {
        let replayable = matches!(body, Some(ReqBody::Inline(_)));
        let mut conn = match pool.take(addr, deadlines.started) {
            Some(c) => c,
            None => connect(peer, deadlines, deadline).await?,
        };
        conn.last_used = deadlines.started;
        loop {
            let attempt = exchange(&mut conn, head, method, body, deadlines).await;
            match attempt {
                Ok(ok) => return Ok((conn, ok)),
                // A kept-alive connection the server closed just before our
                // request: nothing was processed, so a request that can be
                // sent again goes out once more on a fresh connection.
                Err(Attempt::Stale(e)) if conn.reused && replayable => {
                    debug!(%addr, error = %e, "pooled connection was closed; retrying on a new one");
                    conn = connect(peer, deadlines, deadline).await?;
                    conn.last_used = deadlines.started;
                }
                Err(Attempt::Stale(e) | Attempt::Failed(e)) => return Err(upstream_err(e)),
                Err(Attempt::TimedOut) => return Err(timed_out),
            }
        }
    };
    // The request deadline is the exchange's own (see `exchange`).
    let (mut conn, (head, writer)) = exchange.await?;

    let ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
        upgrade,
    } = head;
    let mut resp = Response::new(UpstreamBody::Complete(None));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;

    if upgrade {
        match conn.into_stream() {
            Some((stream, leftover)) => {
                *resp.body_mut() = UpstreamBody::Switched(Some(Switched::Own(stream, leftover)));
            }
            None => return Err(upstream_err(UpstreamError::UnexpectedSwitch)),
        }
        return Ok(resp);
    }

    if writer.is_none()
        && let Some(bytes) = body::take_complete(&mut conn.buf, framing)
    {
        if keep_alive {
            pool.put(conn);
        }
        if framing != BodyFraming::Empty {
            *resp.body_mut() = UpstreamBody::Complete(Some(bytes));
        }
        return Ok(resp);
    }
    *resp.body_mut() = UpstreamBody::stream(conn, framing, keep_alive, writer, pool.clone());
    Ok(resp)
}

/// How one attempt failed: `Stale` when nothing came back at all (the
/// connection may simply have been closed by the server while idle).
enum Attempt {
    Stale(UpstreamError),
    Failed(UpstreamError),
    TimedOut,
}

/// Opens a connection within the connect timeout, and within what is left
/// of the request deadline when that is shorter.
async fn connect<P: Peer + 'static>(
    peer: &Arc<P>,
    deadlines: Deadlines,
    deadline: tokio::time::Instant,
) -> Result<Conn, Error> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let peer: Arc<dyn Peer> = peer.clone();
    if left >= deadlines.connect {
        return Conn::connect(peer, deadlines.connect).await;
    }
    let addr = peer.addr();
    tokio::time::timeout_at(deadline, Conn::connect(peer, deadlines.connect))
        .await
        .unwrap_or(Err(Error::Timeout {
            addr,
            timeout: deadlines.request,
        }))
}

/// Runs `f` until it finishes (`Some`) or `deadline` passes (`None`).
async fn within<F: Future>(deadline: &mut LazyDeadline, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if deadline.poll_expired(cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

type Writer = tokio::task::JoinHandle<Result<tokio::net::tcp::OwnedWriteHalf, UpstreamError>>;

/// A body writer that stops when its exchange fails: it would otherwise
/// go on reading the client and holding the upstream connection.
struct WriterGuard(Option<Writer>);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.abort();
        }
    }
}

/// What woke an exchange waiting for its response head.
enum Event {
    Read(std::io::Result<usize>),
    Written(Result<Result<tokio::net::tcp::OwnedWriteHalf, UpstreamError>, tokio::task::JoinError>),
    Expired,
}

/// Writes the request and reads the response head on `conn`, by
/// `deadline`.
///
/// While the body streams the deadline follows its [`Pace`]: only time
/// without progress counts, and the upstream has `timeout` from the body's
/// end. The body's writer is stopped when the exchange fails.
async fn exchange<B: OutBody>(
    conn: &mut Conn,
    head: &[u8],
    method: &Method,
    body: &mut Option<ReqBody<B>>,
    deadlines: Deadlines,
) -> Result<(ResponseHead, Option<Writer>), Attempt> {
    let deadline = tokio::time::Instant::from_std(deadlines.started + deadlines.request);
    // Only a body still to come has a pace to follow.
    let mut pace = None;
    let Some(mut w) = conn.write.take() else {
        return Err(Attempt::Stale(UpstreamError::ClosedEarly));
    };
    let timer = match &mut conn.deadline {
        Some(t) => {
            t.set(deadline);
            t
        }
        none => none.insert(LazyDeadline::new(deadline)),
    };
    let mut writer = WriterGuard(None);
    let write = match body.take() {
        Some(ReqBody::Inline(bytes)) => {
            let r = if bytes.is_empty() {
                within(timer, w.write_all(head)).await
            } else {
                let mut both = Vec::with_capacity(head.len() + bytes.len());
                both.extend_from_slice(head);
                both.extend_from_slice(&bytes);
                within(timer, w.write_all(&both)).await
            };
            // Keep it for a possible retry.
            *body = Some(ReqBody::Inline(bytes));
            conn.write = Some(w);
            r
        }
        Some(ReqBody::Streaming {
            body,
            first,
            chunked,
        }) => {
            let r = within(timer, w.write_all(head)).await;
            if let Some(Ok(())) = r {
                let p = Pace::new(deadlines.started);
                let body = Paced::new(body, Some(p.clone()));
                pace = Some(p);
                writer.0 = Some(tokio::spawn(body::write_body(w, body, first, chunked)));
            }
            r
        }
        None => Some(Err(std::io::Error::other("request body already consumed"))),
    };
    match write {
        None => return Err(Attempt::TimedOut),
        Some(Err(e)) => return Err(Attempt::Stale(e.into())),
        Some(Ok(())) => {}
    }
    let mut received = false;
    loop {
        // Nothing to parse before the first read.
        if !conn.buf.is_empty() || received {
            match wire::parse_response_head(&mut conn.buf, method) {
                Ok(Some(head)) if head.status.is_informational() && !head.upgrade => continue,
                Ok(Some(head)) => return Ok((head, writer.0.take())),
                Ok(None) => {}
                Err(e) => return Err(Attempt::Failed(e.into())),
            }
        }
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = conn.read.poll_fill(&mut conn.buf, cx) {
                return Poll::Ready(Event::Read(r));
            }
            // A request body that fails on the client's side ends the
            // exchange at once, as the client's fault: the upstream would
            // only wait for the rest of it.
            if let Some(w) = writer.0.as_mut()
                && let Poll::Ready(done) = Pin::new(w).poll(cx)
            {
                return Poll::Ready(Event::Written(done));
            }
            if conn.deadline.as_mut().is_some_and(|t| t.poll_expired(cx)) {
                return Poll::Ready(Event::Expired);
            }
            Poll::Pending
        })
        .await;
        let filled = match event {
            Event::Read(r) => r,
            Event::Expired => match pace
                .as_ref()
                .map_or(Err(Stalled::Upstream), |p: &Arc<Pace>| {
                    p.recheck(deadlines.request, tokio::time::Instant::now())
                }) {
                Ok(later) => {
                    if let Some(t) = conn.deadline.as_mut() {
                        t.set(later);
                    }
                    continue;
                }
                Err(Stalled::Client) => {
                    return Err(Attempt::Failed(UpstreamError::ClientBodyStalled(
                        deadlines.request,
                    )));
                }
                Err(Stalled::Upstream) => return Err(Attempt::TimedOut),
            },
            Event::Written(done) => {
                writer.0 = None;
                match done {
                    Ok(Ok(w)) => conn.write = Some(w),
                    Ok(Err(UpstreamError::ClientBody)) => {
                        return Err(Attempt::Failed(UpstreamError::ClientBody));
                    }
                    // The upstream stopped reading the body: it may still
                    // answer (`413`, say); the connection is not reused.
                    Ok(Err(e)) => debug!(error = %e, "request body not written whole"),
                    Err(e) => {
                        return Err(Attempt::Failed(UpstreamError::Io(std::io::Error::other(e))));
                    }
                }
                continue;
            }
        };
        match filled {
            Ok(0) if received => return Err(Attempt::Failed(UpstreamError::ClosedEarly)),
            Ok(0) => return Err(Attempt::Stale(UpstreamError::ClosedEarly)),
            Ok(_) => received = true,
            Err(e) if received => return Err(Attempt::Failed(e.into())),
            Err(e) => return Err(Attempt::Stale(e.into())),
        }
    }
}
