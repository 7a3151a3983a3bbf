//! HTTP/2 (h2c on the plain listener, h2 by ALPN on TLS): floods of
//! frames, heads that never end, connections that never do anything, and
//! the one-host and CONNECT rules of RFC 9113 §8.3.1 and §8.5.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::common::wire::{Listener, Raw};
use super::common::*;
use super::{HOST, Setup};
use crate::on_both_listeners;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block for `GET path` on [`HOST`]: static-table entries and
/// literals without indexing (RFC 7541), so no state is shared between
/// blocks.
fn get_block(tls: bool, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, if tls { 0x87 } else { 0x86 }];
    for (index, value) in [(4u8, path), (1, HOST)] {
        b.push(index);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// An HTTP/2 connection spoken frame by frame.
async fn raw_h2(s: &Setup, l: Listener) -> Raw {
    let mut c = match l {
        Listener::Plain => Raw::open(s.gw.http()).await,
        Listener::Tls => {
            let t = super::common::tls::connect(s.gw.https(), Some("h1.test"), &[b"h2"]).await;
            assert_eq!(t.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Raw::over(Box::new(t))
        }
    };
    c.send_bytes(PREFACE).await;
    c.send_bytes(&frame(SETTINGS, 0, 0, &[])).await;
    c
}

/// Reads frames until the connection ends; returns their types, and the
/// GOAWAY error code if one came.
async fn frames_until_close(c: &mut Raw) -> (Vec<u8>, Option<u32>) {
    let mut kinds = Vec::new();
    let mut goaway = None;
    loop {
        while c.buf.len() >= 9 {
            let len = (usize::from(c.buf[0]) << 16)
                | (usize::from(c.buf[1]) << 8)
                | usize::from(c.buf[2]);
            if c.buf.len() < 9 + len {
                break;
            }
            let kind = c.buf[3];
            if kind == GOAWAY && len >= 8 {
                let code = &c.buf[9 + 4..9 + 8];
                goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
            }
            kinds.push(kind);
            c.buf.drain(..9 + len);
        }
        if !c.fill().await {
            return (kinds, goaway);
        }
    }
}

/// Rapid reset (CVE-2023-44487): streams opened and reset at once are
/// bounded; past the bound the connection gets GOAWAY and closes, and
/// only a few requests ever reach the backend.
async fn rapid_reset_floods_end_the_connection(l: Listener) {
    let s = Setup::start().await;
    let mut c = raw_h2(&s, l).await;
    let block = get_block(l == Listener::Tls, "/reset");
    let mut batch = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = c.try_send(&batch).await;
    c.patience = Duration::from_secs(10);
    let (kinds, goaway) = frames_until_close(&mut c).await;
    assert!(kinds.contains(&GOAWAY), "{l:?}: no GOAWAY: {kinds:?}");
    assert!(goaway.is_some_and(|code| code != 0), "{l:?}: {goaway:?}");
    assert!(
        s.app.count() < 200,
        "{l:?}: {} requests reached the backend",
        s.app.count()
    );
    s.shutdown().await;
}

/// CONTINUATION flood: a header block that never ends, however many
/// frames carry it, is cut at the header list limit; nothing reaches the
/// backend.
async fn continuation_floods_are_cut(l: Listener) {
    let s = Setup::start().await;
    let mut c = raw_h2(&s, l).await;
    c.send_bytes(&frame(
        HEADERS,
        0,
        1,
        &get_block(l == Listener::Tls, "/flood"),
    ))
    .await;
    let mut junk = Vec::new();
    for i in 0..60 {
        // x-NN: 16 bytes of value, as a literal without indexing.
        let name = format!("x-{i:02}");
        junk.push(0x00);
        junk.push(name.len() as u8);
        junk.extend_from_slice(name.as_bytes());
        junk.push(16);
        junk.extend_from_slice(&[b'a'; 16]);
    }
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 64 << 20 {
        if !c.try_send(&frame(CONTINUATION, 0, 1, &junk)).await {
            break;
        }
        sent += junk.len();
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    c.patience = Duration::from_secs(5);
    let (_, goaway) = frames_until_close(&mut c).await;
    assert!(
        sent < 64 << 20,
        "{l:?}: took {sent} bytes of one header block"
    );
    assert!(goaway.is_none_or(|code| code != 0), "{l:?}");
    assert_eq!(s.app.count(), 0);
    s.shutdown().await;
}

/// A header block left open, then silence, is cut at the header read
/// timeout; a connection that sends only the preface, at the same
/// timeout (it never opened a stream); one that went quiet after a
/// request, at the keep-alive timeout.
async fn stalled_heads_and_idle_connections_time_out(l: Listener) {
    let head = Duration::from_millis(500);
    let idle = Duration::from_millis(1500);
    let s = Setup::start_with("", |c| {
        c.proxy.header_read_timeout = head;
        c.proxy.keepalive_timeout = idle;
    })
    .await;
    // Half a header block.
    let mut c = raw_h2(&s, l).await;
    let started = Instant::now();
    c.send_bytes(&frame(
        HEADERS,
        END_STREAM,
        1,
        &get_block(l == Listener::Tls, "/half"),
    ))
    .await;
    frames_until_close(&mut c).await;
    let took = started.elapsed();
    assert!(
        took >= head && took < idle,
        "{l:?}: half a head held {took:?}"
    );

    // Only the preface.
    let mut c = raw_h2(&s, l).await;
    let started = Instant::now();
    let (kinds, _) = frames_until_close(&mut c).await;
    let took = started.elapsed();
    // GOAWAY at the timeout, then a second for the goodbye.
    let limit = head + Duration::from_millis(1500);
    assert!(
        took >= head && took < limit,
        "{l:?}: a silent connection held {took:?}"
    );
    assert!(
        kinds.contains(&GOAWAY),
        "{l:?}: closed without GOAWAY: {kinds:?}"
    );

    // A request, then quiet: the keep-alive timeout.
    let mut c = raw_h2(&s, l).await;
    c.send_bytes(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_block(l == Listener::Tls, "/once"),
    ))
    .await;
    let started = Instant::now();
    let (kinds, _) = frames_until_close(&mut c).await;
    let took = started.elapsed();
    assert!(
        kinds.contains(&DATA) || kinds.contains(&HEADERS),
        "{l:?}: {kinds:?}"
    );
    let limit = idle + Duration::from_millis(1500);
    assert!(
        took >= idle && took < limit,
        "{l:?}: an idle connection held {took:?}"
    );
    assert_eq!(s.app.requests().len(), 1);
    s.shutdown().await;
}

/// A GET whose stream ends in an empty DATA frame after its head, as
/// some clients send it, has no body: the upstream gets the head alone,
/// without a chunked framing of nothing.
async fn an_end_after_the_head_is_no_body(l: Listener) {
    let s = Setup::start().await;
    let mut c = raw_h2(&s, l).await;
    let mut batch = frame(
        HEADERS,
        END_HEADERS,
        1,
        &get_block(l == Listener::Tls, "/late-end"),
    );
    batch.extend(frame(DATA, END_STREAM, 1, &[]));
    c.send_bytes(&batch).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.app.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "{l:?}: nothing reached the backend"
        );
        assert!(c.fill().await, "{l:?}: connection closed");
    }
    let seen = s.app.requests()[0].text();
    assert!(
        seen.starts_with("GET /late-end HTTP/1.1\r\n"),
        "{l:?}: {seen}"
    );
    assert_eq!(seen.find("\r\n\r\n"), Some(seen.len() - 4), "{l:?}: {seen}");
    assert!(!seen.contains("transfer-encoding"), "{l:?}: {seen}");
    assert!(!seen.contains("content-length"), "{l:?}: {seen}");
    s.shutdown().await;
}

type Sender = http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 client connection through hyper.
async fn h2_client(s: &Setup, l: Listener) -> Sender {
    let exec = TokioExecutor::new();
    match l {
        Listener::Plain => {
            let tcp = tokio::net::TcpStream::connect(s.gw.http()).await.unwrap();
            let (sender, conn) = http2::handshake(exec, TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            sender
        }
        Listener::Tls => {
            let t = super::common::tls::connect(s.gw.https(), Some("h1.test"), &[b"h2"]).await;
            let (sender, conn) = http2::handshake(exec, TokioIo::new(t)).await.unwrap();
            tokio::spawn(conn);
            sender
        }
    }
}

/// One host (RFC 9113 §8.3.1: `:authority` and a differing `host` make a
/// request malformed), CONNECT refused (§8.5), TRACE refused, and the
/// upstream gets the one host, no `Proxy` field, and the cookies as one
/// field (§8.2.3).
async fn authority_and_connect_rules(l: Listener) {
    let s = Setup::start().await;
    let mut h2 = h2_client(&s, l).await;
    let scheme = if l == Listener::Tls { "https" } else { "http" };
    let req = Request::builder()
        .uri(format!("{scheme}://{HOST}/two-hosts"))
        .header("host", "other.test")
        .body(Empty::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{l:?}");
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{HOST}:443"))
        .body(Empty::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{l:?}");
    let req = Request::builder()
        .method(Method::TRACE)
        .uri(format!("{scheme}://{HOST}/trace"))
        .body(Empty::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{l:?}");
    assert_eq!(s.app.count(), 0);
    let req = Request::builder()
        .uri(format!("{scheme}://{HOST}/one"))
        .header("proxy", "http://evil.example:3128")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Empty::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{l:?}");
    let got = s.app.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line(), "GET /one HTTP/1.1");
    assert_eq!(got[0].headers("host"), [HOST]);
    assert!(got[0].headers("proxy").is_empty(), "{:?}", got[0].text());
    // HTTP/2's separate cookie fields are one for HTTP/1.1 (§8.2.3).
    assert_eq!(got[0].headers("cookie"), ["a=1; b=2"]);
    s.shutdown().await;
}

/// Over HTTP/2 too a `204` carries no length (RFC 9110 §8.6; a length
/// with no DATA would be a malformed stream, RFC 9113 §8.1.1).
async fn a_no_content_answer_has_no_length(l: Listener) {
    let s = Setup::answering("", super::no_content_with_length).await;
    let mut h2 = h2_client(&s, l).await;
    let scheme = if l == Listener::Tls { "https" } else { "http" };
    let req = Request::builder()
        .uri(format!("{scheme}://{HOST}/204"))
        .body(Empty::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{l:?}");
    assert!(!r.headers().contains_key("content-length"), "{r:?}");
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
    s.shutdown().await;
}

/// A stream whose client grants it no window is cut after the send
/// timeout, releasing the upstream connection and the in-flight count.
async fn streams_not_read_release_the_upstream(l: Listener) {
    let (s, big) = Setup::big(Duration::from_millis(400)).await;
    let mut h2 = h2_client(&s, l).await;
    let scheme = if l == Listener::Tls { "https" } else { "http" };
    let req = Request::builder()
        .uri(format!("{scheme}://{HOST}/big"))
        .body(Empty::new())
        .unwrap();
    let r = h2.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The body is never read: no window is granted past the initial one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while big.closed() == 0 {
        assert!(Instant::now() < deadline, "{l:?}: upstream still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let routes = admin_get(&s.gw, "/routes").await.text();
    assert!(routes.contains("\"inFlight\": 0"), "{routes}");
    // Reading now ends in an error, not in 32 MiB.
    let collected = r.into_body().collect().await;
    assert!(
        collected.map_or(true, |b| b.to_bytes().len() < 32 << 20),
        "{l:?}: the whole body came"
    );
    s.shutdown().await;
}

on_both_listeners!(
    rapid_reset_floods_end_the_connection,
    continuation_floods_are_cut,
    stalled_heads_and_idle_connections_time_out,
    authority_and_connect_rules,
    streams_not_read_release_the_upstream,
    a_no_content_answer_has_no_length,
    an_end_after_the_head_is_no_body,
);
