//! The proxy's one error type and its one mapping to HTTP responses.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode, header};

use super::body::ResponseBody;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches")]
    NoRoute,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
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
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: super::upstream::UpstreamError,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
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

    /// A short plain-text answer. Details stay in the log: clients learn
    /// the class of failure, not the addresses of the endpoints.
    pub fn to_response(&self) -> Response<ResponseBody> {
        let status = self.status();
        let limit;
        let text = match self {
            ProxyError::NoRoute => "no route",
            ProxyError::BadRequest(why) => why,
            ProxyError::ClientCertificateRequired => "client certificate required",
            ProxyError::Misdirected => "misdirected request",
            ProxyError::NoEndpoint { .. } => "no healthy upstream",
            ProxyError::Connect { .. } => "upstream connect error",
            ProxyError::Upstream { .. } => "upstream error",
            ProxyError::ConnectTimeout { .. } => "upstream connect timeout",
            ProxyError::UpstreamTimeout { .. } => "upstream request timeout",
            ProxyError::BodyTooLarge { limit: max } => {
                limit = format!("the body may be at most {max} bytes");
                &limit
            }
        };
        let body = format!(
            "{} {}: {text}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}
