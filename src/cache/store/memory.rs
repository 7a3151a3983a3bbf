//! The memory storage: a `moka` cache of this process, bounded by bytes.
//!
//! Each entry weighs what it holds: its body, its headers (twice: as
//! stored, and inside its RFC 9111 policy), its request view and a fixed
//! share for the structures around them, measured with a counting
//! allocator (see tests/cache_memory.rs) so that the bound is the
//! process's memory, not only the bodies'. moka evicts by frequency and
//! recency (TinyLFU) and expires each entry when its store lifetime ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use moka::notification::RemovalCause;

use super::Value;
use crate::cache::entry::{Entry, VaryIndex, unix_ms};
use crate::cache::key::KeyId;
use crate::metrics::CACHE_EVICTIONS;

/// Bytes an entry costs besides its body and header bytes: the entry and
/// policy structures, header map tables, moka's node and the key.
const ENTRY_OVERHEAD: u64 = 1720;
/// Bytes each header field costs besides its name and value.
const FIELD_OVERHEAD: u64 = 64;
/// A variant index's cost.
const VARY_WEIGHT: u64 = 512;

/// What the memory storage holds under a key.
#[derive(Debug, Clone)]
pub enum MemValue {
    Entry(Arc<Entry>, Bytes),
    Vary(Arc<VaryIndex>),
}

impl MemValue {
    fn expires_at(&self) -> u64 {
        match self {
            MemValue::Entry(e, _) => e.meta.expires_at,
            MemValue::Vary(v) => v.expires_at,
        }
    }

    /// Bytes of memory the value holds.
    pub fn weight(&self) -> u64 {
        match self {
            MemValue::Entry(e, body) => {
                let fields = |h: &HeaderMap| -> u64 {
                    h.iter()
                        .map(|(n, v)| n.as_str().len() as u64 + v.len() as u64 + FIELD_OVERHEAD)
                        .sum()
                };
                let tags: u64 = e.meta.tags.iter().map(|t| t.len() as u64 + 16).sum();
                ENTRY_OVERHEAD
                    + body.len() as u64
                    + 2 * fields(&e.meta.headers)
                    + 2 * fields(&e.meta.request)
                    + tags
            }
            MemValue::Vary(v) => {
                VARY_WEIGHT + v.names.iter().map(|n| n.as_str().len() as u64).sum::<u64>()
            }
        }
    }
}

impl From<Value> for MemValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Entry(e, b) => MemValue::Entry(e, b),
            Value::Vary(v) => MemValue::Vary(Arc::new(v)),
        }
    }
}

/// Expires each value when its store lifetime ends.
struct Lifetime;

impl moka::Expiry<KeyId, MemValue> for Lifetime {
    fn expire_after_create(&self, _: &KeyId, value: &MemValue, _: Instant) -> Option<Duration> {
        Some(remaining(value))
    }

    fn expire_after_update(
        &self,
        _: &KeyId,
        value: &MemValue,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(value))
    }
}

fn remaining(value: &MemValue) -> Duration {
    let now = unix_ms(std::time::SystemTime::now());
    Duration::from_millis(value.expires_at().saturating_sub(now))
}

/// See the module documentation.
pub struct Memory {
    cache: moka::sync::Cache<KeyId, MemValue, foldhash::fast::RandomState>,
    bound: u64,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("bound", &self.bound)
            .finish()
    }
}

impl Memory {
    /// A storage of at most `bound` bytes.
    pub fn new(bound: u64) -> Memory {
        let cache = moka::sync::Cache::builder()
            .max_capacity(bound)
            .weigher(|_, v: &MemValue| u32::try_from(v.weight()).unwrap_or(u32::MAX))
            .expire_after(Lifetime)
            .eviction_listener(|_, v: MemValue, cause| {
                if cause == RemovalCause::Size {
                    let route = match &v {
                        MemValue::Entry(e, _) => e.meta.route.to_string(),
                        MemValue::Vary(_) => String::new(),
                    };
                    metrics::counter!(
                        CACHE_EVICTIONS,
                        crate::metrics::labels(&[("route", &route), ("storage", "memory")])
                    )
                    .increment(1);
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Memory { cache, bound }
    }

    pub fn get(&self, key: &KeyId) -> Option<MemValue> {
        self.cache.get(key)
    }

    pub fn put(&self, key: KeyId, value: MemValue) {
        self.cache.insert(key, value);
    }

    pub fn remove(&self, key: &KeyId) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Applies pending evictions and expirations now (moka batches them).
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }

    /// Entries held, and their weight in bytes.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    pub fn bound(&self) -> u64 {
        self.bound
    }
}
