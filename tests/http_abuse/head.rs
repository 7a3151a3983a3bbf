//! Request heads: bytes a parser could read two ways, sizes, the one host
//! of a request, and the methods and targets no route serves.

use super::common::wire::Listener;
use super::{HOST, Setup, get};
use crate::on_both_listeners;

/// Bare CR, NUL and other controls, obsolete line folding, whitespace
/// before the colon: RFC 9112 §2.2, §5.1, §5.2 (a server MUST reject
/// obs-fold in requests or replace it; it is rejected) and RFC 9110 §5.5.
async fn bytes_a_parser_could_misread_are_refused(l: Listener) {
    let s = Setup::start().await;
    for bad in [
        &format!("GET / HTTP/1.1\r\nHost: {HOST}\rX-A: b\r\n\r\n")[..],
        &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\0b\r\n\r\n"),
        &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\r\n b\r\n\r\n"),
        &format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\x07b\r\n\r\n"),
        &format!("GET / HTTP/1.1\r\nHost : {HOST}\r\n\r\n"),
        &format!("GET /a b HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
        &format!("GET / HTTP/1.1 \r\nHost: {HOST}\r\n\r\n"),
        &format!("GET / HTTP/2.0\r\nHost: {HOST}\r\n\r\n"),
        &format!("G\0ET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
    ] {
        s.refused(l, bad.as_bytes(), 400).await;
    }
    s.shutdown().await;
}

/// A bare LF as line end is allowed (RFC 9112 §2.2: "MAY recognize a
/// single LF"); the upstream gets the request re-framed with CRLF.
async fn bare_lf_heads_are_reframed(l: Listener) {
    let s = Setup::start().await;
    let mut c = s.raw(l).await;
    c.send(&format!("GET /lf HTTP/1.1\nHost: {HOST}\nX-A: 1\n\n"))
        .await;
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    assert_eq!(got.len(), 1);
    let text = got[0].text();
    assert!(
        text.starts_with("GET /lf HTTP/1.1\r\nhost: abuse.test\r\nx-a: 1\r\n"),
        "{text}"
    );
    assert!(!text.replace("\r\n", "").contains('\n'), "{text:?}");
    s.shutdown().await;
}

/// Sizes: a head over 64 KiB or with over 100 fields is 431, a target
/// over 16 KiB is 414 (RFC 9110 §15.5.15; RFC 6585 §5).
async fn oversized_heads_and_targets_are_refused(l: Listener) {
    let s = Setup::start().await;
    let many: String = (0..120).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
    let long = "a".repeat(17 * 1024);
    s.refused(
        l,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{many}\r\n").as_bytes(),
        431,
    )
    .await;
    s.refused(
        l,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{big}\r\n").as_bytes(),
        431,
    )
    .await;
    s.refused(
        l,
        format!("GET /{long} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
        414,
    )
    .await;
    // A head that never ends is refused once it passes the limit, not
    // buffered without bound.
    let mut c = s.raw(l).await;
    c.send(&format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nx-endless: "))
        .await;
    let mut refused = false;
    for _ in 0..10 {
        if !c.try_send(&[b'a'; 16 * 1024]).await {
            refused = true;
            break;
        }
    }
    if !refused {
        let r = c.response(false).await;
        assert_eq!(r.status, 431);
    }
    assert_eq!(s.app.count(), 0);
    s.shutdown().await;
}

/// One request, one host (RFC 9112 §3.2, §3.2.2): HTTP/1.1 needs exactly
/// one Host; an absolute-form target names the host and a Host naming
/// another is refused; the upstream gets the one host as `Host`.
async fn a_request_has_one_host(l: Listener) {
    let s = Setup::start().await;
    s.refused(l, b"GET / HTTP/1.1\r\n\r\n", 400).await;
    s.refused(
        l,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.test\r\n\r\n").as_bytes(),
        400,
    )
    .await;
    // Routed by one host, forwarded with another: refused.
    let mut c = s.raw(l).await;
    c.send(&format!(
        "GET http://{HOST}/x HTTP/1.1\r\nHost: other.test\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 400);
    assert_eq!(s.app.count(), 0);
    // Userinfo in the target is an error (RFC 9110 §4.2.4).
    s.refused(
        l,
        format!("GET http://user@{HOST}/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
        400,
    )
    .await;
    // The same host (case and port aside) is fine, and an absolute-form
    // target without Host too; the upstream gets the target's authority.
    let mut c = s.raw(l).await;
    c.send(&format!(
        "GET http://ABUSE.test:8080/x?q=1 HTTP/1.1\r\nHost: abuse.TEST\r\n\r\nGET http://{HOST}/y HTTP/1.0\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].line(), "GET /x?q=1 HTTP/1.1");
    assert_eq!(got[0].headers("host"), ["ABUSE.test:8080"]);
    assert_eq!(got[1].line(), "GET /y HTTP/1.1");
    assert_eq!(got[1].headers("host"), [HOST]);
    assert_eq!(got[1].headers("x-forwarded-host"), [HOST]);
    s.shutdown().await;
}

/// CONNECT is refused with 405 and the connection closed: a client that
/// follows RFC 9110 §9.3.6 may already be tunnelling. Asterisk-form is
/// only for OPTIONS (RFC 9112 §3.2.4), which the gateway answers itself.
async fn connect_and_asterisk_targets(l: Listener) {
    let s = Setup::start().await;
    let r = s
        .refused(
            l,
            format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n\x16\x03\x01")
                .as_bytes(),
            405,
        )
        .await;
    assert!(
        r.header("allow").is_some_and(|a| !a.contains("CONNECT")),
        "{r:?}"
    );
    s.refused(
        l,
        format!("GET * HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
        400,
    )
    .await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "OPTIONS * HTTP/1.1\r\nHost: {HOST}\r\n\r\n{}",
        get("/next")
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{r:?}"
    );
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    assert_eq!(got.len(), 1, "OPTIONS * is not forwarded: {got:?}");
    assert_eq!(got[0].line(), "GET /next HTTP/1.1");
    s.shutdown().await;
}

/// Hop-by-hop fields and the client's framing never reach the upstream;
/// forwarding fields are the proxy's own (RFC 9110 §7.6.1). Nor does
/// `Proxy`, which CGI-style backends would use as their own outgoing
/// proxy ("httpoxy").
async fn hop_by_hop_and_forged_fields_are_replaced(l: Listener) {
    let s = Setup::start().await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "POST /h HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\n\
         Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nUpgrade: h2c\r\n\
         Proxy: http://evil.example:3128\r\nContent-Length: 2\r\n\r\nok"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    let text = got[0].text().to_ascii_lowercase();
    for gone in [
        "x-secret",
        "keep-alive",
        "te:",
        "proxy-connection",
        "6.6.6.6",
        "upgrade",
        "proxy:",
        "evil.example",
    ] {
        assert!(!text.contains(gone), "{gone} reached the upstream: {text}");
    }
    assert_eq!(got[0].headers("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(got[0].headers("content-length"), ["2"]);
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
    s.shutdown().await;
}

/// `TRACE` is refused (its echo would show the client what the gateway
/// added to its request); an `OPTIONS` with `Max-Forwards: 0` is answered
/// by the gateway as its final recipient, and any other has one hop less
/// when forwarded (RFC 9110 §7.6.2). Neither refusal ends the connection.
async fn trace_and_max_forwards(l: Listener) {
    let s = Setup::start().await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "TRACE /t HTTP/1.1\r\nHost: {HOST}\r\nCookie: secret=1\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 405, "{l:?} {r:?}");
    assert!(
        r.header("allow")
            .is_some_and(|a| a.contains("GET") && !a.contains("TRACE")),
        "{r:?}"
    );
    c.send(&format!(
        "OPTIONS /o HTTP/1.1\r\nHost: {HOST}\r\nMax-Forwards: 0\r\n\r\n"
    ))
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{l:?} {r:?}");
    assert!(r.header("allow").is_some(), "{r:?}");
    assert_eq!(s.app.count(), 0, "{:?}", s.app.requests());

    c.send(&format!(
        "OPTIONS /o HTTP/1.1\r\nHost: {HOST}\r\nMax-Forwards: 3\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    c.send(&get("/after")).await;
    assert_eq!(c.response(false).await.status, 200);
    let got = s.app.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].line(), "OPTIONS /o HTTP/1.1");
    assert_eq!(got[0].headers("max-forwards"), ["2"]);
    assert_eq!(got[1].line(), "GET /after HTTP/1.1");
    s.shutdown().await;
}

on_both_listeners!(
    trace_and_max_forwards,
    bytes_a_parser_could_misread_are_refused,
    bare_lf_heads_are_reframed,
    oversized_heads_and_targets_are_refused,
    a_request_has_one_host,
    connect_and_asterisk_targets,
    hop_by_hop_and_forged_fields_are_replaced,
);
