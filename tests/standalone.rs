//! Standalone mode: live edits, broken files, hot swaps under load, the
//! admin server and graceful shutdown.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use http::{Response, StatusCode};

fn route_to(name: &str, service: &str, weight_line: &str) -> String {
    format!(
        r#"apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}}}
spec:
  hosts: [{name}.test]
  routes:
  - name: r
    backends: [{{serviceName: {service}, servicePort: 80{weight_line}}}]
"#
    )
}

#[tokio::test]
async fn edits_apply_live_and_broken_files_keep_the_last_good_config() {
    let blue = Backend::named("blue").await;
    let green = Backend::named("green").await;
    let mut services = service("blue", &[blue.addr]);
    services.push_str(&service("green", &[green.addr]));
    let gw = TestGateway::start(&services).await;
    gw.write("route.yaml", &route_to("app", "blue", "")).await;
    assert_eq!(get(gw.http(), "app.test", "/").await.text(), "blue");

    // A live edit takes effect within the poll interval.
    let t = Instant::now();
    gw.write("route.yaml", &route_to("app", "green", "")).await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "applied in {:?}",
        t.elapsed()
    );
    assert_eq!(get(gw.http(), "app.test", "/").await.text(), "green");

    // A YAML syntax error: the file's previous version keeps serving.
    gw.write(
        "route.yaml",
        "apiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {name: app\n",
    )
    .await;
    assert_eq!(get(gw.http(), "app.test", "/").await.text(), "green");
    let view = admin_get(&gw, "/routes").await.text();
    assert!(view.contains("route.yaml"), "{view}");
    assert!(view.contains("invalid YAML"), "{view}");
    assert!(view.contains("last good version keeps serving"), "{view}");

    // A schema error names document, object and field.
    let bad = route_to("app", "blue", ", weight: -1");
    gw.write("route.yaml", &bad).await;
    assert_eq!(get(gw.http(), "app.test", "/").await.text(), "green");
    let view = admin_get(&gw, "/routes").await.text();
    assert!(
        view.contains("document 1 (ApiRoute app) field spec.routes[0].backends[0].weight"),
        "{view}"
    );

    // Another file still applies while this one is broken.
    gw.write("other.yaml", &route_to("other", "blue", "")).await;
    assert_eq!(get(gw.http(), "other.test", "/").await.text(), "blue");
    assert_eq!(get(gw.http(), "app.test", "/").await.text(), "green");

    // Fixing the file applies it; deleting it removes its routes.
    gw.write("route.yaml", &route_to("app", "blue", "")).await;
    assert_eq!(get(gw.http(), "app.test", "/").await.text(), "blue");
    let before = gw.generation();
    std::fs::remove_file(gw.dir.path().join("route.yaml")).unwrap();
    gw.wait_generation_after(before).await;
    assert_eq!(
        get(gw.http(), "app.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_object_is_reported_and_does_not_affect_others() {
    let b = Backend::named("ok").await;
    let mut m = service("ok", &[b.addr]);
    m.push_str("---\n");
    m.push_str(&route_to("good", "ok", ""));
    m.push_str(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: bad}
spec:
  hosts: [good.test]
  routes:
  - name: broken
    match: {paths: [{type: RegularExpression, value: "/(unclosed"}]}
    backends: [{serviceName: ok, servicePort: 80}]
"#,
    );
    let gw = TestGateway::start(&m).await;
    assert_eq!(get(gw.http(), "good.test", "/x").await.text(), "ok");
    let view = admin_get(&gw, "/routes").await.text();
    let json: serde_json::Value = serde_json::from_str(&view).unwrap();
    let diags = json["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 1, "{view}");
    assert_eq!(diags[0]["object"]["name"], "bad");
    assert_eq!(diags[0]["field"], "spec.routes[0].match.paths[0].value");
    assert_eq!(diags[0]["reason"], "InvalidSpec");
    gw.shutdown().await;
}

/// How a churn test rewrites the manifest.
#[derive(Clone, Copy)]
enum Rewrite {
    /// Write a temporary file and rename it over the manifest.
    Rename,
    /// Truncate and rewrite the manifest itself, which briefly leaves it
    /// empty or half written.
    InPlace,
}

async fn churn_under_load(rewrite: Rewrite) {
    let blue = Backend::named("blue").await;
    let green = Backend::named("green").await;
    let mut services = service("blue", &[blue.addr]);
    services.push_str(&service("green", &[green.addr]));
    let gw = TestGateway::start_with(&services, test_config(2)).await;
    gw.write("route.yaml", &route_to("churn", "blue", "")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, addr) = (stop.clone(), ok.clone(), gw.http());
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match conn.get("churn.test", "/").await {
                    Ok(r) if r.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => panic!("status {} body {}", r.status, r.text()),
                    Err(e) => panic!("request failed: {e}"),
                };
            }
        }));
    }
    // Several changes a second for four seconds: alternate the backend and add
    // unrelated routes so that every table differs.
    let first = gw.generation();
    let path = gw.dir.path().join("route.yaml");
    for i in 0..30 {
        let svc = if i % 2 == 0 { "green" } else { "blue" };
        let mut text = route_to("churn", svc, "");
        text.push_str(&format!("---\n{}", route_to(&format!("extra{i}"), svc, "")));
        match rewrite {
            Rewrite::Rename => write_atomic(&path, &text),
            Rewrite::InPlace => {
                use std::io::Write;
                // Truncate, pause, write: a reader in between sees an
                // empty file, which is a valid manifest with no routes.
                let mut f = std::fs::File::create(&path).unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
                f.write_all(text.as_bytes()).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let applied = gw.generation() - first;
    assert!(applied >= 10, "only {applied} tables applied");
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "load too light: {}",
        ok.load(Ordering::Relaxed)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn zero_failures_while_config_changes_ten_times_a_second() {
    churn_under_load(Rewrite::Rename).await;
}

#[tokio::test]
async fn zero_failures_while_the_manifest_is_rewritten_in_place() {
    churn_under_load(Rewrite::InPlace).await;
}

#[tokio::test]
async fn in_flight_request_finishes_on_the_table_it_started_with() {
    let slow = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Response::new(full("slow done"))
    })
    .await;
    let gw = TestGateway::start(&service("slow", &[slow.addr])).await;
    gw.write("route.yaml", &route_to("inflight", "slow", ""))
        .await;
    let addr = gw.http();
    let pending = tokio::spawn(async move { get(addr, "inflight.test", "/").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Remove the route while the request is running.
    gw.write("route.yaml", "").await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "slow done");
    assert_eq!(
        get(addr, "inflight.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_reports_health_readiness_routes_and_metrics() {
    let b = Backend::named("m").await;
    let mut m = service("m", &[b.addr]);
    m.push_str("---\n");
    m.push_str(&route_to("metrics", "m", ""));
    let gw = TestGateway::start(&m).await;
    assert_eq!(admin_get(&gw, "/healthz").await.status, StatusCode::OK);
    assert_eq!(admin_get(&gw, "/readyz").await.status, StatusCode::OK);
    for _ in 0..3 {
        get(gw.http(), "metrics.test", "/").await;
    }
    get(gw.http(), "unknown.test", "/").await;
    let routes: serde_json::Value =
        serde_json::from_str(&admin_get(&gw, "/routes").await.text()).unwrap();
    assert_eq!(
        routes["table"]["routes"][0]["name"],
        "apiroute/default/metrics/r"
    );
    assert_eq!(
        routes["table"]["upstreams"]["default/m:80"]["endpoints"][0],
        b.addr.to_string()
    );
    let metrics = admin_get(&gw, "/metrics").await.text();
    assert!(
        metrics.contains(
            r#"sluicegate_requests_total{route="apiroute/default/metrics/r",status="2xx"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="unmatched",status="4xx"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"sluicegate_request_duration_seconds_bucket{route="apiroute/default/metrics/r""#
        ),
        "{metrics}"
    );
    assert_eq!(admin_get(&gw, "/nope").await.status, StatusCode::NOT_FOUND);
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let slow = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Response::new(full("finished"))
    })
    .await;
    let mut m = service("slow", &[slow.addr]);
    m.push_str("---\n");
    m.push_str(&route_to("drain", "slow", ""));
    let gw = TestGateway::start(&m).await;
    let addr = gw.http();
    let pending = tokio::spawn(async move { get(addr, "drain.test", "/").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    gw.shutdown().await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "finished");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
