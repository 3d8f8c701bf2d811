//! A/B cells: A/A false decisions and sample ratio mismatch flags.

use modelgate::decisions::{
    OutcomeLimits, OutcomeStore, StageCounts, metric_plan, metric_rows, sample_ratio_mismatch,
};
use modelgate_registry::ModelConfig;
use modelgate_rollout::analysis::AbDecision;
use modelgate_rollout::{AbArm, Plan};

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, MODEL, RunOutcome, T0, TICK_MS, decided, started, ticks};

/// What an A/B A/A run watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbWatch {
    /// The treatment arm's decision is Better or Worse.
    Decision,
    /// The sample ratio mismatch test flags the split.
    Srm,
}

/// An A/B test of the champion against an identical arm (50/50): each arm
/// gets Poisson requests at `per_arm_rate`/s, each reporting one outcome
/// N(0, 1) into the OutcomeStore; every tick the controller's
/// `metric_plan` → `metric_rows` (→ `ab_arm_result`) and the admin API's
/// sample ratio mismatch test on the stage counts.
pub fn ab_test(rng: &mut Rng, per_arm_rate: f64, horizon_s: u64, watch: AbWatch) -> RunOutcome {
    let rollout = started(Plan::AbTest {
        arms: vec![
            AbArm { name: "control".into(), version: CHAMPION, weight: 1 },
            AbArm { name: "treatment".into(), version: CANDIDATE, weight: 1 },
        ],
        metric: "score".into(),
        mde: 0.1,
        alpha: 0.05,
        power: 0.8,
        variance: 1.0,
        min_duration_secs: 3600,
        higher_is_better: true,
    });
    let config = ModelConfig::default();
    let store = OutcomeStore::new(OutcomeLimits::with_join_bytes(0));
    let table = rollout.routing_table();
    let mut counts = StageCounts::epoch_of(&rollout);
    let mean = per_arm_rate * TICK_MS as f64 / 1000.0;
    for tick in 1..=ticks(horizon_s) {
        let now = T0 + tick * TICK_MS;
        for v in [CHAMPION, CANDIDATE] {
            let n = rng.poisson(mean);
            *counts.samples.entry(v).or_insert(0) += n;
            if watch == AbWatch::Decision {
                for _ in 0..n {
                    store.record(MODEL, v, "score", rng.normal(), now - 1, now).expect("within the limits");
                }
            }
        }
        let hit = match watch {
            AbWatch::Srm => sample_ratio_mismatch(&table, &counts).is_some_and(|s| s.mismatch),
            AbWatch::Decision => {
                let plan = metric_plan(&rollout, &config, now).expect("an A/B test has a metric");
                metric_rows(&store, MODEL, &plan, now)
                    .iter()
                    .any(|r| matches!(r.result.decision, AbDecision::Better | AbDecision::Worse))
            }
        };
        if hit {
            return decided(tick, counts.samples.get(&CANDIDATE).copied().unwrap_or(0));
        }
    }
    RunOutcome::default()
}

/// The A/B cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let hour = scale.hour_s;
    let mut out = Vec::new();
    out.push(Cell {
        name: "ab-aa-decision",
        setting: format!("N(0,1) both, MDE 0.1, 2 outcomes/s/arm, {}", span(hour)),
        claim: Claim::FalseRate(0.05),
        runs: scale.runs,
        horizon_s: hour,
        run: Box::new(move |rng| ab_test(rng, 2.0, hour, AbWatch::Decision)),
    });
    out.push(Cell {
        name: "ab-aa-srm",
        setting: format!("50/50, 2 req/s/arm, {}", span(hour)),
        claim: Claim::FalseRate(modelgate_rollout::analysis::SRM_ALPHA),
        runs: scale.runs,
        horizon_s: hour,
        run: Box::new(move |rng| ab_test(rng, 2.0, hour, AbWatch::Srm)),
    });
    out
}
