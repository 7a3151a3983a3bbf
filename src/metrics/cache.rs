//! The cache stage's per-route handles: requests by result, and bytes
//! stored. Registered lazily and refreshed like the route handles (see
//! [`super::route`]).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use metrics::Counter;

use super::route::seconds;
use super::{CACHE_REQUESTS, CACHE_STORED_BYTES, REFRESH, labels};

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
        let now_s = seconds(Instant::now());
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
                    labels(&[
                        ("route", &self.route),
                        ("storage", self.storage),
                        ("result", RESULTS[i]),
                    ])
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
                    labels(&[("route", &self.route), ("storage", self.storage)])
                )
            })
            .increment(bytes);
    }
}
