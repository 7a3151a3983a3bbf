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

impl FixedWindow {
    /// Admission against a budget spent after the fact (token budgets):
    /// allowed while anything is left, whatever the request will cost.
    pub fn peek(&self, state: &mut WindowState, now: Nanos) -> Decision {
        let window = self.window.max(1);
        let elapsed = roll(state, now, window);
        Decision {
            allowed: state.count < self.limit,
            limit: self.limit,
            remaining: self.limit.saturating_sub(state.count),
            reset_after: window - elapsed,
            delay: 0,
        }
    }

    /// Adds what a request cost, past the limit if need be: it was spent.
    pub fn charge(&self, state: &mut WindowState, now: Nanos, cost: u64) {
        roll(state, now, self.window.max(1));
        state.count = state.count.saturating_add(cost);
    }
}

impl SlidingWindow {
    /// Like [`FixedWindow::peek`], over the sliding estimate; a refused
    /// request learns when the estimate will have room for one token.
    pub fn peek(&self, state: &mut WindowState, now: Nanos) -> Decision {
        let window = self.window.max(1);
        let elapsed = roll(state, now, window);
        let share = mul_div_ceil(state.previous, window - elapsed, window);
        let used = state.count.saturating_add(share);
        let allowed = used < self.limit;
        Decision {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(used),
            reset_after: if allowed {
                window - elapsed
            } else {
                self.retry_after(state, window, elapsed, 1)
            },
            delay: 0,
        }
    }

    /// Like [`FixedWindow::charge`].
    pub fn charge(&self, state: &mut WindowState, now: Nanos, cost: u64) {
        roll(state, now, self.window.max(1));
        state.count = state.count.saturating_add(cost);
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
#[path = "algorithms_tests.rs"]
mod tests;
