//! Metric names and the per-route handles the proxy records into.
//!
//! Labels are bounded by configuration: route names and status classes,
//! never paths or client addresses. The Prometheus exporter drops series
//! that stay idle for [`IDLE_TIMEOUT`], so deleted routes disappear from
//! `/metrics`. Handles are registered lazily and re-registered when older
//! than [`REFRESH`], which is shorter than the idle timeout: a route that
//! was idle long enough to be dropped gets a fresh series instead of
//! counting into a handle the exporter no longer reads.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use metrics::{Counter, Histogram};

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
/// Gauge: requests in flight per endpoint, by `upstream` and `endpoint`.
pub const ENDPOINT_IN_FLIGHT: &str = "sluicegate_endpoint_in_flight";
/// Gauge: 1 while an endpoint takes traffic, 0 while ejected or failing
/// active checks, by `upstream` and `endpoint`.
pub const ENDPOINT_HEALTHY: &str = "sluicegate_endpoint_healthy";
/// Gauge: 1 while this replica holds the leader Lease.
pub const LEADER: &str = "sluicegate_leader";

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

/// Histogram buckets for request latency, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

struct Handles {
    /// Registered on first use, so a route that never answers 1xx has no
    /// 1xx series.
    by_class: [OnceLock<Counter>; 5],
    duration: Histogram,
    registered_at: u64,
}

/// Lazily registered metrics of one route.
pub struct RouteMetrics {
    route: Arc<str>,
    handles: ArcSwapOption<Handles>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish()
    }
}

impl RouteMetrics {
    pub fn new(route: Arc<str>) -> Self {
        RouteMetrics {
            route,
            handles: ArcSwapOption::empty(),
        }
    }

    /// Records one response.
    pub fn record(&self, status: u16, elapsed: Duration, now: Instant) {
        let now_s = now.saturating_duration_since(epoch()).as_secs();
        let guard = self.handles.load();
        let handles = match guard.as_deref() {
            Some(h) if now_s.saturating_sub(h.registered_at) < REFRESH.as_secs() => h,
            _ => {
                drop(guard);
                self.register(now_s);
                if let Some(h) = self.handles.load().as_deref() {
                    self.count(h, status, elapsed);
                }
                return;
            }
        };
        self.count(handles, status, elapsed);
    }

    fn count(&self, h: &Handles, status: u16, elapsed: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        h.by_class[class]
            .get_or_init(|| metrics::counter!(REQUESTS_TOTAL, "route" => self.route.to_string(), "status" => CLASSES[class]))
            .increment(1);
        h.duration.record(elapsed.as_secs_f64());
    }

    /// Concurrent registrations are harmless: the registry hands every
    /// caller the same series.
    fn register(&self, now_s: u64) {
        let duration = metrics::histogram!(REQUEST_DURATION, "route" => self.route.to_string());
        self.handles.store(Some(Arc::new(Handles {
            by_class: Default::default(),
            duration,
            registered_at: now_s,
        })));
    }
}

/// How the cache handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Answered from a fresh entry.
    Hit,
    /// Answered from a stale entry (`stale-while-revalidate`,
    /// `stale-if-error`).
    Stale,
    /// Forwarded: nothing usable stored.
    Miss,
    /// A stale entry the upstream confirmed (`304`).
    Revalidated,
    /// Answered with another request's upstream response.
    Collapsed,
    /// Not handled by the cache (method, `bypass`).
    Bypass,
}

const RESULTS: [&str; 6] = ["hit", "stale", "miss", "revalidated", "collapsed", "bypass"];

impl CacheResult {
    fn index(self) -> usize {
        match self {
            CacheResult::Hit => 0,
            CacheResult::Stale => 1,
            CacheResult::Miss => 2,
            CacheResult::Revalidated => 3,
            CacheResult::Collapsed => 4,
            CacheResult::Bypass => 5,
        }
    }
}

struct CacheHandles {
    results: [OnceLock<Counter>; 6],
    stored: OnceLock<Counter>,
    registered_at: u64,
}

/// Lazily registered cache metrics of one route, refreshed like
/// [`RouteMetrics`].
pub struct CacheMetrics {
    route: Arc<str>,
    storage: &'static str,
    handles: ArcSwapOption<CacheHandles>,
}

impl std::fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("route", &self.route)
            .field("storage", &self.storage)
            .finish()
    }
}

impl CacheMetrics {
    pub fn new(route: Arc<str>, storage: &'static str) -> Self {
        CacheMetrics {
            route,
            storage,
            handles: ArcSwapOption::empty(),
        }
    }

    fn handles(&self) -> Arc<CacheHandles> {
        let now_s = Instant::now().saturating_duration_since(epoch()).as_secs();
        if let Some(h) = self.handles.load_full()
            && now_s.saturating_sub(h.registered_at) < REFRESH.as_secs()
        {
            return h;
        }
        let h = Arc::new(CacheHandles {
            results: Default::default(),
            stored: OnceLock::new(),
            registered_at: now_s,
        });
        self.handles.store(Some(h.clone()));
        h
    }

    /// Counts one request.
    pub fn record(&self, result: CacheResult) {
        let h = self.handles();
        let i = result.index();
        h.results[i]
            .get_or_init(|| {
                metrics::counter!(
                    CACHE_REQUESTS,
                    "route" => self.route.to_string(),
                    "storage" => self.storage,
                    "result" => RESULTS[i]
                )
            })
            .increment(1);
    }

    /// Counts `bytes` of body stored.
    pub fn stored(&self, bytes: u64) {
        self.handles()
            .stored
            .get_or_init(|| {
                metrics::counter!(
                    CACHE_STORED_BYTES,
                    "route" => self.route.to_string(),
                    "storage" => self.storage
                )
            })
            .increment(bytes);
    }
}
