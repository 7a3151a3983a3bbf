//! Rate limiting through the real proxy: limits per key with their
//! headers, groups, PluginConfig references and overrides, global
//! plugins, counters that survive unrelated changes, the ingress-nginx
//! annotations, and invalid settings.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use sluicegate::translate::ObjectKey;

fn plugin_config(name: &str, plugins: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: PluginConfig
metadata: {{name: {name}, namespace: default}}
spec:
  plugins: {plugins}
"#
    )
}

/// Status codes of `n` sequential requests to `host`, with `headers`.
async fn statuses(gw: &TestGateway, host: &str, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            request(gw.http(), "GET", host, "/", headers)
                .await
                .status
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn limit_count_refuses_past_the_limit_with_quota_headers() {
    let b = Backend::named("app").await;
    let m = service("app", &[b.addr])
        + &limited_route(
            "count",
            "{limitCount: {count: 3, timeWindow: 1h, rejectedMessage: \"slow down\\n\"}}",
            None,
        );
    let gw = TestGateway::start(&m).await;
    for left in ["2", "1", "0"] {
        let r = get(gw.http(), "count.test", "/").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(left));
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");
    }
    let r = get(gw.http(), "count.test", "/").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.text(), "slow down\n");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");

    // Rejections are counted per route and plugin.
    let metrics = admin_get(&gw, "/metrics").await.text();
    assert!(
        metrics.contains(r#"sluicegate_plugin_rejections_total{route="apiroute/default/count/all",plugin="limitCount"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn keys_separate_clients_and_groups_share_a_counter() {
    let b = Backend::named("app").await;
    let by_header =
        "{limitCount: {count: 2, timeWindow: 1h, key: {type: Header, name: x-api-key}}}";
    let grouped = "{limitCount: {count: 3, timeWindow: 1h, group: shared, key: {type: Constant}}}";
    let m = service("app", &[b.addr])
        + &limited_route("keyed", by_header, None)
        + &limited_route("left", grouped, None)
        + &limited_route("right", grouped, None);
    let gw = TestGateway::start(&m).await;

    let alice = [("x-api-key", "alice")];
    let bob = [("x-api-key", "bob")];
    assert_eq!(
        statuses(&gw, "keyed.test", 3, &alice).await,
        [200, 200, 429]
    );
    assert_eq!(statuses(&gw, "keyed.test", 3, &bob).await, [200, 200, 429]);

    // One counter for both routes of the group.
    let mut seen = statuses(&gw, "left.test", 2, &[]).await;
    seen.extend(statuses(&gw, "right.test", 2, &[]).await);
    assert_eq!(seen, [200, 200, 200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn plugin_config_references_inline_overrides_and_global_plugins() {
    let b = Backend::named("app").await;
    let m = service("app", &[b.addr])
        + &plugin_config("strict", "{limitCount: {count: 2, timeWindow: 1h}}")
        + &plugin_config(
            "everyone",
            "{limitCount: {count: 7, timeWindow: 1h, key: {type: Constant}}}",
        )
        + &limited_route("shared-ref", "", Some("strict"))
        + &limited_route(
            "override",
            "{limitCount: {count: 4, timeWindow: 1h}}",
            Some("strict"),
        )
        + &limited_route("plain", "", None);
    let mut config = test_config(1);
    config.translate.global_plugins = Some(ObjectKey::new("default", "everyone"));
    let gw = TestGateway::start_with(&m, config).await;

    assert_eq!(
        statuses(&gw, "shared-ref.test", 3, &[]).await,
        [200, 200, 429]
    );
    assert_eq!(
        statuses(&gw, "override.test", 3, &[]).await,
        [200, 200, 200]
    );
    // The global limit (7, one counter for every route) has seen six
    // requests, the one the route's own limit refused included (global
    // plugins run first): one left.
    assert_eq!(statuses(&gw, "plain.test", 2, &[]).await, [200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn counters_survive_unrelated_changes_and_reset_when_settings_change() {
    let b = Backend::named("app").await;
    let base = service("app", &[b.addr])
        + &limited_route("kept", "{limitCount: {count: 3, timeWindow: 1h}}", None);
    let gw = TestGateway::start(&base).await;
    assert_eq!(statuses(&gw, "kept.test", 2, &[]).await, [200, 200]);

    // Another object changes: a new table, the same counter.
    let before = gw.generation();
    gw.write(
        "main.yaml",
        &(base.clone() + &limited_route("other", "", None)),
    )
    .await;
    gw.wait_generation_after(before).await;
    assert_eq!(
        get(gw.http(), "other.test", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(statuses(&gw, "kept.test", 2, &[]).await, [200, 429]);

    // The limit itself changes: counting starts over.
    let before = gw.generation();
    let changed = service("app", &[b.addr])
        + &limited_route("kept", "{limitCount: {count: 2, timeWindow: 1h}}", None);
    gw.write("main.yaml", &changed).await;
    gw.wait_generation_after(before).await;
    assert_eq!(statuses(&gw, "kept.test", 3, &[]).await, [200, 200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn limit_req_serves_bursts_or_spaces_them_out() {
    let b = Backend::named("app").await;
    let m = service("app", &[b.addr])
        + &limited_route(
            "burst",
            "{limitReq: {rate: 1, burst: 2, nodelay: true}}",
            None,
        )
        + &limited_route("smooth", "{limitReq: {rate: 20, burst: 2}}", None);
    let gw = TestGateway::start(&m).await;
    // One at the rate plus a burst of two, at once; then refused.
    assert_eq!(
        statuses(&gw, "burst.test", 4, &[]).await,
        [200, 200, 200, 429]
    );

    // Without nodelay the burst is held back to the rate (20/s: 50 ms
    // apart), not refused.
    let started = Instant::now();
    assert_eq!(statuses(&gw, "smooth.test", 3, &[]).await, [200, 200, 200]);
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "{:?}",
        started.elapsed()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn limit_conn_counts_requests_in_flight() {
    let (release, hold) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let b = Backend::start(move |req| {
        let mut hold = hold.clone();
        let arrived = arrived_tx.clone();
        async move {
            if req.uri().path() == "/slow" {
                let _ = arrived.send(());
                let _ = hold.wait_for(|go| *go).await;
            }
            http::Response::new(full("done"))
        }
    })
    .await;
    let m = service("app", &[b.addr]) + &limited_route("conn", "{limitConn: {conn: 1}}", None);
    let gw = TestGateway::start(&m).await;
    let addr = gw.http();
    let slow = tokio::spawn(async move { get(addr, "conn.test", "/slow").await.status });
    // Once the slow request is at the backend, it holds the one slot.
    arrived.recv().await.unwrap();
    let r = get(addr, "conn.test", "/").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    release.send(true).unwrap();
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    // The slot is free again once the response is done.
    assert_eq!(get(addr, "conn.test", "/").await.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn ingress_nginx_rate_annotations_apply_per_client() {
    let b = Backend::named("app").await;
    let m = service("app", &[b.addr])
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/limit-rps: "1"
    nginx.ingress.kubernetes.io/limit-burst-multiplier: "2"
spec:
  ingressClassName: sluicegate
  rules:
  - host: web.test
    http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
      - {path: /b, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
"#;
    let gw = TestGateway::start(&m).await;
    // Rate 1/s with a burst of 2, shared by the Ingress's paths.
    let mut seen = Vec::new();
    for path in ["/a", "/b", "/a", "/b"] {
        seen.push(get(gw.http(), "web.test", path).await.status.as_u16());
    }
    assert_eq!(seen, [200, 200, 200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_plugin_settings_keep_only_their_route_out() {
    let b = Backend::named("app").await;
    let m = service("app", &[b.addr])
        + &plugin_config("broken", "{limitReq: {rate: 0}}")
        + &limited_route(
            "bad-inline",
            "{limitCount: {count: 1, timeWindow: 1s, key: {type: Template, template: \"{nope}\"}}}",
            None,
        )
        + &limited_route("bad-ref", "", Some("broken"))
        + &limited_route("fine", "{limitCount: {count: 5, timeWindow: 1h}}", None);
    let gw = TestGateway::start(&m).await;
    assert_eq!(
        get(gw.http(), "bad-inline.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(gw.http(), "bad-ref.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(gw.http(), "fine.test", "/").await.status,
        StatusCode::OK
    );
    let routes = admin_get(&gw, "/routes").await.text();
    for needle in [
        "spec.routes[0].plugins.limitCount.key.template",
        "unknown variable {nope}",
        "spec.plugins.limitReq.rate",
        "PluginConfig default/broken is invalid",
    ] {
        assert!(routes.contains(needle), "{needle}: {routes}");
    }
    gw.shutdown().await;
}
