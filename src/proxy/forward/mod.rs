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
//!    with retries ([`attempts`]), or, on a route with `aiProxy`, the
//!    route's AI gateway ([`ai`]);
//! 7. the response phase of the plugins, then the headers the gateway
//!    adds (HSTS; `Alt-Svc` on every response of the HTTPS listener when
//!    HTTP/3 is on), and the metrics.
//!
//! Every failure is a [`ProxyError`], answered through one mapping.

mod ai;
mod attempts;
mod cache;
mod head;
mod mirror;
mod observe;
mod plugins;
mod request;
mod respond;

pub use request::OwnAnswer;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode, header};
use http_body::Body as _;
use tracing::{debug, warn};

use super::body::{FaultProbe, RequestBody, ResponseBody, error_response};
use super::error::ProxyError;
use super::server::{ClientBody, ClientInfo, ClientUpgrade, Handler, SendTimeout};
use super::settings::ProxySettings;
use crate::http::client::{Clients, Deadlines, Pool};
use crate::metrics::{RouteMetrics, live};
use crate::routing::{Route, RouteTable};
use crate::telemetry::Telemetry;
use head::ForwardHead;
use observe::Notes;
use plugins::UpstreamChanges;
use request::Matched;

/// What every worker shares: the live table and the settings.
pub struct Shared {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub settings: Arc<ProxySettings>,
    /// The proxy cache's storages and flights.
    pub cache: Arc<crate::cache::Stores>,
    /// The access log and the tracer, when on.
    pub telemetry: Arc<Telemetry>,
}

/// One worker's view: the shared state plus its own connection pools.
#[derive(Clone)]
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: Arc<Pool>,
    /// Connections to backends with TLS or HTTP/2.
    pub clients: Arc<Clients<RequestBody>>,
}

/// The route name of requests that matched no route, or that were
/// refused before routing (an unreadable head).
const UNMATCHED: &str = "unmatched";

/// The metrics of requests that matched no route.
pub(super) fn unmatched() -> &'static RouteMetrics {
    static M: OnceLock<RouteMetrics> = OnceLock::new();
    M.get_or_init(|| RouteMetrics::new(UNMATCHED.into()))
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
        let now = Instant::now();
        unmatched().record(status.as_u16(), Duration::ZERO, now);
        live::record_request(UNMATCHED, status.as_u16(), Duration::ZERO, None, now);
    }
}

/// What serving a request produced, for the metrics and the record of
/// its end.
struct Served {
    resp: Response<ResponseBody>,
    route: Option<Arc<Route>>,
    /// The request body's size when known, else where it is counted.
    body: Option<(Option<u64>, Option<FaultProbe>)>,
    /// The consumer an authentication plugin identified, for the live
    /// view's busiest consumers.
    consumer: Option<Arc<str>>,
}

impl Served {
    fn unrouted(resp: Response<ResponseBody>) -> Served {
        Served {
            resp,
            route: None,
            body: None,
            consumer: None,
        }
    }
}

impl Worker {
    /// Serves one request, whichever listener and protocol it came by: the
    /// pipeline (see the module documentation), then its metrics, and its
    /// access log line and spans once the response ends.
    pub async fn handle(
        &self,
        req: Request<ClientBody>,
        client: &ClientInfo,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let (mut exchange, trace) = observe::start(&self.shared.telemetry, &req, client, start);
        let notes = Notes {
            exchange: exchange.as_mut(),
            trace: trace.as_ref(),
        };
        let mut served = self.serve(req, client, start, notes).await;
        // HTTP/3 is advertised to clients of the HTTPS listener, except on
        // hosts that ask for client certificates, which QUIC does not.
        if let Some(alt_svc) = &client.alt_svc
            && client.client_auth.is_none()
        {
            served
                .resp
                .headers_mut()
                .insert(header::ALT_SVC, alt_svc.clone());
        }
        // Whatever answered (upstream, cache, plugin), a 1xx or 204 has no
        // content and may not say how long it is (RFC 9110 §8.6): a client
        // that believed the length would read the next answer as this
        // one's body.
        let status = served.resp.status();
        if status.is_informational() || status == StatusCode::NO_CONTENT {
            served.resp.headers_mut().remove(header::CONTENT_LENGTH);
        }
        let now = Instant::now();
        let status = status.as_u16();
        let (metrics, name) = match &served.route {
            Some(r) => (&r.metrics, &*r.name),
            None => (unmatched(), UNMATCHED),
        };
        metrics.record(status, now - start, now);
        live::record_request(name, status, now - start, served.consumer.as_deref(), now);
        if let Some(mut ex) = exchange {
            ex.trace = trace;
            ex.route = served.route;
            if let Some((exact, probe)) = served.body {
                ex.request_body(exact, probe);
            }
            return ex.finish(served.resp, now);
        }
        match (served.route, served.body) {
            (Some(route), Some((request_bytes, probe))) => observe::Sizes {
                route,
                request_bytes,
                probe,
            }
            .finish(served.resp, now),
            _ => served.resp,
        }
    }

    async fn serve(
        &self,
        req: Request<ClientBody>,
        client: &ClientInfo,
        start: Instant,
        mut notes: Notes<'_>,
    ) -> Served {
        let settings = &self.shared.settings;
        let matched = match request::route(&self.shared.table, settings, &req, client.local_port) {
            Ok(m) => m,
            Err(request::Unrouted::OwnOptions) => {
                return Served::unrouted(respond::own_options());
            }
            Err(request::Unrouted::Error(e)) => {
                debug!(host = ?req.headers().get(header::HOST), path = req.uri().path(), error = %e, "request not routed");
                return Served::unrouted(match &e {
                    ProxyError::MethodNotAllowed(_) => respond::method_not_allowed(&e),
                    _ => error_response(&e),
                });
            }
        };
        let route = matched.route.clone();
        let answer = |resp, consumer| Served {
            resp,
            route: Some(matched.route.clone()),
            body: None,
            consumer,
        };
        if let Some(Some(auth)) = &matched.client_auth
            && let Err(e) = respond::check_client(auth, client, route.https_redirect.is_some())
        {
            return answer(error_response(&e), None);
        }
        if let (Some(code), false) = (route.https_redirect, client.tls) {
            return answer(
                respond::redirect(
                    code,
                    matched.authority.as_ref(),
                    req.uri(),
                    settings.https_redirect_port,
                ),
                None,
            );
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
            let waits = notes.exchange.as_deref_mut().map(|e| &mut e.waits);
            match plugins::run_plugins(&route, path, host, &req, client, waits).await {
                Ok(done) => effects = Some(done),
                Err(answered) => {
                    if let Some(ex) = notes.exchange {
                        ex.answered_by = Some(answered.plugin);
                        ex.consumer = answered.consumer.clone();
                    }
                    let resp = match &phase {
                        Some((headers, method)) => plugins::response_phase(
                            &route,
                            headers,
                            method,
                            None,
                            answered.response,
                        ),
                        None => answered.response,
                    };
                    return answer(resp, answered.consumer);
                }
            }
        }
        let consumer = effects.as_ref().and_then(|e| e.consumer.clone());
        if let Some(ex) = notes.exchange.as_deref_mut() {
            ex.consumer = consumer.clone();
        }
        let (upstream_changes, response_changes, meters) = match effects {
            Some(e) => (
                Some(e.upstream),
                Some((e.response_headers, e.guards)),
                e.token_meters,
            ),
            None => (None, None, Vec::new()),
        };
        let mut body = None;
        let forwarded = if let Some(ai_route) = &route.ai {
            let path = matched.path(&req).to_owned();
            let handover = ai::Handover {
                path: &path,
                started: start,
                consumer: consumer.clone(),
                meters,
            };
            // Boxed, as is the cache's path: their futures are several
            // times the size of the plain path's, and an unboxed branch
            // makes every request's future (and every connection's
            // task) that large. Built in the box (`boxed::pinned`), not
            // copied into it.
            Ok(crate::boxed::pinned(|| {
                ai::serve(ai_route, req, handover, notes.exchange, &mut body)
            })
            .await)
        } else if route.cache.is_some() {
            crate::boxed::pinned(|| {
                cache::serve(
                    self,
                    &matched,
                    req,
                    client,
                    start,
                    upstream_changes,
                    consumer.as_deref(),
                    notes,
                    &mut body,
                )
            })
            .await
        } else {
            self.forward(
                &matched,
                req,
                client,
                start,
                upstream_changes,
                notes,
                &mut body,
            )
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
        Served {
            resp,
            route: Some(route),
            body,
            consumer,
        }
    }

    #[allow(clippy::too_many_arguments)] // one request's parts, passed on as they are
    async fn forward(
        &self,
        matched: &Matched,
        mut req: Request<ClientBody>,
        client: &ClientInfo,
        started: Instant,
        changes: Option<UpstreamChanges>,
        mut notes: Notes<'_>,
        body_facts: &mut Option<(Option<u64>, Option<FaultProbe>)>,
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
        let mut body = RequestBody::new(body, changes.as_ref().and_then(|c| c.body_limit));
        body.settle().await;
        *body_facts = Some((body.is_end_stream().then_some(0), body.fault_probe()));
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
        if let Some(ex) = notes.exchange.as_deref_mut()
            && let Some(id) = parts.headers.get(&observe::X_REQUEST_ID)
        {
            ex.request_id = Some(id.clone());
        }
        let (first_span, trace) = notes.trace.map(observe::propagation).unzip();
        let head = ForwardHead {
            method: &parts.method,
            target: &target,
            headers: &parts.headers,
            host: host.as_ref(),
            client,
            upgrade: websocket,
            trust_forwarded: settings.trust_forwarded,
            trace: trace.as_ref(),
        };
        if !route.mirrors.is_empty() {
            use http_body::Body as _;
            mirror::start(self, route, &head, body.is_end_stream(), deadlines).await;
        }
        // Attempts are recorded for a log line or spans only.
        let record = notes.exchange.map(|ex| (&mut ex.attempts, first_span));
        attempts::send(
            self,
            route,
            keys,
            &head,
            body,
            deadlines,
            client_upgrade,
            record,
        )
        .await
    }
}
