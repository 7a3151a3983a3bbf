//! ingress-nginx annotations through the real proxy: `rewrite-target`
//! with capture groups, `app-root`, `x-forwarded-prefix`, and basic
//! authentication from an htpasswd `auth-secret`.

use crate::common;

use base64::Engine;
use common::*;
use http::StatusCode;

#[tokio::test]
async fn rewrite_app_root_and_basic_auth_annotations_behave_like_ingress_nginx() {
    let b = Backend::start(|req| async move {
        let prefix = req
            .headers()
            .get("x-forwarded-prefix")
            .map_or("-", |v| v.to_str().unwrap())
            .to_owned();
        http::Response::new(full(format!("{} {prefix}", req.uri())))
    })
    .await;
    let hash = bcrypt::hash("pw", 4).unwrap();
    let m = service("app", &[b.addr])
        + &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\nstringData:\n  auth: \"alice:{hash}\"\n"
        )
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/x-forwarded-prefix: /something
    nginx.ingress.kubernetes.io/app-root: /app1
spec:
  ingressClassName: sluicegate
  rules:
  - host: rewrite.test
    http:
      paths:
      - {path: "/something(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: app, port: {number: 80}}}}
      - {path: "/", pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: staff
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: users
    nginx.ingress.kubernetes.io/auth-realm: Staff only
spec:
  ingressClassName: sluicegate
  rules:
  - host: staff.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]
"#;
    let gw = TestGateway::start(&m).await;
    for (path, forwarded) in [
        ("/something/new/page?x=1", "/new/page?x=1 /something"),
        ("/SOMETHING", "/ /something"),
        ("/something/", "/ /something"),
    ] {
        let r = get(gw.http(), "rewrite.test", path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.text(), forwarded, "{path}");
    }
    let r = get(gw.http(), "rewrite.test", "/").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("/app1"));

    let r = get(gw.http(), "staff.test", "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Staff only\"")
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pw")
    );
    let r = request(
        gw.http(),
        "GET",
        "staff.test",
        "/x",
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.shutdown().await;
}
