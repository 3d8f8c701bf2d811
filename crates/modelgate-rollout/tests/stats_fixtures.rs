//! Checks `modelgate_rollout::analysis` and the sample-size functions of
//! `modelgate_rollout::stats` against reference values computed with scipy
//! (`scripts/stats_fixtures.py` → `tests/fixtures/stats.json`).
#![allow(clippy::unwrap_used)]

use modelgate_rollout::analysis::{
    self, PSI_EPSILON, PsiLevel, mann_whitney_u, msprt, psi, psi_from_counts, srm_chi_square,
    two_proportion_z_test_alpha, welch_t_test_alpha,
};
use modelgate_rollout::stats::{sample_size_means, sample_size_proportions};
use serde_json::Value;

const FIXTURES: &str = include_str!("fixtures/stats.json");

fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).expect("valid fixture JSON")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

fn floats(v: &Value, key: &str) -> Vec<f64> {
    v[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn counts(v: &Value, key: &str) -> Vec<u64> {
    v[key].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn cases<'a>(doc: &'a Value, key: &str) -> &'a Vec<Value> {
    let list = doc[key].as_array().unwrap();
    assert!(!list.is_empty(), "no {key} fixtures");
    list
}

/// Values to 1e-6 relative (absolute near zero).
fn assert_rel(got: f64, want: f64, what: &str) {
    let tol = 1e-6 * want.abs().max(1e-12);
    assert!((got - want).abs() <= tol, "{what}: got {got:e}, want {want:e}");
}

/// p-values: 1e-6 absolute or relative, whichever is looser.
fn assert_p(got: f64, want: f64, what: &str) {
    let tol = 1e-6_f64.max(1e-6 * want.abs());
    assert!((got - want).abs() <= tol, "{what}: got {got:e}, want {want:e}");
}

#[test]
fn fixture_versions_are_recorded() {
    let doc = fixtures();
    assert!(doc["versions"]["scipy"].is_string());
    assert_eq!(f(&doc, "psi_epsilon"), PSI_EPSILON);
}

#[test]
fn welch_matches_scipy() {
    let doc = fixtures();
    for case in cases(&doc, "welch") {
        let i = &case["input"];
        let r = welch_t_test_alpha(
            f(i, "mean1"),
            f(i, "var1"),
            u(i, "n1"),
            f(i, "mean2"),
            f(i, "var2"),
            u(i, "n2"),
            f(i, "alpha"),
        )
        .unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_rel(r.t, f(case, "t"), &format!("t {i}"));
        assert_rel(r.df, f(case, "df"), &format!("df {i}"));
        assert_p(r.p_value, f(case, "p_value"), &format!("p {i}"));
        assert_rel(r.diff, f(case, "diff"), &format!("diff {i}"));
        assert_rel(r.ci_low, f(case, "ci_low"), &format!("ci_low {i}"));
        assert_rel(r.ci_high, f(case, "ci_high"), &format!("ci_high {i}"));
    }
}

#[test]
fn two_proportion_matches_reference() {
    let doc = fixtures();
    for case in cases(&doc, "two_proportion") {
        let i = &case["input"];
        let r = two_proportion_z_test_alpha(u(i, "x1"), u(i, "n1"), u(i, "x2"), u(i, "n2"), f(i, "alpha"))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_rel(r.z, f(case, "z"), &format!("z {i}"));
        assert_p(r.p_value, f(case, "p_value"), &format!("p {i}"));
        assert_rel(r.diff, f(case, "diff"), &format!("diff {i}"));
        assert_rel(r.ci_low, f(case, "ci_low"), &format!("ci_low {i}"));
        assert_rel(r.ci_high, f(case, "ci_high"), &format!("ci_high {i}"));
    }
}

#[test]
fn mann_whitney_matches_scipy() {
    let doc = fixtures();
    for case in cases(&doc, "mann_whitney") {
        let i = &case["input"];
        let r = mann_whitney_u(&floats(i, "a"), &floats(i, "b")).unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_rel(r.u, f(case, "u"), &format!("u {i}"));
        assert_p(r.p_value, f(case, "p_value"), &format!("p {i}"));
    }
}

#[test]
fn srm_matches_scipy() {
    let doc = fixtures();
    let mut flagged = 0;
    for case in cases(&doc, "srm") {
        let i = &case["input"];
        let r = srm_chi_square(&counts(i, "observed"), &floats(i, "weights"))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_rel(r.chi2, f(case, "chi2"), &format!("chi2 {i}"));
        assert_eq!(r.df, f(case, "df"));
        assert_p(r.p_value, f(case, "p_value"), &format!("p {i}"));
        assert_eq!(r.mismatch, case["mismatch"].as_bool().unwrap(), "{i}");
        flagged += usize::from(r.mismatch);
    }
    assert!(flagged > 0, "fixtures must include a flagged split");
}

#[test]
fn psi_matches_numpy_binning() {
    let doc = fixtures();
    for case in cases(&doc, "psi") {
        let i = &case["input"];
        let bins = usize::try_from(u(i, "bins")).unwrap();
        let r = psi(&floats(i, "expected"), &floats(i, "actual"), bins).unwrap();
        let want = f(case, "value");
        assert_rel(r.value, want, "psi");
        assert_eq!(r.level, PsiLevel::of(want));
        // The counts path gives the same value.
        let from_counts =
            psi_from_counts(&counts(case, "expected_counts"), &counts(case, "actual_counts")).unwrap();
        assert_rel(from_counts.value, want, "psi from fixture counts");
    }
    for case in cases(&doc, "psi_from_counts") {
        let r = psi_from_counts(&counts(case, "expected_counts"), &counts(case, "actual_counts")).unwrap();
        assert_rel(r.value, f(case, "value"), &format!("psi_from_counts {case}"));
    }
}

#[test]
fn msprt_matches_closed_form() {
    let doc = fixtures();
    for case in cases(&doc, "msprt") {
        let i = &case["input"];
        let r = msprt(
            f(i, "mean_diff"),
            f(i, "var_pooled_per_obs"),
            f(i, "n_per_arm"),
            f(i, "tau2"),
            f(i, "alpha"),
        )
        .unwrap_or_else(|e| panic!("{i}: {e}"));
        let want = f(case, "log_lambda");
        assert!(
            (r.log_lambda - want).abs() <= 1e-6 * want.abs().max(1.0),
            "log Λ {i}: {} vs {want}",
            r.log_lambda
        );
        assert_p(r.p_value, f(case, "p_value"), &format!("p {i}"));
        assert_eq!(r.reject, case["reject"].as_bool().unwrap(), "{i}");
        // The margin helper with margin 0 is the same test.
        let m = analysis::regression_beyond_margin(
            f(i, "mean_diff"),
            0.0,
            f(i, "var_pooled_per_obs"),
            f(i, "n_per_arm"),
            f(i, "tau2"),
            f(i, "alpha"),
        )
        .unwrap();
        assert_eq!(m.msprt, r);
        assert_eq!(m.regression, r.reject && f(i, "mean_diff") > 0.0);
    }
}

#[test]
fn sample_sizes_match_closed_form() {
    let doc = fixtures();
    for case in cases(&doc, "sample_size_means") {
        let i = &case["input"];
        let n = sample_size_means(f(i, "alpha"), f(i, "power"), f(i, "sigma2"), f(i, "mde")).unwrap();
        assert_eq!(n, u(case, "n"), "{i}");
    }
    for case in cases(&doc, "sample_size_proportions") {
        let i = &case["input"];
        let n = sample_size_proportions(f(i, "alpha"), f(i, "power"), f(i, "p1"), f(i, "p2")).unwrap();
        assert_eq!(n, u(case, "n"), "{i}");
    }
}

#[test]
fn sequential_diff_matches_the_integrated_mixture_and_its_confidence_sequence() {
    let doc = fixtures();
    for case in cases(&doc, "sequential_diff") {
        let i = &case["input"];
        let r = analysis::sequential_diff(f(i, "diff"), f(i, "var_of_diff"), f(i, "tau2"), f(i, "alpha"))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
        let want = f(case, "log_lambda");
        assert!(
            (r.log_lambda - want).abs() <= 1e-7 * want.abs().max(1.0),
            "log Λ {i}: {} vs {want}",
            r.log_lambda
        );
        assert_p(r.p_value, f(case, "p_value"), &format!("p {i}"));
        assert_rel(r.ci_low, f(case, "ci_low"), &format!("ci_low {i}"));
        assert_rel(r.ci_high, f(case, "ci_high"), &format!("ci_high {i}"));
        // With s² = 2σ²/n it is the paired mSPRT.
        let (sigma2, n) = (f(i, "var_of_diff") * 50.0, 100.0);
        let paired = msprt(f(i, "diff"), sigma2, n, f(i, "tau2"), f(i, "alpha")).unwrap();
        assert!((paired.log_lambda - r.log_lambda).abs() <= 1e-9 * r.log_lambda.abs().max(1.0));
    }
}

#[test]
fn mean_interval_matches_student_t() {
    let doc = fixtures();
    for case in cases(&doc, "mean_interval") {
        let i = &case["input"];
        let s = analysis::Summary { n: u(i, "n"), mean: f(i, "mean"), variance: f(i, "variance") };
        let (lo, hi) = analysis::mean_interval(&s, f(i, "alpha")).unwrap();
        assert_rel(lo, f(case, "ci_low"), &format!("ci_low {i}"));
        assert_rel(hi, f(case, "ci_high"), &format!("ci_high {i}"));
    }
}

#[test]
fn ab_arm_results_decide_only_on_evidence() {
    use analysis::{AbDecision, Summary, ab_arm_result};
    let control = Summary { n: 5000, mean: 0.10, variance: 0.09 };
    // A big lift is called early by the always-valid test.
    let better = Summary { n: 5000, mean: 0.15, variance: 0.1275 };
    let r = ab_arm_result(&control, &better, false, 0.02, 0.05, 100_000, true).unwrap();
    assert_eq!(r.decision, AbDecision::Better, "{r:?}");
    assert!(r.sequential.unwrap().p_value <= 0.05);
    let r = ab_arm_result(&control, &better, false, 0.02, 0.05, 100_000, false).unwrap();
    assert_eq!(r.decision, AbDecision::Worse, "lower is better flips it");
    // A tiny difference before the planned size: still collecting, even
    // where a fixed-horizon test would already say p < 0.05.
    let slight = Summary { n: 5000, mean: 0.114, variance: 0.099 };
    let r = ab_arm_result(&control, &slight, false, 0.02, 0.05, 100_000, true).unwrap();
    assert!(r.welch.unwrap().p_value < 0.05, "{r:?}");
    assert_eq!(r.decision, AbDecision::Collecting);
    // The same data with the planned size reached: the fixed-horizon test
    // no longer decides (re-checked every tick it would be wrong far more
    // often than α), so no significant difference.
    let r = ab_arm_result(&control, &slight, false, 0.02, 0.05, 5000, true).unwrap();
    assert!(r.welch.unwrap().p_value < 0.05 && r.sequential.unwrap().p_value > 0.05, "{r:?}");
    assert_eq!(r.decision, AbDecision::NoDifference);
    let same = Summary { n: 5000, mean: 0.1001, variance: 0.09 };
    let r = ab_arm_result(&control, &same, false, 0.02, 0.05, 5000, true).unwrap();
    assert_eq!(r.decision, AbDecision::NoDifference);
    let r = ab_arm_result(&control, &control, true, 0.02, 0.05, 5000, true).unwrap();
    assert_eq!(r.decision, AbDecision::Control);
    assert!(r.ci_low < 0.10 && r.ci_high > 0.10);
}
