//! Requests through HTTP/3: routing, certificates, plugins, bodies, and
//! how clients learn of HTTP/3.

use super::*;

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
    // A GET whose stream ends after its head has no body and no framing:
    // the head is all the backend receives.
    assert_eq!(
        seen.find("\r\n\r\n"),
        Some(seen.len() - 4),
        "no body: {seen}"
    );
    assert!(!seen.contains("transfer-encoding"), "{seen}");
    assert!(!seen.contains("content-length"), "{seen}");
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
        .header("cookie", "a=1")
        .header("cookie", "b=2")
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
    // HTTP/3's separate cookie fields are one for HTTP/1.1 (RFC 9114 §4.2.1).
    assert_eq!(requests[0].headers("cookie"), ["a=1; b=2"]);
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

/// The edge rules of the other listeners hold over HTTP/3: TRACE is
/// refused (its route does not name it), `Proxy` never reaches the
/// backend, `Max-Forwards: 0` on OPTIONS is the gateway's to answer, and a
/// 204 carries no length.
#[tokio::test]
async fn trace_proxy_max_forwards_and_no_content_as_over_tcp() {
    let backend = Capture::with(|r| {
        if r.line().starts_with("GET /204 ") {
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello".to_vec()
        } else {
            common::wire::ok("fine")
        }
    })
    .await;
    let manifests = service("app", &[backend.addr]) + &limited_route("edge", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let mut client = H3::open(gw.https(), "edge.test").await;

    let trace = Request::builder()
        .method("TRACE")
        .uri("https://edge.test/t")
        .body(())
        .unwrap();
    assert_eq!(
        client.request(trace, b"").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let options = Request::builder()
        .method("OPTIONS")
        .uri("https://edge.test/o")
        .header("max-forwards", "0")
        .body(())
        .unwrap();
    let r = client.request(options, b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("allow").is_some());
    assert_eq!(backend.count(), 0, "{:?}", backend.requests());

    let proxied = Request::get("https://edge.test/p")
        .header("proxy", "http://evil.example:3128")
        .body(())
        .unwrap();
    assert_eq!(client.request(proxied, b"").await.status, StatusCode::OK);
    let r = client.get("edge.test", "/204").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("content-length"), None);
    assert!(r.body.is_empty());
    let got = backend.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].headers("proxy").is_empty(), "{}", got[0].text());
    gw.shutdown().await;
}
