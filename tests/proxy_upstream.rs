//! The upstream HTTP/1.1 client against servers that behave in every way
//! a real fleet does: closing idle connections, odd framing, broken
//! responses.

use crate::common;

use std::time::Duration;

use common::*;
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn route(name: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}}}
spec:
  hosts: [{name}.test]
  routes:
  - name: r
    backends: [{{serviceName: {name}, servicePort: 80}}]
"#
    )
}

/// Reads one request head (and no body) from `s`.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A raw backend: for each connection, answer every request head with
/// `respond(head)`; close after the answer when it returns `true`.
async fn raw_backend<F>(respond: F) -> std::net::SocketAddr
where
    F: Fn(&str) -> (Vec<u8>, bool) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = std::sync::Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let respond = respond.clone();
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let (bytes, close) = respond(&head);
                    if s.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn gateway_for(name: &str, addr: std::net::SocketAddr) -> TestGateway {
    let mut m = service(name, &[addr]);
    m.push_str(&route(name));
    TestGateway::start(&m).await
}

#[tokio::test]
async fn idle_connections_closed_by_the_upstream_never_fail_a_request() {
    // Answers keep-alive style, then closes the connection shortly after,
    // as servers with short idle timeouts do.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut s).await.is_some() {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    let gw = gateway_for("flaky", addr).await;
    for i in 0..60 {
        let r = get(gw.http(), "flaky.test", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        // Alternate between hitting the close window and missing it.
        tokio::time::sleep(Duration::from_millis(if i % 2 == 0 { 1 } else { 10 })).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn response_framings_are_relayed() {
    let addr = raw_backend(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let resp: &[u8] = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            "/early-hints" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nmain",
            "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n",
            "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
            "/http10" => b"HTTP/1.0 200 OK\r\n\r\nuntil close",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        (resp.to_vec(), path == "/http10")
    })
    .await;
    let gw = gateway_for("framing", addr).await;
    let h = gw.http();
    let r = get(h, "framing.test", "/chunked").await;
    assert_eq!(r.text(), "hello world");
    let r = get(h, "framing.test", "/early-hints").await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "main"));
    let r = get(h, "framing.test", "/no-content").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = request(h, "HEAD", "framing.test", "/head", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), Some("1234"));
    assert!(r.body.is_empty());
    let r = get(h, "framing.test", "/http10").await;
    assert_eq!(r.text(), "until close");
    // The same keep-alive client connection still works after all that.
    let mut conn = Conn::open(h).await.unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("framing.test", "/").await.unwrap().text(), "ok");
        assert_eq!(
            conn.get("framing.test", "/chunked").await.unwrap().text(),
            "hello world"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn broken_upstream_responses_are_502() {
    let addr = raw_backend(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let resp: Vec<u8> = match path.as_str() {
            "/garbage" => b"HELLO THERE\r\n\r\n".to_vec(),
            "/conflict" => {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec()
            }
            "/huge-head" => {
                format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(70_000)).into_bytes()
            }
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        };
        (resp, true)
    })
    .await;
    let gw = gateway_for("broken", addr).await;
    for path in ["/garbage", "/conflict", "/huge-head"] {
        let r = get(gw.http(), "broken.test", path).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(r.text(), "502 Bad Gateway: upstream error\n");
    }
    assert_eq!(get(gw.http(), "broken.test", "/").await.text(), "ok");
    gw.shutdown().await;
}

#[tokio::test]
async fn truncated_response_body_aborts_the_client_response() {
    let addr = raw_backend(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nonly a little".to_vec(),
            true,
        )
    })
    .await;
    let gw = gateway_for("short", addr).await;
    let req = Request::get("/")
        .header("host", "short.test")
        .body(full(""))
        .unwrap();
    let err = send(gw.http(), req).await;
    assert!(err.is_err(), "a truncated body must not look complete");
    gw.shutdown().await;
}

#[tokio::test]
async fn request_bodies_of_known_length_and_expect_continue() {
    let echo = sluicegate::demo::echo::EchoServer::start("127.0.0.1:0".parse().unwrap(), "echo")
        .await
        .unwrap();
    let gw = gateway_for("post", echo.addr()).await;
    let body = vec![b'x'; 300_000];
    let req = Request::post("/upload")
        .header("host", "post.test")
        .header("expect", "100-continue")
        .body(full(body))
        .unwrap();
    let r = send(gw.http(), req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    assert!(text.contains("content-length: 300000"), "{text}");
    assert!(text.contains("body: 300000 bytes"), "{text}");
    assert!(!text.contains("expect:"), "{text}");
    // An empty POST still tells the upstream its length.
    let r = request(gw.http(), "POST", "post.test", "/empty", &[]).await;
    assert!(r.text().contains("content-length: 0"), "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                while read_head(&mut s).await.is_some() {
                    let big = "y".repeat(40_000);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
                        big.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = gateway_for("reuse", addr).await;
    let mut conn = Conn::open(gw.http()).await.unwrap();
    for _ in 0..30 {
        let r = conn.get("reuse.test", "/").await.unwrap();
        assert_eq!(r.body.len(), 40_000);
    }
    for _ in 0..10 {
        assert_eq!(get(gw.http(), "reuse.test", "/").await.body.len(), 40_000);
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "one upstream connection serves sequential requests"
    );
    gw.shutdown().await;
}
