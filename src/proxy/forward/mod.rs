//! Forwarding: what happens to one request, whichever listener and
//! protocol it came by. [`Worker::handle`] is the map of the pipeline:
//!
//! 1. the request's one host and its normalized path ([`request`]), the
//!    same for routing, plugins, TLS checks, logs and the upstream;
//!    `CONNECT` is refused, `OPTIONS *` answered;
//! 2. the route, from one snapshot of the table;
//! 3. client-certificate and HTTPS-redirect rules ([`respond`]);
//! 4. the request phase of the route's plugins, which may answer early
//!    ([`plugins`]);
//! 5. for routes with a `proxyCache`, the cache ([`cache`]): it may answer
//!    from a stored response, or have the request coalesced with another,
//!    and stores what the upstream answers;
//! 6. the upstream request head ([`head`]) and the attempts on endpoints,
//!    with retries ([`attempts`]);
//! 7. the response phase of the plugins, then the headers the gateway
//!    adds (HSTS), and the metrics.
//!
//! Every failure is a [`ProxyError`], answered through one mapping.

mod attempts;
mod cache;
mod head;
mod plugins;
mod request;
mod respond;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode, header};
use tracing::{debug, warn};

use super::body::{RequestBody, ResponseBody, error_response};
use super::error::ProxyError;
use super::server::{ClientBody, ClientInfo, ClientUpgrade, Handler, SendTimeout};
use super::settings::ProxySettings;
use crate::http::client::{Clients, Deadlines, Pool};
use crate::metrics::RouteMetrics;
use crate::routing::RouteTable;
use head::ForwardHead;
use plugins::UpstreamChanges;
use request::Matched;

/// What every worker shares: the live table and the settings.
pub struct Shared {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub settings: Arc<ProxySettings>,
    /// The proxy cache's storages and flights.
    pub cache: Arc<crate::cache::Stores>,
}

/// One worker's view: the shared state plus its own connection pools.
#[derive(Clone)]
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: Arc<Pool>,
    /// Connections to backends with TLS or HTTP/2.
    pub clients: Arc<Clients<RequestBody>>,
}

/// The metrics of requests that matched no route, or that were refused
/// before routing (an unreadable head).
pub(super) fn unmatched() -> &'static RouteMetrics {
    static M: OnceLock<RouteMetrics> = OnceLock::new();
    M.get_or_init(|| RouteMetrics::new("unmatched".into()))
}

impl Handler for Worker {
    type Body = ResponseBody;

    fn handle(
        &self,
        req: Request<ClientBody>,
        client: &ClientInfo,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        Worker::handle(self, req, client)
    }

    fn refused(&self, status: StatusCode) {
        unmatched().record(status.as_u16(), Duration::ZERO, Instant::now());
    }
}

impl Worker {
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let settings = &self.shared.settings;
        let matched = match request::route(&self.shared.table, settings, &req) {
            Ok(m) => m,
            Err(request::Unrouted::OptionsAsterisk) => {
                let resp = respond::options_asterisk();
                unmatched().record(resp.status().as_u16(), start.elapsed(), start);
                return resp;
            }
            Err(request::Unrouted::Error(e)) => {
                debug!(host = ?req.headers().get(header::HOST), path = req.uri().path(), error = %e, "request not routed");
                let resp = match &e {
                    ProxyError::MethodNotAllowed(_) => respond::method_not_allowed(&e),
                    _ => error_response(&e),
                };
                unmatched().record(resp.status().as_u16(), start.elapsed(), start);
                return resp;
            }
        };
        let route = matched.route.clone();
        if let Some(Some(auth)) = &matched.client_auth
            && let Err(e) = respond::check_client(auth, client, route.https_redirect.is_some())
        {
            let resp = error_response(&e);
            route
                .metrics
                .record(resp.status().as_u16(), start.elapsed(), start);
            return resp;
        }
        if let (Some(code), false) = (route.https_redirect, client.tls) {
            let resp = respond::redirect(
                code,
                matched.authority.as_ref(),
                req.uri(),
                settings.https_redirect_port,
            );
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
            let path = matched.path(&req);
            let host = matched.host.as_deref().unwrap_or("");
            match plugins::run_plugins(&route, path, host, &req, client).await {
                Ok(done) => effects = Some(done),
                Err(resp) => {
                    let resp = match &phase {
                        Some((headers, method)) => {
                            plugins::response_phase(&route, headers, method, None, resp)
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
        let forwarded = if route.cache.is_some() {
            let consumer = consumer.as_deref();
            cache::serve(
                self,
                &matched,
                req,
                client,
                start,
                upstream_changes,
                consumer,
            )
            .await
        } else {
            self.forward(&matched, req, client, start, upstream_changes)
                .await
        };
        let mut resp = match forwarded {
            Ok(resp) => resp,
            Err(e) => {
                if let ProxyError::Client(_) = e {
                    debug!(route = %route.name, error = %e, "request failed on the client's side");
                } else {
                    warn!(route = %route.name, error = %e, "request failed");
                }
                error_response(&e)
            }
        };
        if let Some((headers, guards)) = response_changes {
            resp.headers_mut().extend(headers);
            if !guards.is_empty() {
                resp = resp.map(|body| ResponseBody::Guarded(Box::new(body), guards));
            }
        }
        if let Some((headers, method)) = &phase {
            resp = plugins::response_phase(&route, headers, method, consumer.as_deref(), resp);
        }
        if client.tls
            && let Some(hsts) = &settings.hsts
        {
            resp.headers_mut()
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
        if let Some(t) = route.timeouts.send {
            resp.extensions_mut().insert(SendTimeout(t));
        }
        let now = Instant::now();
        route
            .metrics
            .record(resp.status().as_u16(), now - start, now);
        resp
    }

    async fn forward(
        &self,
        matched: &Matched,
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
        let websocket = route.websocket && head::is_websocket_upgrade(req.headers());
        let client_upgrade = websocket.then(|| ClientUpgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let body = RequestBody::new(body, changes.as_ref().and_then(|c| c.body_limit));
        if let Some(auth) = &matched.client_auth {
            respond::client_certificate_headers(&mut parts.headers, auth.is_some(), client);
        }
        let mut host = matched.authority.clone();
        let mut target = respond::target(&parts.uri, matched.normalized.as_deref());
        if let Some(c) = changes {
            if let Some(path) = c.path {
                target = Cow::Owned(path);
            }
            if let Some(h) = c.host {
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
                target = Cow::Owned(plugins::without_query_params(&target, &c.remove_query));
            }
        }
        let head = ForwardHead {
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
