//! The Gateway API against a real kube-apiserver: the upstream CRDs of a
//! Gateway API release apply cleanly next to Sluicegate's, and the status
//! the controller writes (GatewayClass, Gateway with listeners, routes per
//! parent) is accepted by their schemas, CEL rules included.
//!
//! Skipped, with the reason printed, when `K8S_DIR` is not set, or when
//! `GATEWAY_API_CRDS` does not name a directory of the release's
//! standard-channel CRDs (`config/crd/standard/*.yaml` of
//! sigs.k8s.io/gateway-api at a release tag; they are data, not part of
//! this repository). Ports and scripts as in `tests/kube_real.rs`; use
//! ports of your own when another control plane may be running:
//!
//! ```sh
//! K8S_DIR=/path/to/k8s GATEWAY_API_CRDS=/path/to/crds \
//!   APISERVER_PORT=18443 ETCD_PORT=14379 ETCD_PEER_PORT=14380 \
//!   cargo test --test kube_real_gateway_api -- --nocapture
//! ```
//!
//! No EndpointSlice names an address: requests through the Gateway end in
//! redirects and `503`s, so nothing ever leaves the machine and no network
//! namespace is needed.

// Shared with tests/kube_real.rs, which uses the parts this test does not.
#[allow(dead_code)]
#[path = "kube_real/infra.rs"]
mod infra;

use std::path::{Path, PathBuf};
use std::time::Duration;

use infra::{Ctl, Plane, free_port, http_get, until};
use serde_json::{Value, json};

const NS: &str = "sluicegate-system";
const APP: &str = "shop";
const CONTROLLER: &str = "sluicegate.io/gateway-controller";
const WAIT: Duration = Duration::from_secs(60);

struct PlaneGuard<'a>(&'a Plane);

impl Drop for PlaneGuard<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn crds_dir() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("GATEWAY_API_CRDS").map(PathBuf::from) else {
        println!(
            "SKIPPED: GATEWAY_API_CRDS is not set. Point it at a directory holding the \
             standard-channel CRDs of a Gateway API release (config/crd/standard/*.yaml)."
        );
        return None;
    };
    if !dir
        .join("gateway.networking.k8s.io_httproutes.yaml")
        .exists()
    {
        println!("SKIPPED: {} holds no Gateway API CRDs", dir.display());
        return None;
    }
    Some(dir)
}

fn must_apply(plane: &Plane, doc: &Value) {
    let text = doc.to_string();
    let (ok, err) = plane.apply(&text);
    assert!(ok, "apply failed: {err}\n{text}");
}

/// Applies every CRD file of `dir` server-side; returns the warnings.
fn apply_crds(plane: &Plane, dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the CRD directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("gateway.networking.k8s.io_"))
        })
        .collect();
    files.sort();
    let mut warnings = Vec::new();
    for f in &files {
        let (ok, _, err) = plane.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=install",
            "-f",
            f.to_str().unwrap_or_default(),
        ]);
        assert!(ok, "apply {}: {err}", f.display());
        warnings.extend(
            err.lines()
                .filter(|l| l.starts_with("Warning:"))
                .map(str::to_owned),
        );
    }
    println!(
        "applied {} Gateway API CRD files, {} warnings",
        files.len(),
        warnings.len()
    );
    warnings
}

fn install(plane: &Plane) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in ["crds/", "manifests/install.yaml"] {
        let file = root.join(path);
        let (ok, _, err) = plane.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=install",
            "-f",
            file.to_str().unwrap_or_default(),
        ]);
        assert!(ok, "apply {path}: {err}");
    }
}

fn conditions(v: &Value) -> Vec<(String, String, String)> {
    v["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("status"), s("reason"))
        })
        .collect()
}

fn has(v: &Value, t: &str, status: &str, reason: &str) -> bool {
    conditions(v)
        .iter()
        .any(|c| c.0 == t && c.1 == status && (reason.is_empty() || c.2 == reason))
}

#[test]
fn gateway_api_on_a_real_api_server() {
    let Some(mut plane) = Plane::from_env() else {
        return;
    };
    let Some(crds) = crds_dir() else {
        return;
    };
    let scratch =
        std::env::temp_dir().join(format!("sluicegate-gwapi-real-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    plane.stop();
    plane.start(true);
    let admin = scratch.join("admin.kubeconfig");
    std::fs::copy(&plane.kubeconfig, &admin).expect("copy the kubeconfig");
    plane.kubeconfig = admin;
    let _guard = PlaneGuard(&plane);

    install(&plane);
    let warnings = apply_crds(&plane, &crds);
    for w in &warnings {
        println!("  {w}");
    }
    plane.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gatewayclasses.gateway.networking.k8s.io",
        "crd/gateways.gateway.networking.k8s.io",
        "crd/httproutes.gateway.networking.k8s.io",
        "crd/grpcroutes.gateway.networking.k8s.io",
        "crd/referencegrants.gateway.networking.k8s.io",
        "--timeout=60s",
    ]);

    let (http_port, tls_port) = (free_port(), free_port());
    must_apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}}),
    );
    must_apply(
        &plane,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": APP},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
    );
    must_apply(
        &plane,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "sluicegate"}, "spec": {"controllerName": CONTROLLER}}),
    );
    must_apply(
        &plane,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": APP},
        "spec": {"gatewayClassName": "sluicegate", "listeners": [
            {"name": "web", "port": http_port, "protocol": "HTTP", "hostname": "*.example.com"},
            {"name": "secure", "port": tls_port, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "missing"}]}}
        ]}}),
    );
    must_apply(
        &plane,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": APP},
        "spec": {
            "parentRefs": [{"name": "edge", "sectionName": "web"}, {"name": "edge", "sectionName": "nope"}],
            "hostnames": ["shop.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
                 "filters": [{"type": "RequestRedirect",
                              "requestRedirect": {"hostname": "new.example.com", "statusCode": 301}}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/web"}}],
                 "backendRefs": [{"name": "web", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/missing"}}],
                 "backendRefs": [{"name": "missing", "port": 80}]}
            ]
        }}),
    );
    must_apply(
        &plane,
        &json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "grpc", "namespace": APP},
        "spec": {
            "parentRefs": [{"name": "edge", "sectionName": "web"}],
            "hostnames": ["grpc.example.com"],
            "rules": [{"matches": [{"method": {"service": "pkg.Svc", "method": "Get"}}],
                       "backendRefs": [{"name": "web", "port": 80}]}]
        }}),
    );

    let deployment = plane.get(&["deployment", "-n", NS, "sluicegate"]);
    let kubeconfig = scratch.join("sa.kubeconfig");
    plane.service_account_kubeconfig(NS, "sluicegate", Some(NS), &kubeconfig);
    let ctl = Ctl::start("sg-gw", &deployment, &kubeconfig, &scratch, &[]);
    println!("controller ready in {:?}", ctl.wait_ready(WAIT));

    let class = until(
        "GatewayClass accepted",
        WAIT,
        Duration::from_millis(200),
        || {
            let c = plane.get(&["gatewayclass", "sluicegate"]);
            has(&c["status"], "Accepted", "True", "Accepted").then_some(c)
        },
    );
    println!("GatewayClass status: {}", class["status"]);
    let gw = until(
        "Gateway programmed",
        WAIT,
        Duration::from_millis(200),
        || {
            let g = plane.get(&["gateway", "-n", APP, "edge"]);
            let listeners = g["status"]["listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (has(&g["status"], "Programmed", "True", "Programmed") && listeners.len() == 2)
                .then_some(g)
        },
    );
    let listeners = gw["status"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let web = listeners
        .iter()
        .find(|l| l["name"] == "web")
        .expect("listener web");
    assert!(has(web, "Programmed", "True", "Programmed"), "{web}");
    assert_eq!(web["attachedRoutes"], 2, "{web}");
    let secure = listeners
        .iter()
        .find(|l| l["name"] == "secure")
        .expect("listener secure");
    assert!(
        has(secure, "ResolvedRefs", "False", "InvalidCertificateRef"),
        "{secure}"
    );
    assert!(has(secure, "Programmed", "False", ""), "{secure}");
    assert!(
        has(&gw["status"], "Accepted", "True", "ListenersNotValid"),
        "{}",
        gw["status"]
    );

    let route = until("HTTPRoute status", WAIT, Duration::from_millis(200), || {
        let r = plane.get(&["httproute", "-n", APP, "web"]);
        (r["status"]["parents"].as_array().map_or(0, Vec::len) == 2).then_some(r)
    });
    let parents = route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in &parents {
        assert_eq!(p["controllerName"], CONTROLLER);
        assert!(conditions(p).iter().all(|c| !c.0.is_empty()), "{p}");
    }
    assert!(
        has(&parents[0], "Accepted", "True", "Accepted"),
        "{}",
        parents[0]
    );
    assert!(
        has(&parents[0], "ResolvedRefs", "False", "BackendNotFound"),
        "{}",
        parents[0]
    );
    assert!(
        has(&parents[1], "Accepted", "False", "NoMatchingParent"),
        "{}",
        parents[1]
    );
    let grpc = until("GRPCRoute status", WAIT, Duration::from_millis(200), || {
        let r = plane.get(&["grpcroute", "-n", APP, "grpc"]);
        r["status"]["parents"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            .then_some(r)
    });
    assert!(
        has(
            &grpc["status"]["parents"][0],
            "Accepted",
            "True",
            "Accepted"
        ),
        "{}",
        grpc["status"]
    );

    // Traffic on the port the Gateway's listener opened: a redirect, a
    // Service without endpoints (503), a missing Service (500).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let get = |path: &str| http_get(addr, "shop.example.com", path).map(|(s, _)| s);
    assert_eq!(get("/old/page"), Some(301));
    assert_eq!(get("/web"), Some(503));
    assert_eq!(get("/missing"), Some(500));
    assert_eq!(
        http_get(addr, "other.example.com", "/web").map(|(s, _)| s),
        Some(404)
    );

    let failing = ctl.lines("status writes failing");
    assert!(
        failing.is_empty(),
        "status writes were refused: {failing:?}\n{}",
        ctl.log()
    );
    // The printer columns of the upstream CRDs show the outcome.
    let (_, table, _) = plane.kubectl(&["get", "gateway", "-n", APP]);
    println!("{table}");
    ctl.stop();
    let _ = std::fs::remove_dir_all(&scratch);
}
