//! Clients that hold instead of talk: slow heads, slow readers, idle
//! connections by the thousand, and clients whose faults must not be
//! blamed on healthy endpoints.

use std::time::{Duration, Instant};

use super::common::wire::{Listener, Raw};
use super::common::*;
use super::{HOST, Setup, get};
use crate::on_both_listeners;

/// A client connection whose receive buffer is small and fixed, so that a
/// client that stops reading stops the proxy's writes soon.
async fn small_window(s: &Setup, l: Listener) -> Raw {
    let addr = l.addr(&s.gw);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    match l {
        Listener::Plain => Raw::over(Box::new(tcp)),
        Listener::Tls => {
            let config = super::common::tls::client_config(&[b"http/1.1"]);
            let name = rustls::pki_types::ServerName::try_from("h1.test").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap();
            Raw::over(Box::new(tls))
        }
    }
}

/// Slowloris: a head trickled a byte at a time is cut at the header read
/// timeout, counted from its first byte, however steadily bytes come.
async fn slowloris_heads_are_cut(l: Listener) {
    let limit = Duration::from_millis(500);
    let s = Setup::start_with("", |c| c.proxy.header_read_timeout = limit).await;
    let mut c = s.raw(l).await;
    let started = Instant::now();
    let head = get("/slow");
    let mut cut = false;
    for b in head.as_bytes()[..head.len() - 2].iter().cycle().take(200) {
        if !c.try_send(&[*b]).await {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cut || c.closed().await, "{l:?}: still open");
    let took = started.elapsed();
    assert!(took < limit * 4, "{l:?}: cut after {took:?}");
    assert_eq!(s.app.count(), 0);
    s.shutdown().await;
}

/// A client that stops reading a large response is cut after the send
/// timeout, and with it the upstream connection and the endpoint's
/// in-flight count: nothing it held stays held.
async fn slow_readers_release_everything(l: Listener) {
    let (s, big) = Setup::big(Duration::from_millis(400)).await;
    let mut c = small_window(&s, l).await;
    c.send(&get("/big")).await;
    // Never read: within the timeout (after the buffers fill) both sides
    // close.
    let deadline = Instant::now() + Duration::from_secs(10);
    while big.closed() == 0 {
        assert!(Instant::now() < deadline, "{l:?}: upstream still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut read = 0usize;
    c.patience = Duration::from_secs(5);
    while c.fill().await {
        read += c.buf.len();
        c.buf.clear();
    }
    assert!(read < 32 << 20, "{l:?}: the whole body went out");
    let routes = admin_get(&s.gw, "/routes").await.text();
    assert!(routes.contains("\"inFlight\": 0"), "{routes}");
    assert!(!routes.contains("\"inFlight\": 1"), "{routes}");
    s.shutdown().await;
}

/// Thousands of idle connections: the gateway goes on serving, and every
/// one of them is closed by its timeout (the header read timeout for a
/// connection that never sent a request, the keep-alive timeout after
/// one).
async fn idle_connections_by_the_thousand_are_closed(l: Listener) {
    let s = Setup::start_with("", |c| {
        c.proxy.header_read_timeout = Duration::from_secs(2);
        c.proxy.keepalive_timeout = Duration::from_secs(3);
    })
    .await;
    // TLS handshakes are slow in debug builds: fewer of them.
    let count = match l {
        Listener::Plain => 2000,
        Listener::Tls => 400,
    };
    let mut idle = Vec::new();
    for i in 0..count {
        let mut c = s.raw(l).await;
        c.patience = Duration::from_secs(15);
        if i % 2 == 1 {
            c.send(&get("/once")).await;
            assert_eq!(c.response(false).await.status, 200);
        }
        idle.push(c);
    }
    let started = Instant::now();
    let mut c = s.raw(l).await;
    c.send(&get("/meanwhile")).await;
    assert_eq!(c.response(false).await.status, 200);
    for c in &mut idle {
        assert!(c.closed().await, "{l:?}: an idle connection stayed open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{l:?}: took {:?}",
        started.elapsed()
    );
    s.shutdown().await;
}

/// A client that breaks its body, or leaves in the middle of it, gets the
/// blame (400; 499 in logs and metrics): the endpoint is neither ejected
/// nor retried on, however often it happens.
async fn client_faults_never_eject_an_endpoint(l: Listener) {
    let extra = "    healthCheck: {passive: {consecutiveFailures: 2, baseEjectionTime: 60s}}\n";
    let s = Setup::start_with(extra, |_| {}).await;
    for i in 0..4 {
        let mut c = s.raw(l).await;
        c.send(&format!(
            "POST /broken HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if i % 2 == 0 {
            // A malformed chunk.
            c.send("zz\r\n").await;
            let r = c.response(false).await;
            assert_eq!(r.status, 400, "{l:?}");
        } else {
            // A client that leaves mid-body.
            drop(c);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut c = s.raw(l).await;
    c.send(&get("/fine")).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{l:?}: the endpoint was blamed: {r:?}");
    let got = s.app.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line(), "GET /fine HTTP/1.1");
    let routes = admin_get(&s.gw, "/routes").await.text();
    assert!(routes.contains("\"healthy\": true"), "{routes}");
    assert!(!routes.contains("\"ejected\""), "{routes}");
    s.shutdown().await;
}

/// While a body uploads, the request timeout counts only time without
/// progress: a steady upload longer than the timeout completes; one that
/// stalls gets 408, the client's fault, however often, and the endpoint
/// stays in.
async fn uploads_are_timed_by_their_progress(l: Listener) {
    let extra = "    healthCheck: {passive: {consecutiveFailures: 2, baseEjectionTime: 60s}}\n";
    let s = Setup::start_with(extra, |c| {
        c.proxy.request_timeout = Duration::from_millis(700);
    })
    .await;
    // 14 chunks, one every 100 ms: twice the timeout in all.
    let mut c = s.raw(l).await;
    c.send(&format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 14000\r\n\r\n"
    ))
    .await;
    for _ in 0..14 {
        c.send(&"x".repeat(1000)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{l:?}: a steady upload was cut: {r:?}");
    let got = s.app.requests();
    assert_eq!(got.len(), 1);
    assert!(got[0].bytes.ends_with(&[b'x'; 14000]), "{l:?}");

    for _ in 0..3 {
        let mut c = s.raw(l).await;
        c.send(&format!(
            "POST /stalled HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5000\r\n\r\n{}",
            "x".repeat(1000)
        ))
        .await;
        let started = std::time::Instant::now();
        let r = c.response(false).await;
        assert_eq!(r.status, 408, "{l:?}: {r:?}");
        assert!(started.elapsed() >= Duration::from_millis(600), "{l:?}");
    }
    let mut c = s.raw(l).await;
    c.send(&get("/fine")).await;
    assert_eq!(
        c.response(false).await.status,
        200,
        "{l:?}: the endpoint was blamed"
    );
    let routes = admin_get(&s.gw, "/routes").await.text();
    assert!(!routes.contains("\"ejected\""), "{routes}");
    s.shutdown().await;
}

on_both_listeners!(
    uploads_are_timed_by_their_progress,
    slowloris_heads_are_cut,
    slow_readers_release_everything,
    idle_connections_by_the_thousand_are_closed,
    client_faults_never_eject_an_endpoint,
);
