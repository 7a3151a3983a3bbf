//! Rate-limit counters shared by every replica through Redis (a single
//! server or a Redis Cluster).
//!
//! Each check is one server-side script, so the read-modify-write of a
//! counter is atomic however many replicas call at once. Keys carry a
//! hash tag (`sg:{scope|key}:window`), so the keys one check touches live
//! in one cluster slot. Windows are aligned to multiples of their length
//! since the Unix epoch, on each replica's clock (NTP keeps replicas well
//! within a window of each other); GCRA reads the server's clock.
//!
//! Connections are made on first use, one per worker thread and Redis
//! target, and reconnect by themselves (`ConnectionManager`). A call that
//! fails or takes longer than the timeout follows `allowDegradation`: the
//! request goes through, or is refused with 503.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;
use tracing::warn;

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

enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn connect(target: &RedisTarget, timeout: Duration) -> redis::RedisResult<Conn> {
        if target.cluster {
            let mut b = redis::cluster::ClusterClient::builder(target.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(p) = &target.password {
                b = b.password(p.clone());
            }
            let client = b.build()?;
            return Ok(Conn::Cluster(client.get_async_connection().await?));
        }
        let mut info = redis::IntoConnectionInfo::into_connection_info(target.urls[0].as_str())?;
        if let Some(p) = &target.password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Conn::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    async fn run<T: redis::FromRedisValue>(
        &mut self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    fn clone_handle(&self) -> Conn {
        match self {
            Conn::Single(c) => Conn::Single(c.clone()),
            Conn::Cluster(c) => Conn::Cluster(c.clone()),
        }
    }
}

/// One connection per worker thread and target (by the target's hash, so
/// that a lookup copies nothing).
type Connections = HashMap<(u64, ThreadId), Arc<OnceCell<Conn>>>;

fn connections() -> &'static Mutex<Connections> {
    static C: OnceLock<Mutex<Connections>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

/// A limiter's access to Redis.
#[derive(Debug)]
pub struct RedisLimiter {
    target: RedisTarget,
    /// Identifies `target` among connections.
    target_id: u64,
    timeout: Duration,
    allow_degradation: bool,
    /// Registered once: looking a histogram up per call costs more than
    /// recording into it.
    duration: OnceLock<metrics::Histogram>,
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
            duration: OnceLock::new(),
        }))
    }

    /// This worker's connection, made on first use.
    async fn conn(&self) -> redis::RedisResult<Conn> {
        let cell = {
            let mut map = connections().lock().unwrap_or_else(PoisonError::into_inner);
            map.entry((self.target_id, std::thread::current().id()))
                .or_default()
                .clone()
        };
        let conn = cell
            .get_or_try_init(|| Conn::connect(&self.target, self.timeout))
            .await?;
        Ok(conn.clone_handle())
    }

    /// Runs `call` within the timeout; on failure decides by
    /// `allowDegradation`.
    async fn guarded<F, Fut>(&self, limit: u64, call: F) -> Result<Decision, Box<Rejection>>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<Decision>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let conn = self.conn().await?;
            call(conn).await
        })
        .await;
        self.duration
            .get_or_init(|| metrics::histogram!(REDIS_DURATION))
            .record(started.elapsed().as_secs_f64());
        let reason = match result {
            Ok(Ok(d)) => return Ok(d),
            Ok(Err(e)) => {
                warn!(error = %e, "rate limiter: Redis call failed");
                "error"
            }
            Err(_) => {
                warn!(timeout = ?self.timeout, "rate limiter: Redis call timed out");
                "timeout"
            }
        };
        metrics::counter!(REDIS_ERRORS, "reason" => reason).increment(1);
        if self.allow_degradation {
            Ok(Decision {
                allowed: true,
                limit,
                remaining: limit,
                reset_after: 0,
                delay: 0,
            })
        } else {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(Box::new(Rejection {
                status: StatusCode::SERVICE_UNAVAILABLE,
                headers,
                body: Bytes::from_static(b"rate limiter unavailable\n"),
            }))
        }
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
        let current = format!("{base}:{index}");
        let previous = format!("{base}:{}", index.saturating_sub(1));
        // What is left of the previous window, in millionths.
        let weight = (window_ms - into) * 1_000_000 / window_ms;
        self.guarded(limit, move |mut conn| async move {
            if sliding {
                let script = sliding_script();
                let mut inv = script.prepare_invoke();
                inv.key(&current)
                    .key(&previous)
                    .arg(limit)
                    .arg(window_ms * 2)
                    .arg(weight);
                let (allowed, used): (u8, u64) = conn.run(&inv).await?;
                Ok(Decision {
                    allowed: allowed == 1,
                    limit,
                    remaining: limit.saturating_sub(used),
                    reset_after,
                    delay: 0,
                })
            } else {
                let script = fixed_script();
                let mut inv = script.prepare_invoke();
                inv.key(&current).arg(window_ms);
                let used: u64 = conn.run(&inv).await?;
                Ok(Decision {
                    allowed: used <= limit,
                    limit,
                    remaining: limit.saturating_sub(used),
                    reset_after,
                    delay: 0,
                })
            }
        })
    }

    /// One `limitReq` check of `key`.
    pub fn gcra<'s>(
        &'s self,
        scope: &str,
        key: &[u8],
        gcra: &Gcra,
    ) -> impl Future<Output = Result<Decision, Box<Rejection>>> + Send + 's {
        let key = redis_key(scope, key);
        let (interval_us, tolerance_us) = ((gcra.interval / 1000).max(1), gcra.tolerance / 1000);
        let (nodelay, limit) = (gcra.nodelay, gcra.limit);
        self.guarded(limit, move |mut conn| async move {
            let script = gcra_script();
            let mut inv = script.prepare_invoke();
            inv.key(&key).arg(interval_us).arg(tolerance_us);
            // allowed, how long until this request's turn, how far the
            // bucket now reaches into the future (all microseconds).
            let (allowed, wait, ahead): (u8, u64, u64) = conn.run(&inv).await?;
            let span = tolerance_us + interval_us;
            let remaining = span.saturating_sub(ahead) / interval_us;
            Ok(Decision {
                allowed: allowed == 1,
                limit,
                remaining: remaining.min(limit),
                reset_after: if allowed == 1 {
                    ahead * 1000
                } else {
                    ahead.saturating_sub(span) * 1000 + interval_us * 1000
                },
                delay: if allowed == 1 && !nodelay {
                    wait * 1000
                } else {
                    0
                },
            })
        })
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

fn fixed_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    // KEYS[1] the window's counter; ARGV[1] its lifetime in ms.
    S.get_or_init(|| {
        redis::Script::new(
            r"local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return c",
        )
    })
}

fn sliding_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    // KEYS: current and previous window; ARGV: limit, lifetime in ms,
    // share of the previous window still counted (millionths).
    S.get_or_init(|| {
        redis::Script::new(
            r"local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = math.floor(prev * tonumber(ARGV[3]) / 1000000) + cur
if used + 1 > tonumber(ARGV[1]) then return {0, used} end
cur = redis.call('INCR', KEYS[1])
if cur == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, used + 1}",
        )
    })
}

fn gcra_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    // KEYS[1] the theoretical arrival time (us); ARGV: interval and
    // tolerance (us). Reads the server's clock, so replicas agree.
    S.get_or_init(|| {
        redis::Script::new(
            r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, tat - now, new_tat - now}",
        )
    })
}
