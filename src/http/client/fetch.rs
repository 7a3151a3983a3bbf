//! The gateway's own HTTP calls: forwardAuth asking its service, JWKS
//! fetching a key set, active health checks probing endpoints.
//!
//! They go through the same client as proxied requests, so that they
//! follow the same framing rules, limits and timeouts, and through the
//! gateway's one DNS resolver ([`crate::http::dns`]), so that a name
//! resolves the same way for an upstream and for an authorization
//! service. Plain `http://` uses the own HTTP/1.1 exchange
//! ([`super::send`]), which retries a request that found its kept-alive
//! connection closed by the server; `https://` goes through hyper's
//! client ([`super::send_with_protocol`]) with the caller's rustls
//! configuration, so that each caller keeps its own idea of whom to trust.
//!
//! Kept-alive connections are pooled per thread and per runtime: every
//! proxy worker runs its own single-threaded runtime, and a socket belongs
//! to the runtime that opened it, so a connection opened by one worker
//! must never be handed to another. A call asking for no reuse (a health
//! check, which must not borrow a connection requests could use, and
//! must see a fresh connect succeed) gets a connection of its own, closed
//! after the answer.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};

use super::{
    Clients, Deadlines, Error as ClientError, Head, Outgoing, Pool, PoolConfig, Protocol, Tls,
    UpstreamBody, UpstreamError, send, send_with_protocol,
};
use crate::http::dns::{self, LookupError};
use crate::http::wire::{RequestFraming, is_hop_by_hop, put, put_length};
use target::{Host, TargetTls, origin_form};

mod target;

pub use target::{Target, UrlError};

/// Connections kept alive for the gateway's own calls, per thread and
/// runtime: enough for a burst of forwardAuth calls to one service, and
/// closed after a while, since most services close idle ones themselves.
const POOL: PoolConfig = PoolConfig {
    max_idle_per_endpoint: 16,
    idle_timeout: Duration::from_secs(15),
};

/// The shortest time given to each address of a name before the next is
/// tried, when several share the call's timeout.
const MIN_CONNECT: Duration = Duration::from_millis(500);

/// One call's request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    /// `Host` here replaces the target's authority; fields describing the
    /// connection or the framing are not sent.
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// A `GET` of the target's own path and query.
    pub fn get(target: &Target) -> Request {
        Request {
            method: Method::GET,
            path_and_query: target.path_and_query.clone(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// How a call is made.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// For the whole call: resolving, connecting, the exchange and reading
    /// the body.
    pub timeout: Duration,
    /// The most of the body read; the rest is left unread and the
    /// connection closed.
    pub max_body: usize,
    /// Whether a kept-alive connection may be used, and this one kept.
    pub reuse: bool,
}

/// What the server answered.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    /// Without the fields describing the connection.
    pub headers: HeaderMap,
    /// At most `max_body` bytes of the body.
    pub body: Bytes,
    /// Whether `body` is the whole body.
    pub complete: bool,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        name: String,
        #[source]
        source: LookupError,
    },
    #[error(transparent)]
    Connect(ClientError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Exchange(ClientError),
    #[error("unusable status {0}")]
    Status(StatusCode),
    #[error("no TLS configuration for an https:// target")]
    NoTls,
}

/// Makes one call to `target`, all of it within `options.timeout`.
pub async fn fetch(
    target: &Target,
    request: Request,
    options: &Options,
) -> Result<Response, FetchError> {
    let deadline = tokio::time::Instant::now() + options.timeout;
    tokio::time::timeout_at(deadline, call(target, request, options))
        .await
        .unwrap_or(Err(FetchError::Timeout(options.timeout)))
}

async fn call(
    target: &Target,
    request: Request,
    options: &Options,
) -> Result<Response, FetchError> {
    let started = Instant::now();
    let addrs = addresses(target).await?;
    let deadlines = Deadlines {
        started,
        connect: connect_timeout(options.timeout, addrs.len()),
        request: options.timeout,
    };
    let authority = request
        .headers
        .get(header::HOST)
        .unwrap_or(&target.authority);
    let path = origin_form(&request.path_and_query);
    let head = CallHead {
        method: &request.method,
        target: path.as_str(),
        authority,
        headers: &request.headers,
        close: !options.reuse,
    };
    let (addr, response) = match &target.tls {
        None => plain(&head, request.body.clone(), &addrs, deadlines, options).await?,
        Some(tls) => secure(tls, &head, &request.body, &addrs, deadlines, options).await?,
    };
    let (parts, body) = response.into_parts();
    if parts.status.is_informational() {
        return Err(FetchError::Status(parts.status));
    }
    let (body, complete) = read_limited(body, options.max_body)
        .await
        .map_err(|source| FetchError::Exchange(ClientError::Exchange { addr, source }))?;
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
        complete,
    })
}

/// The target's addresses: its own, or its name's through the shared
/// resolver.
async fn addresses(target: &Target) -> Result<Vec<SocketAddr>, FetchError> {
    match &target.host {
        Host::Addr(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(name) => {
            dns::resolve(name, target.port)
                .await
                .map_err(|source| FetchError::Resolve {
                    name: name.to_string(),
                    source,
                })
        }
    }
}

/// Each of `n` addresses gets a share of the call's time to connect, so
/// that one that never answers leaves time for the next.
fn connect_timeout(timeout: Duration, n: usize) -> Duration {
    if n <= 1 {
        return timeout;
    }
    (timeout / n as u32).max(MIN_CONNECT).min(timeout)
}

/// Whether a failure to open a connection, after which the next address
/// is worth a try.
fn connect_failed(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::ConnectTimeout { .. }
    )
}

fn failed(e: ClientError, timeout: Duration) -> FetchError {
    match e {
        ClientError::Timeout { .. } => FetchError::Timeout(timeout),
        e if connect_failed(&e) => FetchError::Connect(e),
        e => FetchError::Exchange(e),
    }
}

type Answer = (SocketAddr, http::Response<UpstreamBody>);

/// Over plain HTTP/1.1, with the own client.
async fn plain(
    head: &CallHead<'_>,
    body: Bytes,
    addrs: &[SocketAddr],
    deadlines: Deadlines,
    options: &Options,
) -> Result<Answer, FetchError> {
    let pool = match options.reuse.then(local).flatten() {
        Some(l) => l.pool,
        // Closed when the call is over: nothing else holds it.
        None => Pool::new(POOL),
    };
    let mut out = Outgoing::prepare(head, Full::new(body))
        .await
        .map_err(|_| FetchError::Exchange(ClientError::Request("the request body failed")))?;
    let mut last = None;
    for addr in addrs {
        match send(&pool, &Arc::new(*addr), &mut out, deadlines).await {
            Ok(r) => return Ok((*addr, r)),
            Err(e) if connect_failed(&e) => last = Some(e),
            Err(e) => return Err(failed(e, deadlines.request)),
        }
    }
    Err(last.map_or(FetchError::Timeout(deadlines.request), FetchError::Connect))
}

/// Over TLS, through hyper's client.
async fn secure(
    tls: &TargetTls,
    head: &CallHead<'_>,
    body: &Bytes,
    addrs: &[SocketAddr],
    deadlines: Deadlines,
    options: &Options,
) -> Result<Answer, FetchError> {
    let config = tls.config.as_ref().ok_or(FetchError::NoTls)?;
    let clients = match options.reuse.then(local).flatten() {
        Some(l) => l.clients,
        None => Arc::new(Clients::new(POOL)),
    };
    let proto = Protocol {
        id: tls.id,
        http2: false,
        tls: Some(Tls {
            name: &tls.name,
            config,
            config_http1: config,
        }),
    };
    // A request that changes nothing may go again when a kept-alive
    // connection turns out closed as it was sent; hyper's client does not
    // do that itself.
    let mut retry = options.reuse && matches!(*head.method, Method::GET | Method::HEAD);
    let mut last = None;
    let mut i = 0;
    while let Some(addr) = addrs.get(i) {
        let mut once = Some(Full::new(body.clone()));
        match send_with_protocol(&clients, proto, *addr, head, &mut once, deadlines).await {
            Ok(r) => return Ok((*addr, r)),
            Err(e) if connect_failed(&e) => {
                last = Some(e);
                i += 1;
            }
            Err(ClientError::Exchange {
                source: UpstreamError::Hyper(e),
                ..
            }) if retry && (e.is_canceled() || e.is_incomplete_message()) => {
                tracing::debug!(%addr, error = %e, "kept-alive connection was closed; calling again");
                retry = false;
            }
            Err(e) => return Err(failed(e, deadlines.request)),
        }
    }
    Err(last.map_or(FetchError::Timeout(deadlines.request), FetchError::Connect))
}

/// Reads at most `limit` bytes of `body`; whether that was all of it.
async fn read_limited(
    mut body: UpstreamBody,
    limit: usize,
) -> Result<(Bytes, bool), UpstreamError> {
    if let UpstreamBody::Complete(b) = &mut body {
        let b = b.take().unwrap_or_default();
        return Ok(if b.len() <= limit {
            (b, true)
        } else {
            (b.slice(..limit), false)
        });
    }
    let mut out = BytesMut::new();
    while !body.is_end_stream() {
        if out.len() >= limit {
            return Ok((out.freeze(), false));
        }
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let room = limit - out.len();
        if data.len() > room {
            out.extend_from_slice(&data[..room]);
            return Ok((out.freeze(), false));
        }
        out.extend_from_slice(&data);
    }
    Ok((out.freeze(), true))
}

/// A call's head, as the client layer writes it.
struct CallHead<'a> {
    method: &'a Method,
    target: &'a str,
    authority: &'a HeaderValue,
    headers: &'a HeaderMap,
    /// Asks the server to close the connection after answering.
    close: bool,
}

impl CallHead<'_> {
    /// The caller's fields that go out: not `Host` (written from the
    /// authority), nothing about the connection or the framing, which the
    /// client decides.
    fn fields(&self) -> impl Iterator<Item = (&header::HeaderName, &HeaderValue)> {
        self.headers.iter().filter(|(name, _)| {
            **name != header::HOST
                && **name != header::CONTENT_LENGTH
                && !is_hop_by_hop(name.as_str().as_bytes())
        })
    }
}

impl Head for CallHead<'_> {
    fn method(&self) -> &Method {
        self.method
    }

    fn target(&self) -> &str {
        self.target
    }

    fn authority(&self) -> Option<&HeaderValue> {
        Some(self.authority)
    }

    fn upgrade(&self) -> bool {
        false
    }

    fn encode(&self, out: &mut Vec<u8>, framing: RequestFraming) {
        out.clear();
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        put(out, "host", self.authority.as_bytes());
        for (name, value) in self.fields() {
            put(out, name.as_str(), value.as_bytes());
        }
        if self.close {
            put(out, "connection", b"close");
        }
        match framing {
            RequestFraming::None => {}
            RequestFraming::Length(n) => put_length(out, n),
            RequestFraming::Chunked => put(out, "transfer-encoding", b"chunked"),
        }
        out.extend_from_slice(b"\r\n");
    }

    fn header_map(&self, http2: bool) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(self.headers.len() + 2);
        for (name, value) in self.fields() {
            out.append(name.clone(), value.clone());
        }
        if !http2 {
            out.insert(header::HOST, self.authority.clone());
            if self.close {
                out.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        out
    }
}

/// This thread's connections for the current runtime.
#[derive(Clone)]
struct Local {
    runtime: tokio::runtime::Id,
    pool: Arc<Pool>,
    clients: Arc<Clients<Full<Bytes>>>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// The pooled connections of this thread, made anew when the thread runs
/// another runtime than the one that opened them; `None` outside a
/// runtime.
fn local() -> Option<Local> {
    let runtime = tokio::runtime::Handle::try_current().ok()?.id();
    LOCAL.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some(l) = cell.as_ref().filter(|l| l.runtime == runtime) {
            return Some(l.clone());
        }
        let l = Local {
            runtime,
            pool: Pool::new(POOL),
            clients: Arc::new(Clients::new(POOL)),
        };
        sweep(Arc::downgrade(&l.pool), Arc::downgrade(&l.clients));
        *cell = Some(l.clone());
        Some(l)
    })
}

/// Closes idle connections that expired or were closed by their server,
/// until the pool is dropped (its thread ended or runs another runtime).
fn sweep(pool: Weak<Pool>, clients: Weak<Clients<Full<Bytes>>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POOL.idle_timeout / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (Some(pool), Some(clients)) = (pool.upgrade(), clients.upgrade()) else {
                return;
            };
            pool.sweep();
            clients.sweep();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_carry_the_host_and_no_connection_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-uri", HeaderValue::from_static("/a"));
        headers.insert("connection", HeaderValue::from_static("x-secret"));
        headers.insert("transfer-encoding", HeaderValue::from_static("gzip"));
        headers.insert("content-length", HeaderValue::from_static("99"));
        let authority = HeaderValue::from_static("auth.test:8080");
        let head = CallHead {
            method: &Method::GET,
            target: "/verify?x=1",
            authority: &authority,
            headers: &headers,
            close: true,
        };
        let mut out = Vec::new();
        head.encode(&mut out, RequestFraming::None);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "GET /verify?x=1 HTTP/1.1\r\nhost: auth.test:8080\r\nx-forwarded-uri: /a\r\n\
             connection: close\r\n\r\n"
        );
        let post = CallHead {
            method: &Method::POST,
            close: false,
            ..head
        };
        post.encode(&mut out, RequestFraming::Length(5));
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("x-forwarded-uri: /a\r\ncontent-length: 5\r\n\r\n")
        );
        let map = head.header_map(false);
        assert_eq!(map["host"], "auth.test:8080");
        assert_eq!(map["connection"], "close");
        assert!(map.get("transfer-encoding").is_none() && map.get("content-length").is_none());
        assert!(head.header_map(true).get("host").is_none());
    }

    #[test]
    fn connect_time_is_shared_between_addresses() {
        let s = Duration::from_secs;
        assert_eq!(connect_timeout(s(3), 1), s(3));
        assert_eq!(connect_timeout(s(3), 2), Duration::from_millis(1500));
        assert_eq!(connect_timeout(s(3), 100), MIN_CONNECT);
        assert_eq!(
            connect_timeout(Duration::from_millis(300), 4),
            Duration::from_millis(300)
        );
    }

    /// A keep-alive server answering `ok` to every request, counting its
    /// connections.
    async fn keep_alive_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            got.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    const KEEP: Options = Options {
        timeout: Duration::from_secs(5),
        max_body: 1024,
        reuse: true,
    };

    async fn ok(target: &Target) {
        let r = fetch(target, Request::get(target), &KEEP).await.unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.complete),
            (StatusCode::OK, &b"ok"[..], true)
        );
    }

    #[test]
    fn kept_alive_connections_stay_with_their_runtime() {
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, conns) = server.block_on(keep_alive_server());
        let target = Target::http(addr);
        let count = || conns.load(std::sync::atomic::Ordering::SeqCst);
        let here = rt();
        here.block_on(ok(&target));
        here.block_on(ok(&target));
        assert_eq!(count(), 1, "reused within a runtime");
        // Another worker, whose runtime is alive at the same time, opens
        // its own connection rather than borrowing this one.
        std::thread::scope(|s| {
            s.spawn(|| rt().block_on(ok(&target))).join().unwrap();
        });
        assert_eq!(count(), 2);
        here.block_on(ok(&target));
        assert_eq!(count(), 2);
    }

    #[tokio::test]
    async fn every_address_of_a_name_is_tried_in_order() {
        let (addr, conns) = keep_alive_server().await;
        // Nothing listens on 127.0.0.3 at that port.
        let dead = std::net::IpAddr::from([127, 0, 0, 3]);
        dns::set_thread_default(Some(dns::Resolver::fixed(vec![dead, addr.ip()])));
        let target = Target::parse(&format!("http://multi.test:{}/", addr.port())).unwrap();
        ok(&target).await;
        dns::set_thread_default(None);
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_limit() {
        let whole = UpstreamBody::Complete(Some(Bytes::from_static(b"0123456789")));
        assert_eq!(
            read_limited(whole, 10).await.unwrap(),
            (Bytes::from_static(b"0123456789"), true)
        );
        let whole = UpstreamBody::Complete(Some(Bytes::from_static(b"0123456789")));
        assert_eq!(
            read_limited(whole, 4).await.unwrap(),
            (Bytes::from_static(b"0123"), false)
        );
        let none = UpstreamBody::Complete(None);
        assert_eq!(read_limited(none, 0).await.unwrap(), (Bytes::new(), true));
    }
}
