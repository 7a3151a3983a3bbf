//! Proxy behaviour that is not per route.

use std::time::Duration;

use crate::http::client::PoolConfig;
use crate::routing::EncodedSlashes;

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
    /// Time a client has to send a whole request head, from its first
    /// byte (for a connection's first request, from the accept; for
    /// HTTP/2, from the first frame of the head).
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request: HTTP/1.1
    /// between requests, HTTP/2 while no stream is open.
    pub keepalive_timeout: Duration,
    /// How long a response may make no progress towards a client that
    /// does not read it, when a route sets none; then both the client's
    /// and the upstream's connection close.
    pub send_timeout: Duration,
    /// HTTP/2 limits and liveness checks.
    pub http2: Http2Settings,
    /// What `%2F` and `%5C` in a path mean, for routing and forwarding
    /// alike.
    pub encoded_slashes: EncodedSlashes,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// The HTTPS port clients reach (the load balancer's, not the
    /// listener's), for redirects; 443 is left out of the URL.
    pub https_redirect_port: u16,
    /// `Strict-Transport-Security` value added to responses sent over TLS
    /// that do not carry one already.
    pub hsts: Option<http::HeaderValue>,
    pub pool: PoolConfig,
    /// TLS handshakes and session resumption.
    pub tls: TlsSettings,
    /// HTTP/3 on the HTTPS port; `None` when off.
    pub http3: Option<Http3Settings>,
}

/// HTTP/3 (QUIC) limits. Idle time, request heads and header lists follow
/// the HTTP/1.1 and HTTP/2 settings: one set of rules for every protocol.
#[derive(Clone, Copy, Debug)]
pub struct Http3Settings {
    /// Request streams a client may have open at once on a connection.
    pub max_streams: u32,
    /// QUIC connections each worker serves at once; new ones past it are
    /// refused.
    pub max_connections: usize,
}

impl Default for Http3Settings {
    fn default() -> Self {
        Http3Settings {
            max_streams: 128,
            max_connections: 10_000,
        }
    }
}

/// TLS handshakes and session resumption.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// Time a client has to complete its handshake, from the accept.
    pub handshake_timeout: Duration,
    /// Handshakes in progress per worker; a new connection past it makes
    /// the one that has waited longest go.
    pub max_pending_handshakes: usize,
    /// Threads, shared by the workers, that process ClientHellos (key
    /// exchange, signature); 0 does it on the workers' event loops.
    pub handshake_threads: usize,
    /// How long a session ticket key encrypts new tickets. Tickets live
    /// as long, so a key decrypts for one more period after it retires.
    pub ticket_key_rotation: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            handshake_threads: std::thread::available_parallelism().map_or(1, usize::from),
            ticket_key_rotation: Duration::from_secs(6 * 3600),
        }
    }
}

/// HTTP/2 connection limits (RFC 9113 §6.5.2) and keep-alive pings.
#[derive(Clone, Copy, Debug)]
pub struct Http2Settings {
    /// Streams a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest header list accepted, in the RFC's own measure (names and
    /// values plus 32 bytes a field).
    pub max_header_list_size: u32,
    /// A PING is sent after this long without a frame from the client...
    pub keepalive_interval: Duration,
    /// ...and the connection closes when it is not answered within this.
    pub keepalive_timeout: Duration,
    /// Streams a client may open and reset before the server accepted
    /// them, at once (the "rapid reset" bound).
    pub max_pending_accept_reset_streams: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 128,
            max_header_list_size: 64 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_pending_accept_reset_streams: 20,
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            trust_forwarded: false,
            header_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            http2: Http2Settings::default(),
            encoded_slashes: EncodedSlashes::default(),
            shutdown_grace: Duration::from_secs(25),
            https_redirect_port: 443,
            hsts: None,
            pool: PoolConfig::default(),
            tls: TlsSettings::default(),
            http3: None,
        }
    }
}
