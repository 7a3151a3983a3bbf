//! How the connection to the API server is doing: retry pacing, failure
//! streaks, and per-kind watch health for `/readyz` and `/metrics`.
//!
//! A watch that fails keeps serving its last objects and retries. Three
//! things matter while it does:
//!
//! - **pacing** ([`RetryBackoff`]): retries grow exponentially but are
//!   capped low (5 s by default), so that every watch resumes within
//!   seconds of the API server's return; each delay is jittered so that
//!   many replicas restarted by the same outage do not hit the API server
//!   in lockstep. kube-runtime's default (800 ms doubling to 30 s, plus up
//!   to 100 % jitter) lets a watch sleep up to a minute after the API
//!   server is back.
//! - **logging** ([`Streak`]): one line when a failure streak starts, one
//!   when it ends, never one per retry.
//! - **reporting** ([`WatchHealth`]): whether each kind has listed, is
//!   failing (since when, how often, why), and when it last delivered an
//!   object, aggregated per kind so that metric labels stay bounded.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::translate::Kind;

/// Exponential backoff with "equal jitter": the n-th delay is drawn from
/// `[d/2, d]` with `d = min(max, initial * 2^n)`. Half of each delay is
/// random, which spreads replicas over the window, and no delay exceeds
/// `max`, which bounds how long a retry can lag behind a recovery.
#[derive(Clone, Debug)]
pub struct RetryBackoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

/// The first retry of a watch waits about this long.
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// The default cap on a watch's retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

impl RetryBackoff {
    pub fn new(initial: Duration, max: Duration) -> RetryBackoff {
        RetryBackoff {
            initial: initial.min(max),
            max,
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// The same delays drawn from a seeded generator, for tests.
    pub fn seeded(initial: Duration, max: Duration, seed: u64) -> RetryBackoff {
        RetryBackoff {
            rng: fastrand::Rng::with_seed(seed),
            ..RetryBackoff::new(initial, max)
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(self.rng.f64())
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A run of consecutive failures of one loop (a watch, the lease).
#[derive(Debug, Default)]
pub struct Streak {
    since: Option<Instant>,
    errors: u64,
}

impl Streak {
    /// Counts a failure; true when it starts a new streak (log it then).
    pub fn fail(&mut self) -> bool {
        self.errors += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            true
        } else {
            false
        }
    }

    /// Ends the streak; its length and error count when there was one
    /// (log the recovery then).
    pub fn recover(&mut self) -> Option<(Duration, u64)> {
        let since = self.since.take()?;
        let errors = std::mem::take(&mut self.errors);
        Some((since.elapsed(), errors))
    }

    pub fn is_failing(&self) -> bool {
        self.since.is_some()
    }
}

/// A kube error in one line: `403 Forbidden: ...` for API errors, the
/// innermost causes for transport errors. kube's own `Display` of API
/// errors appends the whole `Status` object in debug form.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                "Error"
            } else {
                &s.reason
            };
            format!("{} {}: {}", s.code, reason, s.message)
        }
        other => chain(other),
    }
}

/// An error and its sources, joined with `: `, each said once.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The kube error inside a watcher error.
pub fn watcher_cause(error: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error as W;
    match error {
        W::InitialListFailed(e) => format!("list: {}", describe(e)),
        W::WatchStartFailed(e) => format!("watch: {}", describe(e)),
        W::WatchFailed(e) => format!("watch stream: {}", describe(e)),
        W::WatchError(s) => format!("watch: {} {}: {}", s.code, s.reason, s.message),
        W::NoResourceVersion => error.to_string(),
    }
}

/// True for a 403 from the API server.
pub fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403)
}

/// One watcher's state.
#[derive(Debug)]
struct Watcher {
    kind: Kind,
    synced: bool,
    failing_since: Option<Instant>,
    last_error: Option<String>,
    errors: u64,
    last_event: Option<Instant>,
}

/// Identifies a watcher registered with [`WatchHealth`].
#[derive(Clone, Copy, Debug)]
pub struct WatcherId(usize);

/// The health of every watcher, shared with the admin server.
#[derive(Debug, Default)]
pub struct WatchHealth {
    watchers: Mutex<Vec<Watcher>>,
}

/// The health of one kind's watchers (one per watched namespace).
#[derive(Clone, Debug, PartialEq)]
pub struct KindHealth {
    pub kind: Kind,
    /// Every watcher of the kind has listed at least once.
    pub synced: bool,
    /// No watcher of the kind is in a failure streak.
    pub healthy: bool,
    /// How long the oldest current failure streak has lasted.
    pub failing_for: Option<Duration>,
    /// The latest error of a failing watcher.
    pub last_error: Option<String>,
    /// Failures since start.
    pub errors: u64,
    /// Since the kind's watchers last delivered an object or a list.
    pub last_event_age: Option<Duration>,
}

impl WatchHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(&self, kind: Kind) -> WatcherId {
        let mut w = self.lock();
        w.push(Watcher {
            kind,
            synced: false,
            failing_since: None,
            last_error: None,
            errors: 0,
            last_event: None,
        });
        WatcherId(w.len() - 1)
    }

    /// An object or a list arrived.
    pub fn event(&self, id: WatcherId) {
        if let Some(w) = self.lock().get_mut(id.0) {
            w.last_event = Some(Instant::now());
        }
    }

    /// A (re)list completed: the watcher is synced and healthy.
    pub fn listed(&self, id: WatcherId) {
        if let Some(w) = self.lock().get_mut(id.0) {
            w.synced = true;
            w.failing_since = None;
            w.last_error = None;
            w.last_event = Some(Instant::now());
        }
    }

    /// A request of the watcher failed.
    pub fn failed(&self, id: WatcherId, error: String) {
        if let Some(w) = self.lock().get_mut(id.0) {
            w.errors += 1;
            w.failing_since.get_or_insert_with(Instant::now);
            w.last_error = Some(error);
        }
    }

    /// Per kind, in the order of [`Kind`].
    pub fn report(&self) -> Vec<KindHealth> {
        let now = Instant::now();
        let mut by_kind: BTreeMap<&'static str, KindHealth> = BTreeMap::new();
        for w in self.lock().iter() {
            let h = by_kind.entry(w.kind.as_str()).or_insert(KindHealth {
                kind: w.kind,
                synced: true,
                healthy: true,
                failing_for: None,
                last_error: None,
                errors: 0,
                last_event_age: None,
            });
            h.synced &= w.synced;
            h.errors += w.errors;
            if let Some(since) = w.failing_since {
                h.healthy = false;
                let age = now.saturating_duration_since(since);
                h.failing_for = Some(h.failing_for.map_or(age, |a| a.max(age)));
                if h.last_error.is_none() {
                    h.last_error.clone_from(&w.last_error);
                }
            }
            if let Some(t) = w.last_event {
                let age = now.saturating_duration_since(t);
                h.last_event_age = Some(h.last_event_age.map_or(age, |a| a.min(age)));
            }
        }
        by_kind.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_under_the_cap_and_are_jittered() {
        let max = Duration::from_secs(5);
        let mut b = RetryBackoff::seeded(Duration::from_millis(500), max, 7);
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
        // The first is within [250 ms, 500 ms], the second [500 ms, 1 s].
        assert!(delays[0] >= Duration::from_millis(250) && delays[0] <= Duration::from_millis(500));
        assert!(delays[1] >= Duration::from_millis(500) && delays[1] <= Duration::from_secs(1));
        for d in &delays {
            assert!(*d <= max, "{d:?} above the cap");
        }
        // Once capped, every delay is in [max/2, max] and they differ.
        let capped = &delays[10..];
        assert!(capped.iter().all(|d| *d >= max / 2));
        let distinct: std::collections::BTreeSet<_> = capped.iter().collect();
        assert!(
            distinct.len() > capped.len() / 2,
            "not jittered: {capped:?}"
        );
        // A reset starts over.
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn two_replicas_do_not_retry_in_lockstep() {
        let max = Duration::from_secs(5);
        let mut a = RetryBackoff::seeded(Duration::from_millis(500), max, 1);
        let mut b = RetryBackoff::seeded(Duration::from_millis(500), max, 2);
        let same = (0..20).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 3, "{same} equal delays");
    }

    #[test]
    fn a_streak_is_reported_once_and_ended_once() {
        let mut s = Streak::default();
        assert_eq!(s.recover(), None);
        assert!(s.fail());
        assert!(!s.fail());
        assert!(!s.fail());
        assert!(s.is_failing());
        let (_, errors) = s.recover().expect("a streak");
        assert_eq!(errors, 3);
        assert!(!s.is_failing());
        assert_eq!(s.recover(), None);
        assert!(s.fail());
    }

    #[test]
    fn api_errors_are_one_line_without_the_status_dump() {
        let status = kube::core::Status::failure(
            "leases.coordination.k8s.io \"x\" is forbidden: User \"system:serviceaccount:a:b\" cannot get resource \"leases\"",
            "Forbidden",
        )
        .with_code(403);
        let e = kube::Error::Api(Box::new(status));
        let text = describe(&e);
        assert!(
            text.starts_with("403 Forbidden: leases.coordination.k8s.io"),
            "{text}"
        );
        assert!(!text.contains("Status {"), "{text}");
        assert!(!text.contains('\n'));
        assert!(is_forbidden(&e));
    }

    #[test]
    fn health_is_aggregated_per_kind() {
        let h = WatchHealth::default();
        let a = h.register(Kind::Service);
        let b = h.register(Kind::Service);
        let c = h.register(Kind::Ingress);
        h.listed(a);
        h.listed(c);
        let r = h.report();
        let svc = r.iter().find(|k| k.kind == Kind::Service).unwrap();
        assert!(!svc.synced, "one Service watcher has not listed");
        h.listed(b);
        h.failed(b, "503 ServiceUnavailable: down".into());
        h.failed(b, "503 ServiceUnavailable: down".into());
        let r = h.report();
        let svc = r.iter().find(|k| k.kind == Kind::Service).unwrap();
        assert!(svc.synced && !svc.healthy);
        assert_eq!(svc.errors, 2);
        assert_eq!(
            svc.last_error.as_deref(),
            Some("503 ServiceUnavailable: down")
        );
        let ing = r.iter().find(|k| k.kind == Kind::Ingress).unwrap();
        assert!(ing.healthy && ing.failing_for.is_none());
        h.listed(b);
        let r = h.report();
        assert!(r.iter().all(|k| k.healthy));
        assert_eq!(r.iter().map(|k| k.errors).sum::<u64>(), 2);
    }
}
