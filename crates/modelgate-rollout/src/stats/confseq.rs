//! A confidence sequence for a Bernoulli rate that is valid from the first
//! sample and at every look, however the looks are spaced.
//!
//! The beta-binomial mixture (Robbins 1970; Howard, Ramdas, McAuliffe &
//! Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
//! sequences", §3): for a Beta(a, b) prior on the rate,
//!
//! `M_n(p) = B(a + x, b + n − x) / B(a, b) / (p^x (1 − p)^(n − x))`
//!
//! is the ratio of the mixture likelihood to the likelihood at `p` after
//! `x` failures in `n` trials. Under the true `p` it is a nonnegative
//! martingale with `M_0 = 1`, so by Ville's inequality
//! `P(∃ n: M_n(p) ≥ 1/α) ≤ α`: the set `{p : M_n(p) < 1/α}` covers the
//! true rate at every `n` simultaneously with probability `1 − α`. It
//! depends on `(x, n)` only, so a controller that sees running totals once
//! a tick (any subset of the `n`s) keeps the guarantee. `ln M_n` is convex
//! in `p` with its minimum (≤ 0) at `x/n`, so the set is an interval around
//! `x/n`, found here by bisection on each side.
//!
//! The prior only moves where the sequence is tight, never its validity.
//! [`BetaPrior::for_margin`] puts it where step verdicts need it.

use crate::analysis::special::ln_beta;

/// The Beta(a, b) mixing distribution of [`bernoulli_cs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaPrior {
    pub a: f64,
    pub b: f64,
}

impl BetaPrior {
    /// The prior for rates judged against a non-inferiority `margin` (an
    /// absolute difference of rates, e.g. 0.01): Beta(1, b) with mean
    /// `2 × margin`, i.e. `b = 1/(2 margin) − 1` (at least 1). Its density
    /// is highest at 0 and falls off over a few margins (Beta(1, 49) for a
    /// 1 pp margin has 90% of its mass below 4.6%), where the error rates a
    /// step has to tell apart live (0.1–5%). Computed for an identical
    /// candidate on a 5% step (the champion 19× its requests; expected error
    /// counts, n on a 5% grid), the candidate requests needed to show it
    /// within a 1 pp margin at α = 0.05, at rates 0 / 0.1 / 1 / 2 / 5%:
    /// 644 / 867 / 2,435 / 4,602 / 12,227 with this prior; 1,109 / 1,351 /
    /// 4,173 / 6,803 / 14,864 with Beta(1, 1) (50–70% more at 0–2%);
    /// 555 / 785 / 2,319 / 4,833 / 15,608 with a prior centred on the
    /// margin, Beta(1, 99) (5–14% fewer at 0–1%, 28% more at 5%).
    pub fn for_margin(margin: f64) -> Self {
        let b = if margin > 0.0 && margin.is_finite() { (0.5 / margin - 1.0).max(1.0) } else { 1.0 };
        BetaPrior { a: 1.0, b }
    }

    fn ln_norm(&self) -> f64 {
        ln_beta(self.a, self.b)
    }
}

/// `ln M_n(p)` for `x` failures in `n` trials (see the module docs).
pub fn ln_mixture_ratio(x: u64, n: u64, p: f64, prior: BetaPrior) -> f64 {
    Mixture::new(x, n, prior).ln_ratio(p)
}

/// The mixture's constant part for one `(x, n)`.
#[derive(Debug, Clone, Copy)]
struct Mixture {
    x: f64,
    y: f64,
    ln_marginal: f64,
}

impl Mixture {
    fn new(x: u64, n: u64, prior: BetaPrior) -> Self {
        let x = x.min(n);
        let (xf, yf) = (x as f64, (n - x) as f64);
        Mixture { x: xf, y: yf, ln_marginal: ln_beta(prior.a + xf, prior.b + yf) - prior.ln_norm() }
    }

    fn hat(&self) -> f64 {
        let n = self.x + self.y;
        if n == 0.0 { 0.5 } else { self.x / n }
    }

    fn ln_ratio(&self, p: f64) -> f64 {
        let mut ln_lik = 0.0;
        if self.x > 0.0 {
            ln_lik += self.x * p.ln();
        }
        if self.y > 0.0 {
            ln_lik += self.y * (-p).ln_1p();
        }
        self.ln_marginal - ln_lik
    }

    /// `d ln M / dp`.
    fn slope(&self, p: f64) -> f64 {
        -self.x / p + self.y / (1.0 - p)
    }

    /// The `1 − alpha` interval `{p : ln M(p) < ln(1/alpha)}`.
    fn interval(&self, alpha: f64) -> (f64, f64) {
        let level = -alpha.ln();
        let hat = self.hat();
        let low = if self.x == 0.0 || self.ln_ratio(0.0) < level { 0.0 } else { self.end(level, 0.0, hat) };
        let high = if self.y == 0.0 || self.ln_ratio(1.0) < level { 1.0 } else { self.end(level, 1.0, hat) };
        (low, high)
    }

    /// Where `ln M` crosses `level` between `outer` (outside the set, an
    /// end of [0, 1]) and `inner` (inside it). `ln M − level` is convex, so
    /// a Newton step from a point outside the set lands between it and
    /// the crossing: the iterate stays outside and converges from there
    /// (quadratically), and the answer errs only wide. A bisection step
    /// stands in where the function is infinite (at 0 or 1) or Newton
    /// would leave the bracket.
    fn end(&self, level: f64, outer: f64, inner: f64) -> f64 {
        let f = |p: f64| self.ln_ratio(p) - level;
        let (mut out, mut inn) = (outer, inner);
        let mut f_out = f(out);
        for _ in 0..200 {
            let mid = 0.5 * (out + inn);
            let newton = if f_out.is_finite() { out - f_out / self.slope(out) } else { f64::NAN };
            let between = |p: f64| (p - out) * (p - inn) < 0.0;
            let p = if between(newton) { newton } else { mid };
            let fp = f(p);
            if fp >= 0.0 {
                (out, f_out) = (p, fp);
            } else {
                inn = p;
            }
            if f_out < 1e-10 || (out - inn).abs() <= 1e-15_f64.max(1e-12 * out.abs()) {
                break;
            }
        }
        out
    }
}

/// The `1 − alpha` beta-binomial confidence sequence for a Bernoulli rate
/// after `x` failures in `n` trials: `(low, high)` with
/// `P(∀ n: low_n ≤ p ≤ high_n) ≥ 1 − alpha`. `(0, 1)` before any trial.
pub fn bernoulli_cs(x: u64, n: u64, alpha: f64, prior: BetaPrior) -> (f64, f64) {
    if n == 0 || !(alpha > 0.0 && alpha < 1.0) {
        return (0.0, 1.0);
    }
    Mixture::new(x, n, prior).interval(alpha)
}

/// An always-valid p-value for "both rates are equal" from two
/// beta-binomial mixtures: `min(1, 2 / min_p max(M_1(p), M_2(p)))`, the
/// smallest α at which the two `1 − α/2` sequences are disjoint (so the
/// difference's interval built from them excludes 0). Under equal rates
/// `p`, `P(∃ n: max(M_1, M_2)(p) ≥ 2/α) ≤ α`.
pub fn equal_rates_p_value(x1: u64, n1: u64, x2: u64, n2: u64, prior: BetaPrior) -> f64 {
    let (m1, m2) = (Mixture::new(x1, n1, prior), Mixture::new(x2, n2, prior));
    let f = |p: f64| m1.ln_ratio(p).max(m2.ln_ratio(p));
    let (mut lo, mut hi) = (m1.hat().min(m2.hat()), m1.hat().max(m2.hat()));
    // The max of two convex functions is convex: golden-section search,
    // one new evaluation per step, to 1e-7 of the bracket (the minimum is
    // flat, so its value is exact to far more digits than that).
    const G: f64 = 0.618_033_988_749_894_9;
    let tol = 1e-7 * (hi - lo) + 1e-15;
    let (mut c, mut d) = (hi - G * (hi - lo), lo + G * (hi - lo));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..100 {
        if hi - lo <= tol {
            break;
        }
        if fc <= fd {
            (hi, d, fd) = (d, c, fc);
            c = hi - G * (hi - lo);
            fc = f(c);
        } else {
            (lo, c, fc) = (c, d, fd);
            d = lo + G * (hi - lo);
            fd = f(d);
        }
    }
    let ln_min = fc.min(fd).min(f(0.5 * (lo + hi)));
    (2.0_f64.ln() - ln_min).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIOR: BetaPrior = BetaPrior { a: 1.0, b: 49.0 };

    #[test]
    fn the_prior_follows_the_margin() {
        assert_eq!(BetaPrior::for_margin(0.01), PRIOR);
        assert_eq!(BetaPrior::for_margin(0.5), BetaPrior { a: 1.0, b: 1.0 });
        assert_eq!(BetaPrior::for_margin(0.0), BetaPrior { a: 1.0, b: 1.0 });
    }

    /// Reference values: scipy's `brentq` (xtol 1e-15) on
    /// `betaln(a+x, b+n-x) - betaln(a, b) - x ln p - (n-x) log1p(-p) = ln(1/α)`
    /// on each side of x/n.
    #[test]
    fn bounds_match_scipy() {
        for &(x, n, alpha, low, high) in REFERENCE {
            let (lo, hi) = bernoulli_cs(x, n, alpha, PRIOR);
            assert!((lo - low).abs() <= 1e-8 + 1e-7 * low, "({x}, {n}, {alpha}): low {lo} vs {low}");
            assert!((hi - high).abs() <= 1e-8 + 1e-7 * high, "({x}, {n}, {alpha}): high {hi} vs {high}");
        }
    }

    #[test]
    fn the_ends_are_where_the_mixture_crosses_one_over_alpha() {
        for (x, n) in [(3, 200), (40, 1000), (0, 500), (500, 500), (1, 1)] {
            let (lo, hi) = bernoulli_cs(x, n, 0.025, PRIOR);
            let level = -(0.025_f64).ln();
            if lo > 0.0 {
                assert!((ln_mixture_ratio(x, n, lo, PRIOR) - level).abs() < 1e-5, "{x}/{n} low {lo}");
            }
            if hi < 1.0 {
                assert!((ln_mixture_ratio(x, n, hi, PRIOR) - level).abs() < 1e-5, "{x}/{n} high {hi}");
            }
            let hat = x as f64 / n as f64;
            assert!(lo <= hat && hat <= hi);
        }
    }

    /// The bug the sequence replaces: no errors in 200 requests does not
    /// put a rate of 1% out of reach (the old plug-in interval said ±0.7 pp).
    #[test]
    fn no_errors_in_a_few_hundred_requests_says_little() {
        let (lo, hi) = bernoulli_cs(0, 200, 0.025, PRIOR);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.015, "{hi}");
        assert_eq!(bernoulli_cs(0, 0, 0.05, PRIOR), (0.0, 1.0));
    }

    #[test]
    fn the_interval_narrows_as_samples_grow() {
        let mut last = 1.0;
        for n in [100, 1_000, 10_000, 100_000] {
            let (lo, hi) = bernoulli_cs(n / 100, n, 0.05, PRIOR);
            assert!(hi - lo < last, "n {n}");
            last = hi - lo;
        }
        assert!(last < 0.003, "{last}");
    }

    #[test]
    fn equal_rates_p_value_is_one_for_equal_rates_and_small_for_distant_ones() {
        assert_eq!(equal_rates_p_value(10, 1000, 10, 1000, PRIOR), 1.0);
        let p = equal_rates_p_value(10, 1000, 60, 1000, PRIOR);
        assert!(p < 1e-3, "{p}");
        // The p-value is the α at which the two α/2 sequences just touch.
        let (_, hi1) = bernoulli_cs(10, 1000, p * 1.01 / 2.0, PRIOR);
        let (lo2, _) = bernoulli_cs(60, 1000, p * 1.01 / 2.0, PRIOR);
        let (_, hi1b) = bernoulli_cs(10, 1000, p * 0.99 / 2.0, PRIOR);
        let (lo2b, _) = bernoulli_cs(60, 1000, p * 0.99 / 2.0, PRIOR);
        assert!(hi1 < lo2 && hi1b > lo2b, "{hi1} {lo2} {hi1b} {lo2b}");
    }

    /// (x, n, α, low, high) from scipy 1.17.1, prior Beta(1, 49).
    #[allow(clippy::excessive_precision)]
    const REFERENCE: &[(u64, u64, f64, f64, f64)] = &[
        (0, 200, 0.025, 0.0, 0.026222616270415833),
        (3, 200, 0.025, 0.0013690003859247448, 0.056326805977685995),
        (40, 1000, 0.05, 0.023076579799115288, 0.06329818193771702),
        (1, 1, 0.05, 0.0009999999999999998, 1.0),
        (500, 500, 0.05, 0.7184656176240425, 1.0),
        (12, 5000, 0.025, 0.0007017568791508681, 0.005742567630875639),
        (0, 10000, 0.025, 0.0, 0.0009008227715399414),
        (190, 19000, 0.025, 0.007600401511948702, 0.0128527679269971),
        (7, 36, 0.01, 0.021904101200773362, 0.5509318840121686),
    ];
}
