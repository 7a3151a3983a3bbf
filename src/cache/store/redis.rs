//! The Redis storage, shared by every replica: one key per entry
//! (`sgc:` and the key in hex) holding the encoded entry, with the
//! entry's store lifetime as its expiry. Tag purges leave a mark per tag
//! (`sgc:tag:NAME`, the purge time), read when a tagged entry is found.
//!
//! Connections are the rate limiters' ([`crate::plugins::limit::redis::conn`]):
//! one per worker thread, made on first use, reconnecting by themselves
//! (a single server's connection is multiplexed, so the calls of many
//! requests of one worker are pipelined on it). Every call has the
//! storage's timeout; a call that fails or times out is a miss (or an
//! entry not stored), never an error for the client.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::StoreError;
use crate::cache::key::KeyId;
use crate::plugins::limit::redis::RedisTarget;
use crate::plugins::limit::redis::conn::Conn;

/// The channel tag purges are published on.
pub const PURGE_CHANNEL: &str = "sluicegate:cache:purge";

thread_local! {
    /// This thread's connections, by target id.
    static CONNS: RefCell<Vec<(u64, Arc<OnceCell<Conn>>)>> = const { RefCell::new(Vec::new()) };
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Redis {
    target: RedisTarget,
    target_id: u64,
    timeout: Duration,
}

fn entry_key(key: &KeyId) -> String {
    format!("sgc:{}", key.hex())
}

fn mark_key(tag: &str) -> String {
    format!("sgc:tag:{tag}")
}

impl Redis {
    pub fn new(target: RedisTarget, timeout: Duration) -> Redis {
        use std::hash::BuildHasher;
        let target_id = foldhash::fast::FixedState::with_seed(0xcace).hash_one(&target);
        Redis {
            target,
            target_id,
            timeout,
        }
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    fn cell(&self) -> Arc<OnceCell<Conn>> {
        CONNS.with(|c| {
            let mut list = c.borrow_mut();
            if let Some((_, cell)) = list.iter().find(|(id, _)| *id == self.target_id) {
                return cell.clone();
            }
            let cell = Arc::new(OnceCell::new());
            list.push((self.target_id, cell.clone()));
            cell
        })
    }

    /// Forgets this thread's connection after a failure, so that the next
    /// call makes a new one (the old one may belong to a runtime that has
    /// ended).
    fn reset(&self) {
        CONNS.with(|c| c.borrow_mut().retain(|(id, _)| *id != self.target_id));
    }

    /// Runs `cmd` within the timeout, connecting first if needed.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let cell = self.cell();
        let result = tokio::time::timeout(self.timeout, async {
            let conn = cell
                .get_or_try_init(|| Conn::connect(&self.target, self.timeout))
                .await?;
            conn.query::<T>(cmd).await
        })
        .await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_io_error() || e.is_connection_dropped() {
                    self.reset();
                }
                Err(StoreError::Redis(e))
            }
            Err(_) => Err(StoreError::Timeout),
        }
    }

    pub async fn get(&self, key: &KeyId) -> Result<Option<Bytes>, StoreError> {
        let v: Option<Vec<u8>> = self.call(redis::cmd("GET").arg(entry_key(key))).await?;
        Ok(v.map(Bytes::from))
    }

    pub async fn put(&self, key: &KeyId, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.call::<()>(
            redis::cmd("SET")
                .arg(entry_key(key))
                .arg(value)
                .arg("PX")
                .arg(ms),
        )
        .await
    }

    pub async fn remove(&self, key: &KeyId) -> Result<bool, StoreError> {
        let n: u64 = self.call(redis::cmd("DEL").arg(entry_key(key))).await?;
        Ok(n > 0)
    }

    /// The latest purge time of each of `tags` (Unix ms).
    pub async fn marks(&self, tags: &[Box<str>]) -> Result<Vec<Option<u64>>, StoreError> {
        let calls = tags.iter().map(|t| async move {
            self.call::<Option<u64>>(redis::cmd("GET").arg(mark_key(t)))
                .await
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }

    /// Records a purge of `tags` at `at` (Unix ms), kept as long as any
    /// entry can live.
    pub async fn set_marks(
        &self,
        tags: &[String],
        at: u64,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let ms = keep.as_millis() as u64;
        for t in tags {
            self.call::<()>(redis::cmd("SET").arg(mark_key(t)).arg(at).arg("PX").arg(ms))
                .await?;
        }
        Ok(())
    }

    pub async fn publish(&self, message: &str) -> Result<(), StoreError> {
        self.call::<i64>(redis::cmd("PUBLISH").arg(PURGE_CHANNEL).arg(message))
            .await
            .map(|_| ())
    }
}
