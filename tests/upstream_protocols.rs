//! Backends spoken to over HTTP/2 (h2c, gRPC) and TLS, through the real
//! proxy: protocols chosen by ApiRoute, by annotation and by the Service's
//! `appProtocol`; gRPC trailers; CA verification, SNI and client
//! certificates towards the backend.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::tls::{Ca, Cert, server_config};
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// A Secret with the given PEM values (`ca.crt`, `tls.crt`, `tls.key`).
fn secret(name: &str, kind: &str, values: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: {kind}\nstringData:\n"
    );
    for (k, v) in values {
        out.push_str(&format!("  {k}: |\n{}", indent(v)));
    }
    out
}

/// A Service whose port 80 may carry an `appProtocol`, with one endpoint.
fn service_at(name: &str, addr: SocketAddr, app_protocol: Option<&str>) -> String {
    service_with(name, &[addr], app_protocol)
}

/// An ApiRoute for `host` to Service `svc` with the backend fields `extra`
/// (YAML flow-map entries such as `protocol: GRPC`).
fn api_route(name: &str, host: &str, svc: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{host}"]
  routes:
  - name: all
    backends: [{{serviceName: {svc}, servicePort: 80{extra}}}]
"#
    )
}

fn ingress(name: &str, host: &str, svc: &str, annotations: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
  annotations: {{{annotations}}}
spec:
  ingressClassName: sluicegate
  rules:
  - host: "{host}"
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]
"#
    )
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What a backend saw about the connection, added to every response:
/// HTTP version, `:authority`/`Host`, `TE`, SNI and client certificate.
fn describe(req: &Request<Incoming>, tls: &TlsFacts, h: &mut HeaderMap) {
    let mut put = |k: &'static str, v: String| {
        h.insert(k, HeaderValue::try_from(v).unwrap());
    };
    put("x-version", format!("{:?}", req.version()));
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .unwrap_or_default();
    put("x-authority", authority);
    let te = req.headers().get("te").map_or("", |v| v.to_str().unwrap());
    put("x-te", te.to_owned());
    put("x-sni", tls.sni.clone().unwrap_or_default());
    put("x-client-cert", tls.client_cert.to_string());
}

#[derive(Clone, Default)]
struct TlsFacts {
    sni: Option<String>,
    client_cert: bool,
}

/// A gRPC-shaped answer: a data frame, then `grpc-status` trailers.
fn grpc_reply(req: &Request<Incoming>, facts: &TlsFacts) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("done"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    describe(req, facts, resp.headers_mut());
    resp
}

/// A backend answering every request with [`grpc_reply`], over plain TCP
/// (HTTP/1.1 or h2c) or, with `tls`, over TLS.
struct ProtoBackend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ProtoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`ProtoBackend`] answers.
#[derive(Clone, Copy)]
enum Reply {
    /// [`grpc_reply`], at once.
    Grpc,
    /// The number of body bytes it got, once it read them all.
    Count,
    /// The request's framing fields and body length, as
    /// `framing te=.. cl=.. body=..`.
    Framing,
}

impl ProtoBackend {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> ProtoBackend {
        ProtoBackend::start_with(tls, Reply::Grpc).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>, reply: Reply) -> ProtoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, TlsFacts::default(), reply).await,
                        Some(config) => {
                            let Ok(s) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let conn = s.get_ref().1;
                            let facts = TlsFacts {
                                sni: conn.server_name().map(str::to_owned),
                                client_cert: conn.peer_certificates().is_some(),
                            };
                            serve(s, facts, reply).await;
                        }
                    }
                });
            }
        });
        ProtoBackend { addr, task }
    }
}

async fn serve<S>(stream: S, facts: TlsFacts, reply: Reply)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let facts = facts.clone();
        async move {
            Ok::<_, Infallible>(match reply {
                Reply::Grpc => grpc_reply(&req, &facts),
                Reply::Count => {
                    let n = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes().len(),
                        Err(_) => 0,
                    };
                    Response::new(BodyExt::boxed(Full::new(Bytes::from(format!("got {n}")))))
                }
                Reply::Framing => {
                    let field = |name: &str| {
                        req.headers()
                            .get(name)
                            .map_or(String::new(), |v| v.to_str().unwrap().to_owned()) // ok: test code
                    };
                    let (te, cl) = (field("transfer-encoding"), field("content-length"));
                    let n = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes().len(),
                        Err(_) => 0,
                    };
                    let text = format!("framing te={te} cl={cl} body={n}\n");
                    Response::new(BodyExt::boxed(Full::new(Bytes::from(text))))
                }
            })
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A gRPC-style call over h2c (prior knowledge) to the proxy: status,
/// headers, body and trailers.
async fn grpc_call(addr: SocketAddr, host: &str) -> (StatusCode, HeaderMap, Bytes, HeaderMap) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{host}/demo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn grpc_over_h2c_keeps_trailers_and_authority() {
    let backend = ProtoBackend::start(None).await;
    let manifests = service_at("greeter", backend.addr, None)
        + &api_route("grpc", "grpc.test", "greeter", ", protocol: GRPC");
    let gw = TestGateway::start(&manifests).await;

    let (status, headers, body, trailers) = grpc_call(gw.http(), "grpc.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-version"], "HTTP/2.0");
    assert_eq!(headers["x-authority"], "grpc.test");
    assert_eq!(headers["x-te"], "trailers", "gRPC needs TE: trailers");
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(&body[..], b"\0\0\0\0\x02hi");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");

    // Many concurrent calls share the one HTTP/2 connection per endpoint.
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(grpc_call(gw.http(), "grpc.test")))
        .collect();
    for c in calls {
        let (status, _, _, trailers) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(trailers["grpc-status"], "0");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn app_protocol_and_annotations_choose_http2() {
    let backend = ProtoBackend::start(None).await;
    let manifests = [
        service_at("h2c-svc", backend.addr, Some("kubernetes.io/h2c")),
        service_at("plain-svc", backend.addr, None),
        ingress("by-app-protocol", "app.test", "h2c-svc", ""),
        ingress(
            "by-annotation",
            "nginx.test",
            "plain-svc",
            "nginx.ingress.kubernetes.io/backend-protocol: GRPC",
        ),
        ingress(
            "ours-wins",
            "ours.test",
            "h2c-svc",
            "sluicegate.io/backend-protocol: HTTP, nginx.ingress.kubernetes.io/backend-protocol: GRPC",
        ),
        ingress("plain", "plain.test", "plain-svc", ""),
    ]
    .concat();
    let gw = TestGateway::start(&manifests).await;

    for (host, version) in [
        ("app.test", "HTTP/2.0"),
        ("nginx.test", "HTTP/2.0"),
        ("ours.test", "HTTP/1.1"),
        ("plain.test", "HTTP/1.1"),
    ] {
        let r = get(gw.http(), host, "/x").await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
        assert_eq!(r.header("x-version"), Some(version), "{host}");
        assert_eq!(r.header("x-authority"), Some(host), "{host}");
        // An HTTP/1.1 client still gets the body; trailers have no place
        // in its chunked answer and are dropped.
        assert_eq!(&r.body[..], b"\0\0\0\0\x02hi", "{host}");
    }
    gw.shutdown().await;
}

/// A TLS backend offering `alpn`, answering with `reply`, and the manifests
/// of a route to it that verifies its certificate against `ca` (SNI
/// `api.internal`).
async fn verified_tls_backend(
    ca: &Ca,
    cert: &Cert,
    alpn: &[&[u8]],
    reply: Reply,
) -> (ProtoBackend, String) {
    let backend = ProtoBackend::start_with(Some(server_config(cert, None, alpn)), reply).await;
    let m = https_route(
        backend.addr,
        Some(&ca.pem),
        None,
        "caSecretRef: {name: upstream-ca}, sni: api.internal",
    );
    (backend, m)
}

/// Manifests for an HTTPS backend route: the CA Secret (Opaque, `ca.crt`)
/// and client certificate Secret as given.
fn https_route(backend: SocketAddr, ca: Option<&str>, client: Option<&Cert>, tls: &str) -> String {
    let mut m = service_at("secure", backend, None);
    if let Some(ca) = ca {
        m += &secret("upstream-ca", "Opaque", &[("ca.crt", ca)]);
    }
    if let Some(c) = client {
        m += &secret(
            "gateway-client",
            "kubernetes.io/tls",
            &[("tls.crt", &c.pem), ("tls.key", &c.key)],
        );
    }
    m + &api_route(
        "secure",
        "secure.test",
        "secure",
        &format!(", protocol: HTTPS, tls: {{{tls}}}"),
    )
}

#[tokio::test]
async fn https_backend_is_verified_against_its_ca_with_the_chosen_sni() {
    let ca = Ca::new("upstream CA");
    let cert = ca.issue(&["api.internal"], "api.internal");
    let h2 = ProtoBackend::start(Some(server_config(&cert, None, &[b"h2", b"http/1.1"]))).await;
    let h1 = ProtoBackend::start(Some(server_config(&cert, None, &[b"http/1.1"]))).await;

    for (backend, version) in [(&h2, "HTTP/2.0"), (&h1, "HTTP/1.1")] {
        let m = https_route(
            backend.addr,
            Some(&ca.pem),
            None,
            "caSecretRef: {name: upstream-ca}, sni: api.internal",
        );
        let gw = TestGateway::start(&m).await;
        for _ in 0..3 {
            let r = get(gw.http(), "secure.test", "/").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            assert_eq!(r.header("x-sni"), Some("api.internal"));
            assert_eq!(r.header("x-version"), Some(version), "chosen by ALPN");
            assert_eq!(r.header("x-authority"), Some("secure.test"));
            assert_eq!(r.header("x-client-cert"), Some("false"));
        }
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn https_backend_failing_verification_gets_502() {
    let ca = Ca::new("upstream CA");
    let other = Ca::new("someone else");
    let cert = ca.issue(&["api.internal"], "api.internal");
    let backend = ProtoBackend::start(Some(server_config(&cert, None, &[b"http/1.1"]))).await;

    // The wrong CA; the right CA with a name the certificate does not
    // carry; a CA Secret that does not exist.
    let cases = [
        https_route(
            backend.addr,
            Some(&other.pem),
            None,
            "caSecretRef: {name: upstream-ca}, sni: api.internal",
        ),
        https_route(
            backend.addr,
            Some(&ca.pem),
            None,
            "caSecretRef: {name: upstream-ca}, sni: other.internal",
        ),
        https_route(
            backend.addr,
            None,
            None,
            "caSecretRef: {name: upstream-ca}, sni: api.internal",
        ),
    ];
    for (i, m) in cases.iter().enumerate() {
        let gw = TestGateway::start(m).await;
        let r = get(gw.http(), "secure.test", "/").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "case {i}: {}", r.text());
        gw.shutdown().await;
    }

    // The missing Secret is also reported on the ApiRoute.
    let gw = TestGateway::start(&cases[2]).await;
    let routes = admin_get(&gw, "/routes").await.text();
    assert!(
        routes.contains("Secret default/upstream-ca not found"),
        "{routes}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn https_backend_without_a_ca_is_encrypted_but_not_verified() {
    let self_signed = common::tls::cert(&["whatever.internal"]);
    let backend =
        ProtoBackend::start(Some(server_config(&self_signed, None, &[b"http/1.1"]))).await;
    let m = https_route(backend.addr, None, None, "");
    let gw = TestGateway::start(&m).await;
    let r = get(gw.http(), "secure.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Without a configured name, SNI is the Service's cluster DNS name.
    assert_eq!(r.header("x-sni"), Some("secure.default.svc"));
    gw.shutdown().await;
}

#[tokio::test]
async fn client_certificate_is_presented_to_backends_that_require_one() {
    let ca = Ca::new("mesh CA");
    let server = ca.issue(&["api.internal"], "api.internal");
    let gateway_id = ca.issue(&["gateway.internal"], "gateway");
    let backend = ProtoBackend::start(Some(server_config(
        &server,
        Some(&ca),
        &[b"h2", b"http/1.1"],
    )))
    .await;

    let with = https_route(
        backend.addr,
        Some(&ca.pem),
        Some(&gateway_id),
        "caSecretRef: {name: upstream-ca}, sni: api.internal, clientCertificateSecretRef: {name: gateway-client}",
    );
    let gw = TestGateway::start(&with).await;
    let r = get(gw.http(), "secure.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-client-cert"), Some("true"));
    gw.shutdown().await;

    let without = https_route(
        backend.addr,
        Some(&ca.pem),
        None,
        "caSecretRef: {name: upstream-ca}, sni: api.internal",
    );
    let gw = TestGateway::start(&without).await;
    let r = get(gw.http(), "secure.test", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    gw.shutdown().await;
}

#[tokio::test]
async fn proxy_ssl_annotations_verify_and_present_a_certificate() {
    let ca = Ca::new("nginx-style CA");
    let server = ca.issue(&["api.internal"], "api.internal");
    let id = ca.issue(&["gateway.internal"], "gateway");
    let backend =
        ProtoBackend::start(Some(server_config(&server, Some(&ca), &[b"http/1.1"]))).await;
    // ingress-nginx style: one Opaque Secret with ca.crt, tls.crt, tls.key.
    let m = service_at("secure", backend.addr, None)
        + &secret(
            "proxy-ssl",
            "Opaque",
            &[
                ("ca.crt", &ca.pem),
                ("tls.crt", &id.pem),
                ("tls.key", &id.key),
            ],
        )
        + &ingress(
            "nginx-ssl",
            "secure.test",
            "secure",
            "nginx.ingress.kubernetes.io/backend-protocol: HTTPS, \
             nginx.ingress.kubernetes.io/proxy-ssl-secret: default/proxy-ssl, \
             nginx.ingress.kubernetes.io/proxy-ssl-verify: \"on\", \
             nginx.ingress.kubernetes.io/proxy-ssl-name: api.internal",
        );
    let gw = TestGateway::start(&m).await;
    let r = get(gw.http(), "secure.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-sni"), Some("api.internal"));
    assert_eq!(r.header("x-client-cert"), Some("true"));
    gw.shutdown().await;
}

/// A WebSocket echo server over TLS that offers `h2` and `http/1.1` by
/// ALPN but speaks only HTTP/1.1: an upgrade works only if the proxy asks
/// for HTTP/1.1.
async fn wss_echo_backend(config: Arc<rustls::ServerConfig>) -> ProtoBackend {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    ProtoBackend { addr, task }
}

#[tokio::test]
async fn websocket_upgrades_reach_https_backends_over_http1() {
    use futures_util::{SinkExt, StreamExt};
    let ca = Ca::new("upstream CA");
    let cert = ca.issue(&["ws.internal"], "ws.internal");
    let backend = wss_echo_backend(server_config(&cert, None, &[b"h2", b"http/1.1"])).await;
    let mut m = service_at("secure", backend.addr, None);
    m += &secret("upstream-ca", "Opaque", &[("ca.crt", &ca.pem)]);
    m += r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: wss, namespace: default}
spec:
  hosts: ["wss.test"]
  routes:
  - name: all
    websocket: true
    backends:
    - serviceName: secure
      servicePort: 80
      protocol: HTTPS
      tls: {caSecretRef: {name: upstream-ca}, sni: ws.internal}
"#;
    let gw = TestGateway::start(&m).await;
    for _ in 0..2 {
        let stream = TcpStream::connect(gw.http()).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async("ws://wss.test/chat", stream)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        for i in 0..5 {
            let text = format!("hello {i}");
            ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
                .await
                .unwrap();
            let got = ws.next().await.unwrap().unwrap();
            assert_eq!(got.into_text().unwrap().as_str(), text);
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn app_protocol_https_and_grpcs_reach_tls_backends() {
    let self_signed = common::tls::cert(&["backend.internal"]);
    // An HTTP/1.1-and-h2 TLS backend for `appProtocol: https`, and an
    // h2-only one for GRPCS.
    let https = ProtoBackend::start(Some(server_config(
        &self_signed,
        None,
        &[b"h2", b"http/1.1"],
    )))
    .await;
    let grpcs = ProtoBackend::start(Some(server_config(&self_signed, None, &[b"h2"]))).await;
    let m = service_at("by-app", https.addr, Some("https"))
        + &service_at("grpcs", grpcs.addr, None)
        + &ingress("by-app", "app.test", "by-app", "")
        + &api_route("grpcs", "grpcs.test", "grpcs", ", protocol: GRPCS");
    let gw = TestGateway::start(&m).await;

    let r = get(gw.http(), "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-sni"), Some("by-app.default.svc"));
    assert_eq!(r.header("x-version"), Some("HTTP/2.0"), "h2 chosen by ALPN");

    let (status, headers, _, trailers) = grpc_call(gw.http(), "grpcs.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-version"], "HTTP/2.0");
    assert_eq!(headers["x-sni"], "grpcs.default.svc");
    assert_eq!(trailers["grpc-status"], "0");
    gw.shutdown().await;
}

/// Through hyper's client too (TLS backends, HTTP/2 or HTTP/1.1 by ALPN),
/// the request timeout counts only time without progress while the body
/// uploads: a steady upload twice as long completes, a stalled one is the
/// client's 408.
#[tokio::test]
async fn uploads_to_tls_backends_are_timed_by_their_progress() {
    let ca = Ca::new("upstream CA");
    let cert = ca.issue(&["api.internal"], "api.internal");
    for alpn in [&[&b"h2"[..]][..], &[&b"http/1.1"[..]][..]] {
        let (_backend, m) = verified_tls_backend(&ca, &cert, alpn, Reply::Count).await;
        let mut config = test_config(1);
        config.proxy.request_timeout = std::time::Duration::from_millis(700);
        let gw = TestGateway::start_with(&m, config).await;

        let mut c = common::wire::Raw::to(&gw, common::wire::Listener::Plain).await;
        c.send("POST /up HTTP/1.1\r\nHost: secure.test\r\nContent-Length: 14000\r\n\r\n")
            .await;
        for _ in 0..14 {
            c.send(&"x".repeat(1000)).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "{alpn:?}: {r:?}");
        assert_eq!(r.text(), "got 14000", "{alpn:?}");

        let mut c = common::wire::Raw::to(&gw, common::wire::Listener::Plain).await;
        c.send(&format!(
            "POST /stalled HTTP/1.1\r\nHost: secure.test\r\nContent-Length: 5000\r\n\r\n{}",
            "x".repeat(1000)
        ))
        .await;
        assert_eq!(c.response(false).await.status, 408, "{alpn:?}");
        gw.shutdown().await;
    }
}

/// An HTTP/2 `GET` whose stream ends in an empty DATA frame after its head
/// reaches TLS backends, through hyper's client over HTTP/1.1 and HTTP/2,
/// without a body or body framing, as it does plain HTTP/1.1 backends
/// (`http_abuse::h2`).
#[tokio::test]
async fn an_end_after_the_head_is_no_body_for_tls_backends() {
    let ca = Ca::new("upstream CA");
    let cert = ca.issue(&["api.internal"], "api.internal");
    for alpn in [&[&b"http/1.1"[..]][..], &[&b"h2"[..]][..]] {
        let (_backend, m) = verified_tls_backend(&ca, &cert, alpn, Reply::Framing).await;
        let gw = TestGateway::start(&m).await;
        // A first request leaves a connection to the backend pooled, so
        // the next is sent on at once.
        let mut c = common::wire::Raw::to(&gw, common::wire::Listener::Plain).await;
        c.send("GET /warm HTTP/1.1\r\nHost: secure.test\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.text(), "framing te= cl= body=0\n");
        let frame = |kind: u8, flags: u8, payload: &[u8]| {
            let len = payload.len();
            let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
            f.extend_from_slice(&1u32.to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        // GET http://secure.test/late: static-table and literal fields.
        let mut block = vec![0x82, 0x86, 0x04, 5];
        block.extend_from_slice(b"/late");
        block.extend_from_slice(&[0x01, 11]);
        block.extend_from_slice(b"secure.test");
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        bytes.extend(frame(0x1, 0x4, &block));
        bytes.extend(frame(0x0, 0x1, &[]));
        let mut c = common::wire::Raw::to(&gw, common::wire::Listener::Plain).await;
        c.send_bytes(&bytes).await;
        let seen = loop {
            let text = String::from_utf8_lossy(&c.buf).into_owned();
            if let Some(line) = text
                .split_once("framing ")
                .and_then(|(_, rest)| rest.split_once('\n'))
            {
                break line.0.to_owned();
            }
            assert!(c.fill().await, "{alpn:?}: closed: {text:?}");
        };
        assert_eq!(seen, "te= cl= body=0", "{alpn:?}");
        gw.shutdown().await;

        // HTTP/3 ends a GET's stream with a FIN after its HEADERS frame.
        let gw = TestGateway::start_with(&m, crate::http3::h3_on()).await;
        let mut h3 = crate::http3::H3::open(gw.https(), "secure.test").await;
        let r = h3.get("secure.test", "/late").await;
        assert_eq!(r.text(), "framing te= cl= body=0\n", "{alpn:?}");
        gw.shutdown().await;
    }
}
