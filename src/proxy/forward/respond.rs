//! Answers the forwarding layer gives itself, and the client-certificate
//! rules: redirects to HTTPS, `OPTIONS *`, and what an upstream learns of
//! a verified client.

use std::borrow::Cow;

use http::uri::Uri;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::proxy::body::ResponseBody;
use crate::proxy::error::ProxyError;
use crate::proxy::server::ClientInfo;
use crate::routing::ClientAuth;

static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
static SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");

/// Methods the gateway forwards, for `Allow` (RFC 9110 §10.2.1).
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

/// The answer to an `OPTIONS` the gateway may not forward: `OPTIONS *`
/// is about the gateway itself, not about a route (RFC 9110 §9.3.7), and
/// one with `Max-Forwards: 0` is the gateway's to answer as its final
/// recipient (RFC 9110 §7.6.2).
pub(super) fn own_options() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    resp
}

/// `405` for `CONNECT` (no route tunnels) and for `TRACE` on a route that
/// does not name it.
pub(super) fn method_not_allowed(e: &ProxyError) -> Response<ResponseBody> {
    let mut resp = crate::proxy::body::error_response(e);
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    resp
}

/// Whether a request may reach a host that asks for client certificates:
/// over TLS, on a connection whose handshake ran under that host's setting
/// (HTTP/2 lets a client reuse a connection made for another name, which
/// would skip the check: such requests get `421`, and the client retries
/// on a connection of its own). Plain HTTP gets `403`, unless the route
/// redirects it to HTTPS first.
pub(super) fn check_client(
    auth: &ClientAuth,
    client: &ClientInfo,
    redirects: bool,
) -> Result<(), ProxyError> {
    if !client.tls {
        return if redirects {
            Ok(())
        } else {
            Err(ProxyError::ClientCertificateRequired)
        };
    }
    if client.client_auth != Some(auth.id) {
        return Err(ProxyError::Misdirected);
    }
    Ok(())
}

/// Replaces whatever the client sent as `ssl-client-*` headers: on hosts
/// with client authentication by the verified facts, elsewhere by nothing,
/// so that an upstream can never be fooled by a client's own values.
pub(super) fn client_certificate_headers(
    headers: &mut http::HeaderMap,
    own_host: bool,
    client: &ClientInfo,
) {
    headers.remove(&SSL_CLIENT_VERIFY);
    headers.remove(&SSL_CLIENT_SUBJECT_DN);
    if !own_host {
        return;
    }
    match &client.client_subject {
        Some(subject) => {
            headers.insert(
                SSL_CLIENT_VERIFY.clone(),
                HeaderValue::from_static("SUCCESS"),
            );
            headers.insert(SSL_CLIENT_SUBJECT_DN.clone(), subject.clone());
        }
        None => {
            headers.insert(SSL_CLIENT_VERIFY.clone(), HeaderValue::from_static("NONE"));
        }
    }
}

/// The same URL over HTTPS: host without its port, then `https_port`
/// unless it is 443, then the path and query as the client sent them.
pub(super) fn redirect(
    code: StatusCode,
    host: Option<&HeaderValue>,
    uri: &Uri,
    https_port: u16,
) -> Response<ResponseBody> {
    let raw = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    // Without a port: `[v6]:port`, `[v6]`, `name:port`, `name`.
    let host = match raw.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => raw,
    };
    let port = match https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{port}{path}");
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = code;
    match HeaderValue::try_from(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}

/// The request target as an upstream HTTP/1.1 server expects it: the
/// normalized path when normalization changed it, then the query.
pub(super) fn target<'a>(uri: &'a Uri, normalized: Option<&str>) -> Cow<'a, str> {
    match (normalized, uri.query()) {
        (Some(p), Some(q)) => Cow::Owned(format!("{p}?{q}")),
        (Some(p), None) => Cow::Owned(p.to_owned()),
        (None, _) => Cow::Borrowed(uri.path_and_query().map_or("/", |pq| pq.as_str())),
    }
}
