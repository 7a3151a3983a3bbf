//! The proxy's own HTTP/1.1 server, spoken to byte by byte: pipelining,
//! keep-alive rules of HTTP/1.0 and 1.1, request body framing (length,
//! chunked, `Expect: 100-continue`), response framing (length, chunked,
//! close-delimited, `HEAD`), refusal of unreadable requests, and the head
//! read timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::{BodyExt, channel::Channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let text = format!("{method} {path} {}", String::from_utf8_lossy(&body));
        Response::builder()
            .header("x-len", body.len())
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
    let mut config = test_config(1);
    if let Some((head, idle)) = timeouts {
        config.proxy.header_read_timeout = head;
        config.proxy.keepalive_timeout = idle;
    }
    (TestGateway::start_with(&manifests, config).await, backend)
}

async fn gateway() -> (TestGateway, Backend) {
    gateway_with(None).await
}

/// One response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with its unread bytes.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads more; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("the proxy answered within 5s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response; `head` says whether it answers a HEAD request.
    async fn response(&mut self, head: bool) -> Wire {
        let (status, headers, len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).unwrap() {
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (resp.code.unwrap(), headers, n);
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        self.buf.drain(..len);
        let mut wire = Wire {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 100 || status == 204 || status == 304 {
            return wire;
        }
        if let Some(n) = wire.header("content-length") {
            let n: usize = n.parse().unwrap();
            while self.buf.len() < n {
                assert!(self.fill().await, "connection closed inside a body");
            }
            wire.body = self.buf.drain(..n).collect();
        } else if wire.header("transfer-encoding") == Some("chunked") {
            loop {
                let line = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "connection closed inside a chunk");
                };
                let size =
                    usize::from_str_radix(std::str::from_utf8(&self.buf[..line]).unwrap(), 16)
                        .unwrap();
                while self.buf.len() < line + 2 + size + 2 {
                    assert!(self.fill().await, "connection closed inside a chunk");
                }
                wire.body
                    .extend_from_slice(&self.buf[line + 2..line + 2 + size]);
                self.buf.drain(..line + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill().await {}
            wire.body = std::mem::take(&mut self.buf);
        }
        wire
    }

    /// Whether the proxy closed the connection (after what was read).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (gw, _b) = gateway().await;
    let mut c = Raw::open(gw.http()).await;
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

#[tokio::test]
async fn keep_alive_follows_the_version_and_connection_header() {
    let (gw, _b) = gateway().await;
    // HTTP/1.0 closes unless asked otherwise.
    let mut c = Raw::open(gw.http()).await;
    c.send(&format!("GET /a HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /a "));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    // HTTP/1.0 with keep-alive is told so, and the connection carries on.
    let mut c = Raw::open(gw.http()).await;
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
    let mut c = Raw::open(gw.http()).await;
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
    let mut c = Raw::open(gw.http()).await;
    c.send("POST /x HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn chunked_request_bodies_stream_and_the_connection_carries_on() {
    let (gw, _b) = gateway().await;
    let mut c = Raw::open(gw.http()).await;
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

#[tokio::test]
async fn expect_continue_is_answered_when_the_body_is_wanted() {
    let (gw, _b) = gateway().await;
    let mut c = Raw::open(gw.http()).await;
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

#[tokio::test]
async fn responses_are_framed_by_the_proxy() {
    let (gw, _b) = gateway().await;
    let mut c = Raw::open(gw.http()).await;
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
    let mut c = Raw::open(gw.http()).await;
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

#[tokio::test]
async fn unreadable_requests_are_refused_and_the_connection_closed() {
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
        let mut c = Raw::open(gw.http()).await;
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
    assert_eq!(after.1, before.1 + 1, "{before:?} -> {after:?}");
    // A chunked body that breaks its framing ends the exchange, and the
    // next connection is served as usual.
    let mut c = Raw::open(gw.http()).await;
    c.send(&format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{r:?}");
    let mut c = Raw::open(gw.http()).await;
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

#[tokio::test]
async fn slow_and_idle_clients_are_cut_after_their_timeouts() {
    let head = Duration::from_millis(400);
    let idle = Duration::from_millis(1200);
    let (gw, _b) = gateway_with(Some((head, idle))).await;

    // A head that never completes: the header read timeout, although the
    // keep-alive timeout is longer.
    let started = Instant::now();
    let mut c = Raw::open(gw.http()).await;
    c.send("GET / HTTP/1.1\r\nHo").await;
    assert!(c.closed().await);
    let took = started.elapsed();
    assert!(took >= head && took < idle, "closed after {took:?}");

    // A connection that never sends anything gets the header read timeout
    // for its first request.
    let started = Instant::now();
    let mut c = Raw::open(gw.http()).await;
    assert!(c.closed().await);
    let took = started.elapsed();
    assert!(took >= head && took < idle, "closed after {took:?}");

    // A head started after a kept-alive wait gets the header read timeout
    // from its first byte.
    let mut c = Raw::open(gw.http()).await;
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
    let mut c = Raw::open(gw.http()).await;
    for i in 0..4 {
        c.send(&get(&format!("/k{i}"))).await;
        assert_eq!(c.response(false).await.text(), format!("GET /k{i} "));
        tokio::time::sleep(idle / 2).await;
    }
    // Then an idle connection is closed after the keep-alive timeout.
    let started = Instant::now();
    assert!(c.closed().await);
    let took = started.elapsed() + idle / 2;
    assert!(took >= idle && took < idle * 3, "closed after {took:?}");
    gw.shutdown().await;
}
