//! A rolling update of ten endpoints under a steady 2,000 requests a
//! second: the target is zero failed requests.
//!
//! Runs the gateway in standalone mode in this process (its own worker
//! threads), twenty loopback "pods" on 127.0.0.x sharing one port, and a
//! paced load of `RATE` requests a second over `CLIENTS` keep-alive
//! connections. The update replaces the ten old pods one by one, as a
//! Deployment rollout does: a new pod becomes ready, an old one turns
//! terminating (still serving), is removed from the EndpointSlice, and
//! exits after a short grace. Prints the requests sent, the failures and
//! the latency percentiles. Run with `cargo bench --bench rollout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluicegate::gateway::{GatewayConfig, Standalone};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const RATE: u64 = 2_000;
const CLIENTS: u64 = 20;
const PODS: u8 = 10;
const STEP: Duration = Duration::from_millis(300);

/// A pod: serves until its task set is dropped, connections included.
async fn pod(ip: u8, port: u16) -> JoinSet<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, ip], port)))
        .await
        .expect("bind");
    let mut set = JoinSet::new();
    set.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            conns.spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    set
}

fn manifests(port: u16, ready: &[u8], terminating: &[u8]) -> String {
    let mut eps = String::new();
    for (ips, r) in [(ready, true), (terminating, false)] {
        for ip in ips {
            eps.push_str(&format!(
                "- addresses: [\"127.0.0.{ip}\"]\n  conditions: {{ready: {r}, serving: true, terminating: {}}}\n",
                !r
            ));
        }
    }
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-1\n  labels: {{kubernetes.io/service-name: app}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{eps}---\napiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: app}}\nspec:\n  hosts: [app.test]\n  routes:\n  - name: main\n    backends: [{{serviceName: app, servicePort: 80}}]\n"
    )
}

async fn apply(sa: &Standalone, dir: &Path, text: &str) {
    let before = sa.gateway().publisher().view().generation;
    let tmp = dir.join("main.yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join("main.yaml")).expect("rename");
    while sa.gateway().publisher().view().generation <= before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("sluicegate-rollout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.10:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let mut old: Vec<(u8, JoinSet<()>)> = Vec::new();
    for i in 0..PODS {
        old.push((10 + i, pod(10 + i, port).await));
    }
    std::fs::write(
        dir.join("main.yaml"),
        manifests(port, &(10..10 + PODS).collect::<Vec<_>>(), &[]),
    )
    .expect("write");
    let config = GatewayConfig {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 1,
        ..GatewayConfig::default()
    };
    let sa = Standalone::start(config, dir.clone())
        .await
        .expect("gateway");
    let gw = sa.gateway().http_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        let stop = stop.clone();
        clients.spawn(client(gw, c, stop));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let mut new: Vec<(u8, JoinSet<()>)> = Vec::new();
    for i in 0..PODS {
        new.push((30 + i, pod(30 + i, port).await));
        let (leaving, tasks) = old.remove(0);
        let ready: Vec<u8> = old.iter().chain(new.iter()).map(|(ip, _)| *ip).collect();
        apply(&sa, &dir, &manifests(port, &ready, &[leaving])).await;
        tokio::time::sleep(STEP).await;
        apply(&sa, &dir, &manifests(port, &ready, &[])).await;
        tokio::time::sleep(STEP).await;
        drop(tasks);
    }
    let rollout = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut sent, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
    while let Some(r) = clients.join_next().await {
        let (s, f, l) = r.expect("client");
        sent += s;
        failed += f;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "rollout: {PODS} endpoints replaced in {:.1}s at {RATE} req/s target: {sent} requests, {failed} failed, {:.0} req/s achieved; latency p50 {:?} p99 {:?} max {:?}",
        rollout.as_secs_f64(),
        sent as f64 / (rollout.as_secs_f64() + 2.0),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    sa.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// One keep-alive client sending `RATE / CLIENTS` requests a second.
async fn client(gw: SocketAddr, n: u64, stop: Arc<AtomicBool>) -> (u64, u64, Vec<Duration>) {
    let every = Duration::from_nanos(1_000_000_000 * CLIENTS / RATE);
    tokio::time::sleep(every * n as u32 / CLIENTS as u32).await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut sent, mut failed, mut lat) = (0, 0, Vec::new());
    let mut tx = None;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if tx.is_none() {
            let stream = TcpStream::connect(gw).await.expect("connect");
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            tx = Some(s);
        }
        let Some(s) = tx.as_mut() else { continue };
        let req = Request::get("/")
            .header("host", "app.test")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let t = Instant::now();
        sent += 1;
        let ok = match s.send_request(req).await {
            Ok(resp) => {
                let good = resp.status().is_success();
                good && resp.into_body().collect().await.is_ok()
            }
            Err(_) => {
                tx = None;
                false
            }
        };
        lat.push(t.elapsed());
        if !ok {
            failed += 1;
        }
    }
    (sent, failed, lat)
}
