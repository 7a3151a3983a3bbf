//! Bodies stream through the proxy in both directions without being
//! buffered, and WebSocket upgrades are spliced end to end.

use crate::common;
use crate::on_both_listeners;

use std::convert::Infallible;

use bytes::Bytes;
use common::wire::Listener;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, channel::Channel};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 1024; // 64 MiB

fn route(name: &str, websocket: bool) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}}}
spec:
  hosts: [{name}.test]
  routes:
  - name: r
    websocket: {websocket}
    backends: [{{serviceName: {name}, servicePort: 80}}]
"#
    )
}

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

/// Order-sensitive checksum, so reordered or lost chunks are caught.
fn fold(sum: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

async fn large_bodies_stream_both_ways(l: Listener) {
    // Download: the backend generates 64 MiB chunk by chunk.
    let down = Backend::start(|_req| async {
        let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(4);
        tokio::spawn(async move {
            for i in 0..CHUNKS {
                if tx.send_data(chunk(i)).await.is_err() {
                    return;
                }
            }
        });
        Response::new(body.boxed())
    })
    .await;
    // Upload: the backend reads the whole body and reports length and checksum.
    let up = Backend::start(|req: Request<hyper::body::Incoming>| async move {
        let mut body = req.into_body();
        let (mut len, mut sum) = (0usize, 0u64);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                len += data.len();
                sum = fold(sum, &data);
            }
        }
        Response::new(full(format!("{len} {sum}")))
    })
    .await;
    let mut m = service("down", &[down.addr]);
    m.push_str(&service("up", &[up.addr]));
    m.push_str(&route("down", false));
    m.push_str(&route("up", false));
    let gw = TestGateway::start_with(&m, Listener::config()).await;

    let expected = (0..CHUNKS).fold(0u64, |s, i| fold(s, &chunk(i)));

    let r = get(l.to(&gw), "down.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), CHUNK * CHUNKS);
    assert_eq!(fold(0, &r.body), expected);

    let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(4);
    tokio::spawn(async move {
        for i in 0..CHUNKS {
            tx.send_data(chunk(i)).await.unwrap();
        }
    });
    let req = Request::post("/")
        .header("host", "up.test")
        .body(body.boxed())
        .unwrap();
    let r = send(l.to(&gw), req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), format!("{} {expected}", CHUNK * CHUNKS));
    gw.shutdown().await;
}

async fn request_and_response_bodies_stream_concurrently(l: Listener) {
    // The backend answers at once and echoes each request chunk as it
    // arrives. The client sends a chunk only after receiving the echo of
    // the previous one: this completes only if neither direction buffers.
    let echo = Backend::start(|req: Request<hyper::body::Incoming>| async move {
        let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(1);
        tokio::spawn(async move {
            let mut incoming = req.into_body();
            while let Some(Ok(frame)) = incoming.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send_data(data).await.is_err()
                {
                    return;
                }
            }
        });
        Response::new(body.boxed())
    })
    .await;
    let mut m = service("duplex", &[echo.addr]);
    m.push_str(&route("duplex", false));
    let gw = TestGateway::start_with(&m, Listener::config()).await;

    let stream = common::connect(l.to(&gw)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    let req = Request::post("/")
        .header("host", "duplex.test")
        .body(body)
        .unwrap();
    tx.send_data(Bytes::from_static(b"ping-0")).await.unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("response head while the request body is still open")
        .unwrap();
    let mut resp_body = resp.into_body();
    for i in 0..20 {
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), resp_body.frame())
            .await
            .expect("echo of the chunk just sent")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(got, Bytes::from(format!("ping-{i}")));
        tx.send_data(Bytes::from(format!("ping-{}", i + 1)))
            .await
            .unwrap();
    }
    drop(tx);
    gw.shutdown().await;
}

async fn ws_echo_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // A plain HTTP request without upgrade is answered 426.
                let mut peek = [0u8; 2048];
                let n = stream.peek(&mut peek).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
                if !head.contains("upgrade: websocket") {
                    use tokio::io::AsyncWriteExt;
                    let mut s = stream;
                    let _ = s
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 11\r\nconnection: close\r\n\r\nno upgrade\n")
                        .await;
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn websocket_echo_through_the_proxy(l: Listener) {
    let backend = ws_echo_backend().await;
    let mut m = service("ws", &[backend]);
    m.push_str(&route("ws", true));
    m.push_str(&service("nows", &[backend]));
    m.push_str(&route("nows", false));
    let gw = TestGateway::start_with(&m, Listener::config()).await;

    let stream = common::connect(l.to(&gw)).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..50 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().len(), 100_000);
    ws.close(None).await.unwrap();

    // A route without `websocket: true` does not forward the upgrade.
    let stream = common::connect(l.to(&gw)).await.unwrap();
    let err = tokio_tungstenite::client_async("ws://nows.test/chat", stream).await;
    assert!(err.is_err(), "upgrade must not be forwarded");
    let r = request(
        l.to(&gw),
        "GET",
        "nows.test",
        "/chat",
        &[("connection", "upgrade"), ("upgrade", "websocket")],
    )
    .await;
    assert_eq!(r.status.as_u16(), 426);
    gw.shutdown().await;
}

on_both_listeners!(
    large_bodies_stream_both_ways,
    request_and_response_bodies_stream_concurrently,
    websocket_echo_through_the_proxy,
);
