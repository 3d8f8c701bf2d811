//! A numerically stable running mean and variance.
//!
//! The one-pass formula `(Σx² − n·x̄²)/(n−1)` subtracts two nearly equal
//! large numbers: values around 1e8 with a standard deviation of 1 have
//! Σx² ≈ 1e16·n, where an f64's ulp is already 2, so the difference is
//! rounding noise (often exactly 0, which then makes every test "certain").
//! [`RunningStats`] keeps the mean and the sum of squared deviations from it
//! instead: Welford's update adds one value, and Chan, Golub and LeVeque's
//! pairwise formula merges two accumulators (time buckets, replicas).

use serde::{Deserialize, Serialize};

use crate::analysis::Summary;

/// Count, mean and sum of squared deviations from the mean (`m2`) of the
/// values seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    /// How many values.
    pub n: u64,
    /// Their mean (0 when `n` is 0).
    pub mean: f64,
    /// Σ(x − mean)² over them.
    pub m2: f64,
}

impl RunningStats {
    /// No values yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The accumulator of exactly one value.
    pub fn of(value: f64) -> Self {
        Self { n: 1, mean: value, m2: 0.0 }
    }

    /// Adds one value (Welford).
    pub fn push(&mut self, value: f64) {
        self.n += 1;
        let delta = value - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (value - self.mean);
    }

    /// Adds every value `other` has seen (Chan et al.): the result is what
    /// pushing all of both accumulators' values into one would give, up to
    /// rounding.
    pub fn merge(&mut self, other: &RunningStats) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / n as f64;
        self.m2 += other.m2 + delta * delta * na * nb / n as f64;
        self.n = n;
    }

    /// The unbiased sample variance, `m2 / (n − 1)`; `None` below 2 values.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2.max(0.0) / (self.n - 1) as f64)
    }

    /// Count, mean and sample variance (0 below 2 values); `None` when empty.
    pub fn summary(&self) -> Option<Summary> {
        (self.n > 0).then(|| Summary { n: self.n, mean: self.mean, variance: self.variance().unwrap_or(0.0) })
    }
}

impl FromIterator<f64> for RunningStats {
    fn from_iter<I: IntoIterator<Item = f64>>(values: I) -> Self {
        let mut s = Self::new();
        values.into_iter().for_each(|v| s.push(v));
        s
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Values 1e8 + (−1, +1, −1, +1, …): mean 1e8, sample sd just over 1.
    fn around_1e8(n: usize) -> Vec<f64> {
        (0..n).map(|i| 1e8 + if i % 2 == 0 { -1.0 } else { 1.0 }).collect()
    }

    /// The one-pass formula this type replaces, kept to show why.
    fn sum_of_squares_variance(values: &[f64]) -> f64 {
        let n = values.len() as f64;
        let (s, q) = values.iter().fold((0.0, 0.0), |(s, q), x| (s + x, q + x * x));
        let mean = s / n;
        (q - n * mean * mean).max(0.0) / (n - 1.0)
    }

    #[test]
    fn large_values_with_unit_spread_have_unit_variance() {
        let values = around_1e8(10_000);
        let expected = 10_000.0 / 9_999.0;
        let s: RunningStats = values.iter().copied().collect();
        assert_eq!(s.n, 10_000);
        assert!((s.mean - 1e8).abs() < 1e-6, "mean {}", s.mean);
        assert!((s.variance().unwrap() - expected).abs() < 1e-9, "variance {:?}", s.variance());
        // The sum-of-squares formula loses it entirely.
        assert!((sum_of_squares_variance(&values) - expected).abs() > 0.5);
    }

    #[test]
    fn merging_equals_accumulating_everything() {
        let values = around_1e8(1_001);
        let (a, b) = values.split_at(377);
        let mut merged: RunningStats = a.iter().copied().collect();
        merged.merge(&b.iter().copied().collect());
        let all: RunningStats = values.iter().copied().collect();
        assert_eq!(merged.n, all.n);
        assert!((merged.mean - all.mean).abs() < 1e-6);
        assert!((merged.variance().unwrap() - all.variance().unwrap()).abs() < 1e-9);
    }

    #[test]
    fn empty_and_single_values() {
        let mut s = RunningStats::new();
        assert_eq!(s.variance(), None);
        assert_eq!(s.summary(), None);
        s.merge(&RunningStats::new());
        assert_eq!(s, RunningStats::new());
        s.merge(&RunningStats::of(3.0));
        assert_eq!(s, RunningStats::of(3.0));
        assert_eq!(s.summary(), Some(Summary { n: 1, mean: 3.0, variance: 0.0 }));
        s.push(5.0);
        assert_eq!(s.variance(), Some(2.0));
    }

    #[test]
    fn serde_round_trips() {
        let s: RunningStats = [1.0, 2.0, 4.0].into_iter().collect();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RunningStats>(&json).unwrap(), s);
    }

    proptest! {
        /// Any split of any sample into parts, each accumulated and then
        /// merged in order, matches accumulating the sample in one go.
        #[test]
        fn any_split_merges_to_the_whole(
            offset in -1e9f64..1e9,
            deviations in proptest::collection::vec(-10.0f64..10.0, 2..200),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let values: Vec<f64> = deviations.iter().map(|d| offset + d).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % values.len()).collect();
            cuts.push(0);
            cuts.push(values.len());
            cuts.sort_unstable();
            let mut merged = RunningStats::new();
            for w in cuts.windows(2) {
                merged.merge(&values[w[0]..w[1]].iter().copied().collect());
            }
            let all: RunningStats = values.iter().copied().collect();
            // Two-pass reference in the deviations, exact up to rounding.
            let n = deviations.len() as f64;
            let mean_d = deviations.iter().sum::<f64>() / n;
            let reference = deviations.iter().map(|d| (d - mean_d).powi(2)).sum::<f64>() / (n - 1.0);
            prop_assert_eq!(merged.n, all.n);
            let tol = 1e-6 * reference.max(1.0) + 1e-6;
            prop_assert!((merged.variance().unwrap() - reference).abs() < tol,
                "merged {:?} reference {}", merged.variance(), reference);
            prop_assert!((all.variance().unwrap() - reference).abs() < tol,
                "all {:?} reference {}", all.variance(), reference);
            prop_assert!((merged.mean - all.mean).abs() <= 1e-6 * offset.abs().max(1.0));
        }
    }
}
