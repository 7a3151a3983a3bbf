//! The bench's machinery: loopback backends, a keep-alive HTTP client,
//! the controller process with its log, metrics and memory, and the
//! objects loaded into the API-server double.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::apiserver::ApiServer;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// Backends; each listens on 127.0.0.1, .2 and .3 with one port.
pub(crate) const BACKENDS: usize = 4;
/// Endpoints per EndpointSlice (the loopback addresses 127.0.0.1..=3).
pub(crate) const ENDPOINTS: u8 = 3;
/// Namespaces the objects are spread over.
pub(crate) const NAMESPACES: usize = 50;
/// How long one change may take before it counts as failed.
pub(crate) const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------
// Options

pub(crate) struct Options {
    pub(crate) cold_routes: usize,
    pub(crate) routes: usize,
    pub(crate) iterations: usize,
    /// Wait after the statuses are written before the "settled" RSS.
    pub(crate) settle: Duration,
    pub(crate) cold: bool,
    pub(crate) convergence: bool,
    pub(crate) mode: &'static str,
    /// Run as a test (`cargo test --benches`): fail on wrong results.
    pub(crate) smoke: bool,
}

pub(crate) fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_num = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let quick_env = std::env::var("SLUICEGATE_BENCH_QUICK")
        .is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    let bench = args.iter().any(|a| a == "--bench");
    let quick = quick_env || args.iter().any(|a| a == "--quick");
    let (mode, cold_routes, routes, iterations, settle) = if !bench {
        ("smoke (no --bench)", 100, 50, 5, Duration::from_millis(200))
    } else if quick {
        ("quick", 1_000, 200, 30, Duration::from_secs(1))
    } else {
        ("full", 5_000, 1_000, 200, Duration::from_secs(3))
    };
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wants = |phase: &str| filters.is_empty() || filters.iter().any(|f| phase.contains(*f));
    Options {
        cold_routes: env_num("SLUICEGATE_BENCH_COLD_ROUTES").unwrap_or(cold_routes),
        routes: env_num("SLUICEGATE_BENCH_ROUTES").unwrap_or(routes),
        iterations: env_num("SLUICEGATE_BENCH_ITERATIONS").unwrap_or(iterations),
        settle,
        cold: wants("cold"),
        convergence: wants("convergence"),
        mode,
        smoke: !bench,
    }
}

// ---------------------------------------------------------------------
// Backends

/// A backend answering every request with its name, on
/// `127.0.0.{1..=ENDPOINTS}:port`.
pub(crate) struct Backend {
    pub(crate) name: String,
    pub(crate) port: u16,
}

pub(crate) async fn backend(name: &str) -> Backend {
    let body = Bytes::from(name.to_owned());
    'retry: loop {
        let first = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let port = first.local_addr().expect("backend address").port();
        let mut listeners = vec![first];
        for last in 2..=ENDPOINTS {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port);
            match TcpListener::bind(addr).await {
                Ok(l) => listeners.push(l),
                // The port is taken on that address: try another one.
                Err(_) => continue 'retry,
            }
        }
        for l in listeners {
            tokio::spawn(serve_backend(l, body.clone()));
        }
        return Backend {
            name: name.to_owned(),
            port,
        };
    }
}

pub(crate) async fn serve_backend(listener: TcpListener, body: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// ---------------------------------------------------------------------
// Objects

pub(crate) fn namespace(i: usize) -> String {
    format!("team-{:02}", i % NAMESPACES)
}

pub(crate) fn host(i: usize) -> String {
    format!("app-{i:05}.{}.example.com", namespace(i))
}

pub(crate) fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i:05}"), "namespace": namespace(i)},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    })
}

pub(crate) fn slice(i: usize, backend: &Backend) -> Value {
    let endpoints: Vec<Value> = (1..=ENDPOINTS)
        .map(
            |last| json!({"addresses": [format!("127.0.0.{last}")], "conditions": {"ready": true}}),
        )
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i:05}-abc"), "namespace": namespace(i),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i:05}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// ApiRoute `name` in the namespace of Service `i`, sending `host`'s
/// `prefix` to that Service.
pub(crate) fn api_route(name: &str, i: usize, host: &str, prefix: &str) -> Value {
    json!({
        "apiVersion": "sluicegate.io/v1alpha1", "kind": "ApiRoute",
        "metadata": {"name": name, "namespace": namespace(i)},
        "spec": {"hosts": [host], "routes": [{
            "name": "main",
            "match": {"paths": [{"type": "Prefix", "value": prefix}]},
            "backends": [{"serviceName": format!("svc-{i:05}"), "servicePort": 80}]
        }]}
    })
}

pub(crate) fn route_name(i: usize) -> String {
    format!("r-{i:05}")
}

/// The backend object `i` starts on.
pub(crate) fn initial_backend(i: usize) -> usize {
    i % BACKENDS
}

/// Loads `n` ApiRoutes (prefix `/p0`), Services and EndpointSlices.
pub(crate) fn load(api: &ApiServer, n: usize, backends: &[Backend]) {
    for i in 0..n {
        api.apply(service(i));
        api.apply(slice(i, &backends[initial_backend(i)]));
        api.apply(api_route(&route_name(i), i, &host(i), "/p0"));
    }
}

pub(crate) fn has_ready(obj: &Value) -> Option<bool> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"] == "True")
}

// ---------------------------------------------------------------------
// HTTP client: one keep-alive connection, reconnecting when it breaks

pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    pub(crate) async fn connect(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(sender)
    }

    /// GET `path` with `Host: host`; `None` when no connection could be
    /// made or the request failed twice.
    pub(crate) async fn get(&mut self, host: &str, path: &str) -> Option<(StatusCode, Bytes)> {
        for _ in 0..2 {
            if self.sender.is_none() {
                self.sender = self.connect().await;
            }
            let sender = self.sender.as_mut()?;
            let req = Request::get(path)
                .header(header::HOST, host)
                .body(Empty::new())
                .expect("request");
            let sent = match sender.ready().await {
                Ok(()) => sender.send_request(req).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if let Ok(body) = resp.into_body().collect().await {
                        return Some((status, body.to_bytes()));
                    }
                    self.sender = None;
                }
                Err(_) => self.sender = None,
            }
        }
        None
    }

    /// Polls until `ok` holds, sleeping `every` between attempts; the time
    /// at which it held, or `None` after `timeout`.
    pub(crate) async fn until(
        &mut self,
        host: &str,
        path: &str,
        every: Duration,
        timeout: Duration,
        ok: impl Fn(StatusCode, &[u8]) -> bool,
    ) -> Option<Poll> {
        let deadline = Instant::now() + timeout;
        let mut max_rtt = Duration::ZERO;
        let mut polls = 0;
        loop {
            let sent = Instant::now();
            let reply = self.get(host, path).await;
            let at = Instant::now();
            let rtt = at - sent;
            max_rtt = max_rtt.max(rtt);
            polls += 1;
            if let Some((status, body)) = reply
                && ok(status, &body)
            {
                return Some(Poll {
                    at,
                    rtt,
                    max_rtt,
                    polls,
                });
            }
            if at > deadline {
                return None;
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The end of a successful poll.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Poll {
    /// When the matching reply arrived.
    pub(crate) at: Instant,
    /// Round trip of the request that got it.
    pub(crate) rtt: Duration,
    /// Slowest round trip of the poll.
    pub(crate) max_rtt: Duration,
    pub(crate) polls: usize,
}

// ---------------------------------------------------------------------
// The controller process

/// A line of the controller's JSON log, with the time it was read.
pub(crate) struct LogLine {
    pub(crate) at: Instant,
    pub(crate) json: Value,
}

pub(crate) struct Controller {
    pub(crate) child: Option<Child>,
    pub(crate) pid: u32,
    pub(crate) spawned: Instant,
    pub(crate) http: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) log: Arc<Mutex<Vec<LogLine>>>,
    pub(crate) dir: PathBuf,
}

impl Controller {
    /// Spawns `sluicegate controller --workers 1` against `api` and waits
    /// for its listening addresses.
    pub(crate) fn spawn(api: &ApiServer, tag: &str) -> Controller {
        let dir =
            std::env::temp_dir().join(format!("sluicegate-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: b, cluster: {{server: \"{}\"}}}}]\n\
                 users: [{{name: b, user: {{}}}}]\n\
                 contexts: [{{name: b, context: {{cluster: b, user: b}}}}]\ncurrent-context: b\n",
                api.url()
            ),
        )
        .expect("write kubeconfig");
        let mut args = vec!["controller", "--workers", "1"];
        if no_lease() {
            args.push("--disable-leader-election");
        }
        let spawned = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args(&args)
            .env("SLUICEGATE_KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "sluicegate-bench-0")
            .env("POD_NAMESPACE", "sluicegate-system")
            .env("SLUICEGATE_HTTP_ADDR", "127.0.0.1:0")
            .env("SLUICEGATE_HTTPS_ADDR", "127.0.0.1:0")
            .env("SLUICEGATE_ADMIN_ADDR", "127.0.0.1:0")
            .env("SLUICEGATE_LOG_FORMAT", "json")
            .env("SLUICEGATE_LOG", "info")
            .env("SLUICEGATE_SHUTDOWN_GRACE", "2s")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the sluicegate binary");
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let log: Arc<Mutex<Vec<LogLine>>> = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let Ok(json) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("controller: {line}");
                    continue;
                };
                if json["level"] == "WARN" || json["level"] == "ERROR" {
                    eprintln!("controller: {line}");
                }
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(LogLine { at, json });
            }
        });
        let mut c = Controller {
            child: Some(child),
            pid,
            spawned,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let addr = |msg: &str| {
                c.find(|v| v["fields"]["message"] == msg)
                    .and_then(|(_, v)| v["fields"]["addr"].as_str()?.parse().ok())
            };
            if let (Some(h), Some(a)) = (addr("proxy listening"), addr("admin listening")) {
                c.http = h;
                c.admin = a;
                return c;
            }
            assert!(Instant::now() < deadline, "the controller never listened");
            if let Some(Some(status)) = c.child.as_mut().map(|ch| ch.try_wait().ok().flatten()) {
                panic!("the controller exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The first log line matching `pred`.
    pub(crate) fn find(&self, pred: impl Fn(&Value) -> bool) -> Option<(Instant, Value)> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|l| pred(&l.json))
            .map(|l| (l.at, l.json.clone()))
    }

    /// Statuses written so far according to the log ("status updated"
    /// lines), and when the last of those lines was read.
    pub(crate) fn statuses_written(&self) -> (u64, Option<Instant>) {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0;
        let mut last = None;
        for l in log.iter() {
            if l.json["fields"]["message"] == "status updated" {
                total += l.json["fields"]["written"].as_u64().unwrap_or(0);
                last = Some(l.at);
            }
        }
        (total, last)
    }

    /// Waits until the log reports at least `n` statuses written.
    pub(crate) async fn wait_statuses(&self, n: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let (total, last) = self.statuses_written();
            if total >= n {
                return last;
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// (VmRSS, VmHWM) in kB.
    pub(crate) fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// User + system CPU time used so far.
    pub(crate) fn cpu(&self) -> Duration {
        cpu_time(&self.pid.to_string())
    }

    pub(crate) async fn metrics(&self) -> Metrics {
        let mut client = Client::new(self.admin);
        let text = match client.get("admin", "/metrics").await {
            Some((StatusCode::OK, body)) => String::from_utf8_lossy(&body).into_owned(),
            _ => String::new(),
        };
        let sum = |name: &str| -> i64 {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as i64)
                .sum()
        };
        Metrics {
            tables: sum("sluicegate_table_updates_total"),
            endpoints: sum("sluicegate_endpoint_updates_total"),
            status_writes: sum("sluicegate_status_writes_total"),
            watch_errors: sum("sluicegate_watch_errors_total"),
        }
    }

    /// SIGTERM, then waits for the exit (kills after 30 s).
    pub(crate) fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("controller exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("controller did not stop within 30 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// User + system CPU time of process `pid` (or `self`) so far.
pub(crate) fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')':
    // state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// `SLUICEGATE_BENCH_NO_LEASE=1`: run without leader election. The
/// Lease is then never written while the watchers list, so the double
/// serves every page from its current objects instead of rebuilding an
/// older snapshot for each `continue` page (see docs/benchmarks.md).
pub(crate) fn no_lease() -> bool {
    std::env::var("SLUICEGATE_BENCH_NO_LEASE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

pub(crate) fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) tables: i64,
    pub(crate) endpoints: i64,
    pub(crate) status_writes: i64,
    pub(crate) watch_errors: i64,
}

impl std::ops::Sub for Metrics {
    type Output = Metrics;
    fn sub(self, o: Metrics) -> Metrics {
        Metrics {
            tables: self.tables - o.tables,
            endpoints: self.endpoints - o.endpoints,
            status_writes: self.status_writes - o.status_writes,
            watch_errors: self.watch_errors - o.watch_errors,
        }
    }
}

// ---------------------------------------------------------------------
// Formatting

pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub(crate) fn mb(kb: u64) -> String {
    format!("{:.1} MB ({kb} kB)", kb as f64 / 1e3)
}

pub(crate) fn since(start: Instant, at: Option<Instant>) -> String {
    at.map_or("**not reached**".into(), |t| ms(t.duration_since(start)))
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------
// Cold start
