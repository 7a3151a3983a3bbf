//! HTTP/3 against HTTP/2 over TLS through the same gateway (one worker,
//! `--http3` on): the same route, the same backend, the same number of
//! requests in flight on kept-alive connections.
//!
//! The clients and the backend run in this process, on their own runtime,
//! so the figure that compares the protocols is the gateway's own cost:
//! requests served per second of CPU of its worker thread (read from
//! /proc/self/task), i.e. requests/s per core. Requests/s are printed too,
//! but on a small machine they are bounded by the clients as much as by
//! the gateway. Rounds alternate between the protocols; the medians are
//! compared.
//!
//! The process uses mimalloc, the `sluicegate` binary's allocator, so
//! that the allocation-heavy parts (quinn's per-datagram buffers, hyper's
//! frames) cost what they cost in the gateway.
//!
//! Run with `cargo bench --bench http3`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sluicegate::gateway::{GatewayConfig, Standalone};
use sluicegate::proxy::Http3Settings;
use sluicegate::translate::Unverified;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 4;
/// Requests in flight per connection.
const IN_FLIGHT: usize = 16;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
const HOST: &str = "bench.test";

fn client_tls(alpn: &[u8]) -> ClientConfig {
    let provider = sluicegate::crypto::provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from the backend\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn manifests(backend: SocketAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: app}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n- addresses: [\"127.0.0.1\"]\n---\napiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: bench, namespace: default}}\nspec:\n  hosts: [{HOST}]\n  routes:\n  - name: main\n    backends: [{{serviceName: app, servicePort: 80}}]\n",
        backend.port()
    )
}

/// CPU time (user + system) of the gateway's worker thread.
fn worker_cpu() -> Duration {
    let ticks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if !comm.starts_with("sluicegate-work") {
                return None;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command's closing parenthesis; utime and
            // stime are the 14th and 15th of the whole line.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum::<u64>();
    // Clock ticks are 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

/// Runs `IN_FLIGHT` loops of requests per connection until `stop`,
/// counting responses.
async fn drive<F, Fut>(send: F, count: Arc<AtomicU64>, stop: Arc<AtomicBool>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let send = send.clone();
        let count = count.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if send().await {
                    count.fetch_add(1, Ordering::Relaxed);
                } else {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn h2_connection(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(HOST).expect("name");
    let tls = TlsConnector::from(Arc::new(client_tls(b"h2")))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    send
}

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn h3_connection(addr: SocketAddr) -> (quinn::Endpoint, H3Send) {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(b"h3")).expect("QUIC");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("UDP");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(addr, HOST)
        .expect("connect")
        .await
        .expect("QUIC");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3");
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (endpoint, send)
}

async fn h2_request(mut send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>) -> bool {
    let req = Request::get(format!("https://{HOST}/"))
        .body(Empty::new())
        .expect("request");
    match send.send_request(req).await {
        Ok(resp) => resp.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

async fn h3_request(mut send: H3Send) -> bool {
    let req = Request::get(format!("https://{HOST}/"))
        .body(())
        .expect("request");
    let Ok(mut stream) = send.send_request(req).await else {
        return false;
    };
    if stream.finish().await.is_err() || stream.recv_response().await.is_err() {
        return false;
    }
    loop {
        match stream.recv_data().await {
            Ok(Some(mut d)) => d.advance(d.remaining()),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

struct Figures {
    rps: f64,
    per_core: f64,
    cpu_share: f64,
}

async fn round(protocol: &str, addr: SocketAddr) -> Figures {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..CONNECTIONS {
        let (count, stop) = (count.clone(), stop.clone());
        if protocol == "h2" {
            let send = h2_connection(addr).await;
            loads.push(tokio::spawn(drive(
                move || h2_request(send.clone()),
                count,
                stop,
            )));
        } else {
            let (endpoint, send) = h3_connection(addr).await;
            endpoints.push(endpoint);
            loads.push(tokio::spawn(drive(
                move || h3_request(send.clone()),
                count,
                stop,
            )));
        }
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (n0, cpu0, t0) = (count.load(Ordering::Relaxed), worker_cpu(), Instant::now());
    tokio::time::sleep(ROUND).await;
    let (n1, cpu1, t1) = (count.load(Ordering::Relaxed), worker_cpu(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        let _ = l.await;
    }
    drop(endpoints);
    let requests = (n1 - n0) as f64;
    let wall = (t1 - t0).as_secs_f64();
    let cpu = (cpu1 - cpu0).as_secs_f64().max(0.01);
    Figures {
        rps: requests / wall,
        per_core: requests / cpu,
        cpu_share: cpu / wall,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let backend = backend().await;
    let dir = std::env::temp_dir().join(format!("sluicegate-h3-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("main.yaml"), manifests(backend)).expect("write");
    let mut config = GatewayConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        https_addr: Some("127.0.0.1:0".parse().expect("addr")),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        ..GatewayConfig::default()
    };
    config.proxy.http3 = Some(Http3Settings::default());
    let sa = Standalone::start(config, dir.clone())
        .await
        .expect("gateway");
    let addr = sa.gateway().https_addr().expect("HTTPS");
    println!(
        "{CONNECTIONS} connections x {IN_FLIGHT} requests in flight, {}s rounds, one gateway worker",
        ROUND.as_secs()
    );
    let (mut h2, mut h3) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for protocol in ["h2", "h3"] {
            let f = round(protocol, addr).await;
            println!(
                "{protocol}: {:>8.0} requests/s, worker CPU {:>4.0}%, {:>8.0} requests per CPU second",
                f.rps,
                f.cpu_share * 100.0,
                f.per_core
            );
            if protocol == "h2" { &mut h2 } else { &mut h3 }.push(f);
        }
    }
    let rps = |v: &[Figures]| median(v.iter().map(|f| f.rps).collect());
    let core = |v: &[Figures]| median(v.iter().map(|f| f.per_core).collect());
    println!(
        "median: h2 {:.0} req/s, {:.0} per core; h3 {:.0} req/s, {:.0} per core",
        rps(&h2),
        core(&h2),
        rps(&h3),
        core(&h3)
    );
    println!(
        "h3/h2: requests per core {:.2}x, requests/s {:.2}x",
        core(&h3) / core(&h2),
        rps(&h3) / rps(&h2)
    );
    sa.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
