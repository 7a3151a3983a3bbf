//! Load balancing, affinity, retries, health and rollouts through the real
//! proxy, with loopback backends that fail, hang, slow down, die and come
//! back. Endpoints of one Service share a port on distinct loopback
//! addresses (127.0.0.x), as pods of a Service do.

use crate::common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BoxBody, Conn, TestGateway, full, request};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const HOST: &str = "app.test";

/// How a [`Pod`] behaves at the moment.
#[derive(Default)]
struct Behaviour {
    /// Answer with this status instead of 200.
    status: AtomicU32,
    /// Delay every answer by this many milliseconds.
    delay_ms: AtomicU32,
    /// Answer health checks with 503.
    unhealthy: AtomicBool,
}

/// A backend on its own loopback address that can be told to fail, slow
/// down, or die with every connection it has.
struct Pod {
    addr: SocketAddr,
    name: String,
    hits: Arc<AtomicUsize>,
    /// Connections open from the gateway.
    open: Arc<AtomicUsize>,
    behaviour: Arc<Behaviour>,
    tasks: JoinSet<()>,
}

impl Pod {
    async fn start(ip: u8, port: u16) -> Pod {
        let addr = SocketAddr::from(([127, 0, 0, ip], port));
        let listener = TcpListener::bind(addr).await.expect("bind pod address");
        let name = format!("pod-{ip}");
        let hits = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let behaviour = Arc::new(Behaviour::default());
        let mut tasks = JoinSet::new();
        let (n, h, b) = (name.clone(), hits.clone(), behaviour.clone());
        let o = open.clone();
        let conns = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let conns2 = conns.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h, b) = (n.clone(), h.clone(), b.clone());
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (n, h, b) = (n.clone(), h.clone(), b.clone());
                    async move { Ok::<_, Infallible>(answer(req, &n, &h, &b).await) }
                });
                let o = o.clone();
                o.fetch_add(1, Ordering::SeqCst);
                conns2.lock().await.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        // Keeps the connection set alive with the pod; dropping the pod
        // aborts every connection.
        tasks.spawn(async move {
            let _keep = conns;
            std::future::pending::<()>().await;
        });
        Pod {
            addr,
            name,
            hits,
            open,
            behaviour,
            tasks,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn set_status(&self, s: u32) {
        self.behaviour.status.store(s, Ordering::SeqCst);
    }

    /// Stops at once: the listener and every open connection.
    fn kill(mut self) {
        self.tasks.abort_all();
    }
}

async fn answer(
    req: Request<Incoming>,
    name: &str,
    hits: &AtomicUsize,
    b: &Behaviour,
) -> Response<BoxBody> {
    if req.uri().path() == "/healthz" {
        let status = if b.unhealthy.load(Ordering::SeqCst) {
            503
        } else {
            200
        };
        return Response::builder().status(status).body(full("")).unwrap();
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let delay = b.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
    }
    let status = match b.status.load(Ordering::SeqCst) {
        0 => 200,
        s => s as u16,
    };
    Response::builder()
        .status(status)
        .header("x-pod", name)
        .body(full(name.to_owned()))
        .unwrap()
}

/// `n` pods on 127.0.0.{first..} sharing one free port.
async fn pods(first: u8, n: u8) -> Vec<Pod> {
    for _ in 0..20 {
        let probe = TcpListener::bind((Ipv4Addr::new(127, 0, 0, first), 0))
            .await
            .unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut out = Vec::new();
        let mut ok = true;
        for i in 0..n {
            let addr = SocketAddr::from(([127, 0, 0, first + i], port));
            if std::net::TcpListener::bind(addr).is_err() {
                ok = false;
                break;
            }
            out.push(Pod::start(first + i, port).await);
        }
        if ok {
            return out;
        }
    }
    panic!("no common free port");
}

/// An endpoint of the slice: address and conditions.
struct Ep {
    ip: IpAddr,
    ready: bool,
    terminating: bool,
}

fn ready(p: &Pod) -> Ep {
    Ep {
        ip: p.addr.ip(),
        ready: true,
        terminating: false,
    }
}

fn terminating(p: &Pod) -> Ep {
    Ep {
        ip: p.addr.ip(),
        ready: false,
        terminating: true,
    }
}

/// The Service `app` with one slice, and an ApiRoute whose route has
/// `extra` (YAML lines at route level, indented by four spaces).
fn manifests(port: u16, eps: &[Ep], extra: &str) -> String {
    let mut endpoints = String::new();
    for e in eps {
        endpoints.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {{ready: {}, serving: true, terminating: {}}}\n",
            e.ip, e.ready, e.terminating
        ));
    }
    if endpoints.is_empty() {
        endpoints.push_str("  []\n");
    }
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: app}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  labels: {{kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
{endpoints}---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: app}}
spec:
  hosts: [{HOST}]
  routes:
  - name: main
    backends: [{{serviceName: app, servicePort: 80}}]
{extra}"#
    )
}

async fn start(pods: &[Pod], extra: &str) -> TestGateway {
    let eps: Vec<Ep> = pods.iter().map(ready).collect();
    TestGateway::start(&manifests(pods[0].addr.port(), &eps, extra)).await
}

async fn get_with(gw: &TestGateway, headers: &[(&str, &str)]) -> common::Reply {
    request(gw.http(), "GET", HOST, "/", headers).await
}

/// Which pod answered each of `n` sequential requests.
async fn tally(gw: &TestGateway, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = get_with(gw, headers).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        *out.entry(r.text()).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let p = pods(10, 3).await;
    let gw = start(&p, "").await;
    let t = tally(&gw, 300, &[]).await;
    for pod in &p {
        assert_eq!(t.get(&pod.name).copied(), Some(100), "{t:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn least_connections_favours_the_idle_endpoint() {
    let p = pods(13, 2).await;
    p[0].behaviour.delay_ms.store(400, Ordering::SeqCst);
    let gw = start(&p, "    loadBalancer: {type: LeastConnections}\n").await;
    // Ten concurrent requests: the slow pod holds one (the first request
    // each round robin... then least connections) while the fast pod
    // turns around quickly.
    let addr = gw.http();
    let mut set = JoinSet::new();
    for i in 0..10 {
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 30)).await;
            request(addr, "GET", HOST, "/", &[]).await.text()
        });
    }
    let mut slow = 0;
    while let Some(r) = set.join_next().await {
        if r.unwrap() == p[0].name {
            slow += 1;
        }
    }
    assert!(slow <= 1, "the busy slow pod got {slow} of 10");
    gw.shutdown().await;
}

#[tokio::test]
async fn consistent_hash_is_stable_and_remaps_little() {
    let p = pods(16, 4).await;
    let extra = "    loadBalancer: {type: ConsistentHash, hashOn: {header: x-user}}\n";
    let gw = start(&p, extra).await;
    let mut owner = HashMap::new();
    for u in 0..200 {
        let user = format!("user-{u}");
        let first = get_with(&gw, &[("x-user", &user)]).await.text();
        for _ in 0..2 {
            assert_eq!(get_with(&gw, &[("x-user", &user)]).await.text(), first);
        }
        owner.insert(user, first);
    }
    let mut per_pod = HashMap::new();
    for o in owner.values() {
        *per_pod.entry(o.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_pod.len(), 4, "every pod owns keys: {per_pod:?}");
    // One pod leaves: only its users move.
    let eps: Vec<Ep> = p[..3].iter().map(ready).collect();
    gw.write("main.yaml", &manifests(p[0].addr.port(), &eps, extra))
        .await;
    let mut moved = 0;
    for (user, before) in &owner {
        let now = get_with(&gw, &[("x-user", user)]).await.text();
        if now != *before {
            assert_eq!(*before, p[3].name, "{user} moved off a pod that stayed");
            moved += 1;
        }
    }
    assert_eq!(moved, per_pod[&p[3].name]);
    gw.shutdown().await;
}

#[tokio::test]
async fn peak_ewma_moves_traffic_off_a_slow_endpoint() {
    let p = pods(21, 2).await;
    p[0].behaviour.delay_ms.store(60, Ordering::SeqCst);
    let gw = start(&p, "    loadBalancer: {type: PeakEWMA}\n").await;
    // Warm up: both get measured.
    tally(&gw, 10, &[]).await;
    let t = tally(&gw, 100, &[]).await;
    let slow = t.get(&p[0].name).copied().unwrap_or(0);
    assert!(slow <= 10, "slow pod still got {slow} of 100: {t:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn cookie_affinity_pins_and_repins() {
    let p = pods(24, 3).await;
    let extra = "    sessionAffinity: {cookie: {name: route, ttl: 1h}}\n";
    let gw = start(&p, extra).await;
    let first = get_with(&gw, &[]).await;
    let set_cookie = first
        .header("set-cookie")
        .expect("affinity cookie")
        .to_owned();
    assert!(set_cookie.contains("Max-Age=3600") && set_cookie.contains("HttpOnly"));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        let r = get_with(&gw, &[("cookie", &cookie)]).await;
        assert_eq!(r.text(), first.text());
        assert!(
            r.header("set-cookie").is_none(),
            "a valid cookie is not set again"
        );
    }
    // The pinned pod leaves: the client is pinned elsewhere.
    let eps: Vec<Ep> = p
        .iter()
        .filter(|x| x.name != first.text())
        .map(ready)
        .collect();
    gw.write("main.yaml", &manifests(p[0].addr.port(), &eps, extra))
        .await;
    let r = get_with(&gw, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.text(), first.text());
    assert!(r.header("set-cookie").is_some());
    // Garbage cookies are ignored, never an error.
    let r = get_with(&gw, &[("cookie", "route=zzzz; route=")]).await;
    assert_eq!(r.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn connect_failures_go_to_another_endpoint_and_eject() {
    let mut p = pods(27, 3).await;
    let gw = start(&p, "").await;
    // One pod dies: its address refuses connections.
    p.remove(0).kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..60 {
        let r = get_with(&gw, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let routes = common::admin_get(&gw, "/routes").await.text();
    assert!(routes.contains("\"ejected\": true"), "{routes}");
    gw.shutdown().await;
}

#[tokio::test]
async fn status_retries_respect_method_and_budget() {
    let p = pods(31, 2).await;
    p[0].set_status(503);
    let extra = "    retries: {attempts: 2, on: [\"503\"], budget: {percent: 0, minPerSecond: 1000}}\n    healthCheck: {passive: {consecutiveFailures: 0}}\n";
    let gw = start(&p, extra).await;
    for _ in 0..20 {
        let r = get_with(&gw, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "GETs are retried on 503");
        assert_eq!(r.text(), p[1].name);
    }
    // POST is not idempotent: the 503 comes back as it is.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            request(gw.http(), "POST", HOST, "/", &[])
                .await
                .status
                .as_u16(),
        );
    }
    assert!(statuses.contains(&503), "{statuses:?}");

    // A budget of zero percent and one retry per second.
    let extra = "    retries: {attempts: 3, on: [\"503\"], budget: {percent: 0, minPerSecond: 1}}\n    healthCheck: {passive: {consecutiveFailures: 0}}\n";
    let eps: Vec<Ep> = p.iter().map(ready).collect();
    gw.write("main.yaml", &manifests(p[0].addr.port(), &eps, extra))
        .await;
    let mut failed = 0;
    for _ in 0..20 {
        if get_with(&gw, &[]).await.status == StatusCode::SERVICE_UNAVAILABLE {
            failed += 1;
        }
    }
    // Half the requests go to the failing pod first; about one retry per
    // second is granted, so most of them fail.
    assert!(
        failed >= 7,
        "only {failed} of 20 failed: the budget did not hold"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn passive_ejection_and_recovery() {
    let p = pods(34, 2).await;
    p[0].set_status(502);
    let extra = "    retries: {attempts: 1}\n    healthCheck: {passive: {consecutiveFailures: 3, baseEjectionTime: 1s, failureStatuses: [502]}}\n";
    let gw = start(&p, extra).await;
    let mut bad = 0;
    for _ in 0..40 {
        if get_with(&gw, &[]).await.status == StatusCode::BAD_GATEWAY {
            bad += 1;
        }
    }
    assert_eq!(bad, 3, "three failures eject the pod");
    // It recovers; after the ejection time it takes traffic again.
    p[0].set_status(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = p[0].hits();
    tally(&gw, 10, &[]).await;
    assert!(p[0].hits() >= before + 4, "re-admitted pod gets its share");
    gw.shutdown().await;
}

#[tokio::test]
async fn active_checks_take_endpoints_out_and_back_and_fail_open() {
    let p = pods(37, 2).await;
    let extra = "    healthCheck:\n      active: {path: /healthz, interval: 100ms, timeout: 500ms, healthyThreshold: 2, unhealthyThreshold: 2}\n";
    // A Service name of its own: the metrics below are the process's,
    // which other tests' gateways share.
    let eps: Vec<Ep> = p.iter().map(ready).collect();
    let yaml = manifests(p[0].addr.port(), &eps, extra)
        .replace("name: app", "name: checked")
        .replace("service-name: app", "service-name: checked")
        .replace("serviceName: app", "serviceName: checked");
    let gw = TestGateway::start(&yaml).await;
    p[0].behaviour.unhealthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = tally(&gw, 20, &[]).await;
    assert_eq!(t.get(&p[1].name).copied(), Some(20), "{t:?}");
    let routes = common::admin_get(&gw, "/routes").await.text();
    assert!(routes.contains("\"failingActiveChecks\": true"), "{routes}");
    // The upstream's endpoints are counted by state; per-endpoint series
    // are only for `--metrics-detail full`.
    let metrics = common::admin_get(&gw, "/metrics").await.text();
    let value = |state: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("sluicegate_upstream_endpoints{")
                    && l.contains("upstream=\"default/checked:80\"")
                    && l.contains(&format!("state=\"{state}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(value("available").as_deref(), Some("1"), "{metrics}");
    assert_eq!(value("unavailable").as_deref(), Some("1"), "{metrics}");
    assert!(
        metrics.contains("sluicegate_upstream_in_flight{upstream=\"default/checked:80\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("sluicegate_endpoint_healthy{"),
        "{metrics}"
    );
    // Every endpoint failing: serve from all rather than from none.
    p[1].behaviour.unhealthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = tally(&gw, 20, &[]).await;
    assert_eq!(t.len(), 2, "fail open to every endpoint: {t:?}");
    // Both recover.
    p[0].behaviour.unhealthy.store(false, Ordering::SeqCst);
    p[1].behaviour.unhealthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = tally(&gw, 20, &[]).await;
    assert_eq!(t.get(&p[0].name).copied(), Some(10), "{t:?}");
    gw.shutdown().await;
}

/// Runs `clients` keep-alive clients against the gateway until `stop`,
/// counting answers by status.
fn load(gw: &TestGateway, clients: usize, stop: Arc<AtomicBool>) -> JoinSet<(usize, Vec<String>)> {
    let addr = gw.http();
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let stop = stop.clone();
        set.spawn(async move {
            let (mut ok, mut errors) = (0, Vec::new());
            let mut conn = Conn::open(addr).await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                match conn.get(HOST, "/").await {
                    Ok(r) if r.status == StatusCode::OK => ok += 1,
                    Ok(r) => errors.push(format!("{} {}", r.status, r.text())),
                    Err(e) => {
                        errors.push(e.to_string());
                        conn = Conn::open(addr).await.unwrap();
                    }
                }
            }
            (ok, errors)
        });
    }
    set
}

async fn totals(mut set: JoinSet<(usize, Vec<String>)>) -> (usize, Vec<String>) {
    let (mut ok, mut errors) = (0, Vec::new());
    while let Some(r) = set.join_next().await {
        let (o, e) = r.unwrap();
        ok += o;
        errors.extend(e);
    }
    (ok, errors)
}

#[tokio::test]
async fn rolling_update_under_load_loses_nothing() {
    let mut old = pods(40, 3).await;
    let port = old[0].addr.port();
    let gw = start(&old, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&gw, 4, stop.clone());
    let mut new: Vec<Pod> = Vec::new();
    let started = Instant::now();
    for i in 0..3u8 {
        // A new pod starts and becomes ready; one old pod starts
        // terminating but still serves.
        new.push(Pod::start(50 + i, port).await);
        let leaving = old.remove(0);
        let mut eps: Vec<Ep> = old.iter().chain(new.iter()).map(ready).collect();
        eps.push(terminating(&leaving));
        gw.write("main.yaml", &manifests(port, &eps, "")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Then it is removed from the slice, and exits after its grace.
        let eps: Vec<Ep> = old.iter().chain(new.iter()).map(ready).collect();
        gw.write("main.yaml", &manifests(port, &eps, "")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaving.kill();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, errors) = totals(clients).await;
    assert!(
        errors.is_empty(),
        "{} failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests in {:?}", started.elapsed());
    assert!(new.iter().all(|p| p.hits() > 0));
    gw.shutdown().await;
}

#[tokio::test]
async fn killed_endpoint_fails_only_requests_in_flight() {
    let mut p = pods(60, 3).await;
    for pod in &p {
        pod.behaviour.delay_ms.store(5, Ordering::SeqCst);
    }
    let gw = start(&p, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&gw, 6, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.remove(0).kill();
    // Whatever fails does so now, on requests that were on the dead pod.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, errors) = totals(clients).await;
    assert!(
        errors.len() <= 6,
        "{} failed, more than were in flight: {errors:?}",
        errors.len()
    );

    // After detection, nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&gw, 6, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok2, errors) = totals(clients).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ok > 50 && ok2 > 50);
    gw.shutdown().await;
}

#[tokio::test]
async fn terminating_endpoints_serve_only_when_none_is_ready() {
    let p = pods(70, 2).await;
    let port = p[0].addr.port();
    let gw = TestGateway::start(&manifests(port, &[ready(&p[0]), terminating(&p[1])], "")).await;
    let t = tally(&gw, 10, &[]).await;
    assert_eq!(t.get(&p[0].name).copied(), Some(10), "{t:?}");
    gw.write(
        "main.yaml",
        &manifests(port, &[terminating(&p[0]), terminating(&p[1])], ""),
    )
    .await;
    let t = tally(&gw, 10, &[]).await;
    assert_eq!(t.values().sum::<usize>(), 10, "{t:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_cuts_a_stalled_body() {
    let backend = common::Backend::start(|_req| async {
        let (mut tx, body) = http_body_util::channel::Channel::<
            Bytes,
            Box<dyn std::error::Error + Send + Sync>,
        >::new(1);
        tokio::spawn(async move {
            let _ = tx.send_data(Bytes::from_static(b"first")).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = tx.send_data(Bytes::from_static(b"late")).await;
        });
        use http_body_util::BodyExt;
        Response::new(body.boxed())
    })
    .await;
    let m = format!(
        "{}---\napiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: slow}}\nspec:\n  hosts: [slow.test]\n  routes:\n  - name: main\n    timeouts: {{idle: 300ms}}\n    backends: [{{serviceName: slow, servicePort: 80}}]\n",
        common::service("slow", &[backend.addr])
    );
    let gw = TestGateway::start(&m).await;
    let started = Instant::now();
    let req = Request::get("/")
        .header("host", "slow.test")
        .body(full(""))
        .unwrap();
    let r = common::send(gw.http(), req).await;
    assert!(r.is_err(), "the body is cut, not completed");
    assert!(started.elapsed() < Duration::from_secs(3));
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_connections_to_a_departed_endpoint_are_closed() {
    let p = pods(80, 2).await;
    let gw = start(&p, "").await;
    tally(&gw, 10, &[]).await;
    assert!(p[0].open.load(Ordering::SeqCst) >= 1, "a pooled connection");
    // The pod leaves the Service but keeps running: the gateway closes
    // its idle connections to it well before the pool's idle timeout.
    gw.write(
        "main.yaml",
        &manifests(p[0].addr.port(), &[ready(&p[1])], ""),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while p[0].open.load(Ordering::SeqCst) > 0 {
        assert!(
            Instant::now() < deadline,
            "idle connections to the departed pod stay open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tally(&gw, 4, &[]).await;
    assert!(p[1].open.load(Ordering::SeqCst) >= 1);
    gw.shutdown().await;
}

/// A pod on `ip:port` that reads each request and closes the connection
/// without answering.
async fn resetting_pod(ip: u8, port: u16) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, ip], port)))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
            });
        }
    })
}

#[tokio::test]
async fn resets_are_retried_only_when_asked() {
    let good = pods(84, 1).await;
    let port = good[0].addr.port();
    let bad = resetting_pod(85, port).await;
    let eps = [
        ready(&good[0]),
        Ep {
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 85)),
            ready: true,
            terminating: false,
        },
    ];
    let no_ejection = "    healthCheck: {passive: {consecutiveFailures: 0}}\n";
    // With ejection off the resetting pod keeps its turn, so nearly every
    // request tries it first; a wide budget lets all of them retry.
    let retry_resets =
        format!("    retries: {{on: [reset], budget: {{minPerSecond: 1000}}}}\n{no_ejection}");
    let gw = TestGateway::start(&manifests(port, &eps, &retry_resets)).await;
    for _ in 0..20 {
        let r = get_with(&gw, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "GETs are retried after a reset");
    }
    // POST may have been processed before the reset: not retried.
    let mut posts = Vec::new();
    for _ in 0..6 {
        posts.push(request(gw.http(), "POST", HOST, "/", &[]).await.status);
    }
    assert!(posts.contains(&StatusCode::BAD_GATEWAY), "{posts:?}");
    // Without `reset` in `on`, half the GETs get a clean 502.
    gw.write("main.yaml", &manifests(port, &eps, no_ejection))
        .await;
    let mut bad_gateway = 0;
    for _ in 0..20 {
        let r = get_with(&gw, &[]).await;
        if r.status == StatusCode::BAD_GATEWAY {
            assert_eq!(r.text(), "502 Bad Gateway: upstream error\n");
            bad_gateway += 1;
        } else {
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    assert_eq!(bad_gateway, 10);
    bad.abort();
    gw.shutdown().await;
}
