//! The Memcached storage, shared by every replica: one item per entry
//! (`sgc:` and the key in hex), with the entry's store lifetime as its
//! expiry, on the server rendezvous hashing picks for its key (adding or
//! removing a server moves only that server's share of keys). Tag purges
//! leave a mark per tag (`sgc:tag:NAME`), read when a tagged entry is
//! found.
//!
//! The client is `async-memcached` (maintained by Shopify): Tokio-native,
//! text and meta protocols, and safe to cancel (an operation dropped
//! half-way closes its connection instead of leaving a reply unread for
//! the next caller, which matters here because every call runs under a
//! timeout). `memcache-async` was the other candidate: smaller, but its
//! operations are not cancellation-safe and it leaves connection handling
//! to the caller. Each worker thread keeps a few idle connections per
//! server; a connection is taken for one operation and put back after.
//!
//! Memcached refuses items larger than its item size (1 MiB by default,
//! `-I` raises it): such entries are not stored, and the store error is
//! counted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use async_memcached::{AsciiProtocol, Client};
use bytes::Bytes;

use super::StoreError;
use crate::cache::key::KeyId;

/// Idle connections kept per server and worker thread.
const MAX_IDLE: usize = 16;
/// Memcached reads expiries above 30 days as Unix times.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 3600;

thread_local! {
    /// This thread's idle connections, by storage id and server index.
    static IDLE: RefCell<HashMap<(u64, usize), Vec<Client>>> = RefCell::new(HashMap::new());
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Memcached {
    servers: Box<[String]>,
    timeout: Duration,
    id: u64,
}

fn entry_key(key: &KeyId) -> String {
    format!("sgc:{}", key.hex())
}

fn mark_key(tag: &str) -> String {
    // Memcached keys have no spaces or control characters and at most
    // 250 bytes: tags are hashed into them.
    let mut h = foldhash::fast::FixedState::with_seed(0x7a65).build_hasher();
    h.write(tag.as_bytes());
    format!("sgc:tag:{:016x}", h.finish())
}

impl Memcached {
    /// `servers`: `host:port` each.
    pub fn new(servers: Vec<String>, timeout: Duration) -> Memcached {
        let id = foldhash::fast::FixedState::with_seed(0x3ca1).hash_one(&servers);
        Memcached {
            servers: servers.into_boxed_slice(),
            timeout,
            id,
        }
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The server of `item` (rendezvous hashing).
    fn server(&self, item: &str) -> usize {
        (0..self.servers.len())
            .max_by_key(|i| {
                let mut h = foldhash::fast::FixedState::with_seed(0x5e4e).build_hasher();
                h.write(self.servers[*i].as_bytes());
                h.write(item.as_bytes());
                h.finish()
            })
            .unwrap_or(0)
    }

    async fn client(&self, server: usize) -> Result<Client, StoreError> {
        let idle = IDLE.with(|m| {
            m.borrow_mut()
                .get_mut(&(self.id, server))
                .and_then(Vec::pop)
        });
        if let Some(c) = idle.filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let addr = self.servers.get(server).ok_or(StoreError::Gone)?;
        match tokio::time::timeout(self.timeout, Client::new(format!("tcp://{addr}"))).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(StoreError::Memcached(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    fn put_back(&self, server: usize, client: Client) {
        if client.is_closed() {
            return;
        }
        IDLE.with(|m| {
            let mut m = m.borrow_mut();
            let list = m.entry((self.id, server)).or_default();
            if list.len() < MAX_IDLE {
                list.push(client);
            }
        });
    }

    pub async fn get(&self, key: &KeyId) -> Result<Option<Bytes>, StoreError> {
        let item = entry_key(key);
        let server = self.server(&item);
        let mut c = self.client(server).await?;
        let got = tokio::time::timeout(self.timeout, c.get(&item)).await;
        match got {
            Ok(Ok(v)) => {
                self.put_back(server, c);
                Ok(v.and_then(|v| v.data).map(Bytes::from))
            }
            Ok(Err(e)) => Err(StoreError::Memcached(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    pub async fn put(&self, key: &KeyId, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let item = entry_key(key);
        self.set(&item, value, ttl).await
    }

    async fn set(&self, item: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let server = self.server(item);
        let mut c = self.client(server).await?;
        let secs = ttl.as_secs().clamp(1, MAX_RELATIVE_TTL) as i64;
        match tokio::time::timeout(self.timeout, c.set(item, value, Some(secs), None)).await {
            Ok(Ok(())) => {
                self.put_back(server, c);
                Ok(())
            }
            Ok(Err(e)) => Err(StoreError::Memcached(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    pub async fn remove(&self, key: &KeyId) -> Result<bool, StoreError> {
        let item = entry_key(key);
        let server = self.server(&item);
        let mut c = self.client(server).await?;
        match tokio::time::timeout(self.timeout, c.delete(&item)).await {
            Ok(Ok(())) => {
                self.put_back(server, c);
                Ok(true)
            }
            // Not found is an error to the client library.
            Ok(Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound))) => {
                self.put_back(server, c);
                Ok(false)
            }
            Ok(Err(e)) => Err(StoreError::Memcached(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The latest purge time of each of `tags` (Unix ms).
    pub async fn marks(&self, tags: &[Box<str>]) -> Result<Vec<Option<u64>>, StoreError> {
        let mut out = Vec::with_capacity(tags.len());
        for t in tags {
            let item = mark_key(t);
            let server = self.server(&item);
            let mut c = self.client(server).await?;
            let v = match tokio::time::timeout(self.timeout, c.get(&item)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(StoreError::Memcached(e.to_string())),
                Err(_) => return Err(StoreError::Timeout),
            };
            self.put_back(server, c);
            out.push(
                v.and_then(|v| v.data)
                    .and_then(|d| std::str::from_utf8(&d).ok()?.parse().ok()),
            );
        }
        Ok(out)
    }

    /// Records a purge of `tags` at `at` (Unix ms).
    pub async fn set_marks(
        &self,
        tags: &[String],
        at: u64,
        keep: Duration,
    ) -> Result<(), StoreError> {
        for t in tags {
            self.set(&mark_key(t), at.to_string().as_bytes(), keep)
                .await?;
        }
        Ok(())
    }
}
