//! Handling one request: find the route, pick an endpoint, forward.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::uri::Uri;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body as _;
use tracing::{debug, warn};

use super::ProxySettings;
use super::attempts;
use super::body::Guards;
use super::body::{RequestBody, ResponseBody};
use super::client::{ClientBody, ClientUpgrade};
use super::error::ProxyError;
use super::headers::{self, ClientInfo, RequestHead};
use super::upstream::{Clients, Deadlines, Pool};
use crate::metrics::{PLUGIN_REJECTIONS, RouteMetrics};
use crate::plugins::transform::compress;
use crate::plugins::{Outcome, RequestCtx, ResponseCtx, ResponseParts};
use crate::routing::{ClientAuth, RequestView, Route, RouteTable, normalize_host, normalize_path};

/// What every worker shares: the live table and the settings.
pub struct Shared {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub settings: ProxySettings,
}

/// One worker's view: the shared state plus its own connection pool.
#[derive(Clone)]
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: Arc<Pool>,
    /// Connections to backends with TLS or HTTP/2.
    pub clients: Arc<Clients>,
}

/// The metrics of requests that matched no route, or that were refused
/// before routing (an unreadable head).
pub(super) fn unmatched() -> &'static RouteMetrics {
    static M: OnceLock<RouteMetrics> = OnceLock::new();
    M.get_or_init(|| RouteMetrics::new("unmatched".into()))
}

/// A matched route and, when the path had to be normalized, the path to
/// forward instead of the client's.
struct Matched {
    route: Arc<Route>,
    normalized: Option<String>,
    /// Whether some host of the table asks for client certificates, and
    /// the setting of this request's host, if it does.
    client_auth: Option<Option<Arc<ClientAuth>>>,
    /// The normalized host, kept only for routes with plugins.
    host: Option<Box<str>>,
}

static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
static SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");

impl Worker {
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let matched = match self.route_for(&req) {
            Ok(m) => m,
            Err(e) => {
                debug!(host = ?req.headers().get(header::HOST), path = req.uri().path(), error = %e, "request not routed");
                let resp = e.to_response();
                unmatched().record(resp.status().as_u16(), start.elapsed(), start);
                return resp;
            }
        };
        let route = matched.route.clone();
        if let Some(Some(auth)) = &matched.client_auth
            && let Err(e) = check_client(auth, client, route.https_redirect.is_some())
        {
            let resp = e.to_response();
            route
                .metrics
                .record(resp.status().as_u16(), start.elapsed(), start);
            return resp;
        }
        if let (Some(code), false) = (route.https_redirect, client.tls) {
            let resp = redirect(code, &req, self.shared.settings.https_redirect_port);
            route
                .metrics
                .record(resp.status().as_u16(), start.elapsed(), start);
            return resp;
        }
        let mut effects = None;
        // Kept for the response phase, only when a plugin has one.
        let mut phase = None;
        if !route.plugins.is_empty() {
            if route.plugins.iter().any(|p| p.has_response_phase()) {
                phase = Some((req.headers().clone(), req.method().clone()));
            }
            match run_plugins(&route, &matched, &req, client).await {
                Ok(done) => effects = Some(done),
                Err(resp) => {
                    let resp = match &phase {
                        Some((headers, method)) => {
                            response_phase(&route, headers, method, None, resp)
                        }
                        None => resp,
                    };
                    route
                        .metrics
                        .record(resp.status().as_u16(), start.elapsed(), start);
                    return resp;
                }
            }
        }
        let consumer = effects.as_ref().and_then(|e| e.consumer.clone());
        let (upstream_changes, response_changes) = match effects {
            Some(e) => (Some(e.upstream), Some((e.response_headers, e.guards))),
            None => (None, None),
        };
        let mut resp = match self
            .forward(matched, req, client, start, upstream_changes)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                warn!(route = %route.name, error = %e, "request failed");
                e.to_response()
            }
        };
        if let Some((headers, guards)) = response_changes {
            resp.headers_mut().extend(headers);
            if !guards.is_empty() {
                resp = resp.map(|body| ResponseBody::Guarded(Box::new(body), guards));
            }
        }
        if let Some((headers, method)) = &phase {
            resp = response_phase(&route, headers, method, consumer.as_deref(), resp);
        }
        if client.tls
            && let Some(hsts) = &self.shared.settings.hsts
        {
            resp.headers_mut()
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
        let now = Instant::now();
        route
            .metrics
            .record(resp.status().as_u16(), now - start, now);
        resp
    }

    fn route_for(&self, req: &Request<ClientBody>) -> Result<Matched, ProxyError> {
        // An absolute-form target or an HTTP/2 :authority names the host;
        // otherwise the Host header does.
        let raw_host = match req.uri().authority() {
            Some(a) => a.as_str(),
            None => match req.headers().get(header::HOST) {
                Some(h) => h
                    .to_str()
                    .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
                None => "",
            },
        };
        let mut buf = [0u8; 256];
        let host = normalize_host(raw_host, &mut buf)
            .ok_or(ProxyError::BadRequest("invalid Host header"))?;
        let path = normalize_path(req.uri().path());
        let view = RequestView {
            host,
            path: &path,
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
        };
        let table = self.shared.table.load();
        let route = table.find(&view).ok_or(ProxyError::NoRoute)?.clone();
        let certs = table.certs();
        let client_auth = certs
            .has_client_auth()
            .then(|| certs.client_auth(host).cloned());
        drop(table);
        Ok(Matched {
            host: (!route.plugins.is_empty()).then(|| host.into()),
            route,
            client_auth,
            normalized: match path {
                std::borrow::Cow::Owned(p) => Some(p),
                std::borrow::Cow::Borrowed(_) => None,
            },
        })
    }

    async fn forward(
        &self,
        matched: Matched,
        mut req: Request<ClientBody>,
        client: &ClientInfo,
        started: Instant,
        changes: Option<UpstreamChanges>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let route = &matched.route;
        let keys = route.request_keys(req.headers(), req.uri().query(), client.peer_ip);
        let settings = &self.shared.settings;
        let deadlines = Deadlines {
            started,
            connect: route.timeouts.connect.unwrap_or(settings.connect_timeout),
            request: route.timeouts.request.unwrap_or(settings.request_timeout),
        };
        let websocket = route.websocket && headers::is_websocket_upgrade(req.headers());
        let client_upgrade = websocket.then(|| ClientUpgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let body = RequestBody::new(body, changes.as_ref().and_then(|c| c.body_limit));
        if let Some(auth) = &matched.client_auth {
            client_certificate_headers(&mut parts.headers, auth.is_some(), client);
        }
        let mut host = match parts.uri.authority() {
            Some(a) => Some(
                HeaderValue::from_str(a.as_str())
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?,
            ),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let mut target = target(&parts.uri, matched.normalized.as_deref());
        if let Some(c) = changes {
            if let Some(path) = c.path {
                target = Cow::Owned(path);
            }
            if let Some(h) = c.host {
                parts.headers.insert(header::HOST, h.clone());
                host = Some(h);
            }
            for (name, value) in c.headers {
                match value {
                    Some(v) => {
                        parts.headers.insert(name, v);
                    }
                    None => {
                        parts.headers.remove(name);
                    }
                }
            }
            if !c.remove_query.is_empty() {
                target = Cow::Owned(without_query_params(&target, &c.remove_query));
            }
        }
        let head = RequestHead {
            method: &parts.method,
            target: &target,
            headers: &parts.headers,
            host: host.as_ref(),
            client,
            upgrade: websocket,
            trust_forwarded: settings.trust_forwarded,
        };
        attempts::send(self, route, keys, &head, body, deadlines, client_upgrade).await
    }
}

/// What plugins change about the request the upstream gets.
struct UpstreamChanges {
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    remove_query: Vec<Box<str>>,
    path: Option<String>,
    host: Option<HeaderValue>,
    /// Request body bytes allowed, counted as the body streams.
    body_limit: Option<u64>,
}

/// What the plugins decided for a request they let through.
struct Effects {
    upstream: UpstreamChanges,
    response_headers: http::HeaderMap,
    guards: Guards,
    consumer: Option<Arc<str>>,
}

/// Runs the route's response phases on the response the client gets.
fn response_phase(
    route: &Route,
    request_headers: &http::HeaderMap,
    method: &http::Method,
    consumer: Option<&str>,
    resp: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let ctx = ResponseCtx {
        request_headers,
        method,
        consumer,
        route: &route.name,
    };
    let mut changed = ResponseParts {
        status: parts.status,
        headers: std::mem::take(&mut parts.headers),
        body: None,
        encodings: Vec::new(),
    };
    for plugin in route.plugins.iter().filter(|p| p.has_response_phase()) {
        plugin.response(&ctx, &mut changed);
    }
    let encoder = compress::negotiate(&ctx, &mut changed, body.size_hint().exact());
    parts.status = changed.status;
    parts.headers = changed.headers;
    let body = match changed.body {
        None => body,
        Some(bytes) => {
            // The new body has its own length; the old framing no longer
            // applies.
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            ResponseBody::full(bytes)
        }
    };
    match encoder {
        None => Response::from_parts(parts, body),
        Some(e) => Response::from_parts(parts, ResponseBody::encoded(body, e)),
    }
}

/// `target` without the query parameters named in `remove`.
fn without_query_params(target: &str, remove: &[Box<str>]) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !remove.iter().any(|r| **r == *name)
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Runs the route's plugins on the request. Returns their effects, or the
/// answer a plugin gave instead.
async fn run_plugins(
    route: &Route,
    matched: &Matched,
    req: &Request<ClientBody>,
    client: &ClientInfo,
) -> Result<Effects, Response<ResponseBody>> {
    let path = matched
        .normalized
        .as_deref()
        .unwrap_or_else(|| req.uri().path());
    let mut ctx = RequestCtx {
        client_ip: client.ip.as_bytes(),
        tls: client.tls,
        host: matched.host.as_deref().unwrap_or(""),
        path,
        query: req.uri().query(),
        headers: req.headers(),
        route: &route.name,
        consumer: None,
        response_headers: http::HeaderMap::new(),
        guards: Vec::new(),
        upstream_headers: Vec::new(),
        remove_query: Vec::new(),
        rewrite_path: None,
        rewrite_host: None,
        body_limit: None,
        method: req.method(),
    };
    for plugin in route.plugins.iter() {
        let rejected = match plugin.request(&mut ctx) {
            Outcome::Continue => continue,
            Outcome::Reject(r) => r,
            Outcome::Wait(pending) => match pending.await {
                Ok(w) => {
                    // Usually the only headers so far: take them whole
                    // rather than rehash them one by one.
                    if ctx.response_headers.is_empty() {
                        ctx.response_headers = w.response_headers;
                    } else {
                        ctx.response_headers.extend(w.response_headers);
                    }
                    ctx.upstream_headers.extend(w.upstream_headers);
                    if w.consumer.is_some() {
                        ctx.consumer = w.consumer;
                    }
                    continue;
                }
                Err(r) => *r,
            },
        };
        metrics::counter!(
            PLUGIN_REJECTIONS,
            "route" => route.name.to_string(),
            "plugin" => plugin.name()
        )
        .increment(1);
        let mut resp = Response::new(ResponseBody::full(rejected.body));
        *resp.status_mut() = rejected.status;
        let headers = resp.headers_mut();
        headers.extend(ctx.response_headers);
        headers.extend(rejected.headers);
        return Err(resp);
    }
    Ok(Effects {
        upstream: UpstreamChanges {
            headers: ctx.upstream_headers,
            remove_query: ctx.remove_query,
            path: ctx.rewrite_path,
            host: ctx.rewrite_host,
            body_limit: ctx.body_limit,
        },
        consumer: ctx.consumer,
        response_headers: ctx.response_headers,
        guards: ctx.guards.into_boxed_slice(),
    })
}

/// Whether a request may reach a host that asks for client certificates:
/// over TLS, on a connection whose handshake ran under that host's setting
/// (HTTP/2 lets a client reuse a connection made for another name, which
/// would skip the check: such requests get `421`, and the client retries
/// on a connection of its own). Plain HTTP gets `403`, unless the route
/// redirects it to HTTPS first.
fn check_client(auth: &ClientAuth, client: &ClientInfo, redirects: bool) -> Result<(), ProxyError> {
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
fn client_certificate_headers(headers: &mut http::HeaderMap, own_host: bool, client: &ClientInfo) {
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
fn redirect(
    code: StatusCode,
    req: &Request<ClientBody>,
    https_port: u16,
) -> Response<ResponseBody> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    // Without a port: `[v6]:port`, `[v6]`, `name:port`, `name`.
    let host = match raw.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => raw,
    };
    let port = match https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
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
fn target<'a>(uri: &'a Uri, normalized: Option<&str>) -> Cow<'a, str> {
    match (normalized, uri.query()) {
        (Some(p), Some(q)) => Cow::Owned(format!("{p}?{q}")),
        (Some(p), None) => Cow::Owned(p.to_owned()),
        (None, _) => Cow::Borrowed(uri.path_and_query().map_or("/", |pq| pq.as_str())),
    }
}
