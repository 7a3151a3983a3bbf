//! Requests routed through the real proxy to real loopback backends.

use crate::common;

use common::*;
use http::StatusCode;

fn apiroute(name: &str, body: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}}}
spec:
{body}"#
    )
}

#[tokio::test]
async fn routes_by_host_path_method_header_and_query() {
    let names = [
        "exact", "prefix", "wild", "any", "post", "canary", "v2", "regex", "trace",
    ];
    let mut backends = Vec::new();
    let mut manifests = String::new();
    for n in names {
        let b = Backend::named(n).await;
        manifests.push_str(&service(n, &[b.addr]));
        backends.push(b);
    }
    manifests.push_str(&apiroute(
        "shop",
        r#"  hosts: ["shop.example.com"]
  routes:
  - name: exact
    match: {paths: [{type: Exact, value: /api/health}]}
    backends: [{serviceName: exact, servicePort: 80}]
  - name: prefix
    match: {paths: [{type: Prefix, value: /api}]}
    backends: [{serviceName: prefix, servicePort: http}]
  - name: post
    match: {paths: [{value: /api}], methods: [POST]}
    backends: [{serviceName: post, servicePort: 80}]
  - name: canary
    match:
      paths: [{value: /api}]
      headers: [{name: X-Canary, value: "1"}]
    backends: [{serviceName: canary, servicePort: 80}]
  - name: v2
    match:
      paths: [{value: /api}]
      queryParams: [{name: version, value: "2"}]
    backends: [{serviceName: v2, servicePort: 80}]
  - name: regex
    match: {paths: [{type: RegularExpression, value: "/items/[0-9]+"}]}
    backends: [{serviceName: regex, servicePort: 80}]
  - name: trace
    match: {paths: [{value: /debug}], methods: [TRACE]}
    backends: [{serviceName: trace, servicePort: 80}]
"#,
    ));
    manifests.push_str(&apiroute(
        "wild",
        r#"  hosts: ["*.example.com"]
  routes:
  - name: all
    backends: [{serviceName: wild, servicePort: 80}]
"#,
    ));
    manifests.push_str(&apiroute(
        "any",
        r#"  routes:
  - name: all
    match: {paths: [{value: /public}]}
    backends: [{serviceName: any, servicePort: 80}]
"#,
    ));
    let gw = TestGateway::start(&manifests).await;
    let http = gw.http();

    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        ("GET", "shop.example.com", "/api/health", &[], Some("exact")),
        (
            "GET",
            "shop.example.com",
            "/api/health/x",
            &[],
            Some("prefix"),
        ),
        (
            "GET",
            "SHOP.Example.com:8080",
            "/api/users",
            &[],
            Some("prefix"),
        ),
        ("GET", "shop.example.com", "/api", &[], Some("prefix")),
        ("GET", "shop.example.com", "/apix", &[], Some("wild")),
        ("POST", "shop.example.com", "/api/orders", &[], Some("post")),
        (
            "GET",
            "shop.example.com",
            "/api/x",
            &[("x-canary", "1")],
            Some("canary"),
        ),
        (
            "GET",
            "shop.example.com",
            "/api/x",
            &[("x-canary", "0")],
            Some("prefix"),
        ),
        (
            "GET",
            "shop.example.com",
            "/api/x?version=2",
            &[],
            Some("v2"),
        ),
        (
            "GET",
            "shop.example.com",
            "/api/x?version=3",
            &[],
            Some("prefix"),
        ),
        ("GET", "shop.example.com", "/items/42", &[], Some("regex")),
        ("GET", "shop.example.com", "/items/4x", &[], Some("wild")),
        ("GET", "blog.example.com", "/anything", &[], Some("wild")),
        ("GET", "a.b.example.com", "/public/x", &[], Some("any")),
        ("GET", "other.test", "/public", &[], Some("any")),
        ("GET", "other.test", "/private", &[], None),
        // TRACE only reaches a route that names it.
        ("TRACE", "shop.example.com", "/debug/x", &[], Some("trace")),
    ];
    for (method, host, path, headers, want) in cases {
        let r = request(http, method, host, path, headers).await;
        match want {
            Some(name) => {
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "{method} {host}{path}: {}",
                    r.text()
                );
                assert_eq!(r.text(), *name, "{method} {host}{path}");
            }
            None => assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {host}{path}"),
        }
    }
    // A route that serves every method does not serve TRACE.
    let r = request(http, "TRACE", "shop.example.com", "/api/x", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn ingress_routes_with_default_backend() {
    let app = Backend::named("app").await;
    let fallback = Backend::named("fallback").await;
    let mut m = service("app", &[app.addr]);
    m.push_str(&service("fallback", &[fallback.addr]));
    m.push_str(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: sluicegate
  defaultBackend:
    service: {name: fallback, port: {number: 80}}
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other-class}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
"#,
    );
    let gw = TestGateway::start(&m).await;
    assert_eq!(
        get(gw.http(), "web.example.com", "/app/x").await.text(),
        "app"
    );
    assert_eq!(
        get(gw.http(), "web.example.com", "/other").await.text(),
        "fallback"
    );
    assert_eq!(
        get(gw.http(), "unknown.example.com", "/").await.text(),
        "fallback"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn weighted_backends_split_traffic_within_tolerance() {
    let a = Backend::named("a").await;
    let b1 = Backend::named("b").await;
    let b2 = Backend::named("b").await;
    let mut m = service("a", &[a.addr]);
    // Two endpoints on one Service: round robin inside the 25% share.
    m.push_str(&service_two_ports("b", b1.addr, b2.addr));
    m.push_str(&apiroute(
        "split",
        r#"  routes:
  - name: split
    backends:
    - {serviceName: a, servicePort: 80, weight: 75}
    - {serviceName: b, servicePort: 80, weight: 25}
"#,
    ));
    let gw = TestGateway::start(&m).await;
    let mut conn = Conn::open(gw.http()).await.unwrap();
    let (mut na, mut nb) = (0, 0);
    for _ in 0..400 {
        match conn.get("x", "/").await.unwrap().text().as_str() {
            "a" => na += 1,
            "b" => nb += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Smooth weighted round robin is exact over whole cycles.
    assert_eq!((na, nb), (300, 100));
    gw.shutdown().await;
}

/// A Service whose two endpoints listen on different ports is not
/// expressible in one slice; use two slices with their own port.
fn service_two_ports(name: &str, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    let slice = |i: u32, addr: std::net::SocketAddr| {
        format!(
            r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints:
- addresses: ["{}"]
"#,
            addr.port(),
            addr.ip()
        )
    };
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n{}{}",
        slice(1, a),
        slice(2, b)
    )
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop_removal() {
    let echo = sluicegate::demo::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), "echo")
        .await
        .unwrap();
    let mut m = service("echo", &[echo.addr()]);
    m.push_str(&apiroute(
        "e",
        "  routes:\n  - name: e\n    backends: [{serviceName: echo, servicePort: 80}]\n",
    ));
    let gw = TestGateway::start(&m).await;
    let r = request(
        gw.http(),
        "GET",
        "App.Example.com",
        "/p?q=1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "x-drop-me"),
            ("x-drop-me", "secret"),
            ("keep-alive", "timeout=1"),
        ],
    )
    .await;
    let text = r.text();
    assert!(text.contains("request: GET /p?q=1"), "{text}");
    assert!(
        text.contains("host: App.Example.com"),
        "client Host kept: {text}"
    );
    assert!(
        text.contains("x-forwarded-for: 127.0.0.1\n"),
        "forged XFF replaced: {text}"
    );
    assert!(text.contains("x-real-ip: 127.0.0.1"), "{text}");
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(text.contains("x-forwarded-host: App.Example.com"), "{text}");
    assert!(
        !text.contains("x-drop-me"),
        "connection-named header removed: {text}"
    );
    assert!(!text.contains("keep-alive"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn dot_segments_are_resolved_before_matching_and_forwarding() {
    let public =
        sluicegate::demo::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), "public")
            .await
            .unwrap();
    let mut m = service("public", &[public.addr()]);
    m.push_str(&apiroute(
        "p",
        "  routes:\n  - name: p\n    match: {paths: [{value: /public}]}\n    backends: [{serviceName: public, servicePort: 80}]\n",
    ));
    let gw = TestGateway::start(&m).await;
    // Escapes the /public prefix: must not reach the public backend.
    let r = get(gw.http(), "x", "/public/../admin").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Stays inside it: routed, and the upstream sees the normalized path.
    let r = get(gw.http(), "x", "/public/a/../b//c?x=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("request: GET /public/b/c?x=1"),
        "{}",
        r.text()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_is_routed() {
    let b = Backend::named("h2").await;
    let mut m = service("h2", &[b.addr]);
    m.push_str(&apiroute(
        "h",
        "  hosts: [h2.example.com]\n  routes:\n  - name: h\n    backends: [{serviceName: h2, servicePort: 80}]\n",
    ));
    let gw = TestGateway::start(&m).await;
    let stream = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = http::Request::get("http://h2.example.com/x")
            .body(full(""))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"h2");
    }
    gw.shutdown().await;
}
