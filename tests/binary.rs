//! The `sluicegate` binary as users run it: flags from the environment,
//! readiness, SIGTERM draining, the demo.

use crate::apiserver;
use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use http::{Response, StatusCode};

/// Kills the process if a test fails before it is stopped properly.
struct Guard(Option<Child>);

impl Guard {
    fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the binary and returns it with the proxy and admin addresses
/// read from its log.
fn spawn(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Guard, SocketAddr, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .envs(envs.iter().copied())
        .env("SLUICEGATE_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Guard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut http, mut admin) = (None, None);
    while http.is_none() || admin.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("startup log");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let addr = v["fields"]["addr"].as_str().and_then(|a| a.parse().ok());
        match v["fields"]["message"].as_str() {
            Some("proxy listening") => http = addr,
            Some("admin listening") => admin = addr,
            _ => {}
        }
    }
    (child, http.unwrap(), admin.unwrap(), rx)
}

fn sigterm(child: &Guard) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_binary_serves_and_drains_on_sigterm() {
    let slow = Backend::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        Response::new(full("drained"))
    })
    .await;
    let dir = TempDir::new();
    let mut m = service("slow", &[slow.addr]);
    m.push_str(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: slow}
spec:
  ingressClassName: sluicegate
  rules:
  - host: slow.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: slow, port: {number: 80}}}}]
"#,
    );
    std::fs::write(dir.path().join("app.yaml"), m).unwrap();
    let config = dir.path().to_str().unwrap();
    let (child, http, admin, _log) = spawn(
        &["standalone", "--workers", "2"],
        &[
            ("SLUICEGATE_CONFIG", config),
            ("SLUICEGATE_HTTP_ADDR", "127.0.0.1:0"),
            ("SLUICEGATE_ADMIN_ADDR", "127.0.0.1:0"),
        ],
    );
    assert_eq!(get(admin, "a", "/readyz").await.status, StatusCode::OK);
    let pending = tokio::spawn(async move { get(http, "slow.test", "/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&child);
    let r = pending.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "drained");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_dir_fails_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args([
            "standalone",
            "--config",
            "/nonexistent/sluicegate",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cannot read config directory /nonexistent/sluicegate"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_routes_to_its_echo_backends() {
    let (child, http, _admin, _log) = spawn(
        &[
            "demo",
            "--dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo"),
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    let r = get(http, "demo.localhost", "/hello").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().starts_with("backend: blue\nrequest: GET /hello"),
        "{}",
        r.text()
    );
    let mut greens = 0;
    for _ in 0..10 {
        let r = get(http, "shop.localhost", "/api/items").await;
        if r.header("x-backend") == Some("green") {
            greens += 1;
        }
    }
    assert_eq!(greens, 2, "80/20 split over 10 requests");
    let r = request(
        http,
        "GET",
        "shop.localhost",
        "/api/items",
        &[("x-canary", "1")],
    )
    .await;
    assert_eq!(r.header("x-backend"), Some("green"));
    assert_eq!(
        get(http, "shop.localhost", "/maintenance").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    sigterm(&child);
    assert!(child.wait().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binary_runs_from_a_kubeconfig_as_the_chart_configures_it() {
    let api = apiserver::ApiServer::start().await;
    let b = Backend::named("blue").await;
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }));
    api.apply(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": b.addr.port()}],
        "endpoints": [{"addresses": ["127.0.0.1"]}]
    }));
    api.apply(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ingressClassName": "sluicegate", "rules": [{"host": "web.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}
    }));
    let dir = TempDir::new();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: t, user: {{}}}}]\n\
             contexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n",
            api.url()
        ),
    )
    .unwrap();
    // The arguments and environment of the chart's Deployment.
    let (child, http, admin, _log) = spawn(
        &[
            "controller",
            "--lease-duration=15s",
            "--renew-deadline=10s",
            "--retry-period=2s",
        ],
        &[
            ("SLUICEGATE_KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "sluicegate-7d9f-abcde"),
            ("POD_NAMESPACE", "sluicegate-system"),
            ("SLUICEGATE_HTTP_ADDR", "127.0.0.1:0"),
            ("SLUICEGATE_HTTPS_ADDR", "127.0.0.1:0"),
            ("SLUICEGATE_ADMIN_ADDR", "127.0.0.1:0"),
            ("SLUICEGATE_INGRESS_CLASS", "sluicegate"),
            ("SLUICEGATE_WATCH_INGRESS_WITHOUT_CLASS", "false"),
            ("SLUICEGATE_PUBLISH_ADDRESSES", "lb.example.com"),
            ("SLUICEGATE_LEADER_ELECTION_NAMESPACE", "sluicegate-system"),
            ("SLUICEGATE_LEADER_ELECTION_NAME", "sluicegate-leader"),
        ],
    );
    let mut ready = false;
    for _ in 0..200 {
        if get(admin, "a", "/readyz").await.status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "never ready");
    let r = get(http, "web.test", "/").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "blue".to_owned()));
    let lease = || {
        api.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("sluicegate-system"),
            "sluicegate-leader",
        )
        .map(|l| l["spec"]["holderIdentity"].clone())
    };
    let published = api
        .wait_for(
            |a| {
                a.get("networking.k8s.io/v1", "Ingress", Some("shop"), "web")
                    .is_some_and(|i| {
                        i["status"]["loadBalancer"]["ingress"][0]["hostname"] == "lb.example.com"
                    })
            },
            Duration::from_secs(10),
        )
        .await;
    assert!(published, "Ingress status not written");
    assert_eq!(lease(), Some(serde_json::json!("sluicegate-7d9f-abcde")));
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // The lease was handed back on the way out.
    assert_eq!(lease(), Some(serde_json::Value::Null));
}
