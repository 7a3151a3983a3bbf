//! The proxy's own HTTP/1.1 server, spoken to byte by byte: pipelining,
//! keep-alive rules of HTTP/1.0 and 1.1, request body framing (length,
//! chunked, `Expect: 100-continue`), response framing (length, chunked,
//! close-delimited, `HEAD`), refusal of unreadable requests, and the head
//! read and keep-alive timeouts. Every case runs on the plain and on the
//! TLS listener: one HTTP/1.1 engine serves both.

use crate::common;
use crate::on_both_listeners;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::wire::{Listener, Raw};
use common::*;
use http::Response;
use http_body_util::{BodyExt, channel::Channel};

const HOST: &str = "h1.test";

fn route() -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: h1}}
spec:
  hosts: [{HOST}]
  routes:
  - name: r
    backends: [{{serviceName: echo, servicePort: 80}}]
"#
    )
}

/// A backend that answers `METHOD PATH BODY`; `/stream` answers in three
/// pieces without a length; `/slow` waits 100 ms first.
async fn echo() -> Backend {
    Backend::start(|req| async move {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if path == "/stream" {
            let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
            tokio::spawn(async move {
                for piece in ["one,", "two,", "three"] {
                    if tx.send_data(Bytes::from(piece)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            return Response::new(body.boxed());
        }
        if path == "/slow" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let framing = match (
            req.headers().get("content-length"),
            req.headers().get("transfer-encoding"),
        ) {
            (Some(n), _) => format!("length {}", n.to_str().unwrap()),
            (None, Some(_)) => "chunked".to_owned(),
            (None, None) => "none".to_owned(),
        };
        let big = req
            .headers()
            .get("x-big")
            .map_or(0, |v| v.as_bytes().iter().filter(|&&b| b == b'b').count());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let text = format!("{method} {path} {}", String::from_utf8_lossy(&body));
        Response::builder()
            .header("x-len", body.len())
            .header("x-big", big)
            .header("x-framing", framing)
            .body(full(text))
            .unwrap()
    })
    .await
}

/// A gateway with the given header read and keep-alive timeouts.
async fn gateway_with(timeouts: Option<(Duration, Duration)>) -> (TestGateway, Backend) {
    let backend = echo().await;
    let manifests = format!("{}{}", service("echo", &[backend.addr]), route());
    let mut config = Listener::config();
    if let Some((head, idle)) = timeouts {
        config.proxy.header_read_timeout = head;
        config.proxy.keepalive_timeout = idle;
    }
    (TestGateway::start_with(&manifests, config).await, backend)
}

async fn gateway() -> (TestGateway, Backend) {
    gateway_with(None).await
}

on_both_listeners!(
    pipelined_requests_are_answered_in_order,
    keep_alive_follows_the_version_and_connection_header,
    chunked_request_bodies_stream_and_the_connection_carries_on,
    expect_continue_is_answered_when_the_body_is_wanted,
    responses_are_framed_by_the_proxy,
    unreadable_requests_are_refused_and_the_connection_closed,
    slow_and_idle_clients_are_cut_after_their_timeouts,
    a_connection_idle_past_its_buffer_release_reads_whole_requests,
);

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

async fn pipelined_requests_are_answered_in_order(l: Listener) {
    let (gw, _b) = gateway().await;
    let mut c = Raw::to(&gw, l).await;
    // One write: a slow request first, then a body, then a plain GET.
    c.send(&format!(
        "{}POST /two HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello{}",
        get("/slow"),
        get("/three")
    ))
    .await;
    let slow = c.response(false).await;
    assert_eq!(slow.text(), "GET /slow ");
    // A request without a body goes upstream without framing headers.
    assert_eq!(slow.header("x-framing"), Some("none"));
    let two = c.response(false).await;
    assert_eq!(two.text(), "POST /two hello");
    assert_eq!(two.header("x-framing"), Some("length 5"));
    let third = c.response(false).await;
    assert_eq!(third.text(), "GET /three ");
    assert!(third.header("date").is_some(), "{third:?}");
    assert_eq!(third.header("connection"), None);
    gw.shutdown().await;
}

async fn keep_alive_follows_the_version_and_connection_header(l: Listener) {
    let (gw, _b) = gateway().await;
    // HTTP/1.0 closes unless asked otherwise.
    let mut c = Raw::to(&gw, l).await;
    c.send(&format!("GET /a HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /a "));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    // HTTP/1.0 with keep-alive is told so, and the connection carries on.
    let mut c = Raw::to(&gw, l).await;
    for path in ["/b", "/c"] {
        c.send(&format!(
            "GET {path} HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
        ))
        .await;
        let r = c.response(false).await;
        assert_eq!(r.text(), format!("GET {path} "));
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }

    // HTTP/1.1 `Connection: close` gets its answer, then the close.
    let mut c = Raw::to(&gw, l).await;
    c.send(&format!(
        "GET /d HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.text(), "GET /d ");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    // A body left unread (no route for it) ends the connection, and the
    // answer says so.
    let mut c = Raw::to(&gw, l).await;
    c.send("POST /x HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
    gw.shutdown().await;
}

async fn chunked_request_bodies_stream_and_the_connection_carries_on(l: Listener) {
    let (gw, _b) = gateway().await;
    let mut c = Raw::to(&gw, l).await;
    c.send(&format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    ))
    .await;
    // The rest comes later, in pieces, with a trailer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send("1;ext=1\r\n \r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send("5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.text(), "POST /up hello world");
    assert_eq!(r.header("x-len"), Some("11"));
    assert_eq!(r.header("x-framing"), Some("chunked"));
    // A body with a length, sent after its head, then another request.
    c.send(&format!(
        "PUT /len HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\n\r\n"
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(&format!("abcdef{}", get("/after"))).await;
    assert_eq!(c.response(false).await.text(), "PUT /len abcdef");
    assert_eq!(c.response(false).await.text(), "GET /after ");
    gw.shutdown().await;
}

async fn expect_continue_is_answered_when_the_body_is_wanted(l: Listener) {
    let (gw, _b) = gateway().await;
    let mut c = Raw::to(&gw, l).await;
    c.send(&format!(
        "POST /e HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    ))
    .await;
    let cont = c.response(false).await;
    assert_eq!(cont.status, 100);
    c.send("data").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "POST /e data"));

    // A request refused before its body is read gets no `100 Continue`.
    c.send(
        "POST /e HTTP/1.1\r\nHost: nowhere.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 404);
    gw.shutdown().await;
}

async fn responses_are_framed_by_the_proxy(l: Listener) {
    let (gw, _b) = gateway().await;
    let mut c = Raw::to(&gw, l).await;
    // No length from the upstream: chunked for HTTP/1.1.
    c.send(&get("/stream")).await;
    let r = c.response(false).await;
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "one,two,three");
    // HEAD: the length the body would have had, and no body.
    c.send(&format!("HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("8"));
    // Had a body been written, this response would not parse.
    c.send(&get("/next")).await;
    assert_eq!(c.response(false).await.text(), "GET /next ");
    // A local answer has a length and a date.
    c.send("GET /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(r.header("date").is_some());

    // No length, HTTP/1.0: the body ends with the connection.
    let mut c = Raw::to(&gw, l).await;
    c.send(&format!(
        "GET /stream HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "one,two,three");
    gw.shutdown().await;
}

async fn unreadable_requests_are_refused_and_the_connection_closed(l: Listener) {
    let (gw, _b) = gateway().await;
    let many: String = (0..120).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let huge = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
    let cases = [
        ("garbage\r\n\r\n".to_owned(), 400),
        ("GET / HTTP/1.1\r\n\r\n".to_owned(), 400),
        (
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.test\r\n\r\n"),
            400,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1x\r\n\r\n"),
            400,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
            ),
            400,
        ),
        (
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501,
        ),
        (format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{many}\r\n"), 431),
        (format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{huge}\r\n"), 431),
    ];
    let before = unmatched_counts(&gw).await;
    for (request, status) in cases {
        let mut c = Raw::to(&gw, l).await;
        c.send(&request).await;
        let r = c.response(false).await;
        assert_eq!(r.status, status, "{:?}", &request[..request.len().min(80)]);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed().await);
    }
    // Each refusal is counted, under the route of unrouted requests. The
    // recorder is the process's, shared with tests running alongside
    // (whose 404s are three at most), hence the difference and the bound.
    let after = unmatched_counts(&gw).await;
    assert!(after.0 >= before.0 + 8, "{before:?} -> {after:?}");
    assert!(after.1 > before.1, "{before:?} -> {after:?}");
    // A chunked body that breaks its framing ends the exchange, and the
    // next connection is served as usual.
    let mut c = Raw::to(&gw, l).await;
    c.send(&format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{r:?}");
    let mut c = Raw::to(&gw, l).await;
    c.send(&get("/fine")).await;
    assert_eq!(c.response(false).await.text(), "GET /fine ");
    gw.shutdown().await;
}

/// Requests counted under `route="unmatched"`: 4xx and 5xx.
async fn unmatched_counts(gw: &TestGateway) -> (u64, u64) {
    let metrics = admin_get(gw, "/metrics").await.text();
    let count = |class: &str| -> u64 {
        let key = format!("sluicegate_requests_total{{route=\"unmatched\",status=\"{class}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (count("4xx"), count("5xx"))
}

async fn slow_and_idle_clients_are_cut_after_their_timeouts(l: Listener) {
    let head = Duration::from_millis(500);
    let idle = Duration::from_millis(2500);
    let (gw, _b) = gateway_with(Some((head, idle))).await;

    // A head that never completes: the header read timeout, although the
    // keep-alive timeout is longer.
    let started = Instant::now();
    let mut c = Raw::to(&gw, l).await;
    c.send("GET / HTTP/1.1\r\nHo").await;
    assert!(c.closed().await);
    let took = started.elapsed();
    assert!(took >= head && took < idle, "closed after {took:?}");

    // A connection that never sends anything gets the header read timeout
    // for its first request.
    let started = Instant::now();
    let mut c = Raw::to(&gw, l).await;
    assert!(c.closed().await);
    let took = started.elapsed();
    assert!(took >= head && took < idle, "closed after {took:?}");

    // A head started after a kept-alive wait gets the header read timeout
    // from its first byte.
    let mut c = Raw::to(&gw, l).await;
    c.send(&get("/first")).await;
    assert_eq!(c.response(false).await.text(), "GET /first ");
    tokio::time::sleep(head + head / 2).await;
    let started = Instant::now();
    c.send("GET /second HTTP/1.1\r\nHo").await;
    assert!(c.closed().await);
    let took = started.elapsed();
    assert!(took >= head && took < idle, "closed after {took:?}");

    // Requests spaced further apart than the header read timeout, but
    // closer than the keep-alive timeout, keep one connection alive for
    // well past both.
    let mut c = Raw::to(&gw, l).await;
    for i in 0..4 {
        c.send(&get(&format!("/k{i}"))).await;
        assert_eq!(c.response(false).await.text(), format!("GET /k{i} "));
        tokio::time::sleep(idle / 2).await;
    }
    // Then an idle connection is closed after the keep-alive timeout
    // (counted from when the server began to wait, a little before the
    // client had the answer).
    let started = Instant::now();
    assert!(c.closed().await);
    let took = started.elapsed() + idle / 2;
    let early = Duration::from_millis(100);
    assert!(
        took >= idle - early && took < idle * 3,
        "closed after {took:?}"
    );
    gw.shutdown().await;
}

/// A kept-alive connection that waits more than a second gives its read
/// buffer back; the next request, larger than the first read and sent in
/// pieces, must still arrive whole.
async fn a_connection_idle_past_its_buffer_release_reads_whole_requests(l: Listener) {
    let (gw, _b) = gateway().await;
    let mut c = Raw::to(&gw, l).await;
    c.send(&get("/first")).await;
    assert_eq!(c.response(false).await.text(), "GET /first ");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let big = "b".repeat(10_000);
    let request = format!(
        "POST /second HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\nContent-Length: 5\r\n\r\nhello"
    );
    let (head, rest) = request.split_at(100);
    c.send(head).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(rest).await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "POST /second hello"));
    assert_eq!(r.header("x-big"), Some("10000"));
    // And again after another idle second, a request that fits the first
    // read.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    c.send(&get("/third")).await;
    assert_eq!(c.response(false).await.text(), "GET /third ");
    gw.shutdown().await;
}
