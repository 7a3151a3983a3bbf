//! Failure answers: each failure class gets its status and a short body.

use crate::common;
use crate::on_both_listeners;

use std::time::Duration;

use common::wire::Listener;
use common::*;
use http::{Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn route(service: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {service}}}
spec:
  hosts: [{service}.test]
  routes:
  - name: r
    backends: [{{serviceName: {service}, servicePort: 80}}]
{extra}"#
    )
}

async fn no_route_is_404(l: Listener) {
    let gw = TestGateway::start_with("", Listener::config()).await;
    let r = get(l.to(&gw), "nothing.test", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.text(), "404 Not Found: no route\n");
    gw.shutdown().await;
}

async fn no_endpoints_or_missing_service_is_503(l: Listener) {
    let mut m = service("empty", &[]);
    m.push_str(&route("empty", ""));
    m.push_str(&route("ghost", ""));
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    for host in ["empty.test", "ghost.test"] {
        let r = get(l.to(&gw), host, "/").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{host}");
        assert!(r.text().contains("no healthy upstream"));
    }
    gw.shutdown().await;
}

async fn refused_connection_is_502(l: Listener) {
    // Bind then drop: nothing listens on this port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut m = service("down", &[addr]);
    m.push_str(&route("down", ""));
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    let r = get(l.to(&gw), "down.test", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.text(), "502 Bad Gateway: upstream connect error\n");
    gw.shutdown().await;
}

async fn upstream_that_never_answers_is_504_after_the_route_timeout(l: Listener) {
    // Accepts and reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hole = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            held.push(s);
        }
    });
    let mut m = service("slow", &[addr]);
    m.push_str(&route("slow", "    timeouts: {request: 300ms}\n"));
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    let started = std::time::Instant::now();
    let r = get(l.to(&gw), "slow.test", "/").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.text(), "504 Gateway Timeout: upstream request timeout\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    hole.abort();
    gw.shutdown().await;
}

async fn a_shorter_timeout_applies_on_a_connection_kept_from_a_longer_one(l: Listener) {
    // Answers `/fast` at once and never answers `/hang`, on the same
    // keep-alive connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        if head.starts_with("GET /fast ") {
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let mut m = service("kept", &[addr]);
    m.push_str(&route("kept", ""));
    m.push_str(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: short}
spec:
  hosts: [short.test]
  routes:
  - name: r
    backends: [{serviceName: kept, servicePort: 80}]
    timeouts: {request: 300ms}
"#,
    );
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    // The connection's timer is armed for the default 60 s here...
    let r = get(l.to(&gw), "kept.test", "/fast").await;
    assert_eq!(r.status, StatusCode::OK);
    // ...and must still fire after 300 ms for the next request on it.
    let started = std::time::Instant::now();
    let r = get(l.to(&gw), "short.test", "/hang").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    backend.abort();
    gw.shutdown().await;
}

async fn upstream_closing_without_answer_is_502(l: Listener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let mut m = service("rst", &[addr]);
    m.push_str(&route("rst", ""));
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    let r = get(l.to(&gw), "rst.test", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.text(), "502 Bad Gateway: upstream error\n");
    closer.abort();
    gw.shutdown().await;
}

async fn keepalive_connection_closed_by_upstream_is_replaced_transparently(l: Listener) {
    // The backend closes every connection after one response; the proxy must
    // notice and open a new one instead of failing the next request.
    let b = Backend::start(|_req| async {
        Response::builder()
            .header("connection", "close")
            .body(full("once"))
            .unwrap()
    })
    .await;
    let mut m = service("once", &[b.addr]);
    m.push_str(&route("once", ""));
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    let mut conn = Conn::open(l.to(&gw)).await.unwrap();
    for _ in 0..20 {
        let r = conn.get("once.test", "/").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "once");
        // The client connection stays open: `connection: close` is
        // hop-by-hop and not relayed.
        assert!(r.header("connection").is_none());
    }
    gw.shutdown().await;
}

async fn malformed_host_is_400(l: Listener) {
    let b = Backend::named("x").await;
    let mut m = service("x", &[b.addr]);
    m.push_str(&route("x", ""));
    let gw = TestGateway::start_with(&m, Listener::config()).await;
    let long = "a".repeat(300);
    let r = get(l.to(&gw), &long, "/").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    gw.shutdown().await;
}

on_both_listeners!(
    no_route_is_404,
    no_endpoints_or_missing_service_is_503,
    refused_connection_is_502,
    upstream_that_never_answers_is_504_after_the_route_timeout,
    a_shorter_timeout_applies_on_a_connection_kept_from_a_longer_one,
    upstream_closing_without_answer_is_502,
    keepalive_connection_closed_by_upstream_is_replaced_transparently,
    malformed_host_is_400,
);
