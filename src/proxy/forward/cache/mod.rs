//! The cache stage of the pipeline: for routes with a `proxyCache`, it
//! runs after the request phase of the plugins (so authentication has
//! identified the consumer, and a cached answer is never a way around
//! it) and in place of the plain forwarding step.
//!
//! 1. `PURGE` (when the route allows it) removes the URI's entries;
//!    methods the route does not cache are forwarded, and unsafe ones
//!    that succeed invalidate the URI's entries (RFC 9111 §4.4);
//! 2. the key: route, method, consumer, key template (see
//!    [`crate::cache::key`]); `bypass` skips the lookup;
//! 3. the lookup, through the variant index when the response varies;
//!    the entry is fresh (a hit), stale but within
//!    `stale-while-revalidate` (served, and refreshed in the background:
//!    [`refresh`]), or must be revalidated;
//! 4. coalescing: the first request for a key leads, later ones wait for
//!    its response head and stream its body ([`crate::cache::flight`]);
//! 5. the upstream exchange: a `304` freshens the stored entry, an error
//!    may be answered from a stale entry (`stale-if-error`), and a
//!    storable response is stored as it streams to the client ([`fill`]).
//!
//! Every answer carries `Cache-Status` (RFC 9211); [`answer`] builds the
//! ones the cache gives itself.

mod answer;
mod fill;
mod refresh;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};

use super::Worker;
use super::observe::Notes;
use super::plugins::UpstreamChanges;
use super::request::Matched;
use crate::cache::entry::{Entry, VaryIndex};
use crate::cache::flight::{Joined, Leader, Outcome};
use crate::cache::freshness::{self, Verdict};
use crate::cache::key::{self, KeyId};
use crate::cache::status::{CacheStatus, Fwd};
use crate::cache::store::{Body, Loaded, Stores};
use crate::cache::template::Vars;
use crate::cache::{CacheRule, Storage};
use crate::metrics::{CacheMetrics, CacheResult};
use crate::proxy::body::ResponseBody;
use crate::proxy::error::ProxyError;
use crate::proxy::server::{ClientBody, ClientInfo};
use crate::routing::Route;

/// The request body's size when known, else where it is counted (for
/// the access log and metrics): set when the request goes upstream.
pub(super) type BodyFacts = Option<(Option<u64>, Option<crate::proxy::body::FaultProbe>)>;

/// What the stage knows of one request once its key is made; owned, so
/// that a background refresh can take it along.
#[derive(Clone, Debug)]
pub(super) struct Ctx {
    route: Arc<Route>,
    rule: Arc<CacheRule>,
    stores: Arc<Stores>,
    primary: KeyId,
    /// Whether the request's `Authorization` counts for RFC 9111: not
    /// when the gateway authenticated the consumer and keys by it.
    credentials: bool,
    /// `noStore` said so.
    no_store: bool,
}

impl Ctx {
    fn rule(&self) -> &CacheRule {
        &self.rule
    }

    fn metrics(&self) -> Option<&CacheMetrics> {
        self.route.cache.as_ref().map(|c| &c.metrics)
    }

    fn record(&self, result: CacheResult) {
        if let Some(m) = self.metrics() {
            m.record(result);
        }
    }
}

/// An entry found for a request.
pub(super) struct Found {
    entry: Arc<Entry>,
    body: Body,
    /// Where it was found (the primary key, or a variant's).
    key: KeyId,
}

impl Found {
    /// The same entry, with a body that answers no client (for a
    /// background refresh).
    fn detached(&self) -> Found {
        Found {
            entry: self.entry.clone(),
            body: match &self.body {
                Body::Full(b) => Body::Full(b.clone()),
                Body::File(f) => Body::File(f.detached()),
            },
            key: self.key,
        }
    }
}

/// A stale entry being revalidated.
pub(super) struct Stale {
    found: Found,
    validators: Vec<(HeaderName, HeaderValue)>,
    /// Until when it may answer an upstream failure.
    if_error_until: Option<SystemTime>,
}

impl Stale {
    fn may_answer_error(&self, now: SystemTime) -> bool {
        self.if_error_until.is_some_and(|until| now <= until)
    }
}

/// How a request goes to the upstream.
pub(super) struct Plan {
    stale: Option<Stale>,
    leader: Option<Leader>,
    fwd: Fwd,
    /// The variant index found under the primary key.
    index: Option<VaryIndex>,
}

enum Lookup {
    Found(Found, Option<VaryIndex>),
    Miss(Option<VaryIndex>),
}

fn is_purge(m: &Method) -> bool {
    m.as_str() == "PURGE"
}

/// Safe methods (RFC 9110 §9.2.1) never invalidate entries.
fn is_safe(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether the request says `only-if-cached` (RFC 9111 §5.2.1.7).
fn only_if_cached(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
}

/// Serves a request on a route with a cache.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    worker: &Worker,
    matched: &Matched,
    req: Request<ClientBody>,
    client: &ClientInfo,
    started: Instant,
    changes: Option<UpstreamChanges>,
    consumer: Option<&str>,
    notes: Notes<'_>,
    body_facts: &mut BodyFacts,
) -> Result<Response<ResponseBody>, ProxyError> {
    let route = matched.route.clone();
    let Some(cache) = &route.cache else {
        return worker
            .forward(matched, req, client, started, changes, notes, body_facts)
            .await;
    };
    let rule = &*cache.rule;
    let consumer = consumer.filter(|_| rule.consumer_isolation);
    let method = req.method().clone();
    let vars = Vars {
        host: matched.host.as_deref().unwrap_or(""),
        path: matched.path(&req),
        query: req.uri().query(),
        tls: client.tls,
        headers: req.headers(),
    };
    let mut text = Vec::with_capacity(128);
    rule.key_text(&vars, &mut text);
    let ctx = Ctx {
        stores: worker.shared.cache.clone(),
        primary: key::primary(&route.name, &method, consumer, &text),
        credentials: consumer.is_none(),
        no_store: rule.no_store(&vars, &mut Vec::new()),
        rule: cache.rule.clone(),
        route: route.clone(),
    };

    if is_purge(&method) && rule.allow_purge {
        let purged = purge(&ctx, consumer, &text).await;
        return Ok(answer::purged(purged));
    }
    if !rule.caches(&method) {
        ctx.record(CacheResult::Bypass);
        let invalidate = !is_safe(&method);
        let mut resp = worker
            .forward(matched, req, client, started, changes, notes, body_facts)
            .await?;
        if invalidate && (resp.status().is_success() || resp.status().is_redirection()) {
            purge(&ctx, consumer, &text).await;
        }
        CacheStatus::forwarded(Fwd::Bypass).add_to(resp.headers_mut());
        return Ok(resp);
    }
    if rule.bypassed(&vars, &mut Vec::new()) {
        ctx.record(CacheResult::Bypass);
        let plan = Plan {
            stale: None,
            leader: None,
            fwd: Fwd::Bypass,
            index: None,
        };
        return fetch(
            worker, &ctx, matched, req, client, started, changes, plan, notes, body_facts,
        )
        .await;
    }

    let mut looked_again = false;
    loop {
        let now = SystemTime::now();
        let (mut stale, fwd, index) = match lookup(&ctx, req.headers()).await {
            Lookup::Found(found, index) => {
                match freshness::decide(
                    &found.entry,
                    &rule.freshness,
                    req.headers(),
                    ctx.credentials,
                    now,
                ) {
                    Verdict::Fresh { ttl } => {
                        ctx.record(CacheResult::Hit);
                        let resp = answer::from_entry(
                            &found.entry,
                            found.body,
                            &req,
                            now,
                            CacheStatus::hit(ttl),
                        );
                        return Ok(resp);
                    }
                    Verdict::StaleWhileRevalidate {
                        stale_for,
                        validators,
                    } => {
                        ctx.record(CacheResult::Stale);
                        let status = CacheStatus::stale_hit(stale_for, "stale-while-revalidate");
                        let detached = found.detached();
                        let resp = answer::from_entry(&found.entry, found.body, &req, now, status);
                        refresh::spawn(
                            worker, &ctx, matched, req, client, changes, detached, validators,
                            index,
                        );
                        return Ok(resp);
                    }
                    Verdict::Revalidate {
                        validators,
                        stale_if_error_until,
                        by_request,
                    } => {
                        let fwd = if by_request { Fwd::Request } else { Fwd::Stale };
                        let stale = Stale {
                            found,
                            validators,
                            if_error_until: stale_if_error_until,
                        };
                        (Some(stale), fwd, index)
                    }
                }
            }
            Lookup::Miss(index) => {
                let fwd = if index.is_some() {
                    Fwd::VaryMiss
                } else {
                    Fwd::Miss
                };
                (None, fwd, index)
            }
        };
        if only_if_cached(req.headers()) {
            ctx.record(CacheResult::Miss);
            return Ok(answer::not_cached(fwd));
        }
        let leader = match rule.lock_timeout {
            None => None,
            Some(timeout) => match ctx.stores.flights.join(ctx.primary) {
                Joined::Lead(l) => Some(l),
                Joined::Wait(w) => match w.wait(timeout).await {
                    Outcome::Shared(head, follow) if answer::shares(&head, req.headers()) => {
                        ctx.record(CacheResult::Collapsed);
                        return Ok(answer::shared(&head, follow));
                    }
                    Outcome::Refreshed if !looked_again => {
                        looked_again = true;
                        continue;
                    }
                    Outcome::Failed => {
                        let now = SystemTime::now();
                        if let Some(s) = stale.take_if(|s| s.may_answer_error(now)) {
                            ctx.record(CacheResult::Stale);
                            return Ok(answer::stale_on_error(
                                s,
                                req.method(),
                                req.headers(),
                                None,
                                now,
                            ));
                        }
                        None
                    }
                    _ => None,
                },
            },
        };
        let plan = Plan {
            stale,
            leader,
            fwd,
            index,
        };
        return fetch(
            worker, &ctx, matched, req, client, started, changes, plan, notes, body_facts,
        )
        .await;
    }
}

/// The entry for a request, through the variant index when the stored
/// response varies.
async fn lookup(ctx: &Ctx, headers: &HeaderMap) -> Lookup {
    let storage = ctx.rule().storage;
    match ctx.stores.get(storage, &ctx.primary).await {
        None => Lookup::Miss(None),
        Some(Loaded::Entry(entry, body)) => Lookup::Found(
            Found {
                entry,
                body,
                key: ctx.primary,
            },
            None,
        ),
        Some(Loaded::Vary(index)) => {
            let k = key::variant(&ctx.primary, index.nonce, &index.names, headers);
            match ctx.stores.get(storage, &k).await {
                Some(Loaded::Entry(entry, body)) => Lookup::Found(
                    Found {
                        entry,
                        body,
                        key: k,
                    },
                    Some(index),
                ),
                _ => Lookup::Miss(Some(index)),
            }
        }
    }
}

/// Removes the entries of the request's URI for `GET` and `HEAD` (the
/// variant index with them, which makes every variant unreachable), here
/// and, through Redis, in the other replicas' memory and disk. Returns
/// how many were here.
async fn purge(ctx: &Ctx, consumer: Option<&str>, text: &[u8]) -> usize {
    let storage = ctx.rule().storage;
    let mut n = 0;
    let keys =
        [Method::GET, Method::HEAD].map(|m| key::primary(&ctx.route.name, &m, consumer, text));
    for k in &keys {
        if ctx.stores.remove(storage, k).await {
            n += 1;
        }
    }
    if matches!(
        storage,
        Storage::Memory | Storage::Disk | Storage::Tiered(_)
    ) {
        ctx.stores.publish_removal(keys.to_vec()).await;
    }
    n
}

/// Forwards the request as `plan` says, and handles the answer: a `304`
/// for a stale entry, an error a stale entry may cover, or a response to
/// store.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fetch(
    worker: &Worker,
    ctx: &Ctx,
    matched: &Matched,
    req: Request<ClientBody>,
    client: &ClientInfo,
    started: Instant,
    mut changes: Option<UpstreamChanges>,
    plan: Plan,
    notes: Notes<'_>,
    body_facts: &mut BodyFacts,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Plan {
        mut stale,
        leader,
        fwd,
        index,
    } = plan;
    let method = req.method().clone();
    let req_headers = req.headers().clone();
    if let Some(s) = &stale {
        let c = changes.get_or_insert_with(UpstreamChanges::default);
        c.headers.extend(
            s.validators
                .iter()
                .map(|(n, v)| (n.clone(), Some(v.clone()))),
        );
    }
    let result = worker
        .forward(matched, req, client, started, changes, notes, body_facts)
        .await;
    let now = SystemTime::now();
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(l) = leader {
                l.failed();
            }
            return match stale.filter(|s| s.may_answer_error(now)) {
                Some(s) => {
                    ctx.record(CacheResult::Stale);
                    Ok(answer::stale_on_error(s, &method, &req_headers, None, now))
                }
                None => Err(e),
            };
        }
    };
    let status = resp.status();
    if matches!(status.as_u16(), 500 | 502 | 503 | 504)
        && let Some(s) = stale.take_if(|s| s.may_answer_error(now))
    {
        if let Some(l) = leader {
            l.failed();
        }
        ctx.record(CacheResult::Stale);
        return Ok(answer::stale_on_error(
            s,
            &method,
            &req_headers,
            Some(status),
            now,
        ));
    }
    if status == StatusCode::NOT_MODIFIED
        && let Some(s) = stale
    {
        return Ok(revalidated(ctx, s, resp, &method, &req_headers, leader, fwd, now).await);
    }
    Ok(fill::respond(
        ctx,
        resp,
        &method,
        req_headers,
        leader,
        fwd,
        index,
        now,
    ))
}

/// The upstream answered a revalidation with `304`: the entry is
/// freshened and answers the request, unless the `304` was about another
/// representation (the client's own validator), which passes through.
#[allow(clippy::too_many_arguments)]
async fn revalidated(
    ctx: &Ctx,
    stale: Stale,
    mut resp: Response<ResponseBody>,
    method: &Method,
    req_headers: &HeaderMap,
    leader: Option<Leader>,
    fwd: Fwd,
    now: SystemTime,
) -> Response<ResponseBody> {
    let rule = ctx.rule();
    let Some(meta) = freshness::freshened(&stale.found.entry, &rule.freshness, resp.headers(), now)
    else {
        if let Some(l) = leader {
            l.not_shared();
        }
        ctx.record(CacheResult::Miss);
        CacheStatus {
            fwd_status: Some(304),
            ..CacheStatus::forwarded(fwd)
        }
        .add_to(resp.headers_mut());
        return resp;
    };
    let entry = Arc::new(Entry::new(meta, stale.found.entry.body_len));
    ctx.stores
        .refresh(
            rule.storage,
            stale.found.key,
            entry.clone(),
            &stale.found.body,
        )
        .await;
    if let Some(l) = leader {
        l.refreshed();
    }
    ctx.record(CacheResult::Revalidated);
    let status = CacheStatus {
        fwd_status: Some(304),
        ttl: Some(entry.policy.time_to_live(now).as_secs() as i64),
        ..CacheStatus::forwarded(fwd)
    };
    answer::from_parts(&entry, stale.found.body, method, req_headers, now, status)
}
