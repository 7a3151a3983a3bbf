//! Bad cache settings: the route is not served, the diagnostic names the
//! object and the field, and other routes are untouched; a global
//! `proxyCache` applies to routes without their own.

use http::StatusCode;

use crate::cache::{Env, Store, cached_route, fetch, response, status_of, until_hit};
use crate::common::wire::Capture;
use crate::common::*;

#[tokio::test]
async fn bad_settings_name_their_field_and_spare_other_routes() {
    let env = Env::new(Store::Memory).await;
    let app = Capture::with(|_| response("200 OK", &["cache-control: max-age=60"], "ok")).await;
    let m = service("app", &[app.addr])
        + &cached_route("good", Store::Memory, "", "")
        // No --cache-redis-url on this gateway.
        + &cached_route("shared", Store::Redis, "", "")
        + &cached_route("typo", Store::Memory, "key: [\"$host$requesturi\"]", "");
    let gw = env.gateway(&m).await;
    assert_eq!(
        fetch(&gw, "good.test", "/", &[]).await.status,
        StatusCode::OK
    );
    for host in ["shared.test", "typo.test"] {
        assert_eq!(
            fetch(&gw, host, "/", &[]).await.status,
            StatusCode::NOT_FOUND,
            "{host}: not served"
        );
    }
    let routes: serde_json::Value =
        serde_json::from_slice(&admin_get(&gw, "/routes").await.body).unwrap();
    let diags = routes["diagnostics"].as_array().unwrap();
    let find = |name: &str| {
        diags
            .iter()
            .find(|d| d["object"]["name"] == name)
            .unwrap_or_else(|| panic!("no diagnostic for {name}: {diags:?}"))
    };
    let shared = find("shared");
    assert_eq!(shared["field"], "spec.routes[0].plugins.proxyCache.storage");
    assert!(
        shared["message"]
            .as_str()
            .unwrap()
            .contains("--cache-redis-url"),
        "{shared}"
    );
    let typo = find("typo");
    assert_eq!(typo["field"], "spec.routes[0].plugins.proxyCache.key[0]");
    assert!(
        typo["message"].as_str().unwrap().contains("$requesturi"),
        "{typo}"
    );
    assert_eq!(diags.len(), 2, "{diags:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_global_cache_applies_to_routes_without_their_own() {
    let env = Env::new(Store::Memory).await;
    let app =
        Capture::with(|r| response("200 OK", &["cache-control: max-age=60"], &r.line())).await;
    let m = service("app", &[app.addr])
        + r#"---
apiVersion: sluicegate.io/v1alpha1
kind: PluginConfig
metadata: {name: everywhere, namespace: default}
spec:
  plugins: {proxyCache: {key: ["$uri"]}}
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: plain, namespace: default}
spec:
  hosts: ["plain.test"]
  routes:
  - name: all
    backends: [{serviceName: app, servicePort: 80}]
"# + &cached_route("own", Store::Memory, "methods: [HEAD]", "");
    let mut config = env.config();
    config.translate.global_plugins = Some(sluicegate::translate::ObjectKey::new(
        "default",
        "everywhere",
    ));
    let gw = TestGateway::start_with(&m, config).await;
    // The global key ignores the query.
    assert_eq!(
        fetch(&gw, "plain.test", "/g?a=1", &[]).await.text(),
        "GET /g?a=1 HTTP/1.1"
    );
    assert_eq!(
        until_hit(&gw, "plain.test", "/g?a=2", &[]).await.text(),
        "GET /g?a=1 HTTP/1.1"
    );
    // A route's own proxyCache replaces the global one: GET is not cached there.
    for _ in 0..2 {
        assert_eq!(
            status_of(&fetch(&gw, "own.test", "/", &[]).await),
            "sluicegate; fwd=bypass"
        );
    }
    assert_eq!(app.count(), 3);
    gw.shutdown().await;
}
