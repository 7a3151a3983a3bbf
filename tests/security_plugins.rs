//! Security plugins through the real proxy: address allow and deny lists
//! (with `X-Forwarded-For` from trusted proxies), CORS preflights answered
//! by the gateway and CORS headers on every answer, body and header
//! limits (bodies without a length counted as they stream), `User-Agent`
//! rules, and invalid settings keeping only their own route out.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, channel::Channel};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A backend answering `200 app`, or `404` under `/missing`.
async fn app() -> Backend {
    Backend::start(|req| async move {
        let status = if req.uri().path().starts_with("/missing") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        http::Response::builder()
            .status(status)
            .header("x-total", "7")
            .body(full("app"))
            .unwrap()
    })
    .await
}

async fn gateway(routes: &[(&str, &str)]) -> (TestGateway, Backend) {
    let b = app().await;
    let mut m = service("app", &[b.addr]);
    for (name, plugins) in routes {
        m.push_str(&limited_route(name, plugins, None));
    }
    (TestGateway::start(&m).await, b)
}

async fn status(gw: &TestGateway, host: &str, headers: &[(&str, &str)]) -> u16 {
    request(gw.http(), "GET", host, "/", headers)
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn addresses_are_allowed_and_denied_by_range() {
    let (gw, _b) = gateway(&[
        ("inside", "{ipRestriction: {allow: [\"10.0.0.0/8\", \"127.0.0.0/8\"]}}"),
        ("outside", "{ipRestriction: {allow: [\"10.0.0.0/8\", \"::1\"]}}"),
        (
            "denied",
            "{ipRestriction: {allow: [\"0.0.0.0/0\"], deny: [\"127.0.0.1/32\"], rejectedCode: 451, rejectedMessage: \"go away\"}}",
        ),
        ("deny-other", "{ipRestriction: {deny: [\"192.0.2.0/24\", \"2001:db8::/32\"]}}"),
    ])
    .await;
    assert_eq!(status(&gw, "inside.test", &[]).await, 200);
    let r = get(gw.http(), "outside.test", "/").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.text(), "403 Forbidden: address not allowed\n");
    // Deny is checked before allow.
    let r = get(gw.http(), "denied.test", "/").await;
    assert_eq!(r.status.as_u16(), 451);
    assert_eq!(r.text(), "go away");
    assert_eq!(status(&gw, "deny-other.test", &[]).await, 200);
    // Without trusted proxies, X-Forwarded-For is the client's own say.
    assert_eq!(
        status(&gw, "outside.test", &[("x-forwarded-for", "10.1.1.1")]).await,
        403
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn trusted_proxies_hand_over_the_forwarded_client() {
    let (gw, _b) = gateway(&[
        (
            "behind-lb",
            "{ipRestriction: {allow: [\"203.0.113.0/24\"], trustedProxies: [\"127.0.0.0/8\", \"10.0.0.0/8\"]}}",
        ),
        (
            "lb-untrusted",
            "{ipRestriction: {allow: [\"203.0.113.0/24\"], trustedProxies: [\"10.0.0.0/8\"]}}",
        ),
    ])
    .await;
    let h = "behind-lb.test";
    // The peer (127.0.0.1) is trusted: the right-most untrusted hop counts.
    assert_eq!(
        status(&gw, h, &[("x-forwarded-for", "203.0.113.5")]).await,
        200
    );
    assert_eq!(
        status(
            &gw,
            h,
            &[("x-forwarded-for", "198.51.100.1, 203.0.113.5, 10.0.0.2")]
        )
        .await,
        200
    );
    // Spoofed entries left of the real client do not help.
    assert_eq!(
        status(&gw, h, &[("x-forwarded-for", "203.0.113.5, 198.51.100.1")]).await,
        403
    );
    // Several instances form one list.
    assert_eq!(
        status(
            &gw,
            h,
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "10.0.0.3")
            ]
        )
        .await,
        200
    );
    // No header, or garbage: the last trusted hop, which is not allowed.
    assert_eq!(status(&gw, h, &[]).await, 403);
    assert_eq!(
        status(&gw, h, &[("x-forwarded-for", "203.0.113.5, not-an-ip")]).await,
        403
    );
    // A peer that is not trusted is the client, whatever it forwards.
    assert_eq!(
        status(
            &gw,
            "lb-untrusted.test",
            &[("x-forwarded-for", "203.0.113.5")]
        )
        .await,
        403
    );
    gw.shutdown().await;
}

async fn preflight(
    gw: &TestGateway,
    host: &str,
    origin: &str,
    method: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut headers = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    headers.extend_from_slice(extra);
    request(gw.http(), "OPTIONS", host, "/", &headers).await
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway() {
    let (gw, _b) = gateway(&[
        (
            "shop",
            "{cors: {allowOrigins: [\"https://shop.example.com\", \"https://*.example.org\"], allowMethods: [GET, PUT], allowHeaders: [x-token, content-type], maxAge: 1m}}",
        ),
        ("open", "{cors: {}}"),
        ("creds", "{cors: {allowOrigins: [\"*\"], allowCredentials: true}}"),
    ])
    .await;

    let r = preflight(&gw, "shop.test", "https://SHOP.example.com", "PUT", &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://SHOP.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-token, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert!(r.body.is_empty());
    // The upstream never sees the preflight.
    assert_ne!(r.text(), "app");

    // One-label wildcard.
    let r = preflight(&gw, "shop.test", "https://eu.example.org", "GET", &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://eu.example.org")
    );
    for (origin, method) in [
        ("https://a.b.example.org", "GET"),
        ("https://example.org", "GET"),
        ("https://evil.test", "GET"),
        ("https://shop.example.com", "DELETE"),
    ] {
        let r = preflight(&gw, "shop.test", origin, method, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin} {method}");
        assert!(
            !r.headers
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{origin} {method}: {:?}",
            r.headers
        );
    }

    // Defaults: any origin as `*`, the usual methods, requested headers
    // echoed, five seconds.
    let r = preflight(
        &gw,
        "open.test",
        "https://x.test",
        "PATCH",
        &[("access-control-request-headers", "x-a, x-b")],
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("PATCH")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("x-a, x-b"));
    assert_eq!(r.header("access-control-max-age"), Some("5"));

    // Credentials: the origin is echoed, never `*`.
    let r = preflight(&gw, "creds.test", "https://x.test", "POST", &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://x.test")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));

    // OPTIONS without Access-Control-Request-Method is no preflight.
    let r = request(
        gw.http(),
        "OPTIONS",
        "open.test",
        "/",
        &[("origin", "https://x.test")],
    )
    .await;
    assert_eq!(r.text(), "app");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    gw.shutdown().await;
}

#[tokio::test]
async fn cors_headers_go_on_every_answer() {
    let (gw, _b) = gateway(&[
        (
            "api",
            "{cors: {allowOrigins: [\"https://app.example.com\"], allowCredentials: true, exposeHeaders: [x-total]}}",
        ),
        (
            "locked",
            "{cors: {allowOrigins: [\"https://app.example.com\"]}, keyAuth: {}}",
        ),
    ])
    .await;
    let origin = [("origin", "https://app.example.com")];
    let r = request(gw.http(), "GET", "api.test", "/", &origin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "app");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-total"));
    assert_eq!(r.header("vary"), Some("Origin"));

    // The upstream's 404.
    let r = request(gw.http(), "GET", "api.test", "/missing", &origin).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );

    // The gateway's own 401, from a plugin that runs later.
    let r = request(gw.http(), "GET", "locked.test", "/", &origin).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );

    // Another origin, or none: no CORS headers.
    let r = request(
        gw.http(),
        "GET",
        "api.test",
        "/",
        &[("origin", "https://evil.test")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = get(gw.http(), "api.test", "/").await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), None);
    gw.shutdown().await;
}

#[tokio::test]
async fn declared_bodies_over_the_limit_get_413() {
    let (gw, _b) = gateway(&[("upload", "{requestBodyLimit: {maxBytes: 1000}}")]).await;
    let post = |len: usize| {
        let req = http::Request::post("/")
            .header("host", "upload.test")
            .body(full(vec![b'x'; len]))
            .unwrap();
        send(gw.http(), req)
    };
    assert_eq!(post(1000).await.unwrap().status, StatusCode::OK);
    let r = post(1001).await.unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("at most 1000 bytes"), "{}", r.text());
    assert_eq!(status(&gw, "upload.test", &[]).await, 200);
    gw.shutdown().await;
}

/// What a backend got of each request body: its length, and whether it
/// ended properly.
type Seen = Arc<Mutex<Vec<(usize, bool)>>>;

/// A backend that reads the whole body before answering `got N`.
async fn recorder(seen: Seen) -> Backend {
    Backend::start(move |req| {
        let seen = seen.clone();
        async move {
            let mut body = req.into_body();
            let (mut len, mut complete) = (0, true);
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => len += f.into_data().map_or(0, |d| d.len()),
                    Err(_) => {
                        complete = false;
                        break;
                    }
                }
            }
            seen.lock().unwrap().push((len, complete));
            http::Response::new(full(format!("got {len}")))
        }
    })
    .await
}

/// A body of `chunks` chunks of `size` bytes, without a length: chunked
/// over HTTP/1.1, plain DATA frames over HTTP/2.
fn streamed(chunks: usize, size: usize) -> BoxBody {
    let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; size]);
            if tx.send_data(chunk).await.is_err() {
                return;
            }
        }
    });
    body.boxed()
}

/// Sends a request over HTTP/2 (prior knowledge).
async fn send_h2(addr: std::net::SocketAddr, req: http::Request<BoxBody>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn bodies_without_a_length_are_counted_as_they_stream() {
    let seen = Seen::default();
    let b = recorder(seen.clone()).await;
    // The same backend over HTTP/1.1 and over h2c (hyper's client).
    let m = service("app", &[b.addr])
        + &service_with("app-h2", &[b.addr], Some("kubernetes.io/h2c"))
        + &limited_route("upload", "{requestBodyLimit: {maxBytes: 1000}}", None)
        + &limited_route("upload-h2", "{requestBodyLimit: {maxBytes: 1000}}", None)
            .replace("serviceName: app,", "serviceName: app-h2,");
    let gw = TestGateway::start(&m).await;
    let addr = gw.http();
    for host in ["upload.test", "upload-h2.test"] {
        for h2_client in [false, true] {
            let case = format!("{host}, client h2: {h2_client}");
            let post = |chunks, size| {
                let mut req = http::Request::post(format!("http://{host}/"));
                if !h2_client {
                    req = req.header("host", host);
                }
                let req = req.body(streamed(chunks, size)).unwrap();
                async move {
                    if h2_client {
                        send_h2(addr, req).await
                    } else {
                        send(addr, req).await.unwrap()
                    }
                }
            };
            // Within the limit (exactly at it, too): forwarded intact.
            seen.lock().unwrap().clear();
            let r = post(4, 250).await;
            assert_eq!(r.status, StatusCode::OK, "{case}");
            assert_eq!(r.text(), "got 1000", "{case}");
            assert_eq!(*seen.lock().unwrap(), [(1000, true)], "{case}");

            // Past it: 413, and the upstream never gets a complete body.
            seen.lock().unwrap().clear();
            let r = post(10, 300).await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{case}");
            assert!(
                r.text().contains("at most 1000 bytes"),
                "{case}: {}",
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (len, complete) in seen.lock().unwrap().iter() {
                assert!(!complete && *len <= 1000, "{case}: backend got {len} bytes");
            }
        }
    }
    // Declared lengths are still refused before anything is sent.
    seen.lock().unwrap().clear();
    let req = http::Request::post("/")
        .header("host", "upload.test")
        .body(full(vec![b'x'; 1001]))
        .unwrap();
    assert_eq!(
        send(gw.http(), req).await.unwrap().status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let req = http::Request::post("/")
        .header("host", "upload.test")
        .body(full(vec![b'x'; 999]))
        .unwrap();
    assert_eq!(send(gw.http(), req).await.unwrap().text(), "got 999");
    assert_eq!(*seen.lock().unwrap(), [(999, true)]);
    gw.shutdown().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431() {
    let (gw, _b) = gateway(&[(
        "strict",
        "{headerLimits: {maxCount: 12, maxValueBytes: 256, maxTotalBytes: 1024}}",
    )])
    .await;
    let h = "strict.test";
    assert_eq!(status(&gw, h, &[("x-a", "1")]).await, 200);
    let big = "v".repeat(257);
    let r = request(gw.http(), "GET", h, "/", &[("x-big", &big)]).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(r.text().contains("value"), "{}", r.text());
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(status(&gw, h, &many).await, 431);
    let medium = "v".repeat(250);
    let total: Vec<(&str, &str)> = ["x-1", "x-2", "x-3", "x-4", "x-5"]
        .iter()
        .map(|k| (*k, medium.as_str()))
        .collect();
    assert_eq!(status(&gw, h, &total).await, 431);
    gw.shutdown().await;
}

#[tokio::test]
async fn user_agents_are_allowed_and_denied_by_pattern() {
    let (gw, _b) = gateway(&[
        (
            "browsers",
            "{uaRestriction: {allow: ['Mozilla/5\\.0 .*'], deny: ['.*[Bb]ot.*']}}",
        ),
        (
            "no-scanners",
            "{uaRestriction: {deny: ['sqlmap.*', ''], rejectedCode: 418}}",
        ),
    ])
    .await;
    let ua = |v: &'static str| [("user-agent", v)];
    let h = "browsers.test";
    assert_eq!(status(&gw, h, &ua("Mozilla/5.0 (X11; Linux)")).await, 200);
    assert_eq!(status(&gw, h, &ua("Mozilla/5.0 Googlebot")).await, 403);
    assert_eq!(status(&gw, h, &ua("curl/8.5.0")).await, 403);
    // Whole-value match: the allowed text inside another agent is not enough.
    assert_eq!(status(&gw, h, &ua("x Mozilla/5.0 y")).await, 403);
    assert_eq!(status(&gw, h, &[]).await, 403);
    let h = "no-scanners.test";
    assert_eq!(status(&gw, h, &ua("curl/8.5.0")).await, 200);
    let r = request(gw.http(), "GET", h, "/", &ua("sqlmap/1.7")).await;
    assert_eq!(r.status.as_u16(), 418);
    assert!(r.text().contains("user agent not allowed"), "{}", r.text());
    // A missing agent is the empty string.
    assert_eq!(status(&gw, h, &[]).await, 418);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_settings_keep_only_their_route_out() {
    let (gw, _b) = gateway(&[
        (
            "bad-cidr",
            "{ipRestriction: {allow: [\"10.0.0.0/8\", \"10.0.0.0/33\"]}}",
        ),
        ("bad-regex", "{uaRestriction: {deny: ['(unclosed']}}"),
        (
            "bad-origin",
            "{cors: {allowOrigins: [\"https://a.example/\"]}}",
        ),
        (
            "fine",
            "{ipRestriction: {allow: [\"127.0.0.1\"]}, cors: {}}",
        ),
    ])
    .await;
    for host in ["bad-cidr.test", "bad-regex.test", "bad-origin.test"] {
        assert_eq!(status(&gw, host, &[]).await, 404, "{host}");
    }
    assert_eq!(status(&gw, "fine.test", &[]).await, 200);
    let routes = admin_get(&gw, "/routes").await.text();
    for needle in [
        "spec.routes[0].plugins.ipRestriction.allow[1]",
        "10.0.0.0/33",
        "spec.routes[0].plugins.uaRestriction.deny[0]",
        "spec.routes[0].plugins.cors.allowOrigins[0]",
    ] {
        assert!(routes.contains(needle), "{needle}: {routes}");
    }
    gw.shutdown().await;
}
