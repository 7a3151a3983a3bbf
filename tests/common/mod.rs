//! Shared test harness: a real gateway in standalone mode on loopback
//! ports, real backends, and plain HTTP clients.
#![allow(dead_code)]

pub mod dns;
pub mod tls;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluicegate::gateway::{GatewayConfig, Standalone};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A unique empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "sluicegate-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a file atomically (write + rename), as editors and ConfigMap
/// updates do, so that the watcher never reads half a file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A gateway serving a temporary manifest directory.
pub struct TestGateway {
    pub sa: Option<Standalone>,
    pub dir: TempDir,
}

pub fn test_config(workers: usize) -> GatewayConfig {
    let mut cfg = GatewayConfig {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        workers,
        ..GatewayConfig::default()
    };
    cfg.proxy.shutdown_grace = Duration::from_secs(5);
    cfg
}

impl TestGateway {
    /// Starts a gateway whose directory holds `manifests` as `main.yaml`.
    pub async fn start(manifests: &str) -> TestGateway {
        Self::start_with(manifests, test_config(1)).await
    }

    pub async fn start_with(manifests: &str, config: GatewayConfig) -> TestGateway {
        let dir = TempDir::new();
        std::fs::write(dir.path().join("main.yaml"), manifests).unwrap();
        let sa = Standalone::start(config, dir.path().to_path_buf())
            .await
            .unwrap();
        TestGateway { sa: Some(sa), dir }
    }

    fn sa(&self) -> &Standalone {
        self.sa.as_ref().unwrap()
    }

    pub fn http(&self) -> SocketAddr {
        self.sa().gateway().http_addr()
    }

    /// The HTTPS listener, when the config enabled one.
    pub fn https(&self) -> SocketAddr {
        self.sa().gateway().https_addr().expect("HTTPS enabled")
    }

    pub fn admin(&self) -> SocketAddr {
        self.sa().gateway().admin_addr()
    }

    pub fn generation(&self) -> u64 {
        self.sa().gateway().publisher().view().generation
    }

    /// Replaces a manifest file and waits until a newer table is live.
    pub async fn write(&self, file: &str, manifests: &str) {
        let before = self.generation();
        write_atomic(&self.dir.path().join(file), manifests);
        self.wait_generation_after(before).await;
    }

    pub async fn wait_generation_after(&self, before: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.generation() <= before {
            assert!(
                Instant::now() < deadline,
                "config change not applied within 5s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(sa) = self.sa.take() {
            sa.shutdown().await;
        }
    }
}

/// Service + EndpointSlice manifests for a backend on loopback.
pub fn service(name: &str, addrs: &[SocketAddr]) -> String {
    service_with(name, addrs, None)
}

/// Like [`service`], with an `appProtocol` on the Service port.
pub fn service_with(name: &str, addrs: &[SocketAddr], app_protocol: Option<&str>) -> String {
    let app = app_protocol.map_or(String::new(), |p| format!(", appProtocol: \"{p}\""));
    let port = addrs.first().map_or(1, |a| a.port());
    let mut eps = String::new();
    for a in addrs {
        assert_eq!(a.port(), port, "one port per service in tests");
        eps.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
            a.ip()
        ));
    }
    if eps.is_empty() {
        eps.push_str("  []\n");
    }
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: http, port: 80{app}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
{eps}"#
    )
}

/// A backend that runs `handler` for every request; stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

impl Backend {
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        Self::start_at("127.0.0.1:0".parse().unwrap(), handler).await
    }

    /// Like [`Backend::start`], listening on `addr`.
    pub async fn start_at<F, Fut>(addr: SocketAddr, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend { addr, task }
    }

    /// A backend answering `200 name`, with `x-backend: name`.
    pub async fn named(name: &'static str) -> Backend {
        Self::named_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Like [`Backend::named`], listening on `addr`.
    pub async fn named_at(name: &'static str, addr: SocketAddr) -> Backend {
        Backend::start_at(addr, move |_req| async move {
            Response::builder()
                .header("x-backend", name)
                .body(full(name))
                .unwrap()
        })
        .await
    }
}

/// A simple response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where a test client connects: a plain address, or a TLS listener
/// (any certificate accepted, SNI `h1.test`, ALPN `http/1.1` only).
#[derive(Clone, Copy, Debug)]
pub enum To {
    Plain(SocketAddr),
    Tls(SocketAddr),
}

impl From<SocketAddr> for To {
    fn from(a: SocketAddr) -> To {
        To::Plain(a)
    }
}

/// A client connection to `to`.
pub async fn connect(to: impl Into<To>) -> std::io::Result<Box<dyn wire::Stream>> {
    Ok(match to.into() {
        To::Plain(a) => Box::new(TcpStream::connect(a).await?),
        To::Tls(a) => Box::new(tls::connect(a, Some("h1.test"), &[b"http/1.1"]).await),
    })
}

/// Sends one request on a new HTTP/1.1 connection to `to`.
pub async fn send(to: impl Into<To>, req: Request<BoxBody>) -> Result<Reply, hyper::Error> {
    let stream = connect(to).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tx.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `GET path` with a Host header.
pub async fn get(to: impl Into<To>, host: &str, path: &str) -> Reply {
    request(to, "GET", host, path, &[]).await
}

pub async fn request(
    to: impl Into<To>,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(to, b.body(full(Bytes::new())).unwrap()).await.unwrap()
}

/// A keep-alive HTTP/1.1 client connection for load loops.
pub struct Conn {
    tx: hyper::client::conn::http1::SendRequest<BoxBody>,
}

impl Conn {
    pub async fn open(to: impl Into<To>) -> std::io::Result<Conn> {
        let stream = connect(to).await?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn { tx })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, hyper::Error> {
        self.tx.ready().await?;
        let req = Request::get(path)
            .header("host", host)
            .body(full(Bytes::new()))
            .unwrap();
        let resp = self.tx.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Reads an admin endpoint.
pub async fn admin_get(gw: &TestGateway, path: &str) -> Reply {
    get(gw.admin(), "admin", path).await
}

/// An ApiRoute `name` in namespace default for host `name.test` with the given plugin block
/// (YAML flow map) and, optionally, a pluginConfigRef.
pub fn limited_route(name: &str, plugins: &str, reference: Option<&str>) -> String {
    let reference = reference.map_or(String::new(), |r| {
        format!("\n    pluginConfigRef: {{name: {r}}}")
    });
    let plugins = if plugins.is_empty() {
        String::new()
    } else {
        format!("\n    plugins: {plugins}")
    };
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{name}.test"]
  routes:
  - name: all
    backends: [{{serviceName: app, servicePort: 80}}]{reference}{plugins}
"#
    )
}
