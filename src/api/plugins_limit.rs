//! The rate-limit plugins' settings (`limitCount`, `limitReq`,
//! `limitConn`) and what they share with `aiRateLimit`: the rejection,
//! the window, the key and the Redis policy.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

/// `count` requests per `timeWindow` for each key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitCount {
    /// Requests allowed per window.
    #[schemars(range(min = 1))]
    pub count: u64,
    /// Window length, e.g. `1s`, `1m`.
    pub time_window: Duration,
    /// `Fixed` windows (the default) or a `Sliding` estimate.
    #[serde(default)]
    pub window_type: WindowType,
    /// What is counted separately. Default: the client address.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Routes naming the same group (in one namespace) share one counter;
    /// their settings must be equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub group: Option<String>,
    #[serde(flatten)]
    pub common: LimitCommon,
}

/// A sustained `rate` per key, with `burst` extra requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitReq {
    /// Requests per second (fractions allowed: 0.5 is one per two seconds).
    pub rate: f64,
    /// Requests accepted above the rate before refusing.
    #[serde(default)]
    pub burst: f64,
    /// Serve the burst at once. Without it, requests above the rate are
    /// held so that they leave at the rate (as nginx `limit_req` does).
    #[serde(default)]
    pub nodelay: bool,
    /// What is limited separately. Default: the client address.
    #[serde(default)]
    pub key: RateLimitKey,
    #[serde(flatten)]
    pub common: LimitCommon,
}

/// At most `conn` (+ `burst`) requests in flight per key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitConn {
    /// Concurrent requests allowed.
    #[schemars(range(min = 1))]
    pub conn: u64,
    /// Extra concurrent requests tolerated above `conn`.
    #[serde(default)]
    pub burst: u64,
    /// What is limited separately. Default: the client address.
    #[serde(default)]
    pub key: RateLimitKey,
    #[serde(flatten)]
    pub common: LimitCommon,
}

/// Settings every rate limiter shares.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitCommon {
    /// Status of refused requests (default 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub rejected_code: Option<u16>,
    /// Body of refused requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub rejected_message: Option<String>,
    /// Send `X-RateLimit-Limit`, `-Remaining` and `-Reset` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_limit_quota_header: Option<bool>,
    /// Where counters live: `Local` (this replica, the default) or
    /// `Redis` (shared by every replica).
    #[serde(default)]
    pub policy: LimitPolicy,
    /// Redis connection for `policy: Redis`; without it the gateway's
    /// `--redis-url` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSettings>,
    /// When Redis cannot be reached: let requests through (true) or
    /// refuse them (false, the default).
    #[serde(default)]
    pub allow_degradation: bool,
}

/// Window kinds of `limitCount`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum WindowType {
    #[default]
    Fixed,
    Sliding,
}

/// Where rate-limit counters live.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum LimitPolicy {
    #[default]
    Local,
    Redis,
}

/// What a limiter keys its counters by.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type != 'Header' || has(self.name)").message("a Header key needs name"))]
#[x_kube(validation = Rule::new("self.type != 'Template' || has(self.template)").message("a Template key needs template"))]
pub struct RateLimitKey {
    /// `RemoteAddress` (default), `Header` (its value; requests without it
    /// share one key), `Consumer` (set by an auth plugin; else the
    /// address), `Template` or `Constant` (one counter for everyone).
    #[serde(rename = "type", default)]
    pub kind: KeyType,
    /// The header, for `Header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
    /// For `Template`: text with `{remote_addr}`, `{host}`, `{path}`,
    /// `{route}`, `{consumer}`, `{header.NAME}` or `{query.NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub template: Option<String>,
}

/// Kinds of rate-limit keys.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum KeyType {
    #[default]
    RemoteAddress,
    Header,
    Consumer,
    Template,
    Constant,
}

/// A Redis server or cluster for shared counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:6379/0` (or `rediss://` for TLS). A cluster takes
    /// several, comma-separated.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Talk to a Redis Cluster.
    #[serde(default)]
    pub cluster: bool,
    /// A Secret in the same namespace holding the password under
    /// `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<super::LocalObjectRef>,
    /// Time allowed per Redis call (default 100ms); past it the request
    /// follows `allowDegradation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}
