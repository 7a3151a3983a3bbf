//! The Gateway API in Kubernetes mode: the real controller against the
//! API-server double, with the Gateway API's kinds served or not. Status
//! is checked as the double stores it after the controller's server-side
//! apply patches: per parent of each route, with the entries of other
//! controllers left alone.

use crate::apiserver;
use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use apiserver::ApiServer;
use common::{Backend, test_config};
use serde_json::{Value, json};
use sluicegate::controller::{Controller, ControllerConfig, Publish};
use sluicegate::source::kube::WatchScope;

const WAIT: Duration = Duration::from_secs(10);
const GROUP: &str = "gateway.networking.k8s.io";
const V1: &str = "gateway.networking.k8s.io/v1";

fn free_port() -> u16 {
    common::listener_port()
}

fn config(publish: Publish) -> ControllerConfig {
    ControllerConfig {
        gateway: test_config(1),
        scope: WatchScope {
            rediscover: Duration::from_millis(200),
            ..WatchScope::default()
        },
        publish,
        lease: None,
        instance: Some("test".into()),
    }
}

fn seed_backend(api: &ApiServer, ns: &str, name: &str, backend: SocketAddr) {
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}]
    }));
}

fn class() -> Value {
    json!({
        "apiVersion": V1, "kind": "GatewayClass",
        "metadata": {"name": "sluicegate"},
        "spec": {"controllerName": "sluicegate.io/gateway-controller"}
    })
}

fn gateway(port: u16) -> Value {
    json!({
        "apiVersion": V1, "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "infra"},
        "spec": {"gatewayClassName": "sluicegate", "listeners": [
            {"name": "web", "port": port, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]}
    })
}

fn route(parents: Value, status: Option<Value>) -> Value {
    let mut r = json!({
        "apiVersion": V1, "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "parentRefs": parents,
            "hostnames": ["shop.example.com"],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]
        }
    });
    if let Some(s) = status {
        r["status"] = s;
    }
    r
}

fn conditions(obj: &Value) -> Vec<(String, String, String, i64)> {
    obj["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or("").to_owned(),
                c["status"].as_str().unwrap_or("").to_owned(),
                c["reason"].as_str().unwrap_or("").to_owned(),
                c["observedGeneration"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn cond<'a>(
    list: &'a [(String, String, String, i64)],
    t: &str,
) -> Option<&'a (String, String, String, i64)> {
    list.iter().find(|c| c.0 == t)
}

async fn get_until(port: u16, host: &str, ok: impl Fn(u16) -> bool) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let status = match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => common::get(addr, host, "/").await.status.as_u16(),
            Err(_) => 0,
        };
        if ok(status) || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serves_without_the_gateway_api_and_picks_it_up_once_installed() {
    let api = ApiServer::start().await;
    api.hide_group(GROUP, true);
    let backend = Backend::named("web").await;
    seed_backend(&api, "shop", "web", backend.addr);
    api.apply(json!({
        "apiVersion": "sluicegate.io/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"hosts": ["api.example.com"], "routes": [{"name": "all",
            "backends": [{"serviceName": "web", "servicePort": 80}]}]}
    }));
    let port = free_port();
    api.apply(class());
    api.apply(gateway(port));
    api.apply(route(json!([{"name": "edge", "namespace": "infra"}]), None));
    let c = Controller::start(config(Publish::Nothing), api.client())
        .await
        .unwrap();
    // The ApiRoute is served, and the controller is ready, without the
    // Gateway API.
    let http = c.gateway().http_addr();
    let deadline = tokio::time::Instant::now() + WAIT;
    while common::get(http, "api.example.com", "/").await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ApiRoute not served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = common::get(c.gateway().admin_addr(), "admin", "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path.contains("/gateways") || r.path.contains("/httproutes")),
        "Gateway API resources were requested while their CRDs were absent"
    );
    // Installed later: found by the next look-up, and served.
    api.hide_group(GROUP, false);
    assert_eq!(get_until(port, "shop.example.com", |s| s == 200).await, 200);
    c.shutdown().await;
}

#[tokio::test]
async fn status_is_written_per_parent_by_server_side_apply() {
    let api = ApiServer::start().await;
    let backend = Backend::named("web").await;
    seed_backend(&api, "shop", "web", backend.addr);
    let port = free_port();
    api.apply(class());
    api.apply(gateway(port));
    // Another controller's entry for a parent of its own is already there.
    let theirs = json!({
        "parentRef": {"group": GROUP, "kind": "Gateway", "name": "theirs", "namespace": "infra"},
        "controllerName": "example.com/other",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
            "message": "theirs", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1}]
    });
    api.apply(route(
        json!([
            {"name": "edge", "namespace": "infra", "sectionName": "web"},
            {"name": "edge", "namespace": "infra", "sectionName": "nope"},
            {"name": "theirs", "namespace": "infra"}
        ]),
        Some(json!({"parents": [theirs.clone()]})),
    ));
    let c = Controller::start(
        config(Publish::Addresses(vec![
            "192.0.2.10".into(),
            "lb.example.com".into(),
        ])),
        api.client(),
    )
    .await
    .unwrap();
    assert_eq!(get_until(port, "shop.example.com", |s| s == 200).await, 200);

    let route_status = |api: &ApiServer| {
        api.get(V1, "HTTPRoute", Some("shop"), "web")
            .map(|r| r["status"].clone())
            .unwrap_or_default()
    };
    assert!(
        api.wait_for(
            |a| route_status(a)["parents"]
                .as_array()
                .is_some_and(|p| p.len() == 3),
            WAIT
        )
        .await,
        "route status: {}",
        route_status(&api)
    );
    let status = route_status(&api);
    let parents = status["parents"].as_array().unwrap();
    assert_eq!(
        parents[0], theirs,
        "another controller's entry is kept as it was"
    );
    assert_eq!(
        parents[1]["controllerName"],
        "sluicegate.io/gateway-controller"
    );
    assert_eq!(parents[1]["parentRef"]["name"], "edge");
    let ok = conditions(&parents[1]);
    assert_eq!(
        cond(&ok, "Accepted").map(|c| (c.1.as_str(), c.2.as_str(), c.3)),
        Some(("True", "Accepted", 1))
    );
    assert_eq!(
        cond(&ok, "ResolvedRefs").map(|c| c.1.as_str()),
        Some("True")
    );
    assert_eq!(parents[2]["parentRef"]["sectionName"], "nope");
    let bad = conditions(&parents[2]);
    assert_eq!(
        cond(&bad, "Accepted").map(|c| (c.1.as_str(), c.2.as_str())),
        Some(("False", "NoMatchingParent"))
    );

    let gw = api.get(V1, "Gateway", Some("infra"), "edge").unwrap();
    let g = conditions(&gw["status"]);
    assert_eq!(cond(&g, "Accepted").map(|c| c.1.as_str()), Some("True"));
    assert_eq!(cond(&g, "Programmed").map(|c| c.1.as_str()), Some("True"));
    assert_eq!(
        gw["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "192.0.2.10"}, {"type": "Hostname", "value": "lb.example.com"}])
    );
    let listener = &gw["status"]["listeners"][0];
    assert_eq!(listener["name"], "web");
    assert_eq!(listener["attachedRoutes"], 1);
    assert_eq!(
        listener["supportedKinds"],
        json!([{"group": GROUP, "kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}])
    );
    let class = api.get(V1, "GatewayClass", None, "sluicegate").unwrap();
    assert_eq!(
        cond(&conditions(&class["status"]), "Accepted").map(|c| c.1.as_str()),
        Some("True")
    );

    // Every write was a server-side apply of the status subresource, by
    // the field manager `sluicegate`.
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains(GROUP))
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        assert!(w.path.ends_with("/status"), "{}", w.path);
        assert_eq!(w.content_type, "application/apply-patch+yaml");
        assert_eq!(w.param("fieldManager").as_deref(), Some("sluicegate"));
        assert_eq!(w.param("force").as_deref(), Some("true"));
    }

    // A new generation of the route: the conditions follow it.
    let mut changed = route(json!([{"name": "edge", "namespace": "infra"}]), None);
    changed["spec"]["hostnames"] = json!(["shop.example.com", "www.example.com"]);
    api.apply(changed);
    assert!(
        api.wait_for(
            |a| {
                let s = route_status(a);
                let p = s["parents"].as_array().cloned().unwrap_or_default();
                // Ours for the removed parent is gone; theirs stays.
                p.len() == 2 && p[1]["conditions"][0]["observedGeneration"] == 2
            },
            WAIT
        )
        .await,
        "route status after the change: {}",
        route_status(&api)
    );
    assert_eq!(get_until(port, "www.example.com", |s| s == 200).await, 200);
    c.shutdown().await;
}

#[tokio::test]
async fn a_route_that_leaves_our_gateways_loses_our_status_entries() {
    let api = ApiServer::start().await;
    let backend = Backend::named("web").await;
    seed_backend(&api, "shop", "web", backend.addr);
    let port = free_port();
    api.apply(class());
    api.apply(gateway(port));
    api.apply(route(json!([{"name": "edge", "namespace": "infra"}]), None));
    let c = Controller::start(config(Publish::Nothing), api.client())
        .await
        .unwrap();
    let parents = |a: &ApiServer| {
        a.get(V1, "HTTPRoute", Some("shop"), "web")
            .and_then(|r| r["status"]["parents"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    assert!(api.wait_for(|a| parents(a) == 1, WAIT).await);
    // Now it names only a Gateway Sluicegate does not have.
    api.apply(route(
        json!([{"name": "elsewhere", "namespace": "infra"}]),
        None,
    ));
    assert!(
        api.wait_for(|a| parents(a) == 0, WAIT).await,
        "stale entry kept"
    );
    assert_eq!(get_until(port, "shop.example.com", |s| s == 404).await, 404);
    c.shutdown().await;
}

/// Kubernetes mode's side of the listener target: a listener on a new
/// port is served soon after the Gateway changes, and a keep-alive
/// connection to the Gateway's other port is not touched by the change.
/// The delay printed is recorded in docs/benchmarks.md.
#[tokio::test]
async fn a_new_listener_port_is_served_and_other_connections_are_kept() {
    let api = ApiServer::start().await;
    let backend = Backend::named("web").await;
    seed_backend(&api, "shop", "web", backend.addr);
    let (first, second) = (free_port(), free_port());
    api.apply(class());
    api.apply(gateway(first));
    api.apply(route(json!([{"name": "edge", "namespace": "infra"}]), None));
    let c = Controller::start(config(Publish::Nothing), api.client())
        .await
        .unwrap();
    assert_eq!(
        get_until(first, "shop.example.com", |s| s == 200).await,
        200
    );
    let mut kept = common::Conn::open(SocketAddr::from(([127, 0, 0, 1], first)))
        .await
        .unwrap();
    let before = kept.get("shop.example.com", "/").await.unwrap();
    assert_eq!(before.status, 200);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", second))
            .await
            .is_err()
    );

    let mut two = gateway(first);
    two["spec"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "web2", "port": second, "protocol": "HTTP",
                     "allowedRoutes": {"namespaces": {"from": "All"}}}));
    let changed = std::time::Instant::now();
    api.apply(two);
    let status = get_until(second, "shop.example.com", |s| s == 200).await;
    let served = changed.elapsed();
    assert_eq!(status, 200, "the new listener's port never served");
    println!(
        "new listener port served {} ms after the Gateway changed (polled every 20 ms)",
        served.as_millis()
    );
    let after = kept
        .get("shop.example.com", "/")
        .await
        .expect("the first port's connection survives the change");
    assert_eq!(after.status, 200);
    assert_eq!(after.text(), "web");
    c.shutdown().await;
}
