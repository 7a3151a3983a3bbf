//! PURGE behind the route's authentication, consumer isolation, bypass,
//! purge by tag through the admin API, background refresh, and the
//! cache's place in `/routes` and `/metrics`.

use http::StatusCode;

use crate::cache::semantics::stored;
use crate::cache::{Env, Store, cached_route, fetch, lines, response, status_of, until_hit};
use crate::common::wire::Capture;
use crate::common::*;

fn consumer(name: &str, consumer: &str, key: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{sluicegate.io/consumer: {consumer}}}\ntype: Opaque\nstringData:\n  key: {key}\n"
    )
}

/// A backend naming the consumer the gateway told it about.
async fn by_consumer() -> Capture {
    Capture::with(|r| {
        let who = r.headers("x-consumer-name").join(",");
        response(
            "200 OK",
            &["cache-control: max-age=60"],
            &format!("for {who}"),
        )
    })
    .await
}

#[tokio::test]
async fn purge_needs_the_routes_credentials() {
    let env = Env::new(Store::Memory).await;
    let app = by_consumer().await;
    let m = service("app", &[app.addr])
        + &consumer("alice", "alice", "k-alice")
        + &cached_route("c", Store::Memory, "allowPurge: true", "keyAuth: {}");
    let gw = env.gateway(&m).await;
    let key = [("apikey", "k-alice")];
    assert_eq!(fetch(&gw, "c.test", "/doc", &key).await.text(), "for alice");
    until_hit(&gw, "c.test", "/doc", &key).await;

    for creds in [&[][..], &[("apikey", "wrong")]] {
        let r = request(gw.http(), "PURGE", "c.test", "/doc", creds).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{creds:?}");
        // Still cached.
        assert!(status_of(&fetch(&gw, "c.test", "/doc", &key).await).contains("; hit"));
    }
    let r = request(gw.http(), "PURGE", "c.test", "/doc", &key).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "purged 1 entries\n")
    );
    let r = request(gw.http(), "PURGE", "c.test", "/doc", &key).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let after = fetch(&gw, "c.test", "/doc", &key).await;
    assert_eq!(status_of(&after), "sluicegate; fwd=miss; stored");
    assert_eq!(
        lines(&app),
        ["GET /doc HTTP/1.1", "GET /doc HTTP/1.1"],
        "PURGE never reached the backend"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn purge_is_forwarded_when_the_route_does_not_answer_it() {
    let env = Env::new(Store::Memory).await;
    let app =
        Capture::with(|r| response("200 OK", &["cache-control: max-age=60"], &r.line())).await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Memory, "", "");
    let gw = env.gateway(&m).await;
    fetch(&gw, "c.test", "/doc", &[]).await;
    until_hit(&gw, "c.test", "/doc", &[]).await;
    let r = request(gw.http(), "PURGE", "c.test", "/doc", &[]).await;
    assert_eq!(r.text(), "PURGE /doc HTTP/1.1");
    // It succeeded upstream: an unsafe method invalidates the URI.
    let after = fetch(&gw, "c.test", "/doc", &[]).await;
    assert_eq!(status_of(&after), "sluicegate; fwd=miss; stored");
    gw.shutdown().await;
}

#[tokio::test]
async fn consumers_never_get_each_others_entries() {
    let env = Env::new(Store::Memory).await;
    let app = by_consumer().await;
    let secrets = consumer("alice", "alice", "k-alice") + &consumer("bob", "bob", "k-bob");
    let m = service("app", &[app.addr])
        + &secrets
        + &cached_route("c", Store::Memory, "", "keyAuth: {}")
        + &cached_route(
            "shared",
            Store::Memory,
            "consumerIsolation: false",
            "keyAuth: {}",
        );
    let gw = env.gateway(&m).await;
    let alice = [("apikey", "k-alice")];
    let bob = [("apikey", "k-bob")];
    assert_eq!(
        fetch(&gw, "c.test", "/me", &alice).await.text(),
        "for alice"
    );
    assert_eq!(
        until_hit(&gw, "c.test", "/me", &alice).await.text(),
        "for alice"
    );
    let r = fetch(&gw, "c.test", "/me", &bob).await;
    assert_eq!(
        (r.text().as_str(), status_of(&r).as_str()),
        ("for bob", "sluicegate; fwd=miss; stored")
    );
    assert_eq!(app.count(), 2);
    // Without isolation the route shares one entry (its operator said so).
    assert_eq!(
        fetch(&gw, "shared.test", "/me", &alice).await.text(),
        "for alice"
    );
    assert_eq!(
        until_hit(&gw, "shared.test", "/me", &bob).await.text(),
        "for alice"
    );
    assert_eq!(app.count(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn bypass_skips_the_lookup_and_refreshes_the_entry() {
    let env = Env::new(Store::Memory).await;
    let app = Capture::with(|r| {
        let n = r.headers("x-n").join("");
        response("200 OK", &["cache-control: max-age=60"], &format!("v{n}"))
    })
    .await;
    let m = service("app", &[app.addr])
        + &cached_route(
            "c",
            Store::Memory,
            "bypass: [\"$http_x_no_cache\"], noStore: [\"$arg_nostore\"]",
            "",
        );
    let gw = env.gateway(&m).await;
    assert_eq!(
        fetch(&gw, "c.test", "/", &[("x-n", "1")]).await.text(),
        "v1"
    );
    assert_eq!(
        until_hit(&gw, "c.test", "/", &[("x-n", "2")]).await.text(),
        "v1"
    );
    let r = fetch(&gw, "c.test", "/", &[("x-n", "3"), ("x-no-cache", "1")]).await;
    assert_eq!(
        (r.text().as_str(), status_of(&r).as_str()),
        ("v3", "sluicegate; fwd=bypass; stored")
    );
    assert_eq!(until_hit(&gw, "c.test", "/", &[]).await.text(), "v3");
    // "0" does not bypass.
    assert!(status_of(&fetch(&gw, "c.test", "/", &[("x-no-cache", "0")]).await).contains("; hit"));
    // noStore: forwarded on a miss, not stored.
    for _ in 0..2 {
        let r = fetch(&gw, "c.test", "/?nostore=1", &[]).await;
        assert_eq!(status_of(&r), "sluicegate; fwd=miss");
    }
    assert_eq!(app.count(), 4);
    gw.shutdown().await;
}

async fn tag_purge(store: Store) {
    let env = Env::new(store).await;
    let app = Capture::with(|r| {
        let tags = match r.line().split(' ').nth(1).unwrap_or("") {
            "/a" => "surrogate-key: product-1 catalog",
            "/b" => "cache-tag: catalog,home",
            _ => "surrogate-key: other",
        };
        response("200 OK", &["cache-control: max-age=60", tags], &r.line())
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;
    for p in ["/a", "/b", "/c"] {
        fetch(&gw, "c.test", p, &[]).await;
        until_hit(&gw, "c.test", p, &[]).await;
    }
    assert_eq!(app.count(), 3);
    let admin = format!("http://{}/cache/purge?tag=catalog", gw.admin());
    let r = request(gw.admin(), "POST", "admin", &admin, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["tags"], serde_json::json!(["catalog"]));
    if store == Store::Disk {
        assert_eq!(report["diskFiles"], 2, "{report}");
    }
    for (p, purged) in [("/a", true), ("/b", true), ("/c", false)] {
        let r = fetch(&gw, "c.test", p, &[]).await;
        assert_eq!(
            status_of(&r).contains("fwd=miss"),
            purged,
            "{p}: {}",
            status_of(&r)
        );
    }
    assert_eq!(app.count(), 5);
    // Bad requests name what is wrong.
    let r = request(gw.admin(), "POST", "admin", "/cache/purge?tag=a%20b", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = request(gw.admin(), "GET", "admin", "/cache/purge?tag=a", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    gw.shutdown().await;
}

mod tags {
    use super::*;

    #[tokio::test]
    async fn memory() {
        tag_purge(Store::Memory).await
    }

    #[tokio::test]
    async fn disk() {
        tag_purge(Store::Disk).await
    }

    #[tokio::test]
    async fn redis() {
        tag_purge(Store::Redis).await
    }

    #[tokio::test]
    async fn memcached() {
        tag_purge(Store::Memcached).await
    }
}

#[tokio::test]
async fn stale_while_revalidate_refreshes_in_the_background() {
    let env = Env::new(Store::Memory).await;
    let app = Capture::with(|r| {
        let version = if r.headers("if-none-match").is_empty() {
            "v1"
        } else {
            "v2"
        };
        response(
            "200 OK",
            &[
                "cache-control: max-age=0, stale-while-revalidate=60",
                &format!("etag: \"{version}\""),
            ],
            version,
        )
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Memory, "", "");
    let gw = env.gateway(&m).await;
    assert_eq!(fetch(&gw, "c.test", "/", &[]).await.text(), "v1");
    stored(&gw).await;
    // Stale: served at once, refreshed behind the client's back.
    let r = fetch(&gw, "c.test", "/", &[]).await;
    assert_eq!(r.text(), "v1");
    assert!(
        status_of(&r).starts_with("sluicegate; hit; ttl=")
            && status_of(&r).ends_with("; detail=stale-while-revalidate"),
        "{}",
        status_of(&r)
    );
    crate::cache::eventually("the background refresh", async || app.count() == 2).await;
    assert_eq!(app.requests()[1].headers("if-none-match"), ["\"v1\""]);
    stored(&gw).await;
    assert_eq!(fetch(&gw, "c.test", "/", &[]).await.text(), "v2");
    gw.shutdown().await;
}

#[tokio::test]
async fn routes_and_metrics_show_the_cache() {
    let env = Env::new(Store::Memory).await;
    let app = Capture::with(|_| response("200 OK", &["cache-control: max-age=60"], "x")).await;
    let m =
        service("app", &[app.addr]) + &cached_route("shown", Store::Memory, "defaultTtl: 30s", "");
    let gw = env.gateway(&m).await;
    fetch(&gw, "shown.test", "/", &[]).await;
    until_hit(&gw, "shown.test", "/", &[]).await;
    let routes: serde_json::Value =
        serde_json::from_slice(&admin_get(&gw, "/routes").await.body).unwrap();
    assert!(
        routes["cache"]["memory"]["entries"].as_u64().unwrap() >= 1,
        "{}",
        routes["cache"]
    );
    assert!(routes["cache"]["memory"]["bytes"].as_u64().unwrap() > 0);
    let route = &routes["table"]["routes"][0];
    assert_eq!(route["cache"]["defaultTtl"], "30s", "{route}");
    assert_eq!(route["cache"]["resolvedStorage"], "memory");
    let metrics = admin_get(&gw, "/metrics").await.text();
    for want in [
        r#"sluicegate_cache_requests_total{route="apiroute/default/shown/all",storage="memory",result="hit"}"#,
        r#"sluicegate_cache_requests_total{route="apiroute/default/shown/all",storage="memory",result="miss"} 1"#,
        r#"sluicegate_cache_stored_bytes_total{route="apiroute/default/shown/all",storage="memory"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} missing in:\n{metrics}");
    }
    gw.shutdown().await;
}
