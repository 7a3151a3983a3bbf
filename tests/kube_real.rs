//! Kubernetes mode against a real kube-apiserver and etcd (not the
//! double): what only a real control plane shows — schema validation and
//! its warnings, RBAC for the chart's ServiceAccount, Events, Lease
//! handover, and an API-server restart.
//!
//! Skipped, with the reason printed, when `K8S_DIR` is not set. With it,
//! the scenario starts a fresh control plane with `../shared/k8s/` (or
//! `K8S_SCRIPTS`), on `APISERVER_PORT` (16443), `ETCD_PORT` (12379) and
//! `ETCD_PEER_PORT` (12380), runs backends in network namespace `sgtest`
//! on 198.51.100.10 and .11, runs `sluicegate controller` processes as the
//! chart's ServiceAccount, and stops everything it started. It needs root.
//!
//! ```sh
//! K8S_DIR=/path/to/k8s cargo test --test kube_real -- --nocapture
//! ```
//!
//! `SLUICEGATE_REAL_OUTAGE_SECS` (default 80) is how long the API server
//! stays down; `SLUICEGATE_REAL_COLD_ROUTES` (default 1000) how many
//! ApiRoutes, Services and EndpointSlices the cold start loads;
//! `SLUICEGATE_BIN` runs another build of the binary (e.g. the release
//! one, for figures). Figures are printed, not asserted, except the
//! convergence target after the restart (10 s), which is the behaviour
//! under test.

#[path = "kube_real/infra.rs"]
mod infra;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use infra::{BACKEND_PORT, Ctl, Netns, Plane, http_get, quantile, until};
use serde_json::{Value, json};

const NS: &str = "sluicegate-system";
const APP: &str = "shop";
const SECOND: Duration = Duration::from_secs(1);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Stops the control plane when the scenario ends, however it ends.
struct PlaneGuard<'a>(&'a Plane);

impl Drop for PlaneGuard<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[test]
fn real_api_server_scenario() {
    let Some(mut plane) = Plane::from_env() else {
        return;
    };
    let scratch = tempdir();
    plane.stop();
    plane.start(true);
    // A copy: k8s-start.sh rewrites its kubeconfig after the API server is
    // ready, and the restart below edits objects at once. The token and
    // the CA stay the same across restarts.
    let admin = scratch.join("admin.kubeconfig");
    std::fs::copy(&plane.kubeconfig, &admin).expect("copy the kubeconfig");
    plane.kubeconfig = admin;
    let _plane_guard = PlaneGuard(&plane);
    // Backends before any EndpointSlice names their addresses.
    let netns = Netns::up(&scratch);

    install_without_warnings(&plane);
    // Outside a pod there is no POD_NAMESPACE; without the chart's
    // SLUICEGATE_LEADER_ELECTION_NAMESPACE too, the Lease goes to the
    // kubeconfig context's namespace.
    let mut deployment = plane.get(&["deployment", "-n", NS, "sluicegate"]);
    if let Some(env) = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut()
    {
        env.retain(|e| e["name"] != "SLUICEGATE_LEADER_ELECTION_NAMESPACE");
    }
    let kubeconfig = scratch.join("sa.kubeconfig");
    plane.service_account_kubeconfig(NS, "sluicegate", Some(NS), &kubeconfig);
    seed(&plane);

    // `SLUICEGATE_REAL_PHASES=cold` runs the cold start only.
    if std::env::var("SLUICEGATE_REAL_PHASES").as_deref() != Ok("cold") {
        forbidden_lease_namespace_is_said_once(&plane, &deployment, &scratch);
        let a = Ctl::start("sg-a", &deployment, &kubeconfig, &scratch, &[]);
        println!("controller sg-a ready in {:?}", a.wait_ready(30 * SECOND));
        routes_status_and_events(&plane, &a);
        typos_are_rejected_at_apply(&plane);
        endpoint_removal(&plane, &a);
        let b = lease_handover(&plane, a, &deployment, &kubeconfig, &scratch);
        restart_convergence(&plane, &b);
        b.stop();
    }
    cold_start(&plane, &deployment, &kubeconfig, &scratch);
    // Controllers are gone; now the backends may go.
    netns.down();
    let _ = std::fs::remove_dir_all(&scratch);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sluicegate-kube-real-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// `Warning:` lines of kubectl's stderr, except those about `format`s
/// the CRDs in this tree still declare: those are only tolerated while
/// `crds/` has them, so the check tightens by itself once they are gone.
fn unexpected_warnings(stderr: &str) -> Vec<String> {
    let crds: String = ["crds/apiroutes.yaml", "crds/pluginconfigs.yaml"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f))
                .unwrap_or_default()
        })
        .collect();
    stderr
        .lines()
        .filter(|l| l.starts_with("Warning:"))
        .filter(|l| {
            let declared = l
                .split("unrecognized format \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .is_some_and(|f| crds.contains(&format!("format: {f}")));
            !declared
        })
        .map(str::to_owned)
        .collect()
}

fn install_without_warnings(plane: &Plane) {
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
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("Warning:")).collect();
        println!("apply --server-side {path}: {} warnings", warnings.len());
        for w in &warnings {
            println!("  {w}");
        }
        let unexpected = unexpected_warnings(&err);
        assert!(unexpected.is_empty(), "{path}: {unexpected:#?}");
    }
    plane.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/apiroutes.sluicegate.io",
        "crd/pluginconfigs.sluicegate.io",
        "--timeout=30s",
    ]);
}

fn slice(endpoints: &[&str]) -> String {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": APP,
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
        "endpoints": eps
    })
    .to_string()
}

fn api_route(name: &str, host: &str, svc: &str, prefix: &str) -> String {
    json!({
        "apiVersion": "sluicegate.io/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": APP},
        "spec": {"ingressClassName": "sluicegate", "hosts": [host], "routes": [{
            "name": "main",
            "match": {"paths": [{"type": "Prefix", "value": prefix}]},
            "backends": [{"serviceName": svc, "servicePort": 80}]}]}
    })
    .to_string()
}

fn ingress(host: &str, path: &str) -> String {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": APP},
        "spec": {"ingressClassName": "sluicegate", "rules": [{"host": host, "http": {"paths": [
            {"path": path, "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    })
    .to_string()
}

fn must_apply(plane: &Plane, doc: &str) {
    let (ok, err) = plane.apply(doc);
    assert!(ok, "apply failed: {err}\n{doc}");
}

fn seed(plane: &Plane) {
    must_apply(
        plane,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}}).to_string(),
    );
    must_apply(
        plane,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": APP},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT}]}
        })
        .to_string(),
    );
    must_apply(plane, &slice(&["198.51.100.10", "198.51.100.11"]));
    must_apply(plane, &ingress("ing.test", "/"));
    must_apply(plane, &api_route("api", "api.test", "web", "/"));
    // Names a PluginConfig that does not exist: rejected (never served
    // without the plugins it asked for), with an Event.
    let mut broken: Value =
        serde_json::from_str(&api_route("broken", "broken.test", "web", "/")).unwrap_or_default();
    broken["spec"]["routes"][0]["pluginConfigRef"] = json!({"name": "nope"});
    must_apply(plane, &broken.to_string());
}

fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

fn served(ctl: &Ctl, host: &str, path: &str) -> Option<String> {
    match http_get(ctl.http, host, path) {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

fn forbidden_lease_namespace_is_said_once(plane: &Plane, deployment: &Value, scratch: &Path) {
    // A context without a namespace: the client's namespace is `default`,
    // where the chart's Role grants nothing.
    let kc = scratch.join("sa-default.kubeconfig");
    plane.service_account_kubeconfig(NS, "sluicegate", None, &kc);
    let mut d = deployment.clone();
    let container = &mut d["spec"]["template"]["spec"]["containers"][0];
    // Faster retries than the chart's, to see that they are not logged.
    if let Some(args) = container["args"].as_array_mut() {
        args.retain(|a| {
            let a = a.as_str().unwrap_or_default();
            !a.starts_with("--retry-period") && !a.starts_with("--renew-deadline")
        });
    }
    let c = Ctl::start(
        "sg-default",
        &d,
        &kc,
        scratch,
        &["--retry-period=500ms", "--renew-deadline=2s"],
    );
    c.wait_ready(30 * SECOND);
    std::thread::sleep(4 * SECOND);
    let forbidden = c.lines("leader election forbidden");
    println!("lease in `default`: {forbidden:?}");
    assert_eq!(forbidden.len(), 1, "said once, not per retry:\n{}", c.log());
    let line = &forbidden[0];
    assert!(
        line.contains("\"default\"") && line.contains("get"),
        "{line}"
    );
    assert!(
        !c.log().contains("Status {"),
        "no Status dumps:\n{}",
        c.log()
    );
    assert!(c.lines("became leader").is_empty());
    c.stop();
}

fn routes_status_and_events(plane: &Plane, a: &Ctl) {
    let body = until(
        "ing.test served",
        20 * SECOND,
        Duration::from_millis(20),
        || served(a, "ing.test", "/"),
    );
    assert!(body == "blue" || body == "green", "{body}");
    assert!(served(a, "api.test", "/").is_some());
    assert_eq!(http_get(a.http, "broken.test", "/").map(|r| r.0), Some(404));

    let route = until("api Ready", 20 * SECOND, Duration::from_millis(100), || {
        let r = plane.get(&["apiroute", "-n", APP, "api"]);
        condition(&r, "Ready").map(|_| r)
    });
    let generation = route["metadata"]["generation"].as_i64();
    for t in ["Accepted", "Programmed", "Ready"] {
        let c = condition(&route, t).unwrap_or_default();
        assert_eq!(c["status"], "True", "{t}: {c}");
        assert_eq!(c["observedGeneration"].as_i64(), generation, "{t}: {c}");
    }
    let broken = until(
        "broken not Accepted",
        20 * SECOND,
        Duration::from_millis(100),
        || {
            let c = condition(&plane.get(&["apiroute", "-n", APP, "broken"]), "Accepted")?;
            (c["status"] == "False").then_some(c)
        },
    );
    assert_eq!(broken["reason"], "PluginConfigNotFound", "{broken}");
    println!("broken route: {} {}", broken["reason"], broken["message"]);
    let events = until(
        "an Event for the broken route",
        20 * SECOND,
        Duration::from_millis(200),
        || {
            let list = plane.get(&[
                "events",
                "-n",
                APP,
                "--field-selector",
                "involvedObject.name=broken",
            ]);
            let items = list["items"].as_array().cloned().unwrap_or_default();
            (!items.is_empty()).then_some(items)
        },
    );
    assert_eq!(events[0]["type"], "Warning", "{}", events[0]);

    // The Ingress shows the chart's Service address.
    let svc = plane.get(&["service", "-n", NS, "sluicegate"]);
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let shown = until(
        "Ingress status",
        20 * SECOND,
        Duration::from_millis(100),
        || {
            let ing = plane.get(&["ingress", "-n", APP, "web"]);
            ing["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .map(str::to_owned)
        },
    );
    assert_eq!(shown, ip);

    // An edit: the new generation is observed.
    must_apply(plane, &api_route("api", "api.test", "web", "/v2"));
    let route = until(
        "observedGeneration 2",
        20 * SECOND,
        Duration::from_millis(100),
        || {
            let r = plane.get(&["apiroute", "-n", APP, "api"]);
            let g = r["metadata"]["generation"].as_i64();
            (g == Some(2) && condition(&r, "Programmed")?["observedGeneration"].as_i64() == g)
                .then_some(r)
        },
    );
    assert_eq!(
        condition(&route, "Ready").unwrap_or_default()["status"],
        "True"
    );
    until("/v2 served", 10 * SECOND, Duration::from_millis(20), || {
        served(a, "api.test", "/v2/x")
    });
    assert_eq!(
        http_get(a.http, "api.test", "/other").map(|r| r.0),
        Some(404)
    );
}

fn typos_are_rejected_at_apply(plane: &Plane) {
    let pc = |plugins: Value| {
        json!({
            "apiVersion": "sluicegate.io/v1alpha1", "kind": "PluginConfig",
            "metadata": {"name": "limits", "namespace": APP},
            "spec": {"plugins": plugins}
        })
        .to_string()
    };
    must_apply(
        plane,
        &pc(json!({"limitCount": {"count": 10, "timeWindow": "1m"}})),
    );
    for (bad, field) in [
        (
            json!({"limitCount": {"count": 10, "timeWindow": "1m", "tmeWindow": "1m"}}),
            "tmeWindow",
        ),
        (
            json!({"limitCount": {"count": "ten", "timeWindow": "1m"}}),
            "count",
        ),
        (
            json!({"limitCuont": {"count": 10, "timeWindow": "1m"}}),
            "limitCuont",
        ),
    ] {
        let (ok, err) = plane.apply(&pc(bad.clone()));
        println!("rejected {bad}: {}", err.trim());
        assert!(!ok, "accepted {bad}");
        assert!(err.contains(field), "the error names {field}: {err}");
    }
    let kept = plane.get(&["pluginconfig", "-n", APP, "limits"]);
    assert_eq!(
        kept["spec"]["plugins"]["limitCount"]["count"], 10,
        "last good spec kept"
    );
}

/// Removing an endpoint from the slice: how long until the proxy stops
/// sending to it, from the API server's answer to the update.
fn endpoint_removal(plane: &Plane, a: &Ctl) {
    let rounds = 20;
    let mut lags = Vec::new();
    for i in 0..rounds {
        must_apply(plane, &slice(&["198.51.100.10", "198.51.100.11"]));
        until(
            "both endpoints serve",
            10 * SECOND,
            Duration::from_millis(5),
            || {
                let mut seen = std::collections::HashSet::new();
                for _ in 0..20 {
                    seen.insert(served(a, "ing.test", "/")?);
                }
                (seen.len() == 2).then_some(())
            },
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, http) = (stop.clone(), a.http);
        let load = std::thread::spawn(move || {
            let mut replies: Vec<(Instant, String)> = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Some((200, b)) = http_get(http, "ing.test", "/") {
                    replies.push((Instant::now(), b));
                }
            }
            replies
        });
        std::thread::sleep(Duration::from_millis(100));
        let (removed, kept) = if i % 2 == 0 {
            ("green", "198.51.100.10")
        } else {
            ("blue", "198.51.100.11")
        };
        must_apply(plane, &slice(&[kept]));
        let applied = Instant::now();
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        let replies = load.join().unwrap_or_default();
        let last = replies
            .iter()
            .filter(|(_, b)| b == removed)
            .map(|(t, _)| *t)
            .max();
        let lag = last.map_or(Duration::ZERO, |t| t.saturating_duration_since(applied));
        let after = replies
            .iter()
            .filter(|(t, _)| *t > applied + Duration::from_millis(300));
        assert!(
            after.clone().all(|(_, b)| b != removed),
            "{removed} still served 300 ms after its removal"
        );
        lags.push(lag);
    }
    lags.sort();
    println!(
        "endpoint removal -> no traffic ({rounds} rounds, from kubectl's return): p50 {:?}, p99 {:?}, max {:?}",
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        lags.last().copied().unwrap_or_default()
    );
    must_apply(plane, &slice(&["198.51.100.10", "198.51.100.11"]));
}

fn leader(plane: &Plane) -> Option<String> {
    let l = plane.get(&["lease", "-n", NS, "sluicegate-leader"]);
    l["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

/// Two controllers; the leader shuts down; the other takes over at once,
/// and traffic through it never fails.
fn lease_handover(
    plane: &Plane,
    a: Ctl,
    deployment: &Value,
    kubeconfig: &Path,
    scratch: &Path,
) -> Ctl {
    until(
        "sg-a leads",
        30 * SECOND,
        Duration::from_millis(100),
        || (leader(plane).as_deref() == Some("sg-a")).then_some(()),
    );
    let b = Ctl::start("sg-b", deployment, kubeconfig, scratch, &[]);
    b.wait_ready(30 * SECOND);
    until(
        "sg-b serves",
        10 * SECOND,
        Duration::from_millis(20),
        || served(&b, "ing.test", "/"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, http) = (stop.clone(), b.http);
    let load = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !stop2.load(Ordering::Relaxed) {
            match http_get(http, "ing.test", "/") {
                Some((200, _)) => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    });
    let t0 = Instant::now();
    a.stop();
    let released = t0.elapsed();
    let took = until("sg-b leads", 30 * SECOND, Duration::from_millis(20), || {
        (leader(plane).as_deref() == Some("sg-b")).then(|| t0.elapsed())
    });
    // The new leader writes status: an edit is observed.
    must_apply(plane, &api_route("api", "api.test", "web", "/v3"));
    until(
        "sg-b writes status",
        20 * SECOND,
        Duration::from_millis(100),
        || {
            let r = plane.get(&["apiroute", "-n", APP, "api"]);
            let g = r["metadata"]["generation"].as_i64();
            (condition(&r, "Programmed")?["observedGeneration"].as_i64() == g).then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap_or_default();
    println!(
        "lease handover: sg-a stopped in {released:?}, sg-b held the Lease {took:?} after the SIGTERM; \
         {ok} requests through sg-b meanwhile, {failed} failed"
    );
    assert_eq!(failed, 0, "traffic gap during the handover");
    assert!(ok > 20, "too few requests to tell: {ok}");
    b
}

/// The control plane goes down and comes back; an Ingress edited right
/// after is live within 10 s of the API server being ready.
fn restart_convergence(plane: &Plane, b: &Ctl) {
    let outage = Duration::from_secs(env_u64("SLUICEGATE_REAL_OUTAGE_SECS", 80));
    plane.stop();
    let down = Instant::now();
    while down.elapsed() < outage {
        // Traffic keeps flowing, and the replica stays ready.
        assert!(
            served(b, "ing.test", "/").is_some(),
            "traffic during the outage"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, details) = b.readyz().unwrap_or_default();
    println!("/readyz during the outage ({status}):\n{details}");
    assert_eq!(status, 200);
    assert!(details.contains("[-]watch Ingress failing"), "{details}");
    assert_eq!(
        b.metric("sluicegate_watch_healthy{kind=\"Ingress\"}"),
        Some(0.0)
    );

    let mut start = plane.start_background();
    let ready_at = until(
        "API server ready",
        120 * SECOND,
        Duration::from_millis(50),
        || plane.ready().then(Instant::now),
    );
    // Right away, as a user would: a new path on the Ingress.
    must_apply(plane, &ingress("ing.test", "/after"));
    let edited = ready_at.elapsed();
    let live = until(
        "the edit is live",
        30 * SECOND,
        Duration::from_millis(20),
        || served(b, "ing.test", "/after/x").map(|_| ready_at.elapsed()),
    );
    let healthy = until(
        "every watch healthy",
        30 * SECOND,
        Duration::from_millis(50),
        || {
            let (_, d) = b.readyz()?;
            (!d.contains("[-]")).then(|| ready_at.elapsed())
        },
    );
    let _ = start.wait();
    let log = b.log();
    println!(
        "restart after {outage:?} down: edit applied {edited:?} after ready, live {live:?} after ready, \
         every watch healthy {healthy:?} after ready"
    );
    let failed = b.lines("watch failed");
    let recovered = b.lines("watch recovered");
    println!(
        "log: {} 'watch failed' lines, {} 'watch recovered' lines",
        failed.len(),
        recovered.len()
    );
    for l in failed.iter().chain(&recovered) {
        println!("  {l}");
    }
    assert!(!log.contains("Status {"), "a Status dump in the log");
    // One line per watcher and streak (7 kinds, all namespaces).
    assert!(failed.len() <= 7 * 2, "{} failure lines", failed.len());
    assert!(recovered.len() >= 7, "every watch says it recovered");
    assert!(
        live < Duration::from_secs(10),
        "live {live:?} after the API server was ready"
    );
}

/// A fresh controller against many objects: time to `/readyz` and to the
/// first route served.
fn cold_start(plane: &Plane, deployment: &Value, kubeconfig: &Path, scratch: &Path) {
    let n = env_u64("SLUICEGATE_REAL_COLD_ROUTES", 1000) as usize;
    let t0 = Instant::now();
    let ns = "cold";
    must_apply(
        plane,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).to_string(),
    );
    // In batches: one kubectl per 500 objects of a kind.
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut items = Vec::new();
        for &i in chunk {
            items.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("s{i}"), "namespace": ns},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT}]}
            }));
            items.push(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("s{i}-1"), "namespace": ns,
                             "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["198.51.100.10"], "conditions": {"ready": true}},
                              {"addresses": ["198.51.100.11"], "conditions": {"ready": true}}]
            }));
            items.push(json!({
                "apiVersion": "sluicegate.io/v1alpha1", "kind": "ApiRoute",
                "metadata": {"name": format!("r{i}"), "namespace": ns},
                "spec": {"ingressClassName": "sluicegate", "hosts": [format!("r{i}.cold.test")], "routes": [{
                    "name": "main", "match": {"paths": [{"type": "Prefix", "value": "/"}]},
                    "backends": [{"serviceName": format!("s{i}"), "servicePort": 80}]}]}
            }));
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        must_apply(plane, &list);
    }
    println!(
        "cold start: loaded {n} ApiRoutes + Services + EndpointSlices in {:?}",
        t0.elapsed()
    );
    let c = Ctl::start("sg-cold", deployment, kubeconfig, scratch, &[]);
    let spawned = Instant::now();
    let ready = c.wait_ready(120 * SECOND);
    let probe = format!("r{}.cold.test", n / 2);
    let first = until(
        "a cold route served",
        60 * SECOND,
        Duration::from_millis(5),
        || served(&c, &probe, "/").map(|_| spawned.elapsed()),
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", c.pid()))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "cold start with {n}: /readyz 200 after {ready:?}, {probe} served after {first:?}; {rss}"
    );
    println!("{}", c.readyz().map(|r| r.1).unwrap_or_default());
    c.stop();
}
