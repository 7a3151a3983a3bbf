//! The live state of one endpoint: requests in flight, passive health,
//! the active checks' verdict, and a latency estimate.
//!
//! Everything is a relaxed atomic. Readers balance on approximate values;
//! a lost update costs one slightly worse choice, never a wrong answer, and
//! the request path never takes a lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::super::resilience::PassiveHealth;

/// Latency assumed for an endpoint nothing was measured on yet.
const DEFAULT_RTT_NS: f64 = 5_000_000.0;
/// How fast the latency estimate forgets: the weight of a sample decays
/// with this time constant.
const DECAY_NS: f64 = 10_000_000_000.0;

/// Nanoseconds since a process-wide origin: `Instant`s are opaque, and
/// atomics need integers.
pub fn clock_ns(now: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// One endpoint of one upstream.
#[derive(Debug)]
pub struct EndpointState {
    addr: SocketAddr,
    /// Hash of the address, the value of affinity cookies.
    id: u64,
    in_flight: AtomicU32,
    /// Consecutive failed requests.
    failures: AtomicU32,
    /// Ejected until this clock value; 0 when admitted.
    ejected_until: AtomicU64,
    /// Ejections in a row without a success in between.
    ejections: AtomicU32,
    /// Set by active checks.
    down: AtomicBool,
    /// Latency estimate in nanoseconds, as `f64` bits, and when it was
    /// last updated.
    ewma: AtomicU64,
    ewma_at: AtomicU64,
    /// No longer in its upstream: connections to it are not kept.
    removed: AtomicBool,
}

impl EndpointState {
    pub fn new(addr: SocketAddr) -> Self {
        EndpointState {
            addr,
            id: super::balance::hash_bytes(addr.to_string().as_bytes()),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            down: AtomicBool::new(false),
            ewma: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            removed: AtomicBool::new(false),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value an affinity cookie holds for this endpoint.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Whether the endpoint may take a request now: not ejected by
    /// failures, not marked down by active checks.
    pub fn is_available(&self, now_ns: u64) -> bool {
        !self.down.load(Relaxed) && self.ejected_until.load(Relaxed) <= now_ns
    }

    /// Whether active checks found the endpoint down.
    pub fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// Whether passive health has the endpoint ejected at `now_ns`.
    pub fn is_ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Relaxed) > now_ns
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Relaxed);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub(super) fn mark_removed(&self) {
        self.removed.store(true, Relaxed);
    }
}

/// Connections to an endpoint that left its upstream are closed rather
/// than pooled.
impl crate::http::client::Peer for EndpointState {
    fn addr(&self) -> std::net::SocketAddr {
        EndpointState::addr(self)
    }

    fn is_gone(&self) -> bool {
        self.is_removed()
    }
}

impl EndpointState {
    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// A request that got an answer: the failure streak ends, and an
    /// endpoint back from ejection starts over from the base ejection time.
    pub fn success(&self, now_ns: u64) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        let until = self.ejected_until.load(Relaxed);
        if until != 0 && until <= now_ns {
            self.ejected_until.store(0, Relaxed);
            self.ejections.store(0, Relaxed);
        }
    }

    /// A failed request; ejects the endpoint when the streak reaches the
    /// threshold. Each ejection in a row lasts twice the previous one, up
    /// to the maximum. Returns whether this failure ejected it.
    pub fn failure(&self, policy: &PassiveHealth, now_ns: u64) -> bool {
        if policy.consecutive_failures == 0 {
            return false;
        }
        let streak = self.failures.fetch_add(1, Relaxed) + 1;
        if streak < policy.consecutive_failures || self.is_ejected(now_ns) {
            return false;
        }
        self.failures.store(0, Relaxed);
        let n = self.ejections.fetch_add(1, Relaxed).min(16);
        let time = policy
            .base_ejection
            .saturating_mul(1 << n)
            .min(policy.max_ejection);
        let until = now_ns.saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        self.ejected_until.store(until.max(1), Relaxed);
        true
    }

    /// Adds a latency sample. Peak-sensitive: a sample above the estimate
    /// replaces it at once, so a slowing endpoint loses traffic quickly,
    /// while recovery is believed only gradually.
    pub fn observe_latency(&self, rtt: Duration, now_ns: u64) {
        let sample = rtt.as_nanos() as f64;
        let prev_at = self.ewma_at.swap(now_ns, Relaxed);
        let prev = f64::from_bits(self.ewma.load(Relaxed));
        let next = if prev_at == 0 || sample > prev {
            sample
        } else {
            let elapsed = now_ns.saturating_sub(prev_at) as f64;
            let w = (-elapsed / DECAY_NS).exp();
            prev * w + sample * (1.0 - w)
        };
        self.ewma.store(next.to_bits(), Relaxed);
    }

    /// Latency estimate times load: the cost Peak EWMA minimizes.
    pub fn cost(&self) -> f64 {
        let at = self.ewma_at.load(Relaxed);
        let rtt = if at == 0 {
            DEFAULT_RTT_NS
        } else {
            f64::from_bits(self.ewma.load(Relaxed))
        };
        rtt * f64::from(self.in_flight() + 1)
    }

    /// The latency estimate, for display.
    pub fn latency(&self) -> Option<Duration> {
        (self.ewma_at.load(Relaxed) != 0)
            .then(|| Duration::from_nanos(f64::from_bits(self.ewma.load(Relaxed)) as u64))
    }
}

/// A request in flight on an endpoint; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Arc<EndpointState> {
        Arc::new(EndpointState::new(SocketAddr::from(([10, 0, 0, 1], 80))))
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let e = ep();
        let a = e.begin();
        let b = e.begin();
        assert_eq!(e.in_flight(), 2);
        drop(a);
        assert_eq!(e.in_flight(), 1);
        drop(b);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn ejection_after_consecutive_failures_with_backoff() {
        let e = ep();
        let p = PassiveHealth::default();
        let t0 = 100 * S;
        assert!(!e.failure(&p, t0));
        assert!(!e.failure(&p, t0));
        e.success(t0);
        // The streak restarted: three more are needed.
        assert!(!e.failure(&p, t0));
        assert!(!e.failure(&p, t0));
        assert!(e.failure(&p, t0));
        assert!(!e.is_available(t0 + 9 * S));
        assert!(e.is_available(t0 + 10 * S));
        // Failing again right after re-admission doubles the time.
        let t1 = t0 + 10 * S;
        for _ in 0..3 {
            e.failure(&p, t1);
        }
        assert!(!e.is_available(t1 + 19 * S));
        assert!(e.is_available(t1 + 20 * S));
        // A success after re-admission starts over from the base time.
        let t2 = t1 + 20 * S;
        e.success(t2);
        for _ in 0..3 {
            e.failure(&p, t2);
        }
        assert!(e.is_available(t2 + 10 * S));
    }

    #[test]
    fn ejection_is_capped_and_can_be_disabled() {
        let e = ep();
        let p = PassiveHealth {
            max_ejection: Duration::from_secs(15),
            ..PassiveHealth::default()
        };
        let mut t = S;
        for _ in 0..5 {
            for _ in 0..3 {
                e.failure(&p, t);
            }
            t += 15 * S;
            assert!(e.is_available(t));
        }
        let off = PassiveHealth {
            consecutive_failures: 0,
            ..PassiveHealth::default()
        };
        let e = ep();
        for _ in 0..10 {
            assert!(!e.failure(&off, S));
        }
        assert!(e.is_available(S));
    }

    #[test]
    fn active_checks_mark_down() {
        let e = ep();
        e.set_down(true);
        assert!(!e.is_available(0));
        e.set_down(false);
        assert!(e.is_available(0));
    }

    #[test]
    fn latency_is_peak_sensitive_and_decays() {
        let e = ep();
        assert_eq!(e.cost(), DEFAULT_RTT_NS);
        e.observe_latency(Duration::from_millis(10), S);
        assert_eq!(e.latency(), Some(Duration::from_millis(10)));
        e.observe_latency(Duration::from_millis(100), 2 * S);
        assert_eq!(
            e.latency(),
            Some(Duration::from_millis(100)),
            "peaks at once"
        );
        e.observe_latency(Duration::from_millis(10), 3 * S);
        let after = e.latency().unwrap();
        assert!(after < Duration::from_millis(100) && after > Duration::from_millis(80));
        for i in 0..100 {
            e.observe_latency(Duration::from_millis(10), (4 + i) * S);
        }
        assert!(e.latency().unwrap() < Duration::from_millis(11));
        let _busy = e.begin();
        assert!(e.cost() > e.latency().unwrap().as_nanos() as f64 * 1.9);
    }
}
