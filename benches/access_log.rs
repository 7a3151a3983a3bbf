//! The access log's work per request, all of it on the worker.
//!
//! Groups:
//! - `access_log/json` and `access_log/text`: formatting one line with
//!   every field a proxied request has (time, client, method, host, path,
//!   status, sizes, route, upstream, attempts, durations, request id, trace
//!   id, user agent), the time moving a millisecond per line so that the
//!   second's text is rebuilt once in a thousand lines, as under load;
//! - `access_log/log_json`: what a worker does per request, from a line of
//!   the request's values to its text in the worker's buffer, with the
//!   writer thread running and writing to nowhere.
//!
//! This bounds how close the access log can come to costing nothing.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use sluicegate::telemetry::access_format::LineFormatter;
use sluicegate::telemetry::access_log::{AccessLog, Format, Line, Settings};

fn line() -> Line<'static> {
    Line {
        time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000)),
        client: Some("10.244.3.17".parse().expect("address")),
        method: Some("GET"),
        host: Some(b"shop.example.com"),
        path: Some("/api/v1/orders/1234567"),
        protocol: "HTTP/1.1",
        status: 200,
        request_bytes: 0,
        response_bytes: 1_532,
        route: Some("shop/orders-api"),
        upstream: Some("10.244.1.9:8080".parse().expect("address")),
        attempts: 1,
        duration: Duration::from_micros(1_234),
        upstream_duration: Some(Duration::from_micros(1_017)),
        consumer: None,
        request_id: Some(b"0f8fad5b-d9cb-469f-a165-70867728950e"),
        trace_id: Some([0x4b; 16]),
        answered_by: None,
        user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64)"),
        ai_instance: None,
        tokens: None,
        ttft: None,
    }
}

fn bench_format(c: &mut Criterion) {
    let mut group = c.benchmark_group("access_log");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, format) in [("json", Format::Json), ("text", Format::Text)] {
        group.bench_function(name, |b| {
            let mut formatter = LineFormatter::new(format, &[]);
            let mut line = line();
            let mut out = Vec::with_capacity(1024);
            let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000);
            let mut ms = 0u64;
            b.iter(|| {
                ms += 1;
                line.time = Some(base + Duration::from_millis(ms));
                out.clear();
                formatter.write(&mut out, black_box(&line));
                black_box(out.len())
            })
        });
    }
    group.bench_function("log_json", |b| {
        let log = AccessLog::start(Settings::default(), Box::new(std::io::sink()))
            .expect("writer thread");
        let template = line();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let mut ms = 0u64;
        b.iter(|| {
            ms += 1;
            let mut line = template;
            line.time = Some(base + Duration::from_millis(ms));
            log.log(black_box(&line));
        })
    });
    group.finish();
}

criterion_group!(benches, bench_format);
criterion_main!(benches);
