//! The handles of the connection metrics, per listener and protocol.
//!
//! Every client connection counts itself in `sluicegate_connections_total`
//! and, while open, in `sluicegate_connections_active`. Looking the two
//! series up by name for each connection built their label sets and keys
//! anew (about a dozen allocations and two registry lookups per
//! connection, a real share of a short connection's cost); the handles are
//! kept here instead, and registered again when older than [`REFRESH`],
//! as the route handles are ([`super::route`]), so that a series the
//! exporter dropped while idle comes back.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use metrics::{Counter, Gauge};

use super::route::{fresh, seconds};
use super::{CONNECTIONS_ACTIVE, CONNECTIONS_TOTAL, labels};

struct Handles {
    tls: bool,
    protocol: &'static str,
    total: Counter,
    active: Gauge,
    registered_at: u64,
}

/// A handful of entries: two listeners times the protocols.
static HANDLES: Mutex<Vec<Handles>> = Mutex::new(Vec::new());

/// Counts a connection opened on the HTTPS (`tls`) or HTTP listener, and
/// returns the gauge of open ones it was added to, to be decremented when
/// it closes.
pub fn opened(tls: bool, protocol: &'static str) -> Gauge {
    opened_in(&HANDLES, tls, protocol, seconds(Instant::now()))
}

fn opened_in(cache: &Mutex<Vec<Handles>>, tls: bool, protocol: &'static str, now_s: u64) -> Gauge {
    let mut all = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let at = all
        .iter()
        .position(|h| h.tls == tls && h.protocol == protocol);
    let current = at.filter(|&i| fresh(all[i].registered_at, now_s));
    let i = match (current, at) {
        (Some(i), _) => i,
        (None, stale) => {
            let listener = if tls { "https" } else { "http" };
            let l = labels(&[("listener", listener), ("protocol", protocol)]);
            let h = Handles {
                tls,
                protocol,
                total: metrics::counter!(CONNECTIONS_TOTAL, l.clone()),
                active: metrics::gauge!(CONNECTIONS_ACTIVE, l),
                registered_at: now_s,
            };
            match stale {
                Some(i) => {
                    all[i] = h;
                    i
                }
                None => {
                    all.push(h);
                    all.len() - 1
                }
            }
        }
    };
    let h = &all[i];
    h.total.increment(1);
    h.active.increment(1.0);
    h.active.clone()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use metrics::{Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use metrics_util::registry::{AtomicStorage, Registry};

    use super::*;

    /// Series kept in a registry, and how often each was looked up.
    struct Recorded {
        registry: Registry<Key, AtomicStorage>,
        lookups: AtomicUsize,
    }

    impl Recorder for Recorded {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.registry
                .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.lookups.fetch_add(1, Ordering::Relaxed);
            self.registry
                .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn value(r: &Recorded, name: &'static str, protocol: &'static str) -> u64 {
        let key = Key::from_parts(
            name,
            labels(&[("listener", "https"), ("protocol", protocol)]),
        );
        let found: Option<Arc<AtomicU64>> = if name == CONNECTIONS_TOTAL {
            r.registry.get_counter(&key)
        } else {
            r.registry.get_gauge(&key)
        };
        let v = found.map(|a| a.load(Ordering::Relaxed));
        match name {
            CONNECTIONS_TOTAL => v.unwrap_or(0),
            _ => v.map_or(0, |bits| f64::from_bits(bits) as u64),
        }
    }

    #[test]
    fn connections_are_counted_through_kept_handles_registered_again_when_old() {
        let r = Recorded {
            registry: Registry::atomic(),
            lookups: AtomicUsize::new(0),
        };
        let cache = Mutex::new(Vec::new());
        metrics::with_local_recorder(&r, || {
            let open: Vec<Gauge> = (0..3).map(|_| opened_in(&cache, true, "h2", 10)).collect();
            assert_eq!(value(&r, CONNECTIONS_TOTAL, "h2"), 3);
            assert_eq!(value(&r, CONNECTIONS_ACTIVE, "h2"), 3);
            // One registration of the two series for three connections.
            assert_eq!(r.lookups.load(Ordering::Relaxed), 2);
            for g in &open[..2] {
                g.decrement(1.0);
            }
            assert_eq!(value(&r, CONNECTIONS_ACTIVE, "h2"), 1);
            // Another protocol has series of its own.
            let _h1 = opened_in(&cache, true, "h1", 10);
            assert_eq!(value(&r, CONNECTIONS_TOTAL, "h1"), 1);
            assert_eq!(value(&r, CONNECTIONS_TOTAL, "h2"), 3);
            // Old handles are registered again, into the same series.
            let later = 10 + crate::metrics::REFRESH.as_secs();
            let _later = opened_in(&cache, true, "h2", later);
            assert_eq!(r.lookups.load(Ordering::Relaxed), 6);
            assert_eq!(value(&r, CONNECTIONS_TOTAL, "h2"), 4);
            assert_eq!(value(&r, CONNECTIONS_ACTIVE, "h2"), 2);
        });
    }
}
