//! The bound on a worker's handshakes in progress.
//!
//! A connection is pending from its accept until its handshake completes,
//! fails or times out. Each holds a task, a socket and at most a ClientHello
//! of [`MAX_CLIENT_HELLO`](super::accept::MAX_CLIENT_HELLO) bytes, so the
//! bound on their number bounds their memory. When a new connection would
//! exceed it, the one that has waited longest is dropped, not the new one:
//! a client that opens connections and never finishes their handshakes then
//! has to outpace every honest client's handshake (milliseconds) instead of
//! merely the handshake timeout (seconds) to keep anyone out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// Handshakes in progress on one worker.
#[derive(Debug)]
pub struct Pending {
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// By age: dropping a sender tells its handshake to stop.
    open: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One pending handshake; leaving the set when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    pending: Arc<Pending>,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Pending {
    /// At most `limit` (at least 1) handshakes at once.
    pub fn new(limit: usize) -> Arc<Pending> {
        Arc::new(Pending {
            limit: limit.max(1),
            inner: Mutex::default(),
        })
    }

    /// Registers a new handshake. Returns its slot and whether the oldest
    /// one had to make room.
    pub fn enter(self: &Arc<Self>) -> (Slot, bool) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = inner.open.len() >= self.limit && inner.open.pop_first().is_some();
        let id = inner.next;
        inner.next += 1;
        inner.open.insert(id, tx);
        drop(inner);
        let slot = Slot {
            id,
            pending: self.clone(),
            evicted: Some(rx),
        };
        (slot, evicted)
    }

    /// Handshakes in progress.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .len()
    }
}

impl Slot {
    /// Resolves when a newer handshake took this one's place.
    pub async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            // The sender is only ever dropped, never used.
            Some(rx) => {
                let _ = rx.await;
                self.evicted = None;
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pending
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn is_evicted(slot: &mut Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(20), slot.evicted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_oldest_makes_room_and_finished_ones_leave() {
        let p = Pending::new(2);
        let (mut a, ea) = p.enter();
        let (mut b, eb) = p.enter();
        assert!(!ea && !eb);
        assert_eq!(p.len(), 2);
        let (mut c, ec) = p.enter();
        assert!(ec, "a third one evicts");
        assert!(is_evicted(&mut a).await);
        assert!(!is_evicted(&mut b).await);
        assert!(!is_evicted(&mut c).await);
        assert_eq!(p.len(), 2);
        // A finished handshake frees its place: no eviction.
        drop(b);
        let (mut d, ed) = p.enter();
        assert!(!ed);
        assert!(!is_evicted(&mut c).await);
        assert!(!is_evicted(&mut d).await);
        drop(a);
        assert_eq!(p.len(), 2);
        drop((c, d));
        assert_eq!(p.len(), 0);
    }
}
