//! Replicas sharing a store: one replica's entries serve the other's
//! clients, and a tag purge on one reaches the other (through the shared
//! store's marks, and through Redis pub/sub for entries in a replica's
//! own memory).

use std::time::Duration;

use crate::cache::{Env, Store, cached_route, fetch, response, status_of, until_hit};
use crate::common::wire::Capture;
use crate::common::*;

async fn shared_entries(store: Store) {
    let env = Env::new(store).await;
    let app = Capture::with(|r| {
        response(
            "200 OK",
            &["cache-control: max-age=600", "surrogate-key: shared"],
            &r.line(),
        )
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let one = env.gateway(&m).await;
    let two = env.gateway(&m).await;
    assert_eq!(
        fetch(&one, "c.test", "/s", &[]).await.text(),
        "GET /s HTTP/1.1"
    );
    // The entry is written to the shared store after the response went
    // out: the second replica asks with `only-if-cached` (RFC 9111
    // §5.2.1.7), which never reaches the upstream, until it has it.
    let r = until_hit(&two, "c.test", "/s", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.text(), "GET /s HTTP/1.1");
    assert_eq!(
        app.count(),
        1,
        "the second replica served the first one's entry"
    );

    // A purge on the first replica: the second one's clients miss.
    let r = request(one.admin(), "POST", "admin", "/cache/purge?tag=shared", &[]).await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    crate::cache::eventually("the purge on the other replica", async || {
        status_of(&fetch(&two, "c.test", "/s", &[]).await).contains("fwd=miss")
    })
    .await;
    assert_eq!(app.count(), 2);
    one.shutdown().await;
    two.shutdown().await;
}

mod shared {
    use super::*;

    #[tokio::test]
    async fn redis() {
        shared_entries(Store::Redis).await
    }

    #[tokio::test]
    async fn memcached() {
        shared_entries(Store::Memcached).await
    }

    #[tokio::test]
    async fn tiered() {
        shared_entries(Store::Tiered).await
    }
}

/// Memory entries are each replica's own; the purge reaches the other
/// replica's memory through Redis pub/sub.
#[tokio::test]
async fn tag_purge_reaches_another_replicas_memory() {
    let env = Env::new(Store::Tiered).await;
    let redis = env.redis.as_ref().unwrap();
    let app = Capture::with(|r| {
        response(
            "200 OK",
            &["cache-control: max-age=600", "cache-tag: news"],
            &r.line(),
        )
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Memory, "", "");
    let one = env.gateway(&m).await;
    let two = env.gateway(&m).await;
    // Both subscribed to purges.
    crate::cache::eventually("both replicas subscribed", async || {
        redis
            .raw("PUBSUB NUMSUB sluicegate:cache:purge")
            .await
            .ends_with(":2\r\n")
    })
    .await;
    for gw in [&one, &two] {
        fetch(gw, "c.test", "/n", &[]).await;
        until_hit(gw, "c.test", "/n", &[]).await;
    }
    assert_eq!(app.count(), 2, "memory entries are each replica's own");
    let r = request(one.admin(), "POST", "admin", "/cache/purge?tag=news", &[]).await;
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["published"], true, "{report}");
    crate::cache::eventually("the purge heard by the second replica", async || {
        status_of(&fetch(&two, "c.test", "/n", &[]).await).contains("fwd=miss")
    })
    .await;
    assert!(status_of(&fetch(&one, "c.test", "/n", &[]).await).contains("fwd=miss"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    one.shutdown().await;
    two.shutdown().await;
}

/// `PURGE` on one replica removes the other replicas' copies in memory
/// too.
#[tokio::test]
async fn uri_purge_reaches_another_replicas_memory() {
    let env = Env::new(Store::Tiered).await;
    let redis = env.redis.as_ref().unwrap();
    let app =
        Capture::with(|r| response("200 OK", &["cache-control: max-age=600"], &r.line())).await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Memory, "allowPurge: true", "");
    let one = env.gateway(&m).await;
    let two = env.gateway(&m).await;
    crate::cache::eventually("both replicas subscribed", async || {
        redis
            .raw("PUBSUB NUMSUB sluicegate:cache:purge")
            .await
            .ends_with(":2\r\n")
    })
    .await;
    for gw in [&one, &two] {
        fetch(gw, "c.test", "/u", &[]).await;
        until_hit(gw, "c.test", "/u", &[]).await;
    }
    let r = request(one.http(), "PURGE", "c.test", "/u", &[]).await;
    assert_eq!(r.status, http::StatusCode::OK);
    crate::cache::eventually("the purge heard by the second replica", async || {
        status_of(&fetch(&two, "c.test", "/u", &[]).await).contains("fwd=miss")
    })
    .await;
    assert_eq!(app.count(), 3);
    one.shutdown().await;
    two.shutdown().await;
}
