//! Canary releases through the real proxy, with a main and a canary
//! backend on loopback: ingress-nginx canary Ingresses (weight, header
//! `always` / `never`, header value, cookie, and their precedence) and an
//! ApiRoute that routes by cookie.

use crate::common;

use common::*;
use http::StatusCode;

const MAIN: &str = "main";
const CANARY: &str = "canary";

fn ingress(name: &str, annotations: &[(&str, &str)], paths: &[(&str, &str)]) -> String {
    let mut notes = String::new();
    if !annotations.is_empty() {
        notes.push_str("\n  annotations:");
    }
    for (k, v) in annotations {
        notes.push_str(&format!("\n    {k}: \"{v}\""));
    }
    let mut list = String::new();
    for (path, service) in paths {
        list.push_str(&format!(
            "\n      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}"
        ));
    }
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default{notes}
spec:
  ingressClassName: sluicegate
  rules:
  - host: canary.test
    http:
      paths:{list}
"#
    )
}

/// Which backend answered `n` GETs of `path` with `headers`: (main,
/// canary) counts. Anything else fails the test.
async fn count(gw: &TestGateway, path: &str, headers: &[(&str, &str)], n: usize) -> (usize, usize) {
    let (mut main, mut canary) = (0, 0);
    for _ in 0..n {
        let r = request(gw.http(), "GET", "canary.test", path, headers).await;
        assert_eq!(r.status, StatusCode::OK, "{path} {headers:?}: {}", r.text());
        match r.text().as_str() {
            MAIN => main += 1,
            CANARY => canary += 1,
            other => panic!("unexpected backend {other:?}"),
        }
    }
    (main, canary)
}

async fn gateway(main: &Backend, canary: &Backend) -> TestGateway {
    let n = "nginx.ingress.kubernetes.io";
    let m = service("web", &[main.addr])
        + &service("web-canary", &[canary.addr])
        + &ingress(
            "shop",
            &[],
            &[("/", "web"), ("/api", "web"), ("/value", "web")],
        )
        + &ingress(
            "shop-canary",
            &[
                (&format!("{n}/canary"), "true"),
                (&format!("{n}/canary-weight"), "20"),
                (&format!("{n}/canary-by-header"), "X-Canary"),
                (&format!("{n}/canary-by-cookie"), "canary"),
            ],
            &[("/", "web-canary")],
        )
        + &ingress(
            "value-canary",
            &[
                ("sluicegate.io/canary", "true"),
                ("sluicegate.io/canary-by-header", "X-Version"),
                ("sluicegate.io/canary-by-header-value", "v2"),
            ],
            &[("/value", "web-canary")],
        )
        + r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: cookies, namespace: default}
spec:
  hosts: ["cookies.test"]
  routes:
  - name: beta
    match:
      cookies: [{name: beta, type: Exact, value: "1"}]
    backends: [{serviceName: web-canary, servicePort: 80}]
  - name: testers
    match:
      paths: [{value: /present}]
      cookies: [{name: tester, type: Present}]
    backends: [{serviceName: web-canary, servicePort: 80}]
  - name: everyone
    backends: [{serviceName: web, servicePort: 80}]
"#;
    TestGateway::start(&m).await
}

#[tokio::test]
async fn ingress_canary_by_weight_header_and_cookie() {
    let main = Backend::named(MAIN).await;
    let canary = Backend::named(CANARY).await;
    let gw = gateway(&main, &canary).await;

    // Weight 20 of 100: about a fifth, on one keep-alive connection.
    let mut conn = Conn::open(gw.http()).await.unwrap();
    let mut to_canary = 0;
    let n = 500;
    for _ in 0..n {
        let r = conn.get("canary.test", "/x").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        if r.text() == CANARY {
            to_canary += 1;
        }
    }
    assert!(
        (75..=125).contains(&to_canary),
        "{to_canary} of {n} requests went to the canary; expected about 20%"
    );

    // The header rule comes first: `always` and `never` decide alone,
    // whatever the cookie says; other values fall through.
    assert_eq!(
        count(&gw, "/x", &[("x-canary", "always")], 20).await,
        (0, 20)
    );
    assert_eq!(
        count(&gw, "/x", &[("x-canary", "never")], 20).await,
        (20, 0)
    );
    let never_with_cookie = [("x-canary", "never"), ("cookie", "canary=always")];
    assert_eq!(count(&gw, "/x", &never_with_cookie, 10).await, (10, 0));
    let always_with_cookie = [("x-canary", "always"), ("cookie", "canary=never")];
    assert_eq!(count(&gw, "/x", &always_with_cookie, 10).await, (0, 10));
    let (_, canary_share) = count(&gw, "/x", &[("x-canary", "maybe")], 50).await;
    assert!(
        (5..=15).contains(&canary_share),
        "another header value falls through to the weight: {canary_share} of 50"
    );

    // Then the cookie rule.
    let cookie = [("cookie", "session=1; canary=always")];
    assert_eq!(count(&gw, "/x", &cookie, 20).await, (0, 20));
    assert_eq!(
        count(&gw, "/x", &[("cookie", "canary=never")], 20).await,
        (20, 0)
    );
    let split = [("cookie", "session=1"), ("cookie", "canary=always")];
    assert_eq!(count(&gw, "/x", &split, 5).await, (0, 5));
    let header_falls_to_cookie = [("x-canary", "maybe"), ("cookie", "canary=always")];
    assert_eq!(count(&gw, "/x", &header_falls_to_cookie, 5).await, (0, 5));

    // A more specific path of the main Ingress has no canary.
    let all_canary = [("x-canary", "always"), ("cookie", "canary=always")];
    assert_eq!(count(&gw, "/api/x", &all_canary, 10).await, (10, 0));

    gw.shutdown().await;
}

#[tokio::test]
async fn ingress_canary_by_header_value_and_apiroute_cookies() {
    let main = Backend::named(MAIN).await;
    let canary = Backend::named(CANARY).await;
    let gw = gateway(&main, &canary).await;

    // Only the named value goes to the canary; `always` means nothing
    // here, and without a weight nothing else does.
    assert_eq!(
        count(&gw, "/value", &[("x-version", "v2")], 10).await,
        (0, 10)
    );
    assert_eq!(
        count(&gw, "/value", &[("x-version", "v1")], 10).await,
        (10, 0)
    );
    assert_eq!(
        count(&gw, "/value", &[("x-version", "always")], 10).await,
        (10, 0)
    );
    assert_eq!(count(&gw, "/value", &[], 10).await, (10, 0));

    // ApiRoute match.cookies.
    let addr = gw.http();
    let on = |path: &'static str, headers: &'static [(&'static str, &'static str)]| async move {
        let r = request(addr, "GET", "cookies.test", path, headers).await;
        assert_eq!(r.status, StatusCode::OK);
        r.text()
    };
    assert_eq!(on("/", &[("cookie", "beta=1")]).await, CANARY);
    assert_eq!(on("/", &[("cookie", "a=b; beta=1; c=d")]).await, CANARY);
    assert_eq!(
        on("/", &[("cookie", "a=b"), ("cookie", "beta=1")]).await,
        CANARY
    );
    assert_eq!(on("/", &[("cookie", "beta=2")]).await, MAIN);
    assert_eq!(on("/", &[("cookie", "Beta=1")]).await, MAIN);
    assert_eq!(on("/", &[("beta", "1")]).await, MAIN);
    assert_eq!(on("/", &[]).await, MAIN);
    assert_eq!(on("/present", &[("cookie", "tester=")]).await, CANARY);
    assert_eq!(on("/present", &[("cookie", "x=1")]).await, MAIN);

    gw.shutdown().await;
}
