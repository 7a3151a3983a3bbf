//! HTTPRoute filters: the header modifiers, redirects and rewrites of the
//! conformance suite, mirrors and timeouts, and Sluicegate's plugins
//! through `ExtensionRef`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Response;
use sluicegate::translate::Kind;

use crate::common::{Backend, full};
use crate::gateway_api::infra::{INFRA, Infra, expect_backend, service};

fn route(name: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {INFRA}}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  rules:\n{rules}"
    )
}

/// A rule for paths under `prefix` with `filters` (a YAML flow list) to
/// `infra-backend-v1`.
fn rule(prefix: &str, filters: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: {filters}\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
    )
}

fn redirect_rule(prefix: &str, redirect: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]\n"
    )
}

#[tokio::test]
async fn http_route_request_header_modifier() {
    let m = |set: &str, add: &str, remove: &str| {
        format!(
            "[{{type: RequestHeaderModifier, requestHeaderModifier: {{set: {set}, add: {add}, remove: {remove}}}}}]"
        )
    };
    let mut rules = String::new();
    rules += &rule(
        "/set",
        &m(
            "[{name: X-Header-Set, value: set-overwrites-values}]",
            "[]",
            "[]",
        ),
    );
    rules += &rule(
        "/add",
        &m(
            "[]",
            "[{name: X-Header-Add, value: add-appends-values}]",
            "[]",
        ),
    );
    rules += &rule("/remove", &m("[]", "[]", "[X-Header-Remove]"));
    rules += &rule(
        "/multiple",
        &m(
            "[{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}]",
            "[{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, {name: X-Header-Add-3, value: header-add-3}]",
            "[X-Header-Remove-1, X-Header-Remove-2]",
        ),
    );
    rules += &rule(
        "/case-insensitivity",
        &m(
            "[{name: X-Header-Set, value: header-set}]",
            "[{name: X-Header-Add, value: header-add}]",
            "[X-Header-Remove]",
        ),
    );
    let infra = Infra::start(&route("request-header-modifier", &rules)).await;
    let cases: &[(&str, &[(&str, &str)], &[(&str, &str)], &[&str])] = &[
        (
            "/set",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/set",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/add",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-add", "add-appends-values"),
            ],
            &[],
        ),
        (
            "/add",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            &[("x-header-add", "some-other-value,add-appends-values")],
            &[],
        ),
        (
            "/remove",
            &[("X-Header-Remove", "val")],
            &[],
            &["x-header-remove"],
        ),
        (
            "/multiple",
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-val-2,header-add-2"),
                ("x-header-add-3", "header-add-3"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove-1", "x-header-remove-2"],
        ),
        (
            "/case-insensitivity",
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("x-header-set", "header-set"),
                ("x-header-add", "original-val-add,header-add"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove"],
        ),
    ];
    for (path, sent, want, absent) in cases {
        let r = infra.request(infra.same, "GET", "x", path, sent).await;
        let echo = expect_backend(&r, "infra-backend-v1");
        for (k, v) in *want {
            assert_eq!(echo.header(k), Some(*v), "{path} {k}");
        }
        for k in *absent {
            assert_eq!(echo.header(k), None, "{path} {k}");
        }
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_backend_request_header_modifier() {
    // Filters on the rule's only backend run like the rule's own.
    let rules = "  - backendRefs:\n    - name: infra-backend-v1\n      port: 8080\n      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: from-backend}]}}]\n";
    let infra = Infra::start(&route("backend-filter", rules)).await;
    let r = infra.get(infra.same, "x", "/").await;
    let echo = expect_backend(&r, "infra-backend-v1");
    assert_eq!(echo.header("x-header-set"), Some("from-backend"));
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_response_header_modifier() {
    let m = |set: &str, add: &str, remove: &str| {
        format!(
            "[{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: {set}, add: {add}, remove: {remove}}}}}]"
        )
    };
    let mut rules = String::new();
    rules += &rule(
        "/set",
        &m(
            "[{name: X-Header-Set, value: set-overwrites-values}]",
            "[]",
            "[]",
        ),
    );
    rules += &rule(
        "/add",
        &m(
            "[]",
            "[{name: X-Header-Add, value: add-appends-values}]",
            "[]",
        ),
    );
    rules += &rule("/remove", &m("[]", "[]", "[X-Header-Remove]"));
    let infra = Infra::start(&route("response-header-modifier", &rules)).await;
    // The echo backend sets `name` on its response for `x-echo-set-name`.
    let cases: &[(&str, &[(&str, &str)], &[(&str, &str)], &[&str])] = &[
        (
            "/set",
            &[("x-echo-set-some-other-header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/set",
            &[("x-echo-set-x-header-set", "some-other-value")],
            &[("x-header-set", "set-overwrites-values")],
            &[],
        ),
        (
            "/add",
            &[("x-echo-set-some-other-header", "val")],
            &[("x-header-add", "add-appends-values")],
            &[],
        ),
        (
            "/add",
            &[("x-echo-set-x-header-add", "some-other-value")],
            &[("x-header-add", "some-other-value,add-appends-values")],
            &[],
        ),
        (
            "/remove",
            &[("x-echo-set-x-header-remove", "val")],
            &[],
            &["x-header-remove"],
        ),
    ];
    for (path, sent, want, absent) in cases {
        let r = infra.request(infra.same, "GET", "x", path, sent).await;
        assert_eq!(r.status, 200);
        for (k, v) in *want {
            let all: Vec<&str> = r
                .headers
                .get_all(*k)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            assert_eq!(all.join(","), *v, "{path} {k}");
        }
        for k in *absent {
            assert!(r.header(k).is_none(), "{path} {k}");
        }
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_redirects() {
    // RedirectHostAndStatus, RedirectPath, RedirectPort, RedirectScheme and
    // the listener-port rules of RedirectPortAndScheme.
    let mut rules = String::new();
    rules += &redirect_rule("/hostname-redirect", "{hostname: example.org}");
    rules += &redirect_rule(
        "/host-and-status",
        "{hostname: example.org, statusCode: 301}",
    );
    rules += &redirect_rule(
        "/original-prefix",
        "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
    );
    rules += &redirect_rule(
        "/full",
        "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
    );
    rules += &redirect_rule(
        "/path-and-host",
        "{hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
    );
    rules += &redirect_rule(
        "/path-and-status",
        "{statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
    );
    rules += &redirect_rule("/port", "{port: 8083}");
    rules += &redirect_rule("/port-and-host", "{hostname: example.org, port: 8083}");
    rules += &redirect_rule("/scheme", "{scheme: https}");
    rules += &redirect_rule(
        "/scheme-and-host-and-status",
        "{scheme: https, hostname: example.org, statusCode: 302}",
    );
    rules += &redirect_rule("/scheme-nil-and-port-nil", "{hostname: example.org}");
    rules += &redirect_rule(
        "/scheme-nil-and-port-80",
        "{hostname: example.org, port: 80}",
    );
    rules += &redirect_rule(
        "/scheme-https-and-port-443",
        "{scheme: https, hostname: example.org, port: 443}",
    );
    rules += &redirect_rule(
        "/scheme-https-and-port-8443",
        "{scheme: https, hostname: example.org, port: 8443}",
    );
    let infra = Infra::start(&route("redirects", &rules)).await;
    let p = infra.same;
    let cases: Vec<(&str, u16, String)> = vec![
        (
            "/hostname-redirect",
            302,
            format!("http://example.org:{p}/hostname-redirect"),
        ),
        (
            "/host-and-status",
            301,
            format!("http://example.org:{p}/host-and-status"),
        ),
        (
            "/original-prefix/lemon",
            302,
            format!("http://x:{p}/replacement-prefix/lemon"),
        ),
        (
            "/full/path/original",
            302,
            format!("http://x:{p}/full-path-replacement"),
        ),
        (
            "/path-and-host",
            302,
            format!("http://example.org:{p}/replacement-prefix"),
        ),
        (
            "/path-and-status",
            301,
            format!("http://x:{p}/replacement-prefix"),
        ),
        ("/port", 302, "http://x:8083/port".to_owned()),
        (
            "/port-and-host",
            302,
            "http://example.org:8083/port-and-host".to_owned(),
        ),
        ("/scheme", 302, "https://x/scheme".to_owned()),
        (
            "/scheme-and-host-and-status",
            302,
            "https://example.org/scheme-and-host-and-status".to_owned(),
        ),
        (
            "/scheme-nil-and-port-nil?q=1",
            302,
            format!("http://example.org:{p}/scheme-nil-and-port-nil?q=1"),
        ),
        (
            "/scheme-nil-and-port-80",
            302,
            "http://example.org/scheme-nil-and-port-80".to_owned(),
        ),
        (
            "/scheme-https-and-port-443",
            302,
            "https://example.org/scheme-https-and-port-443".to_owned(),
        ),
        (
            "/scheme-https-and-port-8443",
            302,
            "https://example.org:8443/scheme-https-and-port-8443".to_owned(),
        ),
    ];
    for (path, status, location) in cases {
        let r = infra.get(p, "x", path).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("location"), Some(location.as_str()), "{path}");
    }
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_rewrite_path_and_host() {
    let rw = |path: &str| format!("[{{type: URLRewrite, urlRewrite: {{path: {path}}}}}]");
    let mut rules = String::new();
    rules += &rule(
        "/prefix/one",
        &rw("{type: ReplacePrefixMatch, replacePrefixMatch: /one}"),
    );
    rules += &rule(
        "/strip-prefix",
        &rw("{type: ReplacePrefixMatch, replacePrefixMatch: /}"),
    );
    rules += &rule(
        "/full/one",
        &rw("{type: ReplaceFullPath, replaceFullPath: /one}"),
    );
    rules += &rule(
        "/full/rewrite-path-and-modify-headers",
        "[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /test}}}, {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: header-val-1}], remove: [X-Header-Remove]}}]",
    );
    rules += &rule(
        "/rewrite-host",
        "[{type: URLRewrite, urlRewrite: {hostname: one.example.org}}]",
    );
    let infra = Infra::start(&route("rewrite-path", &rules)).await;
    for (path, target) in [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two", "/one"),
        ("/prefix/one/two?keep=query", "/one/two?keep=query"),
    ] {
        let r = infra.get(infra.same, "x", path).await;
        assert_eq!(
            expect_backend(&r, "infra-backend-v1").target,
            target,
            "{path}"
        );
    }
    let r = infra
        .request(
            infra.same,
            "GET",
            "x",
            "/full/rewrite-path-and-modify-headers/test",
            &[("X-Header-Remove", "r"), ("X-Header-Add", "a")],
        )
        .await;
    let echo = expect_backend(&r, "infra-backend-v1");
    assert_eq!(echo.target, "/test");
    assert_eq!(echo.header("x-header-set"), Some("set-overwrites-values"));
    assert_eq!(echo.header("x-header-add"), Some("a,header-val-1"));
    assert_eq!(echo.header("x-header-remove"), None);
    let r = infra.get(infra.same, "x", "/rewrite-host").await;
    assert_eq!(
        expect_backend(&r, "infra-backend-v1").host,
        "one.example.org"
    );
    infra.shutdown().await;
}

/// A backend that counts requests and answers after `delay`.
async fn counting(delay: Duration) -> (Backend, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let b = Backend::start(move |req| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Response::builder()
                .header("x-mirror-saw", req.uri().path())
                .body(full("mirror"))
                .unwrap()
        }
    })
    .await;
    (b, n)
}

#[tokio::test]
async fn http_route_request_mirror_never_slows_the_request() {
    // One mirror answers at once, the other only after ten seconds: the
    // request is not held up by either, and requests with a body are not
    // mirrored.
    let (quick, quick_n) = counting(Duration::ZERO).await;
    let (slow, slow_n) = counting(Duration::from_secs(10)).await;
    let mut m =
        service(INFRA, "mirror-quick", quick.addr) + &service(INFRA, "mirror-slow", slow.addr);
    m += &route(
        "mirror",
        "  - filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-quick, port: 8080}}}\n    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-slow, port: 8080}}}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    let started = Instant::now();
    for _ in 0..5 {
        let r = infra.get(infra.same, "x", "/mirrored").await;
        assert_eq!(expect_backend(&r, "infra-backend-v1").target, "/mirrored");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow mirror held requests up: {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while quick_n.load(Ordering::SeqCst) < 5 || slow_n.load(Ordering::SeqCst) < 5 {
        assert!(
            Instant::now() < deadline,
            "mirrors got {} and {}",
            quick_n.load(Ordering::SeqCst),
            slow_n.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], infra.same));
    let req = http::Request::post("/with-body")
        .header("host", "x")
        .body(full("payload"))
        .unwrap();
    let r = crate::common::send(addr, req).await.unwrap();
    expect_backend(&r, "infra-backend-v1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        quick_n.load(Ordering::SeqCst),
        5,
        "a request with a body was mirrored"
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_request_percentage_mirror() {
    let (half, half_n) = counting(Duration::ZERO).await;
    let (none, none_n) = counting(Duration::ZERO).await;
    let mut m =
        service(INFRA, "mirror-half", half.addr) + &service(INFRA, "mirror-none", none.addr);
    m += &route(
        "mirror",
        "  - filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-half, port: 8080}, fraction: {numerator: 1, denominator: 2}}}\n    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-none, port: 8080}, percent: 0}}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    for _ in 0..200 {
        infra.get(infra.same, "x", "/").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = half_n.load(Ordering::SeqCst);
    // Binomial(200, 1/2): outside 60..=140 with probability below 1e-8.
    assert!((60..=140).contains(&n), "{n} of 200 mirrored");
    assert_eq!(none_n.load(Ordering::SeqCst), 0);
    infra.shutdown().await;
}

#[tokio::test]
async fn http_route_timeout_request() {
    let (slow, _) = counting(Duration::from_secs(3)).await;
    let mut m = service(INFRA, "slow", slow.addr);
    m += &route(
        "timeouts",
        "  - matches: [{path: {type: PathPrefix, value: /slow}}]\n    timeouts: {request: 200ms}\n    backendRefs: [{name: slow, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /patient}}]\n    timeouts: {request: 0s}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    let r = infra.get(infra.same, "x", "/slow").await;
    assert_eq!(r.status, 504, "{}", r.text());
    expect_backend(
        &infra.get(infra.same, "x", "/patient").await,
        "infra-backend-v1",
    );
    infra.shutdown().await;
}

/// The suite's HTTPRouteTimeoutBackendRequest, with a backend that
/// answers after a second in place of the suite's `?delay=1s`.
#[tokio::test]
async fn http_route_timeout_backend_request() {
    let (slow, slow_n) = counting(Duration::from_secs(1)).await;
    let mut m = service(INFRA, "slow", slow.addr);
    m += &route(
        "backend-request-timeout",
        "  - matches: [{path: {type: PathPrefix, value: /backend-timeout}}]\n    timeouts: {backendRequest: 500ms}\n    backendRefs: [{name: infra-backend-v1, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /slow-backend-timeout}}]\n    timeouts: {backendRequest: 500ms}\n    backendRefs: [{name: slow, port: 8080}]\n  - matches: [{path: {type: PathPrefix, value: /disable-backend-timeout}}]\n    timeouts: {backendRequest: 0s}\n    backendRefs: [{name: slow, port: 8080}]\n",
    );
    let infra = Infra::start(&m).await;
    expect_backend(
        &infra.get(infra.same, "x", "/backend-timeout").await,
        "infra-backend-v1",
    );
    let r = infra.get(infra.same, "x", "/slow-backend-timeout").await;
    assert_eq!(r.status, 504, "{}", r.text());
    let r = infra.get(infra.same, "x", "/disable-backend-timeout").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-mirror-saw"), Some("/disable-backend-timeout"));
    assert_eq!(slow_n.load(Ordering::SeqCst), 2);
    assert_eq!(
        infra.route_condition(
            (Kind::HTTPRoute, INFRA, "backend-request-timeout"),
            "same-namespace",
            "ResolvedRefs"
        ),
        Some((true, "ResolvedRefs".into()))
    );
    infra.shutdown().await;
}

#[tokio::test]
async fn extension_ref_attaches_plugin_configs() {
    let mut m = format!(
        "---\napiVersion: sluicegate.io/v1alpha1\nkind: PluginConfig\nmetadata: {{name: ids, namespace: {INFRA}}}\nspec:\n  plugins:\n    requestId: {{header: X-Trace-Id}}\n---\napiVersion: sluicegate.io/v1alpha1\nkind: PluginConfig\nmetadata: {{name: deny-local, namespace: {INFRA}}}\nspec:\n  plugins:\n    ipRestriction: {{deny: [127.0.0.0/8]}}\n"
    );
    let ext = |name: &str| {
        format!(
            "{{type: ExtensionRef, extensionRef: {{group: sluicegate.io, kind: PluginConfig, name: {name}}}}}"
        )
    };
    let mut rules = String::new();
    rules += &rule("/ids", &format!("[{}]", ext("ids")));
    rules += &rule("/denied", &format!("[{}]", ext("deny-local")));
    rules += &rule("/missing", &format!("[{}]", ext("does-not-exist")));
    rules += &rule(
        "/unknown-kind",
        "[{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: x}}]",
    );
    m += &route("plugins", &rules);
    let infra = Infra::start(&m).await;
    let r = infra.get(infra.same, "x", "/ids").await;
    let echo = expect_backend(&r, "infra-backend-v1");
    let id = echo
        .header("x-trace-id")
        .expect("the plugin's header reaches the backend");
    assert_eq!(r.header("x-trace-id"), Some(id));
    assert_eq!(infra.get(infra.same, "x", "/denied").await.status, 403);
    assert_eq!(infra.get(infra.same, "x", "/missing").await.status, 500);
    assert_eq!(
        infra.get(infra.same, "x", "/unknown-kind").await.status,
        500
    );
    assert_eq!(
        infra.route_condition(
            (Kind::HTTPRoute, INFRA, "plugins"),
            "same-namespace",
            "ResolvedRefs"
        ),
        Some((false, "PluginConfigNotFound".into()))
    );
    infra.shutdown().await;
}
