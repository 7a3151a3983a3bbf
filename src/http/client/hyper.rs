//! Backends that need more than plain HTTP/1.1: TLS (`HTTPS`, `GRPCS`)
//! and HTTP/2 (`H2C`, `GRPC`, or `h2` chosen by ALPN), through hyper's
//! client connections.
//!
//! An HTTP/2 connection carries every concurrent request of a worker to
//! one endpoint; HTTP/1.1 connections are pooled per endpoint as on the
//! plain path. Connections are keyed by endpoint and by the identity of
//! the protocol settings, which is a hash of their content, so a new table
//! with the same settings keeps using the same connections, and changed
//! settings (a renewed CA, another SNI) never reuse an old one.
//!
//! Bodies stream both ways frame by frame, trailers included, which is
//! what gRPC needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::debug;

use super::body::{Switched, UpstreamBody};
use super::pace::{Pace, Paced, Stalled};
use super::{Deadlines, Error, Head, OutBody, PoolConfig, UpstreamError};

/// How a backend is spoken to through hyper.
#[derive(Clone, Copy, Debug)]
pub struct Protocol<'a> {
    /// Connections are shared by requests whose settings have the same id.
    pub id: u64,
    /// HTTP/2 with prior knowledge (h2c, gRPC); over TLS, ALPN may also
    /// choose it.
    pub http2: bool,
    pub tls: Option<Tls<'a>>,
}

/// TLS towards a backend.
#[derive(Clone, Copy, Debug)]
pub struct Tls<'a> {
    /// Sent as SNI and checked against the certificate.
    pub name: &'a rustls::pki_types::ServerName<'static>,
    pub config: &'a std::sync::Arc<rustls::ClientConfig>,
    /// The same, offering only HTTP/1.1 by ALPN: for protocol upgrades,
    /// which HTTP/2 connections cannot carry.
    pub config_http1: &'a std::sync::Arc<rustls::ClientConfig>,
}

type Key = (u64, SocketAddr);

enum Entry<B> {
    H2(http2::SendRequest<B>),
    /// Idle senders with the time they were put back, newest last.
    H1(Vec<(http1::SendRequest<B>, Instant)>),
}

enum Sender<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

/// One worker's connections to protocol backends.
pub struct Clients<B> {
    conns: Mutex<HashMap<Key, Entry<Paced<B>>>>,
    config: PoolConfig,
}

impl<B> std::fmt::Debug for Clients<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl<B: OutBody> Clients<B>
where
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(config: PoolConfig) -> Self {
        Clients {
            conns: Mutex::new(HashMap::new()),
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry<Paced<B>>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection that can take a request now: the shared HTTP/2 one,
    /// or an idle HTTP/1.1 one whose previous response has completed.
    fn take(&self, key: Key, now: Instant) -> Option<Sender<Paced<B>>> {
        let mut conns = self.lock();
        match conns.get_mut(&key)? {
            Entry::H2(s) if !s.is_closed() => Some(Sender::H2(s.clone())),
            Entry::H2(_) => {
                conns.remove(&key);
                None
            }
            Entry::H1(list) => {
                let timeout = self.config.idle_timeout;
                list.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < timeout);
                let i = list.iter().rposition(|(s, _)| s.is_ready())?;
                Some(Sender::H1(list.remove(i).0))
            }
        }
    }

    fn put(&self, key: Key, sender: Sender<Paced<B>>, now: Instant) {
        let mut conns = self.lock();
        match sender {
            Sender::H2(s) => {
                conns.insert(key, Entry::H2(s));
            }
            Sender::H1(s) => {
                let entry = conns.entry(key).or_insert_with(|| Entry::H1(Vec::new()));
                match entry {
                    Entry::H1(list) => {
                        if list.len() >= self.config.max_idle_per_endpoint {
                            list.remove(0);
                        }
                        list.push((s, now));
                    }
                    // The server chose HTTP/2 on another connection; this
                    // one simply closes when its response is done.
                    Entry::H2(_) => {}
                }
            }
        }
    }

    /// Drops closed connections and expired idle ones; run periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let timeout = self.config.idle_timeout;
        self.lock().retain(|_, entry| match entry {
            Entry::H2(s) => !s.is_closed(),
            Entry::H1(list) => {
                list.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < timeout);
                !list.is_empty()
            }
        });
    }
}

/// Opens a connection as `proto` says, within the connect timeout (TCP
/// and the TLS handshake together).
async fn connect<B: OutBody>(
    addr: SocketAddr,
    proto: Protocol<'_>,
    deadlines: &Deadlines,
    upgrade: bool,
) -> Result<Sender<B>, Error>
where
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let timeout = deadlines.connect;
    let open = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let upstream = |source| Error::Exchange { addr, source };
        match proto.tls {
            None => handshake(TokioIo::new(tcp), proto.http2)
                .await
                .map_err(|e| upstream(UpstreamError::Hyper(e))),
            Some(tls) => {
                let config = if upgrade {
                    tls.config_http1
                } else {
                    tls.config
                };
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let stream = connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .map_err(|e| upstream(UpstreamError::Tls(e)))?;
                let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                handshake(TokioIo::new(stream), proto.http2 || alpn_h2)
                    .await
                    .map_err(|e| upstream(UpstreamError::Hyper(e)))
            }
        }
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(r) => r,
        Err(_) => Err(Error::ConnectTimeout { addr, timeout }),
    }
}

async fn handshake<T, B: OutBody>(io: TokioIo<T>, http2: bool) -> Result<Sender<B>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if http2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "HTTP/2 upstream connection ended");
            }
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// Forwards one request to `addr` as `proto` says, within the request
/// deadline. The body is taken only once a connection is open, so that
/// after a failure to connect the request can go to another endpoint. A
/// `101` answer's body is the switched connection.
pub async fn send<B: OutBody>(
    clients: &Clients<B>,
    proto: Protocol<'_>,
    addr: SocketAddr,
    head: &impl Head,
    body: &mut Option<B>,
    deadlines: Deadlines,
) -> Result<Response<UpstreamBody>, Error>
where
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Upgrades need HTTP/1.1 connections, kept apart from those on which
    // the backend may have chosen HTTP/2.
    let upgrade = head.upgrade();
    let key = (proto.id ^ u64::from(upgrade), addr);
    // Only a body still to come has a pace to follow.
    let pace = body
        .as_ref()
        .is_some_and(|b| !b.is_end_stream())
        .then(|| Pace::new(deadlines.started));
    let exchange = async {
        let sender = match clients.take(key, deadlines.started) {
            Some(s) => s,
            None => connect(addr, proto, &deadlines, upgrade).await?,
        };
        let http2 = matches!(sender, Sender::H2(_));
        let body = body
            .take()
            .ok_or(Error::Request("request body already sent"))?;
        let req = request(head, proto, addr, Paced::new(body, pace.clone()), http2)?;
        let upstream = |e| Error::Exchange {
            addr,
            source: UpstreamError::Hyper(e),
        };
        match sender {
            Sender::H2(mut s) => {
                let response = s.send_request(req);
                clients.put(key, Sender::H2(s), deadlines.started);
                response.await.map_err(upstream)
            }
            Sender::H1(mut s) => {
                let resp = s.send_request(req).await.map_err(upstream)?;
                // Ready again once this response's body has been read.
                clients.put(key, Sender::H1(s), Instant::now());
                Ok(resp)
            }
        }
    };
    // The deadline follows the body's pace (see `super::pace`).
    let mut deadline = tokio::time::Instant::from_std(deadlines.started + deadlines.request);
    let mut exchange = std::pin::pin!(exchange);
    let mut resp = loop {
        if let Ok(r) = tokio::time::timeout_at(deadline, exchange.as_mut()).await {
            break r?;
        }
        let rechecked = match &pace {
            Some(p) => p.recheck(deadlines.request, tokio::time::Instant::now()),
            None => Err(Stalled::Upstream),
        };
        match rechecked {
            Ok(later) => deadline = later,
            Err(Stalled::Client) => {
                return Err(Error::Exchange {
                    addr,
                    source: UpstreamError::ClientBodyStalled(deadlines.request),
                });
            }
            Err(Stalled::Upstream) => {
                return Err(Error::Timeout {
                    addr,
                    timeout: deadlines.request,
                });
            }
        }
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let switched = if switching {
        if !upgrade {
            return Err(Error::Exchange {
                addr,
                source: UpstreamError::UnexpectedSwitch,
            });
        }
        Some(Switched::Hyper(hyper::upgrade::on(&mut resp)))
    } else {
        None
    };
    let (mut parts, body) = resp.into_parts();
    strip_response_headers(&mut parts.headers, switching);
    let body = match switched {
        Some(s) => UpstreamBody::Switched(Some(s)),
        None => UpstreamBody::Hyper(body),
    };
    Ok(Response::from_parts(parts, body))
}

/// The request as hyper's client takes it: origin-form with `Host` over
/// HTTP/1.1, absolute with the client's host as `:authority` over HTTP/2.
fn request<B>(
    head: &impl Head,
    proto: Protocol<'_>,
    addr: SocketAddr,
    body: B,
    http2: bool,
) -> Result<Request<B>, Error> {
    if *head.method() == Method::CONNECT {
        return Err(Error::Request("CONNECT is not proxied"));
    }
    let bad = |_| Error::Request("invalid request target");
    let path = PathAndQuery::try_from(head.target()).map_err(bad)?;
    let uri = if http2 {
        let authority = head
            .authority()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .map_or_else(|| Authority::try_from(addr.to_string()), Ok)
            .map_err(bad)?;
        let scheme = if proto.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| Error::Request("invalid request target"))?
    } else {
        Uri::from(path)
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method().clone();
    *req.uri_mut() = uri;
    *req.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *req.headers_mut() = head.header_map(http2);
    Ok(req)
}

/// Removes the response's hop-by-hop headers; `Upgrade` and `Connection`
/// stay on a `101` so that the client sees the switch.
fn strip_response_headers(headers: &mut http::HeaderMap, switching: bool) {
    for name in [
        header::TRANSFER_ENCODING,
        header::TE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if !switching {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}
