//! Sending a request to the route's endpoints: one attempt, or more when
//! an attempt fails in a way the route retries, each on an endpoint not
//! tried yet and within the route's retry budget. Every outcome feeds the
//! endpoint's passive health and, for Peak EWMA, its latency estimate.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Response, StatusCode, header};
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::Worker;
use super::head::{ForwardHead, completes_websocket_handshake};
use super::observe::AttemptRecord;
use crate::http::client::{self, Deadlines, Outgoing, UpstreamBody, UpstreamError};
use crate::metrics::{UPSTREAM_EJECTIONS, UPSTREAM_RETRIES};
use crate::proxy::body::{FaultProbe, OverLimit, RequestBody, ResponseBody, Tracked};
use crate::proxy::error::{ClientFault, ProxyError};
use crate::proxy::server::ClientUpgrade;
use crate::routing::{
    EndpointState, LoadBalancer, PickInput, RequestKeys, RetryOn, Route, clock_ns,
};

/// The request body across attempts: as the client sent it until an
/// attempt on the plain HTTP/1.1 path prepares it.
enum Body {
    Raw(Option<RequestBody>),
    Prepared(Outgoing<RequestBody>),
}

/// Runs an exchange until the response head is in. A request body that
/// passes its limit first ends it with `413`: dropping the exchange closes
/// its connection, so the upstream never gets the rest of the body.
///
/// The exchange is pinned by the caller: taken by value and pinned here,
/// it would be held twice in this future's state (as the argument and as
/// the pinned local), and every request's future would carry both.
async fn bounded<F>(
    exchange: Pin<&mut F>,
    over_limit: &mut OverLimit,
) -> Result<Response<UpstreamBody>, ProxyError>
where
    F: Future<Output = Result<Response<UpstreamBody>, client::Error>>,
{
    tokio::select! {
        biased;
        limit = over_limit => Err(ProxyError::BodyTooLarge { limit }),
        r = exchange => r.map_err(ProxyError::from),
    }
}

/// An attempt's failure as the client's own, when its request body is
/// what failed: never the endpoint's fault, never retried.
fn client_fault(e: ProxyError, probe: Option<&FaultProbe>) -> ProxyError {
    if let ProxyError::BodyTooLarge { .. } | ProxyError::Client(_) = e {
        return e;
    }
    match (probe.and_then(FaultProbe::error), &e) {
        (Some(own), _) => own,
        (
            None,
            ProxyError::Upstream {
                source: UpstreamError::ClientBody,
                ..
            },
        ) => ProxyError::Client(ClientFault::Aborted),
        (
            None,
            ProxyError::Upstream {
                source: UpstreamError::ClientBodyStalled(_),
                ..
            },
        ) => ProxyError::Client(ClientFault::Stalled),
        _ => e,
    }
}

/// Sends the request, retrying as the route allows; each attempt is
/// counted in the route's metrics and, when the request is observed,
/// recorded (the first with the span id the upstream was told of). Returns the response
/// with its body tracked in flight on the endpoint that answered, and the
/// route's affinity cookie when the request did not carry a valid one.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    worker: &Worker,
    route: &Route,
    keys: RequestKeys,
    head: &ForwardHead<'_>,
    mut body: RequestBody,
    deadlines: Deadlines,
    mut client_upgrade: Option<ClientUpgrade>,
    mut record: Option<(&mut Vec<AttemptRecord>, Option<[u8; 8]>)>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut over_limit = body.over_limit();
    let probe = body.fault_probe();
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
            match Outgoing::prepare(head, b).await {
                Ok(out) => body = Body::Prepared(out),
                Err(_) => {
                    return Err(probe
                        .as_ref()
                        .and_then(FaultProbe::error)
                        .unwrap_or(ProxyError::Client(ClientFault::Aborted)));
                }
            }
        }
        let result = match (&backend.protocol, &mut body) {
            (None, Body::Prepared(out)) => {
                bounded(
                    pin!(client::send(&worker.pool, &endpoint, out, deadlines)),
                    &mut over_limit,
                )
                .await
            }
            // hyper's client future is four times the size of the
            // HTTP/1.1 one: boxed, it does not enlarge the common path.
            (Some(proto), Body::Raw(raw)) => {
                bounded(
                    crate::boxed::pinned(|| {
                        client::send_with_protocol(
                            &worker.clients,
                            proto.client(),
                            endpoint.addr(),
                            head,
                            raw,
                            deadlines,
                        )
                    })
                    .as_mut(),
                    &mut over_limit,
                )
                .await
            }
            // The body went into an HTTP/1.1 attempt and cannot be handed
            // to hyper's client any more (or was not there to prepare).
            _ => return Err(body_gone()),
        };
        let result = result.map_err(|e| client_fault(e, probe.as_ref()));
        now = Instant::now();
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        route.metrics.attempt(status, now - sent, now);
        if let Some((attempts, first)) = record.as_mut() {
            attempts.push(AttemptRecord {
                endpoint: endpoint.addr(),
                span: first
                    .take()
                    .unwrap_or_else(crate::telemetry::trace::span_id),
                start: sent,
                end: now,
                status,
            });
        }
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
                    let resp = switch(endpoint.addr(), head, resp, client_upgrade.take())?;
                    return Ok(finish(route, keys, &endpoint, in_flight, resp));
                }
                (format!("status {status}"), Ok(resp))
            }
            Err(e) => {
                if e.blames_endpoint() {
                    record_failure(route, &endpoint, &backend.upstream.passive(), now_ns);
                }
                match condition(&e) {
                    Some(c) if retry(c, &body) => (e.to_string(), Err(e)),
                    _ => return Err(e),
                }
            }
        };
        drop(in_flight);
        last = Some(failed.map(|r| r.map(ResponseBody::upstream)));
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
    resp: Response<UpstreamBody>,
) -> Response<ResponseBody> {
    let mut resp = resp.map(ResponseBody::upstream);
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

/// A `101` answer joins the client's switched connection to the
/// upstream's, once it completes the handshake the request asked for (see
/// [`completes_websocket_handshake`]); the response the client gets
/// has no body. Any other `101` is the upstream's error, and its
/// connection is dropped.
fn switch(
    addr: SocketAddr,
    head: &ForwardHead<'_>,
    mut resp: Response<UpstreamBody>,
    client: Option<ClientUpgrade>,
) -> Result<Response<UpstreamBody>, ProxyError> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    if client.is_some() && !completes_websocket_handshake(head.headers, resp.headers()) {
        return Err(ProxyError::Upstream {
            addr,
            source: UpstreamError::InvalidSwitch,
        });
    }
    let switched = match resp.body_mut() {
        UpstreamBody::Switched(s) => s.take(),
        _ => None,
    };
    let (Some(upstream), Some(client)) = (switched, client) else {
        return Err(ProxyError::Upstream {
            addr,
            source: UpstreamError::UnexpectedSwitch,
        });
    };
    tokio::spawn(async move {
        let (mut client, (mut upstream, leftover)) =
            match tokio::join!(client.wait(), upstream.wait()) {
                (Ok(c), Ok(u)) => (c, u),
                (Err(e), _) | (_, Err(e)) => {
                    debug!(%addr, error = %e, "protocol switch did not complete");
                    return;
                }
            };
        if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            debug!(%addr, error = %e, "switched connection ended");
        }
    });
    *resp.body_mut() = UpstreamBody::Complete(None);
    Ok(resp)
}
