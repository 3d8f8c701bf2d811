//! The statistics rollout decisions need today: the normal quantile, the
//! per-arm sample sizes of a two-tailed, two-sample test, and a numerically
//! stable running mean and variance ([`RunningStats`]).

use thiserror::Error;

mod confseq;
mod running;
pub use confseq::{BetaPrior, bernoulli_cs, equal_rates_p_value, ln_mixture_ratio};
pub use running::RunningStats;

use as241::{CENTRAL_DEN, CENTRAL_NUM, FAR_DEN, FAR_NUM, NEAR_DEN, NEAR_NUM};

/// An input outside the domain of a statistical formula.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StatsError {
    /// The named input is outside its valid range.
    #[error("{name} is {value}; expected {expected}")]
    OutOfRange {
        /// Which input.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
}

/// The standard normal quantile Φ⁻¹(p): the z with P(Z ≤ z) = p.
///
/// Wichura's AS241 (PPND16), relative error about 1e-16 over (0, 1).
/// Returns -∞ for p ≤ 0, +∞ for p ≥ 1 and NaN for NaN.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&CENTRAL_NUM, r) / poly(&CENTRAL_DEN, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let z = if r <= 5.0 {
        let r = r - 1.6;
        poly(&NEAR_NUM, r) / poly(&NEAR_DEN, r)
    } else {
        let r = r - 5.0;
        poly(&FAR_NUM, r) / poly(&FAR_DEN, r)
    };
    if q < 0.0 { -z } else { z }
}

/// Per-arm sample size to detect a difference `mde` (δ) between two means
/// with a two-tailed test at significance `alpha` and the given `power`,
/// when the metric's variance is `sigma2` (σ²):
///
/// `n = ⌈2 (z_{1-α/2} + z_{power})² σ² / δ²⌉`
///
/// e.g. α = 0.05, power = 0.8, σ² = 1, δ = 0.1 gives 1570.
pub fn sample_size_means(alpha: f64, power: f64, sigma2: f64, mde: f64) -> Result<u64, StatsError> {
    let z = z_sum(alpha, power)?;
    positive("sigma2", sigma2)?;
    positive("mde", mde)?;
    Ok(ceil_count(2.0 * z * z * sigma2 / (mde * mde)))
}

/// Per-arm sample size to tell conversion rate `p1` from `p2` with a
/// two-tailed test, normal approximation with pooled variance under the null
/// (Fleiss, no continuity correction):
///
/// `n = ⌈(z_{1-α/2} √(2 p̄ q̄) + z_{power} √(p₁q₁ + p₂q₂))² / (p₁ − p₂)²⌉`,
/// with `p̄ = (p₁ + p₂)/2` and `q = 1 − p`.
///
/// e.g. α = 0.05, power = 0.8, p₁ = 0.10, p₂ = 0.15 gives 686.
pub fn sample_size_proportions(alpha: f64, power: f64, p1: f64, p2: f64) -> Result<u64, StatsError> {
    probability("alpha", alpha)?;
    probability("power", power)?;
    probability("p1", p1)?;
    probability("p2", p2)?;
    if p1 == p2 {
        return Err(StatsError::OutOfRange {
            name: "p2",
            value: p2,
            expected: "a proportion different from p1",
        });
    }
    let za = normal_quantile(1.0 - alpha / 2.0);
    let zb = normal_quantile(power);
    let pbar = (p1 + p2) / 2.0;
    let pooled = (2.0 * pbar * (1.0 - pbar)).sqrt();
    let unpooled = (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    let num = za * pooled + zb * unpooled;
    Ok(ceil_count(num * num / ((p1 - p2) * (p1 - p2))))
}

/// `z_{1-α/2} + z_{power}` after checking both are probabilities.
fn z_sum(alpha: f64, power: f64) -> Result<f64, StatsError> {
    probability("alpha", alpha)?;
    probability("power", power)?;
    Ok(normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power))
}

fn probability(name: &'static str, value: f64) -> Result<(), StatsError> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(StatsError::OutOfRange { name, value, expected: "a probability strictly between 0 and 1" })
    }
}

fn positive(name: &'static str, value: f64) -> Result<(), StatsError> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(StatsError::OutOfRange { name, value, expected: "a finite number above 0" })
    }
}

/// Rounds a sample size up, ignoring floating-point noise of a few ulps so a
/// mathematically whole result (e.g. 400.0000000000001) is not bumped by one.
/// Saturates at `u64::MAX` for absurd inputs.
fn ceil_count(n: f64) -> u64 {
    (n * (1.0 - 1e-12)).ceil() as u64
}

/// Evaluates a polynomial with coefficients lowest degree first (Horner).
fn poly(coefficients: &[f64; 8], x: f64) -> f64 {
    coefficients.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

/// AS241's coefficients, lowest degree first.
mod as241 {
    // The digits are Wichura's (1988), as published, so they can be checked
    // against the paper; the compiler rounds each to the nearest f64.
    #![allow(clippy::excessive_precision)]

    pub(super) const CENTRAL_NUM: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    pub(super) const CENTRAL_DEN: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    pub(super) const NEAR_NUM: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    pub(super) const NEAR_DEN: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    pub(super) const FAR_NUM: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    pub(super) const FAR_DEN: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Φ⁻¹ reference values (R's qnorm; the 1e-300 tail checked by bisection on
    /// a 50-digit continued-fraction Φ).
    const QUANTILES: [(f64, f64); 12] = [
        (0.5, 0.0),
        (0.975, 1.959_963_984_540_054),
        (0.025, -1.959_963_984_540_054),
        (0.8, 0.841_621_233_572_914_3),
        (0.9, 1.281_551_565_544_600_4),
        (0.95, 1.644_853_626_951_472_2),
        (0.995, 2.575_829_303_548_900_4),
        (0.999, 3.090_232_306_167_813_5),
        (0.1, -1.281_551_565_544_600_4),
        (1e-5, -4.264_890_793_922_825),
        (1e-10, -6.361_340_902_404_056),
        (1e-300, -37.047_096_299_361_2),
    ];

    #[test]
    fn normal_quantile_matches_reference_values_to_1e_9() {
        for (p, z) in QUANTILES {
            let got = normal_quantile(p);
            assert!((got - z).abs() < 1e-9, "Φ⁻¹({p}) = {got}, expected {z}");
        }
    }

    #[test]
    fn normal_quantile_edges() {
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(f64::NAN).is_nan());
    }

    #[test]
    fn normal_quantile_is_antisymmetric_and_monotone() {
        let mut last = f64::NEG_INFINITY;
        for i in 1..1000 {
            let p = f64::from(i) / 1000.0;
            let z = normal_quantile(p);
            assert!(z > last, "not increasing at p = {p}");
            assert!((z + normal_quantile(1.0 - p)).abs() < 1e-12);
            last = z;
        }
    }

    #[test]
    fn sample_size_means_reference_values() {
        // 2 (1.959964 + 0.841621)² σ² / δ²
        assert_eq!(sample_size_means(0.05, 0.8, 1.0, 0.1), Ok(1570));
        assert_eq!(sample_size_means(0.05, 0.8, 1.0, 0.2), Ok(393));
        // σ² = 4, δ = 0.5: 4 / 0.25 × 15.698 = 251.2
        assert_eq!(sample_size_means(0.05, 0.8, 4.0, 0.5), Ok(252));
        // 2 (1.959964 + 1.281552)² / 0.25² = 336.2
        assert_eq!(sample_size_means(0.05, 0.9, 1.0, 0.25), Ok(337));
        // 2 (2.575829 + 0.841621)² / 0.1² = 2335.4
        assert_eq!(sample_size_means(0.01, 0.8, 1.0, 0.1), Ok(2336));
    }

    #[test]
    fn sample_size_proportions_reference_values() {
        // Standard textbook values (Fleiss without continuity correction).
        assert_eq!(sample_size_proportions(0.05, 0.8, 0.10, 0.15), Ok(686));
        assert_eq!(sample_size_proportions(0.05, 0.8, 0.15, 0.10), Ok(686));
        assert_eq!(sample_size_proportions(0.05, 0.8, 0.5, 0.6), Ok(388));
        assert_eq!(sample_size_proportions(0.05, 0.9, 0.2, 0.3), Ok(392));
    }

    #[test]
    fn sample_size_rejects_bad_inputs() {
        let err = sample_size_means(0.0, 0.8, 1.0, 0.1).unwrap_err();
        assert_eq!(err.to_string(), "alpha is 0; expected a probability strictly between 0 and 1");
        assert!(sample_size_means(0.05, 1.0, 1.0, 0.1).is_err());
        assert!(sample_size_means(0.05, 0.8, 0.0, 0.1).is_err());
        assert!(sample_size_means(0.05, 0.8, 1.0, -0.1).is_err());
        assert!(sample_size_means(0.05, 0.8, 1.0, f64::NAN).is_err());
        assert!(sample_size_proportions(0.05, 0.8, 0.1, 0.1).is_err());
        assert!(sample_size_proportions(0.05, 0.8, 0.0, 0.1).is_err());
    }
}
