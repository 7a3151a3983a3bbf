//! The proxy's own HTTP/1.1 server, for plain listeners.
//!
//! A connection is one task that reads a request head, runs the handler
//! and writes the response, then reads the next head; pipelined requests
//! are answered in order. There is no task or channel between the socket
//! and the handler, and the head timeout is one lazily re-armed timer per
//! connection (`timer::LazyDeadline`), not a timer per request. That is
//! where most of a general-purpose server's per-request cost went.
//!
//! A connection that opens with the HTTP/2 preface (h2c with prior
//! knowledge) is handed to hyper's HTTP/2 server with the bytes already
//! read. TLS listeners use hyper for both protocols (see `server`).
//!
//! Timeouts: the client has the header read timeout to send each request
//! head, counted from when the server starts waiting for it, which also
//! bounds how long an idle keep-alive connection stays open.

mod body;
mod parse;
mod write;

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

pub use body::H1Body;
use body::Reader;
use parse::{BodyFraming, parse_request_head};
use write::{RequestFacts, error_response, write_response};

use super::client::{ClientBody, Prefixed, UpgradeSlot, Upgraded};
use super::headers::ClientInfo;
use super::service::{Worker, unmatched};
use super::timer::LazyDeadline;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long the connection waits, after its response is written, for a
/// request body still being read elsewhere to hand the socket back before
/// it gives up on keep-alive.
const BODY_HANDBACK: Duration = Duration::from_secs(1);

/// What the plain listener's connections share.
pub struct Http1 {
    pub worker: Worker,
    pub h2: http2::Builder<TokioExecutor>,
}

/// How waiting for more of a request head ended.
enum Filled {
    Data,
    Closed,
    TimedOut,
    Stopping,
    Failed(std::io::Error),
}

/// Serves one plain client connection. `stop` changes when the server
/// shuts down; the connection holds it until it ends, which is how the
/// server knows when every connection is done.
pub async fn serve(
    stream: TcpStream,
    shared: Arc<Http1>,
    client: ClientInfo,
    stop: watch::Receiver<bool>,
) {
    let worker = &shared.worker;
    let (read, mut w) = stream.into_split();
    let mut reader = Some(Box::new(Reader::new(read)));
    let head_timeout = worker.shared.settings.header_read_timeout;
    let mut timer = LazyDeadline::new(Instant::now() + head_timeout);
    let mut stopping = stop.clone();
    let mut stopped = pin!(stopping.changed());
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut first = true;

    loop {
        let Some(r) = reader.as_mut() else { return };
        // The head.
        let mut waited = false;
        let head = loop {
            if first && !r.buf.is_empty() {
                let n = r.buf.len().min(H2_PREFACE.len());
                if r.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        break None;
                    }
                    // Possibly the preface: read on.
                } else {
                    first = false;
                    continue;
                }
            } else {
                match parse_request_head(&mut r.buf) {
                    Ok(Some(head)) => break Some(head),
                    Ok(None) => {}
                    Err(e) => {
                        debug!(peer = %client.peer_ip, error = %e, "unreadable request");
                        let now = std::time::Instant::now();
                        unmatched().record(e.status().as_u16(), Duration::ZERO, now);
                        error_response(&mut out, e.status(), &e.to_string());
                        let _ = w.write_all(&out).await;
                        return;
                    }
                }
            }
            if !waited {
                timer.set(Instant::now() + head_timeout);
                waited = true;
            }
            let filled = std::future::poll_fn(|cx| {
                match r.poll_fill(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Filled::Closed),
                    Poll::Ready(Ok(_)) => return Poll::Ready(Filled::Data),
                    Poll::Ready(Err(e)) => return Poll::Ready(Filled::Failed(e)),
                    Poll::Pending => {}
                }
                if stopped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Filled::Stopping);
                }
                if timer.poll_expired(cx) {
                    return Poll::Ready(Filled::TimedOut);
                }
                Poll::Pending
            })
            .await;
            match filled {
                Filled::Data => {}
                Filled::Closed | Filled::Stopping => return,
                Filled::TimedOut => {
                    debug!(peer = %client.peer_ip, "no request head within the header read timeout");
                    return;
                }
                Filled::Failed(e) => {
                    debug!(peer = %client.peer_ip, error = %e, "reading from the client failed");
                    return;
                }
            }
        };
        let Some(head) = head else {
            if let Some(r) = reader.take() {
                serve_h2(r, w, &shared, client, stop).await;
            }
            return;
        };
        first = false;

        // The body.
        let mut handback = None;
        let mut want_continue = None;
        let body = match head.framing {
            BodyFraming::Empty => H1Body::full(None),
            BodyFraming::Length(n) if r.buf.len() as u64 >= n => {
                H1Body::full(Some(r.buf.split_to(n as usize).freeze()))
            }
            framing => {
                let Some(r) = reader.take() else { return };
                let (tx, rx) = oneshot::channel();
                handback = Some(rx);
                let cont = head.expect_continue.then(|| {
                    let (tx, rx) = oneshot::channel();
                    want_continue = Some(rx);
                    tx
                });
                let length = match framing {
                    BodyFraming::Length(n) => Some(n),
                    _ => None,
                };
                H1Body::streaming(r, length, tx, cont)
            }
        };

        let facts = RequestFacts {
            head: head.method == Method::HEAD,
            version: head.version,
            keep_alive: head.keep_alive,
        };
        let mut req = Request::new(ClientBody::H1(body));
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        let upgrade = head.upgrade.then(|| {
            let (tx, rx) = oneshot::channel::<Upgraded>();
            req.extensions_mut()
                .insert(UpgradeSlot(Arc::new(Mutex::new(Some(rx)))));
            tx
        });

        let resp = match want_continue {
            None => worker.handle(req, &client).await,
            Some(asked) => {
                let mut handling = pin!(worker.handle(req, &client));
                tokio::select! {
                    biased;
                    resp = &mut handling => resp,
                    Ok(()) = asked => {
                        if w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                            return;
                        }
                        handling.await
                    }
                }
            }
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        // A body read to its end has handed the socket back by now; one
        // dropped unread has taken it along, and the response says that
        // the connection closes.
        let mut body_lost = false;
        if let Some(rx) = handback.as_mut() {
            match rx.try_recv() {
                Ok(r) => {
                    reader = Some(r);
                    handback = None;
                }
                Err(oneshot::error::TryRecvError::Closed) => body_lost = true,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        let facts = RequestFacts {
            // The one change `stop` sees is the shutdown.
            keep_alive: facts.keep_alive && !body_lost && !stop.has_changed().unwrap_or(true),
            ..facts
        };
        let reusable = match write_response(&mut w, &mut out, resp, facts).await {
            Ok(reusable) => reusable,
            Err(e) => {
                debug!(peer = %client.peer_ip, error = %e, "response not sent whole");
                return;
            }
        };
        if switching {
            if let (Some(tx), Some(r)) = (upgrade, reader.take()) {
                let Reader { read, buf } = *r;
                if let Ok(stream) = read.reunite(w) {
                    let _ = tx.send(Box::new(Prefixed::new(buf, stream)));
                }
            }
            return;
        }
        if !reusable {
            return;
        }
        if let Some(mut rx) = handback {
            let back = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(oneshot::error::TryRecvError::Closed) => None,
                Err(oneshot::error::TryRecvError::Empty) => tokio::time::timeout(BODY_HANDBACK, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            match back {
                Some(r) => reader = Some(r),
                None => return,
            }
        }
    }
}

/// Hands a connection that opened with the HTTP/2 preface to hyper.
async fn serve_h2(
    reader: Box<Reader>,
    w: tokio::net::tcp::OwnedWriteHalf,
    shared: &Http1,
    client: ClientInfo,
    mut stop: watch::Receiver<bool>,
) {
    let Reader { read, buf } = *reader;
    let Ok(stream) = read.reunite(w) else { return };
    let io = TokioIo::new(Prefixed::new(buf, stream));
    let service = super::server::service(shared.worker.clone(), client);
    let mut conn = pin!(shared.h2.serve_connection(io, service));
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "HTTP/2 client connection ended with an error");
    }
}
