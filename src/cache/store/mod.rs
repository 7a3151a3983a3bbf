//! Where entries live: the storages of this process, set up once from the
//! gateway's flags, and the one interface the proxy uses for all of them.
//!
//! - [`memory`]: this process, bounded by bytes;
//! - [`disk`]: files under a directory, kept across restarts;
//! - [`redis`] and [`memcached`]: shared by every replica;
//! - tiered: this process's memory in front of Redis or Memcached (an
//!   entry found in the shared store is kept in memory for the rest of its
//!   lifetime).
//!
//! A storage that fails (unreachable, slow, a damaged value) is a miss for
//! reads and a skipped write for stores: the request goes on to the
//! upstream, and the failure is counted in
//! `sluicegate_cache_store_errors_total`.

pub mod disk;
pub mod memcached;
pub mod memory;
pub mod redis;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tracing::{debug, warn};

use super::entry::{self, CodecError, Decoded, Entry, VaryIndex, unix_ms};
use super::flight::Flights;
use super::freshness::MAX_RETENTION;
use super::key::KeyId;
use super::purge::{Message, Purged, TagMarks};
use super::rule::{Available, Shared, Storage};
use crate::metrics::{CACHE_CORRUPT, CACHE_STORE_ERRORS};
use crate::plugins::limit::redis::RedisTarget;
use disk::{Disk, FileBody, SlotInfo};
use memcached::Memcached;
use memory::{MemValue, Memory};
use redis::Redis;

/// Time allowed per call to Redis or Memcached unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

/// The process's storages, from flags.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Bound of the memory storage (and of the memory in front of tiered
    /// storages), in bytes.
    pub memory_size: u64,
    /// Directory and bound of the disk storage.
    pub disk: Option<(PathBuf, u64)>,
    pub redis: Option<RedisTarget>,
    /// `host:port` of each Memcached server.
    pub memcached: Vec<String>,
    /// Time allowed per Redis or Memcached call.
    pub timeout: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            memory_size: 256 << 20,
            disk: None,
            redis: None,
            memcached: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl StoreSettings {
    /// The storages routes may name.
    pub fn available(&self) -> Available {
        Available {
            disk: self.disk.is_some(),
            redis: self.redis.is_some(),
            memcached: !self.memcached.is_empty(),
        }
    }
}

/// What is stored under a key.
#[derive(Debug, Clone)]
pub enum Value {
    Entry(Arc<Entry>, Bytes),
    Vary(VaryIndex),
}

/// What a lookup found.
#[derive(Debug)]
pub enum Loaded {
    Entry(Arc<Entry>, Body),
    Vary(VaryIndex),
}

/// A found entry's body.
#[derive(Debug)]
pub enum Body {
    Full(Bytes),
    /// A large entry of the disk storage, read as the client reads it.
    File(FileBody),
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Redis(::redis::RedisError),
    #[error("memcached: {0}")]
    Memcached(String),
    #[error("timed out")]
    Timeout,
    #[error("the storage task ended")]
    Gone,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// What a tag purge reached.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    pub tags: Vec<String>,
    /// Purge time, Unix ms: entries stored until then are purged.
    pub at: u64,
    /// Disk files removed here.
    pub disk_files: usize,
    /// Shared storages marked (`redis`, `memcached`).
    pub shared: Vec<&'static str>,
    /// Whether other replicas were told (Redis pub/sub).
    pub published: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Stores {
    pub memory: Memory,
    pub disk: Option<Disk>,
    pub redis: Option<Redis>,
    pub memcached: Option<Memcached>,
    pub marks: TagMarks,
    pub flights: Arc<Flights>,
    /// This process among replicas, for purge messages.
    pub instance: u64,
    settings: StoreSettings,
}

fn error(storage: &'static str, op: &'static str, e: &StoreError) {
    debug!(storage, op, error = %e, "cache storage call failed");
    metrics::counter!(
        CACHE_STORE_ERRORS,
        crate::metrics::labels(&[("storage", storage), ("op", op)])
    )
    .increment(1);
}

impl Stores {
    /// Opens the storages `settings` name (the disk directory is created
    /// if needed).
    pub fn open(settings: &StoreSettings) -> std::io::Result<Stores> {
        let disk = match &settings.disk {
            Some((dir, bound)) => Some(Disk::open(dir.clone(), *bound)?),
            None => None,
        };
        Ok(Stores {
            memory: Memory::new(settings.memory_size),
            disk,
            redis: settings
                .redis
                .clone()
                .map(|t| Redis::new(t, settings.timeout)),
            memcached: (!settings.memcached.is_empty())
                .then(|| Memcached::new(settings.memcached.clone(), settings.timeout)),
            marks: TagMarks::default(),
            flights: Arc::new(Flights::default()),
            instance: fastrand::u64(..),
            settings: settings.clone(),
        })
    }

    /// What is stored under `key`, if anything usable.
    pub async fn get(&self, storage: Storage, key: &KeyId) -> Option<Loaded> {
        let loaded = match storage {
            Storage::Memory => self.in_memory(key),
            Storage::Disk => match &self.disk {
                Some(d) => d.get(key).await.unwrap_or_else(|e| {
                    error("disk", "get", &e);
                    None
                }),
                None => None,
            },
            Storage::Redis | Storage::Memcached => self.in_shared(shared_of(storage)?, key).await,
            Storage::Tiered(shared) => match self.in_memory(key) {
                Some(l) => Some(l),
                None => {
                    let l = self.in_shared(shared, key).await?;
                    if let Some(v) = memory_value(&l) {
                        self.memory.put(*key, v);
                    }
                    Some(l)
                }
            },
        }?;
        if let Loaded::Entry(e, _) = &loaded
            && self.marks.purged(&e.meta.tags, e.meta.stored_at)
        {
            self.remove(storage, key).await;
            return None;
        }
        Some(loaded)
    }

    fn in_memory(&self, key: &KeyId) -> Option<Loaded> {
        Some(match self.memory.get(key)? {
            MemValue::Entry(e, b) => Loaded::Entry(e, Body::Full(b)),
            MemValue::Vary(v) => Loaded::Vary((*v).clone()),
        })
    }

    async fn in_shared(&self, shared: Shared, key: &KeyId) -> Option<Loaded> {
        let (name, got) = match shared {
            Shared::Redis => ("redis", self.redis.as_ref()?.get(key).await),
            Shared::Memcached => ("memcached", self.memcached.as_ref()?.get(key).await),
        };
        let bytes = match got {
            Ok(b) => b?,
            Err(e) => {
                error(name, "get", &e);
                return None;
            }
        };
        let loaded = match entry::decode(bytes) {
            Ok(Decoded::Entry(meta, body)) if meta.key == *key => {
                let len = body.len() as u64;
                Loaded::Entry(Arc::new(Entry::new(*meta, len)), Body::Full(body))
            }
            Ok(Decoded::Vary(v)) => Loaded::Vary(v),
            Ok(Decoded::Entry(..)) | Err(_) => {
                warn!(storage = name, key = ?key, "unusable cache value; removed");
                metrics::counter!(CACHE_CORRUPT, crate::metrics::labels(&[("storage", name)]))
                    .increment(1);
                self.remove_shared(shared, key).await;
                return None;
            }
        };
        if let Loaded::Entry(e, _) = &loaded
            && !e.meta.tags.is_empty()
        {
            let marks = match shared {
                Shared::Redis => self.redis.as_ref()?.marks(&e.meta.tags).await,
                Shared::Memcached => self.memcached.as_ref()?.marks(&e.meta.tags).await,
            };
            match marks {
                Ok(m) if m.iter().flatten().any(|at| *at >= e.meta.stored_at) => {
                    self.remove_shared(shared, key).await;
                    return None;
                }
                Ok(_) => {}
                // Without the marks, a tagged entry may have been purged.
                Err(e) => {
                    error(name, "marks", &e);
                    return None;
                }
            }
        }
        Some(loaded)
    }

    /// Stores `value` under `key`; failures are counted and logged.
    pub async fn put(&self, storage: Storage, key: KeyId, value: Value) {
        let expires_at = match &value {
            Value::Entry(e, _) => e.meta.expires_at,
            Value::Vary(v) => v.expires_at,
        };
        let ttl = Duration::from_millis(expires_at.saturating_sub(unix_ms(SystemTime::now())));
        if ttl.is_zero() {
            return;
        }
        match storage {
            Storage::Memory => self.memory.put(key, value.into()),
            Storage::Disk => {
                let Some(d) = &self.disk else { return };
                let info = slot_info(&value);
                if let Err(e) = d.put(key, encode(&value), info).await {
                    error("disk", "put", &e);
                }
            }
            Storage::Redis | Storage::Memcached => {
                if let Some(shared) = shared_of(storage) {
                    self.put_shared(shared, &key, &value, ttl).await;
                }
            }
            Storage::Tiered(shared) => {
                self.memory.put(key, value.clone().into());
                self.put_shared(shared, &key, &value, ttl).await;
            }
        }
    }

    async fn put_shared(&self, shared: Shared, key: &KeyId, value: &Value, ttl: Duration) {
        let bytes = encode(value);
        let (name, r) = match shared {
            Shared::Redis => match &self.redis {
                Some(r) => ("redis", r.put(key, &bytes, ttl).await),
                None => return,
            },
            Shared::Memcached => match &self.memcached {
                Some(m) => ("memcached", m.put(key, &bytes, ttl).await),
                None => return,
            },
        };
        if let Err(e) = r {
            error(name, "put", &e);
        }
    }

    /// Stores a freshened entry whose body is unchanged.
    pub async fn refresh(&self, storage: Storage, key: KeyId, entry: Arc<Entry>, body: &Body) {
        match body {
            Body::Full(b) => self.put(storage, key, Value::Entry(entry, b.clone())).await,
            Body::File(_) => {
                if let Some(d) = &self.disk
                    && let Err(e) = d.rewrite_meta(key, entry.meta.clone()).await
                {
                    error("disk", "put", &e);
                }
            }
        }
    }

    /// Removes what is stored under `key`; true if something was.
    pub async fn remove(&self, storage: Storage, key: &KeyId) -> bool {
        match storage {
            Storage::Memory => self.memory.remove(key),
            Storage::Disk => match &self.disk {
                Some(d) => d.remove(key).await,
                None => false,
            },
            Storage::Redis | Storage::Memcached => match shared_of(storage) {
                Some(s) => self.remove_shared(s, key).await,
                None => false,
            },
            Storage::Tiered(shared) => {
                let here = self.memory.remove(key);
                self.remove_shared(shared, key).await || here
            }
        }
    }

    async fn remove_shared(&self, shared: Shared, key: &KeyId) -> bool {
        let (name, r) = match shared {
            Shared::Redis => match &self.redis {
                Some(r) => ("redis", r.remove(key).await),
                None => return false,
            },
            Shared::Memcached => match &self.memcached {
                Some(m) => ("memcached", m.remove(key).await),
                None => return false,
            },
        };
        r.unwrap_or_else(|e| {
            error(name, "remove", &e);
            false
        })
    }

    /// Purges every entry tagged with any of `tags`, here, in the shared
    /// storages, and (through Redis) on the other replicas.
    pub async fn purge_tags(&self, tags: Vec<String>) -> PurgeReport {
        let at = unix_ms(SystemTime::now());
        let mut report = PurgeReport {
            disk_files: self.purge_here(&tags, at),
            at,
            ..PurgeReport::default()
        };
        let keep = MAX_RETENTION + Duration::from_secs(24 * 3600);
        if let Some(r) = &self.redis {
            match r.set_marks(&tags, at, keep).await {
                Ok(()) => report.shared.push("redis"),
                Err(e) => report.errors.push(format!("redis: {e}")),
            }
            let message = Message {
                origin: self.instance,
                at,
                what: Purged::Tags(tags.clone()),
            };
            match r.publish(&message.encode()).await {
                Ok(()) => report.published = true,
                Err(e) => report.errors.push(format!("redis publish: {e}")),
            }
        }
        if let Some(m) = &self.memcached {
            match m.set_marks(&tags, at, keep).await {
                Ok(()) => report.shared.push("memcached"),
                Err(e) => report.errors.push(format!("memcached: {e}")),
            }
        }
        report.tags = tags;
        report
    }

    /// Applies a purge to this process's memory and disk; returns the disk
    /// files removed.
    pub fn purge_here(&self, tags: &[String], at: u64) -> usize {
        self.marks.mark(tags, at);
        self.disk.as_ref().map_or(0, |d| d.purge_tags(tags, at))
    }

    /// Tells the other replicas (through Redis, when the gateway has it)
    /// that `keys` were removed, so that they drop their own copies: in
    /// memory (the memory storage, the front of tiered storages) and on
    /// disk.
    pub async fn publish_removal(&self, keys: Vec<KeyId>) {
        let Some(r) = &self.redis else { return };
        let message = Message {
            origin: self.instance,
            at: unix_ms(SystemTime::now()),
            what: Purged::Keys(keys),
        };
        if let Err(e) = r.publish(&message.encode()).await {
            error("redis", "publish", &e);
        }
    }

    /// Applies a purge another replica published.
    pub async fn heard(&self, message: &Message) {
        if message.origin == self.instance {
            return;
        }
        match &message.what {
            Purged::Tags(tags) => {
                self.purge_here(tags, message.at);
            }
            Purged::Keys(keys) => {
                for k in keys {
                    self.memory.remove(k);
                    if let Some(d) = &self.disk {
                        d.remove(k).await;
                    }
                }
            }
        }
    }

    /// The storages and their use, for `/routes`.
    pub fn describe(&self) -> serde_json::Value {
        self.memory.sync();
        let (entries, bytes) = self.memory.usage();
        let mut v = serde_json::json!({
            "memory": {"bound": self.memory.bound(), "entries": entries, "bytes": bytes},
            "inFlight": self.flights.len(),
        });
        if let Some(d) = &self.disk {
            let (entries, bytes) = d.usage();
            v["disk"] = serde_json::json!({
                "dir": d.dir().display().to_string(),
                "bound": d.bound(),
                "entries": entries,
                "bytes": bytes,
            });
        }
        if let Some(r) = &self.redis {
            v["redis"] = serde_json::json!({
                "urls": r.target().urls.iter().map(|u| redact(u)).collect::<Vec<_>>(),
                "cluster": r.target().cluster,
            });
        }
        if let Some(m) = &self.memcached {
            v["memcached"] = serde_json::json!({ "servers": m.servers() });
        }
        v["timeoutMs"] = (self.settings.timeout.as_millis() as u64).into();
        v
    }

    /// Sets the size gauges, just before a scrape reads them.
    pub fn gauges(&self) {
        use crate::metrics::{CACHE_BYTES, CACHE_ENTRIES};
        self.memory.sync();
        let (entries, bytes) = self.memory.usage();
        metrics::gauge!(
            CACHE_BYTES,
            crate::metrics::labels(&[("storage", "memory")])
        )
        .set(bytes as f64);
        metrics::gauge!(
            CACHE_ENTRIES,
            crate::metrics::labels(&[("storage", "memory")])
        )
        .set(entries as f64);
        if let Some(d) = &self.disk {
            let (entries, bytes) = d.usage();
            metrics::gauge!(CACHE_BYTES, crate::metrics::labels(&[("storage", "disk")]))
                .set(bytes as f64);
            metrics::gauge!(
                CACHE_ENTRIES,
                crate::metrics::labels(&[("storage", "disk")])
            )
            .set(entries as f64);
        }
    }
}

/// A URL without its password, for display.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn shared_of(storage: Storage) -> Option<Shared> {
    match storage {
        Storage::Redis => Some(Shared::Redis),
        Storage::Memcached => Some(Shared::Memcached),
        Storage::Tiered(s) => Some(s),
        Storage::Memory | Storage::Disk => None,
    }
}

fn memory_value(l: &Loaded) -> Option<MemValue> {
    match l {
        Loaded::Entry(e, Body::Full(b)) => Some(MemValue::Entry(e.clone(), b.clone())),
        Loaded::Vary(v) => Some(MemValue::Vary(Arc::new(v.clone()))),
        Loaded::Entry(_, Body::File(_)) => None,
    }
}

fn encode(value: &Value) -> Vec<u8> {
    match value {
        Value::Entry(e, body) => entry::encode_entry(&e.meta, body),
        Value::Vary(v) => entry::encode_vary(v),
    }
}

fn slot_info(value: &Value) -> SlotInfo {
    match value {
        Value::Entry(e, _) => SlotInfo {
            expires_at: e.meta.expires_at,
            stored_at: e.meta.stored_at,
            tags: e.meta.tags.clone(),
            route: e.meta.route.clone(),
        },
        Value::Vary(v) => SlotInfo {
            expires_at: v.expires_at,
            stored_at: 0,
            tags: Box::new([]),
            route: "".into(),
        },
    }
}
