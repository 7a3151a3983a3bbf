//! TLS termination through the real proxy: certificates generated here,
//! served from Secrets in a standalone directory, chosen by SNI.

use crate::common;

use common::tls::{cert, connect, presented};

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluicegate::gateway::GatewayConfig;
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

fn tls_ingress(name: &str, host: &str, secret: &str, svc: &str) -> String {
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
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]
"#
    )
}

fn https_config() -> GatewayConfig {
    let mut cfg = test_config(1);
    cfg.https_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg
}

/// Sends one GET over an HTTP/1.1 connection that stays open.
struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1 {
    async fn open(s: TlsStream<TcpStream>) -> H1 {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        H1(send)
    }

    async fn get(&mut self, host: &str) -> (StatusCode, String) {
        let (status, _, body) = self.get_full(host).await;
        (status, body)
    }

    async fn get_full(&mut self, host: &str) -> (StatusCode, http::HeaderMap, String) {
        let req = Request::get("/")
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default() {
    let b = Backend::named("app").await;
    let (shop, wild) = (cert(&["shop.test"]), cert(&["*.wild.test"]));
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("shop-tls", &shop.pem, &shop.key));
    m.push_str(&secret("wild-tls", &wild.pem, &wild.key));
    m.push_str(&tls_ingress("shop", "shop.test", "shop-tls", "app"));
    m.push_str(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: wild, namespace: default}
spec:
  hosts: ["*.wild.test"]
  tls: {secretName: wild-tls}
  routes: [{name: all, backends: [{serviceName: app, servicePort: 80}]}]
"#,
    );
    let gw = TestGateway::start_with(&m, https_config()).await;
    let addr = gw.https();
    assert_eq!(
        presented(&connect(addr, Some("shop.test"), &[]).await),
        shop.der
    );
    assert_eq!(
        presented(&connect(addr, Some("SHOP.test"), &[]).await),
        shop.der
    );
    assert_eq!(
        presented(&connect(addr, Some("a.wild.test"), &[]).await),
        wild.der
    );
    // One label only, as for routing.
    let deep = presented(&connect(addr, Some("a.b.wild.test"), &[]).await);
    assert_ne!(deep, wild.der);
    let unknown = presented(&connect(addr, Some("other.test"), &[]).await);
    let no_sni = presented(&connect(addr, None, &[]).await);
    assert_eq!(unknown, no_sni, "both get the default certificate");
    assert!(unknown != shop.der && unknown != wild.der);
    // Requests over TLS reach the backend, marked as HTTPS.
    let mut c = H1::open(connect(addr, Some("a.wild.test"), &[]).await).await;
    assert_eq!(c.get("a.wild.test").await, (StatusCode::OK, "app".into()));
    gw.shutdown().await;
}

#[tokio::test]
async fn default_certificate_comes_from_the_named_secret() {
    let fallback = cert(&["fallback.test"]);
    let m = secret("fallback", &fallback.pem, &fallback.key);
    let mut cfg = https_config();
    cfg.translate.default_certificate =
        Some(sluicegate::translate::ObjectKey::new("default", "fallback"));
    let gw = TestGateway::start_with(&m, cfg).await;
    assert_eq!(
        presented(&connect(gw.https(), None, &[]).await),
        fallback.der
    );
    assert_eq!(
        presented(&connect(gw.https(), Some("x.test"), &[]).await),
        fallback.der
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_and_http1_are_both_negotiated() {
    let seen = Backend::start(|req| async move {
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        http::Response::new(full(proto))
    })
    .await;
    let c = cert(&["h.test"]);
    let mut m = service("h", &[seen.addr]);
    m.push_str(&secret("h-tls", &c.pem, &c.key));
    m.push_str(&tls_ingress("h", "h.test", "h-tls", "h"));
    let gw = TestGateway::start_with(&m, https_config()).await;

    let s = connect(gw.https(), Some("h.test"), &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://h.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"https");

    let s = connect(gw.https(), Some("h.test"), &[b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut c1 = H1::open(s).await;
    assert_eq!(c1.get("h.test").await, (StatusCode::OK, "https".into()));
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_1_1_is_refused() {
    let gw = TestGateway::start_with("", https_config()).await;
    // A ClientHello that offers TLS 1.1 at most: no supported_versions
    // extension, one TLS 1.0/1.1 cipher suite.
    let mut body = vec![0x03, 0x02];
    body.extend([7u8; 32]);
    body.extend([0x00, 0x00, 0x02, 0xc0, 0x13, 0x01, 0x00]);
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8];
    hs.extend(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    record.extend(&hs);
    let mut tcp = TcpStream::connect(gw.https()).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut reply = [0u8; 7];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(n >= 1);
    assert_eq!(
        reply[0], 0x15,
        "expected an alert, got record type {:#x}",
        reply[0]
    );
    assert_eq!(reply[5], 2, "fatal alert");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_renewed_secret_serves_new_handshakes_and_keeps_open_connections() {
    let b = Backend::named("app").await;
    let (old, new) = (cert(&["r.test"]), cert(&["r.test"]));
    let mut base = service("app", &[b.addr]);
    base.push_str(&tls_ingress("r", "r.test", "r-tls", "app"));
    let gw = TestGateway::start_with(&base, https_config()).await;
    gw.write("secret.yaml", &secret("r-tls", &old.pem, &old.key))
        .await;
    let s = connect(gw.https(), Some("r.test"), &[]).await;
    assert_eq!(presented(&s), old.der);
    let mut open = H1::open(s).await;
    assert_eq!(open.get("r.test").await.0, StatusCode::OK);

    gw.write("secret.yaml", &secret("r-tls", &new.pem, &new.key))
        .await;
    assert_eq!(
        presented(&connect(gw.https(), Some("r.test"), &[]).await),
        new.der
    );
    // The connection opened before the renewal still works.
    assert_eq!(open.get("r.test").await, (StatusCode::OK, "app".into()));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_broken_secret_is_reported_and_other_hosts_keep_their_certificates() {
    let b = Backend::named("app").await;
    let good = cert(&["good.test"]);
    let other = cert(&["bad.test"]);
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("good-tls", &good.pem, &good.key));
    // A key that does not belong to the certificate.
    m.push_str(&secret("bad-tls", &other.pem, &good.key));
    m.push_str(&tls_ingress("good", "good.test", "good-tls", "app"));
    m.push_str(&tls_ingress("bad", "bad.test", "bad-tls", "app"));
    m.push_str(&tls_ingress("missing", "missing.test", "nope", "app"));
    let gw = TestGateway::start_with(&m, https_config()).await;
    assert_eq!(
        presented(&connect(gw.https(), Some("good.test"), &[]).await),
        good.der
    );
    let s = connect(gw.https(), Some("bad.test"), &[]).await;
    assert_ne!(presented(&s), other.der);
    // Its routes still serve, with the default certificate.
    assert_eq!(H1::open(s).await.get("bad.test").await.0, StatusCode::OK);

    let routes: serde_json::Value =
        serde_json::from_str(&admin_get(&gw, "/routes").await.text()).unwrap();
    let diags = routes["diagnostics"].as_array().unwrap();
    let find = |name: &str| {
        diags
            .iter()
            .find(|d| d["object"]["name"] == name)
            .unwrap_or_else(|| panic!("no diagnostic for {name}: {diags:?}"))
            .clone()
    };
    let bad = find("bad");
    assert_eq!(bad["field"], "spec.tls[0].secretName");
    assert_eq!(bad["reason"], "InvalidCertificate");
    assert!(
        bad["message"].as_str().unwrap().contains("does not belong"),
        "{bad}"
    );
    assert!(
        find("missing")["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{diags:?}"
    );
    assert!(diags.iter().all(|d| d["object"]["name"] != "good"));
    // The certificates in the table are listed without key material.
    let tls = routes["table"]["tls"].as_array().unwrap();
    assert_eq!(tls.len(), 1, "{tls:?}");
    assert_eq!(tls[0]["secret"], "default/good-tls");
    assert!(tls[0].get("key").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn plain_http_redirects_to_https_for_hosts_with_certificates() {
    let b = Backend::named("app").await;
    let c = cert(&["secure.test"]);
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("secure-tls", &c.pem, &c.key));
    m.push_str(&tls_ingress("secure", "secure.test", "secure-tls", "app"));
    m.push_str(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: plain, namespace: default}
spec:
  ingressClassName: sluicegate
  rules:
  - host: plain.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]
"#,
    );
    let mut cfg = https_config();
    cfg.proxy.https_redirect_port = 8443;
    cfg.proxy.hsts = Some(http::HeaderValue::from_static("max-age=600"));
    let gw = TestGateway::start_with(&m, cfg).await;
    let r = get(gw.http(), "secure.test:8080", "/a/b%20c?x=1&y=2").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.header("location"),
        Some("https://secure.test:8443/a/b%20c?x=1&y=2")
    );
    // Hosts without a certificate are served over HTTP.
    let r = get(gw.http(), "plain.test", "/a").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "app".into()));
    assert_eq!(r.header("strict-transport-security"), None);
    // Over HTTPS the same host is served, not redirected again, with HSTS.
    let mut c = H1::open(connect(gw.https(), Some("secure.test"), &[]).await).await;
    let (status, headers, body) = c.get_full("secure.test").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    assert_eq!(headers["strict-transport-security"], "max-age=600");
    gw.shutdown().await;
}

#[tokio::test]
async fn rsa_and_ecdsa_certificates_are_served_and_sessions_resume() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let b = Backend::named("app").await;
    let fixture = |f: &str| {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/tls/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let (rsa_pem, rsa_key) = (fixture("rsa.test.crt"), fixture("rsa.test.key"));
    let rsa_der = CertificateDer::from_pem_slice(rsa_pem.as_bytes())
        .unwrap()
        .to_vec();
    // rcgen makes ECDSA P-256 keys.
    let ec = cert(&["ec.test"]);
    let mut m = service("app", &[b.addr]);
    m.push_str(&secret("rsa-tls", &rsa_pem, &rsa_key));
    m.push_str(&secret("ec-tls", &ec.pem, &ec.key));
    m.push_str(&tls_ingress("rsa", "rsa.test", "rsa-tls", "app"));
    m.push_str(&tls_ingress("ec", "ec.test", "ec-tls", "app"));
    let gw = TestGateway::start_with(&m, https_config()).await;
    assert_eq!(
        presented(&connect(gw.https(), Some("rsa.test"), &[]).await),
        rsa_der
    );
    assert_eq!(
        presented(&connect(gw.https(), Some("ec.test"), &[]).await),
        ec.der
    );

    // A client that keeps its session store resumes instead of a full
    // handshake. (TLS 1.3 sends tickets after the handshake: one request
    // on the first connection lets the client read them.)
    let config = common::tls::client_config(&[]);
    let first = common::tls::connect_with(&config, gw.https(), Some("ec.test")).await;
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    let mut c = H1::open(first).await;
    assert_eq!(c.get("ec.test").await, (StatusCode::OK, "app".into()));
    let second = common::tls::connect_with(&config, gw.https(), Some("ec.test")).await;
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(
        H1::open(second).await.get("ec.test").await,
        (StatusCode::OK, "app".into())
    );
    gw.shutdown().await;
}
