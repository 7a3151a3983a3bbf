//! `forwardAuth` through the real proxy: what the authorization service is
//! told about a request, allowed requests reaching the upstream, refusals
//! (401 challenges, 302 login redirects) passed to the client without the
//! upstream ever seeing the request, 503 when the service is unreachable,
//! slow or not speaking HTTP, and keep-alive connections to the service.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
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
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
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
