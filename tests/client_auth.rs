//! Client certificate authentication (mutual TLS) per host, through the
//! real proxy: certificates issued in the tests by a test CA, required or
//! optional per host, the verified subject passed upstream, and the ways a
//! client could try to get around it.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::tls::{Ca, Cert, client_config_for};
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sluicegate::gateway::GatewayConfig;
use tokio::net::TcpStream;

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn secret(name: &str, kind: &str, values: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: {kind}\nstringData:\n"
    );
    for (k, v) in values {
        out.push_str(&format!("  {k}: |\n{}", indent(v)));
    }
    out
}

fn https_config() -> GatewayConfig {
    let mut cfg = test_config(1);
    cfg.https_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg
}

/// A backend that answers with the client-certificate headers it got.
async fn echo_backend() -> Backend {
    Backend::start(|req| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
        };
        let body = format!("{}|{}", h("ssl-client-verify"), h("ssl-client-subject-dn"));
        Response::new(full(body))
    })
    .await
}

/// The server certificate, CA and client Secrets, the backend Service, and
/// ApiRoutes: `mtls.test` (client certificates required), `maybe.test`
/// (optional) and `open.test` (none asked).
fn manifests(ca: &Ca, server: &Cert, backend: SocketAddr) -> String {
    let mut m = service("app", &[backend]);
    m += &secret(
        "server-tls",
        "kubernetes.io/tls",
        &[("tls.crt", &server.pem), ("tls.key", &server.key)],
    );
    m += &secret("client-ca", "Opaque", &[("ca.crt", &ca.pem)]);
    for (name, client_auth) in [
        ("mtls", "{caSecretRef: {name: client-ca}}"),
        ("maybe", "{caSecretRef: {name: client-ca}, optional: true}"),
        ("broken", "{caSecretRef: {name: no-such-ca}}"),
    ] {
        m += &format!(
            r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{name}.test"]
  tls: {{secretName: server-tls, clientAuth: {client_auth}}}
  routes: [{{name: all, backends: [{{serviceName: app, servicePort: 80}}]}}]
"#
        );
    }
    m += r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: open, namespace: default}
spec:
  hosts: ["open.test"]
  tls: {secretName: server-tls}
  routes: [{name: all, backends: [{serviceName: app, servicePort: 80}]}]
"#;
    m
}

/// Opens a TLS connection with SNI `sni` and sends one GET with `Host:
/// host` and `headers`; any failure (handshake refused, alert after it)
/// is an error.
async fn call(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    sni: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::get("/").header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp: Response<_> = tx
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn required_client_certificates_are_verified_and_their_subject_passed_on() {
    let ca = Ca::new("client CA");
    let server = ca.issue(
        &["mtls.test", "maybe.test", "open.test", "broken.test"],
        "gateway",
    );
    let alice = ca.issue(&["alice.example"], "alice");
    let mallory = Ca::new("other CA").issue(&["mallory.example"], "mallory");
    let b = echo_backend().await;
    let gw = TestGateway::start_with(&manifests(&ca, &server, b.addr), https_config()).await;
    let addr = gw.https();
    let with_alice = client_config_for(&ca, Some(&alice), &[b"http/1.1"]);
    let with_mallory = client_config_for(&ca, Some(&mallory), &[b"http/1.1"]);
    let anonymous = client_config_for(&ca, None, &[b"http/1.1"]);

    // A certificate from the CA: the upstream learns who it is, and a
    // forged header from the client does not survive.
    let forged = [
        ("ssl-client-subject-dn", "CN=admin"),
        ("ssl-client-verify", "SUCCESS"),
    ];
    let r = call(addr, &with_alice, "mtls.test", "mtls.test", &forged).await;
    assert_eq!(
        r,
        Ok((
            StatusCode::OK,
            "SUCCESS|O=Sluicegate Tests,CN=alice".to_owned()
        ))
    );
    // No certificate, or one from another CA: refused during the handshake.
    for config in [&anonymous, &with_mallory] {
        let r = call(addr, config, "mtls.test", "mtls.test", &[]).await;
        assert!(r.is_err(), "{r:?}");
    }

    // Optional: let through without a certificate, marked NONE; a
    // certificate that fails verification is still refused.
    let r = call(addr, &anonymous, "maybe.test", "maybe.test", &forged).await;
    assert_eq!(r, Ok((StatusCode::OK, "NONE|-".to_owned())));
    let r = call(addr, &with_alice, "maybe.test", "maybe.test", &[]).await;
    assert_eq!(
        r,
        Ok((
            StatusCode::OK,
            "SUCCESS|O=Sluicegate Tests,CN=alice".to_owned()
        ))
    );
    assert!(
        call(addr, &with_mallory, "maybe.test", "maybe.test", &[])
            .await
            .is_err()
    );

    // A host that asks for nothing still never passes forged values.
    let r = call(addr, &anonymous, "open.test", "open.test", &forged).await;
    assert_eq!(r, Ok((StatusCode::OK, "-|-".to_owned())));

    // A connection made for another name cannot be reused for the
    // protected host: 421, and the client opens one of its own.
    let r = call(addr, &anonymous, "open.test", "mtls.test", &[]).await;
    assert_eq!(r.map(|(s, _)| s), Ok(StatusCode::MISDIRECTED_REQUEST));
    // Over plain HTTP the protected host is refused (it has TLS, so by
    // default it redirects; the redirect carries nothing to the upstream).
    let r = get(gw.http(), "mtls.test", "/").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);

    // A CA Secret that does not exist fails closed for its host only.
    let r = call(addr, &with_alice, "broken.test", "broken.test", &[]).await;
    assert!(r.is_err(), "{r:?}");
    let routes = admin_get(&gw, "/routes").await.text();
    assert!(
        routes.contains("Secret default/no-such-ca not found"),
        "{routes}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn plain_http_to_a_protected_host_without_redirect_is_refused() {
    let ca = Ca::new("client CA");
    let server = ca.issue(&["mtls.test"], "gateway");
    let b = echo_backend().await;
    let m = service("app", &[b.addr])
        + &secret(
            "server-tls",
            "kubernetes.io/tls",
            &[("tls.crt", &server.pem), ("tls.key", &server.key)],
        )
        + &secret("client-ca", "Opaque", &[("ca.crt", &ca.pem)])
        + r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: mtls, namespace: default}
spec:
  hosts: ["mtls.test"]
  tls: {secretName: server-tls, clientAuth: {caSecretRef: {name: client-ca}}}
  routes: [{name: all, httpsRedirect: false, backends: [{serviceName: app, servicePort: 80}]}]
"#;
    let gw = TestGateway::start_with(&m, https_config()).await;
    let r = request(
        gw.http(),
        "GET",
        "mtls.test",
        "/",
        &[("ssl-client-verify", "SUCCESS")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    gw.shutdown().await;
}

#[tokio::test]
async fn ingress_auth_tls_annotations_ask_for_client_certificates() {
    let ca = Ca::new("client CA");
    let server = ca.issue(&["shop.test"], "gateway");
    let bob = ca.issue(&["bob.example"], "bob");
    let b = echo_backend().await;
    let m = service("app", &[b.addr])
        + &secret(
            "server-tls",
            "kubernetes.io/tls",
            &[("tls.crt", &server.pem), ("tls.key", &server.key)],
        )
        + &secret("client-ca", "Opaque", &[("ca.crt", &ca.pem)])
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/auth-tls-secret: default/client-ca
    nginx.ingress.kubernetes.io/auth-tls-verify-client: "optional"
spec:
  ingressClassName: sluicegate
  tls: [{hosts: [shop.test], secretName: server-tls}]
  rules:
  - host: shop.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]
"#;
    let gw = TestGateway::start_with(&m, https_config()).await;
    let addr = gw.https();
    let r = call(
        addr,
        &client_config_for(&ca, Some(&bob), &[b"http/1.1"]),
        "shop.test",
        "shop.test",
        &[],
    )
    .await;
    assert_eq!(
        r,
        Ok((
            StatusCode::OK,
            "SUCCESS|O=Sluicegate Tests,CN=bob".to_owned()
        ))
    );
    let r = call(
        addr,
        &client_config_for(&ca, None, &[b"http/1.1"]),
        "shop.test",
        "shop.test",
        &[],
    )
    .await;
    assert_eq!(r, Ok((StatusCode::OK, "NONE|-".to_owned())));
    gw.shutdown().await;
}
