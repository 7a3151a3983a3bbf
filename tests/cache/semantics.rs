//! RFC 9111 through the proxy, on every storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::cache::{Env, Store, cached_route, fetch, lines, response, status_of, until_hit};
use crate::common::wire::Capture;
use crate::common::*;

/// Waits until no store of this gateway is pending (a flight stays open
/// until its response is stored).
pub async fn stored(gw: &TestGateway) {
    let stores = gw.sa.as_ref().unwrap().gateway().cache().clone();
    crate::cache::eventually("store done", async || stores.flights.is_empty()).await;
}

async fn hit_after_miss(store: Store) {
    let env = Env::new(store).await;
    let app = Capture::with(|r| {
        response(
            "200 OK",
            &["cache-control: max-age=60", "content-type: text/plain"],
            &format!("body of {}", r.line()),
        )
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;

    let first = fetch(&gw, "c.test", "/p?x=1", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "body of GET /p?x=1 HTTP/1.1");
    assert_eq!(status_of(&first), "sluicegate; fwd=miss; stored");

    let hit = until_hit(&gw, "c.test", "/p?x=1", &[]).await;
    assert_eq!(hit.text(), "body of GET /p?x=1 HTTP/1.1");
    assert_eq!(hit.header("content-type"), Some("text/plain"));
    assert!(
        hit.header("age").is_some(),
        "a stored response says its age"
    );
    assert!(
        status_of(&hit).starts_with("sluicegate; hit; ttl="),
        "{}",
        status_of(&hit)
    );
    assert_eq!(app.count(), 1, "the hit did not reach the backend");

    // Another query is another key.
    let other = fetch(&gw, "c.test", "/p?x=2", &[]).await;
    assert_eq!(other.text(), "body of GET /p?x=2 HTTP/1.1");
    assert_eq!(lines(&app), ["GET /p?x=1 HTTP/1.1", "GET /p?x=2 HTTP/1.1"]);
    gw.shutdown().await;
}

async fn not_shared(store: Store) {
    let env = Env::new(store).await;
    let app = Capture::with(|r| {
        let cc = match r.line().split(' ').nth(1).unwrap_or("") {
            "/no-store" => "cache-control: no-store, max-age=60",
            "/private" => "cache-control: private, max-age=60",
            "/cookie" => "cache-control: max-age=60\r\nset-cookie: session=1",
            "/public" => "cache-control: public, max-age=60",
            _ => "cache-control: max-age=60",
        };
        response(
            "200 OK",
            &[cc],
            &format!("auth={:?}", r.headers("authorization")),
        )
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;
    let auth = [("authorization", "Bearer alice")];
    for (path, headers) in [
        ("/no-store", &[][..]),
        ("/private", &[]),
        ("/cookie", &[]),
        ("/auth", &auth[..]),
        ("/public", &auth),
    ] {
        let r = fetch(&gw, "c.test", path, headers).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let stored = status_of(&r).contains("stored");
        assert_eq!(stored, path == "/public", "{path}: {}", status_of(&r));
    }
    stored(&gw).await;
    // A response to credentials is for everyone only when it says so.
    let public = until_hit(&gw, "c.test", "/public", &[]).await;
    assert_eq!(public.text(), "auth=[\"Bearer alice\"]");
    for path in ["/no-store", "/private", "/cookie", "/auth"] {
        let r = fetch(&gw, "c.test", path, &[]).await;
        assert!(
            status_of(&r).contains("fwd=miss"),
            "{path}: {}",
            status_of(&r)
        );
        assert_eq!(
            r.text(),
            "auth=[]",
            "{path}: never another client's response"
        );
    }
    assert_eq!(app.count(), 9, "{:?}", lines(&app));
    gw.shutdown().await;
}

async fn vary(store: Store) {
    let env = Env::new(store).await;
    let app = Capture::with(|r| {
        let enc = r.headers("accept-encoding").join(",");
        let cc = if r.line().contains("/star") {
            "vary: *"
        } else {
            "vary: Accept-Encoding"
        };
        response(
            "200 OK",
            &["cache-control: max-age=60", cc],
            &format!("enc={enc}"),
        )
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];

    let r = fetch(&gw, "c.test", "/v", &gzip).await;
    assert_eq!(
        (r.text().as_str(), status_of(&r).as_str()),
        ("enc=gzip", "sluicegate; fwd=miss; stored")
    );
    stored(&gw).await;
    let r = fetch(&gw, "c.test", "/v", &br).await;
    assert_eq!(r.text(), "enc=br");
    assert_eq!(status_of(&r), "sluicegate; fwd=vary-miss; stored");
    stored(&gw).await;
    assert_eq!(
        until_hit(&gw, "c.test", "/v", &gzip).await.text(),
        "enc=gzip"
    );
    assert_eq!(until_hit(&gw, "c.test", "/v", &br).await.text(), "enc=br");
    let r = fetch(&gw, "c.test", "/v", &[]).await;
    assert_eq!(r.text(), "enc=");
    assert_eq!(
        app.count(),
        3,
        "one upstream request per variant: {:?}",
        lines(&app)
    );

    // Vary: * is never stored.
    for _ in 0..2 {
        let r = fetch(&gw, "c.test", "/star", &gzip).await;
        assert_eq!(status_of(&r), "sluicegate; fwd=miss");
        stored(&gw).await;
    }
    assert_eq!(app.count(), 5);
    gw.shutdown().await;
}

async fn revalidation_304(store: Store) {
    let env = Env::new(store).await;
    let app = Capture::with(|r| {
        if r.headers("if-none-match") == ["\"v1\""] {
            response(
                "304 Not Modified",
                &["etag: \"v1\"", "cache-control: no-cache", "x-checked: yes"],
                "",
            )
        } else {
            response(
                "200 OK",
                &["etag: \"v1\"", "cache-control: no-cache", "x-checked: no"],
                "the full body",
            )
        }
    })
    .await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;

    let first = fetch(&gw, "c.test", "/doc", &[]).await;
    assert_eq!(first.text(), "the full body");
    assert_eq!(status_of(&first), "sluicegate; fwd=miss; stored");
    stored(&gw).await;

    // no-cache: every use is revalidated, with the stored validator.
    let second = fetch(&gw, "c.test", "/doc", &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "the full body", "the stored body, freshened");
    assert!(
        status_of(&second).starts_with("sluicegate; fwd=stale; fwd-status=304"),
        "{}",
        status_of(&second)
    );
    assert_eq!(
        second.header("x-checked"),
        Some("yes"),
        "the 304's fields replace the stored ones"
    );
    let sent = app.requests();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].headers("if-none-match").is_empty());
    assert_eq!(sent[1].headers("if-none-match"), ["\"v1\""]);
    stored(&gw).await;

    // A client with the same validator gets 304 from the cache.
    let third = fetch(&gw, "c.test", "/doc", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(third.status, StatusCode::NOT_MODIFIED);
    assert!(third.body.is_empty());
    assert_eq!(third.header("etag"), Some("\"v1\""));
    assert_eq!(app.count(), 3);
    gw.shutdown().await;
}

async fn stale_if_error(store: Store) {
    let env = Env::new(store).await;
    let served = Arc::new(AtomicUsize::new(0));
    let app = {
        let served = served.clone();
        Capture::with(move |_| {
            if served.fetch_add(1, Ordering::SeqCst) == 0 {
                response(
                    "200 OK",
                    &["cache-control: max-age=0, stale-if-error=60"],
                    "old but good",
                )
            } else {
                response("503 Service Unavailable", &[], "down")
            }
        })
        .await
    };
    let route = cached_route("c", store, "", "");
    let gw = env.gateway(&(service("app", &[app.addr]) + &route)).await;
    assert_eq!(fetch(&gw, "c.test", "/", &[]).await.text(), "old but good");
    stored(&gw).await;

    // The upstream answers 503: the stale entry answers instead.
    let r = fetch(&gw, "c.test", "/", &[]).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "old but good")
    );
    assert!(
        status_of(&r).starts_with("sluicegate; fwd=stale; fwd-status=503; ttl=-"),
        "{}",
        status_of(&r)
    );
    assert!(status_of(&r).ends_with("; detail=stale-if-error"));
    assert_eq!(app.count(), 2, "the upstream was asked first");

    // The upstream is gone altogether.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    gw.write("main.yaml", &(service("app", &[dead]) + &route))
        .await;
    let r = fetch(&gw, "c.test", "/", &[]).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "old but good")
    );
    assert!(
        status_of(&r).ends_with("; detail=stale-if-error"),
        "{}",
        status_of(&r)
    );
    // Without stale-if-error, the failure is the client's answer.
    let r = fetch(&gw, "c.test", "/never-stored", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    gw.shutdown().await;
}

async fn post_never_from_get(store: Store) {
    let env = Env::new(store).await;
    let app =
        Capture::with(|r| response("200 OK", &["cache-control: max-age=60"], &r.line())).await;
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;
    assert_eq!(
        fetch(&gw, "c.test", "/x", &[]).await.text(),
        "GET /x HTTP/1.1"
    );
    assert_eq!(
        until_hit(&gw, "c.test", "/x", &[]).await.text(),
        "GET /x HTTP/1.1"
    );

    let post = request(gw.http(), "POST", "c.test", "/x", &[]).await;
    assert_eq!(post.text(), "POST /x HTTP/1.1", "never the GET entry");
    assert_eq!(status_of(&post), "sluicegate; fwd=bypass");
    // The POST succeeded: the URI's entries are invalid (RFC 9111 §4.4).
    let after = fetch(&gw, "c.test", "/x", &[]).await;
    assert_eq!(after.text(), "GET /x HTTP/1.1");
    assert_eq!(status_of(&after), "sluicegate; fwd=miss; stored");
    assert_eq!(
        lines(&app),
        ["GET /x HTTP/1.1", "POST /x HTTP/1.1", "GET /x HTTP/1.1"]
    );
    gw.shutdown().await;
}

/// 100 concurrent misses of one key: one upstream request, and every
/// client gets its response.
async fn coalescing(store: Store) {
    let env = Env::new(store).await;
    let count = Arc::new(AtomicUsize::new(0));
    let app = {
        let count = count.clone();
        Backend::start(move |_| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                http::Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(full("shared body"))
                    .unwrap()
            }
        })
        .await
    };
    let m = service("app", &[app.addr]) + &cached_route("c", store, "", "");
    let gw = env.gateway(&m).await;
    let addr = gw.http();
    let clients: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { get(addr, "c.test", "/hot").await }))
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::OK, "shared body")
        );
        statuses.push(status_of(&r));
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "one upstream request for 100 misses"
    );
    let led = statuses
        .iter()
        .filter(|s| s.ends_with("fwd=miss; stored"))
        .count();
    // The others waited for it (a request arriving after it was stored
    // would be a hit, which is no upstream request either).
    let others = statuses
        .iter()
        .filter(|s| s.ends_with("fwd=miss; collapsed") || s.contains("; hit"))
        .count();
    assert_eq!((led, others), (1, 99), "{statuses:?}");
    assert!(
        statuses.iter().any(|s| s.ends_with("collapsed")),
        "{statuses:?}"
    );
    gw.shutdown().await;
}

crate::on_every_storage!(
    hit_after_miss,
    not_shared,
    vary,
    revalidation_304,
    stale_if_error,
    post_never_from_get,
    coalescing,
);
