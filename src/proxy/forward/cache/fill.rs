//! Storing an upstream response: whether it may be stored (the route's
//! settings and RFC 9111), under which key (a variant's, when it
//! varies), and the store itself once the body is complete. The body
//! streams to the client meanwhile, through a [`Tee`]; requests waiting
//! for the same key follow it through the flight's feed.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, header};

use super::Ctx;
use crate::cache::entry::{Entry, Meta, VaryIndex, unix_ms};
use crate::cache::flight::{Ended, Feed, Leader, SharedHead};
use crate::cache::freshness;
use crate::cache::key::{self, KeyId};
use crate::cache::purge;
use crate::cache::status::{CacheStatus, Fwd};
use crate::cache::store::Value;
use crate::metrics::CacheResult;
use crate::proxy::body::{ResponseBody, Sink, Tee};

/// The upstream's response as the client gets it: stored on the way when
/// it may be, shared with the flight's waiters when it is storable (a
/// response that may not be stored is not for everyone either).
#[allow(clippy::too_many_arguments)]
pub(super) fn respond(
    ctx: &Ctx,
    mut resp: Response<ResponseBody>,
    method: &Method,
    req_headers: HeaderMap,
    leader: Option<Leader>,
    fwd: Fwd,
    index: Option<VaryIndex>,
    now: SystemTime,
) -> Response<ResponseBody> {
    let rule = ctx.rule();
    let mut status = CacheStatus::forwarded(fwd);
    if matches!(fwd, Fwd::Stale | Fwd::Request) {
        status.fwd_status = Some(resp.status().as_u16());
    }
    if fwd != Fwd::Bypass {
        ctx.record(CacheResult::Miss);
    }
    let too_large = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > rule.max_body);
    let storable = if ctx.no_store || too_large || resp.status().is_informational() {
        None
    } else {
        freshness::storable(
            &rule.freshness,
            method,
            &req_headers,
            ctx.credentials,
            resp.status(),
            resp.headers(),
            now,
        )
        .ok()
    };
    let Some(st) = storable else {
        if let Some(l) = leader {
            l.not_shared();
        }
        status.add_to(resp.headers_mut());
        return resp;
    };
    status.stored = true;
    let (key, index) = if st.vary.is_empty() {
        (ctx.primary, None)
    } else {
        let nonce = match &index {
            Some(i) if *i.names == *st.vary => i.nonce,
            _ => fastrand::u64(..),
        };
        let k = key::variant(&ctx.primary, nonce, &st.vary, &req_headers);
        let index = VaryIndex {
            names: st.vary.clone(),
            nonce,
            expires_at: unix_ms(now + st.retention),
        };
        (k, Some(index))
    };
    let feed = leader.map(|l| {
        l.share(
            SharedHead {
                status: resp.status(),
                headers: st.headers.clone(),
                request: st.request.clone(),
                vary: st.vary.clone(),
            },
            rule.max_body,
        )
    });
    let at = unix_ms(now);
    let meta = Meta {
        status: resp.status(),
        method: method.clone(),
        tags: purge::tags(&st.headers),
        headers: st.headers,
        request: st.request,
        response_time: at,
        stored_at: at,
        expires_at: unix_ms(now + st.retention),
        default_ttl: st.default_ttl,
        key,
        route: ctx.route.name.clone(),
    };
    let job = StoreJob {
        ctx: ctx.clone(),
        key,
        index,
        meta,
    };
    status.add_to(resp.headers_mut());
    let (parts, body) = resp.into_parts();
    let body = match body {
        // Complete already (a small response): stored at once.
        ResponseBody::Full(b) => {
            let b = b.unwrap_or_default();
            let ended = feed.map(|f| {
                if !b.is_empty() {
                    f.data(&b);
                }
                f.end()
            });
            job.run(b.clone(), ended);
            ResponseBody::Full((!b.is_empty()).then_some(b))
        }
        other => Tee::wrap(
            other,
            Box::new(Filling {
                job: Some(job),
                feed,
                chunks: Vec::new(),
                len: 0,
                max: rule.max_body,
            }),
        ),
    };
    Response::from_parts(parts, body)
}

/// A response's store, once its body is complete.
#[derive(Debug)]
struct StoreJob {
    ctx: Ctx,
    key: KeyId,
    index: Option<VaryIndex>,
    meta: Meta,
}

impl StoreJob {
    /// Stores the entry with `body` in the background; the flight stays
    /// joinable until the store has it.
    fn run(self, body: Bytes, ended: Option<Ended>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(c) = &self.ctx.route.cache {
            c.metrics.stored(body.len() as u64);
        }
        rt.spawn(async move {
            let storage = self.ctx.rule().storage;
            let stores = &self.ctx.stores;
            if let Some(index) = self.index {
                stores
                    .put(storage, self.ctx.primary, Value::Vary(index))
                    .await;
            }
            let entry = Arc::new(Entry::new(self.meta, body.len() as u64));
            stores
                .put(storage, self.key, Value::Entry(entry, body))
                .await;
            drop(ended);
        });
    }
}

/// The sink of a teed response: its chunks for the store (up to
/// `maxBodySize`) and for the flight's followers.
#[derive(Debug)]
struct Filling {
    job: Option<StoreJob>,
    feed: Option<Feed>,
    chunks: Vec<Bytes>,
    len: u64,
    max: u64,
}

impl Sink for Filling {
    fn data(&mut self, chunk: &Bytes) {
        if let Some(f) = &self.feed {
            f.data(chunk);
        }
        if self.job.is_none() {
            return;
        }
        self.len += chunk.len() as u64;
        if self.len > self.max {
            // Too large to store: streams through.
            self.job = None;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(chunk.clone());
        }
    }

    fn end(mut self: Box<Self>) {
        let ended = self.feed.take().map(Feed::end);
        if let Some(job) = self.job.take() {
            let body = match self.chunks.len() {
                0 => Bytes::new(),
                1 => self.chunks.swap_remove(0),
                _ => {
                    let mut b = BytesMut::with_capacity(self.len as usize);
                    self.chunks.iter().for_each(|c| b.extend_from_slice(c));
                    b.freeze()
                }
            };
            job.run(body, ended);
        }
    }

    fn fail(self: Box<Self>) {}

    fn wants_rest(&self) -> bool {
        self.job.is_some() || self.feed.is_some()
    }
}
