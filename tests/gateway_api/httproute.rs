//! HTTPRoute cases of the Gateway API conformance suite, through the real
//! proxy: each test is named after the suite's test it re-expresses.

use sluicegate::translate::Kind;

use crate::gateway_api::infra::{APP, INFRA, Infra, WEB, expect_backend};

fn route(name: &str, ns: &str, body: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}"
    )
}

const HTTP: Kind = Kind::HTTPRoute;

#[tokio::test]
async fn http_route_simple_same_namespace() {
    let m = route(
        "gateway-conformance-infra-test",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    let r = infra.get(infra.same, "example.org", "/").await;
    let echo = expect_backend(&r, "infra-backend-v1");
    assert_eq!(echo.target, "/");
    assert_eq!(echo.host, "example.org");
    let id = (HTTP, INFRA, "gateway-conformance-infra-test");
    assert_eq!(
        infra.route_condition(id, "same-namespace", "Accepted"),
        Some((true, "Accepted".into()))
    );
    assert_eq!(
        infra.route_condition(id, "same-namespace", "ResolvedRefs"),
        Some((true, "ResolvedRefs".into()))
    );
    // Attached to that Gateway only: the others do not serve it.
    assert_eq!(infra.get(infra.all, "example.org", "/").await.status, 404);
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_cross_namespace() {
    let m = route(
        "cross-namespace",
        WEB,
        &format!(
            "  parentRefs: [{{name: backend-namespaces, namespace: {INFRA}}}]\n  rules:\n  - backendRefs: [{{name: web-backend, port: 8080}}]\n"
        ),
    );
    let infra = Infra::start(&m).await;
    let r = infra.get(infra.backend_ns, "x", "/").await;
    expect_backend(&r, "web-backend");
    assert_eq!(
        infra.route_condition(
            (HTTP, WEB, "cross-namespace"),
            "backend-namespaces",
            "Accepted"
        ),
        Some((true, "Accepted".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_exact_path_matching() {
    let m = route(
        "exact-matching",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  rules:\n  - matches: [{path: {type: Exact, value: /one}}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: Exact, value: /two}}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    expect_backend(
        &infra.get(infra.same, "x", "/one").await,
        "infra-backend-v1",
    );
    expect_backend(
        &infra.get(infra.same, "x", "/two").await,
        "infra-backend-v2",
    );
    for path in ["/", "/one/example", "/two/", "/Two"] {
        assert_eq!(infra.get(infra.same, "x", path).await.status, 404, "{path}");
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_header_matching() {
    let rule = |headers: &str, backend: &str| {
        format!("  - matches: {headers}\n    backendRefs: [{{name: {backend}, port: 8080}}]\n")
    };
    let mut body = "  parentRefs: [{name: same-namespace}]\n  rules:\n".to_owned();
    body += &rule(
        "[{headers: [{name: version, value: one}]}]",
        "infra-backend-v1",
    );
    body += &rule(
        "[{headers: [{name: version, value: two}]}]",
        "infra-backend-v2",
    );
    body += &rule(
        "[{headers: [{name: version, value: two}, {name: color, value: orange}]}]",
        "infra-backend-v1",
    );
    body += &rule(
        "[{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]",
        "infra-backend-v1",
    );
    body += &rule(
        "[{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]",
        "infra-backend-v2",
    );
    let infra = Infra::start(&route("header-matching", INFRA, &body)).await;
    let cases: &[(&[(&str, &str)], Option<&str>)] = &[
        (&[("Version", "one")], Some("infra-backend-v1")),
        (&[("Version", "two")], Some("infra-backend-v2")),
        (
            &[("Version", "two"), ("Color", "orange")],
            Some("infra-backend-v1"),
        ),
        (
            &[("Version", "two"), ("Color", "blue")],
            Some("infra-backend-v2"),
        ),
        (&[("Color", "orange")], None),
        (&[("Some-Other-Header", "one")], None),
        (&[("Color", "blue")], Some("infra-backend-v1")),
        (&[("Color", "green")], Some("infra-backend-v1")),
        (&[("Color", "red")], Some("infra-backend-v2")),
        (&[("Color", "yellow")], Some("infra-backend-v2")),
        (&[("Color", "purple")], None),
    ];
    for (headers, want) in cases {
        let r = infra.request(infra.same, "GET", "x", "/", headers).await;
        match want {
            Some(b) => {
                expect_backend(&r, b);
            }
            None => assert_eq!(r.status, 404, "{headers:?}"),
        }
    }
    infra.shutdown().await;
}

const MATCHING_RULES: &str = "  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n";

#[tokio::test]
async fn http_route_matching() {
    let body = format!("  parentRefs: [{{name: same-namespace}}]\n  rules:\n{MATCHING_RULES}");
    let infra = Infra::start(&route("matching", INFRA, &body)).await;
    let v1 = "infra-backend-v1";
    let v2 = "infra-backend-v2";
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        ("/", &[], v1),
        ("/example", &[], v1),
        ("/", &[("Version", "one")], v1),
        ("/v2", &[], v2),
        ("/v2/example", &[], v2),
        ("/", &[("Version", "two")], v2),
        ("/v2/", &[], v2),
        ("/v2example", &[], v1),
        ("/foo/v2/example", &[], v1),
    ];
    for (path, headers, want) in cases {
        let r = infra.request(infra.same, "GET", "x", path, headers).await;
        expect_backend(&r, want);
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_matching_across_routes() {
    let part1 = route(
        "matching-part1",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  hostnames: [example.com, example.net]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let part2 = route(
        "matching-part2",
        INFRA,
        "  hostnames: [example.com]\n  parentRefs: [{name: same-namespace}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]\n    backendRefs: [{name: infra-backend-v2, port: 8080}]\n",
    );
    let infra = Infra::start(&(part1 + &part2)).await;
    let (v1, v2) = ("infra-backend-v1", "infra-backend-v2");
    let cases: &[(&str, &str, &[(&str, &str)], &str)] = &[
        ("example.com", "/", &[], v1),
        ("example.com", "/example", &[], v1),
        ("example.net", "/example", &[], v1),
        ("example.com", "/example", &[("Version", "one")], v1),
        ("example.com", "/v2", &[], v2),
        ("example.net", "/v2", &[], v1),
        ("example.com", "/v2/example", &[], v2),
        ("example.com", "/", &[("Version", "two")], v2),
    ];
    for (host, path, headers, want) in cases {
        let r = infra.request(infra.same, "GET", host, path, headers).await;
        expect_backend(&r, want);
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_hostname_intersection() {
    let listener = |name: &str, host: &str| {
        format!(
            "  - {{name: {name}, port: PORT, protocol: HTTP, hostname: \"{host}\", allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"
        )
    };
    let port = crate::gateway_api::infra::free_port();
    let all_port = crate::gateway_api::infra::free_port();
    let mut m = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: httproute-hostname-intersection, namespace: {INFRA}}}\nspec:\n  gatewayClassName: sluicegate\n  listeners:\n{}{}{}",
        listener("listener-1", "very.specific.com"),
        listener("listener-2", "*.wildcard.io"),
        listener("listener-3", "*.anotherwildcard.io"),
    )
    .replace("PORT", &port.to_string());
    m += &crate::gateway_api::infra::gateway(
        "httproute-hostname-intersection-all",
        all_port,
        "{from: Same}",
    );
    let r = |name: &str, hosts: &str, prefix: &str, backend: &str| {
        route(
            name,
            INFRA,
            &format!(
                "  parentRefs: [{{name: httproute-hostname-intersection, namespace: {INFRA}}}]\n  hostnames: {hosts}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    backendRefs: [{{name: {backend}, port: 8080}}]\n"
            ),
        )
    };
    m += &r(
        "specific-host-matches-listener-specific-host",
        "[non.matching.com, \"*.nonmatchingwildcard.io\", very.specific.com]",
        "/s1",
        "infra-backend-v1",
    );
    m += &r(
        "specific-host-matches-listener-wildcard-host",
        "[non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]",
        "/s2",
        "infra-backend-v2",
    );
    m += &r(
        "wildcard-host-matches-listener-specific-host",
        "[non.matching.com, \"*.specific.com\"]",
        "/s3",
        "infra-backend-v3",
    );
    m += &r(
        "wildcard-host-matches-listener-wildcard-host",
        "[\"*.anotherwildcard.io\"]",
        "/s4",
        "infra-backend-v1",
    );
    m += &r(
        "no-intersecting-hosts",
        "[specific.but.wrong.com, wildcard.io]",
        "/s5",
        "infra-backend-v2",
    );
    m += &route(
        "httproute-hostname-intersection-all",
        INFRA,
        &format!(
            "  parentRefs: [{{name: httproute-hostname-intersection-all, namespace: {INFRA}}}]\n  hostnames: [first.com, sub.first.com, second.com, sub.second.com]\n  rules:\n  - backendRefs: [{{name: infra-backend-v2, port: 8080}}]\n"
        ),
    );
    let infra = Infra::start(&m).await;
    infra.wait_port(port).await;
    infra.wait_port(all_port).await;
    let cases: &[(u16, &str, &str, Option<&str>)] = &[
        (port, "very.specific.com", "/s1", Some("infra-backend-v1")),
        (
            port,
            "very.specific.com:1234",
            "/s1",
            Some("infra-backend-v1"),
        ),
        (port, "non.matching.com", "/s1", None),
        (port, "foo.nonmatchingwildcard.io", "/s1", None),
        (port, "foo.wildcard.io", "/s1", None),
        (port, "very.specific.com", "/non-matching-prefix", None),
        (port, "foo.wildcard.io", "/s2", Some("infra-backend-v2")),
        (port, "bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        (port, "foo.bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        (port, "non.matching.com", "/s2", None),
        (port, "wildcard.io", "/s2", None),
        (port, "very.specific.com", "/s2", None),
        (port, "foo.wildcard.io", "/non-matching-prefix", None),
        (port, "very.specific.com", "/s3", Some("infra-backend-v3")),
        (port, "non.matching.com", "/s3", None),
        (port, "foo.specific.com", "/s3", None),
        (port, "foo.wildcard.io", "/s3", None),
        (
            port,
            "foo.anotherwildcard.io",
            "/s4",
            Some("infra-backend-v1"),
        ),
        (
            port,
            "bar.anotherwildcard.io",
            "/s4",
            Some("infra-backend-v1"),
        ),
        (
            port,
            "foo.bar.anotherwildcard.io",
            "/s4",
            Some("infra-backend-v1"),
        ),
        (port, "anotherwildcard.io", "/s4", None),
        (port, "foo.wildcard.io", "/s4", None),
        (port, "very.specific.com", "/s4", None),
        (port, "specific.but.wrong.com", "/s5", None),
        (port, "wildcard.io", "/s5", None),
        (all_port, "first.com", "/", Some("infra-backend-v2")),
        (all_port, "sub.first.com", "/", Some("infra-backend-v2")),
        (all_port, "second.com", "/", Some("infra-backend-v2")),
        (all_port, "sub.second.com", "/", Some("infra-backend-v2")),
        (all_port, "third.com", "/", None),
        (all_port, "sub.third.com", "/", None),
    ];
    for (p, host, path, want) in cases {
        let r = infra.get(*p, host, path).await;
        match want {
            Some(b) => {
                expect_backend(&r, b);
            }
            None => assert_eq!(r.status, 404, "{host}{path}: {}", r.text()),
        }
    }
    assert_eq!(
        infra.route_condition(
            (HTTP, INFRA, "no-intersecting-hosts"),
            "httproute-hostname-intersection",
            "Accepted"
        ),
        Some((false, "NoMatchingListenerHostname".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_listener_hostname_matching() {
    let port = crate::gateway_api::infra::free_port();
    let l = |name: &str, host: &str| {
        format!(
            "  - {{name: {name}, port: {port}, protocol: HTTP, hostname: \"{host}\", allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"
        )
    };
    let mut m = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: hostname-matching, namespace: {INFRA}}}\nspec:\n  gatewayClassName: sluicegate\n  listeners:\n{}{}{}{}",
        l("listener-1", "bar.com"),
        l("listener-2", "foo.bar.com"),
        l("listener-3", "*.bar.com"),
        l("listener-4", "*.foo.com"),
    );
    let r = |name: &str, sections: &[&str], backend: &str| {
        let refs: Vec<String> = sections
            .iter()
            .map(|s| format!("{{name: hostname-matching, namespace: {INFRA}, sectionName: {s}}}"))
            .collect();
        route(
            name,
            INFRA,
            &format!(
                "  parentRefs: [{}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 8080}}]\n",
                refs.join(", ")
            ),
        )
    };
    m += &r("backend-v1", &["listener-1"], "infra-backend-v1");
    m += &r("backend-v2", &["listener-2"], "infra-backend-v2");
    m += &r(
        "backend-v3",
        &["listener-3", "listener-4"],
        "infra-backend-v3",
    );
    let infra = Infra::start(&m).await;
    infra.wait_port(port).await;
    let cases: &[(&str, Option<&str>)] = &[
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ];
    for (host, want) in cases {
        let r = infra.get(port, host, "/").await;
        match want {
            Some(b) => {
                expect_backend(&r, b);
            }
            None => assert_eq!(r.status, 404, "{host}"),
        }
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_weight() {
    let m = route(
        "weighted-backends",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  rules:\n  - backendRefs:\n    - {name: infra-backend-v1, port: 8080, weight: 70}\n    - {name: infra-backend-v2, port: 8080, weight: 30}\n    - {name: infra-backend-v3, port: 8080, weight: 0}\n",
    );
    let infra = Infra::start(&m).await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let r = infra.get(infra.same, "x", "/").await;
        let echo = crate::gateway_api::infra::Echo::parse(&r).expect("an echo");
        *counts.entry(echo.backend).or_insert(0) += 1;
    }
    // Smooth weighted round robin: exactly 70/30 over 100 requests.
    assert_eq!(counts.get("infra-backend-v1"), Some(&70), "{counts:?}");
    assert_eq!(counts.get("infra-backend-v2"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("infra-backend-v3"), None, "{counts:?}");
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_reference_grant() {
    let grant = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: reference-grant, namespace: {WEB}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: web-backend}}]\n"
    );
    let m = grant
        + &route(
            "reference-grant",
            INFRA,
            &format!(
                "  parentRefs: [{{name: same-namespace}}]\n  rules:\n  - backendRefs: [{{name: web-backend, namespace: {WEB}, port: 8080}}]\n"
            ),
        );
    let infra = Infra::start(&m).await;
    expect_backend(&infra.get(infra.same, "x", "/").await, "web-backend");
    assert_eq!(
        infra.route_condition(
            (HTTP, INFRA, "reference-grant"),
            "same-namespace",
            "ResolvedRefs"
        ),
        Some((true, "ResolvedRefs".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_invalid_reference_grant() {
    // The grant allows another Service than the one referenced.
    let grant = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: not-this-one, namespace: {WEB}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: not-web-backend}}]\n"
    );
    let m = grant
        + &route(
            "reference-grant",
            INFRA,
            &format!(
                "  parentRefs: [{{name: same-namespace}}]\n  rules:\n  - backendRefs: [{{name: web-backend, namespace: {WEB}, port: 8080}}]\n"
            ),
        );
    let infra = Infra::start(&m).await;
    assert_eq!(infra.get(infra.same, "x", "/").await.status, 500);
    let id = (HTTP, INFRA, "reference-grant");
    assert_eq!(
        infra.route_condition(id, "same-namespace", "ResolvedRefs"),
        Some((false, "RefNotPermitted".into()))
    );
    assert_eq!(
        infra.route_condition(id, "same-namespace", "Accepted"),
        Some((true, "Accepted".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_partially_invalid_via_invalid_reference_grant() {
    let grant = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: invalid-reference-grant, namespace: {APP}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]\n  to: [{{group: \"\", kind: Service, name: app-backend-v1}}]\n"
    );
    let m = grant
        + &route(
            "invalid-reference-grant",
            INFRA,
            &format!(
                "  parentRefs: [{{name: same-namespace}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}]\n    backendRefs: [{{name: app-backend-v2, namespace: {APP}, port: 8080}}]\n  - backendRefs: [{{name: app-backend-v1, namespace: {APP}, port: 8080}}]\n"
            ),
        );
    let infra = Infra::start(&m).await;
    assert_eq!(infra.get(infra.same, "x", "/v2").await.status, 500);
    expect_backend(&infra.get(infra.same, "x", "/").await, "app-backend-v1");
    assert_eq!(
        infra.route_condition(
            (HTTP, INFRA, "invalid-reference-grant"),
            "same-namespace",
            "ResolvedRefs"
        ),
        Some((false, "RefNotPermitted".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_invalid_backend_refs() {
    // The suite's InvalidNonExistentBackendRef, InvalidBackendRefUnknownKind
    // and InvalidCrossNamespaceBackendRef: each rule answers 500 and the
    // route says why it cannot resolve the reference.
    let cases = [
        (
            "nonexistent",
            "{name: does-not-exist, port: 8080}",
            "BackendNotFound",
        ),
        (
            "unknown-kind",
            "{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}",
            "InvalidKind",
        ),
        (
            "cross-namespace",
            "{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}",
            "RefNotPermitted",
        ),
    ];
    let mut m = String::new();
    for (name, backend, _) in cases {
        m += &route(
            name,
            INFRA,
            &format!(
                "  parentRefs: [{{name: same-namespace}}]\n  hostnames: [{name}.example]\n  rules:\n  - backendRefs: [{backend}]\n"
            ),
        );
    }
    let infra = Infra::start(&m).await;
    for (name, _, reason) in cases {
        let r = infra.get(infra.same, &format!("{name}.example"), "/").await;
        assert_eq!(r.status, 500, "{name}");
        let id = (HTTP, INFRA, name);
        assert_eq!(
            infra.route_condition(id, "same-namespace", "ResolvedRefs"),
            Some((false, reason.to_owned())),
            "{name}"
        );
        assert_eq!(
            infra.route_condition(id, "same-namespace", "Accepted"),
            Some((true, "Accepted".into())),
            "{name}"
        );
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_invalid_parent_refs() {
    // InvalidCrossNamespaceParentRef, InvalidParentRefNotMatchingSectionName,
    // InvalidParentRefNotMatchingListenerPort and DisallowedKind.
    let mut m = route(
        "invalid-cross-namespace-parent-ref",
        WEB,
        &format!(
            "  parentRefs: [{{name: same-namespace, namespace: {INFRA}}}]\n  rules:\n  - backendRefs: [{{name: web-backend, port: 8080}}]\n"
        ),
    );
    m += &route(
        "section-name",
        INFRA,
        "  parentRefs: [{name: same-namespace, sectionName: nonexistent}]\n  hostnames: [section.example]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    m += &route(
        "listener-port",
        INFRA,
        "  parentRefs: [{name: same-namespace, port: 81}]\n  hostnames: [port.example]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let kinds_port = crate::gateway_api::infra::free_port();
    m += &format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: tlsroutes-only, namespace: {INFRA}}}\nspec:\n  gatewayClassName: sluicegate\n  listeners:\n  - name: http\n    port: {kinds_port}\n    protocol: HTTP\n    allowedRoutes:\n      namespaces: {{from: Same}}\n      kinds: [{{kind: TLSRoute}}]\n"
    );
    m += &route(
        "disallowed-kind",
        INFRA,
        "  parentRefs: [{name: tlsroutes-only}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    let expect = [
        (
            (HTTP, WEB, "invalid-cross-namespace-parent-ref"),
            "same-namespace",
            "NotAllowedByListeners",
        ),
        (
            (HTTP, INFRA, "section-name"),
            "same-namespace",
            "NoMatchingParent",
        ),
        (
            (HTTP, INFRA, "listener-port"),
            "same-namespace",
            "NoMatchingParent",
        ),
        (
            (HTTP, INFRA, "disallowed-kind"),
            "tlsroutes-only",
            "NotAllowedByListeners",
        ),
    ];
    for (id, gateway, reason) in expect {
        assert_eq!(
            infra.route_condition(id, gateway, "Accepted"),
            Some((false, reason.to_owned())),
            "{id:?}"
        );
    }
    assert_eq!(infra.get(infra.same, "x", "/").await.status, 404);
    assert_eq!(
        infra.get(infra.same, "section.example", "/").await.status,
        404
    );
    assert_eq!(infra.get(infra.same, "port.example", "/").await.status, 404);
    // A listener allowing only unsupported kinds serves nothing.
    assert_eq!(
        infra.listener_condition("tlsroutes-only", "http", "ResolvedRefs"),
        Some((false, "InvalidRouteKinds".into(), 0))
    );
    infra.shutdown().await;
}

/// Sends `GET /` with HTTP/2 prior knowledge (h2c) on a new connection.
async fn h2c_get(port: u16, host: &str) -> crate::common::Reply {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{host}/"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    crate::common::Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// The suite's HTTPRouteBackendProtocolH2C: a backend whose Service port
/// says `appProtocol: kubernetes.io/h2c` is reached, from a client that
/// speaks HTTP/2 with prior knowledge; and (Sluicegate's own check) the
/// backend is spoken to over HTTP/2 without TLS, whatever the client
/// speaks.
#[tokio::test]
async fn http_route_backend_protocol_h2c() {
    let backend = crate::gateway_api::infra::echo("infra-backend-v1").await;
    let mut m = crate::gateway_api::infra::service_port(
        INFRA,
        "infra-backend-v1-h2c",
        8081,
        Some("kubernetes.io/h2c"),
        backend.addr,
    );
    m += &route(
        "backend-protocol-h2c",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1-h2c, port: 8081}]\n",
    );
    let infra = Infra::start(&m).await;
    let r = h2c_get(infra.same, "example.org").await;
    let echo = expect_backend(&r, "infra-backend-v1");
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(echo.target, "/");
    let r = infra.get(infra.same, "example.org", "/").await;
    assert_eq!(expect_backend(&r, "infra-backend-v1").version, "HTTP/2.0");
    assert_eq!(
        infra.route_condition(
            (HTTP, INFRA, "backend-protocol-h2c"),
            "same-namespace",
            "ResolvedRefs"
        ),
        Some((true, "ResolvedRefs".into()))
    );
    infra.shutdown().await;
}

/// The suite's HTTPRouteBackendProtocolWebSocket: a WebSocket to a Service
/// port with `appProtocol: kubernetes.io/ws` is upgraded, and text and
/// binary messages come back from the backend's echo.
#[tokio::test]
async fn http_route_backend_protocol_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut m = crate::gateway_api::infra::service_port(
        INFRA,
        "infra-backend-v1-ws",
        8080,
        Some("kubernetes.io/ws"),
        addr,
    );
    m += &route(
        "backend-protocol-ws",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  rules:\n  - backendRefs: [{name: infra-backend-v1-ws, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", infra.same))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://gateway/ws", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("Websocket Support!")).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got.into_text().unwrap().as_str(), "Websocket Support!");
    let binary = vec![1u8, 2, 3, 4, 5, 6, 7];
    ws.send(Message::binary(binary.clone())).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got.into_data().to_vec(), binary);
    echo.abort();
    infra.shutdown().await;
}

/// The suite's HTTPRouteServiceTypes: Services with hand-made
/// EndpointSlices (an IPv4 one with the backend, an empty IPv6 one) and
/// headless Services are all reached; a Service port's name ties it to the
/// slices' port, whose number differs from the Service's.
#[tokio::test]
async fn http_route_service_types() {
    let backend = crate::gateway_api::infra::echo("infra-backend-v1").await;
    let (ip, port) = (backend.addr.ip(), backend.addr.port());
    let mut m = route(
        "service-types",
        INFRA,
        "  parentRefs: [{name: same-namespace}]\n  rules:\n  - matches: [{path: {type: Exact, value: /manual-endpointslices}}]\n    backendRefs: [{name: manual-endpointslices, port: 8080}]\n  - matches: [{path: {type: Exact, value: /headless}}]\n    backendRefs: [{name: headless, port: 8080}]\n  - matches: [{path: {type: Exact, value: /headless-manual-endpointslices}}]\n    backendRefs: [{name: headless-manual-endpointslices, port: 8080}]\n",
    );
    for (name, headless) in [
        ("manual-endpointslices", false),
        ("headless", true),
        ("headless-manual-endpointslices", true),
    ] {
        let cluster_ip = if headless { "\n  clusterIP: None" } else { "" };
        m += &format!(
            "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {INFRA}}}
spec:{cluster_ip}
  ports:
  - {{name: first-port, protocol: TCP, port: 8080, targetPort: 3000}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-ip4
  namespace: {INFRA}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: first-port, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-ip6
  namespace: {INFRA}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv6
ports: [{{name: first-port, port: {port}, protocol: TCP}}]
"
        );
    }
    let infra = Infra::start(&m).await;
    for path in [
        "/manual-endpointslices",
        "/headless",
        "/headless-manual-endpointslices",
    ] {
        let r = infra.get(infra.same, "x", path).await;
        assert_eq!(expect_backend(&r, "infra-backend-v1").target, path);
    }
    assert_eq!(
        infra.route_condition(
            (HTTP, INFRA, "service-types"),
            "same-namespace",
            "ResolvedRefs"
        ),
        Some((true, "ResolvedRefs".into()))
    );
    infra.shutdown().await;
}
