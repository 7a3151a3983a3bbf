//! `gzip` and `brotli` through the real proxy: bodies decode back to the
//! upstream's, `Accept-Encoding` is negotiated with q-values (Brotli on a
//! tie), what must not be compressed is passed as it is, a streamed
//! response is compressed as it comes (each pause flushed, so the client
//! can read what arrived), and trailers follow a compressed body.

use crate::common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, channel::Channel};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A page that compresses well, longer than the default `minLength`.
fn page() -> String {
    (0..400)
        .map(|i| format!("<p>paragraph {i} of a page that compresses well</p>\n"))
        .collect()
}

fn reply(content_type: &str, body: impl Into<Bytes>) -> Response<BoxBody> {
    Response::builder()
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

/// A backend whose path says what it answers.
async fn app() -> Backend {
    Backend::start(|req| async move {
        match req.uri().path() {
            "/page" => {
                let mut r = reply("text/html; charset=utf-8", page());
                r.headers_mut()
                    .insert("etag", HeaderValue::from_static("\"v1\""));
                r
            }
            "/small" => reply("text/html", "<p>tiny</p>"),
            "/png" => reply("image/png", vec![7u8; 4096]),
            "/svg" => reply("IMAGE/SVG+XML", page()),
            "/encoded" => {
                let mut r = reply("text/html", page());
                r.headers_mut()
                    .insert("content-encoding", HeaderValue::from_static("zstd"));
                r
            }
            "/no-transform" => {
                let mut r = reply("application/json", page());
                r.headers_mut()
                    .insert("cache-control", HeaderValue::from_static("no-transform"));
                r
            }
            _ => reply("text/plain", "not here"),
        }
    })
    .await
}

fn route(name: &str, plugins: &str) -> String {
    limited_route(name, plugins, None)
}

async fn gateway(routes: &[(&str, &str)]) -> (TestGateway, Backend) {
    let b = app().await;
    let mut m = service("app", &[b.addr]);
    for (name, plugins) in routes {
        m.push_str(&route(name, plugins));
    }
    (TestGateway::start(&m).await, b)
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The body as the client would read it after undoing its coding.
fn decoded(r: &Reply) -> Vec<u8> {
    match r.header("content-encoding") {
        None => r.body.to_vec(),
        Some("gzip") => gunzip(&r.body),
        Some("br") => unbrotli(&r.body),
        Some(other) => panic!("unexpected coding {other}"),
    }
}

fn get_ae(
    gw: &TestGateway,
    host: &str,
    path: &str,
    ae: Option<&str>,
) -> impl Future<Output = Reply> {
    let headers: Vec<(&str, &str)> = ae.map(|v| ("accept-encoding", v)).into_iter().collect();
    let (addr, host, path) = (gw.http(), host.to_owned(), path.to_owned());
    async move { request(addr, "GET", &host, &path, &headers).await }
}

#[tokio::test]
async fn gzip_and_brotli_bodies_decode_to_the_original() {
    let (gw, _b) = gateway(&[("both", "{gzip: {}, brotli: {}}")]).await;
    let original = page();
    for (ae, coding) in [("gzip", "gzip"), ("br", "br")] {
        let r = get_ae(&gw, "both.test", "/page", Some(ae)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        // The bytes are no longer the upstream's: the validator is weak.
        assert_eq!(r.header("etag"), Some("W/\"v1\""));
        assert!(
            r.body.len() < original.len() / 5,
            "{coding}: {} bytes",
            r.body.len()
        );
        assert_eq!(decoded(&r), original.as_bytes(), "{coding}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn accept_encoding_is_negotiated_with_q_values() {
    let (gw, _b) = gateway(&[
        ("both", "{gzip: {}, brotli: {}}"),
        ("gz", "{gzip: {level: 9}}"),
        ("br", "{brotli: {level: 11, vary: false}}"),
    ])
    .await;
    let original = page();
    for (host, ae, expected) in [
        ("both.test", None, None),
        ("both.test", Some("gzip;q=0"), None),
        ("both.test", Some("identity"), None),
        ("both.test", Some("br, gzip"), Some("br")),
        ("both.test", Some("gzip, br"), Some("br")),
        ("both.test", Some("*"), Some("br")),
        ("both.test", Some("gzip;q=1.0, br;q=0.5"), Some("gzip")),
        ("both.test", Some("*;q=0.1, br;q=0"), Some("gzip")),
        ("both.test", Some("deflate, compress"), None),
        ("gz.test", Some("br"), None),
        ("gz.test", Some("br, gzip;q=0.1"), Some("gzip")),
        ("gz.test", Some("*"), Some("gzip")),
        ("gz.test", Some("x-gzip"), Some("gzip")),
        ("br.test", Some("gzip, br"), Some("br")),
        ("br.test", Some("gzip"), None),
    ] {
        let r = get_ae(&gw, host, "/page", ae).await;
        assert_eq!(r.status, StatusCode::OK, "{host} {ae:?}");
        assert_eq!(r.header("content-encoding"), expected, "{host} {ae:?}");
        assert_eq!(decoded(&r), original.as_bytes(), "{host} {ae:?}");
        match expected {
            Some(_) => assert_eq!(r.header("content-length"), None),
            None => assert_eq!(
                r.header("content-length"),
                Some(original.len().to_string().as_str()),
                "{host} {ae:?}"
            ),
        }
        // Whether or not this client got it compressed, the answer
        // depends on Accept-Encoding, and caches must know.
        let vary = if host == "br.test" {
            None
        } else {
            Some("Accept-Encoding")
        };
        assert_eq!(r.header("vary"), vary, "{host} {ae:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn what_must_not_be_compressed_passes_as_it_is() {
    let (gw, _b) = gateway(&[
        ("both", "{gzip: {}, brotli: {}}"),
        ("typed", "{gzip: {types: [image/png], minLength: 5000}}"),
    ])
    .await;
    let ae = Some("gzip, br");
    // Below minLength.
    let r = get_ae(&gw, "both.test", "/small", ae).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), "<p>tiny</p>");
    assert_eq!(r.header("vary"), None);
    // A type not listed, and one listed in another case.
    let r = get_ae(&gw, "both.test", "/png", ae).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(&r.body[..], &[7u8; 4096][..]);
    let r = get_ae(&gw, "both.test", "/svg", ae).await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    // Already encoded: untouched, byte for byte.
    let r = get_ae(&gw, "both.test", "/encoded", ae).await;
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(r.body, page());
    // The upstream forbids transformations.
    let r = get_ae(&gw, "both.test", "/no-transform", ae).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, page());
    // HEAD: no body to compress, headers as the upstream sent them.
    let r = request(
        gw.http(),
        "HEAD",
        "both.test",
        "/page",
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(
        r.header("content-length"),
        Some(page().len().to_string().as_str())
    );
    // The route's own types and minLength.
    let r = get_ae(&gw, "typed.test", "/png", ae).await;
    assert_eq!(r.header("content-encoding"), None, "4096 < minLength 5000");
    let r = get_ae(&gw, "typed.test", "/page", ae).await;
    assert_eq!(r.header("content-encoding"), None, "text/html not listed");
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_settings_keep_their_route_out() {
    let (gw, _b) = gateway(&[
        ("bad-level", "{gzip: {level: 10}}"),
        (
            "bad-type",
            "{brotli: {types: [\"text/html; charset=utf-8\"]}}",
        ),
        ("fine", "{brotli: {level: 0}}"),
    ])
    .await;
    for host in ["bad-level.test", "bad-type.test"] {
        let r = get_ae(&gw, host, "/page", Some("gzip")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{host}");
    }
    let r = get_ae(&gw, "fine.test", "/page", Some("br")).await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(decoded(&r), page().as_bytes());
    let routes = admin_get(&gw, "/routes").await.text();
    for needle in ["plugins.gzip.level", "plugins.brotli.types[0]"] {
        assert!(routes.contains(needle), "{needle}: {routes}");
    }
    gw.shutdown().await;
}

/// Events sent one by one, the next only when the test says so.
async fn event_backend(next: std::sync::Arc<tokio::sync::Semaphore>) -> Backend {
    Backend::start(move |_req| {
        let next = next.clone();
        async move {
            let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
            tokio::spawn(async move {
                for i in 0..3 {
                    let Ok(permit) = next.acquire().await else {
                        return;
                    };
                    permit.forget();
                    let event = format!("data: event {i} {}\n\n", "x".repeat(300));
                    if tx.send_data(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body.boxed())
                .unwrap()
        }
    })
    .await
}

/// Feeds compressed frames to a decoder and returns what it decoded so
/// far.
struct Incremental {
    gzip: flate2::write::GzDecoder<Vec<u8>>,
}

impl Incremental {
    fn push(&mut self, data: &[u8]) -> String {
        self.gzip.write_all(data).unwrap();
        self.gzip.flush().unwrap();
        String::from_utf8(self.gzip.get_ref().clone()).unwrap()
    }
}

#[tokio::test]
async fn streamed_responses_are_compressed_as_they_come() {
    let next = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let b = event_backend(next.clone()).await;
    let m = service("app", &[b.addr]) + &route("sse", "{gzip: {types: [text/event-stream]}}");
    let gw = TestGateway::start(&m).await;

    let stream = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/events")
        .header("host", "sse.test")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    next.add_permits(1);
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let mut body = resp.into_body();
    let mut decoder = Incremental {
        gzip: flate2::write::GzDecoder::new(Vec::new()),
    };
    let mut seen = String::new();
    for i in 0..3 {
        // Each event is readable before the next one is even sent.
        while !seen.contains(&format!("event {i}")) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("event {i} held back"))
                .expect("more frames")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                seen = decoder.push(&data);
            }
        }
        assert!(!seen.contains(&format!("event {}", i + 1)), "{seen}");
        next.add_permits(1);
    }
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            seen = decoder.push(&data);
        }
    }
    decoder.gzip.try_finish().unwrap();
    let expected: String = (0..3)
        .map(|i| format!("data: event {i} {}\n\n", "x".repeat(300)))
        .collect();
    assert_eq!(seen, expected);
    gw.shutdown().await;
}

#[tokio::test]
async fn trailers_follow_a_compressed_body() {
    // An h2c backend answering a body of unknown length, then trailers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-checksum", HeaderValue::from_static("42"));
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from(page()))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(futures_util::stream::iter(frames));
                    let resp = Response::builder()
                        .header("content-type", "text/plain")
                        .body(body)
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let m = service_with("app", &[addr], Some("kubernetes.io/h2c"))
        + &route("trailers", "{brotli: {}}");
    let gw = TestGateway::start(&m).await;

    let stream = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://trailers.test/")
        .header("accept-encoding", "br")
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-encoding"], "br");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"42"[..])
    );
    assert_eq!(unbrotli(&collected.to_bytes()), page().as_bytes());
    server.abort();
    gw.shutdown().await;
}
