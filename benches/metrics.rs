//! `/metrics` at scale: the exposition of 1,000 routes that all served
//! traffic (every per-route series: statuses, latency, sizes, upstream
//! attempts and time, one plugin's cost and decisions) and the gauges of
//! 1,000 upstreams of three endpoints each, 3,000 endpoints (per upstream,
//! and with full detail per endpoint too, as the admin port sets them).
//!
//! Group `metrics/render/1000_routes_3000_endpoints`: one render of the
//! whole exposition, as a scrape does. Its size is printed once as
//! `size: 1000 routes, 3000 endpoints: NNNN KB, NNNNN lines`. With
//! `SLUICEGATE_METRICS_DETAIL=full` the per-route histograms of
//! `--metrics-detail full` are measured instead. Group
//! `metrics/render_gzip/...`: the same, gzip-compressed, as a scrape
//! that accepts gzip receives it (its size is printed too).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluicegate::metrics::{
    ENDPOINT_HEALTHY, ENDPOINT_IN_FLIGHT, PluginMetrics, RouteMetrics, UPSTREAM_ENDPOINTS,
    UPSTREAM_IN_FLIGHT,
};

const ROUTES: usize = 1000;
const ENDPOINTS: usize = 3000;

fn setup() {
    // `SLUICEGATE_METRICS_DETAIL=full` measures the per-route histograms.
    if std::env::var("SLUICEGATE_METRICS_DETAIL").as_deref() == Ok("full") {
        sluicegate::metrics::set_detail(sluicegate::metrics::Detail::Full);
    }
    sluicegate::admin::metrics::handle();
    let now = Instant::now();
    for i in 0..ROUTES {
        let name: Arc<str> = format!("apiroute/team-{:03}/api-{i}/main", i % 50).into();
        let route = RouteMetrics::new(name.clone());
        let plugin = PluginMetrics::new(name, "limitCount");
        for status in [200, 201, 404, 429, 502] {
            route.record(status, Duration::from_millis(3), now);
            route.attempt(Some(status), Duration::from_millis(2), now);
        }
        route.attempt(None, Duration::from_millis(2), now);
        route.sizes(512, 4096, now);
        plugin.record(Duration::from_micros(3), None, now);
        plugin.record(Duration::from_micros(3), Some(429), now);
        // Kept alive for the process: the handles are the series.
        std::mem::forget(route);
        std::mem::forget(plugin);
    }
    let upstream = |e: usize| format!("team-{:03}/svc-{}:80", e / 3 % 50, e / 3);
    for u in 0..ENDPOINTS / 3 {
        for (state, n) in [("available", 3.0), ("unavailable", 0.0)] {
            let labels = [("upstream", upstream(u * 3)), ("state", state.to_owned())];
            metrics::gauge!(UPSTREAM_ENDPOINTS, &labels).set(n);
        }
        metrics::gauge!(UPSTREAM_IN_FLIGHT, &[("upstream", upstream(u * 3))]).set(3.0);
    }
    if sluicegate::metrics::full_detail() {
        for e in 0..ENDPOINTS {
            let labels = [
                ("upstream", upstream(e)),
                (
                    "endpoint",
                    format!("10.{}.{}.{}:8080", e / 65536, e / 256 % 256, e % 256),
                ),
            ];
            metrics::gauge!(ENDPOINT_IN_FLIGHT, &labels).set(1.0);
            metrics::gauge!(ENDPOINT_HEALTHY, &labels).set(1.0);
        }
    }
}

fn render(c: &mut Criterion) {
    setup();
    let text = sluicegate::admin::metrics::render();
    eprintln!(
        "size: {ROUTES} routes, {ENDPOINTS} endpoints: {} KB, {} lines",
        text.len() / 1024,
        text.lines().count()
    );
    // Where the bytes go, largest family first.
    let mut families: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        *families.entry(family).or_default() += line.len() + 1;
    }
    let mut families: Vec<_> = families.into_iter().collect();
    families.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    for (family, bytes) in families {
        eprintln!("  {family}: {} KB", bytes / 1024);
    }
    let gzip_headers = {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
        h
    };
    let (zipped, _) = sluicegate::admin::metrics::exposition(&gzip_headers);
    eprintln!(
        "  gzip (what a Prometheus scrape receives): {} KB",
        zipped.len() / 1024
    );
    c.bench_function("metrics/render/1000_routes_3000_endpoints", |b| {
        b.iter(|| black_box(sluicegate::admin::metrics::render().len()))
    });
    c.bench_function("metrics/render_gzip/1000_routes_3000_endpoints", |b| {
        b.iter(|| {
            black_box(
                sluicegate::admin::metrics::exposition(&gzip_headers)
                    .0
                    .len(),
            )
        })
    });
}

criterion_group!(benches, render);
criterion_main!(benches);
