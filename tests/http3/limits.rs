//! What the HTTP/3 side refuses and bounds: malformed requests, stream and
//! idle limits, address validation, and shutdown.

use super::*;

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

/// A QUIC connection that speaks HTTP/3 by hand: the client's control
/// stream is open (its type, then an empty SETTINGS), and requests are
/// written as raw frames. The endpoint and the control stream must live
/// as long as the connection.
async fn raw_h3(
    addr: std::net::SocketAddr,
    sni: &str,
) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream) {
    let endpoint = client_endpoint();
    let quic = endpoint.connect(addr, sni).unwrap().await.unwrap();
    let mut control = quic.open_uni().await.unwrap();
    control.write_all(&[0x00, 0x04, 0x00]).await.unwrap();
    (endpoint, quic, control)
}

#[tokio::test]
async fn a_host_header_that_contradicts_the_authority_is_refused() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr])
        + &limited_route("good", "", None)
        + &limited_route("evil", "", None);
    let gw = TestGateway::start_with(&manifests, h3_on()).await;
    let (_endpoint, quic, _control) = raw_h3(gw.https(), "good.test").await;

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
async fn a_header_section_over_the_limit_gets_431() {
    let backend = Capture::start().await;
    let manifests = service("app", &[backend.addr]) + &limited_route("big", "", None);
    let mut cfg = h3_on();
    cfg.proxy.http2.max_header_list_size = 1024;
    let gw = TestGateway::start_with(&manifests, cfg).await;
    let (_endpoint, quic, _control) = raw_h3(gw.https(), "big.test").await;
    // Hand-encoded: the h3 client would not send a section the server's
    // SETTINGS say is too large.
    let filler = "x".repeat(2000);
    let (mut tx, mut rx) = quic.open_bi().await.unwrap();
    tx.write_all(&headers_frame(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "big.test"),
        (":path", "/"),
        ("x-filler", &filler),
    ]))
    .await
    .unwrap();
    tx.finish().unwrap();
    let answer = rx.read_to_end(64 * 1024).await.unwrap_or_default();
    // The answer's HEADERS carry `:status` as a literal value: "431",
    // Huffman-coded (RFC 7541 Appendix B: 011010 011001 00001, padded
    // with ones) behind its length byte.
    assert!(
        answer.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff]),
        "{answer:?}"
    );
    assert_eq!(backend.count(), 0);
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

#[tokio::test]
async fn streams_the_client_resets_count_until_their_requests_end() {
    // The "rapid reset" pattern: open, reset, open again. A reset stream
    // must not free its slot while its request still holds an upstream.
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
    let manifests = service("app", &[backend.addr]) + &limited_route("reset", "", None);
    let cfg = config(Some(Http3Settings {
        max_streams: 2,
        ..Http3Settings::default()
    }));
    let gw = TestGateway::start_with(&manifests, cfg).await;
    let mut client = H3::open(gw.https(), "reset.test").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut opened = 0;
    for i in 0..10 {
        let req = Request::get(format!("https://reset.test/{i}"))
            .body(())
            .unwrap();
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_millis(300), client.send.send_request(req)).await
        else {
            break;
        };
        opened += 1;
        let _ = stream.finish().await;
        while arrived.load(Ordering::SeqCst) < opened {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request {i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
    }
    assert_eq!(opened, 2, "reset streams gave their slots back early");
    assert_eq!(arrived.load(Ordering::SeqCst), 2);
    release.notify_waiters();
    gw.shutdown().await;
}
