//! The wall-clock time of an [`Instant`] the request pipeline has already
//! read.
//!
//! A logged or traced request needs the wall-clock time it started at, and
//! the pipeline has read the monotonic clock at that moment anyway.
//! Reading the system clock again cost a `clock_gettime` per request (a
//! few dozen nanoseconds in a virtual machine). Instead each thread keeps
//! one pair of readings of both clocks, taken together and renewed once it
//! is [`RENEW`] old, and adds the monotonic time elapsed since. nginx keeps
//! its time the same way, per event loop iteration.
//!
//! The cost: between renewals the result follows the monotonic clock, so
//! a step of the wall clock (an NTP correction, an operator's `date`)
//! shows within [`RENEW`], and slewing is off by its rate over at most that
//! long (parts per million).

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime};

/// How long a thread's pair of readings is used.
const RENEW: Duration = Duration::from_secs(1);

thread_local! {
    static PAIR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
}

/// The wall-clock time at `at`, an instant at most a little in the past.
pub fn at(at: Instant) -> SystemTime {
    PAIR.with(|pair| {
        if let Some((mono, wall)) = pair.get() {
            match at.checked_duration_since(mono) {
                Some(after) if after < RENEW => return wall + after,
                None if mono - at < RENEW => return wall - (mono - at),
                _ => {}
            }
        }
        let mono = Instant::now();
        let wall = SystemTime::now();
        pair.set(Some((mono, wall)));
        wall.checked_sub(mono.saturating_duration_since(at))
            .unwrap_or(wall)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apart(a: SystemTime, b: SystemTime) -> Duration {
        a.duration_since(b).unwrap_or_else(|e| e.duration())
    }

    #[test]
    fn an_instant_maps_to_its_wall_time() {
        let before = Instant::now();
        let first = at(before);
        assert!(apart(first, SystemTime::now()) < Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(20));
        let later = Instant::now();
        let second = at(later);
        // The pair read for `before` is used: the monotonic difference
        // carries over exactly.
        assert_eq!(second.duration_since(first).unwrap(), later - before);
        // An instant before the pair's reading maps backwards.
        assert_eq!(at(before), first);
    }

    #[test]
    fn an_old_pair_is_renewed() {
        let old = Instant::now();
        at(old);
        std::thread::sleep(RENEW + Duration::from_millis(10));
        let now = Instant::now();
        let wall = at(now);
        assert!(apart(wall, SystemTime::now()) < Duration::from_millis(50));
        // And an instant older than the renewal still maps near its time.
        let back = at(old);
        let gap = apart(wall, back);
        assert!(
            gap >= RENEW && gap < RENEW + Duration::from_millis(100),
            "{gap:?}"
        );
    }
}
