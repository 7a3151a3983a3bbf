//! What a request is before it is routed: its one host, its normalized
//! path, and the methods and targets no route serves.
//!
//! Methods refused: `CONNECT` (no route tunnels), and `TRACE` unless the
//! route names it among its methods (its echo would show the client what
//! the gateway added to its request: forwarding fields, verified
//! client-certificate facts, an authentication plugin's identity
//! headers). An `OPTIONS` that may not
//! be forwarded (`*`, or `Max-Forwards: 0`, RFC 9110 §7.6.2) the gateway
//! answers itself.
//!
//! One request has one host everywhere: the authority of an absolute-form
//! target (RFC 9112 §3.2.2) or of HTTP/2's `:authority`, else `Host`. A
//! request that names two different hosts is refused (RFC 9113 §8.3.1
//! calls it malformed), so that routing, plugins, client-certificate
//! checks, logs and the upstream can never disagree about it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Method, Request, header};

use crate::proxy::error::ProxyError;
use crate::proxy::server::ClientBody;
use crate::proxy::settings::ProxySettings;
use crate::routing::{
    ClientAuth, PathError, RequestView, Route, RouteTable, normalize_host, normalize_path,
};

/// A matched route, with what the rest of the pipeline needs to know
/// about the request.
#[derive(Clone)]
pub(super) struct Matched {
    pub route: Arc<Route>,
    /// The path to forward, when normalization changed the client's.
    pub normalized: Option<String>,
    /// Whether some host of the table asks for client certificates, and
    /// the setting of this request's host, if it does.
    pub client_auth: Option<Option<Arc<ClientAuth>>>,
    /// The normalized host (lower case, no port), kept only for routes
    /// with plugins or a cache.
    pub host: Option<Box<str>>,
    /// The request's one host as the client wrote it, port included: what
    /// the upstream gets as `Host` or `:authority`.
    pub authority: Option<HeaderValue>,
}

impl Matched {
    /// The path as routed.
    pub fn path<'a>(&'a self, req: &'a Request<ClientBody>) -> &'a str {
        self.normalized
            .as_deref()
            .unwrap_or_else(|| req.uri().path())
    }
}

/// Why a request has no route to follow.
pub(super) enum Unrouted {
    /// `OPTIONS *`, or `OPTIONS` with `Max-Forwards: 0`: the gateway
    /// answers it itself.
    OwnOptions,
    Error(ProxyError),
}

impl From<ProxyError> for Unrouted {
    fn from(e: ProxyError) -> Self {
        Unrouted::Error(e)
    }
}

/// The request's one host: see the module documentation.
fn one_host(req: &Request<ClientBody>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let Some(authority) = req.uri().authority() else {
        return Ok(host.cloned());
    };
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "userinfo in the request's authority",
        ));
    }
    if let Some(h) = host {
        let (mut a, mut b) = ([0u8; 256], [0u8; 256]);
        let named = normalize_host(authority.as_str(), &mut a);
        let sent = h.to_str().ok().and_then(|h| normalize_host(h, &mut b));
        if named.is_none() || named != sent {
            return Err(ProxyError::BadRequest(
                "Host names another host than the request target",
            ));
        }
    }
    HeaderValue::from_str(authority.as_str())
        .map(Some)
        .map_err(|_| ProxyError::BadRequest("invalid authority"))
}

/// A request the gateway answers itself, whatever its route: the one
/// statement of these rules, which the pipeline and `explain` share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnAnswer {
    /// `CONNECT`: no route tunnels (405).
    Connect,
    /// `TRACE` on a route that does not name it (405).
    Trace,
    /// `OPTIONS` with `Max-Forwards: 0`: the gateway is its final
    /// recipient (200, RFC 9110 §7.6.2).
    Options,
}

impl OwnAnswer {
    /// What the client gets.
    pub fn status(self) -> http::StatusCode {
        match self {
            OwnAnswer::Connect | OwnAnswer::Trace => http::StatusCode::METHOD_NOT_ALLOWED,
            OwnAnswer::Options => http::StatusCode::OK,
        }
    }

    pub fn why(self) -> &'static str {
        match self {
            OwnAnswer::Connect => "CONNECT: no route tunnels",
            OwnAnswer::Trace => "TRACE reaches only a route that names it in its methods",
            OwnAnswer::Options => {
                "OPTIONS with Max-Forwards: 0 is answered by the gateway, its final recipient"
            }
        }
    }

    /// Whether the gateway answers a request of `method` and `headers`
    /// itself. `route` is the one it would take: `None` before routing,
    /// when only the rules that need no route apply.
    pub fn of(method: &Method, headers: &HeaderMap, route: Option<&Route>) -> Option<OwnAnswer> {
        if *method == Method::CONNECT {
            Some(OwnAnswer::Connect)
        } else if *method == Method::OPTIONS && max_forwards(headers) == Some(0) {
            Some(OwnAnswer::Options)
        } else if *method == Method::TRACE && route.is_some_and(|r| !r.names_method(method)) {
            Some(OwnAnswer::Trace)
        } else {
            None
        }
    }
}

impl From<OwnAnswer> for Unrouted {
    fn from(a: OwnAnswer) -> Self {
        match a {
            OwnAnswer::Options => Unrouted::OwnOptions,
            OwnAnswer::Connect => ProxyError::MethodNotAllowed(Method::CONNECT).into(),
            OwnAnswer::Trace => ProxyError::MethodNotAllowed(Method::TRACE).into(),
        }
    }
}

/// A request's `Max-Forwards`, when it has one valid value.
fn max_forwards(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::MAX_FORWARDS).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    crate::http::wire::digits(v.as_bytes())
}

/// Finds the request's route, or why it has none; `port` is the local
/// port it arrived on.
pub(super) fn route(
    table: &ArcSwap<RouteTable>,
    settings: &ProxySettings,
    req: &Request<ClientBody>,
    port: u16,
) -> Result<Matched, Unrouted> {
    let method = req.method();
    if let Some(a) = OwnAnswer::of(method, req.headers(), None) {
        return Err(a.into());
    }
    if req.uri().path() == "*" {
        return if *method == Method::OPTIONS {
            Err(Unrouted::OwnOptions)
        } else {
            Err(ProxyError::BadRequest("asterisk-form target is only for OPTIONS").into())
        };
    }
    let authority = one_host(req)?;
    let raw_host = match &authority {
        Some(h) => h
            .to_str()
            .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
        None => "",
    };
    let mut buf = [0u8; 256];
    let host =
        normalize_host(raw_host, &mut buf).ok_or(ProxyError::BadRequest("invalid Host header"))?;
    let path = normalize_path(req.uri().path(), settings.encoded_slashes).map_err(|e| {
        ProxyError::BadRequest(match e {
            PathError::InvalidEncoding => "invalid percent-encoding in the path",
            PathError::EncodedSlash => "encoded slash in the path",
            PathError::Backslash => "backslash in the path",
        })
    })?;
    let view = RequestView {
        host,
        path: &path,
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
        port,
    };
    let table = table.load();
    let route = table.find(&view).ok_or(ProxyError::NoRoute)?.clone();
    if let Some(a) = OwnAnswer::of(method, req.headers(), Some(&route)) {
        return Err(a.into());
    }
    let certs = table.certs();
    let client_auth = certs
        .has_client_auth()
        .then(|| certs.client_auth(host).cloned());
    drop(table);
    Ok(Matched {
        host: (!route.plugins.is_empty() || route.cache.is_some()).then(|| host.into()),
        route,
        client_auth,
        authority,
        normalized: match path {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        },
    })
}
