//! The admin server: health, readiness, metrics, and the read-only
//! views behind the built-in dashboard: routes, certificates, upstreams,
//! live traffic and the explanation of routing decisions.
//!
//! It listens on its own port so that probes and scrapes never compete
//! with traffic, and never exposes anything that changes state. Nothing
//! it serves holds a Secret's value: certificates are shown by their
//! public fields, credentials only by the name of the Secret that holds
//! them. An optional token ([`auth`]) guards everything but the probes and
//! `/metrics`.
//!
//! The one request that changes state is `POST /cache/purge`, which only
//! ever removes cached responses (the upstream answers again); keep the
//! port away from clients, as the chart does.

pub mod auth;
mod dashboard;
pub mod explain;
pub mod explain_command;
pub mod metrics;
mod readiness;
mod views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::debug;

pub use auth::AdminToken;

use crate::cache::Stores;
use crate::cache::purge::valid_tag;

use crate::metrics as m;
use crate::proxy::ResponseBody;
use crate::publish::Publisher;
use crate::routing::{EncodedSlashes, EndpointSet, EndpointState, clock_ns};

/// Every path the admin port serves.
pub const PATHS: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/routes",
    "/api/summary",
    "/api/routes",
    "/api/certificates",
    "/api/upstreams",
    "/api/live",
    "/explain",
];

/// Settings of the admin server.
#[derive(Clone, Debug, Default)]
pub struct AdminOptions {
    /// Asked for on every path but the probes and `/metrics`.
    pub token: Option<AdminToken>,
    /// How `/explain` reads encoded slashes: as the proxy does.
    pub encoded_slashes: EncodedSlashes,
}

struct Ctx {
    publisher: Arc<Publisher>,
    options: AdminOptions,
    cache: Arc<Stores>,
}

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    pub async fn start(
        addr: SocketAddr,
        publisher: Arc<Publisher>,
        options: AdminOptions,
        cache: Arc<Stores>,
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "admin listening");
        let prom = metrics::handle();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                prom.run_upkeep();
                crate::metrics::expire_histograms();
            }
        });
        let ctx = Arc::new(Ctx {
            publisher,
            options,
            cache,
        });
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let ctx = ctx.clone();
                let svc = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move {
                        let resp = if req.uri().path() == "/cache/purge" {
                            match &ctx.options.token {
                                Some(token) if !token.allows(req.headers()) => unauthorized(),
                                _ => purge(&req, &ctx.cache).await,
                            }
                        } else {
                            route(&req, &ctx)
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = conn.await {
                        debug!(error = %e, "admin connection ended");
                    }
                });
            }
        });
        Ok(AdminServer {
            addr,
            tasks: vec![upkeep, server],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Most tags one purge names.
const MAX_PURGE_TAGS: usize = 100;

/// `POST /cache/purge?tag=A&tag=B`: purges every cached response tagged
/// with any of the tags (`Surrogate-Key` or `Cache-Tag`), on every
/// replica when the cache has a Redis storage.
async fn purge(req: &Request<Incoming>, cache: &Stores) -> Response<ResponseBody> {
    if req.method() != Method::POST {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST /cache/purge?tag=NAME\n",
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return resp;
    }
    let mut tags: Vec<String> = Vec::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "tag" {
            continue;
        }
        let v = crate::routing::form_decode(v).into_owned();
        if !valid_tag(&v) {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "invalid tag {v:?}: 1-256 characters, no spaces, commas or control characters\n"
                ),
            );
        }
        if !tags.contains(&v) {
            tags.push(v);
        }
    }
    if tags.is_empty() || tags.len() > MAX_PURGE_TAGS {
        return text(
            StatusCode::BAD_REQUEST,
            "name 1 to 100 tags: POST /cache/purge?tag=NAME&tag=OTHER\n",
        );
    }
    let report = cache.purge_tags(tags).await;
    tracing::info!(tags = ?report.tags, disk_files = report.disk_files, published = report.published, "cache purged by tag");
    match serde_json::to_vec_pretty(&report) {
        Ok(json) => respond(StatusCode::OK, "application/json", json),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render: {e}\n"),
        ),
    }
}

fn route(req: &Request<Incoming>, ctx: &Ctx) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    if let Some(token) = &ctx.options.token
        && !auth::OPEN_PATHS.contains(&path)
        && !token.allows(req.headers())
    {
        return unauthorized();
    }
    let publisher = &*ctx.publisher;
    let cache = &*ctx.cache;
    match path {
        "/" => {
            let page = dashboard::page();
            let mut resp = respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page.html.as_bytes().to_vec(),
            );
            let h = resp.headers_mut();
            if let Ok(csp) = header::HeaderValue::from_str(&page.csp) {
                h.insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            h.insert(
                header::X_FRAME_OPTIONS,
                header::HeaderValue::from_static("DENY"),
            );
            h.insert(
                header::REFERRER_POLICY,
                header::HeaderValue::from_static("no-referrer"),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (status, body) = readiness::readyz(publisher);
            text(status, &body)
        }
        "/routes" => match routes_json(publisher, cache) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot render: {e}\n"),
            ),
        },
        "/api/summary" => json(StatusCode::OK, &views::summary(publisher)),
        "/api/routes" => json(StatusCode::OK, &views::routes(publisher)),
        "/api/certificates" => json(StatusCode::OK, &views::certificates(publisher)),
        "/api/upstreams" => json(StatusCode::OK, &views::upstreams(publisher)),
        "/api/live" => json(StatusCode::OK, &views::live(publisher)),
        "/explain" => {
            let result = explain::ExplainRequest::from_query(req.uri().query()).and_then(|r| {
                let view = publisher.view();
                let table = publisher.table().load_full();
                explain::explain(
                    &table,
                    &view.table,
                    view.generation,
                    &r,
                    ctx.options.encoded_slashes,
                )
            });
            match result {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": e.to_string() }),
                ),
            }
        }
        "/metrics" => {
            endpoint_gauges(publisher);
            cache.gauges();
            readiness::watch_gauges(publisher);
            let (body, gzipped) = metrics::exposition(req.headers());
            let mut resp = respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            );
            let h = resp.headers_mut();
            h.insert(
                header::VARY,
                header::HeaderValue::from_static("Accept-Encoding"),
            );
            if gzipped {
                h.insert(
                    header::CONTENT_ENCODING,
                    header::HeaderValue::from_static("gzip"),
                );
            }
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            &format!(
                "not found; try {}, POST /cache/purge?tag=NAME\n",
                PATHS.join(", ")
            ),
        ),
    }
}

fn unauthorized() -> Response<ResponseBody> {
    let mut resp = text(
        StatusCode::UNAUTHORIZED,
        "this admin port asks for its token: Authorization: Bearer <token>\n",
    );
    for challenge in auth::CHALLENGES {
        resp.headers_mut().append(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
    }
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<ResponseBody> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

/// Every answer is the current state: never cached, never sniffed.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The live view as JSON, with each upstream's current endpoints: in
/// Kubernetes mode endpoint changes are applied in place, after the view
/// was made.
fn routes_json(publisher: &Publisher, cache: &Stores) -> serde_json::Result<Vec<u8>> {
    let view = publisher.view();
    let mut json = serde_json::to_value(&*view)?;
    if let Some(upstreams) = json
        .pointer_mut("/table/upstreams")
        .and_then(|u| u.as_object_mut())
    {
        for key in view.table.upstreams.keys() {
            if let (Some(up), Some(entry)) = (
                publisher.registry().get(key),
                upstreams.get_mut(key.to_string().as_str()),
            ) {
                let set = up.endpoints();
                entry["endpoints"] = serde_json::to_value(set.addrs())?;
                entry["endpointStates"] = endpoint_states(&set);
            }
        }
    }
    json["cache"] = cache.describe();
    serde_json::to_vec_pretty(&json)
}

/// Each endpoint's live state: whether it takes traffic and why not,
/// and its load.
pub(crate) fn endpoint_states(set: &EndpointSet) -> serde_json::Value {
    let now = clock_ns(Instant::now());
    let describe = |e: &Arc<EndpointState>, terminating: bool| {
        let mut v = serde_json::json!({
            "address": e.addr().to_string(),
            "healthy": e.is_available(now),
            "inFlight": e.in_flight(),
        });
        if terminating {
            v["terminating"] = true.into();
        }
        if e.is_ejected(now) {
            v["ejected"] = true.into();
        }
        if e.is_down() {
            v["failingActiveChecks"] = true.into();
        }
        if let Some(l) = e.latency() {
            v["latencyMs"] = (l.as_secs_f64() * 1e3).into();
        }
        v
    };
    serde_json::Value::Array(
        set.ready()
            .iter()
            .map(|e| describe(e, false))
            .chain(set.terminating().iter().map(|e| describe(e, true)))
            .collect(),
    )
}

/// Sets the endpoint gauges from the live state, just before a scrape
/// reads them: per upstream, and with `--metrics-detail full` also per
/// endpoint. Pod addresses change with every rollout, so per-endpoint
/// series churn (a new series for each new pod) and outnumber the
/// routes; the per-upstream counts are what dashboards and alerts need.
/// Endpoints and upstreams that left stop being set, and their series
/// expire with the exporter's idle timeout.
fn endpoint_gauges(publisher: &Publisher) {
    let now = clock_ns(Instant::now());
    let per_endpoint = m::full_detail();
    for up in publisher.registry().all() {
        let set = up.endpoints();
        let upstream = up.key().to_string();
        let (mut available, mut unavailable, mut in_flight) = (0u32, 0u32, 0u64);
        for e in set.ready().iter().chain(set.terminating()) {
            let ok = e.is_available(now);
            if ok {
                available += 1;
            } else {
                unavailable += 1;
            }
            in_flight += u64::from(e.in_flight());
            if per_endpoint {
                let labels = [
                    ("upstream", upstream.clone()),
                    ("endpoint", e.addr().to_string()),
                ];
                ::metrics::gauge!(m::ENDPOINT_IN_FLIGHT, &labels).set(f64::from(e.in_flight()));
                ::metrics::gauge!(m::ENDPOINT_HEALTHY, &labels).set(f64::from(u8::from(ok)));
            }
        }
        for (state, n) in [("available", available), ("unavailable", unavailable)] {
            let labels = [("upstream", upstream.clone()), ("state", state.to_owned())];
            ::metrics::gauge!(m::UPSTREAM_ENDPOINTS, &labels).set(f64::from(n));
        }
        let labels = [("upstream", upstream)];
        ::metrics::gauge!(m::UPSTREAM_IN_FLIGHT, &labels).set(in_flight as f64);
    }
}
