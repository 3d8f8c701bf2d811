//! One hard trigger's sequential test on one candidate: a Bernoulli
//! log-likelihood ratio (H1 rate against H0 rate) accumulated over the
//! batches of requests the candidate serves between ticks, read two ways.
//!
//! - **Wald's power-one SPRT since the rollout started** (no lower
//!   boundary), on a mixture of two alternatives: the likelihood ratio is
//!   w·e^Λ + (1−w)·e^Λ' with Λ against H1 (2× the limit) and Λ' against a
//!   far alternative (5×), w = [`NEAR_WEIGHT`]. It fires when the log of
//!   the mixture reaches ln(1/α_sprt). Under H0 (or any rate below it) each
//!   e^Λ, and so the mixture, is a nonnegative (super)martingale with mean
//!   1, so by Ville's inequality P(ever ≥ 1/α) ≤ α over any horizon. It
//!   catches a version that is bad from the start; the far alternative
//!   catches a very bad one in fewer requests than a test of 2× alone can.
//! - **Page's CUSUM** S = Λ_now − min over restart points of Λ_k: the
//!   largest LLR of any stretch that starts at a restart point. Restart
//!   points are the tick boundaries, at most one per
//!   [`RESTART_SPACING_MS`], so a rollout of the budget horizon has at most
//!   T = horizon / spacing of them. Each stretch is an SPRT bounded by
//!   Ville; the union bound over T starts gives P(S ever ≥ ln(T/α_cusum))
//!   ≤ α_cusum. It catches a version that goes bad mid-rollout, which the
//!   SPRT since the start sees late (its LLR has drifted far below 0).

/// CUSUM restart points are at least this far apart, whatever the
/// controller's tick: it fixes how many restarts a budget horizon holds.
pub const RESTART_SPACING_MS: u64 = 500;

/// The share of a detector's α given to the SPRT since the start (the rest
/// goes to the CUSUM). Chosen by simulation (cells/hard.rs): the SPRT is
/// what catches a version bad from the start, and its bound, ln(1/α), is
/// where the power targets are decided; the CUSUM's bound is
/// ln(T/α) with ln T ≈ 12, so a quarter of the budget moves it by only
/// ln 4 ≈ 1.4 against a whole one.
pub const SPRT_SHARE: f64 = 0.75;

/// The mixture weight of the near alternative (2× the limit); the far one
/// (5×) gets the rest. What it costs, in the bound each alternative must
/// reach: ln(1/0.8) = 0.22 nats at 2× (about 57 requests at 2× the NaN
/// limit), ln(1/0.2) = 1.61 at 5× (about 39 requests at 5×), against the
/// 315 requests a test of 2× alone needs at 5× (0.025 nats a request).
pub const NEAR_WEIGHT: f64 = 0.8;

/// Wald's SPRT log-likelihood ratio for `x` successes in `n` Bernoulli trials,
/// H1 rate `p1` against H0 rate `p0`.
pub fn sprt_llr(x: u64, n: u64, p0: f64, p1: f64) -> f64 {
    let (up, down) = llr_weights(p0, p1);
    x as f64 * up + (n.saturating_sub(x)) as f64 * down
}

/// The LLR of one success and of one failure.
fn llr_weights(p0: f64, p1: f64) -> (f64, f64) {
    let p0 = p0.clamp(1e-9, 1.0 - 1e-9);
    let p1 = p1.clamp(1e-9, 1.0 - 1e-9);
    ((p1 / p0).ln(), ((1.0 - p1) / (1.0 - p0)).ln())
}

/// A detector's two bounds, from its share α of the false-alarm budget and
/// the restart points its horizon holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// The SPRT's share of α and its bound ln(1/α_sprt).
    pub alpha_sprt: f64,
    pub sprt: f64,
    /// The CUSUM's share of α and its bound ln(T/α_cusum).
    pub alpha_cusum: f64,
    pub cusum: f64,
    /// T: restart points in the budget horizon.
    pub restarts: f64,
}

impl Bounds {
    /// The bounds of a detector given `alpha` for a horizon of
    /// `horizon_hours`.
    pub fn new(alpha: f64, horizon_hours: f64) -> Self {
        let restarts = (horizon_hours * 3_600_000.0 / RESTART_SPACING_MS as f64).ceil().max(1.0);
        let alpha_sprt = alpha * SPRT_SHARE;
        let alpha_cusum = alpha - alpha_sprt;
        Self {
            alpha_sprt,
            sprt: (1.0 / alpha_sprt).ln(),
            alpha_cusum,
            cusum: (restarts / alpha_cusum).ln(),
            restarts,
        }
    }
}

/// Which of a detector's statistics crossed its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossed {
    /// The SPRT since the rollout started.
    Sprt,
    /// The CUSUM.
    Cusum,
}

impl Crossed {
    /// `sprt` or `cusum`, the deciding test's prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Crossed::Sprt => "sprt",
            Crossed::Cusum => "cusum",
        }
    }
}

/// H0, H1 and the far alternative's rates.
type Rates = (f64, f64, f64);

/// One trigger's accumulated evidence on one candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detector {
    /// Λ: the LLR against the near alternative since the rollout started
    /// (what the CUSUM reads).
    pub llr: f64,
    /// Λ': the LLR against the far alternative since the rollout started.
    pub llr_far: f64,
    /// Requests and events fed since the rollout started.
    pub n: u64,
    pub x: u64,
    /// The lowest Λ at a restart point (0 at the start), with n and x there.
    floor: f64,
    floor_n: u64,
    floor_x: u64,
    last_restart_ms: Option<u64>,
    /// The last (p0, p1, p_far) and their weights, so a steady test does
    /// not take logarithms every tick.
    weights: Option<(Rates, [(f64, f64); 2])>,
}

impl Detector {
    /// Feeds one batch: `x` events in `n` requests served up to `now_ms`,
    /// tested at H0 rate `p0` against H1 rate `p1` and the far alternative
    /// `p_far` (all fixed before the batch was seen: what keeps e^Λ a
    /// martingale under H0; `p_far` = `p1` for a single alternative). A
    /// tick at least [`RESTART_SPACING_MS`] after the last restart point is
    /// one.
    pub fn feed(&mut self, now_ms: u64, x: u64, n: u64, p0: f64, p1: f64, p_far: f64) {
        if self.last_restart_ms.is_none_or(|t| now_ms >= t.saturating_add(RESTART_SPACING_MS)) {
            if self.llr <= self.floor {
                (self.floor, self.floor_n, self.floor_x) = (self.llr, self.n, self.x);
            }
            self.last_restart_ms = Some(now_ms);
        }
        if n == 0 {
            return;
        }
        let [(up, down), (up_far, down_far)] = match self.weights {
            Some((key, w)) if key == (p0, p1, p_far) => w,
            _ => {
                let w = [llr_weights(p0, p1), llr_weights(p0, p_far)];
                self.weights = Some(((p0, p1, p_far), w));
                w
            }
        };
        let x = x.min(n);
        self.llr += x as f64 * up + (n - x) as f64 * down;
        self.llr_far += x as f64 * up_far + (n - x) as f64 * down_far;
        self.n += n;
        self.x += x;
    }

    /// The SPRT's statistic: ln(w·e^Λ + (1−w)·e^Λ').
    pub fn sprt(&self) -> f64 {
        let (a, b) = (self.llr + NEAR_WEIGHT.ln(), self.llr_far + (1.0 - NEAR_WEIGHT).ln());
        let m = a.max(b);
        m + ((a - m).exp() + (b - m).exp()).ln()
    }

    /// Whether both statistics are below `level` (cheaply: without the
    /// mixture's logarithm).
    pub fn below(&self, level: f64) -> bool {
        self.llr < level && self.llr_far < level && self.cusum() < level
    }

    /// S: the CUSUM statistic, never below 0.
    pub fn cusum(&self) -> f64 {
        (self.llr - self.floor).max(0.0)
    }

    /// Requests and events since the CUSUM's current start.
    pub fn cusum_counts(&self) -> (u64, u64) {
        if self.cusum() <= 0.0 { (0, 0) } else { (self.n - self.floor_n, self.x - self.floor_x) }
    }

    /// Which statistic is at or past its bound, the SPRT first.
    pub fn crossed(&self, bounds: &Bounds) -> Option<Crossed> {
        if self.sprt() >= bounds.sprt {
            Some(Crossed::Sprt)
        } else if self.cusum() >= bounds.cusum {
            Some(Crossed::Cusum)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprt_llr_matches_the_closed_form() {
        // 3 successes of 10 at p0 = 0.1, p1 = 0.2.
        let want = 3.0 * (2.0f64).ln() + 7.0 * (0.8f64 / 0.9).ln();
        assert!((sprt_llr(3, 10, 0.1, 0.2) - want).abs() < 1e-12);
    }

    #[test]
    fn bounds_come_from_the_alpha_and_the_horizon() {
        let b = Bounds::new(0.0005, 24.0);
        assert_eq!(b.restarts, 172_800.0);
        assert!((b.alpha_sprt - 0.000375).abs() < 1e-15);
        assert!((b.alpha_cusum - 0.000125).abs() < 1e-15);
        // ln(1/0.000375) and ln(172800/0.000125).
        assert!((b.sprt - 7.888_584_531_993_863).abs() < 1e-9, "{}", b.sprt);
        assert!((b.cusum - 21.047_086_956_014_066).abs() < 1e-9, "{}", b.cusum);
    }

    #[test]
    fn increments_add_up_and_the_cusum_restarts_at_zero() {
        let (p0, p1) = (0.01, 0.02);
        let mut d = Detector::default();
        // Good batches: Λ falls, the CUSUM stays at 0.
        for t in 0..10 {
            d.feed(t * 500, 0, 100, p0, p1, p1);
            assert_eq!(d.cusum(), 0.0);
        }
        assert!((d.llr - sprt_llr(0, 1000, p0, p1)).abs() < 1e-9);
        assert_eq!((d.n, d.x), (1000, 0));
        // A bad batch: the CUSUM is this batch's LLR alone; Λ still carries
        // the good past.
        d.feed(5_000, 10, 100, p0, p1, p1);
        let batch = sprt_llr(10, 100, p0, p1);
        assert!((d.cusum() - batch).abs() < 1e-9);
        assert!((d.llr - sprt_llr(10, 1100, p0, p1)).abs() < 1e-9);
        assert_eq!(d.cusum_counts(), (100, 10));
        // A second bad batch 100 ms later is not a restart point: it adds.
        d.feed(5_100, 10, 100, p0, p1, p1);
        assert!((d.cusum() - 2.0 * batch).abs() < 1e-9);
        assert_eq!(d.cusum_counts(), (200, 20));
    }

    #[test]
    fn restart_points_are_at_least_the_spacing_apart() {
        let (p0, p1) = (0.01, 0.02);
        let mut d = Detector::default();
        d.feed(0, 0, 100, p0, p1, p1);
        // 500 ms: a restart point (Λ there is below 0). 50 ms ticks after it
        // are not, so the bad batch at 600 ms is measured from 500 ms,
        // through the good batch at 550 ms.
        d.feed(500, 0, 100, p0, p1, p1);
        d.feed(550, 0, 100, p0, p1, p1);
        d.feed(600, 5, 10, p0, p1, p1);
        let want = 2.0 * sprt_llr(0, 100, p0, p1) + sprt_llr(5, 10, p0, p1);
        assert!(want > 0.0);
        assert!((d.cusum() - want).abs() < 1e-9, "{} vs {want}", d.cusum());
        assert_eq!(d.cusum_counts(), (210, 5));
    }

    #[test]
    fn a_bad_stream_fires_the_sprt_and_a_late_change_fires_the_cusum() {
        let bounds = Bounds::new(0.0005, 24.0);
        let (p0, p1) = (0.01, 0.02);
        // Bad from the start: 3% NaN in batches of 100.
        let mut d = Detector::default();
        let mut t = 0;
        while d.crossed(&bounds).is_none() {
            d.feed(t, 3, 100, p0, p1, p1);
            t += 500;
        }
        assert_eq!(d.crossed(&bounds), Some(Crossed::Sprt));
        // Wald: about bound / (drift per request) requests.
        let drift = sprt_llr(3, 100, p0, p1) / 100.0;
        assert!((d.n as f64 - bounds.sprt / drift).abs() <= 100.0, "{} requests", d.n);
        // Good for a long time (0.5%), then 5%: Λ is far below 0, the
        // CUSUM fires on the bad stretch alone.
        let mut d = Detector::default();
        for t in 0..2_000 {
            d.feed(t * 500, 1, 200, p0, p1, p1);
        }
        let good_n = d.n;
        let mut t = 1_000_000;
        while d.crossed(&bounds).is_none() {
            d.feed(t, 10, 200, p0, p1, p1);
            t += 500;
        }
        assert_eq!(d.crossed(&bounds), Some(Crossed::Cusum));
        assert!(d.llr < 0.0);
        let (n, x) = d.cusum_counts();
        assert_eq!(n, d.n - good_n, "the CUSUM restarted where the change began");
        assert_eq!(x * 20, n);
    }

    #[test]
    fn the_sprt_is_the_mixture_of_both_alternatives() {
        let mut d = Detector::default();
        d.feed(0, 3, 100, 0.01, 0.02, 0.05);
        let (near, far) = (sprt_llr(3, 100, 0.01, 0.02), sprt_llr(3, 100, 0.01, 0.05));
        assert!((d.llr - near).abs() < 1e-12 && (d.llr_far - far).abs() < 1e-12);
        let want = (0.8 * near.exp() + 0.2 * far.exp()).ln();
        assert!((d.sprt() - want).abs() < 1e-12, "{} vs {want}", d.sprt());
        // One alternative: the mixture is its LLR.
        let mut one = Detector::default();
        one.feed(0, 3, 100, 0.01, 0.02, 0.02);
        assert!((one.sprt() - near).abs() < 1e-12);
        // Far from 0 the log-sum-exp does not overflow.
        let mut big = Detector::default();
        big.feed(0, 2_000, 2_000, 0.01, 0.02, 0.05);
        assert!(big.sprt().is_finite() && (big.sprt() - (big.llr_far + 0.2f64.ln())).abs() < 1e-9);
    }

    #[test]
    fn at_or_below_h0_neither_statistic_climbs_on_average() {
        // E[LLR per request] at p = p0 is −KL(p0‖p1) < 0; below p0 lower.
        let (p0, p1): (f64, f64) = (0.01, 0.02);
        let at = p0 * (p1 / p0).ln() + (1.0 - p0) * ((1.0 - p1) / (1.0 - p0)).ln();
        assert!(at < 0.0);
        // KL(p0‖p1) = .01 ln(.01/.02) + .99 ln(.99/.98), computed in Python.
        assert!((at + 0.003_119_375_943_778_275).abs() < 1e-12, "{at}");
        let below = 0.005 * (p1 / p0).ln() + 0.995 * ((1.0 - p1) / (1.0 - p0)).ln();
        assert!(below < at);
    }
}
