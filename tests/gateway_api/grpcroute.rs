//! GRPCRoute cases of the conformance suite. Calls are gRPC requests over
//! HTTP/2 without TLS (a `POST` to `/service/method` with a framed
//! message); backends are real HTTP/2 servers. A call no route serves
//! gets HTTP 404, which gRPC clients report as `UNIMPLEMENTED`, the code
//! the suite expects.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluicegate::translate::Kind;

use crate::gateway_api::infra::{Echo, INFRA, Infra, echo, free_port, service_port};

const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// The answer to a call: status, and the echo when a backend answered.
struct Answer {
    status: StatusCode,
    echo: Option<Echo>,
}

/// Makes one gRPC call on a new HTTP/2 connection.
async fn call(port: u16, host: &str, method: &str, metadata: &[(&str, &str)]) -> Answer {
    let stream = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://{host}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in metadata {
        req = req.header(*k, *v);
    }
    // One empty message: no compression flag, length 0.
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]));
    let resp = send.send_request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let reply = crate::common::Reply {
        status,
        headers: http::HeaderMap::new(),
        body: bytes,
    };
    Answer {
        status,
        echo: Echo::parse(&reply),
    }
}

/// The GRPC backends of the suite, and manifests for their Services.
async fn backends() -> (Vec<crate::common::Backend>, String) {
    let mut m = String::new();
    let mut list = Vec::new();
    for name in [
        "grpc-infra-backend-v1",
        "grpc-infra-backend-v2",
        "grpc-infra-backend-v3",
    ] {
        let b = echo(name).await;
        m += &service_port(INFRA, name, 8080, None, b.addr);
        list.push(b);
    }
    (list, m)
}

fn grpc_route(name: &str, parents: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  parentRefs: {parents}\n  rules:\n{rules}"
    )
}

#[track_caller]
fn expect(a: &Answer, backend: Option<&str>, what: &str) {
    match backend {
        Some(b) => {
            assert_eq!(a.status, 200, "{what}");
            assert_eq!(
                a.echo.as_ref().map(|e| e.backend.as_str()),
                Some(b),
                "{what}"
            );
        }
        None => assert_eq!(a.status, 404, "{what}"),
    }
}

#[tokio::test]
async fn grpc_exact_method_matching_and_named_rules() {
    let (_b, mut m) = backends().await;
    m += &grpc_route(
        "exact-matching",
        "[{name: same-namespace}]",
        &format!(
            "  - name: named-rule\n    matches: [{{method: {{service: {SERVICE}, method: Echo}}}}]\n    backendRefs: [{{name: grpc-infra-backend-v1, port: 8080}}]\n  - matches: [{{method: {{service: {SERVICE}, method: EchoTwo}}}}]\n    backendRefs: [{{name: grpc-infra-backend-v2, port: 8080}}]\n"
        ),
    );
    let infra = Infra::start(&m).await;
    let a = call(infra.same, "x", &format!("{SERVICE}/Echo"), &[]).await;
    expect(&a, Some("grpc-infra-backend-v1"), "Echo");
    let echo = a.echo.unwrap();
    assert_eq!(echo.method, "POST");
    // gRPC backends are spoken to over HTTP/2, without TLS.
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(echo.target, format!("/{SERVICE}/Echo"));
    assert_eq!(echo.header("content-type"), Some("application/grpc"));
    expect(
        &call(infra.same, "x", &format!("{SERVICE}/EchoTwo"), &[]).await,
        Some("grpc-infra-backend-v2"),
        "EchoTwo",
    );
    expect(
        &call(infra.same, "x", &format!("{SERVICE}/EchoThree"), &[]).await,
        None,
        "EchoThree",
    );
    assert_eq!(
        infra.route_condition(
            (Kind::GRPCRoute, INFRA, "exact-matching"),
            "same-namespace",
            "Accepted"
        ),
        Some((true, "Accepted".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn grpc_route_header_matching() {
    let (_b, mut m) = backends().await;
    let rule = |headers: &str, backend: &str| {
        format!("  - matches: {headers}\n    backendRefs: [{{name: {backend}, port: 8080}}]\n")
    };
    let mut rules = String::new();
    rules += &rule(
        "[{headers: [{name: version, value: one}]}]",
        "grpc-infra-backend-v1",
    );
    rules += &rule(
        "[{headers: [{name: version, value: two}]}]",
        "grpc-infra-backend-v2",
    );
    rules += &rule(
        "[{headers: [{name: version, value: two}, {name: color, value: orange}]}]",
        "grpc-infra-backend-v1",
    );
    rules += &rule(
        "[{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]",
        "grpc-infra-backend-v1",
    );
    rules += &rule(
        "[{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]",
        "grpc-infra-backend-v2",
    );
    m += &grpc_route("grpc-header-matching", "[{name: same-namespace}]", &rules);
    let infra = Infra::start(&m).await;
    let (v1, v2) = (Some("grpc-infra-backend-v1"), Some("grpc-infra-backend-v2"));
    let cases: &[(&[(&str, &str)], Option<&str>)] = &[
        (&[("version", "one")], v1),
        (&[("version", "two")], v2),
        (&[("version", "two"), ("color", "orange")], v1),
        (&[("version", "two"), ("color", "blue")], v2),
        (&[("color", "orange")], None),
        (&[("some-other-header", "one")], None),
        (&[("color", "blue")], v1),
        (&[("color", "green")], v1),
        (&[("color", "red")], v2),
        (&[("color", "yellow")], v2),
        (&[("color", "purple")], None),
    ];
    for (metadata, want) in cases {
        let a = call(infra.same, "x", &format!("{SERVICE}/Echo"), metadata).await;
        expect(&a, *want, &format!("{metadata:?}"));
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn grpc_route_listener_hostname_matching() {
    let (_b, mut m) = backends().await;
    let port = free_port();
    let l = |name: &str, host: &str| {
        format!("  - {{name: {name}, port: {port}, protocol: HTTP, hostname: \"{host}\"}}\n")
    };
    m += &format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: grpc-hostnames, namespace: {INFRA}}}\nspec:\n  gatewayClassName: sluicegate\n  listeners:\n{}{}{}{}",
        l("listener-1", "bar.com"),
        l("listener-2", "foo.bar.com"),
        l("listener-3", "*.bar.com"),
        l("listener-4", "*.foo.com"),
    );
    let parents = |sections: &[&str]| {
        let refs: Vec<String> = sections
            .iter()
            .map(|s| format!("{{name: grpc-hostnames, sectionName: {s}}}"))
            .collect();
        format!("[{}]", refs.join(", "))
    };
    let rules = |backend: &str| format!("  - backendRefs: [{{name: {backend}, port: 8080}}]\n");
    m += &grpc_route(
        "backend-v1",
        &parents(&["listener-1"]),
        &rules("grpc-infra-backend-v1"),
    );
    m += &grpc_route(
        "backend-v2",
        &parents(&["listener-2"]),
        &rules("grpc-infra-backend-v2"),
    );
    m += &grpc_route(
        "backend-v3",
        &parents(&["listener-3", "listener-4"]),
        &rules("grpc-infra-backend-v3"),
    );
    let infra = Infra::start(&m).await;
    infra.wait_port(port).await;
    let cases: &[(&str, Option<&str>)] = &[
        ("bar.com", Some("grpc-infra-backend-v1")),
        ("foo.bar.com", Some("grpc-infra-backend-v2")),
        ("baz.bar.com", Some("grpc-infra-backend-v3")),
        ("boo.bar.com", Some("grpc-infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("grpc-infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("grpc-infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ];
    for (host, want) in cases {
        let a = call(port, host, &format!("{SERVICE}/Echo"), &[]).await;
        expect(&a, *want, host);
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn grpc_route_weight_and_header_modifier() {
    let (_b, mut m) = backends().await;
    m += &grpc_route(
        "weighted-backends",
        "[{name: same-namespace}]",
        "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-header-set, value: set-overwrites-values}], add: [{name: x-header-add, value: add-appends-values}], remove: [x-header-remove]}}]\n    backendRefs:\n    - {name: grpc-infra-backend-v1, port: 8080, weight: 70}\n    - {name: grpc-infra-backend-v2, port: 8080, weight: 30}\n    - {name: grpc-infra-backend-v3, port: 8080, weight: 0}\n",
    );
    let infra = Infra::start(&m).await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let a = call(
            infra.same,
            "x",
            &format!("{SERVICE}/Echo"),
            &[
                ("x-header-add", "some-other-value"),
                ("x-header-remove", "r"),
            ],
        )
        .await;
        assert_eq!(a.status, 200);
        let echo = a.echo.unwrap();
        assert_eq!(echo.header("x-header-set"), Some("set-overwrites-values"));
        assert_eq!(
            echo.header("x-header-add"),
            Some("some-other-value,add-appends-values")
        );
        assert_eq!(echo.header("x-header-remove"), None);
        *counts.entry(echo.backend).or_insert(0) += 1;
    }
    assert_eq!(counts.get("grpc-infra-backend-v1"), Some(&70), "{counts:?}");
    assert_eq!(counts.get("grpc-infra-backend-v2"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("grpc-infra-backend-v3"), None);
    infra.shutdown().await;
}
