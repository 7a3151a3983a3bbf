//! The proxy's one error type and its one mapping to HTTP statuses.
//!
//! Every way a request can fail, from an unreadable head to an upstream
//! that timed out, is a [`ProxyError`]; [`ProxyError::status`] is the only
//! place that decides what the client is told, and
//! [`ProxyError::blames_endpoint`] the only place that decides whether an
//! endpoint's health pays for it.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::http::client::{self, UpstreamError};
use crate::http::wire::WireError;

/// How a client failed its own request while it was being forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// The request body's framing was broken (a malformed chunk).
    Framing,
    /// The client went away before sending its whole body.
    Aborted,
    /// The client sent none of the rest of its body for the request
    /// timeout (see `http::client::pace`).
    Stalled,
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("unreadable request: {0}")]
    Request(WireError),
    #[error("no route matches")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method {0} is not served")]
    MethodNotAllowed(http::Method),
    #[error("this host requires a client certificate")]
    ClientCertificateRequired,
    #[error("the connection was made for another host; open one for this host")]
    Misdirected,
    #[error("route {route} has no ready endpoint")]
    NoEndpoint { route: String },
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("upstream {addr} sent no response within {timeout:?}")]
    UpstreamTimeout { addr: SocketAddr, timeout: Duration },
    #[error("the request body is larger than the {limit} bytes allowed")]
    BodyTooLarge { limit: u64 },
    #[error("the client failed its request body ({0:?})")]
    Client(ClientFault),
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: UpstreamError,
    },
}

impl From<client::Error> for ProxyError {
    fn from(e: client::Error) -> Self {
        match e {
            client::Error::Connect { addr, source } => ProxyError::Connect { addr, source },
            client::Error::ConnectTimeout { addr, timeout } => {
                ProxyError::ConnectTimeout { addr, timeout }
            }
            client::Error::Timeout { addr, timeout } => {
                ProxyError::UpstreamTimeout { addr, timeout }
            }
            client::Error::Exchange { addr, source } => ProxyError::Upstream { addr, source },
            client::Error::Request(why) => ProxyError::BadRequest(why),
        }
    }
}

/// Not a registered status: nginx's, for a client that closed its
/// connection before its request was answered. It only reaches logs and
/// metrics; the client is gone.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Request(e) => e.status(),
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) | ProxyError::Client(ClientFault::Framing) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::Client(ClientFault::Aborted) => {
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ProxyError::Client(ClientFault::Stalled) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientCertificateRequired => StatusCode::FORBIDDEN,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::UpstreamTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// A short text for the client. Details stay in the log: clients learn
    /// the class of failure, not the addresses of the endpoints.
    pub fn client_text(&self) -> std::borrow::Cow<'static, str> {
        let text = match self {
            ProxyError::Request(e) => return e.to_string().into(),
            ProxyError::NoRoute => "no route",
            ProxyError::BadRequest(why) => why,
            ProxyError::MethodNotAllowed(_) => "method not allowed",
            ProxyError::ClientCertificateRequired => "client certificate required",
            ProxyError::Misdirected => "misdirected request",
            ProxyError::NoEndpoint { .. } => "no healthy upstream",
            ProxyError::Connect { .. } => "upstream connect error",
            ProxyError::Upstream { .. } => "upstream error",
            ProxyError::ConnectTimeout { .. } => "upstream connect timeout",
            ProxyError::UpstreamTimeout { .. } => "upstream request timeout",
            ProxyError::Client(ClientFault::Framing) => "invalid request body",
            ProxyError::Client(ClientFault::Aborted) => "request body incomplete",
            ProxyError::Client(ClientFault::Stalled) => "request body stalled",
            ProxyError::BodyTooLarge { limit } => {
                return format!("the body may be at most {limit} bytes").into();
            }
        };
        text.into()
    }

    /// Whether the failure says something about the endpoint's health.
    /// Only the upstream's own faults count: a client that breaks its
    /// body, leaves, or sends too much must never eject a healthy pod.
    pub fn blames_endpoint(&self) -> bool {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::UpstreamTimeout { .. } => true,
            ProxyError::Upstream { source, .. } => !matches!(
                source,
                UpstreamError::ClientBody | UpstreamError::ClientBodyStalled(_)
            ),
            _ => false,
        }
    }
}
