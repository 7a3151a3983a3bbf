//! The admin server: health, readiness, the compiled table, metrics.
//!
//! It listens on its own port so that probes and scrapes never compete
//! with traffic, and never exposes anything that changes state.

pub mod metrics;
mod readiness;

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

use crate::gateway::Publisher;
use crate::metrics as m;
use crate::proxy::ResponseBody;
use crate::routing::{EndpointSet, EndpointState, clock_ns};

/// A running admin server.
pub struct AdminServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    pub async fn start(
        addr: SocketAddr,
        publisher: Arc<Publisher>,
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
            }
        });
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let publisher = publisher.clone();
                let svc = service_fn(move |req| {
                    let publisher = publisher.clone();
                    async move { Ok::<_, Infallible>(route(&req, &publisher)) }
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

fn route(req: &Request<Incoming>, publisher: &Publisher) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (status, body) = readiness::readyz(publisher);
            text(status, &body)
        }
        "/routes" => match routes_json(publisher) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot render: {e}\n"),
            ),
        },
        "/metrics" => {
            endpoint_gauges(publisher);
            readiness::watch_gauges(publisher);
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::handle().render().into_bytes(),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /routes, /metrics\n",
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

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// The live view as JSON, with each upstream's current endpoints: in
/// Kubernetes mode endpoint changes are applied in place, after the view
/// was made.
fn routes_json(publisher: &Publisher) -> serde_json::Result<Vec<u8>> {
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
    serde_json::to_vec_pretty(&json)
}

/// Each endpoint's live state: whether it takes traffic and why not,
/// and its load.
fn endpoint_states(set: &EndpointSet) -> serde_json::Value {
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

/// Sets the per-endpoint gauges from the live state, just before a
/// scrape reads them. Endpoints that left stop being set, and their
/// series expire with the exporter's idle timeout.
fn endpoint_gauges(publisher: &Publisher) {
    let now = clock_ns(Instant::now());
    for up in publisher.registry().all() {
        let set = up.endpoints();
        for e in set.ready().iter().chain(set.terminating()) {
            let labels = [
                ("upstream", up.key().to_string()),
                ("endpoint", e.addr().to_string()),
            ];
            ::metrics::gauge!(m::ENDPOINT_IN_FLIGHT, &labels).set(f64::from(e.in_flight()));
            ::metrics::gauge!(m::ENDPOINT_HEALTHY, &labels).set(if e.is_available(now) {
                1.0
            } else {
                0.0
            });
        }
    }
}
