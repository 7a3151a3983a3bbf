//! The proxy's own HTTP/1.1 server, for every listener.
//!
//! A connection is one task that reads a request head, runs the handler
//! and writes the response, then reads the next head; pipelined requests
//! are answered in order. There is no task or channel between the stream
//! and the handler, and every deadline is one lazily re-armed timer per
//! connection (`timer::LazyDeadline`), not a timer per request. That is
//! where most of a general-purpose server's per-request cost went.
//!
//! The server is generic over the byte stream ([`Duplex`]): plain TCP and
//! TLS run the same code with the same rules. A connection that opens
//! with the HTTP/2 preface (h2c with prior knowledge) is handed to the
//! HTTP/2 server, in a task of its own, with the bytes already read.
//!
//! Timeouts:
//! - a request head must arrive whole within the header read timeout,
//!   counted from its first byte (from the accept for the first request);
//! - between requests a connection may wait the keep-alive timeout;
//! - a response that makes no progress towards the client for the send
//!   timeout (the route's, else the server's) closes the connection, and
//!   with it the upstream's.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request, StatusCode};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use super::body::IntoClientBody;
use super::h1_body::{H1Body, Reader};
use super::h1_write::{Out, RequestFacts, write_response};
use super::upgrade::UpgradeSlot;
use super::{ClientInfo, Handler, SendTimeout, Server};
use crate::http::io::{Duplex, Prefixed, Upgraded};
use crate::http::timer::LazyDeadline;
use crate::http::wire::{self, RequestFraming, parse_request_head};
use crate::proxy::settings::ProxySettings;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long the connection waits, after its response is written, for a
/// request body still being read elsewhere to hand the stream back before
/// it gives up on keep-alive.
const BODY_HANDBACK: Duration = Duration::from_secs(1);

/// How long a kept-alive connection waits with nothing to read before its
/// read buffer is released (it gets one again when bytes come): idle
/// connections then hold no buffer, while a busy one keeps its own.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// How waiting for more of a request head ended.
enum Filled {
    Data,
    Closed,
    TimedOut,
    Stopping,
    Failed(std::io::Error),
}

/// Serves one client connection. `stop` changes when the server shuts
/// down; the connection holds it until it ends, which is how the server
/// knows when every connection is done.
pub async fn serve<S, H>(
    stream: S,
    server: Arc<Server<H>>,
    client: ClientInfo,
    stop: watch::Receiver<bool>,
) where
    S: Duplex,
    S::Read: IntoClientBody,
    H: Handler,
{
    let handler = &server.handler;
    let settings = &server.settings;
    let counted = super::Counted::open(client.tls, "h1");
    let (read, w) = stream.split();
    let mut reader = Some(Box::new(Reader::new(read)));
    let mut timer = LazyDeadline::new(Instant::now() + settings.header_read_timeout);
    let mut out = Out::new(w);
    let mut stopping = stop.clone();
    let mut stopped = pin!(stopping.changed());
    let mut first = true;

    loop {
        let Some(r) = reader.as_mut() else { return };
        // The head: the keep-alive timeout while nothing of it has come,
        // then the header read timeout from its first byte. The first
        // request has the header read timeout from the accept.
        let mut waited = first;
        let mut started = first || !r.buf.is_empty();
        // While idle: when to release the buffer, and the keep-alive
        // deadline that follows.
        let mut release: Option<Instant> = None;
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
            } else if !r.buf.is_empty() {
                match parse_request_head(&mut r.buf) {
                    Ok(Some(head)) => break Some(head),
                    Ok(None) => {}
                    Err(e) => {
                        debug!(peer = %client.peer_ip, error = %e, "unreadable request");
                        refuse(handler, &mut out, &mut timer, settings, e).await;
                        return;
                    }
                }
            }
            if !started && !r.buf.is_empty() {
                started = true;
                release = None;
                timer.set(Instant::now() + settings.header_read_timeout);
            } else if !waited {
                let now = Instant::now();
                if started {
                    timer.set(now + settings.header_read_timeout);
                } else if r.buf.capacity() > 0 && IDLE_RELEASE < settings.keepalive_timeout {
                    release = Some(now + settings.keepalive_timeout);
                    timer.set(now + IDLE_RELEASE);
                } else {
                    timer.set(now + settings.keepalive_timeout);
                }
            }
            waited = true;
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
                    if let Some(deadline) = release.take() {
                        r.buf = BytesMut::new();
                        timer.set(deadline);
                        continue;
                    }
                    debug!(peer = %client.peer_ip, started, "no whole request head in time");
                    return;
                }
                Filled::Failed(e) => {
                    debug!(peer = %client.peer_ip, error = %e, "reading from the client failed");
                    return;
                }
            }
        };
        let Some(head) = head else {
            if let Some(r) = reader.take()
                && let Some(stream) = S::unsplit(r.read, out.into_inner())
            {
                let stream = Prefixed::new(r.buf, stream);
                drop(counted);
                // A task of its own, and this one ends: an HTTP/2
                // connection then holds only the HTTP/2 server's state,
                // not this one's as well while it lasts.
                tokio::spawn(async move { super::h2::serve(stream, &server, client, stop).await });
            }
            return;
        };
        first = false;

        // The body.
        let mut handback = None;
        let mut want_continue = None;
        let body = match head.framing {
            RequestFraming::None => H1Body::full(None),
            RequestFraming::Length(n) if r.buf.len() as u64 >= n => {
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
                    RequestFraming::Length(n) => Some(n),
                    _ => None,
                };
                H1Body::streaming(r, length, tx, cont)
            }
        };

        // A refused CONNECT ends the connection: a client may already be
        // sending what it meant for the tunnel.
        let connect = head.method == Method::CONNECT;
        let facts = RequestFacts {
            head: head.method == Method::HEAD,
            version: head.version,
            keep_alive: head.keep_alive && !connect,
        };
        let mut req = Request::new(S::Read::client_body(body));
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
            // Boxed, so that a connection's task is small while it waits
            // between requests: the handler's future is most of its size.
            None => crate::boxed::pinned(|| handler.handle(req, &client)).await,
            Some(asked) => {
                // Boxed: a second copy of the handler's future in this
                // task would double every connection's size.
                let mut handling = crate::boxed::pinned(|| handler.handle(req, &client));
                tokio::select! {
                    biased;
                    resp = &mut handling => resp,
                    Ok(()) = asked => {
                        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
                        if out.write(cont, &mut timer, settings.send_timeout).await.is_err() {
                            return;
                        }
                        handling.await
                    }
                }
            }
        };

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        // A body read to its end has handed the stream back by now; one
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
        let send_timeout = resp
            .extensions()
            .get::<SendTimeout>()
            .map_or(settings.send_timeout, |t| t.0);
        let reusable = match write_response(&mut out, &mut timer, send_timeout, resp, facts).await {
            Ok(reusable) => reusable,
            Err(e) => {
                debug!(peer = %client.peer_ip, error = %e, "response not sent whole");
                return;
            }
        };
        if switching {
            if let (Some(tx), Some(r)) = (upgrade, reader.take()) {
                let Reader { read, buf } = *r;
                if let Some(stream) = S::unsplit(read, out.into_inner()) {
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

/// Answers a request the server could not read, and counts it; the
/// connection then closes.
async fn refuse<W, H>(
    handler: &H,
    out: &mut Out<W>,
    timer: &mut LazyDeadline,
    settings: &ProxySettings,
    e: wire::WireError,
) where
    W: tokio::io::AsyncWrite + Unpin,
    H: Handler,
{
    let status = e.status();
    handler.refused(status);
    let mut text = Vec::new();
    wire::error_response(&mut text, status, &e.to_string());
    let _ = out.write(&text, timer, settings.send_timeout).await;
}
