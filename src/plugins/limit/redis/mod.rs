//! Rate-limit counters shared by every replica through Redis (a single
//! server or a Redis Cluster).
//!
//! Checks run in a server-side script, so the read-modify-write of a
//! counter is atomic however many replicas call at once; the checks of
//! many requests share one call (see [`batch`]). Keys carry a hash tag
//! (`sg:{scope|key}:window`), so the keys one check touches live in one
//! cluster slot. Windows are aligned to multiples of their length since
//! the Unix epoch, on each replica's clock (NTP keeps replicas well within
//! a window of each other); GCRA reads the server's clock.
//!
//! Connections are made on first use, one per worker thread and Redis
//! target, and reconnect by themselves. A check whose call fails or takes
//! longer than the timeout follows `allowDegradation`: the request goes
//! through, or is refused with 503.

mod batch;
pub mod conn;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::algorithms::{Decision, Gcra};
use crate::api::LimitCommon;
use crate::plugins::{BuildEnv, ConfigError, Rejection};

/// Default time allowed per Redis call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Key text longer than this is replaced by a hash of it.
const MAX_KEY: usize = 200;

/// Histogram: time of Redis calls made by rate limiters.
pub const REDIS_DURATION: &str = "sluicegate_redis_duration_seconds";
/// Counter: Redis calls that failed or timed out, by `reason`.
pub const REDIS_ERRORS: &str = "sluicegate_redis_errors_total";
/// Histogram: checks carried by one Redis call.
pub const REDIS_BATCH: &str = "sluicegate_redis_batch_checks";

/// Where counters live.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    pub urls: Vec<String>,
    pub cluster: bool,
    pub password: Option<String>,
}

impl RedisTarget {
    /// Parses `--redis-url` style text: one URL, or several
    /// comma-separated for a cluster.
    pub fn parse(text: &str, cluster: bool, password: Option<String>) -> Result<Self, String> {
        let urls: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err("no Redis URL given".into());
        }
        for u in &urls {
            redis::parse_redis_url(u).ok_or_else(|| format!("{u:?} is not a redis:// URL"))?;
        }
        if urls.len() > 1 && !cluster {
            return Err("several URLs are only meaningful for a cluster (cluster: true)".into());
        }
        Ok(RedisTarget {
            urls,
            cluster,
            password,
        })
    }
}

/// A limiter's access to Redis.
#[derive(Debug)]
pub struct RedisLimiter {
    target: RedisTarget,
    /// Identifies `target` among connections.
    target_id: u64,
    timeout: Duration,
    allow_degradation: bool,
}

impl RedisLimiter {
    /// The Redis access `common` asks for: its own `redis` settings or
    /// the gateway's `--redis-url`.
    pub fn for_settings(
        common: &LimitCommon,
        field: &str,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<RedisLimiter>, ConfigError> {
        let (target, timeout) = match &common.redis {
            Some(r) => {
                let password = match &r.password_secret_ref {
                    None => None,
                    Some(s) => {
                        let bytes = (env.secret)(&s.name, "redis-password").ok_or_else(|| {
                            ConfigError::new(
                                format!("{field}.redis.passwordSecretRef"),
                                format!(
                                    "Secret {}/{} has no redis-password value",
                                    env.namespace, s.name
                                ),
                            )
                        })?;
                        Some(String::from_utf8(bytes).map_err(|_| {
                            ConfigError::new(
                                format!("{field}.redis.passwordSecretRef"),
                                "the password is not UTF-8",
                            )
                        })?)
                    }
                };
                let target = RedisTarget::parse(&r.url, r.cluster, password)
                    .map_err(|e| ConfigError::new(format!("{field}.redis.url"), e))?;
                (target, r.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0))
            }
            None => match env.redis {
                Some(t) => (t.clone(), DEFAULT_TIMEOUT),
                None => {
                    return Err(ConfigError::new(
                        format!("{field}.policy"),
                        "policy Redis needs redis settings here or --redis-url on the gateway",
                    ));
                }
            },
        };
        if timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{field}.redis.timeout"),
                "must be greater than zero",
            ));
        }
        let target_id = {
            use std::hash::BuildHasher;
            foldhash::fast::FixedState::with_seed(0xced1).hash_one(&target)
        };
        Ok(Arc::new(RedisLimiter {
            target,
            target_id,
            timeout,
            allow_degradation: common.allow_degradation,
        }))
    }

    /// Runs `check` in this worker's next batch of calls to Redis.
    async fn run(&self, check: batch::Check) -> Result<batch::Answer, batch::Failure> {
        batch::check(&self.target, self.target_id, self.timeout, check).await
    }

    /// The answer when Redis could not decide: let the request through
    /// or refuse it, as `allowDegradation` says.
    fn degraded(&self, limit: u64) -> Result<Decision, Box<Rejection>> {
        if self.allow_degradation {
            return Ok(Decision {
                allowed: true,
                limit,
                remaining: limit,
                reset_after: 0,
                delay: 0,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        Err(Box::new(Rejection {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers,
            body: Bytes::from_static(b"rate limiter unavailable\n"),
        }))
    }

    /// One `limitCount` check of `key`.
    pub fn count<'s>(
        &'s self,
        scope: &str,
        key: &[u8],
        limit: u64,
        window: u64,
        sliding: bool,
    ) -> impl Future<Output = Result<Decision, Box<Rejection>>> + Send + 's {
        let base = redis_key(scope, key);
        let window_ms = (window / 1_000_000).max(1);
        let now_ms = unix_ms();
        let index = now_ms / window_ms;
        let into = now_ms % window_ms;
        let reset_after = (window_ms - into) * 1_000_000;
        let previous = sliding.then(|| format!("{base}:{}", index.saturating_sub(1)));
        // The window's key extends the base in place: one allocation.
        let mut current = base;
        // Writing to a String cannot fail.
        let _ = write!(current, ":{index}");
        let check = if let Some(previous) = previous {
            batch::Check::Sliding {
                previous,
                current,
                limit,
                // The previous window is still read during the next one.
                ttl_ms: window_ms * 2,
                // What is left of the previous window, in millionths.
                weight: (window_ms - into) * 1_000_000 / window_ms,
            }
        } else {
            batch::Check::Fixed {
                key: current,
                ttl_ms: window_ms,
            }
        };
        async move {
            let Ok([first, second, _]) = self.run(check).await else {
                return self.degraded(limit);
            };
            // Fixed: the count including this request. Sliding: allowed,
            // then the weighted count.
            let (allowed, used) = if sliding {
                (first == 1, second)
            } else {
                (first as u64 <= limit, first)
            };
            Ok(Decision {
                allowed,
                limit,
                remaining: limit.saturating_sub(used.max(0) as u64),
                reset_after,
                delay: 0,
            })
        }
    }

    /// One `limitReq` check of `key`.
    pub fn gcra<'s>(
        &'s self,
        scope: &str,
        key: &[u8],
        gcra: &Gcra,
    ) -> impl Future<Output = Result<Decision, Box<Rejection>>> + Send + 's {
        let (interval_us, tolerance_us) = ((gcra.interval / 1000).max(1), gcra.tolerance / 1000);
        let (nodelay, limit) = (gcra.nodelay, gcra.limit);
        let check = batch::Check::Gcra {
            key: redis_key(scope, key),
            interval_us,
            tolerance_us,
        };
        async move {
            // Allowed, how long until this request's turn, how far the
            // bucket now reaches into the future (all microseconds).
            let Ok([allowed, wait, ahead]) = self.run(check).await else {
                return self.degraded(limit);
            };
            let (allowed, wait, ahead) = (allowed == 1, wait.max(0) as u64, ahead.max(0) as u64);
            let span = tolerance_us + interval_us;
            let remaining = span.saturating_sub(ahead) / interval_us;
            Ok(Decision {
                allowed,
                limit,
                remaining: remaining.min(limit),
                reset_after: if allowed {
                    ahead * 1000
                } else {
                    ahead.saturating_sub(span) * 1000 + interval_us * 1000
                },
                delay: if allowed && !nodelay { wait * 1000 } else { 0 },
            })
        }
    }
}

/// Where a window's counters are, for budgets: the current window's key,
/// the previous one's (the current one again for a fixed window) with the
/// share of it still counted, and the time left in the current window.
struct WindowKeys {
    current: String,
    previous: String,
    weight: u64,
    reset_after: u64,
    ttl_ms: u64,
}

fn window_keys(scope: &str, key: &[u8], window: u64, sliding: bool) -> WindowKeys {
    let base = redis_key(scope, key);
    let window_ms = (window / 1_000_000).max(1);
    let now_ms = unix_ms();
    let index = now_ms / window_ms;
    let into = now_ms % window_ms;
    let current = format!("{base}:{index}");
    let (previous, weight, ttl_ms) = if sliding {
        (
            format!("{base}:{}", index.saturating_sub(1)),
            (window_ms - into) * 1_000_000 / window_ms,
            window_ms * 2,
        )
    } else {
        (current.clone(), 0, window_ms)
    };
    WindowKeys {
        current,
        previous,
        weight,
        reset_after: (window_ms - into) * 1_000_000,
        ttl_ms,
    }
}

impl RedisLimiter {
    /// Admission against a token budget (`aiRateLimit`): allowed while
    /// the window's use is below `limit`.
    pub fn budget<'s>(
        &'s self,
        scope: &str,
        key: &[u8],
        limit: u64,
        window: u64,
        sliding: bool,
    ) -> impl Future<Output = Result<Decision, Box<Rejection>>> + Send + use<'s> {
        let w = window_keys(scope, key, window, sliding);
        let check = batch::Check::Peek {
            current: w.current,
            previous: w.previous,
            weight: w.weight,
        };
        async move {
            let Ok([_, used, _]) = self.run(check).await else {
                return self.degraded(limit);
            };
            let used = used.max(0) as u64;
            Ok(Decision {
                allowed: used < limit,
                limit,
                remaining: limit.saturating_sub(used),
                reset_after: w.reset_after,
                delay: 0,
            })
        }
    }

    /// Adds what a request spent to its budget's current window. A
    /// failure is logged by the batcher and otherwise ignored: the
    /// request has been answered already.
    pub fn charge<'s>(
        &'s self,
        scope: &str,
        key: &[u8],
        cost: u64,
        window: u64,
        sliding: bool,
    ) -> impl Future<Output = ()> + Send + use<'s> {
        let w = window_keys(scope, key, window, sliding);
        let check = batch::Check::Charge {
            key: w.current,
            cost,
            ttl_ms: w.ttl_ms,
        };
        async move {
            let _ = self.run(check).await;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `sg:{scope|key}`: the braces make every window of one key share a
/// cluster slot. Long keys are hashed (with a fixed seed, so that every
/// replica names the same key).
fn redis_key(scope: &str, key: &[u8]) -> String {
    use std::hash::{BuildHasher, Hasher};
    let text = if key.len() <= MAX_KEY && !key.contains(&b'}') {
        String::from_utf8_lossy(key).into_owned()
    } else {
        let mut h = foldhash::fast::FixedState::with_seed(0x4ed1).build_hasher();
        h.write(key);
        format!("#{:016x}", h.finish())
    };
    format!("sg:{{{scope}|{text}}}")
}
