//! Hard-trigger cells: false rollbacks per 24 h rollout with every
//! candidate exactly at its limits (A/A), and requests and seconds to roll
//! back a bad canary, bad from the start or gone bad after an hour (power).
//!
//! Traffic is drawn per tick: Poisson arrivals split by kind (errors,
//! NaN/Inf, over the SLA, fine) are independent Poisson counts (thinning),
//! so a 24 h rollout is 172,800 ticks of a few draws, not a loop over its
//! requests. The A/A cells feed the per-candidate detectors
//! (`HardTriggers`, what `control::judge::hard_trigger` feeds through
//! `RolloutDetectors`) with the running totals; the power cells go through
//! `hard_trigger` itself on the arms' totals.

use modelgate::decisions::{ArmNumbers, HardTriggers, RolloutDetectors, hard_trigger};
use modelgate_rollout::{TriggerConfig, WindowCounts};

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, RunOutcome, T0, TICK_MS, Traffic, arm, decided, ticks};

/// The SLA of the latency cells (its value does not matter: the
/// simulation draws which requests are over it).
const SLA_MS: f64 = 5.0;

/// ln k! for k < 16, then Stirling's series.
fn ln_factorial(k: f64) -> f64 {
    if k < 16.0 {
        (2..=k as u64).map(|i| (i as f64).ln()).sum()
    } else {
        let k2 = k * k;
        (k + 0.5) * k.ln() - k + 0.5 * std::f64::consts::TAU.ln() + 1.0 / (12.0 * k) - 1.0 / (360.0 * k * k2)
            + 1.0 / (1260.0 * k2 * k2 * k)
    }
}

/// Poisson draws of one mean: inversion below 10, Hörmann's PTRS
/// transformed rejection (1993) above, both exact.
#[derive(Debug, Clone, Copy)]
struct Poisson {
    mean: f64,
    exp_neg: f64,
    ln_mean: f64,
    a: f64,
    b: f64,
    inv_alpha: f64,
    v_r: f64,
}

impl Poisson {
    fn new(mean: f64) -> Self {
        let b = 0.931 + 2.53 * mean.sqrt();
        Self {
            mean,
            exp_neg: (-mean).exp(),
            ln_mean: mean.ln(),
            a: -0.059 + 0.02483 * b,
            b,
            inv_alpha: 1.1239 + 1.1328 / (b - 3.4),
            v_r: 0.9277 - 3.6224 / (b - 2.0),
        }
    }

    fn draw(&self, rng: &mut Rng) -> u64 {
        if self.mean <= 0.0 {
            return 0;
        }
        if self.mean < 10.0 {
            let (mut k, mut p) = (0u64, self.exp_neg);
            let (mut sum, u) = (p, rng.uniform());
            while u > sum && k < 1_000 {
                k += 1;
                p *= self.mean / k as f64;
                sum += p;
            }
            return k;
        }
        loop {
            let u = rng.uniform() - 0.5;
            let v = rng.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * self.a / us + self.b) * u + self.mean + 0.43).floor();
            if us >= 0.07 && v <= self.v_r {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + self.inv_alpha.ln() - (self.a / (us * us) + self.b).ln()
                <= -self.mean + k * self.ln_mean - ln_factorial(k)
            {
                return k as u64;
            }
        }
    }
}

/// What share of a version's requests fail, give NaN/Inf and are slower
/// than the SLA (these three are disjoint; the rest are fine).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kinds {
    pub errors: f64,
    pub nan_inf: f64,
    pub over_sla: f64,
}

impl Kinds {
    fn nan(nan_inf: f64) -> Self {
        Self { nan_inf, ..Self::default() }
    }
}

/// One version's per-tick draws.
#[derive(Debug, Clone, Copy)]
struct Draws {
    errors: Poisson,
    nan_inf: Poisson,
    over_sla: Poisson,
    fine: Poisson,
}

impl Draws {
    fn new(per_tick: f64, k: Kinds) -> Self {
        Self {
            errors: Poisson::new(per_tick * k.errors),
            nan_inf: Poisson::new(per_tick * k.nan_inf),
            over_sla: Poisson::new(per_tick * k.over_sla),
            fine: Poisson::new(per_tick * (1.0 - k.errors - k.nan_inf - k.over_sla)),
        }
    }

    /// Adds one tick's requests to `c`.
    fn add(&self, rng: &mut Rng, c: &mut WindowCounts) {
        let (e, n, o) = (self.errors.draw(rng), self.nan_inf.draw(rng), self.over_sla.draw(rng));
        c.requests += e + n + o + self.fine.draw(rng);
        c.errors += e;
        c.nan_inf += n;
        c.over_sla += o;
    }
}

/// A 24 h (`horizon_s`) rollout of one candidate under the default
/// triggers (with an SLA if `sla`), each version's requests of `kinds`;
/// decided when a trigger fires.
pub fn aa_run(rng: &mut Rng, traffic: Traffic, kinds: [Kinds; 2], sla: bool, horizon_s: u64) -> RunOutcome {
    let cfg = TriggerConfig { p99_sla_ms: sla.then_some(SLA_MS), ..TriggerConfig::default() };
    let per_tick = traffic.per_tick();
    let draws = [Draws::new(per_tick[0].2, kinds[0]), Draws::new(per_tick[1].2, kinds[1])];
    let mut counts = [WindowCounts::default(); 2];
    let mut detectors = HardTriggers::default();
    for tick in 1..=ticks(horizon_s) {
        // The champion's counts enter only through its error rate: without
        // errors they cannot move a decision, and are not drawn.
        if kinds[0].errors > 0.0 {
            draws[0].add(rng, &mut counts[0]);
        }
        draws[1].add(rng, &mut counts[1]);
        detectors.observe(&cfg, T0 + tick * TICK_MS, &counts[0], &counts[1]);
        if detectors.fired(&cfg, 1).is_some() {
            return decided(tick, counts[1].requests);
        }
    }
    RunOutcome { candidate_requests: counts[1].requests, ..RunOutcome::default() }
}

/// A canary whose NaN/Inf rate is `before` until `change_s`, then `after`
/// (the champion at the limit throughout), judged by `hard_trigger` on the
/// arms' running totals. Seconds and requests are counted from the change.
pub fn power_run(
    rng: &mut Rng,
    traffic: Traffic,
    limit: f64,
    (before, change_s, after): (f64, u64, f64),
    horizon_s: u64,
) -> RunOutcome {
    let cfg = TriggerConfig::default();
    let per_tick = traffic.per_tick();
    let champion = Draws::new(per_tick[0].2, Kinds::nan(limit));
    let [bad_before, bad_after] = [before, after].map(|p| Draws::new(per_tick[1].2, Kinds::nan(p)));
    let mut arms: [ArmNumbers; 2] = [arm(CHAMPION, per_tick[0].1), arm(CANDIDATE, per_tick[1].1)];
    let mut detectors = RolloutDetectors::default();
    let mut counts = [WindowCounts::default(); 2];
    let change_tick = ticks(change_s);
    let mut at_change = 0;
    for tick in 1..=ticks(horizon_s) {
        if tick == change_tick + 1 {
            at_change = counts[1].requests;
        }
        champion.add(rng, &mut counts[0]);
        (if tick > change_tick { &bad_after } else { &bad_before }).add(rng, &mut counts[1]);
        for (a, c) in arms.iter_mut().zip(&counts) {
            a.total.requests = c.requests;
            a.total.nan_inf = c.nan_inf;
        }
        if hard_trigger(&mut detectors, &cfg, CHAMPION, &arms, T0 + tick * TICK_MS).is_some() {
            let mut out = decided(tick, counts[1].requests - at_change);
            out.seconds -= change_s as f64;
            return out;
        }
    }
    RunOutcome { candidate_requests: counts[1].requests, ..RunOutcome::default() }
}

/// The hard-trigger cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let (hour, day) = (scale.hour_s, scale.day_s);
    let cfg = TriggerConfig::default();
    let (budget, limit) = (cfg.false_alarm_budget, cfg.nan_inf_rate);
    // 0 hits in 2,500 runs puts the interval's upper end at 0.00147 ≤ 1.5 α.
    // Where the true rate is near α (a 5% canary at 200 req/s: the bounds
    // spend the budget on power, the rate is ~0.6 α) a few hits are expected
    // and only 10,000 runs can show the claim: those cells run 4× as many.
    let aa_runs = scale.runs * 5 / 2;
    let near = aa_runs * 4;
    let mut out = Vec::new();
    let mut aa = |setting: String, traffic: Traffic, kinds: [Kinds; 2], sla: bool, runs: u64| {
        out.push(Cell {
            name: "hard-trigger-aa",
            setting,
            claim: Claim::FalseRate(budget),
            runs,
            horizon_s: day,
            run: Box::new(move |rng| aa_run(rng, traffic, kinds, sla, day)),
        });
    };
    let split = |bp: u32| format!("{}/{}", 100 - bp / 100, bp / 100);
    for (rate, bp) in [(200.0, 5000), (200.0, 500), (20.0, 5000), (20.0, 500)] {
        aa(
            format!("NaN {:.0}% both, {}, {rate:.0} req/s, {}", limit * 100.0, split(bp), span(day)),
            Traffic { rate, candidate_bp: bp },
            [Kinds::nan(limit), Kinds::nan(limit)],
            false,
            if (rate, bp) == (200.0, 500) { near } else { aa_runs },
        );
    }
    let canary = Traffic { rate: 200.0, candidate_bp: 500 };
    // The champion fails 0.2%: the limit is max(5 × 0.2%, floor 1%) = 1%.
    let at_errors = |champion: f64| Kinds { errors: champion, ..Kinds::default() };
    aa(
        format!("errors 0.2% vs 1% (5x, = floor), 95/5, 200 req/s, {}", span(day)),
        canary,
        [at_errors(0.002), at_errors(0.01)],
        false,
        aa_runs,
    );
    aa(
        format!("errors 2% vs 10% (5x the champion's), 95/5, 200 req/s, {}", span(day)),
        canary,
        [at_errors(0.02), at_errors(0.10)],
        false,
        aa_runs,
    );
    aa(
        format!("over-SLA 1% both, SLA set, 95/5, 200 req/s, {}", span(day)),
        canary,
        [Kinds { over_sla: 0.01, ..Kinds::default() }; 2],
        true,
        aa_runs,
    );
    // Every trigger at its limit at once: errors at the floor (1%), NaN 1%,
    // 1% of the successful requests over the SLA.
    let all = |errors: f64| Kinds { errors, nan_inf: limit, over_sla: 0.01 * (1.0 - errors) };
    aa(
        format!("all three at their limits, SLA set, 95/5, 200 req/s, {}", span(day)),
        canary,
        [all(0.002), all(0.01)],
        true,
        near,
    );
    for times in [1.5, 2.0, 5.0] {
        out.push(Cell {
            name: "hard-trigger-power",
            setting: format!("NaN {times}x limit on 5% canary, 200 req/s, {}", span(hour)),
            claim: Claim::Power,
            runs: scale.runs,
            horizon_s: hour,
            run: Box::new(move |rng| power_run(rng, canary, limit, (limit * times, 0, limit * times), hour)),
        });
    }
    for times in [2.0, 5.0] {
        out.push(Cell {
            name: "hard-trigger-power",
            setting: format!("NaN 0 -> {times}x limit after {}, 5% canary (from the change)", span(hour)),
            claim: Claim::Power,
            runs: scale.runs,
            horizon_s: 2 * hour,
            run: Box::new(move |rng| power_run(rng, canary, limit, (0.0, hour, limit * times), 2 * hour)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_draws_have_the_right_mean_variance_and_tail() {
        let mut rng = Rng::new(3);
        for mean in [0.05, 0.5, 4.75, 9.5, 10.0, 95.0, 190.0] {
            let p = Poisson::new(mean);
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| p.draw(&mut rng) as f64).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
            let se = (mean / n as f64).sqrt();
            assert!((m - mean).abs() < 5.0 * se, "mean {mean}: {m}");
            // The sample variance's sd: Var(s²) ≈ (μ4 − σ⁴)/n = (λ + 2λ²)/n.
            let v_se = ((mean + 2.0 * mean * mean) / n as f64).sqrt();
            assert!((v - mean).abs() < 5.0 * v_se, "mean {mean}: variance {v}");
            // P(X = 0) = e^-mean.
            let zeros = xs.iter().filter(|x| **x == 0.0).count() as f64 / n as f64;
            assert!((zeros - (-mean).exp()).abs() < 5.0 * ((-mean).exp() / n as f64).sqrt() + 1e-4, "{mean}");
        }
        // ln k! against the direct sum.
        for k in [16u64, 20, 50, 200] {
            let direct: f64 = (2..=k).map(|i| (i as f64).ln()).sum();
            assert!((ln_factorial(k as f64) - direct).abs() < 1e-9, "{k}");
        }
    }
}
