//! Rate-limiting arithmetic and the keyed state store.
//!
//! Groups:
//! - `limit/fixed_check`, `limit/sliding_check`, `limit/gcra_check`: one
//!   check on a hot key, with time moving forward a little each request so
//!   that windows roll and requests are both allowed and refused;
//! - `limit/store_with/1M_keys`: a fixed-window check through the store,
//!   on keys spread over one million distinct clients, so that most lookups
//!   miss the CPU caches as they would under a wide client population.
//!
//! Before the store benchmark, the resident memory that one million
//! distinct keys of `WindowState` add is printed once (Linux only), as
//! `memory: 1000000 keys of WindowState: NN MB`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluicegate::plugins::limit::algorithms::{
    FixedWindow, Gcra, Nanos, SlidingWindow, WindowState,
};
use sluicegate::plugins::limit::store::{KeyedStore, key_hash};

const SEC: Nanos = 1_000_000_000;
const KEYS: usize = 1_000_000;

/// Time between two benchmarked requests: about a thousand requests a
/// second against limits of a hundred, so every path is taken.
const STEP: Nanos = 997_003;

fn bench_algorithms(c: &mut Criterion) {
    let mut group = c.benchmark_group("limit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let fixed = FixedWindow {
        limit: 100,
        window: SEC,
    };
    group.bench_function("fixed_check", |b| {
        let mut state = WindowState::default();
        let mut now = 0;
        b.iter(|| {
            now += STEP;
            fixed.check(black_box(&mut state), black_box(now), 1)
        })
    });

    let sliding = SlidingWindow {
        limit: 100,
        window: SEC,
    };
    group.bench_function("sliding_check", |b| {
        let mut state = WindowState::default();
        let mut now = 0;
        b.iter(|| {
            now += STEP;
            sliding.check(black_box(&mut state), black_box(now), 1)
        })
    });

    let Some(gcra) = Gcra::new(100.0, 20.0, true) else {
        panic!("valid GCRA configuration");
    };
    group.bench_function("gcra_check", |b| {
        let mut tat = 0;
        let mut now = 0;
        b.iter(|| {
            now += STEP;
            gcra.check(black_box(&mut tat), black_box(now))
        })
    });
    group.finish();
}

/// Resident set size in bytes, from /proc/self/status (kB, so that no
/// page size needs assuming); None where there is no procfs.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bench_store(c: &mut Criterion) {
    let keys: Vec<u64> = (0..KEYS)
        .map(|i| key_hash(format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).as_bytes()))
        .collect();
    let fixed = FixedWindow {
        limit: 100,
        window: SEC,
    };
    let now = 10 * SEC;

    let before = rss_bytes();
    let store: KeyedStore<WindowState> = KeyedStore::new(60 * SEC);
    for &key in &keys {
        store.with(key, now, |st| fixed.check(st, now, 1));
    }
    assert_eq!(store.len(), KEYS);
    match (before, rss_bytes()) {
        (Some(before), Some(after)) => {
            let grown = after.saturating_sub(before);
            println!(
                "memory: {KEYS} keys of WindowState: {} MB ({} bytes/key)",
                grown / 1_000_000,
                grown / KEYS as u64
            );
        }
        _ => println!("memory: no /proc/self/status here, not measured"),
    }

    let mut group = c.benchmark_group("limit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function(BenchmarkId::new("store_with", "1M_keys"), |b| {
        // A stride coprime with the key count visits every key, in an order
        // unrelated to insertion, so lookups do not walk memory in sequence.
        let mut i = 0;
        b.iter(|| {
            i = (i + 7_919) % KEYS;
            store.with(black_box(keys[i]), now, |st| fixed.check(st, now, 1))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_algorithms, bench_store);
criterion_main!(benches);
