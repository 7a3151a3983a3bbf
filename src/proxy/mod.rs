//! The data plane: an HTTP/1.1 and HTTP/2 (h2c) reverse proxy.
//!
//! Per request the proxy loads one snapshot of the route table, clones the
//! matched route out of it (so that a table swap never affects a request in
//! flight), picks an endpoint and forwards on a pooled keep-alive
//! connection, streaming bodies both ways without buffering them.
//!
//! Plain HTTP/1.1 is served by the proxy's own server (`h1`) and spoken to
//! upstreams by its own client (`upstream`): the common path runs as one
//! state machine per connection, with no task or channel in between.
//! hyper serves HTTP/2 and TLS listeners and speaks to HTTP/2 and TLS
//! backends, where its generality pays for itself.

mod attempts;
mod body;
mod client;
mod error;
mod h1;
mod headers;
mod health;
mod server;
mod service;
mod socket;
mod timer;
mod tls;
mod upstream;

use std::time::Duration;

pub use body::ResponseBody;
pub use error::ProxyError;
pub use health::HealthChecks;
pub use server::ProxyServer;
pub use service::Shared;
pub use tls::{TlsSetupError, self_signed};
pub use upstream::{PoolConfig, UpstreamError};

/// Proxy behaviour that is not per route.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Connect timeout when a route sets none.
    pub connect_timeout: Duration,
    /// Time to the upstream's response head when a route sets none.
    pub request_timeout: Duration,
    /// Trust `X-Forwarded-*` headers from clients (set when another proxy
    /// or load balancer in front already sets them).
    pub trust_forwarded: bool,
    /// Time a client has to send a request head.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// The HTTPS port clients reach (the load balancer's, not the
    /// listener's), for redirects; 443 is left out of the URL.
    pub https_redirect_port: u16,
    /// `Strict-Transport-Security` value added to responses sent over TLS
    /// that do not carry one already.
    pub hsts: Option<http::HeaderValue>,
    pub pool: PoolConfig,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            trust_forwarded: false,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(25),
            https_redirect_port: 443,
            hsts: None,
            pool: PoolConfig::default(),
        }
    }
}
