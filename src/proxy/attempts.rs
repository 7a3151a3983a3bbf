//! Sending a request to the route's endpoints: one attempt, or more when
//! an attempt fails in a way the route retries, each on an endpoint not
//! tried yet and within the route's retry budget. Every outcome feeds the
//! endpoint's passive health and, for Peak EWMA, its latency estimate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Response, header};
use tracing::debug;

use super::body::{RequestBody, ResponseBody, Tracked};
use super::client::ClientUpgrade;
use super::error::ProxyError;
use super::headers::RequestHead;
use super::service::Worker;
use super::upstream::{self, Deadlines, Outgoing, UpstreamError};
use crate::metrics::{UPSTREAM_EJECTIONS, UPSTREAM_RETRIES};
use crate::routing::{
    EndpointState, LoadBalancer, PickInput, RequestKeys, RetryOn, Route, clock_ns,
};

/// The request body across attempts: as the client sent it until an
/// attempt on the plain HTTP/1.1 path prepares it.
enum Body {
    Raw(Option<RequestBody>),
    Prepared(Outgoing),
}

/// Sends the request, retrying as the route allows. Returns the response
/// with its body tracked in flight on the endpoint that answered, and the
/// route's affinity cookie when the request did not carry a valid one.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    worker: &Worker,
    route: &Route,
    keys: RequestKeys,
    head: &RequestHead<'_>,
    mut body: RequestBody,
    deadlines: Deadlines,
    mut client_upgrade: Option<ClientUpgrade>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut over_limit = body.over_limit();
    let mut body = Body::Raw(Some(body));
    let mut tried: Vec<SocketAddr> = Vec::new();
    let policy = &route.retries;
    let idempotent = is_idempotent(head.method);
    let mut now = deadlines.started;
    // The answer of the latest failed attempt, returned when no endpoint is
    // left to retry on.
    let mut last: Option<Result<Response<ResponseBody>, ProxyError>> = None;
    loop {
        let input = PickInput {
            now,
            hash: keys.hash,
            exclude: &tried,
        };
        let Some((backend, endpoint)) = route.choose(&input, keys.affinity) else {
            return last.unwrap_or_else(|| {
                Err(ProxyError::NoEndpoint {
                    route: route.name.to_string(),
                })
            });
        };
        let in_flight = endpoint.begin();
        let sent = now;
        // The plain HTTP/1.1 path sends a prepared request, kept for
        // another attempt.
        if backend.protocol.is_none()
            && let Body::Raw(raw) = &mut body
        {
            let b = raw.take().ok_or_else(body_gone)?;
            body = Body::Prepared(Outgoing::prepare(head, b).await?);
        }
        let result = match (&backend.protocol, &mut body) {
            (None, Body::Prepared(out)) => {
                upstream::send(
                    &worker.pool,
                    &endpoint,
                    out,
                    &mut over_limit,
                    deadlines,
                    &mut client_upgrade,
                )
                .await
            }
            (Some(proto), Body::Raw(raw)) => {
                upstream::send_with_protocol(
                    &worker.clients,
                    proto,
                    endpoint.addr(),
                    head,
                    raw,
                    &mut over_limit,
                    deadlines,
                    &mut client_upgrade,
                )
                .await
            }
            // The body went into an HTTP/1.1 attempt and cannot be handed
            // to hyper's client any more (or was not there to prepare).
            _ => return Err(body_gone()),
        };
        now = Instant::now();
        let now_ns = clock_ns(now);
        let attempts = tried.len() as u32 + 1;
        // Whether a failure under `condition` may be tried again.
        let retry = |condition: RetryOn, body: &Body| {
            let body_intact = match body {
                Body::Raw(raw) => raw.is_some(),
                Body::Prepared(out) => out.replayable() || condition == RetryOn::CONNECT_FAILURE,
            };
            policy.on.contains(condition)
                && attempts < policy.attempts
                && (condition == RetryOn::CONNECT_FAILURE || idempotent || policy.non_idempotent)
                && body_intact
                && route.retry_allowed(now)
        };
        let (error, failed) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let passive = backend.upstream.passive();
                if passive.is_failure_status(status) {
                    record_failure(route, &endpoint, &passive, now_ns);
                } else {
                    endpoint.success(now_ns);
                }
                let on = RetryOn::for_status(status);
                if head.upgrade || !policy.on.contains(on) || !retry(on, &body) {
                    if route.load_balancer == LoadBalancer::PeakEwma {
                        endpoint.observe_latency(now - sent, now_ns);
                    }
                    return Ok(finish(route, keys, &endpoint, in_flight, resp));
                }
                (format!("status {status}"), Ok(resp))
            }
            Err(e) => {
                if counts_against_endpoint(&e) {
                    record_failure(route, &endpoint, &backend.upstream.passive(), now_ns);
                }
                match condition(&e) {
                    Some(c) if retry(c, &body) => (e.to_string(), Err(e)),
                    _ => return Err(e),
                }
            }
        };
        drop(in_flight);
        last = Some(failed);
        debug!(route = %route.name, endpoint = %endpoint.addr(), error, "retrying on another endpoint");
        metrics::counter!(UPSTREAM_RETRIES, "route" => route.name.to_string()).increment(1);
        tried.push(endpoint.addr());
    }
}

/// The response as the client gets it: its body counted in flight on
/// the endpoint until it ends, cut when idle too long, and the affinity
/// cookie set when the request needs one.
fn finish(
    route: &Route,
    keys: RequestKeys,
    endpoint: &Arc<EndpointState>,
    in_flight: crate::routing::InFlight,
    mut resp: Response<ResponseBody>,
) -> Response<ResponseBody> {
    if let Some(cookie) = route.affinity_cookie(endpoint, keys.affinity) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    let idle = route.timeouts.idle;
    let body = resp.body_mut();
    let streaming = !matches!(body, ResponseBody::Full(_));
    if streaming || idle.is_some() {
        let inner = std::mem::replace(body, ResponseBody::empty());
        *body = Tracked::wrap(inner, in_flight, idle);
    }
    resp
}

fn record_failure(
    route: &Route,
    endpoint: &EndpointState,
    passive: &crate::routing::PassiveHealth,
    now_ns: u64,
) {
    if endpoint.failure(passive, now_ns) {
        tracing::warn!(route = %route.name, endpoint = %endpoint.addr(), "endpoint ejected after consecutive failures");
        metrics::counter!(UPSTREAM_EJECTIONS).increment(1);
    }
}

/// The retry condition an error falls under, if any.
fn condition(e: &ProxyError) -> Option<RetryOn> {
    match e {
        ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. } => {
            Some(RetryOn::CONNECT_FAILURE)
        }
        ProxyError::Upstream { source, .. } => match source {
            UpstreamError::Io(_) | UpstreamError::ClosedEarly | UpstreamError::Hyper(_) => {
                Some(RetryOn::RESET)
            }
            UpstreamError::Tls(_) => Some(RetryOn::CONNECT_FAILURE),
            _ => None,
        },
        _ => None,
    }
}

/// Whether an error says something about the endpoint's health (and not,
/// say, about the client's request).
fn counts_against_endpoint(e: &ProxyError) -> bool {
    match e {
        ProxyError::Connect { .. }
        | ProxyError::ConnectTimeout { .. }
        | ProxyError::UpstreamTimeout { .. } => true,
        ProxyError::Upstream { source, .. } => !matches!(source, UpstreamError::ClientBody),
        _ => false,
    }
}

/// Methods that may be sent twice with the effect of once (RFC 9110 9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn body_gone() -> ProxyError {
    ProxyError::BadRequest("request body already sent")
}
