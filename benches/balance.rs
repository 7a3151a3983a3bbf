//! The cost of choosing an endpoint, per algorithm, at 100 endpoints.
//!
//! Groups:
//! - `balance/<algorithm>/100`: `Upstream::pick` with every endpoint
//!   available, the common case; least connections and Peak EWMA read
//!   in-flight counts that other requests change, so some endpoints carry
//!   load; consistent hashing walks keys spread over many clients;
//! - `balance/RoundRobin_10_down/100`: round robin with a tenth of the
//!   endpoints ejected, so that some choices probe past them;
//! - `balance/affinity/100`: the lookup of the endpoint an affinity cookie
//!   names.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluicegate::routing::{
    HashOn, LoadBalancer, PassiveHealth, PickInput, Upstream, UpstreamKey, clock_ns, hash_bytes,
};

const ENDPOINTS: u16 = 100;

fn upstream() -> Upstream {
    let addrs: Vec<SocketAddr> = (0..ENDPOINTS)
        .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 8080)))
        .collect();
    Upstream::new(UpstreamKey::new("bench", "svc", 80), addrs)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let keys: Vec<u64> = (0..4096u32).map(|k| hash_bytes(&k.to_le_bytes())).collect();
    let algorithms = [
        ("RoundRobin", LoadBalancer::RoundRobin),
        ("LeastConnections", LoadBalancer::LeastConnections),
        (
            "ConsistentHash",
            LoadBalancer::ConsistentHash {
                hash_on: HashOn::SourceIp,
            },
        ),
        ("PeakEWMA", LoadBalancer::PeakEwma),
    ];
    for (name, lb) in algorithms {
        let up = upstream();
        let set = up.endpoints();
        // Some load and latency history, as a running gateway has.
        let _busy: Vec<_> = set.ready().iter().step_by(3).map(|e| e.begin()).collect();
        let now = Instant::now();
        for (i, e) in set.ready().iter().enumerate() {
            e.observe_latency(
                Duration::from_micros(200 + (i as u64 % 7) * 50),
                clock_ns(now),
            );
        }
        let mut i = 0usize;
        group.bench_function(format!("{name}/{ENDPOINTS}"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let input = PickInput {
                    now,
                    hash: keys[i % keys.len()],
                    exclude: &[],
                };
                black_box(up.pick(&lb, &input))
            })
        });
    }

    let up = upstream();
    let now = Instant::now();
    let passive = PassiveHealth {
        consecutive_failures: 1,
        ..PassiveHealth::default()
    };
    for e in up.endpoints().ready().iter().step_by(10) {
        e.failure(&passive, clock_ns(now));
    }
    group.bench_function(format!("RoundRobin_10_down/{ENDPOINTS}"), |b| {
        let input = PickInput {
            now,
            hash: 0,
            exclude: &[],
        };
        b.iter(|| black_box(up.pick(&LoadBalancer::RoundRobin, &input)))
    });

    let ids: Vec<u64> = up.endpoints().ready().iter().map(|e| e.id()).collect();
    let mut i = 0usize;
    group.bench_function(format!("affinity/{ENDPOINTS}"), |b| {
        let input = PickInput {
            now,
            hash: 0,
            exclude: &[],
        };
        b.iter(|| {
            i = i.wrapping_add(7);
            black_box(up.pinned(ids[i % ids.len()], &input))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
