//! Kubernetes mode end to end: the real controller, its real proxy and
//! real backends, against an API-server double that speaks the HTTP API
//! the way kube-rs uses it (list, watch, bookmarks, 410 Gone, server-side
//! apply, Leases, Events).

use crate::apiserver;
use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use apiserver::ApiServer;
use common::{Backend, test_config};
use http::StatusCode;
use serde_json::{Value, json};
use sluicegate::controller::{Controller, ControllerConfig, Publish};
use sluicegate::source::kube::WatchScope;
use sluicegate::status::lease::LeaseConfig;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn service(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    })
}

/// The one EndpointSlice of Service `svc`, with its endpoints on the
/// loopback ports of `backends` (all on one port: a slice has one port
/// per name).
pub(crate) fn slice(ns: &str, svc: &str, backend: SocketAddr, ready: bool) -> Value {
    slice_named(ns, svc, &format!("{svc}-abc"), backend, ready)
}

/// Another slice of the same Service: each slice names its own port, so
/// two loopback backends on different ports can serve one Service.
fn slice_named(ns: &str, svc: &str, name: &str, backend: SocketAddr, ready: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": ready}}]
    })
}

pub(crate) fn ingress(ns: &str, name: &str, host: &str, svc: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ingressClassName": "sluicegate", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}
    })
}

fn api_route(ns: &str, name: &str, host: &str, svc: &str, extra: Value) -> Value {
    let mut route = json!({
        "name": "main",
        "match": {"paths": [{"type": "Prefix", "value": "/"}]},
        "backends": [{"serviceName": svc, "servicePort": 80}]
    });
    if let (Some(r), Some(e)) = (route.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    json!({
        "apiVersion": "sluicegate.io/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [host], "routes": [route]}
    })
}

/// Service `shop/web` with one endpoint, and ApiRoute `shop/web` sending
/// `shop.test` to it.
fn seed(api: &ApiServer, backend: SocketAddr) {
    api.apply(service("shop", "web"));
    api.apply(slice("shop", "web", backend, true));
    api.apply(api_route("shop", "web", "shop.test", "web", json!({})));
}

pub(crate) fn config(publish: Publish, lease: Option<LeaseConfig>) -> ControllerConfig {
    ControllerConfig {
        gateway: test_config(1),
        scope: WatchScope::default(),
        publish,
        lease,
        instance: Some("test".into()),
    }
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: "sluicegate-system".into(),
        name: "sluicegate-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    }
}

async fn admin(c: &Controller, path: &str) -> StatusCode {
    let addr = c.gateway().admin_addr();
    common::get(addr, "admin", path).await.status
}

/// GETs `host/` until the reply satisfies `ok`; returns the last body.
pub(crate) async fn until(
    c: &Controller,
    host: &str,
    ok: impl Fn(StatusCode, &str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = common::get(c.gateway().http_addr(), host, "/").await;
        let text = r.text();
        if ok(r.status, &text) || tokio::time::Instant::now() > deadline {
            return format!("{} {}", r.status.as_u16(), text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until ApiRoute `shop/NAME` carries a `Ready` condition.
async fn has_status(api: &ApiServer, name: &str) -> bool {
    api.wait_for(
        |a| {
            a.get("sluicegate.io/v1alpha1", "ApiRoute", Some("shop"), name)
                .is_some_and(|o| condition(&o, "Ready").is_some())
        },
        WAIT,
    )
    .await
}

fn status_patches(api: &ApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
        .count()
}

#[tokio::test]
async fn ingress_serves_endpoints_and_gets_its_address() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    api.apply(service("shop", "web"));
    api.apply(slice("shop", "web", blue.addr, true));
    api.apply(ingress("shop", "web", "shop.test", "web"));
    let c = Controller::start(
        config(Publish::Addresses(vec!["203.0.113.7".into()]), None),
        api.client(),
    )
    .await
    .unwrap();
    assert_eq!(
        until(&c, "shop.test", |s, _| s == StatusCode::OK).await,
        "200 blue"
    );
    assert_eq!(admin(&c, "/readyz").await, StatusCode::OK);
    let ok = api
        .wait_for(
            |a| {
                a.get("networking.k8s.io/v1", "Ingress", Some("shop"), "web")
                    .is_some_and(|i| {
                        i["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.7"
                    })
            },
            WAIT,
        )
        .await;
    assert!(ok, "Ingress status not written");
    // Written by server-side apply, as the fixed field manager.
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path.contains("/ingresses/web/status"))
        .expect("a status patch");
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert!(
        patch.query.contains("fieldManager=sluicegate"),
        "{}",
        patch.query
    );
    c.shutdown().await;
}

#[tokio::test]
async fn endpoint_changes_apply_in_place_without_a_new_table() {
    let api = ApiServer::start().await;
    let (blue, green) = (Backend::named("blue").await, Backend::named("green").await);
    seed(&api, blue.addr);
    let c = Controller::start(config(Publish::Nothing, None), api.client())
        .await
        .unwrap();
    assert_eq!(until(&c, "shop.test", |_, b| b == "blue").await, "200 blue");
    let generation = c.gateway().publisher().view().generation;

    // Scale up: a second pod, in a second slice, gets traffic too.
    api.apply(slice_named("shop", "web", "web-def", green.addr, true));
    assert_eq!(
        until(&c, "shop.test", |_, b| b == "green").await,
        "200 green"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(
            common::get(c.gateway().http_addr(), "shop.test", "/")
                .await
                .text(),
        );
    }
    assert_eq!(seen.len(), 2, "both pods get traffic: {seen:?}");
    // The first pod goes away: it gets nothing more.
    api.delete(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        Some("shop"),
        "web-abc",
    );
    let key = sluicegate::routing::UpstreamKey::new("shop", "web", 80);
    let endpoints = || {
        c.gateway()
            .publisher()
            .registry()
            .get(&key)
            .map_or(0, |u| u.endpoints().addrs().len())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while endpoints() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deletion not applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..20 {
        let r = common::get(c.gateway().http_addr(), "shop.test", "/").await;
        assert_eq!(r.text(), "green", "a removed endpoint got traffic");
    }
    // The remaining slice is relabelled to another Service: it leaves
    // this one, which has no endpoint left.
    let mut moved = slice_named("shop", "web", "web-def", green.addr, true);
    moved["metadata"]["labels"]["kubernetes.io/service-name"] = json!("other");
    api.apply(moved);
    let r = until(&c, "shop.test", |s, _| s == StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(r.starts_with("503"), "relabelled slice still serving: {r}");
    // Back, then not ready: no endpoint at all, 503.
    api.apply(slice_named("shop", "web", "web-def", green.addr, true));
    assert_eq!(
        until(&c, "shop.test", |_, b| b == "green").await,
        "200 green"
    );
    api.apply(slice_named("shop", "web", "web-def", green.addr, false));
    let r = until(&c, "shop.test", |s, _| s == StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(r.starts_with("503"), "{r}");
    assert_eq!(
        c.gateway().publisher().view().generation,
        generation,
        "endpoint changes must not rebuild the table"
    );
    // /routes shows the live endpoints.
    let routes = common::get(c.gateway().admin_addr(), "admin", "/routes").await;
    let json: Value = serde_json::from_str(&routes.text()).unwrap();
    assert_eq!(
        json["table"]["upstreams"]["shop/web:80"]["endpoints"],
        json!([])
    );
    c.shutdown().await;
}

#[tokio::test]
async fn api_route_status_reports_acceptance_and_rejection_with_an_event() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    api.apply(service("shop", "web"));
    api.apply(slice("shop", "web", blue.addr, true));
    api.apply(api_route("shop", "good", "good.test", "web", json!({})));
    api.apply(api_route(
        "shop",
        "bad",
        "bad.test",
        "web",
        json!({"pluginConfigRef": {"name": "missing"}}),
    ));
    let c = Controller::start(config(Publish::Nothing, None), api.client())
        .await
        .unwrap();
    let get = |name: &str| {
        api.get("sluicegate.io/v1alpha1", "ApiRoute", Some("shop"), name)
            .unwrap_or(Value::Null)
    };
    let written = has_status(&api, "good").await && has_status(&api, "bad").await;
    assert!(written, "status not written");
    let good = get("good");
    for t in ["Accepted", "Programmed", "Ready"] {
        let c = condition(&good, t).unwrap();
        assert_eq!(c["status"], "True", "{t}: {c}");
        assert_eq!(c["observedGeneration"], 1);
    }
    assert_eq!(good["status"]["observedGeneration"], 1);
    let bad = get("bad");
    let accepted = condition(&bad, "Accepted").unwrap();
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "PluginConfigNotFound");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("pluginConfigRef"),
        "{accepted}"
    );
    assert_eq!(condition(&bad, "Ready").unwrap()["status"], "False");
    // The good route serves; the rejected one does not.
    assert_eq!(until(&c, "good.test", |_, b| b == "blue").await, "200 blue");
    assert_eq!(
        common::get(c.gateway().http_addr(), "bad.test", "/")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // One Warning Event on the rejected object.
    assert!(
        api.wait_for(|a| !a.events().is_empty(), WAIT).await,
        "no event"
    );
    let events = api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "PluginConfigNotFound");
    assert_eq!(e["regarding"]["name"], "bad");

    // Fixing the object flips it to accepted, for the new generation.
    let patches = status_patches(&api);
    let mut fixed = api_route("shop", "bad", "bad.test", "web", json!({}));
    fixed["metadata"]["resourceVersion"] = Value::Null;
    api.apply(fixed);
    assert!(
        api.wait_for(
            |a| a
                .get("sluicegate.io/v1alpha1", "ApiRoute", Some("shop"), "bad")
                .and_then(|o| condition(&o, "Accepted").cloned())
                .is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == 2),
            WAIT
        )
        .await
    );
    assert_eq!(until(&c, "bad.test", |_, b| b == "blue").await, "200 blue");
    // Only the changed object was written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_patches(&api), patches + 1);

    // A change elsewhere recompiles, but writes no unchanged status.
    api.apply(service("shop", "other"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_patches(&api), patches + 1);
    c.shutdown().await;
}

#[tokio::test]
async fn outage_and_expired_watches_keep_the_last_table_and_resync() {
    let api = ApiServer::start().await;
    let (blue, green) = (Backend::named("blue").await, Backend::named("green").await);
    seed(&api, blue.addr);
    let c = Controller::start(config(Publish::Nothing, None), api.client())
        .await
        .unwrap();
    assert_eq!(until(&c, "shop.test", |_, b| b == "blue").await, "200 blue");

    // The API server goes away: traffic is unaffected.
    api.set_down(true);
    for _ in 0..20 {
        let r = common::get(c.gateway().http_addr(), "shop.test", "/").await;
        assert_eq!((r.status, r.text()), (StatusCode::OK, "blue".into()));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(admin(&c, "/readyz").await, StatusCode::OK);
    // Meanwhile the cluster changes, and its history is compacted: the
    // watchers' resourceVersions are gone, so they must relist.
    api.apply(slice("shop", "web", green.addr, true));
    api.apply(api_route("shop", "new", "new.test", "web", json!({})));
    api.delete("sluicegate.io/v1alpha1", "ApiRoute", Some("shop"), "web");
    api.compact();
    api.set_down(false);

    assert_eq!(
        until(&c, "new.test", |_, b| b == "green").await,
        "200 green"
    );
    let r = until(&c, "shop.test", |s, _| s == StatusCode::NOT_FOUND).await;
    assert!(r.starts_with("404"), "deleted route still served: {r}");

    // Expired history while connected: the watch ends with 410 and the
    // watchers relist without losing anything.
    api.compact();
    api.close_watches();
    api.apply(api_route("shop", "after", "after.test", "web", json!({})));
    assert_eq!(
        until(&c, "after.test", |_, b| b == "green").await,
        "200 green"
    );
    assert_eq!(
        until(&c, "new.test", |_, b| b == "green").await,
        "200 green"
    );
    c.shutdown().await;
}

/// After a long outage every watch is back within the retry cap (5 s),
/// not after kube-runtime's default backoff (up to a minute), and
/// `/readyz` shows the failing watches meanwhile without turning red.
#[tokio::test]
async fn watches_resume_within_the_retry_cap_after_a_long_outage() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    seed(&api, blue.addr);
    let c = Controller::start(config(Publish::Nothing, None), api.client())
        .await
        .unwrap();
    assert_eq!(until(&c, "shop.test", |_, b| b == "blue").await, "200 blue");
    let readyz = || common::get(c.gateway().admin_addr(), "admin", "/readyz");
    assert!(!readyz().await.text().contains("[-]"));

    api.set_down(true);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let r = readyz().await;
    let details = r.text();
    assert_eq!(r.status, StatusCode::OK, "{details}");
    assert!(
        details.contains("[-]watch ApiRoute failing for"),
        "{details}"
    );
    assert!(details.contains("503"), "the cause is shown: {details}");
    api.apply(api_route("shop", "late", "late.test", "web", json!({})));
    api.set_down(false);
    let back = tokio::time::Instant::now();
    assert_eq!(until(&c, "late.test", |_, b| b == "blue").await, "200 blue");
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(7),
        "resumed {took:?} after the outage"
    );
    let deadline = back + WAIT;
    while readyz().await.text().contains("[-]") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            readyz().await.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

#[tokio::test]
async fn not_ready_until_every_watcher_has_listed() {
    let api = ApiServer::start().await;
    api.set_down(true);
    let c = Controller::start(config(Publish::Nothing, None), api.client())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(admin(&c, "/healthz").await, StatusCode::OK);
    assert_eq!(admin(&c, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    api.set_down(false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while admin(&c, "/readyz").await != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

async fn wait_leader(a: &Controller, b: &Controller) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        match (a.is_leader(), b.is_leader()) {
            (true, false) => return Some(true),
            (false, true) => return Some(false),
            (true, true) => panic!("two leaders"),
            (false, false) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

#[tokio::test]
async fn one_leader_writes_status_and_a_successor_takes_over() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    seed(&api, blue.addr);
    let a = Controller::start(config(Publish::Nothing, Some(lease("a"))), api.client())
        .await
        .unwrap();
    let b = Controller::start(config(Publish::Nothing, Some(lease("b"))), api.client())
        .await
        .unwrap();
    // Both serve traffic.
    assert_eq!(until(&a, "shop.test", |_, t| t == "blue").await, "200 blue");
    assert_eq!(until(&b, "shop.test", |_, t| t == "blue").await, "200 blue");
    let a_leads = wait_leader(&a, &b).await.expect("no leader");
    let lease_holder = |api: &ApiServer| {
        api.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("sluicegate-system"),
            "sluicegate-leader",
        )
        .map(|l| l["spec"]["holderIdentity"].clone())
    };
    assert_eq!(
        lease_holder(&api),
        Some(json!(if a_leads { "a" } else { "b" }))
    );
    assert!(has_status(&api, "web").await, "no status on web");
    // Both replicas agree: one status write, not two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_patches(&api), 1);

    // The leader crashes (no release): the other takes over once the
    // lease has gone unrenewed for its duration.
    let (leader, follower) = if a_leads { (a, b) } else { (b, a) };
    drop(leader);
    let started = tokio::time::Instant::now();
    while !follower.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(5), "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "took over a live lease"
    );
    // The new leader writes status: a new route gets its conditions.
    api.apply(api_route("shop", "late", "late.test", "web", json!({})));
    assert!(has_status(&api, "late").await, "no status on late");

    // A graceful shutdown hands the lease back at once.
    let c = Controller::start(config(Publish::Nothing, Some(lease("c"))), api.client())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.is_leader());
    follower.shutdown().await;
    let started = tokio::time::Instant::now();
    while !c.is_leader() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "released lease not taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
}

#[tokio::test]
async fn ingresses_show_the_published_services_addresses() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    api.apply(service("shop", "web"));
    api.apply(slice("shop", "web", blue.addr, true));
    api.apply(ingress("shop", "web", "shop.test", "web"));
    let mut lb = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "sluicegate", "namespace": "sluicegate-system"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80}]}
    });
    api.apply(lb.clone());
    let c = Controller::start(
        config(
            Publish::Service("sluicegate-system".into(), "sluicegate".into()),
            None,
        ),
        api.client(),
    )
    .await
    .unwrap();
    let shows = |want: Value| {
        let api = &api;
        async move {
            api.wait_for(
                |a| {
                    a.get("networking.k8s.io/v1", "Ingress", Some("shop"), "web")
                        .is_some_and(|i| i["status"]["loadBalancer"]["ingress"] == want)
                },
                WAIT,
            )
            .await
        }
    };
    // No load balancer address yet: the cluster IP.
    assert!(shows(json!([{"ip": "10.96.0.10"}])).await);
    // The cloud assigns addresses: they replace it.
    lb["status"] = json!({"loadBalancer": {"ingress": [
        {"ip": "198.51.100.4"}, {"hostname": "lb.example.net"}]}});
    api.apply(lb);
    assert!(
        shows(json!([{"ip": "198.51.100.4"}, {"hostname": "lb.example.net"}])).await,
        "{:?}",
        api.get("networking.k8s.io/v1", "Ingress", Some("shop"), "web")
    );
    c.shutdown().await;
}

#[tokio::test]
async fn only_watched_namespaces_and_our_class_are_served() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    for ns in ["team-a", "team-b"] {
        api.apply(service(ns, "web"));
        api.apply(slice(ns, "web", blue.addr, true));
        api.apply(ingress(ns, "web", &format!("{ns}.test"), "web"));
    }
    let mut other = ingress("team-a", "other", "other.test", "web");
    other["spec"]["ingressClassName"] = json!("nginx");
    api.apply(other);
    let mut cfg = config(Publish::Addresses(vec!["192.0.2.1".into()]), None);
    cfg.scope = WatchScope {
        namespaces: vec!["team-a".into()],
        ..WatchScope::default()
    };
    let c = Controller::start(cfg, api.client()).await.unwrap();
    assert_eq!(
        until(&c, "team-a.test", |_, b| b == "blue").await,
        "200 blue"
    );
    let addr = c.gateway().http_addr();
    assert_eq!(
        common::get(addr, "team-b.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        common::get(addr, "other.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    // Nothing outside the namespace was even listed: besides the
    // cluster-scoped kinds and the Gateway API's discovery documents, the
    // only Namespace read is team-a.
    let cluster_scoped = |r: &apiserver::Recorded| {
        r.path.contains("ingressclasses")
            || r.path.contains("gatewayclasses")
            || r.path.starts_with("/apis/gateway.networking.k8s.io/v1")
                && r.path.matches('/').count() == 3
            || r.path == "/api/v1/namespaces"
                && r.param("labelSelector").as_deref()
                    == Some("kubernetes.io/metadata.name in (team-a)")
    };
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.method == "GET" && !cluster_scoped(r))
            .all(|r| r.path.contains("/namespaces/team-a/")),
        "a request outside team-a: {:?}",
        api.requests()
            .iter()
            .filter(|r| r.method == "GET"
                && !cluster_scoped(r)
                && !r.path.contains("/namespaces/team-a/"))
            .map(|r| format!("{}?{}", r.path, r.query))
            .collect::<Vec<_>>()
    );
    // Status goes to our Ingress only.
    assert!(
        api.wait_for(
            |a| a
                .get("networking.k8s.io/v1", "Ingress", Some("team-a"), "web")
                .is_some_and(|i| !i["status"]["loadBalancer"]["ingress"].is_null()),
            WAIT
        )
        .await
    );
    let other = api
        .get("networking.k8s.io/v1", "Ingress", Some("team-a"), "other")
        .unwrap();
    assert!(
        other["status"]["loadBalancer"]["ingress"].is_null(),
        "{other}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_and_keeps_serving() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    seed(&api, blue.addr);
    let c = Controller::start(config(Publish::Nothing, Some(lease("a"))), api.client())
        .await
        .unwrap();
    assert_eq!(until(&c, "shop.test", |_, b| b == "blue").await, "200 blue");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !c.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "never leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The API server is unreachable for longer than the renew deadline:
    // the replica stops writing status before its Lease could expire for
    // others, and traffic is unaffected.
    api.set_down(true);
    let started = tokio::time::Instant::now();
    while c.is_leader() {
        assert!(started.elapsed() < Duration::from_secs(8), "still leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "stepped down early"
    );
    assert_eq!(until(&c, "shop.test", |_, b| b == "blue").await, "200 blue");
    // Back: it takes the Lease again.
    api.set_down(false);
    let started = tokio::time::Instant::now();
    while !c.is_leader() {
        assert!(started.elapsed() < WAIT, "not leader again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
}

#[tokio::test]
async fn external_name_upstreams_keep_their_dns_addresses_through_slices_and_rebuilds() {
    let api = ApiServer::start().await;
    let (one, decoy) = (Backend::named("one").await, Backend::named("decoy").await);
    let dns =
        common::dns::TestDns::start("backend.dns.test", std::net::Ipv4Addr::LOCALHOST, 300).await;
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ext", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "backend.dns.test",
                 "ports": [{"name": "http", "port": one.addr.port()}]}
    }));
    // The route's helper names port 80; use the backend's port instead.
    let mut route = api_route("shop", "ext", "ext.test", "ext", json!({}));
    route["spec"]["routes"][0]["backends"][0]["servicePort"] = json!(one.addr.port());
    api.apply(route);
    let mut cfg = config(Publish::Nothing, None);
    cfg.gateway.dns.server = Some(dns.addr);
    let c = Controller::start(cfg, api.client()).await.unwrap();
    assert_eq!(until(&c, "ext.test", |_, b| b == "one").await, "200 one");
    let key = sluicegate::routing::UpstreamKey::external(
        "shop",
        "ext",
        one.addr.port(),
        "backend.dns.test",
    );
    let endpoints = || {
        c.gateway()
            .publisher()
            .registry()
            .get(&key)
            .map(|u| u.endpoints().addrs().to_vec())
            .unwrap_or_default()
    };
    assert_eq!(endpoints(), [one.addr]);

    // A slice labelled for the ExternalName Service, then one that empties
    // out: the endpoint path of the controller leaves the upstream alone.
    let generation = c.gateway().publisher().view().generation;
    api.apply(slice("shop", "ext", decoy.addr, true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.apply(slice("shop", "ext", decoy.addr, false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.gateway().publisher().view().generation, generation);
    assert_eq!(endpoints(), [one.addr]);

    // An unrelated change rebuilds the table: the addresses stay, and the
    // name is not asked for again (its TTL has not run out).
    let asked = dns.a_queries();
    api.apply(service("shop", "other"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.gateway().publisher().view().generation == generation {
        assert!(tokio::time::Instant::now() < deadline, "no rebuild");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(endpoints(), [one.addr]);
    for _ in 0..10 {
        let r = common::get(c.gateway().http_addr(), "ext.test", "/").await;
        assert_eq!(r.text(), "one");
    }
    assert_eq!(dns.a_queries(), asked);
    c.shutdown().await;
}
