//! Route matching and table compilation.
//!
//! Inputs are generated as YAML manifests and parsed with the standalone
//! source's parser, so they go through the same path as real
//! configuration: ApiRoutes, each with its own Service and EndpointSlice,
//! spread over many hosts (ten routes per host) with paths of the shape
//! real APIs have (`/api/v2/orders`, `/static/assets`, `/healthz`), some
//! with method or header conditions and a higher-priority canary route.
//!
//! Groups:
//! - `match/<routes>/<case>`: `RouteTable::find` on a prebuilt table, for a
//!   hit on a host in the middle of the host list, an exact-path hit, a
//!   miss on an unknown host and a miss on a known host;
//! - `match/<routes>/hit_normalized`: the same hit, including the host and
//!   path normalization the proxy does before matching;
//! - `match_gateway_api/<routes>/<case>`: the same rules as HTTPRoutes
//!   attached to a Gateway listener, on the proxy's own port (`shared`) and
//!   on a port of the listener's own (`own_port`), for the same requests:
//!   a route of the Gateway API must cost what an ApiRoute costs;
//! - `compile/10000/*`: `translate()` of the cluster state, `RouteTable::build`
//!   of its result against a registry that already holds the upstreams (a
//!   reload), the same build against an empty registry (first start), and
//!   translate and build together; `parse` is the YAML parsing that
//!   standalone mode does before them (files of 300 ApiRoutes each).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use sluicegate::routing::{
    EncodedSlashes, RequestView, RouteTable, UpstreamRegistry, normalize_host, normalize_path,
};
use sluicegate::source::manifest::state_from_str;
use sluicegate::translate::{ClusterState, TranslateOptions, translate};

/// Routes per host; route `i` belongs to host `i / ROUTES_PER_HOST`.
const ROUTES_PER_HOST: usize = 10;

fn host(h: usize) -> String {
    format!("app-{h:05}.team-{:02}.example.com", h % 50)
}

fn namespace(h: usize) -> String {
    format!("team-{:02}", h % 50)
}

/// The `match` block of route slot `slot` (0..ROUTES_PER_HOST) and its priority.
fn slot(slot: usize) -> (&'static str, i32) {
    match slot {
        0 => ("paths: [{type: Prefix, value: /api/v1/users}]", 0),
        1 => ("paths: [{type: Prefix, value: /api/v1/orders}]", 0),
        2 => ("paths: [{type: Prefix, value: /api/v2/orders}]", 0),
        3 => ("paths: [{type: Prefix, value: /api/v2/carts}]", 0),
        4 => ("paths: [{type: Prefix, value: /api/v2/payments}]", 0),
        5 => ("paths: [{type: Exact, value: /healthz}]", 0),
        6 => ("paths: [{type: Prefix, value: /static/assets}]", 0),
        7 => ("paths: [{type: Prefix, value: /auth/oauth/token}]", 0),
        8 => (
            "paths: [{type: Prefix, value: /api/v1/inventory}]\n        methods: [GET, POST]",
            0,
        ),
        // A canary in front of slot 2: same prefix, header condition.
        _ => (
            "paths: [{type: Prefix, value: /api/v2/orders}]\n        headers: [{name: x-canary, type: Exact, value: \"1\"}]",
            10,
        ),
    }
}

/// ApiRoutes per manifest file: the YAML parser accepts at most 1024
/// documents per file, and each ApiRoute comes with two more objects.
const ROUTES_PER_FILE: usize = 300;

/// Manifest files for `n` ApiRoutes, each with one route, one Service and
/// one EndpointSlice of three ready endpoints.
fn manifests(n: usize) -> Vec<String> {
    (0..n)
        .step_by(ROUTES_PER_FILE)
        .map(|start| manifest_file(start..(start + ROUTES_PER_FILE).min(n)))
        .collect()
}

fn manifest_file(routes: std::ops::Range<usize>) -> String {
    let mut y = String::with_capacity(routes.len() * 900);
    for i in routes {
        let h = i / ROUTES_PER_HOST;
        let (m, priority) = slot(i % ROUTES_PER_HOST);
        let ns = namespace(h);
        let hostname = host(h);
        let (a, b) = ((i >> 8) & 0xff, i & 0xff);
        let _ = write!(
            y,
            "\
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: r-{i:05}, namespace: {ns}}}
spec:
  hosts: [{hostname}]
  routes:
  - name: main
    priority: {priority}
    match:
        {m}
    backends:
    - {{serviceName: svc-{i:05}, servicePort: http}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc-{i:05}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i:05}-x7k2p
  namespace: {ns}
  labels: {{kubernetes.io/service-name: svc-{i:05}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- {{addresses: [10.{a}.{b}.1], conditions: {{ready: true}}}}
- {{addresses: [10.{a}.{b}.2], conditions: {{ready: true}}}}
- {{addresses: [10.{a}.{b}.3], conditions: {{ready: true}}}}
---
"
        );
    }
    y
}

/// The Gateway API `match` of route slot `slot`, as in [`slot`]; the
/// canary's header condition makes it more specific than slot 2 without a
/// priority, and slot 8's two methods are two matches.
fn gateway_slot(slot: usize) -> &'static str {
    match slot {
        0 => "[{path: {type: PathPrefix, value: /api/v1/users}}]",
        1 => "[{path: {type: PathPrefix, value: /api/v1/orders}}]",
        2 => "[{path: {type: PathPrefix, value: /api/v2/orders}}]",
        3 => "[{path: {type: PathPrefix, value: /api/v2/carts}}]",
        4 => "[{path: {type: PathPrefix, value: /api/v2/payments}}]",
        5 => "[{path: {type: Exact, value: /healthz}}]",
        6 => "[{path: {type: PathPrefix, value: /static/assets}}]",
        7 => "[{path: {type: PathPrefix, value: /auth/oauth/token}}]",
        8 => {
            "[{path: {type: PathPrefix, value: /api/v1/inventory}, method: GET}, {path: {type: PathPrefix, value: /api/v1/inventory}, method: POST}]"
        }
        _ => {
            "[{path: {type: PathPrefix, value: /api/v2/orders}, headers: [{name: x-canary, type: Exact, value: \"1\"}]}]"
        }
    }
}

/// The listener ports of the Gateway the HTTPRoutes attach to: the proxy's
/// own HTTP port (shared with ApiRoutes) and one of its own.
const SHARED_PORT: u16 = 8080;
const OWN_PORT: u16 = 9080;

/// [`manifests`] with HTTPRoutes instead of ApiRoutes, attached to both
/// listeners of Gateway `infra/edge`, which comes first.
fn gateway_manifests(n: usize) -> Vec<String> {
    let mut files: Vec<String> = (0..n)
        .step_by(ROUTES_PER_FILE)
        .map(|start| {
            manifest_file(start..(start + ROUTES_PER_FILE).min(n))
                .split("---\n")
                .filter(|doc| !doc.contains("kind: ApiRoute"))
                .collect::<Vec<_>>()
                .join("---\n")
        })
        .collect();
    for (f, start) in files.iter_mut().zip((0..n).step_by(ROUTES_PER_FILE)) {
        for i in start..(start + ROUTES_PER_FILE).min(n) {
            let h = i / ROUTES_PER_HOST;
            let _ = write!(
                f,
                "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r-{i:05}, namespace: {ns}}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  hostnames: [{hostname}]
  rules:
  - matches: {m}
    backendRefs: [{{name: svc-{i:05}, port: 80}}]
",
                ns = namespace(h),
                hostname = host(h),
                m = gateway_slot(i % ROUTES_PER_HOST),
            );
        }
    }
    files.insert(
        0,
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluicegate}}
spec: {{controllerName: sluicegate.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: infra}}
spec:
  gatewayClassName: sluicegate
  listeners:
  - {{name: shared, port: {SHARED_PORT}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: own, port: {OWN_PORT}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
"
        ),
    );
    files
}

fn gateway_state(n: usize) -> ClusterState {
    let mut state = ClusterState::default();
    for text in gateway_manifests(n) {
        let s = state_from_str(&text).expect("generated manifests parse");
        state.gateway_classes.extend(s.gateway_classes);
        state.gateways.extend(s.gateways);
        state.http_routes.extend(s.http_routes);
        state.services.extend(s.services);
        state.endpoint_slices.extend(s.endpoint_slices);
    }
    assert_eq!(state.http_routes.len(), n);
    state
}

/// Parses the files and merges them, as the standalone source does.
fn parse(files: &[String]) -> ClusterState {
    let mut state = ClusterState::default();
    for text in files {
        let s = state_from_str(text).expect("generated manifests parse");
        state.api_routes.extend(s.api_routes);
        state.services.extend(s.services);
        state.endpoint_slices.extend(s.endpoint_slices);
    }
    state
}

fn state(n: usize) -> ClusterState {
    let state = parse(&manifests(n));
    assert_eq!(state.api_routes.len(), n);
    assert_eq!(state.endpoint_slices.len(), n);
    state
}

fn table(state: &ClusterState) -> RouteTable {
    let t = translate(state, &TranslateOptions::default());
    assert!(
        t.diagnostics.is_empty(),
        "generated manifests have problems: {:?}",
        t.diagnostics
    );
    RouteTable::build(&t.table, &UpstreamRegistry::new())
}

fn bench_match(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let get = Method::GET;
    let mut group = c.benchmark_group("match");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [100, 10_000] {
        let table = table(&state(n));
        assert_eq!(table.len(), n);
        let middle = host(n / ROUTES_PER_HOST / 2);
        let view = |host: &'static str, path: &'static str| RequestView {
            host,
            path,
            query: Some("page=2&sort=desc"),
            method: &get,
            headers: &headers,
            port: 0,
        };
        let middle: &'static str = Box::leak(middle.into_boxed_str());
        let cases = [
            // Passes the canary (its header is absent) and lands on slot 2.
            ("hit_prefix", view(middle, "/api/v2/orders/8812"), true),
            ("hit_exact", view(middle, "/healthz"), true),
            (
                "miss_host",
                view("unknown.example.org", "/api/v2/orders/8812"),
                false,
            ),
            ("miss_path", view(middle, "/api/v3/orders/8812"), false),
        ];
        for (name, req, hit) in cases {
            assert_eq!(table.find(&req).is_some(), hit, "{name} at {n}");
            group.bench_with_input(BenchmarkId::new(n.to_string(), name), &req, |b, req| {
                b.iter(|| table.find(black_box(req)).map(|r| r.name.len()))
            });
        }
        // As the proxy does it: normalize the Host header and the path first.
        let raw_host = format!("{middle}:443");
        group.bench_function(BenchmarkId::new(n.to_string(), "hit_normalized"), |b| {
            b.iter(|| {
                let mut buf = [0u8; 256];
                let host = normalize_host(black_box(&raw_host), &mut buf)?;
                let path =
                    normalize_path(black_box("/api/v2/orders/8812"), EncodedSlashes::Keep).ok()?;
                let req = RequestView {
                    host,
                    path: &path,
                    query: Some("page=2&sort=desc"),
                    method: &get,
                    headers: &headers,
                    port: 0,
                };
                table.find(&req).map(|r| r.name.len())
            })
        });
    }
    group.finish();
}

fn bench_compile(c: &mut Criterion) {
    const N: usize = 10_000;
    let files = manifests(N);
    let state = parse(&files);
    assert_eq!(state.api_routes.len(), N);
    let opts = TranslateOptions::default();
    let spec = translate(&state, &opts).table;
    assert_eq!(spec.routes.len(), N);
    // A registry that already holds every upstream, as on a reload.
    let registry = UpstreamRegistry::new();
    drop(RouteTable::build(&spec, &registry));

    let mut group = c.benchmark_group("compile");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let id = |what: &str| BenchmarkId::new(N.to_string(), what);
    group.bench_function(id("translate"), |b| {
        b.iter(|| translate(black_box(&state), &opts))
    });
    group.bench_function(id("build"), |b| {
        b.iter(|| RouteTable::build(black_box(&spec), &registry))
    });
    group.bench_function(id("build_cold"), |b| {
        b.iter(|| RouteTable::build(black_box(&spec), &UpstreamRegistry::new()))
    });
    // What delays a new table: translating and building. The publisher
    // frees the previous generation on a background thread, so freeing is
    // measured apart, in `translate_build_free`.
    group.bench_function(id("translate_and_build"), |b| {
        b.iter_with_large_drop(|| {
            let t = translate(black_box(&state), &opts);
            let table = RouteTable::build(&t.table, &registry);
            (t, table)
        })
    });
    group.bench_function(id("translate_build_free"), |b| {
        b.iter(|| {
            let t = translate(black_box(&state), &opts);
            RouteTable::build(&t.table, &registry)
        })
    });
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function(id("parse"), |b| b.iter(|| parse(black_box(&files)).len()));
    group.finish();
}

fn bench_match_gateway_api(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let get = Method::GET;
    let mut group = c.benchmark_group("match_gateway_api");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [100, 10_000] {
        let table = table(&gateway_state(n));
        let middle: &'static str = Box::leak(host(n / ROUTES_PER_HOST / 2).into_boxed_str());
        for (listener, port) in [("shared", SHARED_PORT), ("own_port", OWN_PORT)] {
            let view = |host: &'static str, path: &'static str| RequestView {
                host,
                path,
                query: Some("page=2&sort=desc"),
                method: &get,
                headers: &headers,
                port,
            };
            let cases = [
                ("hit_prefix", view(middle, "/api/v2/orders/8812"), true),
                ("hit_exact", view(middle, "/healthz"), true),
                (
                    "miss_host",
                    view("unknown.example.org", "/api/v2/orders/8812"),
                    false,
                ),
                ("miss_path", view(middle, "/api/v3/orders/8812"), false),
            ];
            for (name, req, hit) in cases {
                assert_eq!(
                    table.find(&req).is_some(),
                    hit,
                    "{name} at {n} on {listener}"
                );
                let id = BenchmarkId::new(format!("{n}/{listener}"), name);
                group.bench_with_input(id, &req, |b, req| {
                    b.iter(|| table.find(black_box(req)).map(|r| r.name.len()))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_match, bench_match_gateway_api, bench_compile);
criterion_main!(benches);
