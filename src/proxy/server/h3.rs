//! HTTP/3 connections: h3's framing over a QUIC connection, each request
//! handed to the same [`Handler`] as HTTP/1.1 and HTTP/2.
//!
//! h3 frames the protocol and refuses what RFC 9114 calls malformed (a
//! `host` that contradicts `:authority` resets the stream with
//! H3_MESSAGE_ERROR; a header section over the limit gets 431). QUIC
//! bounds concurrent streams and notices dead peers ([`crate::proxy::quic`]).
//! What neither bounds is time, so, as for HTTP/2:
//! - a request head must be complete within the header read timeout from
//!   the stream's opening;
//! - a connection without open requests is closed, with GOAWAY, after the
//!   keep-alive timeout (the header read timeout before its first
//!   request);
//! - a response the client does not read for the send timeout is
//!   cancelled, releasing the upstream.
//!
//! On shutdown a connection sends GOAWAY, lets the requests it accepted
//! finish (the listener bounds that by the shutdown grace period), then
//! closes.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h3::error::{Code, StreamError};
use h3::server::{RequestResolver, RequestStream};
use http::{HeaderMap, HeaderName, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::debug;

use super::h3_body::H3Body;
use super::{ClientBody, ClientInfo, Counted, Handler, SendTimeout, Server};
use crate::http::timer::within;

/// How long a connection being closed may wait for its client to close
/// it after GOAWAY, so that the last responses are delivered.
const GOODBYE: Duration = Duration::from_secs(1);

type Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;
type Resolver = RequestResolver<h3_quinn::Connection, Bytes>;
type SendStream = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Requests open on a connection, and when the last one ended. A
/// request's start and end are an uncontended addition each; the clock is
/// read, and a closing connection woken, only when the last open request
/// ends.
struct Activity {
    open: AtomicUsize,
    /// When the count last fell to zero, in nanoseconds from `origin`.
    since: AtomicU64,
    origin: Instant,
    /// Woken when the count falls to zero.
    idle: Notify,
}

impl Activity {
    fn new(origin: Instant) -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            since: AtomicU64::new(0),
            origin,
            idle: Notify::new(),
        }
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn since(&self) -> Instant {
        self.origin + Duration::from_nanos(self.since.load(Ordering::Acquire))
    }
}

/// Counts a request open until dropped.
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: &Arc<Activity>) -> Open {
        activity.open.fetch_add(1, Ordering::AcqRel);
        Open(activity.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let a = &self.0;
        if a.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = Instant::now().saturating_duration_since(a.origin);
            a.since.store(
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
                Ordering::Release,
            );
            a.idle.notify_waiters();
        }
    }
}

/// Serves one QUIC connection whose handshake chose `h3`, until the
/// client closes it, it is idle too long, or the server stops.
pub async fn serve<H: Handler>(
    quic: quinn::Connection,
    server: Arc<Server<H>>,
    client: ClientInfo,
    mut stop: watch::Receiver<bool>,
) {
    let settings = server.settings.clone();
    let peer = client.peer_ip;
    let _counted = Counted::open(true, "h3");
    // Starting opens the server's control and QPACK streams, which waits
    // for the client's stream credit: bounded like a request head.
    let built = timeout(
        settings.header_read_timeout,
        h3::server::builder()
            .max_field_section_size(u64::from(settings.http2.max_header_list_size))
            .build::<_, Bytes>(h3_quinn::Connection::new(quic.clone())),
    )
    .await;
    let mut conn = match built {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "HTTP/3 connection could not start");
            return;
        }
        Err(_) => {
            debug!(%peer, "HTTP/3 connection not started within the header read timeout");
            return;
        }
    };
    let client = Arc::new(client);
    let origin = Instant::now();
    let activity = Arc::new(Activity::new(origin));
    let mut ever_opened = false;
    let mut tick = std::pin::pin!(sleep_until(origin + settings.header_read_timeout));
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Ok(Some(resolver)) => {
                    ever_opened = true;
                    spawn_request(resolver, &server, &client, &activity);
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        debug!(%peer, error = %e, "HTTP/3 connection ended with an error");
                    }
                    break;
                }
            },
            _ = stop.changed() => {
                goodbye(&mut conn, &server, &client, &activity).await;
                let _ = timeout(GOODBYE, quic.closed()).await;
                return;
            }
            () = &mut tick => {
                let now = Instant::now();
                let limit = if ever_opened {
                    settings.keepalive_timeout
                } else {
                    settings.header_read_timeout
                };
                let since = activity.since();
                if activity.open() > 0 {
                    tick.as_mut().reset(now + limit);
                } else if now >= since + limit {
                    // No request runs, so only GOAWAY's sending can wait.
                    let _ = timeout(GOODBYE, goodbye(&mut conn, &server, &client, &activity)).await;
                    let _ = timeout(GOODBYE, quic.closed()).await;
                    return;
                } else {
                    tick.as_mut().reset(since + limit);
                }
            }
        }
    }
    // The client ended the connection, or said GOAWAY and its requests
    // are done: give their last bytes time to be delivered.
    let _ = timeout(GOODBYE, quic.closed()).await;
}

/// Sends GOAWAY and lets the requests already accepted finish; streams
/// the client opens past the GOAWAY are refused by h3.
async fn goodbye<H: Handler>(
    conn: &mut Conn,
    server: &Arc<Server<H>>,
    client: &Arc<ClientInfo>,
    activity: &Arc<Activity>,
) {
    // One past the last accepted stream: every request accepted so far
    // is processed.
    if conn.shutdown(1).await.is_err() {
        return;
    }
    let mut accepting = true;
    loop {
        // Listening before looking, so that the last request's end is
        // not missed between the two.
        let mut idle = pin!(activity.idle.notified());
        idle.as_mut().enable();
        if activity.open() == 0 {
            return;
        }
        tokio::select! {
            accepted = conn.accept(), if accepting => match accepted {
                Ok(Some(resolver)) => spawn_request(resolver, server, client, activity),
                Ok(None) | Err(_) => accepting = false,
            },
            () = idle => {}
        }
    }
}

fn spawn_request<H: Handler>(
    resolver: Resolver,
    server: &Arc<Server<H>>,
    client: &Arc<ClientInfo>,
    activity: &Arc<Activity>,
) {
    let open = Open::new(activity);
    let server = server.clone();
    let client = client.clone();
    // Boxed where it is built: a task's future is copied as it is
    // spawned, and overwritten by its output when it ends, both at its
    // full size.
    tokio::spawn(crate::boxed::pinned(move || async move {
        request(resolver, &server, &client).await;
        drop(open);
    }));
}

/// Reads one request's head, hands the request to the handler and sends
/// back its response.
async fn request<H: Handler>(resolver: Resolver, server: &Server<H>, client: &ClientInfo) {
    let settings = &server.settings;
    let peer = client.peer_ip;
    let (req, stream) = match within(settings.header_read_timeout, resolver.resolve_request()).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "HTTP/3 request refused");
            if let Some(status) = refusal(&e) {
                server.handler.refused(status);
            }
            return;
        }
        Err(_) => {
            debug!(%peer, "HTTP/3 request head not complete within the header read timeout");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let declared = content_length(req.headers()).and_then(|d| {
        if has_connection_fields(req.headers()) {
            Err(())
        } else {
            Ok(d)
        }
    });
    let Ok(declared) = declared else {
        server.handler.refused(StatusCode::BAD_REQUEST);
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        if send.send_response(resp).await.is_ok() {
            let _ = send.finish().await;
        }
        return;
    };
    let req = req.map(|()| ClientBody::H3(Box::new(H3Body::new(recv, declared))));
    // Built on the heap: the handler's future is most of this task's
    // size, and a task's future is copied as it is spawned.
    let resp = crate::boxed::pinned(|| server.handler.handle(req, client)).await;
    let send_timeout = resp
        .extensions()
        .get::<SendTimeout>()
        .map_or(settings.send_timeout, |t| t.0);
    if let Err(e) = respond(&mut send, resp, send_timeout).await {
        debug!(%peer, error = %e, "HTTP/3 response not sent");
    }
}

/// Why a response could not be sent in full.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the client read nothing within the send timeout")]
    Stalled,
    #[error("the response body failed: {0}")]
    Body(crate::http::client::UpstreamError),
}

/// Sends the response head, streams its body and trailers, and ends the
/// stream; a body that fails or stalls cancels the stream instead, so the
/// client never takes a cut response for a whole one.
async fn respond<B>(
    send: &mut SendStream,
    resp: Response<B>,
    send_timeout: Duration,
) -> Result<(), SendError>
where
    B: http_body::Body<Data = Bytes, Error = crate::http::client::UpstreamError> + Unpin,
{
    let (mut parts, mut body) = resp.into_parts();
    strip_connection_fields(&mut parts.headers);
    let head = Response::from_parts(parts, ());
    within(send_timeout, send.send_response(head))
        .await
        .map_err(|_| SendError::Stalled)??;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return Err(SendError::Body(e));
            }
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => within(send_timeout, send.send_data(data)).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => within(send_timeout, send.send_trailers(trailers)).await,
                Err(_) => continue,
            },
        };
        match sent {
            Ok(r) => r?,
            Err(_) => {
                send.stop_stream(Code::H3_REQUEST_CANCELLED);
                return Err(SendError::Stalled);
            }
        }
    }
    within(send_timeout, send.finish())
        .await
        .map_err(|_| SendError::Stalled)??;
    Ok(())
}

/// The status a request refused by h3 before it was handled counts as.
fn refusal(e: &StreamError) -> Option<StatusCode> {
    match e {
        StreamError::HeaderTooBig { .. } => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        StreamError::StreamError { code, .. } if *code == Code::H3_MESSAGE_ERROR => {
            Some(StatusCode::BAD_REQUEST)
        }
        _ => None,
    }
}

/// The body length a request declares: every `content-length` field must
/// be one number, the same (RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().map_err(|_| ())?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = part.parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The fields HTTP/3 forbids (RFC 9114 §4.2): the connection's own, which
/// QUIC replaces.
fn connection_fields() -> [&'static HeaderName; 5] {
    [
        &header::CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
}

/// Whether a request carries a connection-specific field, or `te` with
/// anything but `trailers`: a malformed request (RFC 9114 §4.2), which an
/// HTTP/1.1 upstream could read as framing or an upgrade.
fn has_connection_fields(headers: &HeaderMap) -> bool {
    connection_fields().iter().any(|n| headers.contains_key(*n))
        || headers
            .get_all(header::TE)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// Removes the connection-specific fields from a response.
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in connection_fields() {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(values: &[&str]) -> Result<Option<u64>, ()> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CONTENT_LENGTH, v.parse().unwrap());
        }
        content_length(&h)
    }

    #[test]
    fn content_length_must_be_one_number() {
        assert_eq!(lengths(&[]), Ok(None));
        assert_eq!(lengths(&["12"]), Ok(Some(12)));
        assert_eq!(lengths(&["12", "12"]), Ok(Some(12)));
        assert_eq!(lengths(&["12, 12"]), Ok(Some(12)));
        assert_eq!(lengths(&["12", "13"]), Err(()));
        assert_eq!(lengths(&["+12"]), Err(()));
        assert_eq!(lengths(&["-1"]), Err(()));
        assert_eq!(lengths(&[""]), Err(()));
        assert_eq!(lengths(&["99999999999999999999999"]), Err(()));
    }

    #[test]
    fn connection_specific_fields_are_malformed() {
        let with = |name: &'static str, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            has_connection_fields(&h)
        };
        assert!(!has_connection_fields(&HeaderMap::new()));
        assert!(with("connection", "close"));
        assert!(with("transfer-encoding", "chunked"));
        assert!(with("upgrade", "websocket"));
        assert!(with("keep-alive", "timeout=5"));
        assert!(with("proxy-connection", "keep-alive"));
        assert!(with("te", "gzip"));
        assert!(!with("te", "trailers"));
        assert!(!with("x-other", "1"));
    }
}
