//! Metric names, their labels, and the per-route handles the proxy
//! records into.
//!
//! Labels are bounded by configuration: route and plugin names, Secret
//! names, status classes, listeners; never paths or client addresses.
//! Series that stay idle for [`IDLE_TIMEOUT`] are dropped (by the
//! Prometheus exporter, and by `histogram.rs` for the per-request
//! histograms it keeps), so deleted routes disappear from `/metrics`. Operators who need fewer
//! series drop whole labels with `--metrics-disabled-labels` ([`labels`]).

pub mod ai;
mod cache;
pub mod connections;
mod histogram;
pub mod live;
mod route;

use std::collections::HashSet;
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use histogram::Family;

pub use cache::{CacheMetrics, CacheResult};
pub use route::{PluginMetrics, RouteMetrics};

/// Requests answered, by `route` and `status` class (`2xx`...).
pub const REQUESTS_TOTAL: &str = "sluicegate_requests_total";
/// Counter: requests a plugin answered itself (rate limits, auth), by
/// `route` and `plugin`.
pub const PLUGIN_REJECTIONS: &str = "sluicegate_plugin_rejections_total";
/// Time from receiving the request head to sending the response head.
pub const REQUEST_DURATION: &str = "sluicegate_request_duration_seconds";
/// Route tables published since start.
pub const TABLE_UPDATES: &str = "sluicegate_table_updates_total";
/// Routes in the live table.
pub const TABLE_ROUTES: &str = "sluicegate_table_routes";
/// Diagnostics of the live configuration, by severity.
pub const CONFIG_DIAGNOSTICS: &str = "sluicegate_config_diagnostics";
/// Counter: failed watch requests, by kind (Kubernetes mode).
pub const WATCH_ERRORS: &str = "sluicegate_watch_errors_total";
/// Gauge: 1 while every watcher of a kind has listed and is not failing,
/// by kind.
pub const WATCH_HEALTHY: &str = "sluicegate_watch_healthy";
/// Gauge: seconds since a kind's watchers last delivered an object or a
/// list, by kind.
pub const WATCH_LAST_EVENT_AGE: &str = "sluicegate_watch_last_event_age_seconds";
/// Counter: failed leader election rounds (Kubernetes mode).
pub const LEADER_ELECTION_ERRORS: &str = "sluicegate_leader_election_errors_total";
/// Counter: endpoint sets updated in place, without a table rebuild.
pub const ENDPOINT_UPDATES: &str = "sluicegate_endpoint_updates_total";
/// Counter: DNS lookups of upstream names, by `result` (`ok`, `error`).
pub const DNS_LOOKUPS: &str = "sluicegate_dns_lookups_total";
/// Counter: status writes to the API server, by kind and result.
pub const STATUS_WRITES: &str = "sluicegate_status_writes_total";
/// Counter: attempts sent again to another endpoint, by `route`.
pub const UPSTREAM_RETRIES: &str = "sluicegate_upstream_retries_total";
/// Counter: endpoints ejected by passive health checks.
pub const UPSTREAM_EJECTIONS: &str = "sluicegate_upstream_ejections_total";
/// Gauge: endpoints of an upstream, by `upstream` and `state`:
/// `available` (takes traffic) or `unavailable` (ejected, or failing
/// active checks).
pub const UPSTREAM_ENDPOINTS: &str = "sluicegate_upstream_endpoints";
/// Gauge: requests in flight to an upstream's endpoints, by `upstream`.
pub const UPSTREAM_IN_FLIGHT: &str = "sluicegate_upstream_in_flight";
/// Gauge: requests in flight per endpoint, by `upstream` and `endpoint`
/// (`--metrics-detail full` only).
pub const ENDPOINT_IN_FLIGHT: &str = "sluicegate_endpoint_in_flight";
/// Gauge: 1 while an endpoint takes traffic, 0 while ejected or failing
/// active checks, by `upstream` and `endpoint` (`--metrics-detail full`
/// only).
pub const ENDPOINT_HEALTHY: &str = "sluicegate_endpoint_healthy";
/// Gauge: 1 while this replica holds the leader Lease.
pub const LEADER: &str = "sluicegate_leader";
/// Counter: requests mirrored (`RequestMirror`), by `result`: `sent`,
/// `failed` (no endpoint, or the exchange failed), `skipped_body` (the
/// request had a body) and `dropped` (too many mirrors in flight).
pub const MIRRORED: &str = "sluicegate_mirror_requests_total";

/// Counter: requests on routes with a cache, by `route`, `storage` and
/// `result` (`hit`, `stale`, `miss`, `revalidated`, `collapsed`,
/// `bypass`).
pub const CACHE_REQUESTS: &str = "sluicegate_cache_requests_total";
/// Counter: body bytes stored, by `route` and `storage`.
pub const CACHE_STORED_BYTES: &str = "sluicegate_cache_stored_bytes_total";
/// Counter: entries evicted to stay within a storage's bound, by `route`
/// and `storage`.
pub const CACHE_EVICTIONS: &str = "sluicegate_cache_evictions_total";
/// Counter: stored values found damaged (and removed), by `storage`.
pub const CACHE_CORRUPT: &str = "sluicegate_cache_corrupt_total";
/// Counter: storage calls that failed or timed out, by `storage` and `op`.
pub const CACHE_STORE_ERRORS: &str = "sluicegate_cache_store_errors_total";
/// Gauge: bytes held by a storage of this process, by `storage`.
pub const CACHE_BYTES: &str = "sluicegate_cache_bytes";
/// Gauge: entries held by a storage of this process, by `storage`.
pub const CACHE_ENTRIES: &str = "sluicegate_cache_entries";

/// Series idle this long are removed from the exposition.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Handles older than this are registered again before use.
pub const REFRESH: Duration = Duration::from_secs(120);

/// Histogram buckets for request latency, in seconds: ten, since every
/// bucket is a series per route (1,000 routes make 13,000 lines). Finest
/// where a gateway and its backends usually are (one millisecond is
/// below Prometheus's default buckets), coarse above a second, where a
/// request is slow whatever its exact time; the admin dashboard's live
/// view keeps finer histograms.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Histogram buckets for a plugin's time, in seconds: most plugins take
/// microseconds, those that call out take milliseconds.
pub const PLUGIN_BUCKETS: &[f64] = &[
    0.000_001, 0.000_005, 0.000_025, 0.000_1, 0.000_5, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5,
];
/// Histogram buckets for body sizes, in bytes.
pub const SIZE_BUCKETS: &[f64] = &[0.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1e6, 1e7, 1e8, 1e9];

/// Bytes of request bodies, by `route`.
pub const REQUEST_SIZE: &str = "sluicegate_request_size_bytes";
/// Bytes of response bodies, by `route`.
pub const RESPONSE_SIZE: &str = "sluicegate_response_size_bytes";
/// Time from sending an attempt to its response head, by `route`.
pub const UPSTREAM_DURATION: &str = "sluicegate_upstream_duration_seconds";
/// Counter: attempts on endpoints, by `status` class (`error` for an
/// attempt without a response), and by `route` with full detail.
pub const UPSTREAM_ATTEMPTS: &str = "sluicegate_upstream_attempts_total";
/// Time a plugin took over a request (its request phase, waits for the
/// services it calls included), by `route` and `plugin`.
pub const PLUGIN_DURATION: &str = "sluicegate_plugin_duration_seconds";
/// Counter: what a plugin decided, by `route`, `plugin`, `decision`
/// (`continue`, `answered`) and `status` class of its answer.
pub const PLUGIN_DECISIONS: &str = "sluicegate_plugin_decisions_total";
/// Gauge: client connections open, by `listener` and `protocol`.
pub const CONNECTIONS_ACTIVE: &str = "sluicegate_connections_active";
/// Counter: client connections accepted, by `listener` and `protocol`.
pub const CONNECTIONS_TOTAL: &str = "sluicegate_connections_total";
/// Counter: TLS handshakes, by `result` (`ok`, `failed`, `timeout`,
/// `evicted`: dropped for a newer one at the pending limit) and `resumed`.
pub const TLS_HANDSHAKES: &str = "sluicegate_tls_handshakes_total";
/// Counter: new QUIC connections (HTTP/3), by `result`: `retry` (sent a
/// Retry to validate the client's address), `accepted`, `refused` (at the
/// connection limit).
pub const QUIC_INCOMING: &str = "sluicegate_quic_incoming_total";
/// Gauge: TLS handshakes in progress, all workers together.
pub const TLS_HANDSHAKES_PENDING: &str = "sluicegate_tls_handshakes_pending";
/// Gauge: when a certificate stops being valid, in Unix seconds, by
/// `secret`.
pub const CERTIFICATE_EXPIRY: &str = "sluicegate_certificate_expiry_timestamp_seconds";
/// Gauge: the generation of the live table.
pub const TABLE_GENERATION: &str = "sluicegate_table_generation";
/// Gauge: when the latest table was published, in Unix seconds.
pub const CONFIG_LAST_RELOAD: &str = "sluicegate_config_last_reload_timestamp_seconds";
/// Counter: configuration sources that could not be loaded (a manifest
/// file that does not parse keeps its last good version).
pub const CONFIG_RELOAD_FAILURES: &str = "sluicegate_config_reload_failures_total";
/// Gauge: objects with diagnostics, by `kind` and `reason`.
pub const CONFIG_OBJECTS_WITH_DIAGNOSTICS: &str = "sluicegate_config_objects_with_diagnostics";
/// Gauge: always 1, with the build's `version` and `commit`.
pub const BUILD_INFO: &str = "sluicegate_build_info";
/// Counter: access log lines dropped because the writer fell behind.
pub const ACCESS_LOG_DROPPED: &str = "sluicegate_access_log_dropped_total";

static REQUEST_DURATION_FAMILY: LazyLock<Family> = LazyLock::new(|| {
    Family::seconds(
        REQUEST_DURATION,
        "Time from request head received to response head sent, by route.",
        LATENCY_BUCKETS,
    )
});
static UPSTREAM_DURATION_FAMILY: LazyLock<Family> = LazyLock::new(|| {
    Family::seconds(
        UPSTREAM_DURATION,
        "Time from sending an attempt to an endpoint to its response head (by route with --metrics-detail full).",
        LATENCY_BUCKETS,
    )
});
static PLUGIN_DURATION_FAMILY: LazyLock<Family> = LazyLock::new(|| {
    Family::seconds(
        PLUGIN_DURATION,
        "Time a plugin took over a request, services it called included, by route and plugin.",
        PLUGIN_BUCKETS,
    )
});
static REQUEST_SIZE_FAMILY: LazyLock<Family> =
    LazyLock::new(|| Family::bytes(REQUEST_SIZE, "Request body bytes, by route.", SIZE_BUCKETS));
static RESPONSE_SIZE_FAMILY: LazyLock<Family> = LazyLock::new(|| {
    Family::bytes(
        RESPONSE_SIZE,
        "Response body bytes, by route.",
        SIZE_BUCKETS,
    )
});

/// The per-request histograms, which are kept here rather than by the
/// Prometheus exporter (see `histogram.rs`).
fn families() -> [&'static Family; 5] {
    [
        &PLUGIN_DURATION_FAMILY,
        &REQUEST_DURATION_FAMILY,
        &REQUEST_SIZE_FAMILY,
        &RESPONSE_SIZE_FAMILY,
        &UPSTREAM_DURATION_FAMILY,
    ]
}

/// Appends the per-request histograms to an exposition, after removing
/// their idle series.
pub fn render_histograms(out: &mut String) {
    let now = Instant::now();
    for f in families() {
        f.expire(now);
        f.render(out);
    }
}

/// Removes the idle series of the per-request histograms (the admin
/// port's upkeep calls this between scrapes, as it does the exporter's).
pub fn expire_histograms() {
    let now = Instant::now();
    for f in families() {
        f.expire(now);
    }
}

/// How much per-route detail the histograms carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// Per route: requests, latency, plugin decisions. Sizes, upstream
    /// attempts and latency and plugin time are by plugin (or overall),
    /// not by route: a few series instead of dozens per route, so that
    /// thousands of routes stay a small exposition.
    /// Endpoints are counted per upstream.
    #[default]
    Basic,
    /// Also per route: request and response sizes, upstream attempts and
    /// latency, and each plugin's time; and per endpoint: health and
    /// requests in flight.
    Full,
}

impl std::str::FromStr for Detail {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Ok(Detail::Basic),
            "full" => Ok(Detail::Full),
            _ => Err(format!("expected basic or full, got {s:?}")),
        }
    }
}

static DETAIL: OnceLock<Detail> = OnceLock::new();

/// Sets the detail of series registered afterwards. Set once, at start.
pub fn set_detail(detail: Detail) {
    let _ = DETAIL.set(detail);
}

/// Whether per-route histograms beyond latency are kept.
pub fn full_detail() -> bool {
    DETAIL.get().copied().unwrap_or_default() == Detail::Full
}

/// The labels an operator asked to drop.
fn disabled() -> &'static HashSet<String> {
    DISABLED.get_or_init(HashSet::new)
}

static DISABLED: OnceLock<HashSet<String>> = OnceLock::new();

/// Drops `names` from every series registered afterwards (series that
/// differed only by them merge). Set once, at start.
pub fn disable_labels<I: IntoIterator<Item = String>>(names: I) {
    let _ = DISABLED.set(names.into_iter().collect());
}

/// `pairs` without the labels an operator disabled.
pub fn labels(pairs: &[(&'static str, &str)]) -> Vec<metrics::Label> {
    let off = disabled();
    pairs
        .iter()
        .filter(|(k, _)| off.is_empty() || !off.contains(*k))
        .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
        .collect()
}

/// The status class of a status code, as labels name it.
pub fn class(status: u16) -> &'static str {
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    CLASSES[usize::from((status / 100).clamp(1, 5)) - 1]
}

/// Registers `sluicegate_build_info`.
pub fn build_info() {
    let commit = option_env!("SLUICEGATE_COMMIT").unwrap_or("unknown");
    metrics::gauge!(
        BUILD_INFO,
        labels(&[("version", env!("CARGO_PKG_VERSION")), ("commit", commit)])
    )
    .set(1.0);
}
