//! Which instances a request tries, in which order, and their passive
//! health.
//!
//! Instances are tried by descending priority; instances of one priority
//! come in a weighted random order, so that they share requests by
//! weight and a request whose first choice fails moves to another of the
//! same priority before a lower one. An instance that failed `failures`
//! times in a row (each failure a fallback condition: 429, 5xx, timeout,
//! unreachable) is set aside for `ejectionTime`, doubled at each ejection
//! without a success in between (up to [`MAX_EJECTION`]); once its time
//! is up it gets requests again, and one more failure sets it aside at
//! once. Instances set aside are tried last rather than never, so that a
//! route whose every instance failed recently still tries.
//!
//! The state is kept per route and settings across route tables (see
//! [`crate::plugins::shared_state`]), so a new table (a rotated key, an
//! unrelated change) does not forget which instance is failing.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest an instance is set aside.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// One instance's health.
#[derive(Debug, Default)]
struct State {
    /// Failures in a row since the last success or ejection.
    failures: u32,
    /// Ejections in a row, without a success in between.
    ejections: u32,
    until: Option<Instant>,
}

/// The passive health of a route's instances.
#[derive(Debug)]
pub struct Health {
    states: Box<[Mutex<State>]>,
    failures: u32,
    base: Duration,
}

impl Health {
    pub fn new(instances: usize, failures: u32, base: Duration) -> Health {
        Health {
            states: (0..instances).map(|_| Mutex::default()).collect(),
            failures: failures.max(1),
            base,
        }
    }

    fn state(&self, i: usize) -> Option<std::sync::MutexGuard<'_, State>> {
        self.states
            .get(i)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether instance `i` is set aside at `now`.
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        self.state(i)
            .is_some_and(|s| s.until.is_some_and(|u| now < u))
    }

    pub fn success(&self, i: usize) {
        if let Some(mut s) = self.state(i) {
            *s = State::default();
        }
    }

    /// Counts a failure; returns the time `i` is now set aside for, if
    /// this failure ejected it.
    pub fn failure(&self, i: usize, now: Instant) -> Option<Duration> {
        let mut s = self.state(i)?;
        s.failures += 1;
        // Back from an ejection without a success: one failure is enough.
        if s.failures < self.failures && s.ejections == 0 {
            return None;
        }
        let shift = s.ejections.min(16);
        let time = self.base.saturating_mul(1u32 << shift).min(MAX_EJECTION);
        s.ejections += 1;
        s.failures = 0;
        s.until = Some(now + time);
        Some(time)
    }
}

/// An instance as ordering sees it.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub priority: i32,
    pub weight: u32,
}

/// The order in which a request tries `choices`: by descending priority,
/// weighted random within a priority, instances set aside last.
pub fn order(choices: &[Choice], health: &Health, now: Instant) -> Vec<usize> {
    let mut by_priority: Vec<usize> = (0..choices.len()).collect();
    by_priority.sort_by_key(|&i| std::cmp::Reverse(choices[i].priority));
    let mut out = Vec::with_capacity(choices.len());
    let mut start = 0;
    while start < by_priority.len() {
        let p = choices[by_priority[start]].priority;
        let end = by_priority[start..]
            .iter()
            .position(|&i| choices[i].priority != p)
            .map_or(by_priority.len(), |n| start + n);
        let mut group: Vec<usize> = by_priority[start..end].to_vec();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|&i| u64::from(choices[i].weight)).sum();
            let mut pick = fastrand::u64(0..total.max(1));
            let mut at = 0;
            for (n, &i) in group.iter().enumerate() {
                let w = u64::from(choices[i].weight);
                if pick < w {
                    at = n;
                    break;
                }
                pick -= w;
            }
            out.push(group.remove(at));
        }
        start = end;
    }
    let (healthy, ejected): (Vec<usize>, Vec<usize>) =
        out.into_iter().partition(|&i| !health.is_ejected(i, now));
    healthy.into_iter().chain(ejected).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(priority: i32, weight: u32) -> Choice {
        Choice { priority, weight }
    }

    #[test]
    fn priorities_first_weights_within() {
        let h = Health::new(4, 3, Duration::from_secs(10));
        let choices = [c(0, 1), c(10, 3), c(10, 1), c(-5, 1)];
        let now = Instant::now();
        let mut first = [0u32; 4];
        for _ in 0..4000 {
            let o = order(&choices, &h, now);
            assert_eq!(o.len(), 4);
            assert!(o[..2].contains(&1) && o[..2].contains(&2), "{o:?}");
            assert_eq!(&o[2..], &[0, 3]);
            first[o[0]] += 1;
        }
        // 3:1 within priority 10.
        assert!((2700..3300).contains(&first[1]), "{first:?}");
    }

    #[test]
    fn failing_instances_are_set_aside_with_backoff() {
        let h = Health::new(2, 3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(h.failure(0, t0), None);
        assert_eq!(h.failure(0, t0), None);
        assert_eq!(h.failure(0, t0), Some(Duration::from_secs(10)));
        assert!(h.is_ejected(0, t0));
        let choices = [c(1, 1), c(0, 1)];
        assert_eq!(order(&choices, &h, t0), [1, 0], "set aside: tried last");
        let back = t0 + Duration::from_secs(11);
        assert!(!h.is_ejected(0, back));
        assert_eq!(order(&choices, &h, back), [0, 1]);
        // One failure after coming back doubles the time.
        assert_eq!(h.failure(0, back), Some(Duration::from_secs(20)));
        // A success forgets it all.
        h.success(0);
        assert!(!h.is_ejected(0, back));
        assert_eq!(h.failure(0, back), None);
        // Capped.
        let h = Health::new(1, 1, Duration::from_secs(100));
        for _ in 0..10 {
            h.failure(0, t0);
        }
        assert_eq!(h.failure(0, t0), Some(MAX_EJECTION));
    }
}
