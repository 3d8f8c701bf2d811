//! The champion-challenger gate's test: is the challenger's lift above the
//! threshold? One-sided and always valid, so it may be looked at every tick
//! of an evaluation period while the period's sample grows.
//!
//! With `s` = +1 when a larger KPI is better (−1 otherwise) and the relative
//! threshold `r`, the gate promotes on H1: s·(μc − μh) > r·|μh|, against
//! H0: s·(μc − μh) ≤ r·|μh|. Writing g for the sign of the champion's mean,
//! this is the linear contrast θ = s·μc − (s + r·g)·μh > 0, estimated by
//! D = s·x̄c − (s + r·g)·x̄h with variance σ² = vc/nc + (s + r·g)²·vh/nh.
//!
//! The evidence is the half-normal mixture of Gaussian likelihood ratios
//! (Robbins; Howard et al. 2021, one-sided normal mixture): with the mixing
//! scale τ,
//!
//! Λ⁺ = 2 · √(σ²/(σ²+τ²)) · exp(D²τ²/(2σ²(σ²+τ²))) · Φ(Dτ/(σ√(σ²+τ²))),
//!
//! a nonnegative martingale with mean 1 at θ = 0 (and a supermartingale
//! for θ < 0), so by Ville's inequality Λ⁺ ever reaching 1/α has
//! probability at most α under H0, however often it is checked. Λ⁺ grows
//! with D, so the test is the same as the always-valid lower confidence
//! bound of θ being above 0; [`LiftTest::lower_bound`] is that bound as a
//! relative lift (the threshold plus θ's bound over |x̄h|).
//!
//! The variances are the samples' (a plug-in, as the mSPRT in
//! [`crate::analysis::msprt`]): the guarantee is asymptotic in the period's
//! sample, which the gate's `min_samples` keeps in the hundreds;
//! benches/src/decisions/cells/cc.rs measures it.

use crate::KpiSample;
use crate::analysis::special::normal_cdf;

/// The longest evaluation period: the outcome store keeps a day of KPI sums.
pub const MAX_PERIOD_SECS: u64 = 86_400;

/// The α each evaluation period's test runs at: the model's α spread over
/// a day, `alpha × period / 24 h` (the whole α for a 24 h period), so the
/// periods of any day together wrongly promote with probability at most α.
pub fn period_alpha(alpha: f64, window_secs: u64) -> f64 {
    let day = MAX_PERIOD_SECS;
    alpha * window_secs.clamp(1, day) as f64 / day as f64
}

/// The mixing scale τ as a fraction of the champion's mean, at least: the
/// test is most sensitive to lifts of this size beyond the threshold.
pub const MIXING_LIFT: f64 = 0.05;

/// The gate's test on one period's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiftTest {
    /// The observed relative lift s·(x̄c − x̄h)/|x̄h|.
    pub lift: f64,
    /// The always-valid lower confidence bound of the relative lift at
    /// `alpha`; the gate promotes when it is above the threshold.
    pub lower_bound: f64,
    /// ln Λ⁺, the evidence for "lift > threshold" (crosses at ln(1/α)).
    pub log_evidence: f64,
    /// Whether ln Λ⁺ ≥ ln(1/α): the lift is shown above the threshold.
    pub crossed: bool,
}

/// The contrast D, its variance and the mixing variance τ², or `None` when
/// the relative lift is undefined (a zero or non-finite champion mean) or
/// a variance is missing.
fn contrast(
    champion: &KpiSample,
    challenger: &KpiSample,
    threshold: f64,
    higher_is_better: bool,
) -> Option<(f64, f64, f64)> {
    let (vc, vh) = (challenger.variance?, champion.variance?);
    if !(champion.mean.is_finite() && champion.mean != 0.0 && challenger.mean.is_finite()) {
        return None;
    }
    let s = if higher_is_better { 1.0 } else { -1.0 };
    let b = s + threshold * champion.mean.signum();
    let d = s * challenger.mean - b * champion.mean;
    let var = vc.max(0.0) / challenger.n.max(1) as f64 + b * b * vh.max(0.0) / champion.n.max(1) as f64;
    let tau = threshold.max(MIXING_LIFT) * champion.mean.abs();
    Some((d, var, tau * tau))
}

/// ln Λ⁺ of the contrast `d` with variance `var` and mixing variance `tau2`.
/// `cutoff`: once the bound without Φ is below it, that bound is returned
/// (larger than ln Λ⁺ but below the cutoff, so the comparison is the same)
/// without computing Φ.
fn log_mixture(d: f64, var: f64, tau2: f64, cutoff: f64) -> f64 {
    if var <= 0.0 {
        return if d > 0.0 { f64::INFINITY } else { f64::NEG_INFINITY };
    }
    let total = var + tau2;
    let upper = std::f64::consts::LN_2 + 0.5 * (var / total).ln() + d * d * tau2 / (2.0 * var * total);
    // ln Φ ≤ 0: below the cutoff without it, below with it.
    if upper < cutoff {
        return upper;
    }
    let w = d * tau2.sqrt() / (var.sqrt() * total.sqrt());
    upper + normal_cdf(w).ln()
}

/// Whether the lift is shown above the threshold at `alpha` (the gate's
/// per-tick check; no bound computed).
pub fn lift_crossed(
    champion: &KpiSample,
    challenger: &KpiSample,
    threshold: f64,
    higher_is_better: bool,
    alpha: f64,
) -> Option<bool> {
    let (d, var, tau2) = contrast(champion, challenger, threshold, higher_is_better)?;
    if d <= 0.0 {
        return Some(false);
    }
    let cutoff = (1.0 / alpha).ln();
    Some(log_mixture(d, var, tau2, cutoff) >= cutoff)
}

/// The gate's test with its numbers: the lift, its always-valid lower
/// bound at `alpha` and the evidence. `None` as for [`lift_crossed`].
pub fn lift_test(
    champion: &KpiSample,
    challenger: &KpiSample,
    threshold: f64,
    higher_is_better: bool,
    alpha: f64,
) -> Option<LiftTest> {
    let (d, var, tau2) = contrast(champion, challenger, threshold, higher_is_better)?;
    let cutoff = (1.0 / alpha).ln();
    let log_evidence = log_mixture(d, var, tau2, f64::NEG_INFINITY);
    let scale = champion.mean.abs();
    let s = if higher_is_better { 1.0 } else { -1.0 };
    let lift = s * (challenger.mean - champion.mean) / scale;
    // The boundary B with ln Λ⁺(B) = ln(1/α); θ ≥ D − B with confidence.
    let boundary = if var <= 0.0 {
        0.0
    } else {
        let mut hi = var.sqrt();
        while log_mixture(hi, var, tau2, f64::NEG_INFINITY) < cutoff {
            hi *= 2.0;
        }
        let mut lo = 0.0;
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if log_mixture(mid, var, tau2, f64::NEG_INFINITY) < cutoff {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    Some(LiftTest {
        lift,
        lower_bound: threshold + (d - boundary) / scale,
        log_evidence,
        crossed: log_evidence >= cutoff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kpi(mean: f64, n: u64, variance: f64) -> KpiSample {
        KpiSample { mean, n, variance: Some(variance) }
    }

    #[test]
    fn the_mixture_matches_its_closed_form() {
        // scipy 1.17: log(2*sqrt(v/(v+t2))) + d*d*t2/(2*v*(v+t2))
        //   + norm.logcdf(d*sqrt(t2)/(sqrt(v)*sqrt(v+t2)))
        // with d = 0.01, v = 1e-5, t2 = 2.5e-5.
        let (d, v, t2) = (0.01, 1e-5, 2.5e-5);
        let got = log_mixture(d, v, t2, f64::NEG_INFINITY);
        assert!((got - 3.634424011666014).abs() < 1e-12, "{got}");
        // The early exit gives a value still below the cutoff.
        assert!(log_mixture(d, v, t2, 10.0) < 10.0);
        // At D = 0 the evidence is 2·√(σ²/(σ²+τ²))·½ < 1.
        assert!((log_mixture(0.0, v, t2, f64::NEG_INFINITY) - 0.5 * (v / (v + t2)).ln()).abs() < 1e-12);
    }

    #[test]
    fn the_evidence_grows_with_the_contrast() {
        let (v, t2) = (1e-5, 2.5e-5);
        let mut last = f64::NEG_INFINITY;
        for i in -50..=50 {
            let e = log_mixture(f64::from(i) * 1e-3, v, t2, f64::NEG_INFINITY);
            assert!(e > last, "at {i}");
            last = e;
        }
    }

    #[test]
    fn at_the_threshold_it_does_not_promote_and_the_bound_straddles_it() {
        // Champion 10%, challenger exactly 2% better: D = 0.
        let h = kpi(0.10, 50_000, 0.09);
        let c = kpi(0.102, 50_000, 0.102 * 0.898);
        let t = lift_test(&h, &c, 0.02, true, 0.05).unwrap();
        assert!(!t.crossed);
        assert!((t.lift - 0.02).abs() < 1e-12);
        assert!(t.lower_bound < 0.02, "{t:?}");
        assert_eq!(lift_crossed(&h, &c, 0.02, true, 0.05), Some(false));
        // Above the threshold in the point estimate but not shown.
        let c = kpi(0.104, 2_000, 0.104 * 0.896);
        assert_eq!(lift_crossed(&h, &c, 0.02, true, 0.05), Some(false));
    }

    #[test]
    fn a_clear_lift_is_shown_above_the_threshold() {
        // +20% on 10% with 50,000 a side: the bound is far above 2%.
        let h = kpi(0.10, 50_000, 0.09);
        let c = kpi(0.12, 50_000, 0.12 * 0.88);
        let t = lift_test(&h, &c, 0.02, true, 0.05).unwrap();
        assert!(t.crossed && t.lower_bound > 0.02, "{t:?}");
        assert!(t.lower_bound < t.lift);
        assert_eq!(lift_crossed(&h, &c, 0.02, true, 0.05), Some(true));
        // Threshold 0 means "shown better than the champion".
        let c = kpi(0.11, 50_000, 0.11 * 0.89);
        let t = lift_test(&h, &c, 0.0, true, 0.05).unwrap();
        assert!(t.crossed && t.lower_bound > 0.0, "{t:?}");
    }

    #[test]
    fn the_bound_is_where_the_evidence_crosses() {
        // Promote exactly when the lower bound clears the threshold.
        let h = kpi(0.10, 20_000, 0.09);
        for i in 0..40 {
            let mean = 0.100 + f64::from(i) * 0.0005;
            let c = kpi(mean, 20_000, mean * (1.0 - mean));
            let t = lift_test(&h, &c, 0.02, true, 0.05).unwrap();
            assert_eq!(t.crossed, t.lower_bound > 0.02, "{t:?}");
            assert_eq!(lift_crossed(&h, &c, 0.02, true, 0.05), Some(t.crossed));
        }
    }

    #[test]
    fn lower_is_better_and_negative_means() {
        // Latency 200 → 170 ms is a 15% improvement; 10% is required.
        let h = kpi(200.0, 5_000, 400.0);
        let c = kpi(170.0, 5_000, 400.0);
        let t = lift_test(&h, &c, 0.10, false, 0.05).unwrap();
        assert!((t.lift - 0.15).abs() < 1e-12);
        assert!(t.crossed && t.lower_bound > 0.10, "{t:?}");
        // A negative KPI (profit −100 → −80 is a 20% improvement upward).
        let h = kpi(-100.0, 5_000, 100.0);
        let c = kpi(-80.0, 5_000, 100.0);
        let t = lift_test(&h, &c, 0.10, true, 0.05).unwrap();
        assert!((t.lift - 0.20).abs() < 1e-12);
        assert!(t.crossed, "{t:?}");
        // Undefined relative to a zero mean.
        assert_eq!(lift_crossed(&kpi(0.0, 5_000, 1.0), &c, 0.1, true, 0.05), None);
    }
}
