//! Tests of the limiting algorithms.

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

#[test]
fn budgets_admit_while_anything_is_left_and_charge_what_was_spent() {
    let fw = FixedWindow {
        limit: 100,
        window: SEC,
    };
    let mut st = WindowState::default();
    let d = fw.peek(&mut st, 0);
    assert!(d.allowed);
    assert_eq!((d.remaining, d.reset_after), (100, SEC));
    // A request admitted with budget left may spend past it.
    fw.charge(&mut st, 10 * MS, 99);
    assert!(fw.peek(&mut st, 20 * MS).allowed);
    fw.charge(&mut st, 30 * MS, 50);
    let d = fw.peek(&mut st, 500 * MS);
    assert!(!d.allowed);
    assert_eq!((d.remaining, d.reset_after), (0, 500 * MS));
    // The next window starts afresh.
    assert!(fw.peek(&mut st, SEC).allowed);

    let sw = SlidingWindow {
        limit: 100,
        window: SEC,
    };
    let mut st = WindowState::default();
    sw.charge(&mut st, 0, 100);
    assert!(!sw.peek(&mut st, 900 * MS).allowed);
    // The previous window weighs all of itself at the boundary; room for
    // one token comes when a hundredth of it has slid out.
    let d = sw.peek(&mut st, SEC);
    assert!(!d.allowed);
    assert_eq!(d.reset_after, 10 * MS);
    // Half of the previous window still counts half a window later.
    let d = sw.peek(&mut st, 1500 * MS);
    assert!(d.allowed);
    assert_eq!(d.remaining, 50);
}
