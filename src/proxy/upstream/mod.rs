//! The upstream side of the proxy: a lean HTTP/1.1 client that runs inside
//! the request's own task.
//!
//! One request is one exchange on one connection: write the head (and a
//! small body in the same write), read the response head, then stream the
//! response body as the client reads it. A longer request body is written
//! by a helper task so that request and response can flow at the same time.
//! Compared with a general-purpose client there is no connection task and
//! no channel between tasks on the way, which is most of the per-request
//! cost of proxying.

mod body;
mod client;
mod codec;
mod conn;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response};
use http_body::{Body, Frame};
use tokio::io::AsyncWriteExt;
use tracing::debug;

pub use body::UpstreamBody;
pub use client::{Clients, send as send_with_protocol};
pub use codec::{
    Chunk, ChunkedDecoder, CodecError, RequestFraming, encode_chunk, encode_last_chunk,
};
pub use conn::{Pool, PoolConfig};

use super::body::{OverLimit, RequestBody, ResponseBody};
use super::client::ClientUpgrade;
use super::error::ProxyError;
use super::headers::RequestHead;
use super::socket;
use super::timer::LazyDeadline;
use crate::routing::EndpointState;
use codec::{BodyFraming, ResponseHead};
use conn::Conn;

/// Why an exchange with an upstream failed after connecting.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("connection closed before a response arrived")]
    ClosedEarly,
    #[error("connection closed in the middle of the response body")]
    Truncated,
    #[error("the client's request body failed")]
    ClientBody,
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("no response bytes for {0:?}")]
    Idle(Duration),
}

/// Per-request deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// When the request arrived; the clock is read once per request.
    pub started: Instant,
    pub connect: Duration,
    pub request: Duration,
}

/// A request body that is either complete in hand or still streaming.
enum ReqBody {
    /// Everything there is (possibly nothing), sent with the head.
    Inline(Bytes),
    /// The rest is read from the client while the exchange runs.
    Streaming {
        body: RequestBody,
        first: Option<Frame<Bytes>>,
        chunked: bool,
    },
}

/// Looks at the client's body without waiting: bodies that are already
/// complete (no body, or a small one that arrived with the head) are sent
/// in the same write as the head, and the request can be retried.
///
/// A body that fails at once (broken framing, a client gone) fails the
/// request here, before anything reaches the upstream.
async fn classify(
    method: &Method,
    mut body: RequestBody,
) -> Result<(RequestFraming, ReqBody), ProxyError> {
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
        Poll::Ready(Some(Err(e))) => {
            debug!(error = %e, "request body failed before it was sent");
            return Err(match body.exceeded() {
                Some(limit) => ProxyError::BodyTooLarge { limit },
                None => ProxyError::BadRequest("unreadable request body"),
            });
        }
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
pub struct Outgoing {
    head: Vec<u8>,
    method: Method,
    body: Option<ReqBody>,
}

impl Outgoing {
    /// Encodes the head and looks at the body (see [`classify`]).
    pub async fn prepare(
        request: &RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Outgoing, ProxyError> {
        let method = request.method.clone();
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

/// Sends a request to `addr` and returns the response once its head
/// arrived. With `client_upgrade`, a `101` answer splices client and
/// upstream together. A failure to connect leaves `out` as it was, so the
/// request can go to another endpoint.
pub async fn send(
    pool: &Arc<Pool>,
    endpoint: &Arc<EndpointState>,
    out: &mut Outgoing,
    over_limit: &mut OverLimit,
    deadlines: Deadlines,
    client_upgrade: &mut Option<ClientUpgrade>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let addr = endpoint.addr();
    let method = &out.method;
    let head = &out.head;
    let body = &mut out.body;
    let upstream_err = |source: UpstreamError| ProxyError::Upstream { addr, source };

    let deadline = tokio::time::Instant::from_std(deadlines.started + deadlines.request);
    let timed_out = ProxyError::UpstreamTimeout {
        addr,
        timeout: deadlines.request,
    };
    let exchange = async {
        let replayable = matches!(body, Some(ReqBody::Inline(_)));
        let mut conn = match pool.take(addr, deadlines.started) {
            Some(c) => c,
            None => connect(endpoint, deadlines, deadline).await?,
        };
        conn.last_used = deadlines.started;
        loop {
            let attempt = exchange(&mut conn, head, method, body, deadline).await;
            match attempt {
                Ok(ok) => return Ok((conn, ok)),
                // A kept-alive connection the server closed just before our
                // request: nothing was processed, so a request that can be
                // sent again goes out once more on a fresh connection.
                Err(Attempt::Stale(e)) if conn.reused && replayable => {
                    debug!(%addr, error = %e, "pooled connection was closed; retrying on a new one");
                    conn = connect(endpoint, deadlines, deadline).await?;
                    conn.last_used = deadlines.started;
                }
                Err(Attempt::Stale(e) | Attempt::Failed(e)) => return Err(upstream_err(e)),
                Err(Attempt::TimedOut) => return Err(timed_out),
            }
        }
    };
    // Pinned where it is: moving the large future into the select would
    // copy it. The request deadline is the exchange's own (see
    // `exchange`); a request body past its limit ends it with `413`, and
    // dropping the exchange closes its connection, so the upstream never
    // gets the rest of the body.
    let exchange = std::pin::pin!(exchange);
    let (mut conn, (head, writer)) = tokio::select! {
        biased;
        limit = over_limit => Err(ProxyError::BodyTooLarge { limit }),
        r = exchange => r,
    }?;

    let ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
        upgrade,
    } = head;
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;

    if upgrade {
        match (client_upgrade.take(), conn.into_stream()) {
            (Some(client), Some((stream, leftover))) => splice(addr, client, stream, leftover),
            _ => {
                return Err(upstream_err(UpstreamError::Codec(CodecError::Head(
                    "unexpected 101 response",
                ))));
            }
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
            *resp.body_mut() = ResponseBody::full(bytes);
        }
        return Ok(resp);
    }
    *resp.body_mut() = ResponseBody::Upstream(Box::new(UpstreamBody::new(
        conn,
        framing,
        keep_alive,
        writer,
        pool.clone(),
    )));
    Ok(resp)
}

/// Runs `exchange` until the response head is in, within the request
/// deadline. A request body that passes its limit first ends it with
/// `413`: dropping the exchange closes its connection, so the upstream
/// never gets the rest of the body.
pub(crate) async fn bounded<T>(
    exchange: impl Future<Output = Result<T, ProxyError>>,
    over_limit: &mut OverLimit,
    addr: SocketAddr,
    deadlines: Deadlines,
) -> Result<T, ProxyError> {
    let deadline = tokio::time::Instant::from_std(deadlines.started + deadlines.request);
    let timeout = deadlines.request;
    tokio::select! {
        biased;
        limit = over_limit => Err(ProxyError::BodyTooLarge { limit }),
        r = tokio::time::timeout_at(deadline, exchange) => {
            r.unwrap_or_else(|_| Err(ProxyError::UpstreamTimeout { addr, timeout }))
        }
    }
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
async fn connect(
    endpoint: &Arc<EndpointState>,
    deadlines: Deadlines,
    deadline: tokio::time::Instant,
) -> Result<Conn, ProxyError> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left >= deadlines.connect {
        return Conn::connect(endpoint, deadlines.connect).await;
    }
    tokio::time::timeout_at(deadline, Conn::connect(endpoint, deadlines.connect))
        .await
        .unwrap_or_else(|_| {
            Err(ProxyError::UpstreamTimeout {
                addr: endpoint.addr(),
                timeout: deadlines.request,
            })
        })
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

/// Writes the request and reads the response head on `conn`, by
/// `deadline`.
async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    method: &Method,
    body: &mut Option<ReqBody>,
    deadline: tokio::time::Instant,
) -> Result<(ResponseHead, Option<Writer>), Attempt> {
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
    let mut writer = None;
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
                writer = Some(tokio::spawn(body::write_body(w, body, first, chunked)));
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
            match codec::parse_response_head(&mut conn.buf, method) {
                Ok(Some(head)) if head.status.is_informational() && !head.upgrade => continue,
                Ok(Some(head)) => return Ok((head, writer)),
                Ok(None) => {}
                Err(e) => return Err(Attempt::Failed(e.into())),
            }
        }
        let filled = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = socket::poll_fill(&conn.read, &mut conn.buf, cx) {
                return Poll::Ready(Some(r));
            }
            let expired = conn.deadline.as_mut().is_some_and(|t| t.poll_expired(cx));
            if expired {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await;
        let Some(filled) = filled else {
            return Err(Attempt::TimedOut);
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

/// Joins the client's upgraded connection to the upstream's.
fn splice(
    addr: SocketAddr,
    client: ClientUpgrade,
    mut upstream: tokio::net::TcpStream,
    leftover: bytes::BytesMut,
) {
    tokio::spawn(async move {
        let mut client = match client.wait().await {
            Ok(u) => u,
            Err(e) => {
                debug!(%addr, error = %e, "client upgrade did not complete");
                return;
            }
        };
        if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            debug!(%addr, error = %e, "upgraded connection ended");
        }
    });
}
