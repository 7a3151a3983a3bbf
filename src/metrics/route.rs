//! The per-route handles the proxy records into, and those of each plugin
//! on a route.
//!
//! Handles are registered lazily and re-registered when older than
//! [`REFRESH`], which is shorter than the exporter's idle timeout: a route
//! that was idle long enough to be dropped gets a fresh series instead of
//! counting into a handle the exporter no longer reads. Recording is then
//! an atomic operation on a handle held here, with no lookup by name.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use metrics::Counter;

use super::histogram::Histogram;
use super::{
    PLUGIN_DECISIONS, PLUGIN_DURATION_FAMILY, REFRESH, REQUEST_DURATION_FAMILY,
    REQUEST_SIZE_FAMILY, REQUESTS_TOTAL, RESPONSE_SIZE_FAMILY, UPSTREAM_ATTEMPTS,
    UPSTREAM_DURATION_FAMILY, class, full_detail, labels,
};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(super) fn seconds(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_secs()
}

/// Whether handles registered at `registered_at` are still in use at
/// `now_s` (both from [`seconds`]), or must be registered again.
pub(super) fn fresh(registered_at: u64, now_s: u64) -> bool {
    now_s.saturating_sub(registered_at) < REFRESH.as_secs()
}

/// Status-class counters, each registered on first use, so a route that
/// never answers 1xx has no 1xx series. Index 5 is "no status" (an error).
type ByClass = [OnceLock<Counter>; 6];

fn class_index(status: Option<u16>) -> (usize, &'static str) {
    match status {
        Some(s) => (usize::from((s / 100).clamp(1, 5)) - 1, class(s)),
        None => (5, "error"),
    }
}

struct Handles {
    requests: ByClass,
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
    upstream: Histogram,
    attempts: ByClass,
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

    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// The handles, registered again when they are old.
    fn with(&self, now: Instant, f: impl FnOnce(&Handles)) {
        let now_s = seconds(now);
        let guard = self.handles.load();
        if let Some(h) = guard.as_deref()
            && fresh(h.registered_at, now_s)
        {
            return f(h);
        }
        drop(guard);
        self.register(now_s);
        if let Some(h) = self.handles.load().as_deref() {
            f(h);
        }
    }

    /// Records one response.
    pub fn record(&self, status: u16, elapsed: Duration, now: Instant) {
        self.with(now, |h| {
            self.count(&h.requests, REQUESTS_TOTAL, Some(status), true);
            h.duration.record_duration(elapsed);
        });
    }

    /// Records the sizes of a request's body and of its response's, once
    /// the response was sent: both at once, with one load of the handles.
    pub fn sizes(&self, request_bytes: u64, response_bytes: u64, now: Instant) {
        self.with(now, |h| {
            h.request_size.record(request_bytes);
            h.response_size.record(response_bytes);
        });
    }

    /// Records one attempt on an endpoint: the status of its answer, or
    /// none when it failed without one, and the time to its head.
    pub fn attempt(&self, status: Option<u16>, elapsed: Duration, now: Instant) {
        self.with(now, |h| {
            // Like the upstream time, by route only with full detail.
            self.count(&h.attempts, UPSTREAM_ATTEMPTS, status, full_detail());
            if status.is_some() {
                h.upstream.record_duration(elapsed);
            }
        });
    }

    fn count(&self, counters: &ByClass, name: &'static str, status: Option<u16>, by_route: bool) {
        let (i, class) = class_index(status);
        counters[i]
            .get_or_init(|| {
                let pairs: &[(&str, &str)] = if by_route {
                    &[("route", &self.route), ("status", class)]
                } else {
                    &[("status", class)]
                };
                metrics::counter!(name, labels(pairs))
            })
            .increment(1);
    }

    /// Concurrent registrations are harmless: the registry hands every
    /// caller the same series.
    fn register(&self, now_s: u64) {
        let route = labels(&[("route", &self.route)]);
        // Without full detail these are one series for every route.
        let detail = if full_detail() {
            route.clone()
        } else {
            Vec::new()
        };
        self.handles.store(Some(Arc::new(Handles {
            requests: Default::default(),
            duration: REQUEST_DURATION_FAMILY.series(route),
            request_size: REQUEST_SIZE_FAMILY.series(detail.clone()),
            response_size: RESPONSE_SIZE_FAMILY.series(detail.clone()),
            upstream: UPSTREAM_DURATION_FAMILY.series(detail),
            attempts: Default::default(),
            registered_at: now_s,
        })));
    }
}

struct PluginHandles {
    duration: Histogram,
    /// `continue`, then `answered` by status class.
    decisions: [OnceLock<Counter>; 6],
    registered_at: u64,
}

/// Lazily registered metrics of one plugin on one route: its cost and
/// its decisions.
pub struct PluginMetrics {
    route: Arc<str>,
    plugin: &'static str,
    handles: ArcSwapOption<PluginHandles>,
}

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetrics")
            .field("route", &self.route)
            .field("plugin", &self.plugin)
            .finish()
    }
}

impl PluginMetrics {
    pub fn new(route: Arc<str>, plugin: &'static str) -> Self {
        PluginMetrics {
            route,
            plugin,
            handles: ArcSwapOption::empty(),
        }
    }

    /// Records one request phase: its time, and the status it answered
    /// with, if it did; in the Prometheus series and in the admin
    /// dashboard's live view, which shows each plugin per route whatever
    /// the `--metrics-detail`.
    pub fn record(&self, elapsed: Duration, answered: Option<u16>, now: Instant) {
        super::live::record_plugin(&self.route, self.plugin, elapsed, answered, now);
        self.record_series(elapsed, answered, now);
    }

    fn record_series(&self, elapsed: Duration, answered: Option<u16>, now: Instant) {
        let now_s = seconds(now);
        let guard = self.handles.load();
        let fresh = guard
            .as_deref()
            .is_some_and(|h| fresh(h.registered_at, now_s));
        if !fresh {
            drop(guard);
            let time_labels = if full_detail() {
                labels(&[("route", &self.route), ("plugin", self.plugin)])
            } else {
                labels(&[("plugin", self.plugin)])
            };
            self.handles.store(Some(Arc::new(PluginHandles {
                duration: PLUGIN_DURATION_FAMILY.series(time_labels),
                decisions: Default::default(),
                registered_at: now_s,
            })));
            return self.record_series(elapsed, answered, now);
        }
        let Some(h) = guard.as_deref() else { return };
        h.duration.record_duration(elapsed);
        let (i, decision, class) = match answered {
            None => (0, "continue", ""),
            Some(s) => (1 + class_index(Some(s)).0, "answered", class(s)),
        };
        h.decisions[i]
            .get_or_init(|| {
                let mut pairs = vec![
                    ("route", &*self.route),
                    ("plugin", self.plugin),
                    ("decision", decision),
                ];
                if !class.is_empty() {
                    pairs.push(("status", class));
                }
                metrics::counter!(PLUGIN_DECISIONS, labels(&pairs))
            })
            .increment(1);
    }
}
