//! The downstream side: serving clients.
//!
//! HTTP/1.1 is served by the proxy's own engine on every listener, plain
//! and TLS alike ([`h1`], generic over the byte stream), so that both
//! follow the same parser, framing rules, limits and timeouts. HTTP/2 (h2c
//! after the preface, h2 by ALPN) is served by hyper under the proxy's own
//! supervision of heads, idle time and stalled sends ([`h2`]). HTTP/3 is
//! h3's framing over QUIC under the same timeouts ([`h3`]).
//!
//! The server knows nothing of routes: it hands each request to a
//! [`Handler`] and writes back what it returns.

mod body;
mod body_error;
pub mod h1;
mod h1_body;
mod h1_write;
pub mod h2;
mod h2_watch;
pub mod h3;
mod h3_body;
mod stall;
mod upgrade;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};

pub use body::{ClientBody, ClientBodyError};
pub use upgrade::ClientUpgrade;

use crate::http::client::UpstreamError;
use crate::proxy::settings::ProxySettings;

/// What the connections of one listener share.
pub struct Server<H> {
    pub handler: H,
    pub settings: std::sync::Arc<ProxySettings>,
    /// hyper's HTTP/2 server, built once from the settings.
    pub h2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
}

impl<H> Server<H> {
    pub fn new(handler: H, settings: std::sync::Arc<ProxySettings>) -> Self {
        let h2 = h2::builder(&settings.http2);
        Server {
            handler,
            settings,
            h2,
        }
    }
}

/// What serves the requests a connection reads.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response body the handler answers with.
    type Body: http_body::Body<Data = Bytes, Error = UpstreamError> + Send + Unpin + 'static;

    fn handle(
        &self,
        req: Request<ClientBody>,
        client: &ClientInfo,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// A request was refused before it could be handled (an unreadable
    /// head), with `status`.
    fn refused(&self, status: StatusCode);
}

/// A client connection counted open, by listener and protocol, until
/// dropped.
pub struct Counted(metrics::Gauge);

impl Counted {
    pub fn open(tls: bool, protocol: &'static str) -> Counted {
        Counted(crate::metrics::connections::opened(tls, protocol))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A route's own send timeout, set on a response by the handler: how long
/// the response may make no progress towards the client.
#[derive(Clone, Copy, Debug)]
pub struct SendTimeout(pub Duration);

/// Facts about the client connection, formatted once per connection.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The peer's address, for hashing.
    pub peer_ip: std::net::IpAddr,
    pub ip: HeaderValue,
    pub port: HeaderValue,
    /// The local port the connection arrived on, which selects the
    /// Gateway listeners that may serve its requests.
    pub local_port: u16,
    pub proto: HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client authentication setting the TLS handshake ran under.
    pub client_auth: Option<u64>,
    /// The verified client certificate's subject.
    pub client_subject: Option<HeaderValue>,
    /// The `Alt-Svc` value advertising HTTP/3 on this connection's
    /// responses: set on the HTTPS listener's TCP connections when HTTP/3
    /// is on.
    pub alt_svc: Option<HeaderValue>,
}

impl ClientInfo {
    pub fn new(peer: std::net::SocketAddr, local: std::net::SocketAddr, tls: bool) -> Self {
        let num = |n: u16| HeaderValue::from(n);
        ClientInfo {
            peer_ip: peer.ip(),
            ip: HeaderValue::try_from(peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            port: num(local.port()),
            local_port: local.port(),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            tls,
            client_auth: None,
            client_subject: None,
            alt_svc: None,
        }
    }

    /// Records what the handshake established about the client.
    pub fn set_client_certificate(&mut self, setting: Option<u64>, subject: Option<String>) {
        self.client_auth = setting;
        self.client_subject = subject.and_then(|s| HeaderValue::try_from(s).ok());
    }
}
