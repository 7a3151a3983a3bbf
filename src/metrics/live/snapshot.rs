//! A snapshot of live traffic: the panes of every shard merged per route
//! and plugin, turned into rates and percentiles.

use std::collections::HashMap;

use serde::Serialize;

use super::hist::Hist;
use super::pane::{LATENCY_BUCKETS, PLUGIN_BUCKETS, PluginPane, RouteLive, RoutePane};

/// Consumers listed per route.
pub const TOP_CONSUMERS: usize = 5;

/// Live traffic over the last [`Snapshot::window_seconds`].
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The time covered: the current pane so far and the one before.
    pub window_seconds: f64,
    /// Routes with traffic in the window, busiest first.
    pub routes: Vec<RouteStats>,
    /// Recordings dropped because a shard already tracked its maximum of
    /// routes.
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStats {
    pub route: String,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Share of responses with a 5xx status.
    pub error_rate: f64,
    /// Responses by status class.
    pub statuses: Classes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Consumers identified by authentication plugins, busiest first.
    /// Counts are estimates that may be high by a little (see
    /// `topk`).
    pub top_consumers: Vec<Consumer>,
    pub plugins: Vec<PluginStats>,
}

#[derive(Debug, Default, Serialize)]
pub struct Classes {
    #[serde(rename = "1xx")]
    pub c1: u64,
    #[serde(rename = "2xx")]
    pub c2: u64,
    #[serde(rename = "3xx")]
    pub c3: u64,
    #[serde(rename = "4xx")]
    pub c4: u64,
    #[serde(rename = "5xx")]
    pub c5: u64,
}

#[derive(Debug, Serialize)]
pub struct Consumer {
    pub name: String,
    pub requests: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginStats {
    pub plugin: &'static str,
    pub calls: u64,
    pub calls_per_second: f64,
    pub mean_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Calls after which the request went on.
    pub continued: u64,
    /// Calls that answered the request, by status.
    pub answered: Vec<Answer>,
}

#[derive(Debug, Serialize)]
pub struct Answer {
    /// The status, or `null` for statuses beyond the few counted apart.
    pub status: Option<u16>,
    pub count: u64,
}

/// Sums of one route's panes across shards.
#[derive(Default)]
struct RouteAcc {
    requests: u64,
    classes: [u64; 5],
    latency_us: Hist<LATENCY_BUCKETS>,
    consumers: HashMap<String, u64>,
    plugins: Vec<(&'static str, PluginAcc)>,
}

#[derive(Default)]
struct PluginAcc {
    calls: u64,
    total_ns: u64,
    time_ns: Hist<PLUGIN_BUCKETS>,
    answered: HashMap<Option<u16>, u64>,
}

/// Collects panes `oldest..` of every shard's routes.
#[derive(Default)]
pub(super) struct Merger {
    routes: HashMap<String, RouteAcc>,
}

impl Merger {
    pub fn add(&mut self, name: &str, route: &RouteLive, oldest: u64) {
        let acc = match self.routes.get_mut(name) {
            Some(a) => a,
            None => self.routes.entry(name.to_owned()).or_default(),
        };
        for p in route.panes.iter().filter(|p| p.id >= oldest) {
            add_route_pane(acc, p);
        }
        for pl in &route.plugins {
            let i = match acc.plugins.iter().position(|(n, _)| *n == pl.name) {
                Some(i) => i,
                None => {
                    acc.plugins.push((pl.name, PluginAcc::default()));
                    acc.plugins.len() - 1
                }
            };
            for p in pl.panes.iter().filter(|p| p.id >= oldest) {
                add_plugin_pane(&mut acc.plugins[i].1, p);
            }
        }
    }

    pub fn finish(self, window_seconds: f64, dropped: u64) -> Snapshot {
        // Rates over less than a second would swing wildly.
        let secs = window_seconds.max(1.0);
        let mut routes: Vec<RouteStats> = self
            .routes
            .into_iter()
            .filter(|(_, a)| a.requests > 0 || a.plugins.iter().any(|(_, p)| p.calls > 0))
            .map(|(route, a)| route_stats(route, a, secs))
            .collect();
        routes.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.route.cmp(&b.route))
        });
        Snapshot {
            window_seconds,
            routes,
            dropped,
        }
    }
}

fn add_route_pane(acc: &mut RouteAcc, p: &RoutePane) {
    acc.requests += p.requests;
    for (a, b) in acc.classes.iter_mut().zip(p.classes) {
        *a += b;
    }
    acc.latency_us.merge(&p.latency_us);
    for (name, n) in p.consumers.items() {
        *acc.consumers.entry(name.to_owned()).or_default() += n;
    }
}

fn add_plugin_pane(acc: &mut PluginAcc, p: &PluginPane) {
    acc.calls += p.calls;
    acc.total_ns = acc.total_ns.saturating_add(p.total_ns);
    acc.time_ns.merge(&p.time_ns);
    for &(status, n) in p.answered.iter().filter(|(_, n)| *n > 0) {
        *acc.answered.entry(Some(status)).or_default() += n;
    }
    if p.answered_other > 0 {
        *acc.answered.entry(None).or_default() += p.answered_other;
    }
}

fn route_stats(route: String, a: RouteAcc, secs: f64) -> RouteStats {
    let mut consumers: Vec<Consumer> = a
        .consumers
        .into_iter()
        .map(|(name, requests)| Consumer { name, requests })
        .collect();
    consumers.sort_by(|x, y| y.requests.cmp(&x.requests).then(x.name.cmp(&y.name)));
    consumers.truncate(TOP_CONSUMERS);
    let [c1, c2, c3, c4, c5] = a.classes;
    RouteStats {
        route,
        requests: a.requests,
        requests_per_second: a.requests as f64 / secs,
        error_rate: if a.requests == 0 {
            0.0
        } else {
            c5 as f64 / a.requests as f64
        },
        statuses: Classes { c1, c2, c3, c4, c5 },
        p50_ms: a.latency_us.quantile(0.5).map(|us| us / 1e3),
        p99_ms: a.latency_us.quantile(0.99).map(|us| us / 1e3),
        top_consumers: consumers,
        plugins: a
            .plugins
            .into_iter()
            .filter(|(_, p)| p.calls > 0)
            .map(|(plugin, p)| plugin_stats(plugin, p, secs))
            .collect(),
    }
}

fn plugin_stats(plugin: &'static str, p: PluginAcc, secs: f64) -> PluginStats {
    let answered_total: u64 = p.answered.values().sum();
    let mut answered: Vec<Answer> = p
        .answered
        .into_iter()
        .map(|(status, count)| Answer { status, count })
        .collect();
    answered.sort_by(|a, b| b.count.cmp(&a.count).then(a.status.cmp(&b.status)));
    PluginStats {
        plugin,
        calls: p.calls,
        calls_per_second: p.calls as f64 / secs,
        mean_ms: if p.calls == 0 {
            0.0
        } else {
            p.total_ns as f64 / p.calls as f64 / 1e6
        },
        p99_ms: p.time_ns.quantile(0.99).map(|ns| ns / 1e6),
        continued: p.calls.saturating_sub(answered_total),
        answered,
    }
}
