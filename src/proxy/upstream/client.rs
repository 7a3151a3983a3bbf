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
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::debug;

use super::{Deadlines, PoolConfig, UpstreamError};
use crate::proxy::body::{OverLimit, RequestBody, ResponseBody};
use crate::proxy::client::ClientUpgrade;
use crate::proxy::error::ProxyError;
use crate::proxy::headers::RequestHead;
use crate::routing::BackendProtocol;

type Key = (u64, SocketAddr);

enum Entry {
    H2(http2::SendRequest<RequestBody>),
    /// Idle senders with the time they were put back, newest last.
    H1(Vec<(http1::SendRequest<RequestBody>, Instant)>),
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

/// One worker's connections to protocol backends.
pub struct Clients {
    conns: Mutex<HashMap<Key, Entry>>,
    config: PoolConfig,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    pub fn new(config: PoolConfig) -> Self {
        Clients {
            conns: Mutex::new(HashMap::new()),
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection that can take a request now: the shared HTTP/2 one,
    /// or an idle HTTP/1.1 one whose previous response has completed.
    fn take(&self, key: Key, now: Instant) -> Option<Sender> {
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

    fn put(&self, key: Key, sender: Sender, now: Instant) {
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
async fn connect(
    addr: SocketAddr,
    proto: &BackendProtocol,
    deadlines: &Deadlines,
    upgrade: bool,
) -> Result<Sender, ProxyError> {
    let timeout = deadlines.connect;
    let open = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let http2 = proto.protocol.http2_only();
        let upstream = |source| ProxyError::Upstream { addr, source };
        match &proto.tls {
            None => handshake(TokioIo::new(tcp), http2)
                .await
                .map_err(|e| upstream(UpstreamError::Hyper(e))),
            Some(tls) => {
                let config = if upgrade {
                    &tls.config_http1
                } else {
                    &tls.config
                };
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let stream = connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .map_err(|e| upstream(UpstreamError::Tls(e)))?;
                let alpn_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                handshake(TokioIo::new(stream), http2 || alpn_h2)
                    .await
                    .map_err(|e| upstream(UpstreamError::Hyper(e)))
            }
        }
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::ConnectTimeout { addr, timeout }),
    }
}

async fn handshake<T>(io: TokioIo<T>, http2: bool) -> Result<Sender, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
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

/// Forwards one request to `addr` as `proto` says. The body is taken only
/// once a connection is open, so that after a failure to connect the
/// request can go to another endpoint.
#[allow(clippy::too_many_arguments)] // one request's parts, passed through as they are
pub async fn send(
    clients: &Clients,
    proto: &BackendProtocol,
    addr: SocketAddr,
    head: &RequestHead<'_>,
    body: &mut Option<RequestBody>,
    over_limit: &mut OverLimit,
    deadlines: Deadlines,
    client_upgrade: &mut Option<ClientUpgrade>,
) -> Result<Response<ResponseBody>, ProxyError> {
    // Upgrades need HTTP/1.1 connections, kept apart from those on which
    // the backend may have chosen HTTP/2.
    let upgrade = client_upgrade.is_some();
    let key = (proto.id ^ u64::from(upgrade), addr);
    let exchange = async {
        let sender = match clients.take(key, deadlines.started) {
            Some(s) => s,
            None => connect(addr, proto, &deadlines, upgrade).await?,
        };
        let http2 = matches!(sender, Sender::H2(_));
        let body = body
            .take()
            .ok_or(ProxyError::BadRequest("request body already sent"))?;
        let req = request(head, proto, addr, body, http2)?;
        let upstream = |e| ProxyError::Upstream {
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
    let mut resp = super::bounded(std::pin::pin!(exchange), over_limit, addr, deadlines).await?;
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(client) = client_upgrade.take() else {
            return Err(ProxyError::Upstream {
                addr,
                source: UpstreamError::Codec(super::CodecError::Head("unexpected 101 response")),
            });
        };
        splice(addr, client, hyper::upgrade::on(&mut resp));
    }
    let (mut parts, body) = resp.into_parts();
    strip_response_headers(&mut parts.headers, switching);
    Ok(Response::from_parts(parts, ResponseBody::Hyper(body)))
}

/// The request as hyper's client takes it: origin-form with `Host` over
/// HTTP/1.1, absolute with the client's host as `:authority` over HTTP/2.
fn request(
    head: &RequestHead<'_>,
    proto: &BackendProtocol,
    addr: SocketAddr,
    body: RequestBody,
    http2: bool,
) -> Result<Request<RequestBody>, ProxyError> {
    if *head.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not proxied"));
    }
    let bad = |_| ProxyError::BadRequest("invalid request target");
    let path = PathAndQuery::try_from(head.target).map_err(bad)?;
    let uri = if http2 {
        let authority = head
            .host
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
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?
    } else {
        Uri::from(path)
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
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

/// Joins the client's upgraded connection to the upstream's.
fn splice(addr: SocketAddr, client: ClientUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (mut client, upstream) = match tokio::join!(client.wait(), upstream) {
            (Ok(c), Ok(u)) => (c, u),
            (Err(e), _) => {
                debug!(%addr, error = %e, "client upgrade did not complete");
                return;
            }
            (_, Err(e)) => {
                debug!(%addr, error = %e, "upstream upgrade did not complete");
                return;
            }
        };
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            debug!(%addr, error = %e, "upgraded connection ended");
        }
    });
}
