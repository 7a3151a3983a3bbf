//! Paths: one normal form for routing and forwarding (RFC 3986 §6.2.2),
//! so that no encoding lets a request be routed (and authorised) as one
//! path and served as another.

use super::common::wire::Listener;
use super::{HOST, Setup};
use crate::on_both_listeners;
use sluicegate::routing::EncodedSlashes;

/// Encoded dots are decoded before dot segments are resolved: the request
/// is routed, and forwarded, as what a decoding backend would read.
async fn encoded_dot_segments_are_resolved_before_routing(l: Listener) {
    let s = Setup::start().await;
    let mut c = s.raw(l).await;
    for target in [
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/.%2e/admin/x",
        "/public/./../admin/x",
        "//admin//x",
        "/%61dmin/x",
    ] {
        c.send(&format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
            .await;
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{l:?} {target}");
    }
    assert_eq!(s.app.count(), 0, "{:?}", s.app.requests());
    let got = s.admin.requests();
    assert_eq!(got.len(), 6);
    for r in &got {
        assert_eq!(r.line(), "GET /admin/x HTTP/1.1", "{l:?}");
    }
    // Other encodings pass through, with upper-case hex; the query is
    // left alone.
    c.send(&format!(
        "GET /files/a%20b%c3%a9?x=%2e%2e HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(
        s.app.requests()[0].line(),
        "GET /files/a%20b%C3%A9?x=%2e%2e HTTP/1.1"
    );
    // A `%` that is not an escape makes the request invalid (the
    // connection carries on: its framing was sound).
    c.send(&format!("GET /a%zz HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    assert_eq!(c.response(false).await.status, 400);
    assert_eq!(s.app.count(), 1);
    s.shutdown().await;
}

/// `%2F` and `%5C` are kept encoded by default: a segment, not a
/// separator, both for routing and upstream. With `reject` they are 400,
/// and so is a bare `\`;
/// with `decode` they separate segments, for routing and upstream alike.
async fn encoded_slashes_follow_the_configured_rule(l: Listener) {
    let s = Setup::start().await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "GET /public%2F..%2Fadmin/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(s.admin.count(), 0);
    assert_eq!(
        s.app.requests()[0].line(),
        "GET /public%2F..%2Fadmin/x HTTP/1.1"
    );
    s.shutdown().await;

    let s = Setup::start_with("", |c| c.proxy.encoded_slashes = EncodedSlashes::Reject).await;
    let mut c = s.raw(l).await;
    for target in ["/a%2fb", "/a%5Cb", "/public\\..\\admin"] {
        c.send(&format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
            .await;
        assert_eq!(c.response(false).await.status, 400, "{l:?} {target}");
    }
    assert_eq!(s.app.count(), 0);
    s.shutdown().await;

    let s = Setup::start_with("", |c| c.proxy.encoded_slashes = EncodedSlashes::Decode).await;
    let mut c = s.raw(l).await;
    c.send(&format!(
        "GET /public%2F..%2Fadmin/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    ))
    .await;
    assert_eq!(c.response(false).await.status, 200);
    assert_eq!(s.app.count(), 0);
    assert_eq!(s.admin.requests()[0].line(), "GET /admin/x HTTP/1.1");
    s.shutdown().await;
}

on_both_listeners!(
    encoded_dot_segments_are_resolved_before_routing,
    encoded_slashes_follow_the_configured_rule,
);
