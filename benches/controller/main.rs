//! Kubernetes mode: cold start and convergence of the real controller
//! binary against the API-server double.
//!
//! The controller runs as a separate process (`sluicegate controller
//! --workers 1`, the release binary built for this bench) so that its
//! memory can be read from `/proc/PID/status`. The API-server double
//! (`tests/apiserver/`) and a few loopback HTTP backends that answer with
//! their own name run inside this process, on a multi-thread tokio runtime.
//! Everything listens on loopback.
//!
//! Phases:
//!
//! - **cold start**: 5,000 ApiRoutes (one route each, distinct hosts),
//!   5,000 Services and 5,000 EndpointSlices (three ready endpoints each)
//!   are in the double before the controller is spawned. Measured from the
//!   spawn: `/readyz` 200 (polled every 5 ms), the first 200 from a backend
//!   through a route (polled every 5 ms), every ApiRoute carrying a `Ready`
//!   condition (the leader's status writes), RSS and peak RSS.
//! - **convergence**: with 1,000 ApiRoutes present, N times each (default
//!   200): a new ApiRoute (new host) until the proxy serves it; an
//!   EndpointSlice switched to another backend until the proxy's replies
//!   come from it; an ApiRoute's path prefix edited until the new path
//!   serves. The proxy is polled about every millisecond on one keep-alive
//!   connection.
//!
//! ```sh
//! cargo bench --bench controller                 # the full run
//! cargo bench --bench controller -- --quick      # a short run (or SLUICEGATE_BENCH_QUICK=1)
//! cargo bench --bench controller -- cold         # one phase: cold | convergence
//! ```
//!
//! `SLUICEGATE_BENCH_COLD_ROUTES`, `SLUICEGATE_BENCH_ROUTES` and
//! `SLUICEGATE_BENCH_ITERATIONS` override the object counts and the
//! repetitions; `SLUICEGATE_BENCH_NO_LEASE=1` runs the controller without
//! leader election. Without `--bench` (as `cargo test --benches` runs it)
//! a small smoke run checks that everything works and fails on wrong
//! results. The figures and how to read them are in docs/benchmarks.md.

#[path = "../../tests/apiserver/mod.rs"]
mod apiserver;
mod harness;

use std::time::{Duration, Instant};

use apiserver::ApiServer;
use http::StatusCode;

use harness::*;
async fn cold_start(opts: &Options, backends: &[Backend]) {
    let n = opts.cold_routes;
    println!(
        "\n## Cold start: {n} ApiRoutes, {n} Services, {n} EndpointSlices ({ENDPOINTS} endpoints each)\n"
    );
    let api = ApiServer::start().await;
    let loading = Instant::now();
    load(&api, n, backends);
    let loading = loading.elapsed();

    let own_cpu_before = cpu_time("self");
    let ctl = Controller::spawn(&api, "cold");
    let t0 = ctl.spawned;
    let listening = Instant::now();
    let probe = n / 2;
    let expected = backends[initial_backend(probe)].name.clone();
    let (admin, http) = (ctl.admin, ctl.http);
    let every = Duration::from_millis(5);
    let timeout = Duration::from_secs(120);
    let ready = tokio::spawn(async move {
        let mut c = Client::new(admin);
        c.until("admin", "/readyz", every, timeout, |s, _| {
            s == StatusCode::OK
        })
        .await
    });
    let served = tokio::spawn(async move {
        let mut c = Client::new(http);
        c.until(&host(probe), "/p0/cold", every, timeout, |s, b| {
            s == StatusCode::OK && b == expected.as_bytes()
        })
        .await
    });
    let ready = ready.await.expect("readyz task");
    let (rss_ready, _) = ctl.memory();
    let cpu_ready = ctl.cpu();
    let own_cpu_ready = cpu_time("self") - own_cpu_before;
    let served = served.await.expect("route task");
    let synced = ctl
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("every watcher has listed"))
        })
        .map(|(at, _)| at);
    let statuses = ctl.wait_statuses(n as u64, Duration::from_secs(300)).await;
    let (rss_status, _) = ctl.memory();
    let cpu_status = ctl.cpu();
    let own_cpu_status = cpu_time("self") - own_cpu_before;
    let routes = api.list("sluicegate.io/v1alpha1", "ApiRoute");
    let ready_true = routes.iter().filter(|r| has_ready(r) == Some(true)).count();
    let with_ready = routes.iter().filter(|r| has_ready(r).is_some()).count();
    let requests = api.requests();
    let count = |f: &dyn Fn(&apiserver::Recorded) -> bool| requests.iter().filter(|r| f(r)).count();
    let status_patches = count(&|r| r.method == "PATCH" && r.path.ends_with("/status"));
    let lists = count(&|r| r.method == "GET" && !r.is_watch() && r.param("limit").is_some());
    tokio::time::sleep(opts.settle).await;
    let (rss_settled, hwm) = ctl.memory();
    let metrics = ctl.metrics().await;
    ctl.stop();

    println!(
        "Objects loaded into the double in {} (before the spawn); controller listening {} after the spawn; \
         {lists} paginated list requests.\n",
        ms(loading),
        ms(listening.duration_since(t0))
    );
    println!("| measure (from process spawn) | value |");
    println!("|---|---|");
    println!(
        "| every watcher listed (`every watcher has listed` log line) | {} |",
        since(t0, synced)
    );
    println!(
        "| `/readyz` 200 (polled every 5 ms) | **{}** |",
        since(t0, ready.map(|r| r.at))
    );
    if let Some(r) = ready {
        println!(
            "| … round trip of that `/readyz` request / slowest `/readyz` poll | {} / {} |",
            ms(r.rtt),
            ms(r.max_rtt)
        );
    }
    println!(
        "| first 200 from a backend through a route (polled every 5 ms) | {} |",
        since(t0, served.map(|r| r.at))
    );
    println!(
        "| all {n} ApiRoute statuses written (`status updated` log line) | {} |",
        since(t0, statuses)
    );
    println!(
        "| ApiRoutes with a `Ready` condition / `Ready=True` (read back from the double) | {with_ready} / {ready_true} of {} |",
        routes.len()
    );
    println!("| status PATCH requests received by the double | {status_patches} |");
    println!(
        "| controller CPU time (user+sys) until ready / until statuses written | {} / {} |",
        ms(cpu_ready),
        ms(cpu_status)
    );
    println!(
        "| bench process CPU time (the double, backends, pollers) over the same spans | {} / {} |",
        ms(own_cpu_ready),
        ms(own_cpu_status)
    );
    println!("| VmRSS at ready | **{}** |", mb(rss_ready));
    println!(
        "| VmRSS when the statuses are written | {} |",
        mb(rss_status)
    );
    println!(
        "| VmRSS {} s later (settled) | **{}** |",
        opts.settle.as_secs_f64(),
        mb(rss_settled)
    );
    println!("| VmHWM (peak RSS) | **{}** |", mb(hwm));
    println!(
        "| tables published / in-place endpoint updates / status writes / watch errors (`/metrics`) | {} / {} / {} / {} |",
        metrics.tables, metrics.endpoints, metrics.status_writes, metrics.watch_errors
    );
    if opts.smoke {
        assert!(ready.is_some(), "/readyz never returned 200");
        assert!(served.is_some(), "the probed route never served");
        assert_eq!(ready_true, n, "ApiRoutes with Ready=True");
    }
    let ready_in = ready.map(|r| r.at.duration_since(t0));
    println!(
        "\nTargets: ready in under 5 s: {}; RSS under 150 MB: {}",
        match ready_in {
            Some(d) if d < Duration::from_secs(5) => "met",
            _ => "NOT met",
        },
        if hwm.max(rss_settled) < 150_000 {
            "met"
        } else {
            "NOT met"
        }
    );
}

// ---------------------------------------------------------------------
// Convergence

/// One change, already applied: what to poll for.
struct Change {
    host: String,
    path: String,
    /// The backend name the reply must carry.
    expected: String,
}

struct Series {
    name: &'static str,
    samples: Vec<Duration>,
    failed: usize,
    /// Requests sent after convergence, and how many of them got a reply
    /// that did not match (old backend, 404).
    rechecked: usize,
    stale: usize,
    polls: usize,
    metrics: Metrics,
    cpu: Duration,
}

impl Series {
    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s
    }

    fn row(&self) -> String {
        let s = self.sorted();
        format!(
            "| {} | {} | {} | {} | **{}** | {} | {} | {} / {} | {} |",
            self.name,
            s.len(),
            ms(percentile(&s, 50.0)),
            ms(percentile(&s, 90.0)),
            ms(percentile(&s, 99.0)),
            ms(s.last().copied().unwrap_or_default()),
            self.failed,
            self.metrics.tables,
            self.metrics.endpoints,
            ms(self.cpu / self.samples.len().max(1) as u32),
        )
    }
}

/// A pause between iterations, 30–69 ms, so that a change lands at
/// varying phases of the controller's periodic work (bookmarks, Lease
/// renewals).
fn gap(k: usize) -> Duration {
    Duration::from_millis(30 + (k * 17 % 40) as u64)
}

/// Makes `iters` changes with `change` (which applies change `k` to the
/// double) and times each until the proxy's reply matches. With
/// `recheck`, a few more requests after convergence must match too.
async fn series(
    name: &'static str,
    ctl: &Controller,
    proxy: &mut Client,
    iters: usize,
    recheck: usize,
    mut change: impl FnMut(usize) -> Change,
) -> Series {
    let poll = Duration::from_millis(1);
    let metrics = ctl.metrics().await;
    let cpu = ctl.cpu();
    let mut s = Series {
        name,
        samples: Vec::new(),
        failed: 0,
        rechecked: 0,
        stale: 0,
        polls: 0,
        metrics: Metrics::default(),
        cpu: Duration::ZERO,
    };
    for k in 0..iters {
        let t = Instant::now();
        let c = change(k);
        let ok = |st: StatusCode, b: &[u8]| st == StatusCode::OK && b == c.expected.as_bytes();
        match proxy
            .until(&c.host, &c.path, poll, CONVERGE_TIMEOUT, ok)
            .await
        {
            Some(p) => {
                s.samples.push(p.at.duration_since(t));
                s.polls += p.polls;
            }
            None => s.failed += 1,
        }
        for _ in 0..recheck {
            s.rechecked += 1;
            match proxy.get(&c.host, &c.path).await {
                Some((st, b)) if ok(st, &b) => {}
                _ => s.stale += 1,
            }
        }
        tokio::time::sleep(gap(k)).await;
    }
    s.cpu = ctl.cpu() - cpu;
    s.metrics = ctl.metrics().await - metrics;
    s
}

async fn convergence(opts: &Options, backends: &[Backend]) {
    let n = opts.routes;
    let iters = opts.iterations;
    println!(
        "\n## Convergence: {n} ApiRoutes, {n} Services, {n} EndpointSlices present; {iters} changes of each kind\n"
    );
    let api = ApiServer::start().await;
    load(&api, n, backends);
    let ctl = Controller::spawn(&api, "convergence");
    let mut admin = Client::new(ctl.admin);
    admin
        .until(
            "admin",
            "/readyz",
            Duration::from_millis(5),
            Duration::from_secs(120),
            |s, _| s == StatusCode::OK,
        )
        .await
        .expect("the controller never got ready");
    // Start measuring once the first round of status writes is over.
    ctl.wait_statuses(n as u64, Duration::from_secs(300))
        .await
        .expect("statuses never written");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut proxy = Client::new(ctl.http);
    // The detection floor: one request round trip on a warm connection.
    let mut rtt = Vec::new();
    for k in 0..200 {
        let t = Instant::now();
        let r = proxy.get(&host(k % n), "/p0/rtt").await;
        assert!(
            matches!(&r, Some((StatusCode::OK, _))),
            "route {} does not serve: {r:?}",
            k % n
        );
        rtt.push(t.elapsed());
    }
    rtt.sort();
    let name = |b: usize| backends[b].name.clone();
    let mut on: Vec<usize> = (0..n).map(initial_backend).collect();
    let mut all = Vec::new();

    // 1. A new ApiRoute with a new host, onto an existing Service.
    all.push(
        series(
            "new ApiRoute (new host) → 200",
            &ctl,
            &mut proxy,
            iters,
            0,
            |k| {
                let i = (k * 7 + 1) % n;
                let h = format!("new-{k:04}.{}.example.com", namespace(i));
                api.apply(api_route(&format!("new-{k:04}"), i, &h, "/"));
                Change {
                    host: h,
                    path: "/new".into(),
                    expected: name(on[i]),
                }
            },
        )
        .await,
    );

    // 2. A Service's EndpointSlice switched to another backend (another
    // port on the same three addresses). Afterwards, two rounds over the
    // three endpoints must all come from the new backend.
    all.push(
        series(
            "EndpointSlice → other backend → its reply",
            &ctl,
            &mut proxy,
            iters,
            usize::from(ENDPOINTS) * 2,
            |k| {
                let i = (k * 11 + 2) % n;
                on[i] = (on[i] + 1) % BACKENDS;
                api.apply(slice(i, &backends[on[i]]));
                Change {
                    host: host(i),
                    path: "/p0/eps".into(),
                    expected: name(on[i]),
                }
            },
        )
        .await,
    );

    // 3. An existing ApiRoute's path prefix edited.
    all.push(
        series(
            "ApiRoute path prefix edited → new path 200",
            &ctl,
            &mut proxy,
            iters,
            0,
            |k| {
                let i = (k * 13 + 3) % n;
                api.apply(api_route(&route_name(i), i, &host(i), &format!("/e{k}")));
                Change {
                    host: host(i),
                    path: format!("/e{k}/x"),
                    expected: name(on[i]),
                }
            },
        )
        .await,
    );

    let (rss, hwm) = ctl.memory();
    let total = ctl.metrics().await;
    ctl.stop();

    let polls: usize = all.iter().map(|s| s.polls).sum();
    let samples: usize = all.iter().map(|s| s.samples.len()).sum();
    println!(
        "Time from `apply` in the double to the first matching reply. The proxy is polled on one keep-alive \
         connection with a 1 ms tokio sleep between requests ({:.1} requests per change on average); \
         one request's round trip (the detection floor): p50 {}, p99 {}.\n",
        polls as f64 / samples.max(1) as f64,
        ms(percentile(&rtt, 50.0)),
        ms(percentile(&rtt, 99.0))
    );
    println!(
        "| change | n | p50 | p90 | p99 | max | failed (>10 s) | tables published / endpoint updates | controller CPU per change |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in &all {
        println!("{}", s.row());
    }
    let (rechecked, stale) = (all[1].rechecked, all[1].stale);
    println!(
        "\nAfter each EndpointSlice switch had converged, {rechecked} more requests were sent: {stale} did not come from the new backend."
    );
    println!(
        "Since start: {} tables published, {} in-place endpoint updates, {} status writes, {} watch errors.",
        total.tables, total.endpoints, total.status_writes, total.watch_errors
    );
    println!(
        "Controller VmRSS after the series: {}, VmHWM: {}",
        mb(rss),
        mb(hwm)
    );
    if opts.smoke {
        for s in &all {
            assert_eq!((s.failed, s.stale), (0, 0), "{}: failed, stale", s.name);
        }
    }
    let met = all
        .iter()
        .all(|s| s.failed == 0 && percentile(&s.sorted(), 99.0) < Duration::from_millis(100));
    println!(
        "Target p99 under 100 ms for every kind: {}",
        if met { "met" } else { "NOT met" }
    );
}

// ---------------------------------------------------------------------

fn main() {
    let opts = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!(
            "# sluicegate controller benchmark ({} run; binary {})",
            opts.mode,
            env!("CARGO_BIN_EXE_sluicegate")
        );
        println!(
            "cold start: {} ApiRoutes; convergence: {} ApiRoutes, {} changes of each kind; {} CPUs; leader election {}",
            opts.cold_routes,
            opts.routes,
            opts.iterations,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if no_lease() { "off" } else { "on (Lease)" }
        );
        let mut backends = Vec::new();
        for b in 0..BACKENDS {
            backends.push(backend(&format!("backend-{b}")).await);
        }
        if opts.cold {
            cold_start(&opts, &backends).await;
        }
        if opts.convergence {
            convergence(&opts, &backends).await;
        }
    });
}
