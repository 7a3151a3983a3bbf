//! The answers the cache gives itself: stored responses (with `Age`, or
//! `304` for a client whose validator still matches), responses shared by
//! another request, purges, and `only-if-cached` misses.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::Stale;
use crate::cache::conditional::{self, KEPT_IN_304};
use crate::cache::entry::Entry;
use crate::cache::flight::{Follow, SharedHead};
use crate::cache::freshness;
use crate::cache::status::{CacheStatus, Fwd};
use crate::cache::store::Body;
use crate::proxy::body::{Follower, ResponseBody};
use crate::proxy::server::ClientBody;

/// A stored response for `req`.
pub(super) fn from_entry(
    entry: &Entry,
    body: Body,
    req: &Request<ClientBody>,
    now: SystemTime,
    status: CacheStatus,
) -> Response<ResponseBody> {
    from_parts(entry, body, req.method(), req.headers(), now, status)
}

/// A stored response for a request with `method` and `headers`: `304`
/// when the client's validators match it, else the whole response.
pub(super) fn from_parts(
    entry: &Entry,
    body: Body,
    method: &Method,
    headers: &HeaderMap,
    now: SystemTime,
    status: CacheStatus,
) -> Response<ResponseBody> {
    let age = HeaderValue::from(freshness::age(entry, now).as_secs());
    let stored = &entry.meta.headers;
    if conditional::not_modified(method, headers, entry.meta.status, stored) {
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        let h = resp.headers_mut();
        for name in KEPT_IN_304.iter() {
            for v in stored.get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        h.insert(header::AGE, age);
        status.add_to(h);
        return resp;
    }
    let body = match body {
        Body::Full(b) if b.is_empty() => ResponseBody::empty(),
        Body::Full(b) => ResponseBody::Full(Some(b)),
        Body::File(f) => ResponseBody::Follow(Box::new(Follower::File(f))),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = entry.meta.status;
    let h = resp.headers_mut();
    *h = stored.clone();
    h.insert(header::AGE, age);
    status.add_to(h);
    resp
}

/// A stale entry answering an upstream failure (`stale-if-error`);
/// `upstream`: the status the upstream answered, if it did.
pub(super) fn stale_on_error(
    stale: Stale,
    method: &Method,
    headers: &HeaderMap,
    upstream: Option<StatusCode>,
    now: SystemTime,
) -> Response<ResponseBody> {
    let entry = stale.found.entry;
    let ttl = entry.policy.time_to_live(now).as_secs() as i64;
    let over = freshness::age(&entry, now).as_secs() as i64;
    let status = CacheStatus {
        fwd_status: upstream.map(|s| s.as_u16()),
        ttl: Some(if ttl > 0 { ttl } else { -over.max(1) }),
        detail: Some("stale-if-error"),
        ..CacheStatus::forwarded(Fwd::Stale)
    };
    from_parts(&entry, stale.found.body, method, headers, now, status)
}

/// Whether a request with `headers` may take a response shared by a
/// request that varied on other values.
pub(super) fn shares(head: &SharedHead, headers: &HeaderMap) -> bool {
    head.vary
        .iter()
        .all(|n| head.request.get_all(n).iter().eq(headers.get_all(n).iter()))
}

/// Another request's upstream response, streamed as it arrives.
pub(super) fn shared(head: &Arc<SharedHead>, follow: Follow) -> Response<ResponseBody> {
    let len = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut resp = Response::new(ResponseBody::Follow(Box::new(Follower::Flight(
        follow, len,
    ))));
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers.clone();
    CacheStatus {
        collapsed: true,
        ..CacheStatus::forwarded(Fwd::Miss)
    }
    .add_to(resp.headers_mut());
    resp
}

/// The answer to `PURGE`: whether anything was stored.
pub(super) fn purged(entries: usize) -> Response<ResponseBody> {
    let (status, text) = if entries > 0 {
        (StatusCode::OK, format!("purged {entries} entries\n"))
    } else {
        (StatusCode::NOT_FOUND, "not cached\n".to_owned())
    };
    plain(status, text)
}

/// `only-if-cached` without a usable entry (RFC 9111 §5.2.1.7).
pub(super) fn not_cached(fwd: Fwd) -> Response<ResponseBody> {
    let mut resp = plain(
        StatusCode::GATEWAY_TIMEOUT,
        "not in the cache (only-if-cached)\n".to_owned(),
    );
    CacheStatus {
        detail: Some("only-if-cached"),
        ..CacheStatus::forwarded(fwd)
    }
    .add_to(resp.headers_mut());
    resp
}

fn plain(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
