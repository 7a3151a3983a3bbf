//! The proxy cache's per-request work outside the network: what a hit
//! costs the proxy before the first byte is written, and what storing or
//! reading a shared entry costs.
//!
//! Groups (one 1 KiB response with the headers a real one has):
//! - `cache/key`: rendering the key template `$host$request_uri` and
//!   hashing it into the primary key (every cached request);
//! - `cache/memory_hit`: key, memory-storage lookup among 100,000 entries,
//!   the RFC 9111 decision and the `Cache-Status` value: the memory hit
//!   path up to the response head;
//! - `cache/decide_with_directives`: the decision when the request sends
//!   `Cache-Control` (the full RFC 9111 evaluation instead of the fast
//!   path);
//! - `cache/storable`: whether a response may be stored, and its policy
//!   (every miss that stores);
//! - `cache/encode`: the stored form of an entry (disk, Redis, Memcached);
//! - `cache/decode`: checking and decoding the stored form and rebuilding
//!   the entry's policy (every disk, Redis or Memcached hit).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method, StatusCode};
use sluicegate::cache::entry::{self, Decoded, Entry, Meta, unix_ms};
use sluicegate::cache::freshness::{self, Settings};
use sluicegate::cache::key::{self, KeyId};
use sluicegate::cache::status::CacheStatus;
use sluicegate::cache::store::memory::{MemValue, Memory};
use sluicegate::cache::template::{Template, Vars};

const ROUTE: &str = "apiroute/default/shop/all";
const ENTRIES: u64 = 100_000;

fn settings() -> Settings {
    Settings {
        statuses: Box::new([200]),
        default_ttl: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        store_set_cookie: false,
    }
}

fn response_headers(i: u64, now: SystemTime) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("cache-control", "public, max-age=3600".parse().unwrap());
    h.insert("etag", format!("\"{i:016x}\"").parse().unwrap());
    h.insert("date", httpdate::fmt_http_date(now).parse().unwrap());
    h.insert("content-length", "1024".parse().unwrap());
    h
}

fn request_headers(host: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", host.parse().unwrap());
    h.insert("accept", "*/*".parse().unwrap());
    h.insert("user-agent", "bench/1.0".parse().unwrap());
    h
}

fn key_of(template: &Template, path: &str, headers: &HeaderMap, buf: &mut Vec<u8>) -> KeyId {
    buf.clear();
    let vars = Vars {
        host: "shop.test",
        path,
        query: Some("page=2"),
        tls: false,
        headers,
    };
    template.render(&vars, buf);
    key::primary(ROUTE, &Method::GET, None, buf)
}

fn meta(k: KeyId, i: u64, now: SystemTime) -> Meta {
    let st = freshness::storable(
        &settings(),
        &Method::GET,
        &request_headers("shop.test"),
        false,
        StatusCode::OK,
        &response_headers(i, now),
        now,
    )
    .unwrap();
    Meta {
        status: StatusCode::OK,
        method: Method::GET,
        headers: st.headers,
        request: st.request,
        response_time: unix_ms(now),
        stored_at: unix_ms(now),
        expires_at: unix_ms(now + st.retention),
        default_ttl: st.default_ttl,
        key: k,
        route: ROUTE.into(),
        tags: Box::new(["product-1".into()]),
    }
}

fn bench_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let now = SystemTime::now();
    let template = Template::parse("$host$request_uri").unwrap();
    let request = request_headers("shop.test");
    let mut buf = Vec::with_capacity(128);
    let paths: Vec<String> = (0..ENTRIES).map(|i| format!("/items/{i}")).collect();
    let body = Bytes::from(vec![b'x'; 1024]);

    group.bench_function("key", |b| {
        b.iter(|| key_of(&template, black_box("/items/42"), &request, &mut buf))
    });

    let memory = Memory::new(1 << 30);
    for (i, p) in paths.iter().enumerate() {
        let k = key_of(&template, p, &request, &mut buf);
        let m = meta(k, i as u64, now);
        memory.put(
            k,
            MemValue::Entry(Arc::new(Entry::new(m, 1024)), body.clone()),
        );
    }
    memory.sync();
    let s = settings();
    group.bench_function("memory_hit", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7919) % paths.len();
            let k = key_of(&template, &paths[i], &request, &mut buf);
            let Some(MemValue::Entry(e, body)) = memory.get(&k) else {
                panic!("every key is stored");
            };
            let verdict = freshness::decide(&e, &s, &request, false, SystemTime::now());
            let freshness::Verdict::Fresh { ttl } = verdict else {
                panic!("fresh entries: {verdict:?}");
            };
            (CacheStatus::hit(ttl).value(), body.len())
        })
    });

    let k = key_of(&template, "/items/42", &request, &mut buf);
    let one = Entry::new(meta(k, 42, now), 1024);
    let mut with_directives = request.clone();
    with_directives.insert("cache-control", "max-age=600".parse().unwrap());
    group.bench_function("decide_with_directives", |b| {
        b.iter(|| {
            freshness::decide(
                &one,
                &s,
                black_box(&with_directives),
                false,
                SystemTime::now(),
            )
        })
    });

    let response = response_headers(42, now);
    group.bench_function("storable", |b| {
        b.iter(|| {
            freshness::storable(
                &s,
                &Method::GET,
                &request,
                false,
                StatusCode::OK,
                black_box(&response),
                now,
            )
            .map(|st| st.retention)
        })
    });

    let m = meta(k, 42, now);
    group.bench_function("encode", |b| {
        b.iter(|| entry::encode_entry(black_box(&m), &body))
    });

    let stored = Bytes::from(entry::encode_entry(&m, &body));
    group.bench_function("decode", |b| {
        b.iter(|| {
            let Ok(Decoded::Entry(meta, body)) = entry::decode(black_box(stored.clone())) else {
                panic!("a valid entry");
            };
            let len = body.len() as u64;
            (Entry::new(*meta, len), body)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_cache);
criterion_main!(benches);
