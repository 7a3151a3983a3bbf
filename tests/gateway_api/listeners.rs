//! Gateways and listeners: isolation between listeners of one port,
//! attached routes, ports opened and closed while serving, HTTPS
//! listeners with their own certificates, the proxy's own ports, and
//! conflicts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluicegate::translate::Kind;

use crate::common::tls::{cert, connect, presented};
use crate::common::{Conn, service_with};
use crate::gateway_api::infra::{INFRA, Infra, expect_backend, free_port};

fn doc(kind: &str, name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn secret(ns: &str, name: &str, c: &crate::common::tls::Cert) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&c.pem),
        indent(&c.key)
    )
}

#[tokio::test]
async fn gateway_http_listener_isolation() {
    let port = free_port();
    let l = |name: &str, host: Option<&str>| {
        let h = host.map_or(String::new(), |h| format!(", hostname: \"{h}\""));
        format!(
            "  - {{name: {name}, port: {port}, protocol: HTTP{h}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n"
        )
    };
    let mut m = doc(
        "Gateway",
        "http-listener-isolation",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n{}{}{}{}",
            l("empty-hostname", None),
            l("wildcard-example-com", Some("*.example.com")),
            l("wildcard-foo-example-com", Some("*.foo.example.com")),
            l("abc-foo-example-com", Some("abc.foo.example.com")),
        ),
    );
    for section in [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ] {
        m += &doc(
            "HTTPRoute",
            &format!("attaches-to-{section}"),
            INFRA,
            &format!(
                "  parentRefs: [{{name: http-listener-isolation, sectionName: {section}}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /{section}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
            ),
        );
    }
    let infra = Infra::start(&m).await;
    infra.wait_port(port).await;
    // Each host belongs to the most specific listener covering it; only
    // that listener's routes serve it.
    let hosts = [
        ("bar.com", "/empty-hostname"),
        ("bar.example.com", "/wildcard-example-com"),
        ("bar.foo.example.com", "/wildcard-foo-example-com"),
        ("abc.foo.example.com", "/abc-foo-example-com"),
    ];
    for (host, served) in hosts {
        for (_, path) in hosts {
            let r = infra.get(port, host, path).await;
            if path == served {
                expect_backend(&r, "infra-backend-v1");
            } else {
                assert_eq!(r.status, 404, "{host}{path} must not be served");
            }
        }
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn gateway_with_attached_routes() {
    let (one, two, tls) = (free_port(), free_port(), free_port());
    let selector = format!(
        "{{from: Selector, selector: {{matchLabels: {{kubernetes.io/metadata.name: {INFRA}}}}}}}"
    );
    let mut m = doc(
        "Gateway",
        "gateway-with-one-attached-route",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n  - name: http\n    port: {one}\n    protocol: HTTP\n    allowedRoutes: {{kinds: [{{kind: HTTPRoute}}], namespaces: {selector}}}\n"
        ),
    );
    m += &doc(
        "Gateway",
        "gateway-with-two-attached-routes",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n  - name: http\n    port: {two}\n    protocol: HTTP\n    hostname: foo.example.com\n    allowedRoutes: {{kinds: [{{kind: HTTPRoute}}], namespaces: {selector}}}\n"
        ),
    );
    m += &doc(
        "Gateway",
        "unresolved-gateway-with-one-attached-unresolved-route",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n  - name: tls\n    port: {tls}\n    protocol: HTTPS\n    allowedRoutes: {{kinds: [{{kind: HTTPRoute}}], namespaces: {selector}}}\n    tls:\n      certificateRefs: [{{group: \"\", kind: Secret, name: does-not-exist}}]\n      mode: Terminate\n"
        ),
    );
    let route = |name: &str, gateway: &str, extra: &str, backend: &str| {
        doc(
            "HTTPRoute",
            name,
            INFRA,
            &format!(
                "  parentRefs: [{{kind: Gateway, name: {gateway}, namespace: {INFRA}{extra}}}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 8080}}]\n"
            ),
        )
    };
    m += &route(
        "http-route-1",
        "gateway-with-one-attached-route",
        "",
        "infra-backend-v1",
    );
    m += &route(
        "http-route-2",
        "gateway-with-two-attached-routes",
        "",
        "infra-backend-v1",
    );
    m += &route(
        "http-route-3",
        "gateway-with-two-attached-routes",
        "",
        "infra-backend-v1",
    );
    m += &doc(
        "HTTPRoute",
        "http-route-not-accepted",
        INFRA,
        &format!(
            "  hostnames: [not-accepted.test.com]\n  parentRefs: [{{kind: Gateway, name: gateway-with-two-attached-routes, namespace: {INFRA}}}]\n  rules:\n  - backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
        ),
    );
    m += &route(
        "http-route-4",
        "unresolved-gateway-with-one-attached-unresolved-route",
        ", sectionName: tls",
        "does-not-exist",
    );
    let infra = Infra::start(&m).await;
    let listener = |g: &str, l: &str, t: &str| infra.listener_condition(g, l, t);
    assert_eq!(
        listener("gateway-with-one-attached-route", "http", "Accepted"),
        Some((true, "Accepted".into(), 1))
    );
    assert_eq!(
        listener("gateway-with-two-attached-routes", "http", "ResolvedRefs"),
        Some((true, "ResolvedRefs".into(), 2))
    );
    assert_eq!(
        infra.route_condition(
            (Kind::HTTPRoute, INFRA, "http-route-not-accepted"),
            "gateway-with-two-attached-routes",
            "Accepted"
        ),
        Some((false, "NoMatchingListenerHostname".into()))
    );
    let g = "unresolved-gateway-with-one-attached-unresolved-route";
    assert_eq!(
        listener(g, "tls", "Programmed").map(|c| (c.0, c.2)),
        Some((false, 1))
    );
    assert_eq!(
        listener(g, "tls", "ResolvedRefs"),
        Some((false, "InvalidCertificateRef".into(), 1))
    );
    assert_eq!(
        infra.route_condition((Kind::HTTPRoute, INFRA, "http-route-4"), g, "ResolvedRefs"),
        Some((false, "BackendNotFound".into()))
    );
    // The listener without a certificate opens no port.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", tls))
            .await
            .is_err()
    );
    expect_backend(
        &infra.get(two, "foo.example.com", "/").await,
        "infra-backend-v1",
    );
    assert_eq!(infra.get(two, "other.example.com", "/").await.status, 404);
    infra.shutdown().await;
}

/// The Gateway `modify` with HTTP listeners on `ports`, allowing routes
/// from its namespace, and a route attached to all of them.
fn modifiable(ports: &[u16]) -> String {
    let listeners: String = ports
        .iter()
        .map(|p| format!("  - {{name: l{p}, port: {p}, protocol: HTTP}}\n"))
        .collect();
    doc(
        "Gateway",
        "modify",
        INFRA,
        &format!("  gatewayClassName: sluicegate\n  listeners:\n{listeners}"),
    ) + &doc(
        "HTTPRoute",
        "modify",
        INFRA,
        "  parentRefs: [{name: modify}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    )
}

/// The suite's GatewayModifyListeners, and what Sluicegate adds: a
/// listener on a new port is served soon after the Gateway changes, and
/// connections to the Gateway's other ports are not touched by it.
#[tokio::test]
async fn gateway_modify_listeners_opens_and_closes_ports() {
    let (first, second) = (free_port(), free_port());
    let infra = Infra::start("").await;
    infra.gw.write("gateway.yaml", &modifiable(&[first])).await;
    infra.wait_port(first).await;
    // A keep-alive connection on the first port, used before and after.
    let mut kept = Conn::open(SocketAddr::from(([127, 0, 0, 1], first)))
        .await
        .unwrap();
    let r = kept.get("x", "/").await.unwrap();
    expect_backend(&r, "infra-backend-v1");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", second))
            .await
            .is_err()
    );

    let changed = Instant::now();
    crate::common::write_atomic(
        &infra.gw.dir.path().join("gateway.yaml"),
        &modifiable(&[first, second]),
    );
    let served = loop {
        if let Ok(mut c) = Conn::open(SocketAddr::from(([127, 0, 0, 1], second))).await
            && let Ok(r) = c.get("x", "/").await
            && r.status == 200
        {
            break changed.elapsed();
        }
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "the new port never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "new listener port served {} ms after the Gateway changed",
        served.as_millis()
    );
    // The same connection to the first port still works: the change did
    // not touch it.
    let r = kept
        .get("x", "/")
        .await
        .expect("the first port's connection survives");
    expect_backend(&r, "infra-backend-v1");
    assert_eq!(
        infra.listener_condition("modify", &format!("l{second}"), "Programmed"),
        Some((true, "Programmed".into(), 1))
    );

    // Removing the first listener closes its port; the second serves on.
    infra.gw.write("gateway.yaml", &modifiable(&[second])).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", first))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "port {first} not closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    expect_backend(&infra.get(second, "x", "/").await, "infra-backend-v1");
    let open = infra.gw.sa.as_ref().unwrap().gateway().gateway_ports();
    assert!(open.contains(&second) && !open.contains(&first), "{open:?}");
    infra.shutdown().await;
}

#[tokio::test]
async fn https_listeners_serve_their_own_certificates() {
    let port = free_port();
    let (a, b) = (cert(&["a.example.com"]), cert(&["*.b.example.com"]));
    let other = cert(&["c.example.com"]);
    let mut m = secret(INFRA, "a", &a) + &secret(INFRA, "b", &b);
    // A certificate in another namespace: allowed by a ReferenceGrant
    // for one Secret, not the other.
    m += &secret("certs", "c", &other);
    m += &secret("certs", "d", &other);
    m += &format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: gateways, namespace: certs}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Secret, name: c}}]\n"
    );
    let l = |name: &str, host: &str, secret: &str| {
        format!(
            "  - name: {name}\n    port: {port}\n    protocol: HTTPS\n    hostname: \"{host}\"\n    tls: {{certificateRefs: [{secret}]}}\n"
        )
    };
    m += &doc(
        "Gateway",
        "secure",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n{}{}{}{}",
            l("a", "a.example.com", "{name: a}"),
            l("b", "*.b.example.com", "{name: b}"),
            l("c", "c.example.com", "{name: c, namespace: certs}"),
            l("d", "d.example.com", "{name: d, namespace: certs}"),
        ),
    );
    m += &doc(
        "HTTPRoute",
        "secure",
        INFRA,
        "  parentRefs: [{name: secure}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    infra.wait_port(port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for (sni, want) in [
        ("a.example.com", &a),
        ("x.b.example.com", &b),
        ("x.y.b.example.com", &b),
        ("c.example.com", &other),
    ] {
        let s = connect(addr, Some(sni), &[b"http/1.1"]).await;
        assert_eq!(presented(&s), want.der, "{sni}");
    }
    // HTTPRouteHTTPSListener: requests over TLS are routed on the port.
    let s = connect(addr, Some("a.example.com"), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/tls")
        .header("host", "a.example.com")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers().get("x-backend").unwrap(), "infra-backend-v1");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let reply = crate::common::Reply {
        status: http::StatusCode::OK,
        headers: http::HeaderMap::new(),
        body,
    };
    let echo = crate::gateway_api::infra::Echo::parse(&reply).unwrap();
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        infra.listener_condition("secure", "c", "ResolvedRefs"),
        Some((true, "ResolvedRefs".into(), 1))
    );
    assert_eq!(
        infra.listener_condition("secure", "d", "ResolvedRefs"),
        Some((false, "RefNotPermitted".into(), 1))
    );
    assert_eq!(
        infra
            .listener_condition("secure", "d", "Programmed")
            .map(|c| c.0),
        Some(false)
    );
    // The wildcard listeners of one port overlap nothing here; the
    // Gateway is accepted with one listener not served.
    assert_eq!(
        infra.listener_condition("secure", "a", "OverlappingTLSConfig"),
        None
    );
    infra.shutdown().await;
}

/// A listener on the proxy's own HTTP port shares it with Ingresses; an
/// HTTPS listener there, or two protocols on one port, are conflicts.
#[tokio::test]
async fn listeners_on_the_proxys_own_port_share_it() {
    let cfg = crate::gateway_api::infra::config();
    let own = cfg.http_addr.port();
    let clash = free_port();
    let mut m = doc(
        "Gateway",
        "shared",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n  - {{name: http, port: {own}, protocol: HTTP, hostname: gw.example.com}}\n  - {{name: tls-on-plain, port: {own}, protocol: HTTPS, hostname: other.example.com, tls: {{certificateRefs: [{{name: x}}]}}}}\n"
        ),
    );
    m += &doc(
        "Gateway",
        "clashing",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n  - {{name: plain, port: {clash}, protocol: HTTP}}\n  - {{name: secure, port: {clash}, protocol: HTTPS, tls: {{certificateRefs: [{{name: x}}]}}}}\n"
        ),
    );
    m += &doc(
        "HTTPRoute",
        "shared",
        INFRA,
        "  parentRefs: [{name: shared, sectionName: http}]\n  rules:\n  - backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    let web = crate::gateway_api::infra::echo("ingress-backend").await;
    m += &service_with("ingress-backend", &[web.addr], None);
    m += "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: default}\nspec:\n  ingressClassName: sluicegate\n  rules:\n  - host: ingress.example.com\n    http:\n      paths: [{path: /, pathType: Prefix, backend: {service: {name: ingress-backend, port: {number: 80}}}}]\n";
    let infra = Infra::start_with(&m, cfg).await;
    expect_backend(
        &infra.get(own, "gw.example.com", "/").await,
        "infra-backend-v2",
    );
    expect_backend(
        &infra.get(own, "ingress.example.com", "/").await,
        "ingress-backend",
    );
    assert_eq!(
        infra.listener_condition("shared", "tls-on-plain", "Conflicted"),
        Some((true, "ProtocolConflict".into(), 0))
    );
    for l in ["plain", "secure"] {
        assert_eq!(
            infra.listener_condition("clashing", l, "Conflicted"),
            Some((true, "ProtocolConflict".into(), 0)),
            "{l}"
        );
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", clash))
            .await
            .is_err()
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn a_port_that_cannot_be_opened_is_reported() {
    // Held without SO_REUSEPORT: the proxy cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let m = crate::gateway_api::infra::gateway("busy", port, "{from: Same}");
    let infra = Infra::start(&m).await;
    let publisher = infra.gw.sa.as_ref().unwrap().gateway().publisher().clone();
    let mut errors = publisher.port_errors();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !errors.borrow_and_update().contains_key(&port) {
        assert!(Instant::now() < deadline, "no error for port {port}");
        let _ = tokio::time::timeout(Duration::from_millis(100), errors.changed()).await;
    }
    let why = errors.borrow()[&port].clone();
    assert!(why.contains(&port.to_string()), "{why}");
    // Other Gateways are served regardless.
    assert_eq!(infra.get(infra.same, "x", "/").await.status, 404);
    drop(taken);
    infra.shutdown().await;
}

/// The HTTPS listener cases of the suite's HTTPRouteRedirectPortAndScheme,
/// on a port of the listener's own in place of 443: without a scheme a
/// redirect keeps `https` and the listener's port; with a scheme and no
/// port it takes the scheme's well-known port, which is left out.
#[tokio::test]
async fn http_route_redirect_port_and_scheme_on_an_https_listener() {
    let port = free_port();
    let c = cert(&["example.org"]);
    let mut m = secret(INFRA, "example-org", &c);
    m += &doc(
        "Gateway",
        "same-namespace-with-https-listener",
        INFRA,
        &format!(
            "  gatewayClassName: sluicegate\n  listeners:\n  - name: https\n    port: {port}\n    protocol: HTTPS\n    tls: {{certificateRefs: [{{name: example-org}}]}}\n    allowedRoutes: {{namespaces: {{from: Same}}}}\n"
        ),
    );
    let redirects = [
        ("/scheme-nil-and-port-nil", "{hostname: example.org}"),
        (
            "/scheme-nil-and-port-443",
            "{port: 443, hostname: example.org}",
        ),
        (
            "/scheme-nil-and-port-8443",
            "{port: 8443, hostname: example.org}",
        ),
        (
            "/scheme-http-and-port-nil",
            "{scheme: http, hostname: example.org}",
        ),
        (
            "/scheme-http-and-port-80",
            "{scheme: http, port: 80, hostname: example.org}",
        ),
        (
            "/scheme-http-and-port-8080",
            "{scheme: http, port: 8080, hostname: example.org}",
        ),
    ];
    let rules: String = redirects
        .iter()
        .map(|(prefix, r)| {
            format!(
                "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {r}}}]\n"
            )
        })
        .collect();
    m += &doc(
        "HTTPRoute",
        "http-route-for-listener-on-port-443",
        INFRA,
        &format!("  parentRefs: [{{name: same-namespace-with-https-listener}}]\n  rules:\n{rules}"),
    );
    let infra = Infra::start(&m).await;
    infra.wait_port(port).await;
    let expected = [
        (
            "/scheme-nil-and-port-nil",
            format!("https://example.org:{port}/scheme-nil-and-port-nil"),
        ),
        (
            "/scheme-nil-and-port-443",
            "https://example.org/scheme-nil-and-port-443".to_owned(),
        ),
        (
            "/scheme-nil-and-port-8443",
            "https://example.org:8443/scheme-nil-and-port-8443".to_owned(),
        ),
        (
            "/scheme-http-and-port-nil",
            "http://example.org/scheme-http-and-port-nil".to_owned(),
        ),
        (
            "/scheme-http-and-port-80",
            "http://example.org/scheme-http-and-port-80".to_owned(),
        ),
        (
            "/scheme-http-and-port-8080",
            "http://example.org:8080/scheme-http-and-port-8080".to_owned(),
        ),
    ];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for (path, location) in expected {
        let s = connect(addr, Some("example.org"), &[b"http/1.1"]).await;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "example.org")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 302, "{path}");
        assert_eq!(
            resp.headers().get("location").and_then(|l| l.to_str().ok()),
            Some(location.as_str()),
            "{path}"
        );
    }
    infra.shutdown().await;
}
