//! HTTP/2 connections: hyper's server, under the proxy's supervision.
//!
//! hyper frames the protocol and enforces its limits (concurrent streams,
//! header list size, streams reset before being accepted: the "rapid
//! reset" bound; CONTINUATION floods end with the header list limit). What
//! it does not do is bound time, so each connection has a supervisor, in
//! the connection's own task, with one timer:
//! - a request head (a header block) must be complete within the header
//!   read timeout from its first frame ([`h2_watch`](super::h2_watch));
//! - a connection without open streams is closed, with GOAWAY, after the
//!   keep-alive timeout (the header read timeout before its first
//!   request), so one that sends only the preface does not stay;
//! - PINGs go out after a quiet interval and must be answered in time;
//! - a stream whose client grants it no window for the send timeout
//!   loses its response body, releasing the upstream
//!   ([`stall`](super::stall)); a connection whose writes stall that long
//!   closes.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::h2_watch::{Signals, Watched};
use super::stall::Streams;
use super::{ClientBody, ClientInfo, Handler, SendTimeout, Server};

/// How long a connection being closed for idleness may take to say
/// goodbye: hyper's graceful close sends GOAWAY, then waits for the answer
/// to a PING before it closes, which a client that does nothing never
/// sends.
const GOODBYE: Duration = Duration::from_secs(1);

/// hyper's HTTP/2 server, set up from the proxy's settings.
pub fn builder(settings: &crate::proxy::settings::Http2Settings) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        .max_pending_accept_reset_streams(settings.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(1024);
    b
}

/// Serves one HTTP/2 connection (after the h2c preface was seen, or h2
/// chosen by ALPN) until it ends, is closed by its supervisor, or the
/// server stops.
pub async fn serve<T, H>(
    io: T,
    server: &Server<H>,
    client: ClientInfo,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Handler,
{
    let settings = &server.settings;
    let peer = client.peer_ip;
    let _counted = super::Counted::open(client.tls, "h2");
    let origin = Instant::now();
    let signals = Arc::new(Signals::default());
    let streams = Streams::new(origin);
    let io = Watched::new(io, signals.clone(), origin, settings.send_timeout);
    let service = {
        let handler = server.handler.clone();
        let streams = streams.clone();
        let client = Arc::new(client);
        let send_timeout = settings.send_timeout;
        service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let client = client.clone();
            let streams = streams.clone();
            async move {
                let open = streams.open();
                // Built on the heap: hyper spawns a task per stream, and
                // the handler's future would otherwise be most of it,
                // copied as it is spawned.
                let resp =
                    crate::boxed::pinned(|| handler.handle(req.map(ClientBody::Hyper), &client))
                        .await;
                let timeout = resp
                    .extensions()
                    .get::<SendTimeout>()
                    .map_or(send_timeout, |t| t.0);
                let resp = resp.map(|b| streams.watch(b, timeout));
                drop(open);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let mut conn = pin!(server.h2.serve_connection(TokioIo::new(io), service));
    let mut tick = pin!(tokio::time::sleep_until(
        origin + settings.header_read_timeout
    ));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
                }
                return;
            }
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            () = signals.changed.notified() => {}
            () = streams.streaming.notified() => {}
            () = &mut tick => {}
        }
        let now = Instant::now();
        let head = signals.head_since(origin);
        if let Some(since) = head
            && now >= since + settings.header_read_timeout
        {
            debug!(%peer, "HTTP/2 request head not complete within the header read timeout");
            return;
        }
        let idle = streams.is_idle() && head.is_none();
        let idle_limit = if streams.ever_opened() {
            settings.keepalive_timeout
        } else {
            settings.header_read_timeout
        };
        let idle_until = streams.idle_since() + idle_limit;
        if idle && now >= idle_until {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GOODBYE, conn).await;
            return;
        }
        if !streams.is_idle() {
            let released = streams.release_stalled(now);
            if released > 0 {
                debug!(%peer, released, "HTTP/2 streams not read within the send timeout");
            }
        }
        let mut next = now + settings.keepalive_timeout;
        if let Some(since) = head {
            next = next.min(since + settings.header_read_timeout);
        }
        if idle {
            next = next.min(idle_until);
        } else {
            next = next.min(now + (settings.send_timeout / 4).max(Duration::from_millis(250)));
        }
        tick.as_mut().reset(next);
    }
}
