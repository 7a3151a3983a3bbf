//! Limiter state per key, for millions of keys.
//!
//! Keys are 64-bit hashes rather than the key text: the text (a client
//! address, a header value) can be long and attacker-chosen, while a hash is
//! eight bytes and hashed with a per-process random seed ([`key_hash`]), so
//! clients cannot aim collisions at one another. Two texts sharing a hash
//! would share a limit, which at 2^-64 per pair is an acceptable price for
//! not storing the text.
//!
//! Values live in [`SHARDS`] mutex-guarded maps so that workers rarely
//! contend: a check holds a lock for a few nanoseconds of arithmetic, and an
//! async lock or a lock-free map would cost more than it saves. Entries idle
//! longer than the store's `idle` time are removed by [`KeyedStore::sweep`],
//! which the owner calls periodically, and also, amortised, when a shard is
//! touched after growing to twice its size at its last sweep, so that memory
//! stays bounded without a background task even if the owner never sweeps.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use super::algorithms::{Nanos, WindowState};

/// Shards per store: enough that two workers rarely pick the same one, few
/// enough that an empty store costs only a few kilobytes.
pub const SHARDS: usize = 64;

/// Below this many entries a shard is not swept on touch: sweeping tiny
/// shards often would cost more than the memory it frees.
const MIN_AUTO_SWEEP: usize = 256;

/// Whether a state may be dropped once its key has not been used for the
/// store's idle time.
///
/// Time alone is not enough for `limitConn`: a long-lived request (a
/// WebSocket, a large download) keeps its key's in-flight count above zero
/// without touching the store, and dropping that count would let the key
/// exceed its limit.
pub trait Idle {
    fn is_idle(&self) -> bool {
        true
    }
}

/// Window state is only meaningful within a window or two, so the owner
/// chooses an idle time of at least two windows and any state may then go.
impl Idle for WindowState {}

/// A GCRA theoretical arrival time: gone stale once it is in the past, which
/// an idle time of at least `tolerance + interval` guarantees.
impl Idle for u64 {}

/// An in-flight count is idle only when nothing is in flight.
impl Idle for AtomicU64 {
    fn is_idle(&self) -> bool {
        self.load(Ordering::Acquire) == 0
    }
}

impl<T: Idle + ?Sized> Idle for Arc<T> {
    fn is_idle(&self) -> bool {
        (**self).is_idle()
    }
}

/// A state and the last time its key was used.
struct Slot<S> {
    state: S,
    used: Nanos,
}

/// One shard's map and the size that triggers its next sweep on touch.
struct Shard<S> {
    map: HashMap<u64, Slot<S>, MixState>,
    next_sweep: usize,
}

impl<S: Idle> Shard<S> {
    fn sweep(&mut self, now: Nanos, idle: Nanos) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, slot| now.saturating_sub(slot.used) <= idle || !slot.state.is_idle());
        let len = self.map.len();
        // Give memory back after a spike of keys (a scan, a flood of
        // spoofed clients), keeping room to grow back by half.
        if self.map.capacity() > 4 * len.max(MIN_AUTO_SWEEP) {
            self.map.shrink_to(len * 2);
        }
        self.next_sweep = (2 * len).max(MIN_AUTO_SWEEP);
        before - len
    }
}

/// Keeps neighbouring shards' locks on different cache lines, so that
/// workers using different shards do not slow each other down anyway.
#[repr(align(128))]
struct Padded<T>(T);

/// Limiter state per key; see the module documentation.
pub struct KeyedStore<S> {
    shards: Box<[Padded<Mutex<Shard<S>>>]>,
    idle: Nanos,
}

impl<S> std::fmt::Debug for KeyedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStore")
            .field("shards", &self.shards.len())
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<S: Default + Idle> KeyedStore<S> {
    /// A store whose entries may be removed once unused for `idle`
    /// nanoseconds (and idle by their own account, see [`Idle`]).
    pub fn new(idle: Nanos) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(Mutex::new(Shard {
                    map: HashMap::with_hasher(MixState),
                    next_sweep: MIN_AUTO_SWEEP,
                }))
            })
            .collect();
        Self { shards, idle }
    }

    /// Runs `f` on the key's state (created with Default), marking it used at `now`.
    ///
    /// `f` runs under the shard's lock: that is what makes a check and its
    /// update atomic, so it must be short and must not call back into the
    /// store.
    pub fn with<R>(&self, key: u64, now: Nanos, f: impl FnOnce(&mut S) -> R) -> R {
        let mut shard = self.lock(key);
        if shard.map.len() >= shard.next_sweep {
            shard.sweep(now, self.idle);
        }
        let slot = shard.map.entry(key).or_insert_with(|| Slot {
            state: S::default(),
            used: now,
        });
        slot.used = slot.used.max(now);
        f(&mut slot.state)
    }

    /// Removes entries unused for longer than the idle time and idle by
    /// their own account; returns how many went.
    pub fn sweep(&self, now: Nanos) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.0.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .sweep(now, self.idle)
            })
            .sum()
    }

    /// The number of keys held; a snapshot, since other workers may be
    /// adding keys to shards already counted.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| {
            s.0.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map
                .is_empty()
        })
    }

    /// A poisoned shard is still used: a panic inside `f` leaves at worst
    /// one key's counters half-updated, which is better than failing every
    /// key of the shard from then on.
    fn lock(&self, key: u64) -> std::sync::MutexGuard<'_, Shard<S>> {
        // Bits 51..57 of the mixed key: disjoint from the low bits the map
        // uses for buckets and the top seven it uses as tags, so that keys
        // within one shard still spread over its whole table.
        let index = (mix(key) >> 51) as usize % SHARDS;
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Mixes a key before the map uses it. Keys from [`key_hash`] are already
/// uniform, but a caller passing raw integers (an ID, a counter) would
/// otherwise fill one shard and collide in the map's tag bits; one folded
/// multiply costs about a nanosecond and rules that out.
fn mix(key: u64) -> u64 {
    const K1: u64 = 0x243f_6a88_85a3_08d3;
    const K2: u64 = 0x9e37_79b9_7f4a_7c15;
    let full = u128::from(key ^ K1) * u128::from(K2);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The map's hasher: [`mix`] of the key, which is already a seeded hash, so
/// there is no need to pay for hashing it again with a keyed hasher.
#[derive(Debug, Default, Clone, Copy)]
struct MixState;

#[derive(Debug, Default)]
struct MixHasher(u64);

impl BuildHasher for MixState {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(0)
    }
}

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this keeps the hasher total regardless.
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

static KEY_SEED: LazyLock<foldhash::fast::RandomState> =
    LazyLock::new(foldhash::fast::RandomState::default);

/// Hashes key text with a per-process random seed, so that the same text
/// gives the same key within the process while clients, who cannot know
/// the seed, cannot craft texts that share a key with someone else's.
pub fn key_hash(text: &[u8]) -> u64 {
    let mut hasher = KEY_SEED.build_hasher();
    hasher.write(text);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;
    use std::thread;
    use std::time::Instant;

    use super::*;
    use crate::plugins::limit::algorithms::{Concurrency, FixedWindow};

    const SEC: Nanos = 1_000_000_000;

    /// Bytes a store's tables occupy, from their capacities: hashbrown keeps
    /// capacity at 7/8 of a power-of-two bucket count, with one control byte
    /// per bucket plus a trailing group.
    fn table_bytes<S: Default + Idle>(store: &KeyedStore<S>) -> usize {
        let entry = size_of::<(u64, Slot<S>)>();
        let tables: usize = store
            .shards
            .iter()
            .map(|s| {
                let cap =
                    s.0.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .map
                        .capacity();
                if cap == 0 {
                    return 0;
                }
                let buckets = if cap < 8 {
                    (cap + 1).next_power_of_two()
                } else {
                    (cap * 8 / 7).next_power_of_two()
                };
                buckets * (entry + 1) + 16
            })
            .sum();
        tables + size_of::<KeyedStore<S>>() + SHARDS * size_of::<Padded<Mutex<Shard<S>>>>()
    }

    #[test]
    fn same_key_same_state_and_keys_independent() {
        let store: KeyedStore<u64> = KeyedStore::new(SEC);
        let (a, b) = (key_hash(b"10.0.0.1"), key_hash(b"10.0.0.2"));
        assert_eq!(a, key_hash(b"10.0.0.1"));
        assert_ne!(a, b);
        for _ in 0..3 {
            store.with(a, 0, |n| *n += 1);
        }
        store.with(b, 0, |n| *n += 10);
        assert_eq!(store.with(a, 0, |n| *n), 3);
        assert_eq!(store.with(b, 0, |n| *n), 10);
        assert_eq!(store.len(), 2);
        assert!(!store.is_empty());
    }

    #[test]
    fn a_limiter_over_the_store() {
        let store: KeyedStore<WindowState> = KeyedStore::new(2 * SEC);
        let fw = FixedWindow {
            limit: 2,
            window: SEC,
        };
        let key = key_hash(b"client");
        let allowed = (0..5)
            .filter(|_| store.with(key, 0, |st| fw.check(st, 0, 1)).allowed)
            .count();
        assert_eq!(allowed, 2);
        assert!(
            store
                .with(key_hash(b"other"), 0, |st| fw.check(st, 0, 1))
                .allowed
        );
    }

    #[test]
    fn sweep_removes_idle_entries_only() {
        let store: KeyedStore<WindowState> = KeyedStore::new(10 * SEC);
        for k in 0..100u64 {
            store.with(k, k * SEC, |st| st.count = 1);
        }
        assert_eq!(store.sweep(10 * SEC), 0, "nothing idle longer than 10 s");
        assert_eq!(store.sweep(50 * SEC), 40, "keys used before 40 s go");
        assert_eq!(store.len(), 60);
        // Using a key refreshes it; a backwards `now` does not un-refresh it.
        store.with(40, 200 * SEC, |_| ());
        store.with(40, 0, |_| ());
        assert_eq!(store.sweep(205 * SEC), 59);
        assert_eq!(store.with(40, 205 * SEC, |st| st.count), 1);
        assert_eq!(store.sweep(u64::MAX), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn sweep_keeps_busy_connection_counts() {
        let store: KeyedStore<Arc<AtomicU64>> = KeyedStore::new(SEC);
        let conc = Concurrency { max: 1, burst: 0 };
        let (busy, done) = (key_hash(b"busy"), key_hash(b"done"));
        let held = store.with(busy, 0, |n| {
            assert!(conc.try_acquire(n).allowed);
            Arc::clone(n)
        });
        let released = store.with(done, 0, |n| {
            assert!(conc.try_acquire(n).allowed);
            Arc::clone(n)
        });
        Concurrency::release(&released);
        assert_eq!(store.sweep(100 * SEC), 1);
        assert_eq!(store.len(), 1);
        assert!(!store.with(busy, 100 * SEC, |n| conc.try_acquire(n)).allowed);
        Concurrency::release(&held);
        assert_eq!(store.sweep(200 * SEC), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn touching_a_grown_shard_sweeps_it() {
        let store: KeyedStore<u64> = KeyedStore::new(20 * SEC);
        // A stream of new keys, each used once, one per millisecond: only
        // the last 20 s worth (20,000, about 312 a shard) is live at any
        // time, and a shard is swept when it doubles its live size.
        for k in 0..200_000u64 {
            store.with(k, k * 1_000_000, |_| ());
        }
        let len = store.len();
        assert!((20_000..50_000).contains(&len), "store holds {len}");
    }

    #[test]
    fn sweep_gives_memory_back_after_a_spike() {
        let store: KeyedStore<WindowState> = KeyedStore::new(SEC);
        for k in 0..100_000u64 {
            store.with(k, 0, |_| ());
        }
        let peak = table_bytes(&store);
        assert_eq!(store.sweep(10 * SEC), 100_000);
        assert!(table_bytes(&store) < peak / 10);
    }

    #[test]
    fn raw_integer_keys_spread_over_all_shards() {
        let store: KeyedStore<u64> = KeyedStore::new(SEC);
        for k in 0..(SHARDS as u64 * 100) {
            store.with(k, 0, |_| ());
        }
        for s in store.shards.iter() {
            let len = s.0.lock().unwrap_or_else(PoisonError::into_inner).map.len();
            assert!(
                (40..=160).contains(&len),
                "shard holds {len} of 100 expected"
            );
        }
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let store: Arc<KeyedStore<u64>> = Arc::new(KeyedStore::new(SEC));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for i in 0..10_000u64 {
                        store.with(i % 16, 0, |n| *n += 1);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        let total: u64 = (0..16).map(|k| store.with(k, 0, |n| *n)).sum();
        assert_eq!(total, 40_000);
    }

    #[test]
    fn a_panic_inside_with_does_not_disable_the_shard() {
        let store: KeyedStore<u64> = KeyedStore::new(SEC);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.with(7, 0, |_| panic!("boom"))
        }));
        assert!(r.is_err());
        assert_eq!(store.with(7, 0, |n| *n + 1), 1);
    }

    #[test]
    fn entry_sizes_stay_small() {
        assert_eq!(size_of::<WindowState>(), 24);
        assert_eq!(size_of::<(u64, Slot<WindowState>)>(), 40);
        assert_eq!(size_of::<(u64, Slot<u64>)>(), 24);
        assert_eq!(size_of::<(u64, Slot<Arc<AtomicU64>>)>(), 24);
    }

    /// One million distinct keys of WindowState, the store's design load:
    /// the tables must stay well under 200 bytes a key.
    #[test]
    fn a_million_keys_fit_the_memory_budget() {
        let store: KeyedStore<WindowState> = KeyedStore::new(60 * SEC);
        let started = Instant::now();
        for i in 0..1_000_000u64 {
            let key = key_hash(&i.to_le_bytes());
            store.with(key, 0, |st| st.count += 1);
        }
        assert_eq!(store.len(), 1_000_000);
        let per_key = table_bytes(&store) as f64 / 1e6;
        println!(
            "1000000 keys of WindowState: {per_key:.1} bytes/key ({:.0} MB), {:?}",
            per_key,
            started.elapsed()
        );
        assert!(per_key < 120.0, "{per_key} bytes per key");
    }
}
