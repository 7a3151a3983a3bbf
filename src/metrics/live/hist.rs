//! A fixed log-linear histogram: four buckets per power of two, so that a
//! percentile read from it is within about 9% of the true value at any
//! scale, in a few hundred bytes and one array increment per sample.

/// Counts of values by bucket. Values below 8 units get a bucket each;
/// above, each power of two is cut in four. `N` buckets cover values up
/// to about `7 << ((N - 8) / 4)` units; larger ones count in the last.
#[derive(Clone, Debug)]
pub(super) struct Hist<const N: usize> {
    counts: [u32; N],
    total: u64,
}

impl<const N: usize> Default for Hist<N> {
    fn default() -> Self {
        Hist {
            counts: [0; N],
            total: 0,
        }
    }
}

/// The bucket of `v` units.
fn index(v: u64, n: usize) -> usize {
    if v < 8 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize;
    let m = ((v >> (e - 2)) & 3) as usize;
    (8 + (e - 3) * 4 + m).min(n - 1)
}

/// The smallest value of bucket `i`.
fn lower(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let e = (i - 8) / 4 + 3;
    let m = ((i - 8) % 4) as u64;
    (4 + m) << (e - 2)
}

impl<const N: usize> Hist<N> {
    pub fn add(&mut self, v: u64) {
        let i = index(v, N);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
    }

    pub fn clear(&mut self) {
        self.counts = [0; N];
        self.total = 0;
    }

    pub fn merge(&mut self, other: &Hist<N>) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket that
    /// holds it, in units. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        // The rank of the wanted sample, 1-based: p99 of 100 samples is
        // the 99th.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let (lo, hi) = (lower(i), lower(i + 1));
                return Some((lo + hi) as f64 / 2.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for i in 0..200 {
            assert!(lower(i) < lower(i + 1), "bucket {i}");
            assert_eq!(index(lower(i), 1000), i, "lower bound of {i}");
            assert_eq!(index(lower(i + 1) - 1, 1000), i, "upper end of {i}");
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = Hist::<108>::default();
        for v in 1..=1000u64 {
            h.add(v);
        }
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.1, "q{q}: {got} vs {want}");
        }
        assert_eq!(Hist::<108>::default().quantile(0.5), None);
    }

    #[test]
    fn skewed_samples_give_a_high_p99() {
        let mut h = Hist::<108>::default();
        for _ in 0..98 {
            h.add(100);
        }
        h.add(50_000);
        h.add(50_000);
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((90.0..110.0).contains(&p50), "{p50}");
        assert!((45_000.0..55_000.0).contains(&p99), "{p99}");
    }

    #[test]
    fn huge_values_land_in_the_last_bucket_and_merge_adds() {
        let mut a = Hist::<16>::default();
        a.add(u64::MAX);
        let mut b = Hist::<16>::default();
        b.add(3);
        a.merge(&b);
        assert_eq!(a.total(), 2);
        assert_eq!(a.quantile(0.0), Some(3.5));
        assert!(a.quantile(1.0).unwrap() > 3.5);
        a.clear();
        assert_eq!(a.total(), 0);
    }
}
