//! Rate limiting: `limitCount`, `limitReq` and `limitConn`, and the token
//! budgets of `aiRateLimit` ([`tokens`]).
//!
//! Each limiter keeps its counters per key (client address, a header, the
//! consumer, a template or a constant) either in this process (`Local`:
//! sharded maps, idle keys expire) or in Redis (`Redis`: every replica
//! shares them; see [`redis`]). Refused requests get `rejectedCode`
//! (default 429) with `Retry-After`; every response of a limited route
//! carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` unless
//! `showLimitQuotaHeader` is false.
//!
//! `limitReq` is the leaky bucket of nginx's `limit_req` in its GCRA form;
//! read as a token bucket, `rate` is the refill rate and `burst` the
//! bucket size.

pub mod algorithms;
mod key;
pub mod redis;
pub mod store;
pub mod tokens;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{BuildEnv, ConfigError, Outcome, Owner, Plugin, Rejection, RequestCtx};
use crate::api::{LimitCommon, LimitConn, LimitCount, LimitPolicy, LimitReq, WindowType};
use algorithms::{
    Clock, Concurrency, Decision, FixedWindow, Gcra, Nanos, SlidingWindow, SystemClock, WindowState,
};
pub use key::KeySource;
use store::KeyedStore;

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Keys unused this long are forgotten (for windows, at least one window).
const IDLE: Duration = Duration::from_secs(120);

/// How refused requests are answered, and whether quota headers are sent.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    body: Bytes,
    headers: bool,
}

/// The status refused requests get: `rejectedCode`, 429 by default.
fn rejected_status(common: &LimitCommon, field: &str) -> Result<StatusCode, ConfigError> {
    let code = common.rejected_code.unwrap_or(429);
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| {
            ConfigError::new(
                format!("{field}.rejectedCode"),
                format!("{code} is not a status between 200 and 599"),
            )
        })
}

impl Answer {
    fn new(common: &LimitCommon, field: &str) -> Result<Answer, ConfigError> {
        let status = rejected_status(common, field)?;
        let body = common
            .rejected_message
            .clone()
            .map_or_else(|| Bytes::from_static(b"too many requests\n"), Bytes::from);
        Ok(Answer {
            status,
            body,
            headers: common.show_limit_quota_header.unwrap_or(true),
        })
    }

    /// Adds the quota headers of `d` to the response headers.
    fn quota(&self, d: &Decision, out: &mut HeaderMap) {
        if !self.headers {
            return;
        }
        out.insert(LIMIT.clone(), HeaderValue::from(d.limit));
        out.insert(REMAINING.clone(), HeaderValue::from(d.remaining));
        out.insert(RESET.clone(), HeaderValue::from(seconds(d.reset_after)));
    }

    fn reject(&self, d: &Decision) -> Rejection {
        let mut headers = HeaderMap::new();
        self.quota(d, &mut headers);
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(seconds(d.reset_after).max(1)),
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Rejection {
            status: self.status,
            headers,
            body: self.body.clone(),
        }
    }
}

/// Whole seconds, rounded up.
fn seconds(n: Nanos) -> u64 {
    n.div_ceil(1_000_000_000)
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Refuses `policy: Redis` until the Redis store is configured, and
/// returns the Redis store to use otherwise.
fn redis_store(
    common: &LimitCommon,
    field: &str,
    env: &BuildEnv<'_>,
) -> Result<Option<Arc<redis::RedisLimiter>>, ConfigError> {
    match common.policy {
        LimitPolicy::Local => Ok(None),
        LimitPolicy::Redis => redis::RedisLimiter::for_settings(common, field, env).map(Some),
    }
}

/// `limitCount`: requests per window.
#[derive(Debug)]
pub struct LimitCountPlugin {
    config: LimitCount,
    key: KeySource,
    window: Window,
    answer: Answer,
    store: Arc<KeyedStore<WindowState>>,
    redis: Option<Arc<redis::RedisLimiter>>,
    /// Identifies the counters in Redis.
    scope: Arc<str>,
    clock: Arc<dyn Clock>,
}

/// A counting window, fixed or sliding: `limitCount`'s requests and
/// `aiRateLimit`'s tokens are counted alike.
#[derive(Debug, Clone, Copy)]
pub(super) enum Window {
    Fixed(FixedWindow),
    Sliding(SlidingWindow),
}

impl Window {
    /// The window of `kind` allowing `limit` per `length`; `field` and
    /// `limit_name` name the settings in the error.
    pub(super) fn new(
        kind: WindowType,
        limit: u64,
        length: Duration,
        field: &str,
        limit_name: &str,
    ) -> Result<Window, ConfigError> {
        let window = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        if window == 0 || limit == 0 {
            return Err(ConfigError::new(
                field,
                format!("{limit_name} and timeWindow must be greater than zero"),
            ));
        }
        Ok(match kind {
            WindowType::Fixed => Window::Fixed(FixedWindow { limit, window }),
            WindowType::Sliding => Window::Sliding(SlidingWindow { limit, window }),
        })
    }

    pub(super) fn limit_and_length(&self) -> (u64, u64) {
        match self {
            Window::Fixed(w) => (w.limit, w.window),
            Window::Sliding(w) => (w.limit, w.window),
        }
    }

    pub(super) fn is_sliding(&self) -> bool {
        matches!(self, Window::Sliding(_))
    }

    /// How long a key's idle counters are kept: two windows, at least
    /// [`IDLE`].
    pub(super) fn idle(&self) -> Nanos {
        self.limit_and_length()
            .1
            .saturating_mul(2)
            .max(algorithms::to_nanos(IDLE))
    }
}

impl LimitCountPlugin {
    pub fn build(
        c: &LimitCount,
        owner: &Owner,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "limitCount";
        let window = Window::new(c.window_type, c.count, c.time_window.0, field, "count")?;
        let idle = window.idle();
        let owner = match &c.group {
            Some(g) => Owner(format!("group:{}/{g}", env.namespace).into()),
            None => owner.clone(),
        };
        let fp = super::fingerprint(c);
        Ok(Arc::new(LimitCountPlugin {
            key: KeySource::new(&c.key, field)?,
            answer: Answer::new(&c.common, field)?,
            redis: redis_store(&c.common, field, env)?,
            store: super::shared_state(&owner, fp, || KeyedStore::new(idle)),
            scope: format!("count:{}:{fp:x}", owner.0).into(),
            window,
            config: c.clone(),
            clock: clock(),
        }))
    }
}

impl Plugin for LimitCountPlugin {
    fn name(&self) -> &'static str {
        "limitCount"
    }

    fn priority(&self) -> i32 {
        1002
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let mut buf = Vec::new();
        let key = self.key.bytes(ctx, &mut buf);
        if let Some(redis) = &self.redis {
            let (limit, window) = self.window.limit_and_length();
            let sliding = self.window.is_sliding();
            let call = redis.count(&self.scope, key, limit, window, sliding);
            return Outcome::Wait(Box::pin(async move {
                let d = call.await?;
                self.finish(d).map(Into::into)
            }));
        }
        let hash = store::key_hash(key);
        let now = self.clock.now();
        let d = self.store.with(hash, now, |s| match &self.window {
            Window::Fixed(w) => w.check(s, now, 1),
            Window::Sliding(w) => w.check(s, now, 1),
        });
        decided(&self.answer, d, ctx)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

impl LimitCountPlugin {
    fn finish(&self, d: Decision) -> Result<HeaderMap, Box<Rejection>> {
        finish(&self.answer, d)
    }
}

/// The outcome of a decision made without waiting.
fn decided<'s>(answer: &Answer, d: Decision, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
    if d.allowed {
        answer.quota(&d, &mut ctx.response_headers);
        Outcome::Continue
    } else {
        Outcome::Reject(answer.reject(&d))
    }
}

/// The result of a decision made after waiting.
fn finish(answer: &Answer, d: Decision) -> Result<HeaderMap, Box<Rejection>> {
    if d.allowed {
        let mut h = HeaderMap::new();
        answer.quota(&d, &mut h);
        Ok(h)
    } else {
        Err(Box::new(answer.reject(&d)))
    }
}

/// `limitReq`: a sustained rate with a burst.
#[derive(Debug)]
pub struct LimitReqPlugin {
    config: LimitReq,
    key: KeySource,
    gcra: Gcra,
    answer: Answer,
    store: Arc<KeyedStore<Nanos>>,
    redis: Option<Arc<redis::RedisLimiter>>,
    scope: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl LimitReqPlugin {
    pub fn build(
        c: &LimitReq,
        owner: &Owner,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "limitReq";
        let gcra = Gcra::new(c.rate, c.burst, c.nodelay).ok_or_else(|| {
            ConfigError::new(
                format!("{field}.rate"),
                format!(
                    "rate {} and burst {} must be finite, rate above zero and burst not negative",
                    c.rate, c.burst
                ),
            )
        })?;
        let fp = super::fingerprint(c);
        Ok(Arc::new(LimitReqPlugin {
            key: KeySource::new(&c.key, field)?,
            answer: Answer::new(&c.common, field)?,
            redis: redis_store(&c.common, field, env)?,
            // A key must outlive its bucket's reach into the future, or a
            // sweep would hand a still-limited client a fresh burst.
            store: super::shared_state(owner, fp, || {
                let reach = gcra.tolerance.saturating_add(gcra.interval);
                KeyedStore::new(algorithms::to_nanos(IDLE).max(reach))
            }),
            scope: format!("req:{}:{fp:x}", owner.0).into(),
            gcra,
            config: c.clone(),
            clock: clock(),
        }))
    }
}

impl Plugin for LimitReqPlugin {
    fn name(&self) -> &'static str {
        "limitReq"
    }

    fn priority(&self) -> i32 {
        1001
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let mut buf = Vec::new();
        let key = self.key.bytes(ctx, &mut buf);
        if let Some(redis) = &self.redis {
            let call = redis.gcra(&self.scope, key, &self.gcra);
            return Outcome::Wait(Box::pin(async move {
                let d = call.await?;
                hold(d.delay).await;
                finish(&self.answer, d).map(Into::into)
            }));
        }
        let hash = store::key_hash(key);
        let now = self.clock.now();
        let d = self.store.with(hash, now, |tat| self.gcra.check(tat, now));
        if d.allowed && d.delay > 0 {
            let answer = &self.answer;
            return Outcome::Wait(Box::pin(async move {
                hold(d.delay).await;
                finish(answer, d).map(Into::into)
            }));
        }
        decided(&self.answer, d, ctx)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// Holds a request so that it leaves at the configured rate.
async fn hold(delay: Nanos) {
    if delay > 0 {
        tokio::time::sleep(Duration::from_nanos(delay)).await;
    }
}

/// `limitConn`: concurrent requests.
#[derive(Debug)]
pub struct LimitConnPlugin {
    config: LimitConn,
    key: KeySource,
    limit: Concurrency,
    answer: Answer,
    store: Arc<KeyedStore<Arc<AtomicU64>>>,
    clock: Arc<dyn Clock>,
}

impl LimitConnPlugin {
    pub fn build(
        c: &LimitConn,
        owner: &Owner,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "limitConn";
        if c.conn == 0 {
            return Err(ConfigError::new(
                format!("{field}.conn"),
                "must be at least 1",
            ));
        }
        if c.common.policy == LimitPolicy::Redis {
            return Err(ConfigError::new(
                format!("{field}.policy"),
                "limitConn counts requests in flight in this replica only; use policy Local",
            ));
        }
        let _ = env;
        let fp = super::fingerprint(c);
        Ok(Arc::new(LimitConnPlugin {
            key: KeySource::new(&c.key, field)?,
            answer: Answer::new(&c.common, field)?,
            store: super::shared_state(owner, fp, || KeyedStore::new(algorithms::to_nanos(IDLE))),
            limit: Concurrency {
                max: c.conn,
                burst: c.burst,
            },
            config: c.clone(),
            clock: clock(),
        }))
    }
}

/// Releases one in-flight slot when the response is done.
struct ConnGuard(Arc<AtomicU64>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        Concurrency::release(&self.0);
    }
}

impl Plugin for LimitConnPlugin {
    fn name(&self) -> &'static str {
        "limitConn"
    }

    fn priority(&self) -> i32 {
        1003
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let mut buf = Vec::new();
        let key = self.key.bytes(ctx, &mut buf);
        let hash = store::key_hash(key);
        let now = self.clock.now();
        // Taken under the store's lock, so that a sweep can never drop a
        // count between the check and the slot being held.
        let (d, slot) = self
            .store
            .with(hash, now, |s| (self.limit.try_acquire(s), s.clone()));
        if d.allowed {
            ctx.guards.push(Box::new(ConnGuard(slot)));
        }
        decided(&self.answer, d, ctx)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
