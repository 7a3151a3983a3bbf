//! The route's plugins around a request: the request phase, which may
//! answer early or change what the upstream gets, and the response phase.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response, header};
use http_body::Body as _;

use super::observe::WaitRecord;
use crate::metrics::PLUGIN_REJECTIONS;
use crate::plugins::transform::compress;
use crate::plugins::{Outcome, RequestCtx, ResponseCtx, ResponseParts};
use crate::proxy::body::{Guards, ResponseBody};
use crate::proxy::server::{ClientBody, ClientInfo};
use crate::routing::Route;

/// What plugins change about the request the upstream gets.
pub(super) struct UpstreamChanges {
    pub headers: Vec<(HeaderName, Option<HeaderValue>)>,
    pub remove_query: Vec<Box<str>>,
    pub path: Option<String>,
    pub host: Option<HeaderValue>,
    /// Request body bytes allowed, counted as the body streams.
    pub body_limit: Option<u64>,
}

/// What the plugins decided for a request they let through.
/// A plugin's own answer to a request.
pub(super) struct Answered {
    pub response: Response<ResponseBody>,
    pub plugin: &'static str,
    /// The consumer, when an earlier plugin had authenticated one.
    pub consumer: Option<Arc<str>>,
}

pub(super) struct Effects {
    pub upstream: UpstreamChanges,
    pub response_headers: http::HeaderMap,
    pub guards: Guards,
    pub consumer: Option<Arc<str>>,
}

/// Runs the route's response phases on the response the client gets.
pub(super) fn response_phase(
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
pub(super) fn without_query_params(target: &str, remove: &[Box<str>]) -> String {
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
pub(super) async fn run_plugins(
    route: &Route,
    path: &str,
    host: &str,
    req: &Request<ClientBody>,
    client: &ClientInfo,
    mut waits: Option<&mut Vec<WaitRecord>>,
) -> Result<Effects, Answered> {
    let mut ctx = RequestCtx {
        client_ip: client.ip.as_bytes(),
        tls: client.tls,
        host,
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
    // One clock reading per plugin: each one's end is the next one's
    // start.
    let mut started = Instant::now();
    for (plugin, metrics) in route.plugins.iter().zip(route.plugin_metrics.iter()) {
        let rejected = match plugin.request(&mut ctx) {
            Outcome::Continue => {
                let now = Instant::now();
                metrics.record(now - started, None, now);
                started = now;
                continue;
            }
            Outcome::Reject(r) => r,
            Outcome::Wait(pending) => match pending.await {
                Ok(w) => {
                    if let Some(waits) = waits.as_deref_mut() {
                        waits.push(WaitRecord {
                            plugin: plugin.name(),
                            start: started,
                            end: Instant::now(),
                            answered: None,
                        });
                    }
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
                    let now = Instant::now();
                    metrics.record(now - started, None, now);
                    started = now;
                    continue;
                }
                Err(r) => {
                    if let Some(waits) = waits.as_deref_mut() {
                        waits.push(WaitRecord {
                            plugin: plugin.name(),
                            start: started,
                            end: Instant::now(),
                            answered: Some(r.status.as_u16()),
                        });
                    }
                    *r
                }
            },
        };
        let now = Instant::now();
        metrics.record(now - started, Some(rejected.status.as_u16()), now);
        metrics::counter!(
            PLUGIN_REJECTIONS,
            crate::metrics::labels(&[("route", &route.name), ("plugin", plugin.name())])
        )
        .increment(1);
        let mut resp = Response::new(ResponseBody::full(rejected.body));
        *resp.status_mut() = rejected.status;
        let headers = resp.headers_mut();
        headers.extend(ctx.response_headers);
        headers.extend(rejected.headers);
        return Err(Answered {
            response: resp,
            plugin: plugin.name(),
            consumer: ctx.consumer,
        });
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
