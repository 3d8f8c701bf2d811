//! Step-verdict cells: how often a step is called Healthy with the
//! candidate at (and beyond) the error margin, and how soon an identical
//! candidate is.

use std::sync::Arc;
use std::time::Duration;

use modelgate::decisions::{ArmNumbers, RunningTotals, Settings, StepProgress, judge_step};
use modelgate_registry::ModelConfig;
use modelgate_rollout::{CanaryStep, StepVerdict};
use modelgate_telemetry::VersionStats;

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, RunOutcome, TICK_MS, Traffic, arm, decided, ticks};

/// Latencies of successful requests: uniform over these (µs), alike in
/// both arms. Small values keep the latency histogram's mean and variance
/// cheap (they walk its buckets up to the largest value, every tick); the
/// error verdict does not depend on the scale.
const LATENCIES_US: [u64; 5] = [100, 105, 110, 115, 120];

/// One simulated step.
#[derive(Debug, Clone, Copy)]
pub struct StepCase {
    pub traffic: Traffic,
    /// Failure rates of champion and candidate.
    pub errors: [f64; 2],
    /// The canary step the candidate is in (its minimums gate Healthy).
    pub step: CanaryStep,
    /// Each arm's latencies are [`LATENCIES_US`] times this.
    pub latency_scale: [u64; 2],
    pub horizon_s: u64,
}

fn progress(case: &StepCase, tick: u64) -> StepProgress {
    StepProgress { candidate: CANDIDATE, step: case.step, elapsed_ms: tick * TICK_MS }
}

/// The step's safety verdict (`control::analysis::judge_step`, default
/// model.toml `[analysis]`, the step's minimums) every tick on the
/// rollout's running totals. Each tick adds Poisson counts to the totals
/// `RunningTotals` would return (failures at `errors[i]`, successes spread
/// evenly over [`LATENCIES_US`]): the verdict reads counts and the latency
/// histogram only, and per-request recording into a real window costs
/// ~0.7 M records per simulated hour (see [`step_healthy_windows`] for the
/// real `SlidingWindow` + `RunningTotals` on short steps). Decided when the
/// verdict is Healthy (the step may advance).
pub fn step_healthy(rng: &mut Rng, case: StepCase) -> RunOutcome {
    let settings = Settings::of(&ModelConfig::default());
    let per_tick = case.traffic.per_tick();
    let mut arms = [arm(CHAMPION, per_tick[0].1), arm(CANDIDATE, per_tick[1].1)];
    for tick in 1..=ticks(case.horizon_s) {
        for (i, a) in arms.iter_mut().enumerate() {
            // A Poisson process thinned by independent coin flips gives
            // independent Poisson counts per outcome.
            let mean = per_tick[i].2;
            let t = &mut a.total;
            let errors = rng.poisson(mean * case.errors[i]);
            t.errors += errors;
            t.requests += errors;
            let each = mean * (1.0 - case.errors[i]) / LATENCIES_US.len() as f64;
            for us in LATENCIES_US {
                let k = rng.poisson(each);
                if k > 0 {
                    t.requests += k;
                    t.latency_us.saturating_record_n(us * case.latency_scale[i], k);
                }
            }
            a.stage_samples = t.requests;
        }
        let step = progress(&case, tick);
        if judge_step(CHAMPION, &arms, &settings, Some(&step)).0 == StepVerdict::Healthy {
            return decided(tick, arms[1].total.requests);
        }
    }
    RunOutcome { candidate_requests: arms[1].total.requests, ..RunOutcome::default() }
}

/// [`step_healthy`] on the controller's own counting: every request is
/// recorded into a real `SlidingWindow` (6 × 10 s) at its simulated arrival
/// time, and each tick's totals come from `RunningTotals::total` at the
/// simulated time, as the controller's `arm_numbers` gets them.
pub fn step_healthy_windows(rng: &mut Rng, case: StepCase) -> RunOutcome {
    let settings = Settings::of(&ModelConfig::default());
    let per_tick = case.traffic.per_tick();
    let stats = [Arc::new(VersionStats::default()), Arc::new(VersionStats::default())];
    let mut running = RunningTotals::default();
    let mut arms: Vec<ArmNumbers> = vec![arm(CHAMPION, per_tick[0].1), arm(CANDIDATE, per_tick[1].1)];
    for tick in 1..=ticks(case.horizon_s) {
        let tick_start = Duration::from_millis((tick - 1) * TICK_MS);
        for (i, a) in arms.iter_mut().enumerate() {
            let w = &stats[i].window;
            let n = rng.poisson(per_tick[i].2);
            for _ in 0..n {
                let at = w.epoch() + tick_start + Duration::from_millis(rng.next_u64() % TICK_MS);
                let error = rng.bernoulli(case.errors[i]);
                let us = LATENCIES_US[(rng.next_u64() % LATENCIES_US.len() as u64) as usize]
                    * case.latency_scale[i];
                w.record_at(at, Duration::from_micros(us), error, false);
            }
            let now = w.epoch() + Duration::from_millis(tick * TICK_MS);
            a.total = running.total("r", a.version, &stats[i], now);
            a.stage_samples = a.total.requests;
        }
        let step = progress(&case, tick);
        if judge_step(CHAMPION, &arms, &settings, Some(&step)).0 == StepVerdict::Healthy {
            return decided(tick, arms[1].total.requests);
        }
    }
    RunOutcome { candidate_requests: arms[1].total.requests, ..RunOutcome::default() }
}

/// The step-verdict cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let hour = scale.hour_s;
    let mut out = Vec::new();
    let analysis = ModelConfig::default().analysis;
    let (margin, alpha) = (analysis.error_margin, analysis.alpha);
    let split = |bp: u32| if bp == 500 { "95/5" } else { "50/50" };
    // Every hour-long cell runs `--runs` rollouts (each ticks 7,200 times
    // through the confidence sequences).
    let hour_runs = scale.runs;
    // A/A at (and beyond) the non-inferiority margin: the candidate's rate
    // is champion + k × margin; Healthy is a false decision.
    for candidate_bp in [500, 5000] {
        for times in [1.0, 2.0] {
            let traffic = Traffic { rate: 200.0, candidate_bp };
            let errors = [0.01, 0.01 + times * margin];
            let case = StepCase {
                traffic,
                errors,
                step: CanaryStep::at(candidate_bp / 100),
                latency_scale: [1, 1],
                horizon_s: hour,
            };
            out.push(Cell {
                name: "step-verdict-healthy",
                setting: format!(
                    "errors 1% vs {:.0}% ({times}x margin), {}, 200 req/s, {}",
                    errors[1] * 100.0,
                    split(candidate_bp),
                    span(hour)
                ),
                claim: Claim::FalseRate(alpha),
                runs: hour_runs,
                horizon_s: hour,
                run: Box::new(move |rng| step_healthy(rng, case)),
            });
        }
    }
    // The boundary: a clean champion, the candidate exactly at the margin.
    let traffic = Traffic { rate: 200.0, candidate_bp: 500 };
    let case = StepCase {
        traffic,
        errors: [0.0, margin],
        step: CanaryStep::at(5),
        latency_scale: [1, 1],
        horizon_s: hour,
    };
    out.push(Cell {
        name: "step-verdict-healthy",
        setting: format!("errors 0% vs {:.0}% (boundary), 95/5, 200 req/s, {}", margin * 100.0, span(hour)),
        claim: Claim::FalseRate(alpha),
        runs: hour_runs,
        horizon_s: hour,
        run: Box::new(move |rng| step_healthy(rng, case)),
    });
    // Mean latency exactly at the margin: the champion's latencies 8.0-9.6 ms
    // (mean 8.8 ms, so the relative margin, 20% = 1.76 ms, is above the 1 ms
    // floor), the candidate's 20% slower. Healthy is a false decision.
    let relative = analysis.latency_margin;
    let slower = (80.0 * (1.0 + relative)).round() as u64;
    let case = StepCase {
        traffic: Traffic { rate: 200.0, candidate_bp: 500 },
        errors: [0.0, 0.0],
        step: CanaryStep::at(5),
        latency_scale: [80, slower],
        horizon_s: hour,
    };
    out.push(Cell {
        name: "step-verdict-healthy",
        setting: format!(
            "latency mean 8.8 ms vs +{:.0}% (1x margin), 95/5, 200 req/s, {}",
            relative * 100.0,
            span(hour)
        ),
        claim: Claim::FalseRate(alpha),
        runs: hour_runs,
        horizon_s: hour,
        run: Box::new(move |rng| step_healthy(rng, case)),
    });
    // Power: an identical candidate, on the real window and running totals,
    // within twice the default step's minimum duration (60 s, 500 samples).
    let within = 2 * CanaryStep::at(5).min_duration_secs;
    for (candidate_bp, rate) in [(500, 0.0), (500, 0.005), (5000, 0.01)] {
        let traffic = Traffic { rate: 200.0, candidate_bp };
        let step = CanaryStep::at(candidate_bp / 100);
        let case = StepCase { traffic, errors: [rate, rate], step, latency_scale: [1, 1], horizon_s: within };
        out.push(Cell {
            name: "step-healthy-power",
            setting: format!(
                "identical, errors {}%, {}, 200 req/s, step {} s/{} samples, within {}",
                rate * 100.0,
                split(candidate_bp),
                step.min_duration_secs,
                step.min_samples,
                span(within)
            ),
            claim: Claim::Power,
            runs: scale.runs,
            horizon_s: within,
            run: Box::new(move |rng| step_healthy_windows(rng, case)),
        });
    }
    out
}
