//! The sample-ratio-mismatch check as a sequential test: the
//! Dirichlet-multinomial mixture Bayes factor of Lindon & Malek (2020),
//! "Anytime-valid inference for multinomial count data".
//!
//! The admin API and the controller look at the split every tick. A
//! chi-square test at α per look, looked at thousands of times, flags a
//! fair split far more often than α (2.1% of 1 h A/A runs at α 0.001 in the
//! decision simulator). The Bayes factor below is a nonnegative martingale
//! under the expected split, so by Ville's inequality the chance that it
//! *ever* reaches `1/α` is at most `α`, however often it is looked at.

use serde::{Deserialize, Serialize};

use super::special::ln_gamma;
use super::{AnalysisError, out_of_range};

/// The Dirichlet prior's concentration `k`: the prior on the arms' shares
/// is `Dirichlet(k · p₀)`, centred on the expected split `p₀`. With
/// `k = 100` a 50/50 split's prior share has a standard deviation of about
/// 5 percentage points, so the test is tuned to skews of a few points (the
/// default of Lindon & Malek's reference implementation, `savvi`).
pub const SRM_PRIOR_CONCENTRATION: f64 = 100.0;

/// The sequential sample-ratio-mismatch test on the counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialSrm {
    /// ln of the Dirichlet-multinomial Bayes factor against the expected
    /// split.
    pub log_bayes_factor: f64,
    /// The always-valid p-value, `min(1, 1/BF)`.
    pub p_value: f64,
    /// What `log_bayes_factor` is compared with: `ln(1/α)`.
    pub threshold: f64,
    /// The α the test runs at.
    pub alpha: f64,
    /// Requests counted over every arm.
    pub n: u64,
    /// `log_bayes_factor ≥ threshold`: the assignment is broken.
    pub mismatch: bool,
}

/// The Dirichlet-multinomial Bayes factor of the per-arm counts `observed`
/// against the split `expected_weights` (any positive scale), with the
/// prior `Dirichlet(k · p₀)`, `k` = [`SRM_PRIOR_CONCENTRATION`]:
///
/// `ln BF = ln Γ(k) − ln Γ(k + n) + Σᵢ [ln Γ(k p₀ᵢ + xᵢ) − ln Γ(k p₀ᵢ)] − Σᵢ xᵢ ln p₀ᵢ`.
///
/// It needs only the counts (the order of arrivals does not matter), so it
/// can be computed afresh at every look. Flags a mismatch once
/// `BF ≥ 1/alpha`. Errors with fewer than 2 arms, mismatched lengths, a
/// weight that is not finite and positive, or alpha outside (0, 1). With no
/// observations the Bayes factor is 1.
pub fn srm_sequential(
    observed: &[u64],
    expected_weights: &[f64],
    alpha: f64,
) -> Result<SequentialSrm, AnalysisError> {
    super::alpha_ok(alpha)?;
    super::check_split(observed, expected_weights)?;
    let weight_sum: f64 = expected_weights.iter().sum();
    if !weight_sum.is_finite() {
        return Err(out_of_range("sum of expected weights", weight_sum, "a finite number"));
    }
    let k = SRM_PRIOR_CONCENTRATION;
    let n: u64 = observed.iter().sum();
    let mut log_bf = ln_gamma(k) - ln_gamma(k + n as f64);
    for (&x, &w) in observed.iter().zip(expected_weights) {
        let p0 = w / weight_sum;
        let x = x as f64;
        log_bf += ln_gamma(k * p0 + x) - ln_gamma(k * p0) - x * p0.ln();
    }
    if !log_bf.is_finite() {
        return Err(AnalysisError::Degenerate("the Bayes factor is not finite"));
    }
    let threshold = -alpha.ln();
    Ok(SequentialSrm {
        log_bayes_factor: log_bf,
        p_value: (-log_bf).exp().min(1.0),
        threshold,
        alpha,
        n,
        mismatch: log_bf >= threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from scipy 1.17.1's `gammaln` (the formula is one line of it):
    ///
    /// ```python
    /// from scipy.special import gammaln
    /// import numpy as np
    /// def lbf(x, w, k=100.0):
    ///     x = np.asarray(x, float); p = np.asarray(w, float) / np.sum(w); a = k * p
    ///     return (gammaln(k) - gammaln(k + x.sum()) + np.sum(gammaln(a + x) - gammaln(a))
    ///             - np.sum(x * np.log(p)))
    /// ```
    #[test]
    fn the_bayes_factor_matches_scipy_gammaln() {
        let cases: [(&[u64], &[f64], f64); 6] = [
            (&[50, 50], &[1.0, 1.0], -0.3478235538264727),
            (&[500, 500], &[1.0, 1.0], -1.2012203220416495),
            (&[5200, 4800], &[1.0, 1.0], 5.613613411776896),
            (&[600, 800], &[2000.0, 8000.0], 175.5784879515743),
            (&[1000, 1100, 900], &[1.0, 1.0, 1.0], 6.256849075873561),
            (&[3, 0], &[9500.0, 500.0], 0.0015524286208327687),
        ];
        for (x, w, want) in cases {
            let r = srm_sequential(x, w, 0.001).expect("valid");
            assert!(
                (r.log_bayes_factor - want).abs() < 1e-9,
                "{x:?} {w:?}: {} vs {want}",
                r.log_bayes_factor
            );
            assert_eq!(r.mismatch, want >= 1000f64.ln(), "{x:?}");
            assert!((r.p_value - (-want).exp().min(1.0)).abs() <= 1e-9 * r.p_value, "{r:?}");
            assert_eq!(r.n, x.iter().sum::<u64>());
        }
    }

    #[test]
    fn no_counts_is_no_evidence_and_bad_input_is_an_error() {
        let r = srm_sequential(&[0, 0], &[1.0, 1.0], 0.001).expect("valid");
        assert_eq!((r.log_bayes_factor, r.p_value, r.mismatch), (0.0, 1.0, false));
        assert!(srm_sequential(&[10], &[1.0], 0.001).is_err());
        assert!(srm_sequential(&[10, 10], &[1.0], 0.001).is_err());
        assert!(srm_sequential(&[10, 10], &[1.0, 0.0], 0.001).is_err());
        assert!(srm_sequential(&[10, 10], &[1.0, 1.0], 0.0).is_err());
    }

    /// The threshold is ln(1/α): the same counts flag at a lenient α and not
    /// at a strict one, where the chi-square test at one look (p = 4.5e-5)
    /// would already say "broken".
    #[test]
    fn the_threshold_is_one_over_alpha() {
        let r = srm_sequential(&[1000, 1100, 900], &[1.0, 1.0, 1.0], 0.05).expect("valid");
        assert!(r.mismatch && (r.threshold - 20f64.ln()).abs() < 1e-12);
        assert!(!srm_sequential(&[1000, 1100, 900], &[1.0, 1.0, 1.0], 0.001).expect("valid").mismatch);
        let chi = super::super::srm_chi_square(&[1000, 1100, 900], &[1.0, 1.0, 1.0]).expect("valid");
        assert!((chi.chi2 - 20.0).abs() < 1e-9 && chi.p_value < 0.001, "{chi:?}");
    }
}
