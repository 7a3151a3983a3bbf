//! Live traffic for the admin dashboard: per route, the requests per
//! second, latency percentiles, error rate and busiest consumers of the
//! last few seconds, and per route and plugin what each plugin costs and
//! decides.
//!
//! Prometheus answers "how has it gone"; this answers "what is it doing
//! right now", from the gateway alone. It is hand-written because the
//! `metrics` crate's histograms keep every sample until a scrape drains
//! them and know no time window, and general histogram crates cost
//! kilobytes per series: here a fixed four-buckets-per-octave histogram
//! ([`hist`]) and a Space-Saving sketch ([`topk`]) keep memory constant.
//!
//! # Cost on the request path
//!
//! Each recording thread has a shard of its own (proxy workers get one
//! each; beyond [`SHARDS`] threads, threads share). A shard is a mutex
//! around a map from route name to that route's panes: the recording
//! thread is the only one that takes it, except for a snapshot (a
//! dashboard refresh, once a second), so the lock is uncontended and
//! costs two atomic operations. There is no lock shared by workers.
//!
//! # Bounds
//!
//! Keys are route names (bounded by configuration) and plugin names
//! (`&'static str`). A shard tracks at most [`MAX_ROUTES`] routes and a
//! route at most 32 plugins; routes without traffic in the window are
//! forgotten at the next snapshot. Consumers, the one name that comes with
//! requests, are kept in a sketch of 16 counters per route and pane, each
//! name cut to 128 bytes. A busy route costs about 1.5 KB per shard plus
//! about 1 KB per plugin.

mod hist;
mod pane;
mod snapshot;
mod topk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub use pane::PANE_SECS;
use pane::{RouteLive, pane_id};
pub use snapshot::{Answer, Classes, Consumer, PluginStats, RouteStats, Snapshot};

/// Shards, at most one per recording thread.
pub const SHARDS: usize = 64;
/// Routes one shard tracks at once.
pub const MAX_ROUTES: usize = 4096;

/// Records one answered request of `route` (the route name; `unmatched`
/// for requests no route took), with the consumer an authentication
/// plugin identified, if any.
/// `now` is the caller's clock reading at the request's end: the proxy
/// has one already, and reading the clock again is a measurable part of a
/// request's cost.
pub fn record_request(
    route: &str,
    status: u16,
    duration: Duration,
    consumer: Option<&str>,
    now: Instant,
) {
    global().record_request(sec_at(now), route, status, duration, consumer);
}

/// Records one run of `plugin` on a request of `route`: how long it took
/// and, when it answered the request itself, with which status.
pub fn record_plugin(
    route: &str,
    plugin: &'static str,
    duration: Duration,
    answered: Option<u16>,
    now: Instant,
) {
    global().record_plugin(sec_at(now), route, plugin, duration, answered);
}

/// The traffic of the last one to two panes (5 to 10 seconds).
pub fn snapshot() -> Snapshot {
    let (sec, frac) = now();
    global().snapshot(sec, frac)
}

fn global() -> &'static Collector {
    static GLOBAL: OnceLock<Collector> = OnceLock::new();
    GLOBAL.get_or_init(Collector::default)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whole seconds since the collector's epoch, and the fraction of the
/// current one.
fn now() -> (u64, f64) {
    let d = epoch().elapsed();
    (d.as_secs(), f64::from(d.subsec_nanos()) / 1e9)
}

/// Whole seconds from the collector's epoch to `at`.
fn sec_at(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_secs()
}

#[derive(Default)]
struct Routes {
    map: HashMap<Box<str>, RouteLive, foldhash::fast::RandomState>,
    dropped: u64,
}

impl Routes {
    /// The route's entry, added if there is room.
    fn entry(&mut self, route: &str) -> Option<&mut RouteLive> {
        if !self.map.contains_key(route) {
            if self.map.len() >= MAX_ROUTES {
                self.dropped += 1;
                return None;
            }
            self.map.insert(route.into(), RouteLive::default());
        }
        self.map.get_mut(route)
    }
}

/// Every shard's routes. One global instance serves the gateway; tests
/// make their own and pass the time in.
struct Collector {
    shards: [OnceLock<Mutex<Routes>>; SHARDS],
    next: AtomicUsize,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            shards: std::array::from_fn(|_| OnceLock::new()),
            next: AtomicUsize::new(0),
        }
    }
}

thread_local! {
    /// This thread's shard, assigned on first use.
    static SHARD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Collector {
    fn shard(&self) -> std::sync::MutexGuard<'_, Routes> {
        let i = SHARD.with(|s| match s.get() {
            Some(i) => i,
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(Some(i));
                i
            }
        });
        self.shards[i]
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn record_request(
        &self,
        sec: u64,
        route: &str,
        status: u16,
        duration: Duration,
        consumer: Option<&str>,
    ) {
        if let Some(r) = self.shard().entry(route) {
            r.record(pane_id(sec), status, duration, consumer);
        }
    }

    fn record_plugin(
        &self,
        sec: u64,
        route: &str,
        plugin: &'static str,
        duration: Duration,
        answered: Option<u16>,
    ) {
        if let Some(r) = self.shard().entry(route) {
            r.record_plugin(pane_id(sec), plugin, duration, answered);
        }
    }

    /// Merges the current and the previous pane of every shard, and
    /// forgets routes with nothing newer. Each shard is locked only while
    /// its own routes are merged.
    fn snapshot(&self, sec: u64, frac: f64) -> Snapshot {
        let current = pane_id(sec);
        let oldest = current.saturating_sub(1).max(1);
        let mut merger = snapshot::Merger::default();
        let mut dropped = 0;
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            let mut routes = shard.lock().unwrap_or_else(PoisonError::into_inner);
            routes.map.retain(|_, r| !r.is_stale(oldest));
            for (name, r) in &routes.map {
                merger.add(name, r, oldest);
            }
            dropped += routes.dropped;
        }
        // From the start of the previous pane (or of the collector, if
        // younger) to now.
        let start = (oldest - 1) * PANE_SECS;
        let window = (sec - start) as f64 + frac;
        merger.finish(window, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rates_percentiles_and_errors_over_the_window() {
        let c = Collector::default();
        // Seconds 10..15 are pane 3, 15..20 pane 4.
        for i in 0..100u64 {
            let status = if i % 10 == 0 { 502 } else { 200 };
            c.record_request(12, "shop", status, ms(1 + i % 5), None);
        }
        for _ in 0..50 {
            c.record_request(16, "shop", 404, ms(100), Some("alice"));
        }
        let s = c.snapshot(17, 0.5);
        // Previous pane from second 10, now at 17.5.
        assert_eq!(s.window_seconds, 7.5);
        let r = &s.routes[0];
        assert_eq!((r.route.as_str(), r.requests), ("shop", 150));
        assert!((r.requests_per_second - 20.0).abs() < 1e-9);
        assert!((r.error_rate - 10.0 / 150.0).abs() < 1e-9);
        assert_eq!((r.statuses.c2, r.statuses.c4, r.statuses.c5), (90, 50, 10));
        let p50 = r.p50_ms.unwrap();
        let p99 = r.p99_ms.unwrap();
        assert!((2.5..4.5).contains(&p50), "{p50}");
        assert!((90.0..110.0).contains(&p99), "{p99}");
        assert_eq!(r.top_consumers[0].name, "alice");
        assert_eq!(r.top_consumers[0].requests, 50);
    }

    #[test]
    fn old_panes_leave_the_window_and_idle_routes_are_forgotten() {
        let c = Collector::default();
        c.record_request(1, "old", 200, ms(1), None);
        c.record_request(12, "new", 200, ms(1), None);
        let s = c.snapshot(12, 0.0);
        let names: Vec<_> = s.routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["new"]);
        let shards: usize = c
            .shards
            .iter()
            .filter_map(OnceLock::get)
            .map(|s| s.lock().unwrap().map.len())
            .sum();
        assert_eq!(shards, 1, "the idle route is dropped from memory");
        assert!(c.snapshot(30, 0.0).routes.is_empty());
    }

    #[test]
    fn plugin_cost_and_decisions() {
        let c = Collector::default();
        for i in 0..10u64 {
            let answered = (i < 3).then_some(429);
            c.record_plugin(
                3,
                "shop",
                "limitCount",
                Duration::from_micros(2 + i),
                answered,
            );
            c.record_plugin(3, "shop", "keyAuth", Duration::from_micros(20), None);
        }
        let s = c.snapshot(4, 0.0);
        let r = &s.routes[0];
        assert_eq!(r.requests, 0);
        let lc = r.plugins.iter().find(|p| p.plugin == "limitCount").unwrap();
        assert_eq!((lc.calls, lc.continued), (10, 7));
        assert_eq!(lc.answered.len(), 1);
        assert_eq!(
            (lc.answered[0].status, lc.answered[0].count),
            (Some(429), 3)
        );
        assert!((lc.mean_ms - 0.0065).abs() < 1e-9, "{}", lc.mean_ms);
        let ka = r.plugins.iter().find(|p| p.plugin == "keyAuth").unwrap();
        let p99 = ka.p99_ms.unwrap();
        assert!((0.018..0.022).contains(&p99), "{p99}");
    }

    #[test]
    fn a_shard_tracks_a_bounded_number_of_routes() {
        let c = Collector::default();
        for i in 0..MAX_ROUTES + 10 {
            c.record_request(1, &format!("r{i}"), 200, ms(1), None);
        }
        let s = c.snapshot(1, 0.0);
        assert_eq!(s.routes.len(), MAX_ROUTES);
        assert_eq!(s.dropped, 10);
    }

    #[test]
    fn threads_record_into_their_own_shards_without_losing_counts() {
        let c = std::sync::Arc::new(Collector::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        c.record_request(2, "shared", 200, ms(i % 7), Some(["a", "b"][t % 2]));
                        if i % 1000 == 0 {
                            drop(c.snapshot(2, 0.0));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.snapshot(2, 0.0);
        assert_eq!(s.routes[0].requests, 40_000);
        let used = c.shards.iter().filter_map(OnceLock::get).count();
        assert!(used >= 4, "{used} shards for 4 threads");
        let consumers: u64 = s.routes[0].top_consumers.iter().map(|c| c.requests).sum();
        assert_eq!(consumers, 40_000);
    }
}
