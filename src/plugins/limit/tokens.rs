//! `aiRateLimit`: token budgets per key and window, for routes that
//! answer from LLM providers.
//!
//! A request's cost is unknown until its answer ends, so a budget is
//! checked and spent in two steps: the request phase admits a request
//! while its key has anything left in the window (refusing with `429` and
//! `Retry-After` otherwise) and hands the AI gateway a [`TokenMeter`];
//! when the answer ends the meter adds the tokens actually used, past the
//! limit if need be. The windows are `limitCount`'s, kept here
//! (`policy: Local`) or in Redis (`policy: Redis`, one budget for every
//! replica), so a key can overspend by at most the requests it has in
//! flight when its budget runs out.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::Window;
use super::algorithms::{self, Clock, Decision, SystemClock, WindowState};
use super::key::KeySource;
use super::redis::RedisLimiter;
use super::store::{self, KeyedStore};
use crate::api::{AiRateLimit, AiTokenType, LimitPolicy};
use crate::plugins::{
    BuildEnv, ConfigError, Outcome, Owner, Plugin, Rejection, RequestCtx, TokenMeter, TokenUsage,
};

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// `aiRateLimit`.
#[derive(Debug)]
pub struct AiRateLimitPlugin {
    config: AiRateLimit,
    key: KeySource,
    budget: Arc<Budget>,
    status: StatusCode,
    body: Option<Bytes>,
    headers: bool,
}

/// A budget's window and where its counters live; shared with the
/// meters of the requests it admitted.
#[derive(Debug)]
struct Budget {
    window: Window,
    store: Arc<KeyedStore<WindowState>>,
    redis: Option<Arc<RedisLimiter>>,
    /// Identifies the counters in Redis.
    scope: Arc<str>,
    clock: Arc<dyn Clock>,
    tokens: AiTokenType,
}

impl AiRateLimitPlugin {
    pub fn build(
        c: &AiRateLimit,
        owner: &Owner,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "aiRateLimit";
        let window = Window::new(c.window_type, c.limit, c.time_window.0, field, "limit")?;
        let status = super::rejected_status(&c.common, field)?;
        let redis = match c.common.policy {
            LimitPolicy::Local => None,
            LimitPolicy::Redis => Some(RedisLimiter::for_settings(&c.common, field, env)?),
        };
        let fp = crate::plugins::fingerprint(c);
        let idle = window.idle();
        Ok(Arc::new(AiRateLimitPlugin {
            key: KeySource::new(&c.key, field)?,
            budget: Arc::new(Budget {
                window,
                store: crate::plugins::shared_state(owner, fp, || KeyedStore::new(idle)),
                redis,
                scope: format!("tokens:{}:{fp:x}", owner.0).into(),
                clock: Arc::new(SystemClock),
                tokens: c.tokens,
            }),
            status,
            body: c.common.rejected_message.clone().map(Bytes::from),
            headers: c.common.show_limit_quota_header.unwrap_or(true),
            config: c.clone(),
        }))
    }

    fn quota(&self, d: &Decision, out: &mut HeaderMap) {
        if !self.headers {
            return;
        }
        out.insert(LIMIT.clone(), HeaderValue::from(d.limit));
        out.insert(REMAINING.clone(), HeaderValue::from(d.remaining));
        out.insert(RESET.clone(), HeaderValue::from(seconds(d.reset_after)));
    }

    /// The answer once the key's budget is spent: OpenAI's error shape,
    /// so that SDKs report it as a rate limit.
    fn reject(&self, d: &Decision) -> Rejection {
        let mut headers = HeaderMap::new();
        self.quota(d, &mut headers);
        let retry = seconds(d.reset_after).max(1);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry));
        let (body, json) = match &self.body {
            Some(b) => (b.clone(), false),
            None => {
                let v = serde_json::json!({"error": {
                    "message": format!("token budget of {} exhausted; retry in {retry}s", d.limit),
                    "type": "rate_limit_exceeded",
                    "param": null,
                    "code": "rate_limit_exceeded",
                }});
                (Bytes::from(v.to_string()), true)
            }
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            }),
        );
        Rejection {
            status: self.status,
            headers,
            body,
        }
    }

    fn meter(&self, key: Vec<u8>) -> Box<dyn TokenMeter> {
        Box::new(Meter {
            budget: self.budget.clone(),
            key,
        })
    }
}

/// Whole seconds, rounded up.
fn seconds(n: algorithms::Nanos) -> u64 {
    n.div_ceil(1_000_000_000)
}

impl Plugin for AiRateLimitPlugin {
    fn name(&self) -> &'static str {
        "aiRateLimit"
    }

    fn priority(&self) -> i32 {
        1000
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let mut buf = Vec::new();
        let key = self.key.bytes(ctx, &mut buf).to_vec();
        let b = &self.budget;
        if let Some(redis) = &b.redis {
            let (limit, window) = b.window.limit_and_length();
            let sliding = b.window.is_sliding();
            let call = redis.budget(&b.scope, &key, limit, window, sliding);
            // Handed over before waiting: a refusal drops it unused.
            ctx.token_meters.push(self.meter(key));
            return Outcome::Wait(Box::pin(async move {
                let d = call.await?;
                if !d.allowed {
                    return Err(Box::new(self.reject(&d)));
                }
                let mut h = HeaderMap::new();
                self.quota(&d, &mut h);
                Ok(h.into())
            }));
        }
        let now = b.clock.now();
        let d = b
            .store
            .with(store::key_hash(&key), now, |s| match &b.window {
                Window::Fixed(w) => w.peek(s, now),
                Window::Sliding(w) => w.peek(s, now),
            });
        if !d.allowed {
            return Outcome::Reject(self.reject(&d));
        }
        self.quota(&d, &mut ctx.response_headers);
        ctx.token_meters.push(self.meter(key));
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// Charges one admitted request's key.
#[derive(Debug)]
struct Meter {
    budget: Arc<Budget>,
    key: Vec<u8>,
}

impl TokenMeter for Meter {
    fn charge(self: Box<Self>, usage: TokenUsage) {
        let b = &self.budget;
        let cost = match b.tokens {
            AiTokenType::Total => usage.prompt.saturating_add(usage.completion),
            AiTokenType::Prompt => usage.prompt,
            AiTokenType::Completion => usage.completion,
        };
        if cost == 0 {
            return;
        }
        if b.redis.is_some() {
            // The answer is over; the charge must not hold anything up.
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let me = *self;
            runtime.spawn(async move {
                let b = &me.budget;
                if let Some(redis) = &b.redis {
                    let (_, window) = b.window.limit_and_length();
                    let sliding = b.window.is_sliding();
                    redis.charge(&b.scope, &me.key, cost, window, sliding).await;
                }
            });
            return;
        }
        let now = b.clock.now();
        b.store
            .with(store::key_hash(&self.key), now, |s| match &b.window {
                Window::Fixed(w) => w.charge(s, now, cost),
                Window::Sliding(w) => w.charge(s, now, cost),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(headers: &'a HeaderMap, method: &'a http::Method) -> RequestCtx<'a> {
        RequestCtx {
            client_ip: b"10.0.0.1",
            tls: false,
            port: 8080,
            method,
            host: "ai.test",
            path: "/v1/chat/completions",
            query: None,
            headers,
            route: "r",
            consumer: Some("acme".into()),
            response_headers: HeaderMap::new(),
            guards: Vec::new(),
            upstream_headers: Vec::new(),
            remove_query: Vec::new(),
            rewrite_path: None,
            rewrite_host: None,
            body_limit: None,
            token_meters: Vec::new(),
        }
    }

    fn build(yaml: &str) -> Result<Arc<dyn Plugin>, ConfigError> {
        let c: AiRateLimit = serde_json::from_str(yaml).unwrap();
        let secret = |_: &str, _: &str| None;
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        let env = BuildEnv {
            namespace: "default",
            redis: None,
            secret: &secret,
            consumers: &consumers,
        };
        let owner = Owner(format!("test-{}", crate::plugins::fingerprint(&yaml)).into());
        AiRateLimitPlugin::build(&c, &owner, &env)
    }

    fn plugin(yaml: &str) -> Arc<dyn Plugin> {
        build(yaml).unwrap()
    }

    /// Runs the request phase; the meter of an admitted request.
    fn admit(p: &dyn Plugin) -> Result<(HeaderMap, Box<dyn TokenMeter>), Box<Rejection>> {
        let (h, m) = (HeaderMap::new(), http::Method::POST);
        let mut c = ctx(&h, &m);
        match p.request(&mut c) {
            Outcome::Continue => Ok((c.response_headers, c.token_meters.pop().unwrap())),
            Outcome::Reject(r) => Err(Box::new(r)),
            Outcome::Wait(_) => panic!("a local budget never waits"),
        }
    }

    #[test]
    fn a_budget_admits_until_spent_then_refuses_with_retry_after() {
        let p = plugin(r#"{"limit": 100, "timeWindow": "1h", "key": {"type": "Consumer"}}"#);
        let (h, meter) = admit(&*p).unwrap();
        assert_eq!(h["x-ratelimit-limit-tokens"], "100");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "100");
        meter.charge(TokenUsage {
            prompt: 30,
            completion: 40,
        });
        let (h, meter) = admit(&*p).unwrap();
        assert_eq!(h["x-ratelimit-remaining-tokens"], "30");
        // Spent past the limit: it was used.
        meter.charge(TokenUsage {
            prompt: 30,
            completion: 40,
        });
        let r = admit(&*p).unwrap_err();
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers["x-ratelimit-remaining-tokens"], "0");
        assert!(r.headers.contains_key(http::header::RETRY_AFTER));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn the_rejected_code_is_the_limit_plugins_and_checked_alike() {
        let p = plugin(r#"{"limit": 1, "timeWindow": "1h", "rejectedCode": 503}"#);
        let (_, meter) = admit(&*p).unwrap();
        meter.charge(TokenUsage {
            prompt: 1,
            completion: 1,
        });
        assert_eq!(
            admit(&*p).unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let e = build(r#"{"limit": 1, "timeWindow": "1h", "rejectedCode": 700}"#).unwrap_err();
        assert_eq!(e.field, "aiRateLimit.rejectedCode", "{e:?}");
    }

    #[test]
    fn a_budget_counts_the_tokens_it_names() {
        let p = plugin(r#"{"limit": 10, "timeWindow": "1h", "tokens": "Completion"}"#);
        let (_, meter) = admit(&*p).unwrap();
        meter.charge(TokenUsage {
            prompt: 1000,
            completion: 3,
        });
        let (h, _) = admit(&*p).unwrap();
        assert_eq!(h["x-ratelimit-remaining-tokens"], "7");
    }
}
