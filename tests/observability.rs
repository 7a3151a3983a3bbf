//! What the gateway tells about the requests it serves: access log lines
//! for served, refused and failed requests; traces exported over OTLP
//! (HTTP and gRPC) with the `traceparent` the upstream got; the metric
//! names; and a series count that does not grow with paths or clients.

use crate::common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use common::wire::{Capture, Listener, ok};
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluicegate::gateway::{GatewayConfig, LogTarget};
use sluicegate::telemetry::{access_log, trace};
use tokio::net::TcpListener;

const HOST: &str = "obs.test";

fn manifests(app: SocketAddr, slow: SocketAddr) -> String {
    manifests_named("obs", app, slow)
}

fn manifests_named(name: &str, app: SocketAddr, slow: SocketAddr) -> String {
    format!(
        r#"{}{}---
apiVersion: v1
kind: Secret
metadata:
  name: alice
  labels: {{sluicegate.io/consumer: alice}}
stringData: {{key: alice-key}}
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}}}
spec:
  hosts: [{HOST}]
  routes:
  - name: keyed
    match: {{paths: [{{value: /keyed}}]}}
    backends: [{{serviceName: app, servicePort: 80}}]
    plugins:
      keyAuth: {{}}
  - name: down
    match: {{paths: [{{value: /down}}]}}
    backends: [{{serviceName: gone, servicePort: 80}}]
  - name: slow
    match: {{paths: [{{value: /slow}}]}}
    backends: [{{serviceName: slow, servicePort: 80}}]
    timeouts: {{request: 300ms}}
  - name: app
    backends: [{{serviceName: app, servicePort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: gone}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: gone-1
  labels: {{kubernetes.io/service-name: gone}}
addressType: IPv4
ports: [{{name: http, port: 1}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"#,
        service("app", &[app]),
        service("slow", &[slow]),
    )
}

/// A backend that never answers.
async fn silent() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// The access log's lines, once `n` of them are written.
async fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn access_log_lines_for_served_refused_and_failed_requests() {
    let app = Capture::with(|r| ok(&r.line())).await;
    let (slow, _task) = silent().await;
    let dir = TempDir::new();
    let log = dir.path().join("access.log");
    let mut config = Listener::config();
    config.telemetry.access_log = Some((
        LogTarget::File(log.clone()),
        access_log::Settings::default(),
    ));
    let gw = TestGateway::start_with(&manifests(app.addr, slow), config).await;

    let served = request(
        gw.http(),
        "POST",
        HOST,
        "/a/../b?q=1",
        &[("x-request-id", "req-1"), ("user-agent", "probe/1")],
    )
    .await;
    assert_eq!(served.status, 200);
    let refused = get(gw.http(), HOST, "/keyed").await;
    assert_eq!(refused.status, 401);
    let keyed = request(gw.http(), "GET", HOST, "/keyed", &[("apikey", "alice-key")]).await;
    assert_eq!(keyed.status, 200);
    let down = get(To::Tls(gw.https()), HOST, "/down").await;
    assert_eq!(down.status, 502);
    let slow_r = get(gw.http(), HOST, "/slow").await;
    assert_eq!(slow_r.status, 504);
    let unrouted = get(gw.http(), "nowhere.test", "/x").await;
    assert_eq!(unrouted.status, 404);

    let l = lines(&log, 6).await;
    let by_status = |s: u16| {
        l.iter()
            .find(|v| v["status"] == s)
            .unwrap_or_else(|| panic!("no {s} line in {l:#?}"))
    };
    let s = by_status(200);
    assert_eq!(s["method"], "POST");
    assert_eq!(s["host"], HOST);
    assert_eq!(s["path"], "/a/../b");
    assert_eq!(s["protocol"], "HTTP/1.1");
    assert_eq!(s["route"], "apiroute/default/obs/app");
    assert_eq!(s["upstream"], app.addr.to_string());
    assert_eq!(s["attempts"], 1);
    assert_eq!(s["request_id"], "req-1");
    assert_eq!(s["user_agent"], "probe/1");
    assert_eq!(s["client"], "127.0.0.1");
    assert!(s["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(s["upstream_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(s["response_bytes"], served.body.len());
    assert!(s.get("answered_by").is_none());

    let r = by_status(401);
    assert_eq!(r["answered_by"], "keyAuth");
    assert_eq!(r["route"], "apiroute/default/obs/keyed");
    assert_eq!(r["attempts"], 0);
    assert!(r.get("upstream").is_none());

    let k = l
        .iter()
        .find(|v| v["route"] == "apiroute/default/obs/keyed" && v["status"] == 200)
        .unwrap();
    assert_eq!(k["consumer"], "alice");

    let d = by_status(502);
    assert_eq!(d["protocol"], "HTTP/1.1");
    assert_eq!(d["route"], "apiroute/default/obs/down");
    assert_eq!(d["upstream"], "127.0.0.1:1");
    let t = by_status(504);
    assert_eq!(t["route"], "apiroute/default/obs/slow");
    assert!(t["duration_ms"].as_f64().unwrap() >= 300.0);
    let u = by_status(404);
    assert!(u.get("route").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn access_log_samples_successes_but_keeps_every_error() {
    let app = Capture::start().await;
    let (slow, _task) = silent().await;
    let dir = TempDir::new();
    let log = dir.path().join("access.log");
    let mut config = test_config(1);
    config.telemetry.access_log = Some((
        LogTarget::File(log.clone()),
        access_log::Settings {
            format: access_log::Format::Text,
            fields: vec![access_log::Field::Status, access_log::Field::Path],
            sample: 0.0,
        },
    ));
    let gw = TestGateway::start_with(&manifests(app.addr, slow), config).await;
    for i in 0..20 {
        assert_eq!(get(gw.http(), HOST, &format!("/ok{i}")).await.status, 200);
    }
    assert_eq!(get(gw.http(), HOST, "/keyed").await.status, 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if !t.is_empty() || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(text, "status=401 path=/keyed\n");
    gw.shutdown().await;
}

/// What an OTLP receiver got.
#[derive(Default)]
struct Received {
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    paths: Vec<String>,
}

/// An OTLP receiver on loopback: HTTP/protobuf on `/v1/traces`, or gRPC
/// (`TraceService/Export` over h2c), decoding what it gets.
async fn receiver(grpc: bool) -> (SocketAddr, Arc<Mutex<Received>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Received::default()));
    let store = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let mut body = req.into_body().collect().await.unwrap().to_bytes();
                        if grpc {
                            // Compressed flag and length, then the message.
                            body.advance(5);
                        }
                        let msg = ExportTraceServiceRequest::decode(body).unwrap();
                        let mut g = store.lock().unwrap();
                        g.paths.push(path);
                        for rs in msg.resource_spans {
                            for ss in rs.scope_spans {
                                g.spans.extend(ss.spans);
                            }
                        }
                        let resp = if grpc {
                            Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "0")
                                .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                                .unwrap()
                        } else {
                            Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap()
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn traces_reach(grpc: bool) {
    let (otlp, got) = receiver(grpc).await;
    let app = Capture::start().await;
    let (slow, _task) = silent().await;
    let mut config: GatewayConfig = test_config(1);
    config.telemetry.tracing = Some(trace::Settings {
        endpoint: if grpc {
            format!("http://{otlp}")
        } else {
            format!("http://{otlp}/v1/traces")
        },
        protocol: if grpc {
            trace::Protocol::Grpc
        } else {
            trace::Protocol::HttpProtobuf
        },
        ratio: 1.0,
        service_name: "edge".into(),
    });
    let gw = TestGateway::start_with(&manifests(app.addr, slow), config).await;
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = request(
        gw.http(),
        "GET",
        HOST,
        "/traced",
        &[("traceparent", incoming), ("tracestate", "vendor=1")],
    )
    .await;
    assert_eq!(r.status, 200);
    // The upstream got the same trace, with the attempt as its caller.
    let seen = app.requests();
    let tp = seen[0].headers("traceparent");
    assert_eq!(tp.len(), 1, "{}", seen[0].text());
    let (trace_id, parent, sampled) = trace::parse_traceparent(tp[0].as_bytes()).unwrap();
    assert_eq!(hex(&trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert!(sampled);
    assert_eq!(seen[0].headers("tracestate"), ["vendor=1"]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = got.lock().unwrap().spans.clone();
        if spans.len() >= 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "no spans exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let server = spans.iter().find(|s| s.kind == 2).expect("a server span");
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");
    assert_eq!(hex(&server.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hex(&server.parent_span_id), "b7ad6b7169203331");
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.span_id, parent.to_vec());
    assert_eq!(server.name, "GET apiroute/default/obs/app");
    assert!(server.end_time_unix_nano >= client.end_time_unix_nano);
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    let path = got.lock().unwrap().paths[0].clone();
    if grpc {
        assert_eq!(
            path,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
    } else {
        assert_eq!(path, "/v1/traces");
    }

    // A request without traceparent starts a trace of its own; with
    // sampling off for new traces, it is propagated but not exported.
    gw.shutdown().await;
}

#[tokio::test]
async fn traces_are_exported_over_otlp_http() {
    traces_reach(false).await;
}

#[tokio::test]
async fn traces_are_exported_over_otlp_grpc() {
    traces_reach(true).await;
}

/// Unsampled requests carry their trace upstream and export nothing;
/// with an access log, their lines still name the trace.
async fn unsampled_traces(logged: bool) {
    let (otlp, got) = receiver(false).await;
    let app = Capture::start().await;
    let (slow, _task) = silent().await;
    let dir = TempDir::new();
    let log = dir.path().join("access.log");
    let mut config = test_config(1);
    if logged {
        config.telemetry.access_log = Some((
            LogTarget::File(log.clone()),
            access_log::Settings::default(),
        ));
    }
    config.telemetry.tracing = Some(trace::Settings {
        endpoint: format!("http://{otlp}/v1/traces"),
        protocol: trace::Protocol::HttpProtobuf,
        ratio: 0.0,
        service_name: "edge".into(),
    });
    let gw = TestGateway::start_with(&manifests(app.addr, slow), config).await;
    assert_eq!(get(gw.http(), HOST, "/new").await.status, 200);
    let declined = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let r = request(
        gw.http(),
        "GET",
        HOST,
        "/declined",
        &[("traceparent", declined)],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = app.requests();
    let (t0, _, s0) =
        trace::parse_traceparent(seen[0].headers("traceparent")[0].as_bytes()).unwrap();
    let (t1, _, s1) =
        trace::parse_traceparent(seen[1].headers("traceparent")[0].as_bytes()).unwrap();
    assert!(!s0 && !s1);
    assert_ne!(hex(&t0), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(hex(&t1), "0af7651916cd43dd8448eb211c80319c");
    if logged {
        let lines = lines(&log, 2).await;
        assert_eq!(lines[0]["path"], "/new");
        assert_eq!(lines[0]["trace_id"], hex(&t0));
        assert_eq!(lines[1]["path"], "/declined");
        assert_eq!(lines[1]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(got.lock().unwrap().spans.is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn unsampled_traces_are_propagated_but_not_exported() {
    unsampled_traces(false).await;
}

#[tokio::test]
async fn unsampled_traces_are_propagated_and_logged_with_their_trace_id() {
    unsampled_traces(true).await;
}

/// The metric families `/metrics` shows once every kind of event happened.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Series of this test's own routes (other tests in this binary share the
/// process's recorder).
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains("route=\"apiroute/default/card/"))
        .count()
}

#[tokio::test]
async fn metric_names_are_stable_and_series_do_not_grow_with_paths_or_clients() {
    let app = Capture::start().await;
    let (slow, _task) = silent().await;
    let gw =
        TestGateway::start_with(&manifests_named("card", app.addr, slow), Listener::config()).await;
    // One of each: served (plain and TLS), refused by a plugin, failed.
    assert_eq!(get(gw.http(), HOST, "/warm").await.status, 200);
    assert_eq!(get(To::Tls(gw.https()), HOST, "/warm").await.status, 200);
    assert_eq!(get(gw.http(), HOST, "/keyed").await.status, 401);
    assert_eq!(get(gw.http(), HOST, "/down").await.status, 502);
    let text = admin_get(&gw, "/metrics").await.text();
    let names = families(&text);
    for name in [
        "sluicegate_requests_total",
        "sluicegate_request_duration_seconds",
        "sluicegate_request_size_bytes",
        "sluicegate_response_size_bytes",
        "sluicegate_upstream_duration_seconds",
        "sluicegate_upstream_attempts_total",
        "sluicegate_upstream_endpoints",
        "sluicegate_upstream_in_flight",
        "sluicegate_plugin_duration_seconds",
        "sluicegate_plugin_decisions_total",
        "sluicegate_plugin_rejections_total",
        "sluicegate_connections_active",
        "sluicegate_connections_total",
        "sluicegate_tls_handshakes_total",
        "sluicegate_table_generation",
        "sluicegate_config_last_reload_timestamp_seconds",
        "sluicegate_table_updates_total",
        "sluicegate_table_routes",
        "sluicegate_config_diagnostics",
        "sluicegate_build_info",
    ] {
        assert!(names.contains(name), "{name} missing from {names:#?}");
    }
    assert!(
        text.contains("sluicegate_plugin_decisions_total{route=\"apiroute/default/card/keyed\",plugin=\"keyAuth\",decision=\"answered\",status=\"4xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("sluicegate_build_info{version=\""), "{text}");
    assert_eq!(
        admin_get(&gw, "/metrics").await.header("content-encoding"),
        None
    );

    // A scraper that takes gzip (Prometheus does) gets the same
    // exposition compressed; one that refuses it with q=0 gets text.
    let zipped = request(
        gw.admin(),
        "GET",
        "admin",
        "/metrics",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("vary"), Some("Accept-Encoding"));
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(families(&unzipped), names);
    assert!(
        zipped.body.len() * 4 < unzipped.len(),
        "{} vs {}",
        zipped.body.len(),
        unzipped.len()
    );
    let refused = request(
        gw.admin(),
        "GET",
        "admin",
        "/metrics",
        &[("accept-encoding", "gzip;q=0, identity")],
    )
    .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert!(refused.text().contains("sluicegate_build_info"));

    // 10,000 distinct paths from 20 client addresses, with forged
    // forwarding headers: not one new series.
    let warm = series(&admin_get(&gw, "/metrics").await.text());
    let mut tasks = Vec::new();
    for c in 0..20u8 {
        let http = gw.http();
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::from(([127, 0, 1, c + 1], 0)))
                .unwrap();
            let stream = socket.connect(http).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in 0..500 {
                tx.ready().await.unwrap();
                let req = Request::get(format!("/p/{c}/{i}?x={i}"))
                    .header("host", HOST)
                    .header("x-forwarded-for", format!("10.{c}.{}.{}", i / 256, i % 256))
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let r = tx.send_request(req).await.unwrap();
                assert_eq!(r.status(), 200);
                r.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = admin_get(&gw, "/metrics").await.text();
    assert_eq!(series(&after), warm, "new series after 10,000 paths");
    assert!(!after.contains("/p/"), "a path in a label");
    assert!(!after.contains("127.0.1."), "a client address in a label");
    gw.shutdown().await;
}
