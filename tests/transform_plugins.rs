//! Transformation plugins through the real proxy: path rewrites (regular
//! expressions with captures, prefixes, fixed paths) keeping the query,
//! `Host` and header edits reaching the upstream, response rewrites,
//! templated redirects, request ids generated or kept, mocks that never
//! call the backend, and invalid settings reported without taking other
//! routes down.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use http::StatusCode;

/// A backend answering with what it got: the request target, then every
/// header as `name: value` lines. It counts the requests it sees, and
/// sends a header and body that response rewrites can replace.
async fn echo(calls: Arc<AtomicUsize>) -> Backend {
    Backend::start(move |req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut body = format!("uri={}\n", req.uri());
            for (name, value) in req.headers() {
                body.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            http::Response::builder()
                .header("x-backend-secret", "s3cret")
                .header("content-type", "text/plain")
                .body(full(body))
                .unwrap()
        }
    })
    .await
}

/// Starts a gateway with one echo backend and the given routes.
async fn gateway(routes: &[(&str, &str)]) -> (TestGateway, Backend, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let b = echo(calls.clone()).await;
    let mut m = service("app", &[b.addr]);
    for (name, plugins) in routes {
        m.push_str(&limited_route(name, plugins, None));
    }
    (TestGateway::start(&m).await, b, calls)
}

/// The lines of an echo answer for header `name`.
fn seen<'r>(r: &'r Reply, name: &str) -> Vec<&'r str> {
    let prefix = format!("{name}: ");
    r.body
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok()?.strip_prefix(prefix.as_str()))
        .collect()
}

fn target(r: &Reply) -> String {
    r.text()
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("uri="))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn paths_are_rewritten_and_the_query_is_kept() {
    let (gw, _b, _) = gateway(&[
        (
            "regex",
            r#"{proxyRewrite: {regexUri: {pattern: "^/api/v(\\d+)/(?P<rest>.*)", replacement: "/v$1/${rest}"}}}"#,
        ),
        (
            "broken",
            r#"{proxyRewrite: {regexUri: {pattern: "^/raw/(.*)$", replacement: "$1"}}}"#,
        ),
        ("strip", "{proxyRewrite: {stripPrefix: /api, replacePrefix: /v2}}"),
        ("bare", "{proxyRewrite: {stripPrefix: /api/}}"),
        ("fixed", "{proxyRewrite: {uri: /fixed}}"),
    ])
    .await;
    let at = |host: &'static str, path: &'static str| get(gw.http(), host, path);
    for (host, path, expected) in [
        (
            "regex.test",
            "/api/v2/users/7?x=1&y=2",
            "/v2/users/7?x=1&y=2",
        ),
        ("regex.test", "/api/v10/", "/v10/"),
        // No match: the path is forwarded as it came.
        ("regex.test", "/other?q=1", "/other?q=1"),
        ("strip.test", "/api/x/y?q=1", "/v2/x/y?q=1"),
        ("strip.test", "/api", "/v2"),
        ("strip.test", "/apix", "/apix"),
        ("bare.test", "/api", "/"),
        ("bare.test", "/api?q=1", "/?q=1"),
        ("bare.test", "/api/a", "/a"),
        ("fixed.test", "/anything/at/all?k=v", "/fixed?k=v"),
        ("fixed.test", "/", "/fixed"),
    ] {
        let r = at(host, path).await;
        assert_eq!(r.status, StatusCode::OK, "{host}{path}");
        assert_eq!(target(&r), expected, "{host}{path}");
    }
    // A rewrite that no longer yields a path is the client's problem, not
    // something to forward.
    let r = at("broken.test", "/raw/abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("rewritten path"), "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn host_and_headers_reach_the_upstream() {
    let (gw, _b, _) = gateway(&[(
        "edit",
        "{proxyRewrite: {host: internal.example:8080, headers: {set: {X-Set: one}, add: {x-add: two}, remove: [x-drop]}}}",
    )])
    .await;
    let r = request(
        gw.http(),
        "GET",
        "edit.test",
        "/p?q=1",
        &[
            ("x-set", "client"),
            ("x-add", "client"),
            ("x-drop", "secret"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(target(&r), "/p?q=1", "only the host and headers change");
    assert_eq!(seen(&r, "host"), ["internal.example:8080"]);
    assert_eq!(seen(&r, "x-set"), ["one"]);
    assert_eq!(seen(&r, "x-add"), ["client, two"]);
    assert!(seen(&r, "x-drop").is_empty(), "{}", r.text());

    // Without a client value, `add` is just the value.
    let r = get(gw.http(), "edit.test", "/").await;
    assert_eq!(seen(&r, "x-add"), ["two"]);
    assert_eq!(seen(&r, "x-set"), ["one"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn responses_are_rewritten() {
    let (gw, _b, _) = gateway(&[
        (
            "resp",
            r#"{responseRewrite: {statusCode: 202, headers: {set: {x-powered-by: gate}, add: {x-extra: "1"}, remove: [x-backend-secret]}, body: "replaced\n"}}"#,
        ),
        ("headers-only", "{responseRewrite: {headers: {set: {x-frame-options: DENY}}}}"),
    ])
    .await;
    let r = get(gw.http(), "resp.test", "/").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.text(), "replaced\n");
    assert_eq!(r.header("x-powered-by"), Some("gate"));
    assert_eq!(r.header("x-extra"), Some("1"));
    assert_eq!(r.header("x-backend-secret"), None);
    assert_eq!(r.header("content-length"), Some("9"));

    // Only headers: the upstream's status and body go through.
    let r = get(gw.http(), "headers-only.test", "/a?b=c").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-backend-secret"), Some("s3cret"));
    assert_eq!(target(&r), "/a?b=c");
    gw.shutdown().await;
}

#[tokio::test]
async fn redirects_fill_in_their_template() {
    let (gw, _b, calls) = gateway(&[
        (
            "moved",
            r#"{redirect: {uri: "https://{host}/new{path}?from=old&{query}", code: 301}}"#,
        ),
        (
            "full",
            r#"{redirect: {uri: "https://example.com{request_uri}"}}"#,
        ),
    ])
    .await;
    let r = get(gw.http(), "moved.test", "/old/page?a=1&b=2").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location"),
        Some("https://moved.test/new/old/page?from=old&a=1&b=2")
    );
    // The port is not part of {host}.
    let r = get(gw.http(), "moved.test:8080", "/x").await;
    assert_eq!(
        r.header("location"),
        Some("https://moved.test/new/x?from=old&")
    );

    let r = get(gw.http(), "full.test", "/p?q=1").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("https://example.com/p?q=1"));
    let r = get(gw.http(), "full.test", "/p").await;
    assert_eq!(r.header("location"), Some("https://example.com/p"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "redirects never reach the backend"
    );
    gw.shutdown().await;
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn request_ids_are_generated_or_kept_and_propagated() {
    let (gw, _b, _) = gateway(&[
        ("rid", "{requestId: {}}"),
        (
            "quiet",
            "{requestId: {header: X-Trace, includeInResponse: false}}",
        ),
    ])
    .await;
    // Generated: the same id upstream and in the response, new each time.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = get(gw.http(), "rid.test", "/").await;
        let id = r.header("x-request-id").unwrap_or("").to_owned();
        assert!(is_generated_id(&id), "{id:?}");
        assert_eq!(seen(&r, "x-request-id"), [id.as_str()]);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);

    // A client's sane id is kept.
    let r = request(
        gw.http(),
        "GET",
        "rid.test",
        "/",
        &[("x-request-id", "trace-42")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    assert_eq!(seen(&r, "x-request-id"), ["trace-42"]);

    // Others are replaced, upstream and in the response.
    let long = "a".repeat(201);
    for bad in ["has space", long.as_str()] {
        let r = request(gw.http(), "GET", "rid.test", "/", &[("x-request-id", bad)]).await;
        let id = r.header("x-request-id").unwrap_or("").to_owned();
        assert!(is_generated_id(&id), "{bad}: {id:?}");
        assert_eq!(seen(&r, "x-request-id"), [id.as_str()]);
    }

    // Another header, upstream only.
    let r = get(gw.http(), "quiet.test", "/").await;
    assert_eq!(r.header("x-trace"), None);
    let upstream = seen(&r, "x-trace");
    assert!(
        upstream.len() == 1 && is_generated_id(upstream[0]),
        "{}",
        r.text()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn mocks_answer_without_calling_the_backend() {
    let (gw, _b, calls) = gateway(&[
        (
            "mock",
            r#"{requestId: {}, mocking: {statusCode: 418, body: "{\"ok\":true}", contentType: application/json, headers: {x-mock: "yes"}}}"#,
        ),
        ("plain", r#"{mocking: {body: "hello"}}"#),
    ])
    .await;
    let r = request(gw.http(), "POST", "mock.test", "/any/path", &[]).await;
    assert_eq!(r.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(r.text(), r#"{"ok":true}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-mock"), Some("yes"));
    // Headers of earlier plugins go on the mocked answer too.
    assert!(is_generated_id(r.header("x-request-id").unwrap_or("")));

    let r = get(gw.http(), "plain.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "hello");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_settings_keep_only_their_route_out() {
    let (gw, _b, _) = gateway(&[
        (
            "bad-regex",
            r#"{proxyRewrite: {regexUri: {pattern: "(", replacement: "/"}}}"#,
        ),
        ("two-modes", "{proxyRewrite: {uri: /a, stripPrefix: /b}}"),
        ("bad-code", "{redirect: {uri: /x, code: 200}}"),
        ("bad-var", r#"{redirect: {uri: "/{nope}"}}"#),
        ("fine", "{proxyRewrite: {uri: /ok}}"),
    ])
    .await;
    for host in [
        "bad-regex.test",
        "two-modes.test",
        "bad-code.test",
        "bad-var.test",
    ] {
        assert_eq!(
            get(gw.http(), host, "/").await.status,
            StatusCode::NOT_FOUND,
            "{host}"
        );
    }
    let r = get(gw.http(), "fine.test", "/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(target(&r), "/ok");
    let routes = admin_get(&gw, "/routes").await.text();
    for needle in [
        "spec.routes[0].plugins.proxyRewrite.regexUri.pattern",
        "uri, regexUri and stripPrefix are alternatives",
        "spec.routes[0].plugins.redirect.code",
        "200 is not a redirect status",
        "unknown variable {nope}",
    ] {
        assert!(routes.contains(needle), "{needle}: {routes}");
    }
    gw.shutdown().await;
}
