//! Typed settings of the `proxyCache` plugin. Where entries live
//! (memory, disk, Redis, Memcached) is chosen per route; the stores
//! themselves are set up once per process by flags.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::{ByteSize, Duration};

/// Cache upstream responses by RFC 9111 (shared cache) rules.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyCache {
    /// Where entries live: `Memory` (this replica, the default), `Disk`
    /// (files under `--cache-disk-dir`, kept across restarts), `Redis`
    /// or `Memcached` (shared by every replica), or `Tiered` (this
    /// replica's memory in front of Redis or Memcached).
    #[serde(default)]
    pub storage: CacheStorage,
    /// The shared store behind `Tiered`; default Redis when the gateway
    /// has one, else Memcached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_storage: Option<SharedStorage>,
    /// The parts of the cache key, each text with variables: `$host`,
    /// `$request_uri` (path and query), `$uri` (path), `$args` (query),
    /// `$scheme`, `$http_NAME` (a request header), `$arg_NAME` (a query
    /// parameter), `$cookie_NAME`. Default `["$host", "$request_uri"]`.
    /// The method and the route are always part of the key, and the
    /// consumer unless `consumerIsolation` is false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub key: Vec<String>,
    /// Methods whose responses are cached: `GET` and `HEAD` (the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub methods: Vec<CacheMethod>,
    /// Statuses cached (default 200, 301 and 404); RFC 9111 decides
    /// within them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub statuses: Vec<u16>,
    /// Freshness of responses that give none (no `max-age`, `s-maxage`,
    /// `Expires` or `Last-Modified`); without it they are not cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<Duration>,
    /// Larger responses stream through uncached (default 8Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
    /// Templates (as in `key`); when any is neither empty nor `0`, the
    /// request is not answered from the cache (its response may still
    /// be stored, refreshing the entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub bypass: Vec<String>,
    /// Templates (as in `key`); when any is neither empty nor `0`, the
    /// response is not stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub no_store: Vec<String>,
    /// The consumer an authentication plugin identified is part of the
    /// key, so that one consumer never gets another's response (default
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_isolation: Option<bool>,
    /// Serve a stale entry this long past its freshness while it is
    /// refreshed in the background (RFC 5861), when the response does not
    /// say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_while_revalidate: Option<Duration>,
    /// Serve a stale entry this long past its freshness when the upstream
    /// fails or answers 500, 502, 503 or 504 (RFC 5861), when the
    /// response does not say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<Duration>,
    /// Request coalescing: concurrent misses of one key make one upstream
    /// request and the others stream its response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<CacheLock>,
    /// Store responses that set cookies (without their `Set-Cookie`);
    /// by default they are not stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store_set_cookie: bool,
    /// Answer `PURGE` requests (after the route's authentication plugins)
    /// by removing the entries of their URI; otherwise `PURGE` is
    /// forwarded like any other method.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_purge: bool,
}

/// Where a route's cache entries live.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum CacheStorage {
    #[default]
    Memory,
    Disk,
    Redis,
    Memcached,
    Tiered,
}

/// The shared store behind `Tiered`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum SharedStorage {
    Redis,
    Memcached,
}

/// Methods whose responses may be cached.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum CacheMethod {
    GET,
    HEAD,
}

/// Request coalescing settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheLock {
    /// How long a request waits for another's response head before it
    /// goes to the upstream itself (default 5s; `0s` turns coalescing
    /// off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}
