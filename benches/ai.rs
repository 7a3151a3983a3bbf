//! The AI gateway's streaming path, against a provider on loopback that
//! speaks OpenAI's streamed Chat Completions (`text/event-stream`).
//!
//! 1. Time to first token: the same streamed request sent straight to the
//!    provider and through the gateway (an `aiProxy` route with one
//!    OpenAI instance and, in a second route, one Anthropic instance, so
//!    that translation is included), in alternating rounds on keep-alive
//!    connections. Prints p50 and p99 of each and the p99 the gateway
//!    adds, and, for scale, the same stream through an ordinary proxied
//!    route (a Service backend, no `aiProxy`).
//! 2. 1,000 concurrent streams through the gateway binary with one
//!    worker, in a process of its own so that its memory is its own
//!    (the clients and the provider stay in this process): each answer
//!    is 20 events 100 ms apart. Prints the gateway's resident memory
//!    before and while the streams run, the streams that got every
//!    event, and the longest gap any client saw between two events (a
//!    stall would show here).
//!
//! Run with `cargo bench --bench ai` (or with `--profile dev` for a quick
//! upper bound).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluicegate::gateway::{GatewayConfig, Standalone};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

const ROUNDS: usize = 10;
const PER_ROUND: usize = 200;
const STREAMS: usize = 1_000;
const EVENTS: usize = 20;
const GAP: Duration = Duration::from_millis(100);

/// The provider: OpenAI chunks for `/v1/chat/completions`, Anthropic
/// events for `/v1/messages`; the model `slow` spaces [`EVENTS`] events
/// [`GAP`] apart, any other answers one word at once.
async fn provider(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let anthropic = req.uri().path().ends_with("/messages");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let slow = std::str::from_utf8(&body).is_ok_and(|b| b.contains("\"slow\""));
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut events: Vec<String> = Vec::new();
        let n = if slow { EVENTS } else { 1 };
        if anthropic {
            events.push("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"c\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into());
            for _ in 0..n {
                events.push("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok \"}}\n\n".into());
            }
            events.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
        } else {
            for _ in 0..n {
                events.push("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n".into());
            }
            events.push("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\ndata: [DONE]\n\n".into());
        }
        for (i, e) in events.into_iter().enumerate() {
            if slow && i > 0 {
                tokio::time::sleep(GAP).await;
            }
            if tx.send(Bytes::from(e)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let resp = Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(BodyExt::boxed(Full::new(Bytes::new()))));
    Ok(resp)
}

async fn start_provider() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // As a provider's server would: each event leaves at once.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(provider))
                    .await;
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

fn chat(host: &str, path: &str, model: &str) -> Request<Full<Bytes>> {
    let body = format!(
        "{{\"model\":\"{model}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}"
    );
    Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .header("x-api-key", "sk-bench")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from(body)))
        .expect("request")
}

/// Sends one streamed request; returns the time to its first data frame,
/// then reads the rest. Also returns the longest gap between frames.
async fn one(tx: &mut Sender, req: Request<Full<Bytes>>) -> (Duration, Duration, usize) {
    let start = Instant::now();
    tx.ready().await.expect("ready");
    let resp = tx.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 200, "stream refused");
    let mut body = resp.into_body();
    let mut first = None;
    let mut last = Instant::now();
    let mut gap = Duration::ZERO;
    let mut tokens = 0;
    while let Some(f) = body.frame().await {
        let Ok(d) = f.expect("frame").into_data() else {
            continue;
        };
        let now = Instant::now();
        if first.is_none() {
            first = Some(now - start);
        } else {
            gap = gap.max(now - last);
        }
        last = now;
        tokens += d.windows(3).filter(|w| w == b"tok").count();
    }
    (first.unwrap_or_default(), gap, tokens)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The gateway binary, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts the gateway binary, one worker, on the manifests in `dir`, and
/// waits until it is ready.
async fn spawn_gateway(dir: &std::path::Path) -> (Child, SocketAddr) {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["standalone", "--workers", "1", "--config"])
        .arg(dir)
        .args(["--http-addr", &http.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the gateway binary starts");
    let child = Child(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(admin).await.is_ok() {
            let mut tx = connect(admin).await;
            let ready = Request::get("/readyz")
                .header("host", "admin")
                .body(Full::new(Bytes::new()))
                .expect("request");
            if let Ok(r) = tx.send_request(ready).await
                && r.status() == 200
            {
                return (child, http);
            }
        }
        assert!(Instant::now() < deadline, "the gateway binary is not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resident memory of process `pid`, in MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn manifests(provider: SocketAddr) -> String {
    let route = |name: &str, instance: &str| {
        format!(
            "---\napiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.test]\n  routes:\n  - name: chat\n    plugins: {{aiProxy: {{instances: [{instance}]}}}}\n"
        )
    };
    let port = provider.port();
    let plain = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: llm, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: llm-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: llm}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n- addresses: [\"127.0.0.1\"]\n---\napiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: plain, namespace: default}}\nspec:\n  hosts: [plain.test]\n  routes:\n  - name: main\n    backends: [{{serviceName: llm, servicePort: 80}}]\n"
    );
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: key, namespace: default}}\nstringData: {{api-key: sk-bench}}\n{plain}{}{}",
        route(
            "openai",
            &format!(
                "{{name: p, provider: OpenAI, endpoint: \"http://{provider}/v1\", apiKeySecretRef: {{name: key}}}}"
            )
        ),
        route(
            "anthropic",
            &format!(
                "{{name: p, provider: Anthropic, endpoint: \"http://{provider}/v1\", apiKeySecretRef: {{name: key}}}}"
            )
        ),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let provider = start_provider().await;
    let dir = std::env::temp_dir().join(format!("sluicegate-ai-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("main.yaml"), manifests(provider)).expect("write");
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

    // 1. Time to first token, direct and through the gateway.
    let mut direct = connect(provider).await;
    let mut direct_a = connect(provider).await;
    let mut via = connect(gw).await;
    let mut via_a = connect(gw).await;
    let mut plain = connect(gw).await;
    let (mut d, mut da, mut g, mut ga) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut p = Vec::new();
    for round in 0..ROUNDS + 1 {
        for _ in 0..PER_ROUND {
            let a = one(&mut direct, chat("p", "/v1/chat/completions", "m"))
                .await
                .0;
            let b = one(&mut via, chat("openai.test", "/v1/chat/completions", "m"))
                .await
                .0;
            let c = one(&mut direct_a, chat("p", "/v1/messages", "m")).await.0;
            let e = one(
                &mut via_a,
                chat("anthropic.test", "/v1/chat/completions", "m"),
            )
            .await
            .0;
            let f = one(&mut plain, chat("plain.test", "/v1/chat/completions", "m"))
                .await
                .0;
            // The first round warms connections and caches up.
            if round > 0 {
                d.push(a);
                g.push(b);
                da.push(c);
                ga.push(e);
                p.push(f);
            }
        }
    }
    println!(
        "ttft plain proxy route (no aiProxy, same provider): p50 {:?} p99 {:?}",
        percentile(&mut p, 0.5),
        percentile(&mut p, 0.99)
    );
    for (name, direct, via) in [("openai", &mut d, &mut g), ("anthropic", &mut da, &mut ga)] {
        let (d50, d99) = (percentile(direct, 0.5), percentile(direct, 0.99));
        let (g50, g99) = (percentile(via, 0.5), percentile(via, 0.99));
        println!(
            "ttft {name}: {} requests each; direct p50 {:?} p99 {:?}; gateway p50 {:?} p99 {:?}; added p99 {:?}",
            direct.len(),
            d50,
            d99,
            g50,
            g99,
            g99.saturating_sub(d99)
        );
    }

    sa.shutdown().await;

    // 2. Concurrent streams through one worker of the gateway binary.
    let (child, gw) = spawn_gateway(&dir).await;
    let pid = child.0.id();
    let before = rss_mb(pid);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        tasks.spawn(async move {
            let mut tx = connect(gw).await;
            let host = if i % 2 == 0 {
                "openai.test"
            } else {
                "anthropic.test"
            };
            one(&mut tx, chat(host, "/v1/chat/completions", "slow")).await
        });
    }
    let mut peak = before;
    let sampler = tokio::spawn(async move {
        let mut peak = 0.0f64;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(rss_mb(pid));
        }
        peak
    });
    let mut complete = 0;
    let mut worst = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        let (_, gap, tokens) = r.expect("stream task");
        if tokens == EVENTS {
            complete += 1;
        }
        worst = worst.max(gap);
    }
    peak = peak.max(sampler.await.unwrap_or(0.0));
    println!(
        "streams: {STREAMS} concurrent, {EVENTS} events {GAP:?} apart; complete {complete}; longest gap between events {worst:?}; gateway rss before {before:.1} MB, peak {peak:.1} MB, growth {:.1} MB",
        peak - before
    );
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
