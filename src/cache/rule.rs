//! A route's cache settings, checked and compiled once per table from its
//! `proxyCache` block.

use std::time::Duration;

use http::Method;

use super::freshness::Settings;
use super::template::{Template, Vars};
use crate::api::{CacheMethod, CacheStorage, ProxyCache, SharedStorage};
use crate::plugins::ConfigError;

/// Largest body stored unless the route says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 8 << 20;
/// How long a request waits for another's response unless the route says
/// otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_STATUSES: [u16; 3] = [200, 301, 404];

/// Where a route's entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    Memory,
    Disk,
    Redis,
    Memcached,
    /// This replica's memory in front of a shared store.
    Tiered(Shared),
}

/// A store shared by every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shared {
    Redis,
    Memcached,
}

impl Storage {
    /// The `storage` label of metrics.
    pub fn label(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Disk => "disk",
            Storage::Redis => "redis",
            Storage::Memcached => "memcached",
            Storage::Tiered(Shared::Redis) => "tiered-redis",
            Storage::Tiered(Shared::Memcached) => "tiered-memcached",
        }
    }
}

/// Which stores this process has (flags), so that a route asking for
/// one it lacks is refused when its configuration is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Available {
    pub disk: bool,
    pub redis: bool,
    pub memcached: bool,
}

/// A route's compiled `proxyCache`.
#[derive(Debug)]
pub struct CacheRule {
    pub storage: Storage,
    key: Box<[Template]>,
    methods: Box<[Method]>,
    pub freshness: Settings,
    pub max_body: u64,
    bypass: Box<[Template]>,
    no_store: Box<[Template]>,
    pub consumer_isolation: bool,
    /// How long a request waits for another's response; `None`: requests
    /// are not coalesced.
    pub lock_timeout: Option<Duration>,
    pub allow_purge: bool,
    /// The settings as written, for `/routes`.
    config: ProxyCache,
}

impl CacheRule {
    /// Checks and compiles `c`. Errors name the field under `proxyCache`.
    pub fn build(c: &ProxyCache, available: &Available) -> Result<CacheRule, ConfigError> {
        let field = |f: &str| format!("proxyCache.{f}");
        let storage = match c.storage {
            CacheStorage::Memory => Storage::Memory,
            CacheStorage::Disk if available.disk => Storage::Disk,
            CacheStorage::Disk => {
                return Err(ConfigError::new(
                    field("storage"),
                    "Disk needs --cache-disk-dir on the gateway",
                ));
            }
            CacheStorage::Redis if available.redis => Storage::Redis,
            CacheStorage::Redis => {
                return Err(ConfigError::new(
                    field("storage"),
                    "Redis needs --cache-redis-url on the gateway",
                ));
            }
            CacheStorage::Memcached if available.memcached => Storage::Memcached,
            CacheStorage::Memcached => {
                return Err(ConfigError::new(
                    field("storage"),
                    "Memcached needs --cache-memcached-servers on the gateway",
                ));
            }
            CacheStorage::Tiered => Storage::Tiered(match c.shared_storage {
                Some(SharedStorage::Redis) if available.redis => Shared::Redis,
                Some(SharedStorage::Memcached) if available.memcached => Shared::Memcached,
                Some(SharedStorage::Redis) => {
                    return Err(ConfigError::new(
                        field("sharedStorage"),
                        "Redis needs --cache-redis-url on the gateway",
                    ));
                }
                Some(SharedStorage::Memcached) => {
                    return Err(ConfigError::new(
                        field("sharedStorage"),
                        "Memcached needs --cache-memcached-servers on the gateway",
                    ));
                }
                None if available.redis => Shared::Redis,
                None if available.memcached => Shared::Memcached,
                None => {
                    return Err(ConfigError::new(
                        field("storage"),
                        "Tiered needs --cache-redis-url or --cache-memcached-servers on the gateway",
                    ));
                }
            }),
        };
        if c.shared_storage.is_some() && c.storage != CacheStorage::Tiered {
            return Err(ConfigError::new(
                field("sharedStorage"),
                "only meaningful with storage: Tiered",
            ));
        }
        let templates = |list: &[String], name: &str| -> Result<Box<[Template]>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, t)| {
                    Template::parse(t)
                        .map_err(|e| ConfigError::new(format!("proxyCache.{name}[{i}]"), e))
                })
                .collect()
        };
        let key = if c.key.is_empty() {
            templates(&["$host".to_owned(), "$request_uri".to_owned()], "key")?
        } else {
            templates(&c.key, "key")?
        };
        let methods: Box<[Method]> = if c.methods.is_empty() {
            Box::new([Method::GET, Method::HEAD])
        } else {
            let mut m: Vec<Method> = c
                .methods
                .iter()
                .map(|m| match m {
                    CacheMethod::GET => Method::GET,
                    CacheMethod::HEAD => Method::HEAD,
                })
                .collect();
            m.dedup();
            m.into_boxed_slice()
        };
        let statuses: Box<[u16]> = if c.statuses.is_empty() {
            Box::new(DEFAULT_STATUSES)
        } else {
            if let Some((i, s)) = c
                .statuses
                .iter()
                .enumerate()
                .find(|(_, s)| !(200..=599).contains(*s))
            {
                return Err(ConfigError::new(
                    format!("proxyCache.statuses[{i}]"),
                    format!("{s} is not a final status (200-599)"),
                ));
            }
            c.statuses.clone().into_boxed_slice()
        };
        let positive = |d: Option<crate::api::Duration>, name: &str| match d {
            Some(d) if d.0.is_zero() => {
                Err(ConfigError::new(field(name), "must be greater than zero"))
            }
            Some(d) if d.0 > super::freshness::MAX_RETENTION => Err(ConfigError::new(
                field(name),
                "must be at most 720h (entries are kept at most 30 days)",
            )),
            other => Ok(other.map(|d| d.0)),
        };
        let default_ttl = positive(c.default_ttl, "defaultTtl")?;
        let stale_while_revalidate = positive(c.stale_while_revalidate, "staleWhileRevalidate")?;
        let stale_if_error = positive(c.stale_if_error, "staleIfError")?;
        let max_body = c.max_body_size.map_or(DEFAULT_MAX_BODY, |b| b.0);
        if max_body == 0 {
            return Err(ConfigError::new(
                field("maxBodySize"),
                "must be greater than zero",
            ));
        }
        let lock_timeout = match c.lock.as_ref().and_then(|l| l.timeout) {
            None => Some(DEFAULT_LOCK_TIMEOUT),
            Some(t) if t.0.is_zero() => None,
            Some(t) => Some(t.0),
        };
        Ok(CacheRule {
            storage,
            key,
            methods,
            freshness: Settings {
                statuses,
                default_ttl,
                stale_while_revalidate,
                stale_if_error,
                store_set_cookie: c.store_set_cookie,
            },
            max_body,
            bypass: templates(&c.bypass, "bypass")?,
            no_store: templates(&c.no_store, "noStore")?,
            consumer_isolation: c.consumer_isolation.unwrap_or(true),
            lock_timeout,
            allow_purge: c.allow_purge,
            config: c.clone(),
        })
    }

    /// Whether responses to `method` are cached.
    pub fn caches(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// Appends the rendered key template to `out`.
    pub fn key_text(&self, vars: &Vars<'_>, out: &mut Vec<u8>) {
        for (i, t) in self.key.iter().enumerate() {
            if i > 0 {
                // A separator no rendered part can contain unescaped
                // (headers and paths exclude control characters).
                out.push(0x1f);
            }
            t.render(vars, out);
        }
    }

    /// Whether the request skips the cache (`bypass`).
    pub fn bypassed(&self, vars: &Vars<'_>, scratch: &mut Vec<u8>) -> bool {
        self.bypass.iter().any(|t| t.is_set(vars, scratch))
    }

    /// Whether the response must not be stored (`noStore`).
    pub fn no_store(&self, vars: &Vars<'_>, scratch: &mut Vec<u8>) -> bool {
        self.no_store.iter().any(|t| t.is_set(vars, scratch))
    }

    /// The settings as configured, for the `/routes` view.
    pub fn describe(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("resolvedStorage".into(), self.storage.label().into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ProxyCache {
        serde_json::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults() {
        let r = CacheRule::build(&ProxyCache::default(), &Available::default()).unwrap();
        assert_eq!(r.storage, Storage::Memory);
        assert!(r.caches(&Method::GET) && r.caches(&Method::HEAD) && !r.caches(&Method::POST));
        assert_eq!(&*r.freshness.statuses, &[200, 301, 404]);
        assert_eq!(r.max_body, 8 << 20);
        assert_eq!(r.lock_timeout, Some(Duration::from_secs(5)));
        assert!(r.consumer_isolation);
        let h = http::HeaderMap::new();
        let vars = Vars {
            host: "a.test",
            path: "/x",
            query: Some("q=1"),
            tls: false,
            headers: &h,
        };
        let mut out = Vec::new();
        r.key_text(&vars, &mut out);
        assert_eq!(out, b"a.test\x1f/x?q=1");
    }

    #[test]
    fn stores_the_process_lacks_are_refused_by_field() {
        let none = Available::default();
        for (storage, field) in [
            ("Disk", "proxyCache.storage"),
            ("Redis", "proxyCache.storage"),
            ("Memcached", "proxyCache.storage"),
            ("Tiered", "proxyCache.storage"),
        ] {
            let e = CacheRule::build(&parse(&format!(r#"{{"storage": "{storage}"}}"#)), &none)
                .unwrap_err();
            assert_eq!(e.field, field, "{storage}");
        }
        let redis = Available {
            redis: true,
            ..Available::default()
        };
        let r = CacheRule::build(&parse(r#"{"storage": "Tiered"}"#), &redis).unwrap();
        assert_eq!(r.storage, Storage::Tiered(Shared::Redis));
        let e = CacheRule::build(
            &parse(r#"{"storage": "Tiered", "sharedStorage": "Memcached"}"#),
            &redis,
        )
        .unwrap_err();
        assert_eq!(e.field, "proxyCache.sharedStorage");
    }

    #[test]
    fn bad_settings_name_their_field() {
        let a = Available::default();
        let cases = [
            (r#"{"key": ["$host", "$requst_uri"]}"#, "proxyCache.key[1]"),
            (r#"{"bypass": ["$nope"]}"#, "proxyCache.bypass[0]"),
            (r#"{"statuses": [200, 99]}"#, "proxyCache.statuses[1]"),
            (r#"{"defaultTtl": "0s"}"#, "proxyCache.defaultTtl"),
            (r#"{"maxBodySize": 0}"#, "proxyCache.maxBodySize"),
            (r#"{"staleIfError": "1000h"}"#, "proxyCache.staleIfError"),
        ];
        for (json, field) in cases {
            let e = CacheRule::build(&parse(json), &a).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
        assert!(serde_json::from_str::<ProxyCache>(r#"{"methods": ["POST"]}"#).is_err());
        assert!(serde_json::from_str::<ProxyCache>(r#"{"ttl": "5s"}"#).is_err());
        let off = CacheRule::build(&parse(r#"{"lock": {"timeout": "0s"}}"#), &a).unwrap();
        assert_eq!(off.lock_timeout, None);
    }
}
