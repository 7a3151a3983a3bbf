//! TLS handshakes through the real proxy: session resumption across
//! gateways sharing ticket keys, the handshake timeout, the bound on
//! pending handshakes and ClientHello size, and many certificates.

use crate::common;

use common::tls::{cert, client_config, client_config_versions, connect, connect_with, presented};

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use sluicegate::gateway::GatewayConfig;
use sluicegate::translate::ObjectKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn secret(name: &str, crt: &str, key: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
}

fn ingress(name: &str, host: &str, secret: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  ingressClassName: sluicegate
  tls: [{{hosts: ["{host}"], secretName: {secret}}}]
  rules:
  - host: "{host}"
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]
"#
    )
}

/// A ticket key Secret with one key per `(start, fill byte)`.
fn ticket_secret(keys: &[(u64, u8)]) -> String {
    let mut s = String::from(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: tickets, namespace: default}\ntype: Opaque\ndata:\n",
    );
    for (start, fill) in keys {
        let value = base64::engine::general_purpose::STANDARD.encode([*fill; 32]);
        s.push_str(&format!("  ticket-key-{start}: {value}\n"));
    }
    s
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn https_config() -> GatewayConfig {
    let mut cfg = test_config(1);
    cfg.https_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg
}

fn shared_keys_config(handshake_threads: usize) -> GatewayConfig {
    let mut cfg = https_config();
    cfg.translate.ticket_keys_secret = Some(ObjectKey::new("default", "tickets"));
    cfg.proxy.tls.handshake_threads = handshake_threads;
    cfg
}

/// One GET on `s`; reading the response also reads the session tickets
/// TLS 1.3 sends after the handshake.
async fn get(s: TlsStream<TcpStream>, host: &str) -> (StatusCode, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn kind(s: &TlsStream<TcpStream>) -> Option<HandshakeKind> {
    s.get_ref().1.handshake_kind()
}

#[tokio::test]
async fn a_session_made_with_one_gateway_resumes_on_another_sharing_the_ticket_key_secret() {
    let b = Backend::named("app").await;
    let ec = cert(&["ec.test"]);
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("ec-tls", &ec.pem, &ec.key));
    m.push_str(&ingress("ec", "ec.test", "ec-tls"));
    // The previous key still opens, the current one seals, the next waits.
    let t = now();
    m.push_str(&ticket_secret(&[(t - 7200, 1), (t - 60, 2), (t + 3600, 3)]));
    // One gateway processes ClientHellos on handshake threads, the other
    // on its event loop: both paths seal and open alike.
    let one = TestGateway::start_with(&m, shared_keys_config(2)).await;
    let two = TestGateway::start_with(&m, shared_keys_config(0)).await;
    // A gateway with keys of its own.
    let alone = TestGateway::start_with(&m, https_config()).await;

    for versions in [None, Some(&rustls::version::TLS12)] {
        let config = match versions {
            None => client_config(&[]),
            Some(v) => client_config_versions(&[], &[v]),
        };
        let label = format!("{versions:?}");
        let first = connect_with(&config, one.https(), Some("ec.test")).await;
        assert_eq!(kind(&first), Some(HandshakeKind::Full), "{label}");
        assert_eq!(get(first, "ec.test").await, (StatusCode::OK, "app".into()));
        // The ticket the first gateway issued resumes on the second.
        let second = connect_with(&config, two.https(), Some("ec.test")).await;
        assert_eq!(kind(&second), Some(HandshakeKind::Resumed), "{label}");
        assert_eq!(presented(&second), ec.der);
        assert_eq!(get(second, "ec.test").await, (StatusCode::OK, "app".into()));
        // And the second's on the first.
        let third = connect_with(&config, one.https(), Some("ec.test")).await;
        assert_eq!(kind(&third), Some(HandshakeKind::Resumed), "{label}");
        drop(third);

        // A gateway without the shared keys cannot open them: a full
        // handshake, and it still serves.
        let config = client_config(&[]);
        let first = connect_with(&config, one.https(), Some("ec.test")).await;
        assert_eq!(get(first, "ec.test").await, (StatusCode::OK, "app".into()));
        let other = connect_with(&config, alone.https(), Some("ec.test")).await;
        assert_eq!(kind(&other), Some(HandshakeKind::Full), "{label}");
        assert_eq!(get(other, "ec.test").await, (StatusCode::OK, "app".into()));
    }

    // /routes names the keys by id and start, never their secrets.
    let routes = admin_get(&one, "/routes").await;
    let text = String::from_utf8_lossy(&routes.body).into_owned();
    assert!(text.contains(&format!("{}", t - 60)), "{text}");
    let secret = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
    assert!(!text.contains(&secret), "{text}");

    one.shutdown().await;
    two.shutdown().await;
    alone.shutdown().await;
}

#[tokio::test]
async fn a_ticket_key_secret_with_a_bad_value_is_reported_and_its_good_keys_used() {
    let b = Backend::named("app").await;
    let ec = cert(&["ec.test"]);
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("ec-tls", &ec.pem, &ec.key));
    m.push_str(&ingress("ec", "ec.test", "ec-tls"));
    m.push_str(&ticket_secret(&[(now() - 60, 4)]));
    m.push_str("  ticket-key-soon: AAAA\n");
    let one = TestGateway::start_with(&m, shared_keys_config(1)).await;
    let two = TestGateway::start_with(&m, shared_keys_config(1)).await;
    let diags = admin_get(&one, "/routes").await;
    let text = String::from_utf8_lossy(&diags.body).into_owned();
    assert!(text.contains("ticket-key-soon"), "{text}");
    assert!(text.contains("Unix seconds"), "{text}");
    let config = client_config(&[]);
    let first = connect_with(&config, one.https(), Some("ec.test")).await;
    assert_eq!(get(first, "ec.test").await, (StatusCode::OK, "app".into()));
    let second = connect_with(&config, two.https(), Some("ec.test")).await;
    assert_eq!(kind(&second), Some(HandshakeKind::Resumed));
    one.shutdown().await;
    two.shutdown().await;
}

/// True when the server closes `s` (EOF or reset) within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An alert: keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// The first bytes of a ClientHello: a handshake record announcing more
/// than is sent.
const PARTIAL_HELLO: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

#[tokio::test]
async fn a_handshake_not_completed_in_time_is_closed() {
    let mut cfg = https_config();
    cfg.proxy.tls.handshake_timeout = Duration::from_millis(300);
    let gw = TestGateway::start_with("", cfg).await;
    let mut silent = TcpStream::connect(gw.https()).await.unwrap();
    let mut partial = TcpStream::connect(gw.https()).await.unwrap();
    partial.write_all(&PARTIAL_HELLO).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    assert!(closed_within(&mut partial, Duration::from_secs(10)).await);
    // A client that completes in time is served.
    let ok = connect(gw.https(), Some("any.test"), &[]).await;
    assert_eq!(kind(&ok), Some(HandshakeKind::Full));
    let metrics = admin_get(&gw, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.lines().any(
            |l| l.starts_with("sluicegate_tls_handshakes_total{result=\"timeout\"")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_half_open_flood_drops_the_oldest_and_established_connections_keep_working() {
    let b = Backend::named("app").await;
    let ec = cert(&["ec.test"]);
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("ec-tls", &ec.pem, &ec.key));
    m.push_str(&ingress("ec", "ec.test", "ec-tls"));
    let mut cfg = https_config();
    // Long enough that only the pending bound closes them here.
    cfg.proxy.tls.handshake_timeout = Duration::from_secs(60);
    cfg.proxy.tls.max_pending_handshakes = 16;
    let gw = TestGateway::start_with(&m, cfg).await;

    // An established keep-alive connection.
    let s = connect(gw.https(), Some("ec.test"), &[]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = async || {
        send.ready().await.unwrap();
        let req = Request::get("/")
            .header("host", "ec.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    assert_eq!(request().await, (StatusCode::OK, Bytes::from("app")));

    // 200 connections that start a handshake and never finish it.
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(gw.https()).await.unwrap();
        s.write_all(&PARTIAL_HELLO).await.unwrap();
        flood.push(s);
    }
    // The established connection is served meanwhile.
    assert_eq!(request().await, (StatusCode::OK, Bytes::from("app")));
    // All but the newest 16 were closed to make room.
    let mut closed = 0;
    for s in &mut flood[..184] {
        if closed_within(s, Duration::from_secs(10)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 184);
    for s in &mut flood[190..] {
        assert!(!closed_within(s, Duration::from_millis(50)).await);
    }
    // A new client still gets through (taking the oldest one's place),
    // and the established connection is still served.
    let fresh = connect(gw.https(), Some("ec.test"), &[]).await;
    assert_eq!(get(fresh, "ec.test").await, (StatusCode::OK, "app".into()));
    assert_eq!(request().await, (StatusCode::OK, Bytes::from("app")));
    let metrics = admin_get(&gw, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let evicted: f64 = text
        .lines()
        .find(|l| l.starts_with("sluicegate_tls_handshakes_total{result=\"evicted\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(evicted >= 185.0, "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_hello_beyond_the_bound_is_refused_without_waiting_for_the_rest() {
    let mut cfg = https_config();
    cfg.proxy.tls.handshake_timeout = Duration::from_secs(60);
    let gw = TestGateway::start_with("", cfg).await;
    let mut s = TcpStream::connect(gw.https()).await.unwrap();
    // A ClientHello announced at 64 KiB - 1, sent as full records: the
    // server gives up after 16 KiB instead of holding what comes.
    let mut first = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
    first.resize(5 + 0x4000, 0);
    let _ = s.write_all(&first).await;
    let mut more = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    more.resize(5 + 0x4000, 0);
    let _ = s.write_all(&more).await;
    assert!(closed_within(&mut s, Duration::from_secs(10)).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_certificates_load_and_sni_picks_each() {
    const HOSTS: usize = 10_000;
    const WILDCARDS: usize = 100;
    let b = Backend::named("app").await;
    // One key for all: what is tested is the index, not key generation.
    let key = rcgen::KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    let mut m = service("app", &[b.addr]);
    let mut ders = Vec::with_capacity(HOSTS + WILDCARDS);
    let mut tls = String::new();
    for i in 0..HOSTS + WILDCARDS {
        let host = if i < HOSTS {
            format!("h{i}.many.test")
        } else {
            format!("*.w{}.many.test", i - HOSTS)
        };
        let params = rcgen::CertificateParams::new(vec![host.clone()]).unwrap();
        let c = params.self_signed(&key).unwrap();
        m.push_str(&secret(&format!("s{i}"), &c.pem(), &key_pem));
        tls.push_str(&format!("  - {{hosts: [\"{host}\"], secretName: s{i}}}\n"));
        ders.push(c.der().to_vec());
    }
    m.push_str(&format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: many, namespace: default}}\nspec:\n  ingressClassName: sluicegate\n  tls:\n{tls}  rules:\n  - http:\n      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]\n"
    ));
    let gw = TestGateway::start_with(&m, https_config()).await;
    let config = client_config(&[]);
    // A spread of exact names, wildcards, and names covered by neither.
    for i in (0..HOSTS).step_by(997).chain([HOSTS - 1]) {
        let s = connect_with(&config, gw.https(), Some(&format!("h{i}.many.test"))).await;
        assert_eq!(presented(&s), ders[i], "h{i}");
    }
    for w in [0, 37, WILDCARDS - 1] {
        let s = connect_with(&config, gw.https(), Some(&format!("x.w{w}.many.test"))).await;
        assert_eq!(presented(&s), ders[HOSTS + w], "w{w}");
    }
    let s = connect_with(&config, gw.https(), Some("h10000.many.test")).await;
    assert!(!ders.contains(&presented(&s)));
    assert_eq!(get(s, "h1.many.test").await, (StatusCode::OK, "app".into()));
    gw.shutdown().await;
}
