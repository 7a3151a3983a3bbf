//! HTTP/3 through the real proxy: a QUIC client (quinn + h3, the crates
//! the gateway serves with) against the gateway's HTTPS port over UDP, and
//! real loopback backends that record what they received.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::wire::Capture;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use sluicegate::gateway::GatewayConfig;
use sluicegate::proxy::Http3Settings;
use tokio::sync::{Notify, mpsc};

fn apiroute(name: &str, body: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
{body}"#
    )
}

/// A gateway config with HTTPS on a fixed loopback port, and HTTP/3 on it
/// when `http3` is given. Redirects and `Alt-Svc` name that port.
fn config(http3: Option<Http3Settings>) -> GatewayConfig {
    let mut cfg = test_config(1);
    let port = listener_port();
    cfg.https_addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    cfg.proxy.https_redirect_port = port;
    cfg.proxy.http3 = http3;
    cfg
}

fn h3_on() -> GatewayConfig {
    config(Some(Http3Settings::default()))
}

/// An HTTP/3 client connection.
struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    quic: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

fn client_endpoint() -> quinn::Endpoint {
    let tls = (*tls::client_config(&[b"h3"])).clone();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

impl H3 {
    async fn open(addr: SocketAddr, sni: &str) -> H3 {
        let endpoint = client_endpoint();
        let quic = endpoint.connect(addr, sni).unwrap().await.unwrap();
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        H3 {
            send,
            quic,
            _endpoint: endpoint,
        }
    }

    /// Sends `req` with `body` (ended after it) and reads the whole
    /// response.
    async fn request(&mut self, req: Request<()>, body: &[u8]) -> Reply {
        let mut stream = self.send.send_request(req).await.unwrap();
        if !body.is_empty() {
            stream
                .send_data(Bytes::copy_from_slice(body))
                .await
                .unwrap();
        }
        stream.finish().await.unwrap();
        read_response(&mut stream).await
    }

    async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = Request::get(format!("https://{host}{path}"))
            .body(())
            .unwrap();
        self.request(req, b"").await
    }
}

type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn read_response(stream: &mut ClientStream) -> Reply {
    let resp = stream.recv_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        while chunk.has_remaining() {
            let c = chunk.chunk().to_vec();
            chunk.advance(c.len());
            body.extend(c);
        }
    }
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: body.into(),
    }
}

/// One request's bytes as the capture backend received them, as text.
fn only_request(backend: &Capture) -> String {
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests[0].text()
}

#[tokio::test]
async fn routes_by_host_and_path_to_the_right_backend() {
    let shop = Capture::start().await;
    let api = Capture::start().await;
    let manifests = service("shop", &[shop.addr])
        + &service("api", &[api.addr])
        + &apiroute(
            "shop",
            r#"  hosts: ["shop.test"]
  routes:
  - name: all
    backends: [{serviceName: shop, servicePort: 80}]
  - name: api
    match: {paths: [{type: Prefix, value: /api}]}
    backends: [{serviceName: api, servicePort: 80}]
"#,
        );
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "shop.test").await;

    let r = client.get("shop.test", "/api/items?x=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "GET /api/items?x=1 HTTP/1.1");
    let r = client.get("shop.test", "/cart").await;
    assert_eq!(r.text(), "GET /cart HTTP/1.1");
    let r = client.get("other.test", "/api/items").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let seen = only_request(&api);
    assert!(
        seen.starts_with("GET /api/items?x=1 HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nhost: shop.test\r\n"), "{seen}");
    assert!(seen.contains("\r\nx-forwarded-proto: https\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\n"), "no body: {seen}");
    let seen = only_request(&shop);
    assert!(seen.starts_with("GET /cart HTTP/1.1\r\n"), "{seen}");
    gw.shutdown().await;
}

#[tokio::test]
async fn certificate_is_chosen_by_sni_as_over_tcp() {
    let a = tls::cert(&["a.test"]);
    let b = tls::cert(&["b.test"]);
    let secret = |name: &str, c: &tls::Cert| {
        let indent = |t: &str| t.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&c.pem),
            indent(&c.key)
        )
    };
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr])
        + &secret("a", &a)
        + &secret("b", &b)
        + &apiroute(
            "a",
            r#"  hosts: ["a.test"]
  tls: {secretName: a}
  routes: [{name: all, backends: [{serviceName: app, servicePort: 80}]}]
"#,
        )
        + &apiroute(
            "b",
            r#"  hosts: ["b.test"]
  tls: {secretName: b}
  routes: [{name: all, backends: [{serviceName: app, servicePort: 80}]}]
"#,
        );
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    for (name, cert) in [("a.test", &a), ("b.test", &b)] {
        let client = H3::open(gw.https(), name).await;
        let chain = client
            .quic
            .peer_identity()
            .unwrap()
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .unwrap();
        assert_eq!(chain[0].as_ref(), &cert.der[..], "{name}");
        // And the same certificate over TCP.
        let tcp = tls::connect(gw.https(), Some(name), &[b"http/1.1"]).await;
        assert_eq!(tls::presented(&tcp), cert.der, "{name}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_plugin_answers_early_and_the_backend_sees_nothing() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("keys", "{keyAuth: {}}", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "keys.test").await;
    let r = client.get("keys.test", "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_web_post_arrives_byte_exact() {
    let backend = Capture::with(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 7\r\n\r\n\x00\x00\x00\x00\x02\x08\x01"
            .to_vec()
    })
    .await;
    let manifests = service("app", &[backend.addr]) + &limited_route("grpc", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "grpc.test").await;
    // A gRPC-web message: flag, length, protobuf; bytes of every value.
    let mut message = vec![0u8, 0, 0, 1, 0];
    message.extend((0..=255u8).collect::<Vec<_>>());
    let len = message.len() - 5;
    message[1..5].copy_from_slice(&(len as u32).to_be_bytes());
    let req = Request::post("https://grpc.test/pkg.Service/Method")
        .header("content-type", "application/grpc-web+proto")
        .header("content-length", message.len())
        .header("x-grpc-web", "1")
        .body(())
        .unwrap();
    let r = client.request(req, &message).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"\x00\x00\x00\x00\x02\x08\x01");
    assert_eq!(r.header("content-type"), Some("application/grpc-web+proto"));

    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    let bytes = &requests[0].bytes;
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    assert!(
        head.starts_with("POST /pkg.Service/Method HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(
        requests[0].headers("content-type"),
        ["application/grpc-web+proto"]
    );
    assert_eq!(
        requests[0].headers("content-length"),
        [message.len().to_string()]
    );
    assert_eq!(requests[0].headers("x-grpc-web"), ["1"]);
    assert!(
        requests[0].headers("transfer-encoding").is_empty(),
        "{head}"
    );
    assert_eq!(&bytes[head_end..], &message[..]);
    gw.shutdown().await;
}

#[tokio::test]
async fn request_and_response_bodies_stream() {
    // The backend reports each request chunk as it arrives and sends its
    // response in two parts, the second only when told to.
    let (chunks_tx, mut chunks) = mpsc::unbounded_channel::<Bytes>();
    let (parts_tx, parts_rx) = mpsc::unbounded_channel::<Bytes>();
    let parts_rx = Arc::new(tokio::sync::Mutex::new(Some(parts_rx)));
    let backend = Backend::start(move |req: Request<hyper::body::Incoming>| {
        let chunks_tx = chunks_tx.clone();
        let parts_rx = parts_rx.clone();
        async move {
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    chunks_tx.send(data).unwrap();
                }
            }
            let mut parts = parts_rx.lock().await.take().unwrap();
            let stream = futures_util::stream::poll_fn(move |cx| {
                parts
                    .poll_recv(cx)
                    .map(|p| p.map(|b| Ok(hyper::body::Frame::data(b))))
            });
            Response::new(BoxBody::new(http_body_util::StreamBody::new(stream)))
        }
    })
    .await;
    let manifests = service("app", &[backend.addr]) + &limited_route("stream", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "stream.test").await;

    let req = Request::post("https://stream.test/upload")
        .body(())
        .unwrap();
    let mut stream = client.send.send_request(req).await.unwrap();
    // Each chunk reaches the backend before the next is sent.
    for part in ["first chunk", "second chunk"] {
        stream.send_data(Bytes::from(part)).await.unwrap();
        let mut got = Vec::new();
        while got.len() < part.len() {
            let chunk = tokio::time::timeout(Duration::from_secs(5), chunks.recv()).await;
            got.extend(chunk.expect("the chunk did not reach the backend").unwrap());
        }
        assert_eq!(got, part.as_bytes());
    }
    stream.finish().await.unwrap();

    parts_tx.send(Bytes::from("head of the answer")).unwrap();
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The first part arrives while the backend still holds the second.
    let mut first = Vec::new();
    while first.len() < "head of the answer".len() {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.recv_data()).await;
        let mut chunk = chunk
            .expect("the first part did not arrive")
            .unwrap()
            .unwrap();
        first.extend(chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(first, b"head of the answer");
    parts_tx.send(Bytes::from(", and its tail")).unwrap();
    drop(parts_tx);
    let mut rest = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        rest.extend(chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(rest, b", and its tail");
    gw.shutdown().await;
}

#[tokio::test]
async fn request_body_longer_than_its_content_length_never_reaches_the_backend_whole() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("len", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "len.test").await;
    let req = Request::post("https://len.test/")
        .header("content-length", "5")
        .body(())
        .unwrap();
    let mut stream = client.send.send_request(req).await.unwrap();
    stream
        .send_data(Bytes::from(
            "12345GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
        ))
        .await
        .unwrap();
    let _ = stream.finish().await;
    if let Ok(resp) = stream.recv_response().await {
        assert_ne!(resp.status(), StatusCode::OK);
    }
    // Give the proxy a moment to have forwarded anything it would.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in backend.requests() {
        assert!(!r.text().contains("smuggled"), "{}", r.text());
    }
    assert!(backend.partial().iter().all(|p| !p.contains("smuggled")));
    gw.shutdown().await;
}

#[tokio::test]
async fn alt_svc_is_advertised_on_https_over_tcp_only_when_http3_is_on() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("alt", "", None);

    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let port = gw.https().port();
    let expected = format!("h3=\":{port}\"; ma=86400");
    // HTTP/1.1 over TLS, routed and unrouted.
    let r = get(To::Tls(gw.https()), "alt.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("alt-svc"), Some(expected.as_str()));
    let r = get(To::Tls(gw.https()), "nowhere.test", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("alt-svc"), Some(expected.as_str()));
    // HTTP/2 over TLS.
    let stream = tls::connect(gw.https(), Some("alt.test"), &[b"h2"]).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("https://alt.test/")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.headers().get("alt-svc").map(|v| v.to_str().unwrap()),
        Some(expected.as_str())
    );
    // Not over plain HTTP, nor over HTTP/3 itself.
    let r = get(gw.http(), "alt.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("alt-svc"), None);
    let mut client = H3::open(gw.https(), "alt.test").await;
    let r = client.get("alt.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("alt-svc"), None);
    gw.shutdown().await;

    // Off: no Alt-Svc, and nothing answers QUIC.
    let gw = TestGateway::start_with(&manifests, config(None)).await;
    let r = get(To::Tls(gw.https()), "alt.test", "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("alt-svc"), None);
    let endpoint = client_endpoint();
    let attempt = tokio::time::timeout(
        Duration::from_millis(500),
        endpoint.connect(gw.https(), "alt.test").unwrap(),
    )
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))), "a QUIC handshake completed");
    gw.shutdown().await;
}

/// Writes a QPACK integer with an `n`-bit prefix (RFC 9204 §4.1.1).
fn qpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HTTP/3 HEADERS frame with `fields` as literal QPACK field lines,
/// whatever they say: the h3 client refuses to send a `host` that
/// contradicts `:authority`, a hostile one does not.
fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![0, 0]; // Required Insert Count 0, Base 0
    for (name, value) in fields {
        // Literal Field Line with Literal Name, no Huffman.
        qpack_int(&mut block, 0x20, 3, name.len());
        block.extend(name.as_bytes());
        qpack_int(&mut block, 0x00, 7, value.len());
        block.extend(value.as_bytes());
    }
    let mut frame = vec![0x01]; // HEADERS
    // Its length as a two-byte QUIC varint (RFC 9000 §16).
    assert!(block.len() < 16384);
    frame.extend((0x4000 | block.len() as u16).to_be_bytes());
    frame.extend(block);
    frame
}

#[tokio::test]
async fn a_host_header_that_contradicts_the_authority_is_refused() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr])
        + &limited_route("good", "", None)
        + &limited_route("evil", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let endpoint = client_endpoint();
    let quic = endpoint
        .connect(gw.https(), "good.test")
        .unwrap()
        .await
        .unwrap();
    // The client's control stream: its type, then an empty SETTINGS.
    let mut control = quic.open_uni().await.unwrap();
    control.write_all(&[0x00, 0x04, 0x00]).await.unwrap();

    let send = async |fields: &[(&str, &str)]| {
        let (mut tx, mut rx) = quic.open_bi().await.unwrap();
        tx.write_all(&headers_frame(fields)).await.unwrap();
        tx.finish().unwrap();
        rx.read_to_end(64 * 1024).await
    };
    let base = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "good.test"),
        (":path", "/"),
    ];
    // The same request with an agreeing host is served.
    let agreeing = send(&[&base[..], &[("host", "good.test")]].concat()).await;
    let answer = agreeing.unwrap();
    assert!(!answer.is_empty());
    assert_eq!(backend.count(), 1);

    let contradicting = send(&[&base[..], &[("host", "evil.test")]].concat()).await;
    match contradicting {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            // H3_MESSAGE_ERROR (RFC 9114 §4.1.2).
            assert_eq!(code.into_inner(), 0x10e);
        }
        other => panic!("the request was not refused: {other:?}"),
    }
    assert_eq!(
        backend.count(),
        1,
        "the backend got the contradicting request"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_cannot_open_more_streams_than_allowed() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let backend = {
        let arrived = arrived.clone();
        let release = release.clone();
        Backend::start(move |_req| {
            let arrived = arrived.clone();
            let release = release.clone();
            async move {
                let waiting = release.notified();
                arrived.fetch_add(1, Ordering::SeqCst);
                waiting.await;
                Response::new(full("done"))
            }
        })
        .await
    };
    let manifests = service("app", &[backend.addr]) + &limited_route("busy", "", None);
    let cfg = config(Some(Http3Settings {
        max_streams: 2,
        ..Http3Settings::default()
    }));
    let gw = TestGateway::start_with(&manifests, cfg).await;
    let client = H3::open(gw.https(), "busy.test").await;

    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut send = client.send.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("https://busy.test/{i}"))
                .body(())
                .unwrap();
            let mut stream = send.send_request(req).await.unwrap();
            stream.finish().await.unwrap();
            read_response(&mut stream).await
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while arrived.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The third stream cannot be opened while two are open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(arrived.load(Ordering::SeqCst), 2);
    // Once they end, it is.
    while arrived.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the third never came"
        );
        release.notify_waiters();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_waiters();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "done");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_goaway_and_drains_requests_in_flight() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let backend = {
        let arrived = arrived.clone();
        let release = release.clone();
        Backend::start(move |req: Request<hyper::body::Incoming>| {
            let arrived = arrived.clone();
            let release = release.clone();
            async move {
                if req.uri().path() == "/late" {
                    return Response::new(full("late"));
                }
                let waiting = release.notified();
                arrived.notify_one();
                waiting.await;
                Response::new(full("finished after shutdown began"))
            }
        })
        .await
    };
    let manifests = service("app", &[backend.addr]) + &limited_route("slow", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "slow.test").await;
    let mut send = client.send.clone();
    let in_flight = tokio::spawn(async move {
        let req = Request::get("https://slow.test/").body(()).unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        read_response(&mut stream).await
    });
    arrived.notified().await;
    let https = gw.https();
    let stopping = tokio::spawn(gw.shutdown());
    // GOAWAY reaches the client: it opens no more requests there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let req = Request::get("https://slow.test/late").body(()).unwrap();
        if client.send.send_request(req).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no GOAWAY");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request in flight still completes.
    release.notify_waiters();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "finished after shutdown began");
    stopping.await.unwrap();
    // And nothing answers QUIC afterwards.
    let endpoint = client_endpoint();
    let attempt = tokio::time::timeout(
        Duration::from_millis(500),
        endpoint.connect(https, "slow.test").unwrap(),
    )
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))));
}

/// The value of the first line of `text` that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn new_connections_are_validated_by_retry_and_counted() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("count", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "count.test").await;
    assert_eq!(client.get("count.test", "/").await.status, StatusCode::OK);

    let metrics = admin_get(&gw, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    // The client's first Initial got a Retry; its second, with the
    // token, was accepted.
    assert!(
        metric(&text, "sluicegate_quic_incoming_total{result=\"retry\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "sluicegate_quic_incoming_total{result=\"accepted\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "sluicegate_connections_total{listener=\"https\",protocol=\"h3\"}"
        ) >= 1.0,
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn connection_specific_fields_and_bad_lengths_get_400() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("conn", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "conn.test").await;
    for (name, value) in [
        ("transfer-encoding", "chunked"),
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
        ("content-length", "3, 4"),
        ("content-length", "-1"),
    ] {
        let req = Request::post("https://conn.test/")
            .header(name, value)
            .body(())
            .unwrap();
        let r = client.request(req, b"").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {value}");
    }
    assert_eq!(backend.count(), 0);
    // `te: trailers` is allowed, and the request goes through.
    let req = Request::get("https://conn.test/")
        .header("te", "trailers")
        .body(())
        .unwrap();
    assert_eq!(client.request(req, b"").await.status, StatusCode::OK);
    assert_eq!(backend.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn hosts_that_ask_for_client_certificates_are_not_offered_http3() {
    let backend = Capture::start().await;
    let ca = tls::Ca::new("clients");
    let server = ca.issue(&["mtls.test"], "mtls.test");
    let client_cert = ca.issue(&["client"], "client");
    let indent = |t: &str| t.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let manifests = service("app", &[backend.addr])
        + &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: server-tls, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&server.pem),
            indent(&server.key)
        )
        + &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca, namespace: default}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{}",
            indent(&ca.pem)
        )
        + &apiroute(
            "mtls",
            r#"  hosts: ["mtls.test"]
  tls: {secretName: server-tls, clientAuth: {caSecretRef: {name: client-ca}}}
  routes: [{name: all, backends: [{serviceName: app, servicePort: 80}]}]
"#,
        );
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    // Over TCP with a client certificate: served, and no Alt-Svc.
    let config = tls::client_config_for(&ca, Some(&client_cert), &[b"http/1.1"]);
    let stream = tls::connect_with(&config, gw.https(), Some("mtls.test")).await;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/")
                .header("host", "mtls.test")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("alt-svc"), None);
    // Over HTTP/3, which asks for no certificate: 421, and the backend
    // sees nothing.
    let mut client = H3::open(gw.https(), "mtls.test").await;
    let r = client.get("mtls.test", "/").await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(backend.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_requests_is_closed() {
    let mut cfg = h3_on();
    cfg.proxy.header_read_timeout = Duration::from_millis(300);
    cfg.proxy.keepalive_timeout = Duration::from_millis(800);
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("idle", "", None);
    let gw = TestGateway::start_with(&manifests, cfg).await;
    // Never a request: closed after the header read timeout.
    let silent = H3::open(gw.https(), "idle.test").await;
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.quic.closed()).await;
    assert!(
        matches!(closed, Ok(quinn::ConnectionError::ApplicationClosed(ref c)) if c.error_code.into_inner() == 0x100),
        "{closed:?}"
    );
    // One request, then quiet: closed after the keep-alive timeout.
    let mut used = H3::open(gw.https(), "idle.test").await;
    assert_eq!(used.get("idle.test", "/").await.status, StatusCode::OK);
    let closed = tokio::time::timeout(Duration::from_secs(5), used.quic.closed()).await;
    assert!(
        matches!(closed, Ok(quinn::ConnectionError::ApplicationClosed(ref c)) if c.error_code.into_inner() == 0x100),
        "{closed:?}"
    );
    gw.shutdown().await;
}
