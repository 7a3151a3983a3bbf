//! Fixed-bucket histograms for the per-request series: request and
//! upstream latency, body sizes, plugin time.
//!
//! Written here because the Prometheus exporter's histogram keeps every
//! sample until the next scrape or upkeep: each record reads a clock,
//! pins an epoch and pushes the value into a lock-free block list, and
//! the buckets are counted only when the exposition is rendered. With four
//! records per request that was the largest single cost of metrics on the
//! request path. Here a record is two relaxed atomic additions (its
//! bucket and the sum) on a series the caller already holds; buckets are
//! summed into Prometheus's cumulative form when rendered.
//!
//! Values are whole units (nanoseconds for times, bytes for sizes), so
//! the sum is an exact integer; the exposition converts it to the
//! family's unit. Series that recorded nothing for [`IDLE_TIMEOUT`] are
//! removed, as the exporter removes its own, so deleted routes disappear;
//! their handles are registered again when used (see `route.rs`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::Label;

use super::IDLE_TIMEOUT;

/// One histogram family: its name, help text, unit and bucket bounds.
pub struct Family {
    name: &'static str,
    help: &'static str,
    /// Upper bounds in the family's unit (seconds or bytes), as rendered.
    bounds: &'static [f64],
    /// The same bounds in recorded units, compared on each record.
    units: Vec<u64>,
    /// Recorded units per rendered unit: 1e9 for seconds kept as
    /// nanoseconds, 1 for bytes.
    per_unit: f64,
    series: Mutex<HashMap<Vec<Label>, Tracked>>,
}

/// A series and what expiry knows of it.
struct Tracked {
    series: Arc<Series>,
    /// The count last seen, and when it last changed.
    seen: u64,
    seen_at: Instant,
}

/// Buckets a family may have, the one above every bound included.
const MAX_BUCKETS: usize = 16;

/// The counts of one label set: the sum of all values, then one count per
/// bucket, the last used one for values above every bound. Inline, so
/// that a record touches one allocation, and its first cache line holds
/// the sum and the low buckets where most values fall.
struct Series {
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

impl Series {
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

/// A handle to one series, held by the code that records into it.
#[derive(Clone)]
pub struct Histogram {
    series: Arc<Series>,
    units: &'static [u64],
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").finish_non_exhaustive()
    }
}

impl Histogram {
    /// Records one value in the family's recorded unit.
    pub fn record(&self, value: u64) {
        let i = self.units.partition_point(|&b| b < value);
        if let Some(bucket) = self.series.buckets.get(i) {
            bucket.fetch_add(1, Relaxed);
        }
        self.series.sum.fetch_add(value, Relaxed);
    }

    /// Records a time (a family in seconds keeps nanoseconds).
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl Family {
    /// A family in seconds, recorded in nanoseconds.
    pub fn seconds(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Family {
        Family::new(name, help, bounds, 1e9)
    }

    /// A family in bytes.
    pub fn bytes(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Family {
        Family::new(name, help, bounds, 1.0)
    }

    fn new(name: &'static str, help: &'static str, bounds: &'static [f64], per_unit: f64) -> Self {
        // Bounds are constants of this crate: finite, ascending, >= 0, and
        // fewer than MAX_BUCKETS (a longer list is cut there).
        let bounds = &bounds[..bounds.len().min(MAX_BUCKETS - 1)];
        let units = bounds
            .iter()
            .map(|b| (b * per_unit).round() as u64)
            .collect();
        Family {
            name,
            help,
            bounds,
            units,
            per_unit,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// The series of `labels`, created on first use. Every caller with the
    /// same labels gets the same series.
    pub fn series(&'static self, labels: Vec<Label>) -> Histogram {
        let mut map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let tracked = map.entry(labels).or_insert_with(|| Tracked {
            series: Arc::new(Series {
                sum: AtomicU64::new(0),
                buckets: Default::default(),
            }),
            seen: 0,
            seen_at: Instant::now(),
        });
        Histogram {
            series: tracked.series.clone(),
            units: &self.units,
        }
    }

    /// Removes the series whose count did not change for [`IDLE_TIMEOUT`].
    pub fn expire(&self, now: Instant) {
        self.expire_after(now, IDLE_TIMEOUT);
    }

    fn expire_after(&self, now: Instant, idle: Duration) {
        let mut map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, t| {
            let count = t.series.count();
            if count != t.seen {
                t.seen = count;
                t.seen_at = now;
            }
            now.saturating_duration_since(t.seen_at) < idle
        });
    }

    /// Appends the family in the Prometheus text format, series sorted by
    /// their labels. Nothing when it has no series.
    pub fn render(&self, out: &mut String) {
        let map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if map.is_empty() {
            return;
        }
        let mut rows: Vec<(&Vec<Label>, &Arc<Series>)> =
            map.iter().map(|(l, t)| (l, &t.series)).collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        let mut labels = String::new();
        for (set, series) in rows {
            labels.clear();
            for l in set {
                let _ = write!(labels, "{}=\"", l.key());
                escape(l.value(), &mut labels);
                labels.push_str("\",");
            }
            let mut cumulative = 0u64;
            for (i, bucket) in series.buckets[..=self.bounds.len()].iter().enumerate() {
                cumulative += bucket.load(Relaxed);
                let _ = match self.bounds.get(i) {
                    Some(b) => writeln!(
                        out,
                        "{}_bucket{{{labels}le=\"{b}\"}} {cumulative}",
                        self.name
                    ),
                    None => writeln!(
                        out,
                        "{}_bucket{{{labels}le=\"+Inf\"}} {cumulative}",
                        self.name
                    ),
                };
            }
            let sum = series.sum.load(Relaxed) as f64 / self.per_unit;
            let braces = labels.strip_suffix(',').unwrap_or(&labels);
            if braces.is_empty() {
                let _ = writeln!(out, "{}_sum {sum}", self.name);
                let _ = writeln!(out, "{}_count {cumulative}", self.name);
            } else {
                let _ = writeln!(out, "{}_sum{{{braces}}} {sum}", self.name);
                let _ = writeln!(out, "{}_count{{{braces}}} {cumulative}", self.name);
            }
        }
        out.push('\n');
    }
}

/// A label value as the text format quotes it.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    static TIMES: LazyLock<Family> =
        LazyLock::new(|| Family::seconds("t_seconds", "Times.", &[0.001, 0.5, 1.0]));
    static SIZES: LazyLock<Family> =
        LazyLock::new(|| Family::bytes("s_bytes", "Sizes.", &[0.0, 100.0]));
    static IDLE: LazyLock<Family> = LazyLock::new(|| Family::bytes("i_bytes", "Idle.", &[10.0]));

    fn text(f: &Family) -> String {
        let mut out = String::new();
        f.render(&mut out);
        out
    }

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = TIMES.series(vec![Label::new("route", "a\"b")]);
        h.record_duration(Duration::from_micros(1000)); // on the first bound
        h.record_duration(Duration::from_millis(2));
        h.record_duration(Duration::from_secs(3)); // above every bound
        assert_eq!(
            text(&TIMES),
            "# HELP t_seconds Times.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"0.001\"} 1\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"0.5\"} 2\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"1\"} 2\n\
             t_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 3\n\
             t_seconds_sum{route=\"a\\\"b\"} 3.003\n\
             t_seconds_count{route=\"a\\\"b\"} 3\n\n"
        );
    }

    #[test]
    fn one_series_per_label_set_and_none_without_labels_braces() {
        let a = SIZES.series(Vec::new());
        let b = SIZES.series(Vec::new());
        a.record(0);
        b.record(100);
        b.record(101);
        let t = text(&SIZES);
        assert!(t.contains("s_bytes_bucket{le=\"0\"} 1\n"), "{t}");
        assert!(t.contains("s_bytes_bucket{le=\"100\"} 2\n"), "{t}");
        assert!(t.contains("s_bytes_bucket{le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("s_bytes_sum 201\ns_bytes_count 3\n"), "{t}");
    }

    #[test]
    fn idle_series_expire_and_come_back_empty() {
        let start = Instant::now();
        let h = IDLE.series(vec![Label::new("route", "r")]);
        h.record(5);
        IDLE.expire_after(start + Duration::from_secs(5), Duration::from_secs(10));
        assert!(text(&IDLE).contains("i_bytes_count{route=\"r\"} 1"));
        // Still recording: kept past the timeout.
        h.record(5);
        IDLE.expire_after(start + Duration::from_secs(12), Duration::from_secs(10));
        assert!(text(&IDLE).contains("i_bytes_count{route=\"r\"} 2"));
        // Idle for the timeout since the last change: gone.
        IDLE.expire_after(start + Duration::from_secs(23), Duration::from_secs(10));
        assert_eq!(text(&IDLE), "");
        let again = IDLE.series(vec![Label::new("route", "r")]);
        again.record(50);
        assert!(text(&IDLE).contains("i_bytes_count{route=\"r\"} 1"));
    }
}
