//! Request smuggling: every way a body's length could be read two ways.
//! A request whose framing is ambiguous is refused before anything is
//! forwarded, and the connection closes, so no byte of it can be taken
//! for the next request (RFC 9112 §6.1, §6.3, §7.1; RFC 9110 §6.5.1 for
//! trailers).

use super::common;
use super::common::wire::Listener;
use super::{HOST, Setup, get, no_content_with_length};
use crate::on_both_listeners;

/// CL.TE, TE.CL and TE.TE: both framings, or codings that a next hop
/// could read otherwise, are refused (RFC 9112 §6.1: TE with CL "ought to
/// be handled as an error"; §6.3).
async fn cl_te_desync_attempts_are_refused(l: Listener) {
    let s = Setup::start().await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: abuse.test\r\n\r\n";
    let cases: Vec<(String, u16)> = vec![
        // CL.TE
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            400,
        ),
        // TE.CL
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n{smuggled}\r\n0\r\n\r\n"
            ),
            400,
        ),
        // TE.TE: an obfuscated second coding.
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
            ),
            501,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        // Conflicting or malformed lengths.
        (
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc"
            ),
            400,
        ),
        (
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: +3\r\n\r\nabc"),
            400,
        ),
        (
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 3, 3\r\n\r\nabc"),
            400,
        ),
        (
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0x3\r\n\r\nabc"),
            400,
        ),
        // Transfer-Encoding means nothing in HTTP/1.0 (§6.1).
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
            400,
        ),
    ];
    for (request, status) in cases {
        s.refused(l, request.as_bytes(), status).await;
    }
    s.shutdown().await;
}

/// Transfer codings other than one final `chunked` (§6.1: 501 for a
/// coding not understood; `chunked` twice is an error, §7: "MUST NOT apply
/// chunked more than once"); split over two lines, the list is the same.
async fn codings_other_than_one_chunked_are_refused(l: Listener) {
    let s = Setup::start().await;
    for (te, status) in [
        ("gzip, chunked", 501),
        ("gzip\r\nTransfer-Encoding: chunked", 501),
        ("deflate , chunked", 501),
        ("chunked, chunked", 400),
        ("chunked\r\nTransfer-Encoding: chunked", 400),
        ("chunked;q=1", 501),
        ("", 400),
    ] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        s.refused(l, request.as_bytes(), status).await;
    }
    // Case and optional whitespace do not matter; the upstream gets the
    // body chunked anew.
    let mut c = s.raw(l).await;
    c.send(&format!(
        "POST /ok HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding:\tChunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    assert_eq!(got.len(), 1);
    assert!(
        got[0]
            .text()
            .ends_with("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "{}",
        got[0].text()
    );
    s.shutdown().await;
}

/// Broken chunks: a size that is not hex, too long, signed, padded; data
/// without its CRLF; a bare LF as line end. Once the body has started
/// streaming the head has reached the upstream, but never a whole
/// request: its connection is dropped, and the client gets 400.
async fn broken_chunks_never_complete_a_request(l: Listener) {
    let s = Setup::start().await;
    let head =
        format!("POST /chunks HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    for bad in [
        "zz\r\nab\r\n0\r\n\r\n",
        "1234567890abcdef1\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        " 5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5\nhello\n0\n\n",
        "3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
    ] {
        let mut c = s.raw(l).await;
        c.send(&format!("{head}{bad}{}", get("/after"))).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 400, "{l:?} {bad:?}: {r:?}");
        assert!(c.closed().await, "{l:?} {bad:?}");
    }
    // Nothing completed a request upstream: neither the broken ones nor
    // the GETs written after them.
    assert_eq!(s.app.count(), 0, "{:?}", s.app.requests());
    assert_eq!(s.admin.count(), 0);
    s.shutdown().await;
}

/// Trailer fields that a trailer may not carry (framing, routing,
/// authentication, content and control fields; RFC 9110 §6.5.1) are
/// dropped; the rest reach the upstream.
async fn forbidden_trailers_are_dropped(l: Listener) {
    let s = Setup::start().await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "POST /t HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\
         Content-Length: 99\r\nTransfer-Encoding: chunked\r\nHost: evil.test\r\nAuthorization: x\r\n\
         X-Checksum: 5\r\nCookie: a=b\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    assert_eq!(got.len(), 1);
    let text = got[0].text();
    let trailers = text.split("0\r\n").last().unwrap_or("");
    assert_eq!(trailers, "x-checksum: 5\r\n\r\n", "{text}");
    s.shutdown().await;
}

/// A `204` is told to the client without a length, whatever the upstream
/// said, so the client cannot take the next answer for its body; the
/// upstream's stray bytes after it are never read as a response either.
async fn a_no_content_answer_has_no_length(l: Listener) {
    let s = Setup::answering("", no_content_with_length).await;
    let mut c = s.raw(l).await;
    c.send(&format!("{}{}", get("/204"), get("/next"))).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 204, "{l:?} {r:?}");
    assert_eq!(r.header("content-length"), None, "{l:?} {r:?}");
    assert_eq!(r.header("x-kept"), Some("1"), "{r:?}");
    let next = c.response(false).await;
    assert_eq!(next.status, 200, "{l:?} {next:?}");
    assert_eq!(next.text(), "fine");
    let got = s.app.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_ne!(
        got[0].conn, got[1].conn,
        "the upstream connection is not reused"
    );
    s.shutdown().await;
}

/// A `101` that does not complete the WebSocket handshake the client
/// asked for (no `Sec-WebSocket-Accept` computed from its key) is the
/// upstream's error: the gateway never starts copying raw bytes, so what
/// the client sends next cannot reach the backend past the routes.
async fn a_switch_without_the_handshake_is_refused(l: Listener) {
    let s = Setup::answering("    websocket: true\n", |r| {
        if r.line().starts_with("GET /ws ") {
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                .to_vec()
        } else {
            common::wire::ok("fine")
        }
    })
    .await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 502, "{l:?} {r:?}");
    // Whatever the client sends now is HTTP to the gateway, or nothing.
    c.send(&get("/admin/smuggled")).await;
    let _ = c.fill().await;
    let app = s.app.requests();
    assert_eq!(app.len(), 1, "only the handshake reached the app: {app:?}");
    for got in s.admin.requests() {
        assert_eq!(got.headers("x-forwarded-for"), ["127.0.0.1"], "{got:?}");
    }
    s.shutdown().await;
}

on_both_listeners!(
    a_switch_without_the_handshake_is_refused,
    a_no_content_answer_has_no_length,
    cl_te_desync_attempts_are_refused,
    codings_other_than_one_chunked_are_refused,
    broken_chunks_never_complete_a_request,
    forbidden_trailers_are_dropped,
);
