//! What one shard keeps of one route: two panes of [`PANE_SECS`]
//! seconds each (the current one and the one before), and the same for
//! each plugin of the route. A pane is reset when it is reused for a
//! later period, so memory stays constant however long a route is busy.

use std::time::Duration;

use super::hist::Hist;
use super::topk::TopK;

/// Seconds per pane; a snapshot covers the last one to two panes.
pub const PANE_SECS: u64 = 5;
/// Buckets of request latency, in microseconds (up to ~4 minutes).
pub(super) const LATENCY_BUCKETS: usize = 108;
/// Buckets of plugin time, in nanoseconds (up to ~15 s).
pub(super) const PLUGIN_BUCKETS: usize = 132;
/// Plugins kept per route; a route has at most one of each kind.
pub(super) const MAX_PLUGINS: usize = 32;
/// Distinct answer statuses kept per plugin pane; others are counted
/// together.
const ANSWER_KINDS: usize = 4;

/// Panes are numbered from 1 (0 marks an unused pane): number `n` covers
/// seconds `(n - 1) * PANE_SECS ..`.
pub(super) fn pane_id(sec: u64) -> u64 {
    sec / PANE_SECS + 1
}

/// The pane of `panes` for period `id`, cleared if it held an older one.
fn pane<P: Pane>(panes: &mut [P; 2], id: u64) -> &mut P {
    let p = &mut panes[(id % 2) as usize];
    if p.id() != id {
        p.reset(id);
    }
    p
}

trait Pane {
    fn id(&self) -> u64;
    fn reset(&mut self, id: u64);
}

#[derive(Clone, Debug, Default)]
pub(super) struct RoutePane {
    pub id: u64,
    pub requests: u64,
    /// By status class, 1xx to 5xx.
    pub classes: [u64; 5],
    pub latency_us: Hist<LATENCY_BUCKETS>,
    pub consumers: TopK,
}

impl Pane for RoutePane {
    fn id(&self) -> u64 {
        self.id
    }
    fn reset(&mut self, id: u64) {
        self.id = id;
        self.requests = 0;
        self.classes = [0; 5];
        self.latency_us.clear();
        self.consumers.clear();
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct PluginPane {
    pub id: u64,
    pub calls: u64,
    pub total_ns: u64,
    pub time_ns: Hist<PLUGIN_BUCKETS>,
    /// Requests the plugin answered itself, by status.
    pub answered: [(u16, u64); ANSWER_KINDS],
    /// Answers whose status found no room in `answered`.
    pub answered_other: u64,
}

impl Pane for PluginPane {
    fn id(&self) -> u64 {
        self.id
    }
    fn reset(&mut self, id: u64) {
        *self = PluginPane {
            id,
            ..PluginPane::default()
        };
    }
}

#[derive(Debug)]
pub(super) struct PluginLive {
    pub name: &'static str,
    pub panes: [PluginPane; 2],
}

/// One route's recent traffic as seen by one shard.
#[derive(Debug, Default)]
pub(super) struct RouteLive {
    pub panes: [RoutePane; 2],
    pub plugins: Vec<PluginLive>,
}

impl RouteLive {
    pub fn record(&mut self, id: u64, status: u16, duration: Duration, consumer: Option<&str>) {
        let p = pane(&mut self.panes, id);
        p.requests += 1;
        p.classes[usize::from((status / 100).clamp(1, 5)) - 1] += 1;
        p.latency_us
            .add(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
        if let Some(c) = consumer {
            p.consumers.add(c);
        }
    }

    pub fn record_plugin(
        &mut self,
        id: u64,
        plugin: &'static str,
        duration: Duration,
        answered: Option<u16>,
    ) {
        let i = match self.plugins.iter().position(|p| p.name == plugin) {
            Some(i) => i,
            None if self.plugins.len() < MAX_PLUGINS => {
                self.plugins.push(PluginLive {
                    name: plugin,
                    panes: Default::default(),
                });
                self.plugins.len() - 1
            }
            None => return,
        };
        let p = pane(&mut self.plugins[i].panes, id);
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        p.calls += 1;
        p.total_ns = p.total_ns.saturating_add(ns);
        p.time_ns.add(ns);
        if let Some(status) = answered {
            match p.answered.iter_mut().find(|(s, n)| *s == status || *n == 0) {
                Some(slot) => *slot = (status, slot.1 + 1),
                None => p.answered_other += 1,
            }
        }
    }

    /// Whether every pane is older than `oldest` (nothing left to show).
    pub fn is_stale(&self, oldest: u64) -> bool {
        self.panes.iter().all(|p| p.id < oldest)
            && self
                .plugins
                .iter()
                .all(|pl| pl.panes.iter().all(|p| p.id < oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pane_is_reset_when_its_period_comes_round_again() {
        let mut r = RouteLive::default();
        let ms = Duration::from_millis;
        r.record(pane_id(0), 200, ms(1), Some("a"));
        r.record(pane_id(6), 500, ms(2), None);
        r.record(pane_id(11), 200, ms(3), None);
        // Seconds 0 and 11 are two panes apart: the same slot, reset.
        let slot = &r.panes[(pane_id(11) % 2) as usize];
        assert_eq!((slot.id, slot.requests), (pane_id(11), 1));
        assert_eq!(slot.consumers.items().count(), 0);
        let other = &r.panes[(pane_id(6) % 2) as usize];
        assert_eq!(other.classes, [0, 0, 0, 0, 1]);
        assert!(!r.is_stale(pane_id(6)));
        assert!(r.is_stale(pane_id(20)));
    }

    #[test]
    fn plugin_answers_are_bounded() {
        let mut r = RouteLive::default();
        for status in [401, 403, 429, 503, 500, 401] {
            r.record_plugin(1, "keyAuth", Duration::from_micros(2), Some(status));
        }
        r.record_plugin(1, "keyAuth", Duration::from_micros(2), None);
        let p = &r.plugins[0].panes[1];
        assert_eq!(p.calls, 7);
        assert_eq!(p.answered[0], (401, 2));
        assert_eq!(p.answered_other, 1);
        for i in 0..40 {
            let name: &'static str = Box::leak(format!("p{i}").into_boxed_str());
            r.record_plugin(1, name, Duration::ZERO, None);
        }
        assert_eq!(r.plugins.len(), MAX_PLUGINS);
    }
}
