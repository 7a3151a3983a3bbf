//! RFC 9111 decisions for a shared cache, made by `http-cache-semantics`:
//! whether a response may be stored, whether an entry is fresh for a
//! request, which validators a revalidation sends and whether a `304`
//! freshens an entry. This module adds what that crate leaves to its
//! users: the route's settings (`statuses`, `defaultTtl`, `storeSetCookie`)
//! and RFC 5861's `stale-while-revalidate` and `stale-if-error`.
//!
//! Every function takes `now`, so the rules are tested on a clock the
//! tests control.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_cache_semantics::{
    AfterResponse, BeforeRequest, CacheOptions, CachePolicy, RequestLike, ResponseLike,
};

use super::entry::{Entry, Meta, from_unix_ms, unix_ms};

/// Entries are kept at most this long, whatever they say.
pub const MAX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// An entry with validators is kept past its freshness for at least this
/// long, so that it can be revalidated rather than fetched again.
const MIN_REVALIDATION_KEEP: Duration = Duration::from_secs(60);
/// Statuses that may get heuristic freshness (RFC 9110 §15.1); only they
/// get `defaultTtl`.
const HEURISTIC: &[u16] = &[200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The route settings these rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub statuses: Box<[u16]>,
    pub default_ttl: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub store_set_cookie: bool,
}

/// The fields of a request that an entry's policy reads: its cache
/// directives, its credentials (when they count) and the fields the
/// response varies on. Everything else is left out, so an entry holds
/// little of its request, and the URI (which the key already decides) is
/// the same for every view.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub headers: Cow<'a, HeaderMap>,
}

impl RequestLike for RequestView<'_> {
    fn uri(&self) -> Uri {
        Uri::from_static("/")
    }
    fn is_same_uri(&self, _: &Uri) -> bool {
        true
    }
    fn method(&self) -> &Method {
        self.method
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

struct ResponseView<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl ResponseLike for ResponseView<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// The view of a request for an entry varying on `vary`. `credentials`:
/// whether its `Authorization` counts (RFC 9111 §3.5); it does not when
/// the gateway authenticated the consumer and keys entries by consumer.
pub fn request_view(headers: &HeaderMap, vary: &[HeaderName], credentials: bool) -> HeaderMap {
    let mut view = HeaderMap::new();
    let mut copy = |name: &HeaderName| {
        for v in headers.get_all(name) {
            view.append(name.clone(), v.clone());
        }
    };
    copy(&header::CACHE_CONTROL);
    copy(&header::PRAGMA);
    if credentials {
        copy(&header::AUTHORIZATION);
    }
    for name in vary {
        if *name != header::CACHE_CONTROL
            && *name != header::PRAGMA
            && *name != header::AUTHORIZATION
        {
            copy(name);
        }
    }
    view
}

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// The policy of a stored entry, rebuilt from its metadata.
pub fn policy(meta: &Meta) -> CachePolicy {
    let headers = with_default_ttl(&meta.headers, meta.default_ttl);
    CachePolicy::new_options(
        &RequestView {
            method: &meta.method,
            headers: Cow::Borrowed(&meta.request),
        },
        &ResponseView {
            status: meta.status,
            headers: &headers,
        },
        from_unix_ms(meta.response_time),
        options(),
    )
}

/// The response's headers as the policy reads them: with `max-age` set to
/// the route's `defaultTtl` when it applies (never sent to clients).
fn with_default_ttl(headers: &HeaderMap, secs: u32) -> Cow<'_, HeaderMap> {
    if secs == 0 {
        return Cow::Borrowed(headers);
    }
    let mut h = headers.clone();
    if let Ok(v) = HeaderValue::try_from(format!("max-age={secs}")) {
        h.append(header::CACHE_CONTROL, v);
    }
    Cow::Owned(h)
}

/// The `Cache-Control` directives of `headers`, names in lower case.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            };
            Some((name.to_ascii_lowercase(), value))
        })
}

/// Whether a response says nothing of its freshness: no `max-age`,
/// `s-maxage`, `Expires` or `Last-Modified` (for a heuristic), and no
/// `no-cache`.
fn gives_no_freshness(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::EXPIRES) || headers.contains_key(header::LAST_MODIFIED) {
        return false;
    }
    let mut has_cc = false;
    for (name, _) in directives(headers) {
        has_cc = true;
        if matches!(
            name.as_str(),
            "max-age" | "s-maxage" | "no-cache" | "immutable"
        ) {
            return false;
        }
    }
    let pragma_no_cache = headers
        .get(header::PRAGMA)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache"));
    has_cc || !pragma_no_cache
}

/// How long past its freshness an entry may be served while it is
/// refreshed, and when the upstream fails: the response's own RFC 5861
/// directives, else the route's settings. Both are zero when the response
/// forbids serving it stale (`no-cache`, `must-revalidate`,
/// `proxy-revalidate`); `s-maxage` (which implies `proxy-revalidate` for
/// a shared cache) keeps only the response's own directives.
pub fn stale_windows(headers: &HeaderMap, settings: &Settings) -> (Duration, Duration) {
    let (mut swr, mut sie, mut s_maxage) = (None, None, false);
    for (name, value) in directives(headers) {
        let secs = || {
            value
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        match name.as_str() {
            "no-cache" | "must-revalidate" | "proxy-revalidate" => {
                return (Duration::ZERO, Duration::ZERO);
            }
            "s-maxage" => s_maxage = true,
            "stale-while-revalidate" => swr = secs(),
            "stale-if-error" => sie = secs(),
            _ => {}
        }
    }
    let fallback = |own: Option<Duration>, route: Option<Duration>| match own {
        Some(d) => d,
        None if s_maxage => Duration::ZERO,
        None => route.unwrap_or(Duration::ZERO),
    };
    (
        fallback(swr, settings.stale_while_revalidate),
        fallback(sie, settings.stale_if_error),
    )
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Its status is not among the route's `statuses`.
    Status,
    /// `Vary: *` (RFC 9111 §4.1: it never matches).
    VaryStar,
    /// It sets a cookie, and the route does not store those.
    SetCookie,
    /// RFC 9111 forbids it: `no-store`, `private`, credentials, an
    /// unknown status or an uncacheable method.
    Forbidden,
    /// It would never be fresh, and has nothing to revalidate with.
    Useless,
}

/// A response that may be stored, and how.
#[derive(Debug)]
pub struct Storable {
    /// The headers to store (without `Set-Cookie`).
    pub headers: HeaderMap,
    /// The request view (see [`RequestView`]).
    pub request: HeaderMap,
    /// Lower-case names of the headers it varies on.
    pub vary: Box<[HeaderName]>,
    /// `defaultTtl` in seconds, when it applies; else 0.
    pub default_ttl: u32,
    /// How long it stays fresh from now.
    pub freshness: Duration,
    /// How long the store keeps it.
    pub retention: Duration,
}

/// The `Vary` names of `headers`, lower case; `None` for `Vary: *`.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in headers.get_all(header::VARY) {
        for name in v.to_str().unwrap_or("*").split(',') {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "*" {
                return None;
            }
            let n = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    Some(names)
}

/// Whether a response to `method` with `request` headers may be stored,
/// by the route's settings and RFC 9111.
pub fn storable(
    settings: &Settings,
    method: &Method,
    request: &HeaderMap,
    credentials: bool,
    status: StatusCode,
    response: &HeaderMap,
    now: SystemTime,
) -> Result<Storable, NotStored> {
    if !settings.statuses.contains(&status.as_u16()) {
        return Err(NotStored::Status);
    }
    let vary = vary_names(response).ok_or(NotStored::VaryStar)?;
    let mut headers = response.clone();
    if headers.contains_key(header::SET_COOKIE) {
        if !settings.store_set_cookie {
            return Err(NotStored::SetCookie);
        }
        headers.remove(header::SET_COOKIE);
    }
    let default_ttl = match settings.default_ttl {
        Some(ttl) if HEURISTIC.contains(&status.as_u16()) && gives_no_freshness(&headers) => {
            u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)
        }
        _ => 0,
    };
    let view = request_view(request, &vary, credentials);
    let policy_headers = with_default_ttl(&headers, default_ttl);
    let policy = CachePolicy::new_options(
        &RequestView {
            method,
            headers: Cow::Borrowed(&view),
        },
        &ResponseView {
            status,
            headers: &policy_headers,
        },
        now,
        options(),
    );
    if !policy.is_storable() {
        return Err(NotStored::Forbidden);
    }
    let freshness = policy.time_to_live(now);
    let (swr, sie) = stale_windows(&headers, settings);
    let validators =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let keep = if validators {
        freshness.max(MIN_REVALIDATION_KEEP)
    } else {
        Duration::ZERO
    };
    let retention = (freshness + swr.max(sie) + keep).min(MAX_RETENTION);
    if retention.is_zero() {
        return Err(NotStored::Useless);
    }
    Ok(Storable {
        headers,
        request: view,
        vary: vary.into_boxed_slice(),
        default_ttl,
        freshness,
        retention,
    })
}

/// What to do with an entry for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; it stays fresh for `ttl`.
    Fresh { ttl: Duration },
    /// Serve it stale (by `stale_for`) and refresh it in the background
    /// with these validators.
    StaleWhileRevalidate {
        stale_for: Duration,
        validators: Vec<(HeaderName, HeaderValue)>,
    },
    /// Ask the upstream, with these validators (none when the entry has
    /// none). Until `stale_if_error_until` the entry may answer an
    /// upstream failure. `by_request`: the entry was fresh, but the
    /// request's own directives asked for the upstream.
    Revalidate {
        validators: Vec<(HeaderName, HeaderValue)>,
        stale_if_error_until: Option<SystemTime>,
        by_request: bool,
    },
}

/// Whether `entry` may answer a request with `headers` (whose key
/// already selected it, method and variant included).
pub fn decide(
    entry: &Entry,
    settings: &Settings,
    headers: &HeaderMap,
    credentials: bool,
    now: SystemTime,
) -> Verdict {
    let policy = &entry.policy;
    let directives =
        headers.contains_key(header::CACHE_CONTROL) || headers.contains_key(header::PRAGMA);
    let stale = policy.is_stale(now);
    if !directives && !stale {
        return Verdict::Fresh {
            ttl: policy.time_to_live(now),
        };
    }
    let vary = vary_names(&entry.meta.headers).unwrap_or_default();
    let view = RequestView {
        method: &entry.meta.method,
        headers: Cow::Owned(request_view(headers, &vary, credentials)),
    };
    let validators = match policy.before_request(&view, now) {
        BeforeRequest::Fresh(_) => {
            return Verdict::Fresh {
                ttl: policy.time_to_live(now),
            };
        }
        BeforeRequest::Stale { request, matches } => {
            if matches {
                validators_of(&request.headers)
            } else {
                Vec::new()
            }
        }
    };
    // Fresh, but the request wants the upstream (`no-cache`, `max-age`).
    if !stale {
        return Verdict::Revalidate {
            validators,
            stale_if_error_until: None,
            by_request: true,
        };
    }
    let response_time = from_unix_ms(entry.meta.response_time);
    let fresh_until = response_time + policy.time_to_live(response_time);
    let stale_for = now.duration_since(fresh_until).unwrap_or_default();
    let (swr, sie) = stale_windows(&entry.meta.headers, settings);
    if !directives && stale_for < swr {
        return Verdict::StaleWhileRevalidate {
            stale_for,
            validators,
        };
    }
    Verdict::Revalidate {
        validators,
        stale_if_error_until: (!sie.is_zero()).then(|| fresh_until + sie),
        by_request: false,
    }
}

/// The validators a revalidation request carries.
fn validators_of(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE]
        .into_iter()
        .filter_map(|n| headers.get(&n).cloned().map(|v| (n, v)))
        .collect()
}

/// Fields a `304` does not update in a stored response (RFC 9111 §3.2
/// leaves these to the stored body), and `Set-Cookie`, which is for the
/// request that revalidated, not for everyone the entry serves.
fn kept_on_304(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::CONTENT_RANGE,
        header::SET_COOKIE,
    ]
    .contains(name)
}

/// The entry's metadata freshened by a `304` (RFC 9111 §4.3.4), or `None`
/// when the `304` is about another representation (its validator differs).
pub fn freshened(
    entry: &Entry,
    settings: &Settings,
    response: &HeaderMap,
    now: SystemTime,
) -> Option<Meta> {
    let view = RequestView {
        method: &entry.meta.method,
        headers: Cow::Borrowed(&entry.meta.request),
    };
    let not_modified = ResponseView {
        status: StatusCode::NOT_MODIFIED,
        headers: response,
    };
    match entry.policy.after_response(&view, &not_modified, now) {
        AfterResponse::NotModified(..) => {}
        AfterResponse::Modified(..) => return None,
    }
    let mut headers = entry.meta.headers.clone();
    let mut last: Option<&HeaderName> = None;
    for (name, value) in response {
        if kept_on_304(name) {
            continue;
        }
        if last != Some(name) {
            headers.remove(name);
            last = Some(name);
        }
        headers.append(name.clone(), value.clone());
    }
    let mut meta = Meta {
        headers,
        response_time: unix_ms(now),
        stored_at: unix_ms(now),
        ..entry.meta.clone()
    };
    let policy = policy(&meta);
    let freshness = policy.time_to_live(now);
    let (swr, sie) = stale_windows(&meta.headers, settings);
    let keep = freshness.max(MIN_REVALIDATION_KEEP);
    meta.expires_at = unix_ms(now + (freshness + swr.max(sie) + keep).min(MAX_RETENTION));
    Some(meta)
}

/// The `Age` to send with an entry now (RFC 9111 §5.1).
pub fn age(entry: &Entry, now: SystemTime) -> Duration {
    entry.policy.age(now)
}

#[cfg(test)]
#[path = "freshness_tests.rs"]
mod tests;
