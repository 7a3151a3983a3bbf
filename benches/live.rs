//! The cost of the live traffic view on the request path.
//!
//! Groups:
//! - `live/record_request`: one request of one of 50 routes, as the proxy
//!   records it when it answers;
//! - `live/record_request_consumer`: the same with one of 8 consumers an
//!   authentication plugin identified;
//! - `live/record_plugin`: one plugin run;
//! - `live/record_request_while_read`: `record_request` while another
//!   thread takes a snapshot every millisecond (a thousand times what the
//!   dashboard asks for), so that the shard lock is sometimes contended;
//! - `live/route_metrics_record`: the Prometheus per-route recording the
//!   proxy already does for every request, for comparison;
//! - `live/snapshot/1000_routes`: one snapshot (what a dashboard refresh
//!   costs the admin thread) over 1,000 busy routes with two plugins each.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluicegate::metrics::RouteMetrics;
use sluicegate::metrics::live;

fn routes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("apiroute/team-{:02}/app-{i:04}/api", i % 50))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("live");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let names = routes(50);
    let consumers: Vec<String> = (0..8).map(|i| format!("consumer-{i}")).collect();
    let mut i = 0usize;
    group.bench_function("record_request", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            live::record_request(
                black_box(&names[i % names.len()]),
                200,
                Duration::from_micros(300 + (i % 700) as u64),
                None,
                Instant::now(),
            );
        })
    });
    group.bench_function("record_request_consumer", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            live::record_request(
                black_box(&names[i % names.len()]),
                200,
                Duration::from_micros(300 + (i % 700) as u64),
                Some(&consumers[i % consumers.len()]),
                Instant::now(),
            );
        })
    });
    group.bench_function("record_plugin", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            live::record_plugin(
                black_box(&names[i % names.len()]),
                "keyAuth",
                Duration::from_nanos(800 + (i % 400) as u64),
                i.is_multiple_of(16).then_some(401),
                Instant::now(),
            );
        })
    });
    {
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    black_box(live::snapshot());
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        group.bench_function("record_request_while_read", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                live::record_request(
                    black_box(&names[i % names.len()]),
                    200,
                    Duration::from_micros(300),
                    None,
                    Instant::now(),
                );
            })
        });
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
    }
    let metrics: Vec<RouteMetrics> = names
        .iter()
        .map(|n| RouteMetrics::new(n.as_str().into()))
        .collect();
    group.bench_function("route_metrics_record", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let now = Instant::now();
            metrics[i % metrics.len()].record(200, Duration::from_micros(300), now);
        })
    });
    let many = routes(1000);
    group.bench_function("snapshot/1000_routes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Refill, since a snapshot forgets routes idle for a whole
                // window and the benchmark may run longer than that.
                let now = Instant::now();
                for (k, r) in many.iter().enumerate() {
                    let took = Duration::from_micros(100 + k as u64);
                    live::record_request(r, 200, took, Some("c"), now);
                    live::record_plugin(r, "keyAuth", Duration::from_micros(2), None, now);
                    live::record_plugin(r, "limitCount", Duration::from_micros(1), None, now);
                }
                let start = Instant::now();
                black_box(live::snapshot());
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
