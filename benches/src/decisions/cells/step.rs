//! Step-verdict cells: how often a step is called Healthy with the
//! candidate at (and beyond) the margin.

use modelgate::decisions::{Settings, judge_step};
use modelgate_registry::ModelConfig;
use modelgate_rollout::StepVerdict;

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, RunOutcome, Traffic, arm, decided, ticks};

/// The step's safety verdict (`control::analysis::judge_step`, default
/// model.toml `[analysis]`) every tick on the rollout's running totals:
/// failures at `errors[i]`, latencies alike (1.0–1.2 ms uniform); decided
/// when the verdict is Healthy (the step may advance).
pub fn step_healthy(rng: &mut Rng, traffic: Traffic, errors: [f64; 2], horizon_s: u64) -> RunOutcome {
    let settings = Settings::of(&ModelConfig::default());
    let per_tick = traffic.per_tick();
    let mut arms = [arm(CHAMPION, per_tick[0].1), arm(CANDIDATE, per_tick[1].1)];
    for tick in 1..=ticks(horizon_s) {
        for (i, a) in arms.iter_mut().enumerate() {
            // What RunningTotals folds out of the window: every request
            // since the rollout started.
            let n = rng.poisson(per_tick[i].2);
            let t = &mut a.total;
            for _ in 0..n {
                t.requests += 1;
                if rng.bernoulli(errors[i]) {
                    t.errors += 1;
                } else {
                    t.latency_us.saturating_record(1000 + rng.next_u64() % 201);
                }
            }
            a.stage_samples = t.requests;
        }
        if judge_step(CHAMPION, &arms, &settings).0 == StepVerdict::Healthy {
            return decided(tick, arms[1].total.requests);
        }
    }
    RunOutcome { candidate_requests: arms[1].total.requests, ..RunOutcome::default() }
}

/// The step-verdict cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let hour = scale.hour_s;
    let mut out = Vec::new();
    let analysis = modelgate_registry::ModelConfig::default().analysis;
    let (margin, alpha) = (analysis.error_margin, analysis.alpha);
    for times in [1.0, 2.0] {
        let traffic = Traffic { rate: 200.0, candidate_bp: 500 };
        let errors = [0.01, 0.01 + times * margin];
        out.push(Cell {
            name: "step-verdict-healthy",
            setting: format!(
                "errors 1% vs {:.0}% ({times}x margin), 95/5, 200 req/s, {}",
                errors[1] * 100.0,
                span(hour)
            ),
            claim: Claim::FalseRate(alpha),
            runs: scale.runs,
            horizon_s: hour,
            run: Box::new(move |rng| step_healthy(rng, traffic, errors, hour)),
        });
    }
    out
}
