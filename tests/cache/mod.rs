//! The proxy cache through the real proxy, for every storage: memory,
//! disk, Redis and Memcached (real `redis-server` and `memcached`
//! processes on loopback ports, started here) and tiered. Each case
//! asserts what the backend received (how many requests, which
//! validators) besides what the client got.

use crate::common;

mod coalesce;
mod config;
mod disk;
mod purge;
mod replicas;
mod semantics;
mod servers;

use std::time::Duration;

use common::wire::{Capture, Received};
use common::*;
use servers::{MemcachedServer, RedisServer};
use sluicegate::cache::StoreSettings;
use sluicegate::gateway::GatewayConfig;
use sluicegate::plugins::limit::redis::RedisTarget;

/// A storage a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Memory,
    Disk,
    Redis,
    Memcached,
    Tiered,
}

impl Store {
    pub fn yaml(self) -> &'static str {
        match self {
            Store::Memory => "Memory",
            Store::Disk => "Disk",
            Store::Redis => "Redis",
            Store::Memcached => "Memcached",
            Store::Tiered => "Tiered",
        }
    }
}

/// The servers and directories a storage needs, kept for a case.
pub struct Env {
    pub redis: Option<RedisServer>,
    pub memcached: Option<MemcachedServer>,
    pub disk: Option<TempDir>,
}

impl Env {
    pub async fn new(store: Store) -> Env {
        Env {
            redis: match store {
                Store::Redis | Store::Tiered => Some(RedisServer::start().await),
                _ => None,
            },
            memcached: match store {
                Store::Memcached => Some(MemcachedServer::start().await),
                _ => None,
            },
            disk: (store == Store::Disk).then(TempDir::new),
        }
    }

    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            memory_size: 64 << 20,
            disk: self
                .disk
                .as_ref()
                .map(|d| (d.path().to_path_buf(), 64 << 20)),
            redis: self
                .redis
                .as_ref()
                .map(|r| RedisTarget::parse(&r.url(), false, None).unwrap()),
            memcached: self
                .memcached
                .iter()
                .map(|m| m.addr().to_string())
                .collect(),
            timeout: Duration::from_millis(500),
        }
    }

    pub fn config(&self) -> GatewayConfig {
        let mut c = test_config(1);
        c.cache = self.settings();
        c.translate.cache = c.cache.available();
        c
    }

    /// A gateway serving `manifests` with this storage.
    pub async fn gateway(&self, manifests: &str) -> TestGateway {
        TestGateway::start_with(manifests, self.config()).await
    }
}

/// An ApiRoute for host `NAME.test` to Service `app`, with `proxyCache`
/// fields `cache` (YAML flow text inside the braces) and other plugins
/// `plugins` (flow text, `key: value, ...`).
pub fn cached_route(name: &str, store: Store, cache: &str, plugins: &str) -> String {
    let sep = if cache.is_empty() { "" } else { ", " };
    let more = if plugins.is_empty() {
        String::new()
    } else {
        format!(", {plugins}")
    };
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{name}.test"]
  routes:
  - name: all
    backends: [{{serviceName: app, servicePort: 80}}]
    plugins: {{proxyCache: {{storage: {store}{sep}{cache}}}{more}}}
"#,
        store = store.yaml()
    )
}

/// A raw response with `headers` (lines without CRLF) and `body`.
pub fn response(status: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// `GET path` on `host` with `headers`.
pub async fn fetch(gw: &TestGateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(gw.http(), "GET", host, path, headers).await
}

pub fn status_of(r: &Reply) -> String {
    r.header("cache-status").unwrap_or("").to_owned()
}

/// The request lines the backend received, in order.
pub fn lines(c: &Capture) -> Vec<String> {
    c.requests().iter().map(Received::line).collect()
}

/// Waits until `f` holds (storages outside the process are written in
/// the background, after the response).
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 5s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fetches until the answer is a hit (the store of a miss completes in
/// the background) and returns it.
pub async fn until_hit(
    gw: &TestGateway,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = fetch(gw, host, path, headers).await;
        if status_of(&r).contains("; hit") {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hit within 5s: {}",
            status_of(&r)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs each `async fn(Store)` on every storage, as tests
/// `memory::NAME`, `disk::NAME` and so on.
#[macro_export]
macro_rules! on_every_storage {
    ($($name:ident),* $(,)?) => {
        $crate::on_every_storage!(@one memory, Memory, $($name),*);
        $crate::on_every_storage!(@one disk, Disk, $($name),*);
        $crate::on_every_storage!(@one redis, Redis, $($name),*);
        $crate::on_every_storage!(@one memcached, Memcached, $($name),*);
        $crate::on_every_storage!(@one tiered, Tiered, $($name),*);
    };
    (@one $module:ident, $store:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::cache::Store::$store).await
                }
            )*
        }
    };
}
