//! Choosing an endpoint: the load-balancing algorithms.
//!
//! Every algorithm takes a predicate for the endpoints it may choose (the
//! available ones not tried yet) and returns an index, or `None` when no
//! endpoint satisfies the predicate. The caller then fails open: see
//! [`super::Upstream::pick`].
//!
//! Costs are bounded independently of the number of endpoints, apart from
//! outages: round robin and the hash ring probe forward from their first
//! choice past unavailable endpoints; least connections and Peak EWMA look
//! at two random endpoints (the "power of two choices", which balances
//! nearly as well as a full scan at a fixed cost) or, for small sets,
//! scan them all.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::endpoint::EndpointState;
use crate::routing::LoadBalancer;

/// Points per endpoint on the hash ring: enough that keys spread within a
/// few percent of evenly and that a change moves about 1/N of them.
const RING_POINTS: u32 = 100;

/// Sets up to this size are scanned in full by least connections.
const SCAN_MAX: usize = 8;

/// A stable 64-bit hash: FNV-1a, then a finalizer that spreads the bits.
/// Stable across processes and versions, so every replica of the gateway
/// maps a key to the same endpoint.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The murmur3 64-bit finalizer.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A fast per-thread random number; balancing needs spread, not secrecy.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let local = 0u8;
            let seed = std::ptr::from_ref(&local).addr() as u64;
            mix(seed ^ super::endpoint::clock_ns(std::time::Instant::now())) | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Two distinct random indexes below `n` (n >= 2).
fn two_random(n: usize) -> (usize, usize) {
    let r = random();
    let a = (r as usize) % n;
    let b = (a + 1 + ((r >> 32) as usize) % (n - 1)) % n;
    (a, b)
}

/// Endpoint indexes placed on a circle of hashes.
#[derive(Debug)]
pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Box<[(u64, u32)]>,
}

impl Ring {
    pub fn build(endpoints: &[Arc<EndpointState>]) -> Ring {
        let mut points = Vec::with_capacity(endpoints.len() * RING_POINTS as usize);
        let mut text = String::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            for p in 0..RING_POINTS {
                use std::fmt::Write as _;
                text.clear();
                // Writing into a String cannot fail.
                let _ = write!(text, "{}#{p}", ep.addr());
                points.push((hash_bytes(text.as_bytes()), i));
            }
        }
        points.sort_unstable();
        Ring {
            points: points.into_boxed_slice(),
        }
    }

    /// The first endpoint at or after `hash` on the circle that `ok`
    /// accepts.
    fn find(
        &self,
        hash: u64,
        endpoints: &[Arc<EndpointState>],
        ok: impl Fn(&EndpointState) -> bool,
    ) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let start = self.points.partition_point(|&(p, _)| p < hash);
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .find(|&i| endpoints.get(i).is_some_and(|e| ok(e)))
    }
}

/// Chooses an endpoint of `endpoints` that `ok` accepts.
pub fn choose<'r>(
    lb: &LoadBalancer,
    endpoints: &[Arc<EndpointState>],
    ring: impl FnOnce() -> Option<&'r Ring>,
    cursor: &AtomicUsize,
    hash: u64,
    ok: impl Fn(&EndpointState) -> bool,
) -> Option<usize> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    match lb {
        LoadBalancer::RoundRobin => round_robin(endpoints, cursor, &ok),
        LoadBalancer::LeastConnections if n <= SCAN_MAX => {
            let start = cursor.fetch_add(1, Ordering::Relaxed);
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| ok(&endpoints[i]))
                .min_by_key(|&i| endpoints[i].in_flight())
        }
        LoadBalancer::LeastConnections => two_choices(endpoints, &ok, |e| f64::from(e.in_flight()))
            .or_else(|| round_robin(endpoints, cursor, &ok)),
        LoadBalancer::PeakEwma if n == 1 => ok(&endpoints[0]).then_some(0),
        LoadBalancer::PeakEwma => two_choices(endpoints, &ok, EndpointState::cost)
            .or_else(|| round_robin(endpoints, cursor, &ok)),
        LoadBalancer::ConsistentHash { .. } => ring()?.find(hash, endpoints, ok),
    }
}

fn round_robin(
    endpoints: &[Arc<EndpointState>],
    cursor: &AtomicUsize,
    ok: impl Fn(&EndpointState) -> bool,
) -> Option<usize> {
    let n = endpoints.len();
    let start = cursor.fetch_add(1, Ordering::Relaxed) % n;
    (0..n).map(|k| (start + k) % n).find(|&i| ok(&endpoints[i]))
}

/// The cheaper of two random endpoints that `ok` accepts, or the one of
/// them it accepts; `None` when it accepts neither.
fn two_choices(
    endpoints: &[Arc<EndpointState>],
    ok: impl Fn(&EndpointState) -> bool,
    cost: impl Fn(&EndpointState) -> f64,
) -> Option<usize> {
    let (a, b) = two_random(endpoints.len());
    match (ok(&endpoints[a]), ok(&endpoints[b])) {
        (true, true) if cost(&endpoints[b]) < cost(&endpoints[a]) => Some(b),
        (true, _) => Some(a),
        (false, true) => Some(b),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn eps(n: u16) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                Arc::new(EndpointState::new(SocketAddr::from((
                    [10, 0, (i >> 8) as u8, i as u8],
                    8080,
                ))))
            })
            .collect()
    }

    fn leak(r: Ring) -> &'static Ring {
        Box::leak(Box::new(r))
    }

    fn pick(lb: &LoadBalancer, e: &[Arc<EndpointState>], c: &AtomicUsize) -> usize {
        choose(lb, e, || None, c, 0, |_| true).unwrap()
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash_bytes(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_bytes(b"10.0.0.1"), hash_bytes(b"10.0.0.1"));
        assert_ne!(hash_bytes(b"10.0.0.1"), hash_bytes(b"10.0.0.2"));
    }

    #[test]
    fn round_robin_skips_unavailable() {
        let e = eps(3);
        let c = AtomicUsize::new(0);
        let got: Vec<_> = (0..4)
            .map(|_| {
                choose(
                    &LoadBalancer::RoundRobin,
                    &e,
                    || None,
                    &c,
                    0,
                    |x| x.addr() != e[1].addr(),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(got, [0, 2, 2, 0]);
        assert!(choose(&LoadBalancer::RoundRobin, &e, || None, &c, 0, |_| false).is_none());
    }

    #[test]
    fn least_connections_prefers_the_idle_endpoint() {
        for n in [2u16, 5, 50] {
            let e = eps(n);
            let c = AtomicUsize::new(0);
            // All but the last endpoint carry requests.
            let _busy: Vec<_> = e[..e.len() - 1].iter().map(|x| x.begin()).collect();
            let idle = e.len() - 1;
            let hits = (0..1000)
                .filter(|_| pick(&LoadBalancer::LeastConnections, &e, &c) == idle)
                .count();
            if n as usize <= SCAN_MAX {
                assert_eq!(hits, 1000, "n = {n}");
            } else {
                // Two random choices include the idle one 2/n of the time
                // and then always take it.
                let expect = 2000 / n as usize;
                assert!(hits > expect / 2 && hits < expect * 2, "n = {n}: {hits}");
            }
        }
    }

    #[test]
    fn least_connections_spreads_ties() {
        let e = eps(4);
        let c = AtomicUsize::new(0);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[pick(&LoadBalancer::LeastConnections, &e, &c)] += 1;
        }
        assert!(seen.iter().all(|&s| s == 100), "{seen:?}");
    }

    #[test]
    fn peak_ewma_avoids_the_slow_endpoint() {
        let e = eps(2);
        let c = AtomicUsize::new(0);
        e[0].observe_latency(Duration::from_millis(50), 1);
        e[1].observe_latency(Duration::from_millis(2), 1);
        let fast = (0..100)
            .filter(|_| pick(&LoadBalancer::PeakEwma, &e, &c) == 1)
            .count();
        assert_eq!(fast, 100);
        // Load shifts the choice: 30 requests in flight on the fast one
        // cost more than one idle slow one.
        let _busy: Vec<_> = (0..30).map(|_| e[1].begin()).collect();
        assert_eq!(pick(&LoadBalancer::PeakEwma, &e, &c), 0);
    }

    #[test]
    fn ring_spreads_keys_and_moves_few_on_change() {
        let lb = LoadBalancer::ConsistentHash {
            hash_on: crate::routing::HashOn::SourceIp,
        };
        let c = AtomicUsize::new(0);
        let before = eps(10);
        let ring = leak(Ring::build(&before));
        let keys: Vec<u64> = (0..20_000u32)
            .map(|k| hash_bytes(&k.to_le_bytes()))
            .collect();
        let owner = |e: &[Arc<EndpointState>], r: &'static Ring, k: u64| {
            e[choose(&lb, e, || Some(r), &c, k, |_| true).unwrap()].addr()
        };
        let mut counts = std::collections::HashMap::new();
        for &k in &keys {
            *counts.entry(owner(&before, ring, k)).or_insert(0) += 1;
        }
        for (&addr, &n) in &counts {
            assert!((1200..2800).contains(&n), "{addr}: {n} of 20000");
        }
        // Remove one endpoint: only its keys move.
        let after: Vec<_> = before[..9].to_vec();
        let ring2 = leak(Ring::build(&after));
        let moved = keys
            .iter()
            .filter(|&&k| owner(&before, ring, k) != owner(&after, ring2, k))
            .count();
        let gone = counts[&before[9].addr()];
        assert_eq!(moved, gone, "only the removed endpoint's keys move");
        // Add one: about 1/11 of the keys move, all to the new endpoint.
        let grown = eps(11);
        let ring3 = leak(Ring::build(&grown));
        let moved: Vec<_> = keys
            .iter()
            .filter(|&&k| owner(&before, ring, k) != owner(&grown, ring3, k))
            .collect();
        assert!(
            (900..2800).contains(&moved.len()),
            "{} of 20000 moved",
            moved.len()
        );
        assert!(
            moved
                .iter()
                .all(|&&k| owner(&grown, ring3, k) == grown[10].addr())
        );
        // An unavailable owner hands its keys to the next on the circle,
        // and the others keep theirs.
        let down = before[3].addr();
        for &k in keys.iter().take(2000) {
            let normal = owner(&before, ring, k);
            let i = choose(&lb, &before, || Some(ring), &c, k, |e| e.addr() != down).unwrap();
            if normal != down {
                assert_eq!(before[i].addr(), normal);
            } else {
                assert_ne!(before[i].addr(), down);
            }
        }
    }
}
