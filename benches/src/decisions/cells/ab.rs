//! A/B cells: A/A false decisions (at the plan's MDE and at a large one,
//! where the plug-in variance at small n matters most), power at the MDE,
//! sample ratio mismatch flags, and the business-metric regression alert.
//!
//! The decisions read only each arm's count, mean and variance of the
//! metric (and the stage's request counts for SRM), so the outcomes are
//! folded into a `RunningStats` per arm here, as the OutcomeStore's buckets
//! do, and handed to the controller's own `metric_decisions_of` (→
//! `ab_arm_decision`, which `ab_arm_result` decides with, and
//! `kpi_regression`) every tick, without the intervals and Welch's test
//! that GetAnalysis only shows; recording each outcome in an OutcomeStore,
//! and those reference numbers, made a 1 h cell take minutes.

use modelgate::decisions::{
    StageCounts, kpi_regression, metric_decisions_of, metric_plan, sample_ratio_mismatch,
};
use modelgate_registry::ModelConfig;
use modelgate_rollout::analysis::{AbDecision, SRM_ALPHA};
use modelgate_rollout::{AbArm, CanaryStep, Plan, Rollout, RunningStats};

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, RunOutcome, T0, TICK_MS, decided, started, ticks};

/// What an A/B run watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbWatch {
    /// The treatment arm's decision is Better or Worse.
    Decision,
    /// The sample ratio mismatch test flags the split.
    Srm,
    /// The business-metric regression alert fires.
    KpiRegression,
}

/// One simulated experiment: Poisson requests at 2 × `per_arm_rate`/s,
/// a `treatment_share` of them to the treatment, each with one outcome,
/// N(0, 1) for the control and N(`effect`, 1) for the treatment.
#[derive(Debug, Clone, Copy)]
pub struct AbRun {
    pub per_arm_rate: f64,
    pub mde: f64,
    pub effect: f64,
    /// The treatment's true share of the traffic (the plan says 50%).
    pub treatment_share: f64,
    pub horizon_s: u64,
    pub watch: AbWatch,
}

fn ab_plan(mde: f64) -> Rollout {
    started(Plan::AbTest {
        arms: vec![
            AbArm { name: "control".into(), version: CHAMPION, weight: 1 },
            AbArm { name: "treatment".into(), version: CANDIDATE, weight: 1 },
        ],
        metric: "score".into(),
        mde,
        alpha: 0.05,
        power: 0.8,
        variance: 1.0,
        min_duration_secs: 3600,
        higher_is_better: true,
    })
}

/// A canary held at 50% on a model whose model.toml names a business
/// metric (`kpi = "score"`, `kpi_mde`, α 0.05): what `kpi_regression`
/// judges outside A/B tests.
fn kpi_canary(mde: f64) -> (Rollout, ModelConfig) {
    let rollout = started(Plan::Canary {
        candidate: CANDIDATE,
        steps: vec![CanaryStep::at(50), CanaryStep::at(100)],
        auto_advance: false,
    });
    let mut config = ModelConfig::default();
    config.analysis.kpi = Some("score".into());
    config.analysis.kpi_mde = Some(mde);
    (rollout, config)
}

/// Every tick: the controller's `metric_plan` → `metric_decisions_of` on the
/// arms' running summaries, or the admin API's sample ratio mismatch test
/// on the stage counts; decided at the first tick the watched decision is
/// taken.
pub fn ab_test(rng: &mut Rng, run: AbRun) -> RunOutcome {
    let (rollout, config) = match run.watch {
        AbWatch::KpiRegression => kpi_canary(run.mde),
        _ => (ab_plan(run.mde), ModelConfig::default()),
    };
    let table = rollout.routing_table();
    let mut counts = StageCounts::epoch_of(&rollout);
    let mut stats = [RunningStats::new(), RunningStats::new()];
    let total = 2.0 * run.per_arm_rate * TICK_MS as f64 / 1000.0;
    let means = [total * (1.0 - run.treatment_share), total * run.treatment_share];
    for tick in 1..=ticks(run.horizon_s) {
        let now = T0 + tick * TICK_MS;
        for (i, v) in [CHAMPION, CANDIDATE].into_iter().enumerate() {
            let n = rng.poisson(means[i]);
            *counts.samples.entry(v).or_insert(0) += n;
            if run.watch != AbWatch::Srm {
                let shift = if v == CANDIDATE { run.effect } else { 0.0 };
                (0..n).for_each(|_| stats[i].push(shift + rng.normal()));
            }
        }
        let hit = match run.watch {
            AbWatch::Srm => sample_ratio_mismatch(&table, &counts).is_some_and(|s| s.mismatch),
            AbWatch::Decision | AbWatch::KpiRegression => {
                let plan = metric_plan(&rollout, &config, now).expect("a metric to judge");
                let rows = metric_decisions_of(&plan, |v| stats[usize::from(v == CANDIDATE)].summary());
                if run.watch == AbWatch::Decision {
                    rows.iter().any(|r| matches!(r.result.decision, AbDecision::Better | AbDecision::Worse))
                } else {
                    rows.iter().any(|r| kpi_regression(r).is_some())
                }
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
    // The plug-in variance's worst case: τ = the MDE = σ, n from 0 to ~600.
    let short = hour.min(600);
    let run = |per_arm_rate: f64, mde: f64, effect: f64, horizon_s: u64, watch: AbWatch| AbRun {
        per_arm_rate,
        mde,
        effect,
        treatment_share: 0.5,
        horizon_s,
        watch,
    };
    let cells = [
        (
            "ab-aa-decision",
            format!("N(0,1) both, MDE 0.1, 2 outcomes/s/arm, {}", span(hour)),
            Claim::FalseRate(0.05),
            scale.runs,
            run(2.0, 0.1, 0.0, hour, AbWatch::Decision),
        ),
        (
            "ab-aa-decision-10",
            format!("N(0,1) both, MDE 0.1, 10 outcomes/s/arm, {}", span(hour)),
            Claim::FalseRate(0.05),
            scale.runs,
            run(10.0, 0.1, 0.0, hour, AbWatch::Decision),
        ),
        (
            "ab-aa-small-n",
            format!("N(0,1) both, MDE 1 (= sd), 1 outcome/s/arm, {}", span(short)),
            Claim::FalseRate(0.05),
            scale.runs,
            run(1.0, 1.0, 0.0, short, AbWatch::Decision),
        ),
        (
            "ab-power",
            format!("treatment +0.1 = MDE, sd 1, 2 outcomes/s/arm, {}", span(hour)),
            Claim::Power,
            scale.runs,
            run(2.0, 0.1, 0.1, hour, AbWatch::Decision),
        ),
        (
            "ab-aa-srm",
            format!("50/50, 2 req/s/arm, {}", span(hour)),
            Claim::FalseRate(SRM_ALPHA),
            // α 0.001: ~2,500 runs without a hit would show ≤ 1.5 α; the
            // test's true rate is near α/2, so 20 × the runs (cheap: counts
            // only) to show it with a few hits.
            scale.runs * 20,
            run(2.0, 0.1, 0.0, hour, AbWatch::Srm),
        ),
        (
            "ab-srm-power",
            format!("planned 50/50, true 52/48, 2 req/s/arm, {}", span(hour)),
            Claim::Power,
            scale.runs,
            AbRun { treatment_share: 0.52, ..run(2.0, 0.1, 0.0, hour, AbWatch::Srm) },
        ),
        (
            "kpi-aa-regression",
            format!("canary 50%, kpi N(0,1) both, kpi_mde 0.1, 2 outcomes/s/arm, {}", span(hour)),
            Claim::FalseRate(0.05),
            scale.runs,
            run(2.0, 0.1, 0.0, hour, AbWatch::KpiRegression),
        ),
        (
            "kpi-power",
            format!("canary 50%, kpi worse by 0.1 = kpi_mde, 2 outcomes/s/arm, {}", span(hour)),
            Claim::Power,
            scale.runs,
            run(2.0, 0.1, -0.1, hour, AbWatch::KpiRegression),
        ),
    ];
    cells
        .into_iter()
        .map(|(name, setting, claim, runs, r)| Cell {
            name,
            setting,
            claim,
            runs,
            horizon_s: r.horizon_s,
            run: Box::new(move |rng| ab_test(rng, r)),
        })
        .collect()
}
