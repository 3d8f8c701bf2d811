//! Hypothesis tests and drift measures for comparing a candidate with the
//! champion: Welch's t test, the two-proportion z test, the Mann–Whitney U
//! test, the sample-ratio-mismatch (SRM) chi-square test, the population
//! stability index (PSI) and the always-valid mixture SPRT (mSPRT).
//!
//! Conventions shared by every function here:
//! - "1" is the control (champion) and "2" the treatment (candidate);
//!   differences are always `2 − 1`, and test statistics carry that sign.
//! - p-values are two-sided unless stated otherwise.
//! - Inputs that make a test undefined (too few observations, zero variance,
//!   NaN) return [`AnalysisError`]; no function panics on any finite input.
//!
//! Every function is checked against scipy 1.15 in
//! `tests/stats_fixtures.rs` (fixtures from `scripts/stats_fixtures.py`).

pub mod special;
pub mod srm;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::stats::normal_quantile;
use special::{chi2_sf, normal_sf, student_t_quantile2, student_t_sf2};
pub use srm::{SRM_PRIOR_CONCENTRATION, SequentialSrm, srm_sequential};

/// Significance of the confidence intervals of [`welch_t_test`] and
/// [`two_proportion_z_test`] (95% intervals).
pub const DEFAULT_ALPHA: f64 = 0.05;

/// The α of the sample-ratio-mismatch check: [`srm_sequential`] flags a
/// mismatch once its Bayes factor reaches `1/SRM_ALPHA`, so a fair split is
/// flagged at some look with probability at most this, however often it is
/// looked at. ([`srm_chi_square`], kept for reference, flags below this
/// p-value at one look.)
pub const SRM_ALPHA: f64 = 0.001;

/// No A/B arm is judged Better or Worse before it and the control have this
/// many observations each: below it the plug-in variance in the mSPRT is too
/// noisy (at 2 per arm, A/A runs were declared different within a second).
/// In simulation (N(0,1), exponential and log-normal metrics, τ from 0.1σ to
/// 2σ, looked at after every observation) 30 keeps the A/A rate at or below
/// 0.03 at α 0.05, where 2 gave up to 0.15.
pub const AB_MIN_SAMPLES_PER_ARM: u64 = 30;

/// [`psi_from_counts`] replaces an empty bin's proportion with this value so
/// that the logarithm stays finite.
pub const PSI_EPSILON: f64 = 1e-4;

/// An input for which a test is undefined.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AnalysisError {
    /// The named input is outside its valid range.
    #[error("{name} is {value}; expected {expected}")]
    OutOfRange {
        /// Which input.
        name: &'static str,
        /// Its value (lengths and counts converted to f64).
        value: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// The inputs are valid but the statistic is undefined for them (e.g. a
    /// zero standard error).
    #[error("test undefined: {0}")]
    Degenerate(&'static str),
}

fn out_of_range(name: &'static str, value: f64, expected: &'static str) -> AnalysisError {
    AnalysisError::OutOfRange { name, value, expected }
}

fn finite(name: &'static str, v: f64) -> Result<(), AnalysisError> {
    if v.is_finite() { Ok(()) } else { Err(out_of_range(name, v, "a finite number")) }
}

fn non_negative(name: &'static str, v: f64) -> Result<(), AnalysisError> {
    if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(out_of_range(name, v, "a finite number ≥ 0")) }
}

fn positive(name: &'static str, v: f64) -> Result<(), AnalysisError> {
    if v.is_finite() && v > 0.0 { Ok(()) } else { Err(out_of_range(name, v, "a finite number > 0")) }
}

fn alpha_ok(alpha: f64) -> Result<(), AnalysisError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(out_of_range("alpha", alpha, "a probability strictly between 0 and 1"))
    }
}

/// The result of Welch's unequal-variance t test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    /// `diff / se` with `se = √(var1/n1 + var2/n2)`.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value, P(|T_df| ≥ |t|).
    pub p_value: f64,
    /// `mean2 − mean1`.
    pub diff: f64,
    /// Lower end of the `1 − alpha` confidence interval for `mean2 − mean1`.
    pub ci_low: f64,
    /// Upper end of that interval.
    pub ci_high: f64,
}

/// Welch's t test from summary statistics (sample means, unbiased sample
/// variances, counts), with a 95% confidence interval. See
/// [`welch_t_test_alpha`].
pub fn welch_t_test(
    mean1: f64,
    var1: f64,
    n1: u64,
    mean2: f64,
    var2: f64,
    n2: u64,
) -> Result<TTest, AnalysisError> {
    welch_t_test_alpha(mean1, var1, n1, mean2, var2, n2, DEFAULT_ALPHA)
}

/// Welch's t test for `mean2 − mean1`:
///
/// - `se² = var1/n1 + var2/n2`, `t = (mean2 − mean1)/se`;
/// - `df = se⁴ / ((var1/n1)²/(n1−1) + (var2/n2)²/(n2−1))`;
/// - `p = P(|T_df| ≥ |t|)`; CI `diff ± t_{1−α/2, df} · se`.
///
/// Matches `scipy.stats.ttest_ind_from_stats(mean2, √var2, n2, mean1, √var1,
/// n1, equal_var=False)`. Errors when a count is below 2, a variance is
/// negative or not finite, or both variances are 0.
#[allow(clippy::too_many_arguments)]
pub fn welch_t_test_alpha(
    mean1: f64,
    var1: f64,
    n1: u64,
    mean2: f64,
    var2: f64,
    n2: u64,
    alpha: f64,
) -> Result<TTest, AnalysisError> {
    finite("mean1", mean1)?;
    finite("mean2", mean2)?;
    non_negative("var1", var1)?;
    non_negative("var2", var2)?;
    alpha_ok(alpha)?;
    if n1 < 2 {
        return Err(out_of_range("n1", n1 as f64, "at least 2 observations"));
    }
    if n2 < 2 {
        return Err(out_of_range("n2", n2 as f64, "at least 2 observations"));
    }
    let (n1, n2) = (n1 as f64, n2 as f64);
    let (v1, v2) = (var1 / n1, var2 / n2);
    let se2 = v1 + v2;
    if se2 <= 0.0 || !se2.is_finite() {
        return Err(AnalysisError::Degenerate("both variances are zero"));
    }
    let se = se2.sqrt();
    let diff = mean2 - mean1;
    let t = diff / se;
    // Written with the shares w = v/se² so that it cannot under- or overflow.
    let (w1, w2) = (v1 / se2, v2 / se2);
    let df = 1.0 / (w1 * w1 / (n1 - 1.0) + w2 * w2 / (n2 - 1.0));
    if !t.is_finite() || !df.is_finite() || df <= 0.0 {
        return Err(AnalysisError::Degenerate("standard error underflows"));
    }
    let p_value = student_t_sf2(t, df);
    let half = student_t_quantile2(alpha, df) * se;
    Ok(TTest { t, df, p_value, diff, ci_low: diff - half, ci_high: diff + half })
}

/// The result of the two-proportion z test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZTest {
    /// `diff / se_pooled`.
    pub z: f64,
    /// Two-sided p-value, `2 Φc(|z|)`.
    pub p_value: f64,
    /// `x2/n2 − x1/n1`.
    pub diff: f64,
    /// Lower end of the unpooled Wald `1 − alpha` interval for `diff`.
    pub ci_low: f64,
    /// Upper end of that interval.
    pub ci_high: f64,
}

/// Two-proportion z test with a 95% Wald interval. See
/// [`two_proportion_z_test_alpha`].
pub fn two_proportion_z_test(x1: u64, n1: u64, x2: u64, n2: u64) -> Result<ZTest, AnalysisError> {
    two_proportion_z_test_alpha(x1, n1, x2, n2, DEFAULT_ALPHA)
}

/// Two-proportion z test of `p2 − p1` (successes `x` out of `n`):
///
/// - pooled `p̄ = (x1 + x2)/(n1 + n2)`, `z = (p2 − p1)/√(p̄(1−p̄)(1/n1 + 1/n2))`,
///   `p = 2 Φc(|z|)` (as `statsmodels.stats.proportion.proportions_ztest`);
/// - CI: `diff ± z_{1−α/2} √(p1(1−p1)/n1 + p2(1−p2)/n2)` (unpooled Wald).
///
/// Errors when `n = 0`, `x > n`, or `p̄` is 0 or 1 (no successes or no
/// failures at all: the pooled standard error is zero).
pub fn two_proportion_z_test_alpha(
    x1: u64,
    n1: u64,
    x2: u64,
    n2: u64,
    alpha: f64,
) -> Result<ZTest, AnalysisError> {
    alpha_ok(alpha)?;
    if n1 == 0 {
        return Err(out_of_range("n1", 0.0, "at least 1 trial"));
    }
    if n2 == 0 {
        return Err(out_of_range("n2", 0.0, "at least 1 trial"));
    }
    if x1 > n1 {
        return Err(out_of_range("x1", x1 as f64, "at most n1 successes"));
    }
    if x2 > n2 {
        return Err(out_of_range("x2", x2 as f64, "at most n2 successes"));
    }
    let (x1, n1, x2, n2) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let (p1, p2) = (x1 / n1, x2 / n2);
    let pooled = (x1 + x2) / (n1 + n2);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se_pooled <= 0.0 || !se_pooled.is_finite() {
        return Err(AnalysisError::Degenerate("pooled proportion is 0 or 1"));
    }
    let diff = p2 - p1;
    let z = diff / se_pooled;
    let p_value = (2.0 * normal_sf(z.abs())).min(1.0);
    let se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
    let half = normal_quantile(1.0 - alpha / 2.0) * se;
    Ok(ZTest { z, p_value, diff, ci_low: diff - half, ci_high: diff + half })
}

/// The result of the Mann–Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MwuTest {
    /// U of the first sample: `R_a − n_a(n_a+1)/2`, with `R_a` the sum of the
    /// (mid)ranks of `a` in the pooled sample.
    pub u: f64,
    /// Continuity-corrected z, signed: positive when `a` tends to be larger
    /// than `b` (`u > n_a n_b / 2`); 0 when `|u − n_a n_b/2| ≤ ½`.
    pub z: f64,
    /// Two-sided p-value, `min(1, 2 Φc(|z|))`.
    pub p_value: f64,
}

/// The Mann–Whitney U test, normal approximation with tie and continuity
/// corrections, two-sided:
///
/// - `μ = n_a n_b / 2`, `σ² = n_a n_b / 12 · ((n + 1) − Σ(t³ − t)/(n(n−1)))`
///   where `t` runs over the sizes of groups of tied values;
/// - `z = sign(u − μ) · max(0, |u − μ| − ½) / σ`, `p = min(1, 2 Φc(|z|))`.
///
/// Matches `scipy.stats.mannwhitneyu(a, b, alternative='two-sided',
/// method='asymptotic', use_continuity=True)` (statistic and p-value). Errors
/// on an empty sample, a NaN, or when every value is tied (σ = 0).
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Result<MwuTest, AnalysisError> {
    if a.is_empty() {
        return Err(out_of_range("a.len()", 0.0, "a non-empty sample"));
    }
    if b.is_empty() {
        return Err(out_of_range("b.len()", 0.0, "a non-empty sample"));
    }
    if let Some(v) = a.iter().chain(b).find(|v| v.is_nan()) {
        return Err(out_of_range("sample value", *v, "not NaN"));
    }
    // Pool, sort, and give each tie group its mid-rank.
    let mut pooled: Vec<(f64, bool)> =
        a.iter().map(|&v| (v, true)).chain(b.iter().map(|&v| (v, false))).collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i + 1;
        // `==` (not total_cmp) so that -0.0 and 0.0 tie, as in scipy.
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        // 1-based ranks i+1 ..= j share their mean.
        let mid_rank = (i + 1 + j) as f64 / 2.0;
        let in_a = pooled[i..j].iter().filter(|p| p.1).count() as f64;
        rank_sum_a += mid_rank * in_a;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let n = na + nb;
    let u = rank_sum_a - na * (na + 1.0) / 2.0;
    let mu = na * nb / 2.0;
    let sigma2 = if n > 1.0 { na * nb / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0))) } else { 0.0 };
    if sigma2.is_nan() || sigma2 <= 0.0 {
        return Err(AnalysisError::Degenerate("every value is tied"));
    }
    let sigma = sigma2.sqrt();
    let dev = u - mu;
    let z = dev.signum() * (dev.abs() - 0.5).max(0.0) / sigma;
    let p_value = (2.0 * normal_sf(z.abs())).min(1.0);
    Ok(MwuTest { u, z, p_value })
}

/// The result of the sample-ratio-mismatch test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Srm {
    /// Pearson's `Σ (o − e)²/e`.
    pub chi2: f64,
    /// Degrees of freedom: arms − 1.
    pub df: f64,
    /// `P(χ²_df ≥ chi2)`.
    pub p_value: f64,
    /// `p_value < SRM_ALPHA` (0.001): the assignment is broken.
    pub mismatch: bool,
}

/// An SRM test's input: at least 2 arms, one finite positive weight each.
fn check_split(observed: &[u64], expected_weights: &[f64]) -> Result<(), AnalysisError> {
    if observed.len() < 2 {
        return Err(out_of_range("observed.len()", observed.len() as f64, "at least 2 arms"));
    }
    if observed.len() != expected_weights.len() {
        return Err(out_of_range(
            "expected_weights.len()",
            expected_weights.len() as f64,
            "one weight per observed arm",
        ));
    }
    for &w in expected_weights {
        positive("expected weight", w)?;
    }
    Ok(())
}

/// Sample-ratio-mismatch check: Pearson's chi-square goodness of fit of the
/// per-arm request counts `observed` against the configured split
/// `expected_weights` (any positive scale; expected count of arm i is
/// `w_i / Σw · Σobserved`).
///
/// Matches `scipy.stats.chisquare(observed, f_exp=w/w.sum()*observed.sum())`.
/// Errors with fewer than 2 arms, mismatched lengths, a weight that is not
/// finite and positive, or no observations.
pub fn srm_chi_square(observed: &[u64], expected_weights: &[f64]) -> Result<Srm, AnalysisError> {
    check_split(observed, expected_weights)?;
    let total: f64 = observed.iter().map(|&o| o as f64).sum();
    if total <= 0.0 {
        return Err(AnalysisError::Degenerate("no observations"));
    }
    let weight_sum: f64 = expected_weights.iter().sum();
    if !weight_sum.is_finite() {
        return Err(out_of_range("sum of expected weights", weight_sum, "a finite number"));
    }
    let chi2: f64 = observed
        .iter()
        .zip(expected_weights)
        .map(|(&o, &w)| {
            let e = w / weight_sum * total;
            let d = o as f64 - e;
            d * d / e
        })
        .sum();
    let df = (observed.len() - 1) as f64;
    let p_value = chi2_sf(chi2, df);
    Ok(Srm { chi2, df, p_value, mismatch: p_value < SRM_ALPHA })
}

/// How much a distribution has shifted, by PSI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiLevel {
    /// PSI < 0.1: no meaningful shift.
    Ok,
    /// 0.1 ≤ PSI < 0.25: moderate shift, worth a look.
    Warn,
    /// PSI ≥ 0.25: major shift.
    Alert,
}

impl PsiLevel {
    /// The level of a PSI value (NaN counts as `Alert`).
    pub fn of(value: f64) -> Self {
        if value < 0.1 {
            Self::Ok
        } else if value < 0.25 {
            Self::Warn
        } else {
            Self::Alert
        }
    }
}

/// A population stability index.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    /// `Σ (a_i − e_i) ln(a_i / e_i)` over bins.
    pub value: f64,
    /// [`PsiLevel::of`] the value.
    pub level: PsiLevel,
}

/// PSI of the `actual` sample against the `expected` (reference) sample,
/// with `bins` quantile bins of the expected sample.
///
/// Binning (reproduced exactly in `scripts/stats_fixtures.py`):
/// - interior edges are the expected sample's quantiles at `i/bins` for
///   `i = 1 .. bins−1`, linear interpolation between order statistics
///   (numpy's default `np.quantile(…, method='linear')`, Hyndman–Fan type 7);
/// - duplicate edges (from ties) are merged, so heavily tied data can yield
///   fewer than `bins` bins;
/// - bins are right-closed and the outer ones unbounded:
///   `(−∞, e₁], (e₁, e₂], …, (e_{k−1}, +∞)`; a value's bin index is the number
///   of edges strictly below it (`np.searchsorted(edges, v, side='left')`);
/// - counts then go through [`psi_from_counts`].
///
/// Errors when `bins` is 0, a sample is empty, or a value is NaN.
pub fn psi(expected: &[f64], actual: &[f64], bins: usize) -> Result<Psi, AnalysisError> {
    if bins == 0 {
        return Err(out_of_range("bins", 0.0, "at least 1 bin"));
    }
    if expected.is_empty() {
        return Err(out_of_range("expected.len()", 0.0, "a non-empty sample"));
    }
    if actual.is_empty() {
        return Err(out_of_range("actual.len()", 0.0, "a non-empty sample"));
    }
    if let Some(v) = expected.iter().chain(actual).find(|v| v.is_nan()) {
        return Err(out_of_range("sample value", *v, "not NaN"));
    }
    let edges = quantile_edges(expected, bins);
    let count = |sample: &[f64]| {
        let mut counts = vec![0_u64; edges.len() + 1];
        for v in sample {
            counts[edges.partition_point(|e| e < v)] += 1;
        }
        counts
    };
    psi_from_counts(&count(expected), &count(actual))
}

/// The deduplicated interior quantile edges described in [`psi`].
fn quantile_edges(sample: &[f64], bins: usize) -> Vec<f64> {
    let mut sorted = sample.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len() - 1;
    let mut edges: Vec<f64> = Vec::with_capacity(bins.saturating_sub(1));
    for i in 1..bins {
        let h = last as f64 * (i as f64 / bins as f64);
        let lo = (h.floor() as usize).min(last);
        let hi = (lo + 1).min(last);
        let frac = h - lo as f64;
        let (a, b) = (sorted[lo], sorted[hi]);
        // numpy's _lerp: symmetric form for accuracy near both ends.
        let diff = b - a;
        let edge = if frac >= 0.5 { b - diff * (1.0 - frac) } else { a + diff * frac };
        if edges.last().is_none_or(|&prev| edge > prev) {
            edges.push(edge);
        }
    }
    edges
}

/// PSI from per-bin counts of the expected and actual samples:
///
/// `PSI = Σ_i (a_i − e_i) ln(a_i / e_i)` with `e_i = expected_i / Σ expected`,
/// `a_i = actual_i / Σ actual`, where a proportion of exactly 0 is replaced by
/// [`PSI_EPSILON`] (1e-4) and the proportions are not renormalized.
///
/// Errors when the lengths differ, there are no bins, or a side has no counts.
pub fn psi_from_counts(expected_counts: &[u64], actual_counts: &[u64]) -> Result<Psi, AnalysisError> {
    if expected_counts.is_empty() {
        return Err(out_of_range("expected_counts.len()", 0.0, "at least 1 bin"));
    }
    if expected_counts.len() != actual_counts.len() {
        return Err(out_of_range(
            "actual_counts.len()",
            actual_counts.len() as f64,
            "as many bins as expected_counts",
        ));
    }
    let total_e: f64 = expected_counts.iter().map(|&c| c as f64).sum();
    let total_a: f64 = actual_counts.iter().map(|&c| c as f64).sum();
    if total_e <= 0.0 {
        return Err(AnalysisError::Degenerate("expected counts are all zero"));
    }
    if total_a <= 0.0 {
        return Err(AnalysisError::Degenerate("actual counts are all zero"));
    }
    let share = |c: u64, total: f64| if c == 0 { PSI_EPSILON } else { c as f64 / total };
    let value: f64 = expected_counts
        .iter()
        .zip(actual_counts)
        .map(|(&e, &a)| {
            let (e, a) = (share(e, total_e), share(a, total_a));
            (a - e) * (a / e).ln()
        })
        .sum();
    Ok(Psi { value, level: PsiLevel::of(value) })
}

/// One evaluation of the mixture SPRT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Msprt {
    /// ln Λ_n (finite even when Λ_n overflows).
    pub log_lambda: f64,
    /// The mixture likelihood ratio Λ_n (may be +∞).
    pub lambda: f64,
    /// `min(1, 1/Λ_n)`. Always valid when the caller keeps the running
    /// minimum over ticks: `p_n = min(p_{n−1}, this)`.
    pub p_value: f64,
    /// `Λ_n ≥ 1/alpha`, i.e. `p_value ≤ alpha`.
    pub reject: bool,
}

/// The mixture sequential probability ratio test (Johari, Pekelis & Walsh,
/// "Always valid inference", 2017/2022) for H₀: θ = 0, where θ is the
/// difference of two means (candidate − champion) and the data arrive in
/// pairs, with a normal mixing distribution N(0, τ²) over θ:
///
/// `Λ_n = √(V/(V + nτ²)) · exp( n² τ² d² / (2 V (V + nτ²)) )`, `V = 2σ²`,
///
/// where `d` = `mean_diff` (ȳ_n − x̄_n), `σ²` = `var_pooled_per_obs` (the
/// per-observation variance, assumed common to both arms), `n` =
/// `n_per_arm`, `τ²` = `tau2`. Computed in log space. Rejecting when
/// `Λ_n ≥ 1/α` at any tick keeps the type-I error ≤ α under continuous
/// monitoring.
///
/// For unequal arms pass the effective `n = 2/(1/n₁ + 1/n₂)`, which gives the
/// difference its correct variance `V/n = σ²(1/n₁ + 1/n₂)`; `n_per_arm` is
/// therefore an `f64`. `n_per_arm = 0` gives Λ = 1.
///
/// Errors unless `mean_diff` is finite, `var_pooled_per_obs` and `tau2` are
/// finite and positive, `n_per_arm` is finite and ≥ 0, and 0 < alpha < 1.
pub fn msprt(
    mean_diff: f64,
    var_pooled_per_obs: f64,
    n_per_arm: f64,
    tau2: f64,
    alpha: f64,
) -> Result<Msprt, AnalysisError> {
    finite("mean_diff", mean_diff)?;
    positive("var_pooled_per_obs", var_pooled_per_obs)?;
    non_negative("n_per_arm", n_per_arm)?;
    positive("tau2", tau2)?;
    alpha_ok(alpha)?;
    let v = 2.0 * var_pooled_per_obs;
    let n = n_per_arm;
    let denom = v + n * tau2;
    // ½ ln(V/(V+nτ²)) written as −½ ln(1 + nτ²/V) to stay finite.
    let log_lambda =
        -0.5 * (n * tau2 / v).ln_1p() + (n * tau2 / v) * (n * mean_diff * mean_diff / (2.0 * denom));
    if log_lambda.is_nan() {
        return Err(AnalysisError::Degenerate("mixture likelihood ratio is undefined"));
    }
    let lambda = log_lambda.exp();
    let p_value = (-log_lambda).exp().min(1.0);
    Ok(Msprt { log_lambda, lambda, p_value, reject: log_lambda >= -alpha.ln() })
}

/// Verdict of [`regression_beyond_margin`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarginCheck {
    /// `mean_diff − margin`, the difference the mSPRT was run on.
    pub shifted_diff: f64,
    /// The mSPRT of H₀: θ = margin.
    pub msprt: Msprt,
    /// The candidate is significantly worse than the champion by more than
    /// `margin`: `msprt.reject && shifted_diff > 0`.
    pub regression: bool,
}

/// Whether the candidate is significantly worse than the champion by more
/// than `margin`, under continuous monitoring.
///
/// `mean_diff` is candidate − champion oriented so that **larger is worse**
/// (latency, error rate); for a larger-is-better metric pass champion −
/// candidate. Runs [`msprt`] on `mean_diff − margin` (i.e. tests
/// H₀: θ = margin) and reports a regression when it rejects with the shifted
/// difference above zero. Rejecting only in one direction keeps the error
/// rate ≤ alpha. Same input rules as [`msprt`], plus a finite `margin`.
pub fn regression_beyond_margin(
    mean_diff: f64,
    margin: f64,
    var_pooled_per_obs: f64,
    n_per_arm: f64,
    tau2: f64,
    alpha: f64,
) -> Result<MarginCheck, AnalysisError> {
    finite("mean_diff", mean_diff)?;
    finite("margin", margin)?;
    let shifted_diff = mean_diff - margin;
    let msprt = msprt(shifted_diff, var_pooled_per_obs, n_per_arm, tau2, alpha)?;
    Ok(MarginCheck { shifted_diff, msprt, regression: msprt.reject && shifted_diff > 0.0 })
}

/// Always-valid inference on one difference `θ` (candidate − champion),
/// estimated by `diff` with variance `var_of_diff` (e.g. `σ₁²/n₁ + σ₂²/n₂`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialDiff {
    /// The estimate of θ.
    pub diff: f64,
    /// Its standard error, `√var_of_diff`.
    pub se: f64,
    /// ln Λ for H₀: θ = 0.
    pub log_lambda: f64,
    /// Always-valid p-value for H₀: θ = 0, `min(1, 1/Λ)`.
    pub p_value: f64,
    /// Lower end of the `1 − alpha` confidence sequence for θ.
    pub ci_low: f64,
    /// Upper end of it.
    pub ci_high: f64,
}

/// The mixture SPRT for a difference estimated with a (plug-in) normal
/// variance, the form Optimizely's Stats Engine uses for unequal arms:
/// `diff ~ N(θ, s²)` with `s² = var_of_diff`, mixing θ over N(0, τ²):
///
/// `Λ = √(s²/(s² + τ²)) · exp(τ² d² / (2 s² (s² + τ²)))`.
///
/// With `s² = 2σ²/n` this is exactly [`msprt`]. Its confidence sequence is
/// the set of θ that the test at level alpha does not reject:
///
/// `|d − θ| < √( 2 s²(s² + τ²)/τ² · (ln(1/α) + ½ ln((s² + τ²)/s²)) )`,
///
/// which holds at every tick simultaneously with probability ≥ 1 − α, so a
/// controller may look at it as often as it likes.
///
/// Errors unless `diff` is finite, `var_of_diff` and `tau2` are finite and
/// positive, and 0 < alpha < 1.
pub fn sequential_diff(
    diff: f64,
    var_of_diff: f64,
    tau2: f64,
    alpha: f64,
) -> Result<SequentialDiff, AnalysisError> {
    finite("diff", diff)?;
    positive("var_of_diff", var_of_diff)?;
    positive("tau2", tau2)?;
    alpha_ok(alpha)?;
    let s2 = var_of_diff;
    let r = tau2 / s2;
    let log_lambda = -0.5 * r.ln_1p() + (diff * diff / s2) * r / (2.0 * (1.0 + r));
    // 2 s²(s²+τ²)/τ² = 2 s² (1 + 1/r).
    let half2 = 2.0 * s2 * (1.0 + 1.0 / r) * (-alpha.ln() + 0.5 * r.ln_1p());
    let half = half2.sqrt();
    if !log_lambda.is_finite() || !half.is_finite() {
        return Err(AnalysisError::Degenerate("mixture likelihood ratio is undefined"));
    }
    Ok(SequentialDiff {
        diff,
        se: s2.sqrt(),
        log_lambda,
        p_value: (-log_lambda).exp().min(1.0),
        ci_low: diff - half,
        ci_high: diff + half,
    })
}

/// What a sequential comparison says about a candidate against a margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginVerdict {
    /// The whole confidence sequence lies below the margin: the candidate
    /// is worse by less than the margin, if at all.
    NonInferior,
    /// The whole confidence sequence lies above the margin.
    Regression,
    /// The sequence still straddles the margin: more data is needed.
    Undecided,
}

impl SequentialDiff {
    /// Judges `θ` (oriented so that larger is worse) against `margin`.
    pub fn against_margin(&self, margin: f64) -> MarginVerdict {
        if self.ci_high < margin {
            MarginVerdict::NonInferior
        } else if self.ci_low > margin {
            MarginVerdict::Regression
        } else {
            MarginVerdict::Undecided
        }
    }
}

/// One metric's sample summary: count, mean and unbiased variance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: u64,
    pub mean: f64,
    pub variance: f64,
}

/// What an A/B arm's result says, compared with the control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbDecision {
    /// The control arm itself.
    Control,
    /// Shown better than the control by the always-valid test.
    Better,
    /// Shown worse than the control by the always-valid test.
    Worse,
    /// The planned sample size is in and the always-valid test has not
    /// rejected (it keeps running: a later rejection is still valid).
    NoDifference,
    /// Neither: the experiment is still collecting.
    Collecting,
}

impl AbDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            AbDecision::Control => "control",
            AbDecision::Better => "better",
            AbDecision::Worse => "worse",
            AbDecision::NoDifference => "no significant difference",
            AbDecision::Collecting => "collecting",
        }
    }
}

/// The name of the one test that decides an A/B arm: the mixture SPRT on the
/// difference of means (τ = the MDE).
pub const AB_DECIDING_TEST: &str = "msprt";

/// One A/B arm's result on the primary metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ArmResult {
    pub n: u64,
    pub mean: f64,
    /// `1 − alpha` Student-t interval for the arm's mean (NaN below n = 2).
    pub ci_low: f64,
    pub ci_high: f64,
    /// Welch's test against the control, for reference only: a
    /// fixed-horizon test, it does not decide (looked at every tick it would
    /// be wrong far more often than α). `None` for the control or
    /// degenerate data.
    pub welch: Option<TTest>,
    /// The always-valid comparison against the control (τ = the MDE), the
    /// one test that decides: valid at any time, however often it is looked
    /// at. `None` for the control and until both arms have
    /// [`AB_MIN_SAMPLES_PER_ARM`] observations.
    pub sequential: Option<SequentialDiff>,
    pub decision: AbDecision,
}

impl ArmResult {
    /// The always-valid p-value against the α it is judged at, when the
    /// test runs (the statistic and threshold of [`AB_DECIDING_TEST`]).
    pub fn deciding(&self, alpha: f64) -> Option<(f64, f64)> {
        self.sequential.map(|s| (s.p_value, alpha))
    }
}

/// The `1 − alpha` Student-t interval for a mean, `(NaN, NaN)` below two
/// observations.
pub fn mean_interval(s: &Summary, alpha: f64) -> Result<(f64, f64), AnalysisError> {
    finite("mean", s.mean)?;
    non_negative("variance", s.variance)?;
    alpha_ok(alpha)?;
    if s.n < 2 {
        return Ok((f64::NAN, f64::NAN));
    }
    let half = student_t_quantile2(alpha, (s.n - 1) as f64) * (s.variance / s.n as f64).sqrt();
    Ok((s.mean - half, s.mean + half))
}

/// An arm's result against `control`: its mean's interval, Welch's test
/// (reference), the always-valid mSPRT with τ² = mde², and the decision,
/// which is [`ab_arm_decision`]'s (the interval and Welch's test are only
/// shown). `higher_is_better` orients better and worse.
pub fn ab_arm_result(
    control: &Summary,
    arm: &Summary,
    is_control: bool,
    mde: f64,
    alpha: f64,
    required_per_arm: u64,
    higher_is_better: bool,
) -> Result<ArmResult, AnalysisError> {
    let mut result =
        ab_arm_decision(control, arm, is_control, mde, alpha, required_per_arm, higher_is_better)?;
    (result.ci_low, result.ci_high) = mean_interval(arm, alpha)?;
    if !is_control && control.n >= 2 && arm.n >= 2 {
        result.welch = welch_t_test_alpha(
            control.mean,
            control.variance,
            control.n,
            arm.mean,
            arm.variance,
            arm.n,
            alpha,
        )
        .ok();
    }
    Ok(result)
}

/// The decision on an arm against `control`, and the test that makes it,
/// without the numbers that are only shown ([`ab_arm_result`] adds the
/// mean's interval and Welch's test; here they are NaN and `None`).
///
/// One test decides, the mSPRT with τ² = mde²: `Better`/`Worse` once both
/// arms have [`AB_MIN_SAMPLES_PER_ARM`] observations and its always-valid
/// p-value is at most alpha (equivalently, its `1 − alpha` confidence
/// sequence excludes 0); `NoDifference` once both arms have
/// `required_per_arm` and it has not; `Collecting` before. Because the test
/// is always valid, looking at the decision every tick keeps the chance of
/// a false Better/Worse at or below alpha.
pub fn ab_arm_decision(
    control: &Summary,
    arm: &Summary,
    is_control: bool,
    mde: f64,
    alpha: f64,
    required_per_arm: u64,
    higher_is_better: bool,
) -> Result<ArmResult, AnalysisError> {
    positive("mde", mde.abs())?;
    finite("mean", arm.mean)?;
    non_negative("variance", arm.variance)?;
    alpha_ok(alpha)?;
    let mut result = ArmResult {
        n: arm.n,
        mean: arm.mean,
        ci_low: f64::NAN,
        ci_high: f64::NAN,
        welch: None,
        sequential: None,
        decision: AbDecision::Control,
    };
    if is_control {
        return Ok(result);
    }
    result.decision = AbDecision::Collecting;
    if control.n < AB_MIN_SAMPLES_PER_ARM || arm.n < AB_MIN_SAMPLES_PER_ARM {
        return Ok(result);
    }
    let var_of_diff = control.variance / control.n as f64 + arm.variance / arm.n as f64;
    result.sequential = sequential_diff(arm.mean - control.mean, var_of_diff, mde * mde, alpha).ok();
    let complete = control.n >= required_per_arm && arm.n >= required_per_arm;
    result.decision = match &result.sequential {
        Some(s) if s.p_value <= alpha && s.diff != 0.0 => {
            if (s.diff > 0.0) == higher_is_better {
                AbDecision::Better
            } else {
                AbDecision::Worse
            }
        }
        _ if complete => AbDecision::NoDifference,
        _ => AbDecision::Collecting,
    };
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welch_rejects_degenerate_input() {
        assert!(welch_t_test(0.0, 1.0, 1, 0.0, 1.0, 10).is_err());
        assert!(welch_t_test(0.0, -1.0, 10, 0.0, 1.0, 10).is_err());
        assert_eq!(
            welch_t_test(1.0, 0.0, 10, 2.0, 0.0, 10),
            Err(AnalysisError::Degenerate("both variances are zero"))
        );
        assert!(welch_t_test(f64::NAN, 1.0, 10, 0.0, 1.0, 10).is_err());
        assert!(welch_t_test_alpha(0.0, 1.0, 10, 0.0, 1.0, 10, 1.0).is_err());
        // Extreme but finite input: no panic (t overflows, so an error).
        assert!(welch_t_test(0.0, 1e-300, 2, 1e300, 1e-300, 2).is_err());
        let r = welch_t_test(0.0, 1e-300, 2, 1e-140, 1e-300, 2).expect("finite");
        assert!(r.p_value >= 0.0 && r.p_value <= 1.0);
        let r = welch_t_test(0.0, 1.0, u64::MAX, 0.0, 1.0, u64::MAX).expect("finite");
        assert_eq!(r.t, 0.0);
        assert!((r.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn welch_huge_df_matches_normal() {
        let r = welch_t_test(0.0, 1.0, 10_000_000, 0.001, 1.0, 10_000_000).expect("valid");
        let z = 0.001 / (2.0_f64 / 1e7).sqrt();
        assert!((r.p_value - 2.0 * normal_sf(z)).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn two_proportion_degenerate() {
        assert!(two_proportion_z_test(0, 100, 0, 100).is_err());
        assert!(two_proportion_z_test(100, 100, 100, 100).is_err());
        assert!(two_proportion_z_test(1, 0, 1, 10).is_err());
        assert!(two_proportion_z_test(11, 10, 1, 10).is_err());
        let r = two_proportion_z_test(0, 100, 5, 100).expect("valid");
        assert!(r.z > 0.0 && r.p_value < 0.05);
    }

    #[test]
    fn mwu_edges() {
        assert!(mann_whitney_u(&[], &[1.0]).is_err());
        assert!(mann_whitney_u(&[1.0], &[f64::NAN]).is_err());
        assert!(mann_whitney_u(&[1.0, 1.0], &[1.0]).is_err());
        let r = mann_whitney_u(&[1.0], &[2.0]).expect("valid");
        assert_eq!(r.u, 0.0);
        assert_eq!(r.p_value, 1.0);
        let r = mann_whitney_u(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0]).expect("valid");
        assert_eq!(r.u, 12.0);
        assert!(r.z > 0.0);
        let r = mann_whitney_u(&[-0.0, 1.0], &[0.0, 2.0]).expect("valid");
        assert_eq!(r.u, 1.5);
    }

    #[test]
    fn srm_edges() {
        assert!(srm_chi_square(&[10], &[1.0]).is_err());
        assert!(srm_chi_square(&[10, 10], &[1.0]).is_err());
        assert!(srm_chi_square(&[10, 10], &[1.0, 0.0]).is_err());
        assert!(srm_chi_square(&[0, 0], &[1.0, 1.0]).is_err());
        let r = srm_chi_square(&[50, 50], &[1.0, 1.0]).expect("valid");
        assert_eq!(r.chi2, 0.0);
        assert_eq!(r.p_value, 1.0);
        assert!(!r.mismatch);
    }

    #[test]
    fn psi_edges_and_levels() {
        assert_eq!(PsiLevel::of(0.0999), PsiLevel::Ok);
        assert_eq!(PsiLevel::of(0.1), PsiLevel::Warn);
        assert_eq!(PsiLevel::of(0.25), PsiLevel::Alert);
        assert!(psi(&[1.0], &[1.0], 0).is_err());
        assert!(psi(&[], &[1.0], 10).is_err());
        assert!(psi(&[1.0], &[f64::NAN], 10).is_err());
        assert!(psi_from_counts(&[1, 2], &[1]).is_err());
        assert!(psi_from_counts(&[0, 0], &[1, 1]).is_err());
        // All-tied reference: edges collapse to one; no panic.
        let r = psi(&[3.0; 20], &[3.0, 4.0], 10).expect("valid");
        assert!(r.value > 0.0);
        let same: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(psi(&same, &same, 10).expect("valid").value, 0.0);
        assert_eq!(psi(&same, &same, 1).expect("valid").value, 0.0);
    }

    #[test]
    fn psi_edges_follow_type_7_quantiles() {
        let sample: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(quantile_edges(&sample, 4), vec![2.5, 5.0, 7.5]);
        assert_eq!(quantile_edges(&[1.0, 1.0, 1.0, 2.0], 4), vec![1.0, 1.25]);
    }

    #[test]
    fn msprt_properties() {
        let r = msprt(0.0, 1.0, 0.0, 1.0, 0.05).expect("valid");
        assert_eq!(r.lambda, 1.0);
        assert_eq!(r.p_value, 1.0);
        assert!(!r.reject);
        // Huge evidence: Λ overflows, log Λ and p stay meaningful.
        let r = msprt(10.0, 1.0, 1e9, 1.0, 0.05).expect("valid");
        assert!(r.log_lambda.is_finite() && r.lambda.is_infinite());
        assert_eq!(r.p_value, 0.0);
        assert!(r.reject);
        assert!(msprt(0.1, 0.0, 10.0, 1.0, 0.05).is_err());
        assert!(msprt(0.1, 1.0, -1.0, 1.0, 0.05).is_err());
        assert!(msprt(0.1, 1.0, 10.0, 1.0, 0.0).is_err());
        // Worse by 0.5 with margin 0.1: regression; better: never.
        let r = regression_beyond_margin(0.5, 0.1, 1.0, 1000.0, 0.1, 0.05).expect("valid");
        assert!(r.regression);
        let r = regression_beyond_margin(-0.5, 0.1, 1.0, 1000.0, 0.1, 0.05).expect("valid");
        assert!(r.msprt.reject && !r.regression);
        let r = regression_beyond_margin(0.12, 0.1, 1.0, 1000.0, 0.1, 0.05).expect("valid");
        assert!(!r.regression);
    }

    fn summary(n: u64, mean: f64, variance: f64) -> Summary {
        Summary { n, mean, variance }
    }

    /// Below the minimum per arm nothing is decided, however large the
    /// difference (Welch's p is shown, for reference, and does not decide).
    #[test]
    fn no_ab_decision_below_the_minimum_samples() {
        let m = AB_MIN_SAMPLES_PER_ARM;
        let control = summary(m - 1, 0.0, 1.0);
        let arm = summary(m - 1, 5.0, 1.0);
        let r = ab_arm_result(&control, &arm, false, 0.1, 0.05, 10, true).expect("valid");
        assert_eq!(r.decision, AbDecision::Collecting);
        assert!(r.sequential.is_none() && r.deciding(0.05).is_none());
        assert!(r.welch.expect("reference").p_value < 1e-10);
        // The same difference with the minimum in: the always-valid test decides.
        let r = ab_arm_result(&summary(m, 0.0, 1.0), &summary(m, 5.0, 1.0), false, 0.1, 0.05, 10, true)
            .expect("valid");
        assert_eq!(r.decision, AbDecision::Better);
        let (p, alpha) = r.deciding(0.05).expect("the test ran");
        assert!(p <= alpha && p == r.sequential.expect("ran").p_value);
        let r = ab_arm_result(&summary(m, 0.0, 1.0), &summary(m, 5.0, 1.0), false, 0.1, 0.05, 10, false)
            .expect("valid");
        assert_eq!(r.decision, AbDecision::Worse);
        let r = ab_arm_result(&summary(m, 0.0, 1.0), &summary(m, 5.0, 1.0), true, 0.1, 0.05, 10, true)
            .expect("valid");
        assert_eq!((r.decision, r.welch, r.sequential), (AbDecision::Control, None, None));
        // The decision alone is the same decision, without the shown numbers.
        for (c, a, control) in [(m - 1, m - 1, false), (m, m, false), (m, m, true), (2000, 1800, false)] {
            let (c, a) = (summary(c, 0.0, 1.0), summary(a, 0.2, 1.1));
            let full = ab_arm_result(&c, &a, control, 0.1, 0.05, 1570, true).expect("valid");
            let decision = ab_arm_decision(&c, &a, control, 0.1, 0.05, 1570, true).expect("valid");
            assert_eq!((decision.decision, decision.sequential), (full.decision, full.sequential));
            assert!(decision.welch.is_none() && decision.ci_low.is_nan());
        }
    }

    /// Welch's test no longer decides: at the planned n, a difference that
    /// Welch calls significant but the always-valid test does not is "no
    /// significant difference" (before: Better).
    #[test]
    fn only_the_always_valid_test_decides_an_ab_arm() {
        // 2 000 per arm, diff 0.07 σ: Welch p ≈ 0.027, mSPRT (τ = 0.1) p ≈ 0.4.
        let (control, arm) = (summary(2000, 0.0, 1.0), summary(2000, 0.07, 1.0));
        let r = ab_arm_result(&control, &arm, false, 0.1, 0.05, 1570, true).expect("valid");
        let (welch, seq) = (r.welch.expect("ran"), r.sequential.expect("ran"));
        assert!(welch.p_value < 0.05 && seq.p_value > 0.05, "{welch:?} {seq:?}");
        assert_eq!(r.decision, AbDecision::NoDifference);
        // Before the planned n: still collecting.
        let r = ab_arm_result(&control, &arm, false, 0.1, 0.05, 5000, true).expect("valid");
        assert_eq!(r.decision, AbDecision::Collecting);
        // The decision is the sequential test's rejection, nothing else.
        for diff in [0.0, 0.05, 0.1, 0.15, -0.15] {
            let r = ab_arm_result(&control, &summary(2000, diff, 1.0), false, 0.1, 0.05, 1570, true)
                .expect("valid");
            let s = r.sequential.expect("ran");
            let decided = matches!(r.decision, AbDecision::Better | AbDecision::Worse);
            assert_eq!(decided, s.p_value <= 0.05, "{diff}: {r:?}");
            assert_eq!(decided, s.ci_low > 0.0 || s.ci_high < 0.0, "{diff}: {r:?}");
        }
    }
}
