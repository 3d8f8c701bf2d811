//! The Clopper–Pearson ("exact") interval for a binomial proportion: the
//! simulator's rates are counts of runs, and a rate near 0 needs an interval
//! that does not claim less than the runs can show.

use modelgate_rollout::analysis::special::beta_inc;

/// The `q` quantile of Beta(a, b), by bisection on the regularized
/// incomplete beta function (monotone in x).
fn beta_quantile(q: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if beta_inc(a, b, mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The two-sided `1 − alpha` Clopper–Pearson interval for `x` events in `n`
/// trials; `(0, 1)` when `n` is 0.
pub fn clopper_pearson(x: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (xf, nf) = (x as f64, n as f64);
    let low = if x == 0 { 0.0 } else { beta_quantile(alpha / 2.0, xf, nf - xf + 1.0) };
    let high = if x >= n { 1.0 } else { beta_quantile(1.0 - alpha / 2.0, xf + 1.0, nf - xf) };
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 5e-5, "got {got}, want {want}");
    }

    #[test]
    fn matches_known_values() {
        // scipy.stats.binomtest(x, n).proportion_ci(method="exact").
        let (lo, hi) = clopper_pearson(0, 100, 0.05);
        close(lo, 0.0);
        close(hi, 0.036_217);
        let (lo, hi) = clopper_pearson(5, 100, 0.05);
        close(lo, 0.016_432);
        close(hi, 0.112_835);
        let (lo, hi) = clopper_pearson(100, 100, 0.05);
        close(lo, 0.963_783);
        close(hi, 1.0);
        let (lo, hi) = clopper_pearson(50, 100, 0.05);
        close(lo, 0.398_321);
        close(hi, 0.601_679);
        // 0 of 1000: the "rule of three" region, 3.69/n.
        let (_, hi) = clopper_pearson(0, 1000, 0.05);
        close(hi, 0.003_682);
        assert_eq!(clopper_pearson(0, 0, 0.05), (0.0, 1.0));
    }
}
