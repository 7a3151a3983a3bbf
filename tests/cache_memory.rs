//! The memory storage's bound is the memory it takes: 100,000 entries of
//! 1 KiB (with the headers, RFC 9111 policy and keys a real response has)
//! put into a storage bounded far below their total keep the process's
//! allocated bytes within 10% of the bound. A counting allocator measures
//! what is really allocated, not what the storage believes it holds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use sluicegate::cache::entry::{Entry, Meta, unix_ms};
use sluicegate::cache::freshness::{self, Settings};
use sluicegate::cache::key;
use sluicegate::cache::store::memory::{MemValue, Memory};

mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

/// A stored 1 KiB response as the proxy makes one.
fn entry(i: u64, now: SystemTime) -> (key::KeyId, MemValue) {
    let settings = Settings {
        statuses: Box::new([200]),
        default_ttl: None,
        stale_while_revalidate: None,
        stale_if_error: None,
        store_set_cookie: false,
    };
    let mut response = HeaderMap::new();
    response.insert("content-type", "application/json".parse().unwrap());
    response.insert("cache-control", "public, max-age=3600".parse().unwrap());
    response.insert("etag", format!("\"{i:016x}\"").parse().unwrap());
    response.insert("date", httpdate::fmt_http_date(now).parse().unwrap());
    response.insert("content-length", "1024".parse().unwrap());
    let mut request = HeaderMap::new();
    request.insert("accept", "*/*".parse().unwrap());
    let st = freshness::storable(
        &settings,
        &Method::GET,
        &request,
        true,
        StatusCode::OK,
        &response,
        now,
    )
    .unwrap();
    let k = key::primary(
        "apiroute/default/shop/all",
        &Method::GET,
        None,
        format!("shop.test\x1f/items/{i}").as_bytes(),
    );
    let meta = Meta {
        status: StatusCode::OK,
        method: Method::GET,
        headers: st.headers,
        request: st.request,
        response_time: unix_ms(now),
        stored_at: unix_ms(now),
        expires_at: unix_ms(now + st.retention),
        default_ttl: 0,
        key: k,
        route: "apiroute/default/shop/all".into(),
        tags: Box::new([]),
    };
    let body = Bytes::from(vec![b'x'; 1024]);
    (k, MemValue::Entry(Arc::new(Entry::new(meta, 1024)), body))
}

fn allocated() -> isize {
    counting::allocated()
}

#[test]
fn a_hundred_thousand_entries_stay_within_the_bound() {
    let now = SystemTime::now();
    let bound: u64 = 64 << 20;
    // What an entry really costs, measured without evictions.
    let (per_entry, weight) = {
        let store = Memory::new(1 << 40);
        let before = allocated();
        let mut weight = 0;
        for i in 0..10_000 {
            let (k, v) = entry(i, now);
            weight = v.weight();
            store.put(k, v);
        }
        store.sync();
        let used = (allocated() - before) as u64;
        (used / 10_000, weight)
    };
    println!("an entry of 1 KiB: {per_entry} bytes allocated, weighs {weight}");

    let store = Memory::new(bound);
    let before = allocated();
    let mut peak = 0;
    for i in 0..100_000 {
        let (k, v) = entry(i, now);
        store.put(k, v);
        if i % 1000 == 999 {
            store.sync();
            peak = peak.max(allocated() - before);
        }
    }
    store.sync();
    std::thread::sleep(Duration::from_millis(10));
    let used = (allocated() - before) as u64;
    let (entries, weighted) = store.usage();
    println!(
        "bound {bound}, weighted {weighted}, allocated {used} (peak {peak}), {entries} entries kept of 100000"
    );
    assert!(weighted <= bound, "moka's own view exceeds the bound");
    assert!(entries < 100_000, "the bound made room by evicting");
    assert!(
        used as f64 <= bound as f64 * 1.10,
        "allocated {used} bytes for a {bound}-byte bound"
    );
    assert!(
        peak as f64 <= bound as f64 * 1.10,
        "allocation peaked at {peak} bytes for a {bound}-byte bound"
    );
    assert!(
        used as f64 >= bound as f64 * 0.80,
        "the bound is used, not wasted ({used} of {bound})"
    );
}
