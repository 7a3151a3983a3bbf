//! Rate-limiting arithmetic for `limitCount`, `limitReq` and `limitConn`.
//!
//! Every algorithm here is a pure function of a small state value, a
//! configuration and the current time, so that the proxy can keep the state
//! wherever suits it (see [`super::store`]) and tests can drive time by hand.
//! Time is plain nanoseconds rather than `Instant` because the state must be
//! small and `Copy`, and because integer arithmetic can be made saturating
//! everywhere: a misconfigured window of years or a clock jump must never
//! panic a worker.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds on a monotonic clock.
pub type Nanos = u64;

/// Converts a configured duration, saturating rather than failing, because a
/// window longer than 584 years means "effectively forever" to a limiter.
pub fn to_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where limiters read the time, so that tests can substitute a clock they
/// move by hand instead of sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Nanos;
}

/// Monotonic time since a process-wide epoch (std::time::Instant).
///
/// The epoch is shared so that readings from different limiters, and from
/// different threads, are comparable with one another.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        to_nanos(EPOCH.elapsed())
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn new(start: Nanos) -> Self {
        Self {
            now: AtomicU64::new(start),
        }
    }

    /// Sets the time, also backwards, so that tests can exercise clock jumps.
    pub fn set(&self, now: Nanos) {
        self.now.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let by = to_nanos(by);
        // The closure never returns None, so the update always succeeds.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The configured limit (for X-RateLimit-Limit).
    pub limit: u64,
    /// Requests left in the current window or burst after this one (X-RateLimit-Remaining).
    pub remaining: u64,
    /// Time until the limit resets (window end) or, when refused, until a
    /// request would be allowed (Retry-After, X-RateLimit-Reset).
    pub reset_after: Nanos,
    /// limitReq without nodelay: how long to hold an allowed request so that
    /// requests leave at the configured rate; 0 otherwise.
    pub delay: Nanos,
}

/// Count per fixed window: `limit` requests per `window`, windows aligned to
/// multiples of `window` since the clock's zero.
///
/// Alignment to the clock rather than to each key's first request keeps the
/// state to a start and a count, and makes every key's window end together,
/// which is what clients reading X-RateLimit-Reset expect of a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    pub limit: u64,
    pub window: Nanos,
}

/// Sliding window: the previous window's count weighted by how much of it
/// still overlaps, plus the current count (the estimate Cloudflare/APISIX use).
///
/// The estimate avoids the fixed window's weakness of letting twice the limit
/// through around a boundary, at the cost of one more counter per key instead
/// of a log of timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    pub limit: u64,
    pub window: Nanos,
}

/// Per-key state of both window algorithms: the current window's aligned
/// start, its count, and the count of the window just before it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub start: Nanos,
    pub count: u64,
    pub previous: u64,
}

/// Moves `state` to the window holding `now` and returns how far into that
/// window `now` is.
///
/// A `now` earlier than the state's window is taken as its start (no time
/// passed), so that a clock stepping back neither resets nor underflows the
/// counts. A start that is not aligned to `window` (the window was
/// reconfigured) lasts one new window, then the state moves to the aligned
/// windows.
fn roll(state: &mut WindowState, now: Nanos, window: Nanos) -> Nanos {
    let now = now.max(state.start);
    let since = now - state.start;
    if since < window {
        // Still the same window, the common case: no division needed.
        return since;
    }
    // since >= window, so the aligned start is past the state's start.
    let start = now - now % window;
    state.previous = if start - state.start == window {
        state.count
    } else {
        0
    };
    state.count = 0;
    state.start = start;
    now - start
}

impl FixedWindow {
    pub fn check(&self, state: &mut WindowState, now: Nanos, cost: u64) -> Decision {
        let window = self.window.max(1);
        let elapsed = roll(state, now, window);
        let reset_after = window - elapsed;
        let allowed = match state.count.checked_add(cost) {
            Some(count) if count <= self.limit => {
                state.count = count;
                true
            }
            _ => false,
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(state.count),
            reset_after,
            delay: 0,
        }
    }
}

impl SlidingWindow {
    /// The previous window's weighted share is rounded up to whole requests:
    /// with integer counts and limit, `count + share <= limit` holds exactly
    /// when `count + ceil(share) <= limit`, so nothing is lost, and the hot
    /// path stays at one 64-bit division instead of floats or u128.
    pub fn check(&self, state: &mut WindowState, now: Nanos, cost: u64) -> Decision {
        let window = self.window.max(1);
        let elapsed = roll(state, now, window);
        let share = mul_div_ceil(state.previous, window - elapsed, window);
        let next = state
            .count
            .checked_add(cost)
            .filter(|&c| c.checked_add(share).is_some_and(|used| used <= self.limit));
        let (allowed, reset_after) = match next {
            Some(count) => {
                state.count = count;
                (true, window - elapsed)
            }
            None => (false, self.retry_after(state, window, elapsed, cost)),
        };
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(state.count).saturating_sub(share),
            reset_after,
            delay: 0,
        }
    }

    /// Solves for the first moment at which a request of `cost` would fit:
    /// later in this window if only the previous window's weight is in the
    /// way, otherwise in the next window once this window's count has decayed
    /// enough.
    fn retry_after(&self, state: &WindowState, window: Nanos, elapsed: Nanos, cost: u64) -> Nanos {
        // The elapsed time into a window at which `weight` requests from the
        // window before leave `slack` requests of room: weight * (window - e)
        // <= slack * window.
        let fits_at = |weight: u64, slack: u64| -> Nanos {
            if weight == 0 {
                return 0;
            }
            window - mul_div_floor(slack, window, weight).min(window)
        };
        let to_end = window - elapsed;
        match self.limit.checked_sub(cost) {
            None => to_end,
            Some(room) => match room.checked_sub(state.count) {
                Some(slack) => fits_at(state.previous, slack)
                    .saturating_sub(elapsed)
                    .max(1),
                None => to_end.saturating_add(fits_at(state.count, room)),
            },
        }
    }
}

/// `a * b / d` rounded down, saturating; 128-bit only when the product
/// needs it, because a u128 division is a slow library call.
fn mul_div_floor(a: u64, b: u64, d: u64) -> u64 {
    match a.checked_mul(b) {
        Some(p) => p / d,
        None => u64::try_from(u128::from(a) * u128::from(b) / u128::from(d)).unwrap_or(u64::MAX),
    }
}

/// `a * b / d` rounded up, saturating; see [`mul_div_floor`].
fn mul_div_ceil(a: u64, b: u64, d: u64) -> u64 {
    match a.checked_mul(b) {
        Some(p) => p.div_ceil(d),
        None => u64::try_from((u128::from(a) * u128::from(b)).div_ceil(u128::from(d)))
            .unwrap_or(u64::MAX),
    }
}

/// Leaky bucket as GCRA (generic cell rate algorithm), nginx `limit_req`
/// semantics: `rate` requests per second sustained, up to `burst` extra
/// requests accepted; with `nodelay` the burst is served at once, without it
/// allowed requests beyond the rate are delayed ([`Decision::delay`]) so that
/// they leave at the rate.
///
/// The same arithmetic is a token bucket: a bucket of `burst + 1` tokens
/// refilled at `rate` per second behaves identically with `nodelay`, so
/// token-bucket configurations map onto it with rate = refill and burst =
/// bucket size - 1. GCRA is used because its whole state is one timestamp
/// (the theoretical arrival time), which keeps a key to eight bytes and the
/// check to a few integer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time between requests at the sustained rate (1/rate).
    pub interval: Nanos,
    /// How far ahead of the sustained rate a client may be (burst * interval).
    pub tolerance: Nanos,
    pub nodelay: bool,
    /// For headers: the requests accepted at once from idle, floor(burst) + 1.
    pub limit: u64,
}

impl Gcra {
    /// Returns None for a rate that is not positive and finite, or a burst
    /// that is negative or not finite, since no limiter could honour them.
    pub fn new(rate_per_sec: f64, burst: f64, nodelay: bool) -> Option<Gcra> {
        if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 || !burst.is_finite() || burst < 0.0 {
            return None;
        }
        // Float-to-int casts saturate; an interval of 0 would mean no limit.
        let interval = ((1e9 / rate_per_sec).round() as u64).max(1);
        let tolerance = (burst * interval as f64).round() as u64;
        let limit = (burst.floor() as u64).saturating_add(1);
        Some(Gcra {
            interval,
            tolerance,
            nodelay,
            limit,
        })
    }

    /// Checks one request against `tat`, the key's theoretical arrival time
    /// (0 for a key never seen).
    ///
    /// After an allowed request `tat` is at most `now + tolerance +
    /// interval`; a larger `tat` can only come from the clock stepping back,
    /// and is clamped to that bound so that a backwards jump costs at most
    /// one interval of waiting instead of the size of the jump.
    pub fn check(&self, tat: &mut Nanos, now: Nanos) -> Decision {
        let horizon = self.tolerance.saturating_add(self.interval);
        *tat = (*tat).min(now.saturating_add(horizon));
        let allowed_from = tat.saturating_sub(self.tolerance);
        if now < allowed_from {
            return Decision {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset_after: allowed_from - now,
                delay: 0,
            };
        }
        let departs = (*tat).max(now);
        *tat = departs.saturating_add(self.interval);
        let ahead = *tat - now;
        let remaining = match self.tolerance.checked_sub(ahead) {
            Some(room) => (room / self.interval).saturating_add(1),
            None => 0,
        };
        Decision {
            allowed: true,
            limit: self.limit,
            remaining,
            reset_after: ahead,
            delay: if self.nodelay { 0 } else { departs - now },
        }
    }
}

/// Concurrent in-flight requests per key with optional burst: up to
/// `max + burst` at once.
///
/// The count is an atomic outside any lock so that a finished request can
/// release its slot without touching the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub max: u64,
    pub burst: u64,
}

impl Concurrency {
    /// Takes a slot when one is free. A compare-and-swap loop rather than an
    /// increment followed by a check, so that racing requests never push the
    /// count past `max + burst`, not even for a moment.
    ///
    /// The decision's `limit` is `max + burst`, the most that can be in
    /// flight, so that `remaining` never exceeds it; callers that delay
    /// requests beyond `max` (the burst part) find the excess as
    /// `limit - remaining - max`.
    pub fn try_acquire(&self, in_flight: &AtomicU64) -> Decision {
        let cap = self.max.saturating_add(self.burst);
        let mut current = in_flight.load(Ordering::Acquire);
        loop {
            if current >= cap {
                return Decision {
                    allowed: false,
                    limit: cap,
                    remaining: 0,
                    reset_after: 0,
                    delay: 0,
                };
            }
            match in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Decision {
                        allowed: true,
                        limit: cap,
                        remaining: cap - current - 1,
                        reset_after: 0,
                        delay: 0,
                    };
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Frees a slot; saturating, so that a release without a matching
    /// acquire cannot wrap the count and lock the key out.
    pub fn release(in_flight: &AtomicU64) {
        // Err only means the count was already 0, which is what saturating asks.
        let _ = in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    const MS: Nanos = 1_000_000;
    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn manual_clock_moves_by_hand_and_saturates() {
        let clock = ManualClock::new(5);
        assert_eq!(clock.now(), 5);
        clock.advance(Duration::from_millis(2));
        assert_eq!(clock.now(), 5 + 2 * MS);
        clock.set(1);
        assert_eq!(clock.now(), 1);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), u64::MAX);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
    }

    #[test]
    fn fixed_window_counts_and_reports() {
        let fw = FixedWindow {
            limit: 3,
            window: 10 * SEC,
        };
        let mut st = WindowState::default();
        let clock = ManualClock::new(100 * SEC + 4 * SEC);
        let d = fw.check(&mut st, clock.now(), 1);
        assert_eq!(
            d,
            Decision {
                allowed: true,
                limit: 3,
                remaining: 2,
                reset_after: 6 * SEC,
                delay: 0,
            }
        );
        assert_eq!(st.start, 100 * SEC);
        clock.advance(Duration::from_secs(1));
        assert_eq!(fw.check(&mut st, clock.now(), 1).remaining, 1);
        assert_eq!(fw.check(&mut st, clock.now(), 1).remaining, 0);
        let refused = fw.check(&mut st, clock.now(), 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_after, 5 * SEC);
        assert_eq!(st.count, 3, "a refused request is not counted");
    }

    #[test]
    fn fixed_window_boundary_starts_a_new_window() {
        let fw = FixedWindow {
            limit: 2,
            window: SEC,
        };
        let mut st = WindowState::default();
        assert!(fw.check(&mut st, 2 * SEC - 1, 1).allowed);
        assert!(fw.check(&mut st, 2 * SEC - 1, 1).allowed);
        let last = fw.check(&mut st, 2 * SEC - 1, 1);
        assert!(!last.allowed);
        assert_eq!(last.reset_after, 1);
        let d = fw.check(&mut st, 2 * SEC, 1);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_after), (1, SEC));
        assert_eq!(
            st,
            WindowState {
                start: 2 * SEC,
                count: 1,
                previous: 2
            }
        );
        // Skipping a whole window forgets the previous count.
        fw.check(&mut st, 4 * SEC, 1);
        assert_eq!(st.previous, 0);
    }

    #[test]
    fn fixed_window_cost_and_zero_limit() {
        let fw = FixedWindow {
            limit: 10,
            window: SEC,
        };
        let mut st = WindowState::default();
        let d = fw.check(&mut st, 0, 7);
        assert_eq!((d.allowed, d.remaining), (true, 3));
        let d = fw.check(&mut st, 0, 4);
        assert_eq!((d.allowed, d.remaining), (false, 3));
        assert!(fw.check(&mut st, 0, 3).allowed);

        let none = FixedWindow {
            limit: 0,
            window: SEC,
        };
        assert!(!none.check(&mut WindowState::default(), 0, 1).allowed);
    }

    #[test]
    fn sliding_window_interpolates_previous_window() {
        let sw = SlidingWindow {
            limit: 10,
            window: 4 * SEC,
        };
        let mut st = WindowState::default();
        for _ in 0..10 {
            assert!(sw.check(&mut st, SEC, 1).allowed);
        }
        assert!(!sw.check(&mut st, SEC, 1).allowed);
        // 25% into the next window: 10 * 0.75 = 7.5 still counts.
        let now = 4 * SEC + SEC;
        let d = sw.check(&mut st, now, 1);
        assert_eq!((d.allowed, d.remaining, d.reset_after), (true, 1, 3 * SEC));
        assert_eq!((st.previous, st.count), (10, 1));
        let d = sw.check(&mut st, now, 1);
        assert_eq!((d.allowed, d.remaining), (true, 0), "7.5 + 2 <= 10");
        let d = sw.check(&mut st, now, 1);
        assert!(!d.allowed, "7.5 + 3 > 10");
        // 7.5 + 2 + 1 fits once the previous weight is down to 7: at 30%.
        assert_eq!(d.reset_after, 4 * SEC * 30 / 100 - SEC);
        assert!(!sw.check(&mut st, now + d.reset_after - 1, 1).allowed);
        assert!(sw.check(&mut st, now + d.reset_after, 1).allowed);
    }

    #[test]
    fn sliding_window_retry_in_next_window() {
        let sw = SlidingWindow {
            limit: 4,
            window: 10 * SEC,
        };
        let mut st = WindowState::default();
        for _ in 0..4 {
            assert!(sw.check(&mut st, 8 * SEC, 1).allowed);
        }
        let d = sw.check(&mut st, 8 * SEC, 1);
        assert!(!d.allowed);
        // Next window: 4 * (1 - e/10) + 1 <= 4 needs e >= 2.5 s.
        assert_eq!(d.reset_after, 2 * SEC + 2_500 * MS);
        let at = 8 * SEC + d.reset_after;
        assert!(!sw.check(&mut st, at - 1, 1).allowed);
        assert!(sw.check(&mut st, at, 1).allowed);
        // A cost above the limit never fits: report the window end.
        let d = sw.check(&mut st, at, 5);
        assert_eq!((d.allowed, d.reset_after), (false, 7_500 * MS));
    }

    #[test]
    fn sliding_window_two_windows_later_forgets() {
        let sw = SlidingWindow {
            limit: 1,
            window: SEC,
        };
        let mut st = WindowState::default();
        assert!(sw.check(&mut st, 0, 1).allowed);
        assert!(!sw.check(&mut st, SEC, 1).allowed);
        assert!(sw.check(&mut st, 2 * SEC, 1).allowed);
    }

    #[test]
    fn windows_treat_backwards_clock_as_no_time_passed() {
        let fw = FixedWindow {
            limit: 2,
            window: SEC,
        };
        let mut st = WindowState::default();
        assert!(fw.check(&mut st, 10 * SEC, 1).allowed);
        let d = fw.check(&mut st, 3 * SEC, 1);
        assert_eq!((d.allowed, d.remaining, d.reset_after), (true, 0, SEC));
        assert!(!fw.check(&mut st, 0, 1).allowed);
        assert_eq!(st.start, 10 * SEC);

        let sw = SlidingWindow {
            limit: 2,
            window: SEC,
        };
        let mut st = WindowState::default();
        assert!(sw.check(&mut st, 10 * SEC, 1).allowed);
        assert!(sw.check(&mut st, SEC, 1).allowed);
        assert!(!sw.check(&mut st, 0, 1).allowed);
    }

    #[test]
    fn windows_survive_huge_values() {
        for window in [u64::MAX, u64::MAX - 1, 0, 1] {
            let fw = FixedWindow {
                limit: u64::MAX,
                window,
            };
            let sw = SlidingWindow {
                limit: u64::MAX,
                window,
            };
            for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                let mut a = WindowState::default();
                let mut b = WindowState::default();
                assert!(fw.check(&mut a, now, u64::MAX).allowed);
                assert!(!fw.check(&mut a, now, 1).allowed, "count cannot wrap");
                assert!(sw.check(&mut b, now, u64::MAX - 1).allowed);
                let d = sw.check(&mut b, now, u64::MAX);
                assert!(!d.allowed);
                let _ = sw.check(&mut b, now.saturating_add(window), u64::MAX);
            }
        }
        let mut st = WindowState {
            start: 0,
            count: u64::MAX,
            previous: u64::MAX,
        };
        let sw = SlidingWindow {
            limit: u64::MAX,
            window: u64::MAX,
        };
        assert!(!sw.check(&mut st, 7, 1).allowed);
    }

    #[test]
    fn gcra_rejects_invalid_configuration() {
        assert!(Gcra::new(0.0, 1.0, true).is_none());
        assert!(Gcra::new(-1.0, 1.0, true).is_none());
        assert!(Gcra::new(f64::NAN, 1.0, true).is_none());
        assert!(Gcra::new(f64::INFINITY, 1.0, true).is_none());
        assert!(Gcra::new(1.0, -1.0, true).is_none());
        assert!(Gcra::new(1.0, f64::NAN, true).is_none());
        let g = Gcra::new(10.0, 5.0, true);
        assert_eq!(
            g,
            Some(Gcra {
                interval: 100 * MS,
                tolerance: 500 * MS,
                nodelay: true,
                limit: 6
            })
        );
        assert_eq!(Gcra::new(2.0, 2.5, false).map(|g| g.limit), Some(3));
    }

    #[test]
    fn gcra_burst_then_refill() {
        let Some(g) = Gcra::new(10.0, 5.0, true) else {
            panic!("valid configuration");
        };
        let clock = ManualClock::new(1_000 * SEC);
        let mut tat = 0;
        for i in 0..6 {
            let d = g.check(&mut tat, clock.now());
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 5 - i);
            assert_eq!(d.reset_after, (i + 1) * 100 * MS);
            assert_eq!(d.delay, 0);
        }
        let d = g.check(&mut tat, clock.now());
        assert_eq!(
            (d.allowed, d.remaining, d.reset_after),
            (false, 0, 100 * MS)
        );
        clock.advance(Duration::from_millis(99));
        assert!(!g.check(&mut tat, clock.now()).allowed);
        clock.advance(Duration::from_millis(1));
        let d = g.check(&mut tat, clock.now());
        assert_eq!((d.allowed, d.remaining), (true, 0));
        assert!(!g.check(&mut tat, clock.now()).allowed);
        // Idle long enough, the whole burst is back.
        clock.advance(Duration::from_secs(10));
        assert_eq!(g.check(&mut tat, clock.now()).remaining, 5);
    }

    #[test]
    fn gcra_without_nodelay_spaces_requests_at_the_rate() {
        let Some(g) = Gcra::new(10.0, 5.0, false) else {
            panic!("valid configuration");
        };
        let now = 50 * SEC;
        let mut tat = 0;
        let delays: Vec<_> = (0..6).map(|_| g.check(&mut tat, now).delay).collect();
        assert_eq!(delays, [0, 100, 200, 300, 400, 500].map(|d| d * MS));
        assert!(!g.check(&mut tat, now).allowed);
        // Requests at exactly the rate are never delayed once drained.
        let mut tat = 0;
        for i in 0..20 {
            let d = g.check(&mut tat, now + i * 100 * MS);
            assert_eq!((d.allowed, d.delay), (true, 0));
        }
    }

    #[test]
    fn gcra_without_burst_allows_one_per_interval() {
        let Some(g) = Gcra::new(1.0, 0.0, true) else {
            panic!("valid configuration");
        };
        let mut tat = 0;
        let d = g.check(&mut tat, SEC);
        assert_eq!((d.allowed, d.remaining, d.limit), (true, 0, 1));
        assert_eq!(g.check(&mut tat, 2 * SEC - 1).reset_after, 1);
        assert!(g.check(&mut tat, 2 * SEC).allowed);
    }

    #[test]
    fn gcra_backwards_clock_costs_at_most_one_interval() {
        let Some(g) = Gcra::new(10.0, 5.0, true) else {
            panic!("valid configuration");
        };
        let mut tat = 0;
        assert!(g.check(&mut tat, 3_600 * SEC).allowed);
        let back = 1_000 * SEC;
        let d = g.check(&mut tat, back);
        assert!(!d.allowed);
        assert_eq!(d.reset_after, 100 * MS);
        assert!(g.check(&mut tat, back + 100 * MS).allowed);
    }

    #[test]
    fn gcra_survives_huge_values() {
        for (rate, burst) in [
            (1e-30, 1e30),
            (1e30, 0.0),
            (f64::MAX, f64::MAX),
            (1e-12, 0.5),
        ] {
            let Some(g) = Gcra::new(rate, burst, false) else {
                panic!("valid configuration {rate} {burst}");
            };
            assert!(g.interval >= 1);
            for now in [0, 1, u64::MAX - 1, u64::MAX] {
                let mut tat = 0;
                let _ = g.check(&mut tat, now);
                let _ = g.check(&mut tat, now);
                let mut tat = u64::MAX;
                let _ = g.check(&mut tat, now);
            }
        }
    }

    #[test]
    fn concurrency_acquire_release() {
        let c = Concurrency { max: 2, burst: 1 };
        let n = AtomicU64::new(0);
        let granted: Vec<_> = (0..3).map(|_| c.try_acquire(&n)).collect();
        assert!(granted.iter().all(|d| d.allowed && d.limit == 3));
        let remaining: Vec<_> = granted.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = c.try_acquire(&n);
        assert!(!refused.allowed);
        assert_eq!(n.load(Ordering::SeqCst), 3);
        Concurrency::release(&n);
        assert!(c.try_acquire(&n).allowed);
        for _ in 0..10 {
            Concurrency::release(&n);
        }
        assert_eq!(n.load(Ordering::SeqCst), 0, "release saturates");
        let none = Concurrency { max: 0, burst: 0 };
        assert!(!none.try_acquire(&n).allowed);
        let huge = Concurrency {
            max: u64::MAX,
            burst: u64::MAX,
        };
        let n = AtomicU64::new(u64::MAX - 1);
        assert!(huge.try_acquire(&n).allowed);
        assert!(!huge.try_acquire(&n).allowed);
    }

    #[test]
    fn concurrency_never_exceeds_cap_across_threads() {
        const CAP: u64 = 5;
        let c = Concurrency { max: 3, burst: 2 };
        let n = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (n, peak) = (Arc::clone(&n), Arc::clone(&peak));
                thread::spawn(move || {
                    let mut granted = 0u32;
                    for _ in 0..20_000 {
                        if c.try_acquire(&n).allowed {
                            granted += 1;
                            peak.fetch_max(n.load(Ordering::SeqCst), Ordering::SeqCst);
                            Concurrency::release(&n);
                        }
                    }
                    granted
                })
            })
            .collect();
        let granted: u32 = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .sum();
        assert!(granted > 0);
        assert!(peak.load(Ordering::SeqCst) <= CAP);
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
