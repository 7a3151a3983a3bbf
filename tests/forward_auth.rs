//! `forwardAuth` through the real proxy: what the authorization service is
//! told about a request, allowed requests reaching the upstream, refusals
//! (401 challenges, 302 login redirects) passed to the client without the
//! upstream ever seeing the request, 503 when the service is unreachable,
//! slow or not speaking HTTP, keep-alive connections to the service, an
//! `https://` service verified with the CA of a Secret, and a service name
//! resolved by the gateway's DNS resolver, following its TTL.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::dns::TestDns;
use common::*;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the authorization service was sent.
#[derive(Debug, Clone)]
struct Seen {
    method: http::Method,
    uri: String,
    headers: HeaderMap,
}

/// An authorization service on its own listener, counting the
/// connections it accepts.
struct AuthService {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthService {
    /// Allows `Authorization: Bearer good` (naming the user in `X-User`);
    /// sends browsers (`Accept: text/html`) to a login page with 302;
    /// challenges anyone else with 401. Waits `delay` before answering.
    async fn start(delay: Duration) -> AuthService {
        Self::start_at("127.0.0.1:0".parse().unwrap(), delay, None).await
    }

    /// Like [`AuthService::start`], on `addr`, over TLS with `tls`; only
    /// connections whose handshake succeeded are counted.
    async fn start_at(
        addr: SocketAddr,
        delay: Duration,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> AuthService {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (log, count, tls) = (log.clone(), count.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            log.lock().unwrap().push(Seen {
                                method: req.method().clone(),
                                uri: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(decide(req.headers()))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            count.fetch_add(1, Ordering::SeqCst);
                            let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            count.fetch_add(1, Ordering::SeqCst);
                            let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        AuthService {
            addr,
            connections,
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn decide(h: &HeaderMap) -> Response<BoxBody> {
    let has = |name: &str, value: &str| h.get(name).is_some_and(|v| v == value);
    if has("authorization", "Bearer good") {
        return Response::builder()
            .header("x-user", "alice")
            .body(full(""))
            .unwrap();
    }
    if has("accept", "text/html") {
        let back = h
            .get("x-forwarded-uri")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("/");
        return Response::builder()
            .status(StatusCode::FOUND)
            .header("location", format!("http://login.test/login?rd={back}"))
            .header("set-cookie", "csrf=abc; HttpOnly")
            .header("x-internal", "auth-only")
            .body(full("to the login page"))
            .unwrap();
    }
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("www-authenticate", "Bearer realm=\"shop\"")
        .header("x-internal", "auth-only")
        .body(full("token required"))
        .unwrap()
}

/// An upstream that counts its requests and echoes what reached it.
async fn upstream(hits: Arc<AtomicUsize>) -> Backend {
    Backend::start(move |req| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
            };
            Response::new(full(format!(
                "upstream user={} authorization={}",
                h("x-user"),
                h("authorization")
            )))
        }
    })
    .await
}

/// A gateway with route `name` guarded by `forwardAuth` at `uri`, with
/// `extra` settings (flow map entries) besides.
async fn gateway(name: &str, backend: &Backend, uri: &str, extra: &str) -> TestGateway {
    let plugins = format!(
        "{{forwardAuth: {{uri: \"{uri}\", requestHeaders: [Authorization, X-Tenant, Accept], \
         clientHeaders: [Set-Cookie], upstreamHeaders: [X-User]{extra}}}}}"
    );
    let m = service("app", &[backend.addr]) + &limited_route(name, &plugins, None);
    TestGateway::start(&m).await
}

/// A port nothing listens on.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn allowed_requests_reach_the_upstream_and_the_service_learns_about_them() {
    let auth = AuthService::start(Duration::ZERO).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let uri = format!("http://{}/verify?v=1", auth.addr);
    let gw = gateway("allowed", &b, &uri, "").await;

    let r = request(
        gw.http(),
        "POST",
        "allowed.test",
        "/orders?id=7",
        &[
            ("authorization", "Bearer good"),
            ("x-tenant", "north"),
            ("x-tenant", "south"),
            ("cookie", "session=secret"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.test"),
            ("x-user", "mallory"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().starts_with("upstream "), "{}", r.text());
    // The client's own claim about who it is never reaches the upstream.
    assert!(!r.text().contains("mallory"), "{}", r.text());
    assert!(
        r.text().contains("authorization=Bearer good"),
        "{}",
        r.text()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let seen = auth.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.method, http::Method::GET);
    assert_eq!(call.uri, "/verify?v=1");
    let h = &call.headers;
    assert_eq!(h["host"], auth.addr.to_string());
    assert_eq!(h["x-forwarded-method"], "POST");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "allowed.test");
    assert_eq!(h["x-forwarded-uri"], "/orders?id=7");
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["authorization"], "Bearer good");
    let tenants: Vec<_> = h.get_all("x-tenant").iter().collect();
    assert_eq!(tenants, ["north", "south"]);
    assert!(h.get("cookie").is_none(), "only named headers are sent");
    assert!(h.get("x-user").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn refusals_reach_the_client_and_never_the_upstream() {
    let auth = AuthService::start(Duration::ZERO).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let gw = gateway("refused", &b, &format!("http://{}/verify", auth.addr), "").await;

    for creds in [vec![], vec![("authorization", "Bearer bad")]] {
        let r = request(gw.http(), "GET", "refused.test", "/orders", &creds).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"shop\""));
        assert_eq!(r.text(), "token required");
        assert!(r.header("x-internal").is_none());
    }

    let r = request(
        gw.http(),
        "GET",
        "refused.test",
        "/account?tab=2",
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location"),
        Some("http://login.test/login?rd=/account?tab=2")
    );
    assert_eq!(r.header("set-cookie"), Some("csrf=abc; HttpOnly"));
    assert!(r.header("x-internal").is_none());
    assert_eq!(r.text(), "to the login page");

    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(auth.seen().len(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn refusal_bodies_are_cut_at_64_kib() {
    let big = Backend::start(|_req| async move {
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(full(vec![b'x'; 200 * 1024]))
            .unwrap()
    })
    .await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let gw = gateway("big", &b, &format!("http://{}/", big.addr), "").await;
    for _ in 0..2 {
        let r = get(gw.http(), "big.test", "/").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body.len(), 64 * 1024);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    gw.shutdown().await;
}

async fn assert_unavailable(gw: &TestGateway, host: &str, hits: &AtomicUsize) {
    let r = request(
        gw.http(),
        "GET",
        host,
        "/",
        &[("authorization", "Bearer good")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(
        r.text().contains("authorization service unavailable"),
        "{}",
        r.text()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unreachable_service_fails_closed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let port = dead_port().await;
    let gw = gateway("down", &b, &format!("http://127.0.0.1:{port}/verify"), "").await;
    assert_unavailable(&gw, "down.test", &hits).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_service_answering_garbage_fails_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let gw = gateway("garbage", &b, &format!("http://{addr}/"), "").await;
    assert_unavailable(&gw, "garbage.test", &hits).await;
    gw.shutdown().await;
    task.abort();
}

#[tokio::test]
async fn a_slow_service_fails_closed_at_the_timeout() {
    let auth = AuthService::start(Duration::from_secs(3)).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let uri = format!("http://{}/verify", auth.addr);
    let gw = gateway("slow", &b, &uri, ", timeout: 300ms").await;
    let started = Instant::now();
    assert_unavailable(&gw, "slow.test", &hits).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(auth.seen().len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_to_the_service_are_kept_alive() {
    let auth = AuthService::start(Duration::ZERO).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    // By name, so that resolution is exercised too.
    let uri = format!("http://localhost:{}/verify", auth.addr.port());
    let gw = gateway("reuse", &b, &uri, "").await;
    for i in 0..6 {
        let creds: &[(&str, &str)] = if i % 2 == 0 {
            &[("authorization", "Bearer good")]
        } else {
            &[]
        };
        let r = request(gw.http(), "GET", "reuse.test", "/", creds).await;
        let expected = if i % 2 == 0 {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(r.status, expected, "{}", r.text());
    }
    assert_eq!(auth.seen().len(), 6);
    let connections = auth.connections.load(Ordering::SeqCst);
    assert!(connections <= 2, "{connections} connections for 6 calls");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn allowing_answers_set_upstream_headers() {
    let auth = AuthService::start(Duration::ZERO).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let gw = gateway("vouched", &b, &format!("http://{}/verify", auth.addr), "").await;
    let r = request(
        gw.http(),
        "GET",
        "vouched.test",
        "/",
        &[("authorization", "Bearer good"), ("x-user", "mallory")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("user=alice"), "{}", r.text());
    gw.shutdown().await;
}

/// A Secret holding `pem` as `ca.crt`.
fn ca_secret(name: &str, pem: &str) -> String {
    let mut secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\nstringData:\n  ca.crt: |\n"
    );
    for line in pem.lines() {
        secret.push_str(&format!("    {line}\n"));
    }
    secret
}

#[tokio::test]
async fn an_https_service_is_verified_with_the_ca_of_a_secret() {
    let ca = tls::Ca::new("auth test CA");
    let cert = ca.issue(&["127.0.0.1"], "auth");
    let config = tls::server_config(&cert, None, &[b"http/1.1"]);
    let auth =
        AuthService::start_at("127.0.0.1:0".parse().unwrap(), Duration::ZERO, Some(config)).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let uri = format!("https://127.0.0.1:{}/verify", auth.addr.port());
    let plugins = |extra: &str| {
        format!(
            "{{forwardAuth: {{uri: \"{uri}\", requestHeaders: [Authorization], upstreamHeaders: [X-User]{extra}}}}}"
        )
    };
    let m = service("app", &[b.addr])
        + &ca_secret("auth-ca", &ca.pem)
        + &limited_route("trusted", &plugins(", caSecretRef: {name: auth-ca}"), None)
        // The system's CAs do not know the test CA.
        + &limited_route("untrusted", &plugins(""), None);
    let gw = TestGateway::start(&m).await;

    for i in 0..4 {
        let (creds, status): (&[(&str, &str)], _) = if i % 2 == 0 {
            (&[("authorization", "Bearer good")], StatusCode::OK)
        } else {
            (&[], StatusCode::UNAUTHORIZED)
        };
        let r = request(gw.http(), "GET", "trusted.test", "/", creds).await;
        assert_eq!(r.status, status, "{}", r.text());
        if status == StatusCode::OK {
            assert!(r.text().contains("user=alice"), "{}", r.text());
        } else {
            assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"shop\""));
        }
    }
    let seen = auth.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].uri, "/verify");
    assert_eq!(
        seen[0].headers["host"],
        format!("127.0.0.1:{}", auth.addr.port())
    );
    // One handshake for all four calls.
    assert_eq!(auth.connections.load(Ordering::SeqCst), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let r = request(
        gw.http(),
        "GET",
        "untrusted.test",
        "/",
        &[("authorization", "Bearer good")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        auth.seen().len(),
        4,
        "the untrusted call never got past TLS"
    );
    assert_eq!(auth.connections.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_service_name_resolves_through_the_gateways_resolver() {
    let first = AuthService::start(Duration::ZERO).await;
    let port = first.addr.port();
    // The same port on another loopback address, for when the name moves;
    // it refuses everyone.
    let listener = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
    let second = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nmoved")
                .await;
        }
    });
    let dns = TestDns::start("auth.dns.test", std::net::Ipv4Addr::new(127, 0, 0, 1), 1).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let m = service("app", &[b.addr])
        + &limited_route(
            "named",
            &format!(
                "{{forwardAuth: {{uri: \"http://auth.dns.test:{port}/verify\", requestHeaders: [Authorization]}}}}"
            ),
            None,
        );
    let mut config = test_config(1);
    config.dns = sluicegate::http::dns::DnsSettings {
        server: Some(dns.addr),
        timeout: Duration::from_millis(500),
        attempts: 1,
        ..Default::default()
    };
    let gw = TestGateway::start_with(&m, config).await;
    let good = [("authorization", "Bearer good")];

    let r = request(gw.http(), "GET", "named.test", "/", &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        first.seen()[0].headers["host"],
        format!("auth.dns.test:{port}")
    );
    let asked = dns.a_queries();
    assert!(asked >= 1);
    // Within the record's TTL (1 s) the answer is reused.
    for _ in 0..3 {
        let r = request(gw.http(), "GET", "named.test", "/", &good).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(dns.a_queries(), asked, "looked up again within the TTL");

    // The name moves; once the TTL has run out the calls follow it.
    dns.set_addr(std::net::Ipv4Addr::new(127, 0, 0, 2));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = request(gw.http(), "GET", "named.test", "/", &good).await;
        if r.status == StatusCode::FORBIDDEN {
            assert_eq!(r.text(), "moved");
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(Instant::now() < deadline, "the new address was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dns.a_queries() > asked);
    // Every call the first service allowed reached the upstream; the
    // refused one did not.
    assert_eq!(hits.load(Ordering::SeqCst), first.seen().len());
    gw.shutdown().await;
    second.abort();
}

#[tokio::test]
async fn a_call_on_a_connection_the_service_closed_is_made_again() {
    // Answers the first request of each connection; a second one is read
    // and the connection closed without an answer, as a service does that
    // closes an idle connection just as a request arrives.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conns, reqs) = (connections.clone(), requests.clone());
    let service = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    got.drain(..end + 4);
                    reqs.fetch_add(1, Ordering::SeqCst);
                    if answered {
                        return;
                    }
                    answered = true;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let b = upstream(hits.clone()).await;
    let gw = gateway("stale", &b, &format!("http://{addr}/verify"), "").await;
    for _ in 0..2 {
        let r = get(gw.http(), "stale.test", "/").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // The second call went out on the kept-alive connection, met the
    // close, and was made again on a new one.
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
    service.abort();
}
