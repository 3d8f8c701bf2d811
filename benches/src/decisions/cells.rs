//! The simulated rollouts: each drives one decision function of the
//! controller (through `modelgate::decisions`) on simulated traffic and
//! simulated time, one tick every 500 ms, and says whether (and when) the
//! decision was taken.

use std::collections::BTreeMap;
use std::time::Duration;

use modelgate::decisions::{
    ArmNumbers, OutcomeLimits, OutcomeStore, Settings, StageCounts, hard_trigger, judge_step, metric_plan,
    metric_rows, sample_ratio_mismatch,
};
use modelgate_registry::ModelConfig;
use modelgate_rollout::analysis::AbDecision;
use modelgate_rollout::{
    AbArm, Action, Actor, ArmObservation, Plan, PromotionGate, Rollout, RolloutSpec, StepVerdict,
    TriggerConfig,
};
use modelgate_telemetry::{SlidingWindow, WindowSnapshot};

use super::rng::Rng;

/// The controller's tick.
pub const TICK_MS: u64 = 500;
/// When simulated rollouts start (any fixed time does).
const T0: u64 = 1_700_000_000_000;
const MODEL: &str = "m";
const CHAMPION: u64 = 1;
const CANDIDATE: u64 = 2;

/// What one simulated rollout ended with.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOutcome {
    /// Whether the decision under test was taken at some tick.
    pub decided: bool,
    /// Seconds from the start to the decision.
    pub seconds: f64,
    /// Requests the candidate had served by then.
    pub candidate_requests: u64,
}

fn decided(tick: u64, candidate_requests: u64) -> RunOutcome {
    RunOutcome { decided: true, seconds: (tick * TICK_MS) as f64 / 1000.0, candidate_requests }
}

fn ticks(horizon_s: u64) -> u64 {
    horizon_s * 1000 / TICK_MS
}

fn arm(version: u64, weight_bp: u32) -> ArmNumbers {
    ArmNumbers {
        version,
        name: format!("v{version}"),
        weight_bp,
        stage_samples: 0,
        total: WindowSnapshot::empty(Duration::ZERO),
        window: WindowSnapshot::empty(Duration::ZERO),
    }
}

/// Traffic to a champion and one candidate: Poisson arrivals at `rate`
/// requests/s split by `candidate_bp` basis points.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub rate: f64,
    pub candidate_bp: u32,
}

impl Traffic {
    fn per_tick(&self) -> [(u64, u32, f64); 2] {
        let share = f64::from(self.candidate_bp) / 10_000.0;
        let dt = TICK_MS as f64 / 1000.0;
        [
            (CHAMPION, 10_000 - self.candidate_bp, self.rate * (1.0 - share) * dt),
            (CANDIDATE, self.candidate_bp, self.rate * share * dt),
        ]
    }
}

/// The hard triggers (`control::judge::hard_trigger`, default
/// `TriggerConfig`) on the default sliding windows (6 × 10 s): requests
/// with a NaN/Inf output at rate `nan_champion` / `nan_candidate`; decided
/// when a trigger fires.
pub fn hard_triggers(rng: &mut Rng, traffic: Traffic, nan: [f64; 2], horizon_s: u64) -> RunOutcome {
    let cfg = TriggerConfig::default();
    let windows = [SlidingWindow::standard(), SlidingWindow::standard()];
    let per_tick = traffic.per_tick();
    let mut arms = [arm(CHAMPION, per_tick[0].1), arm(CANDIDATE, per_tick[1].1)];
    let mut candidate_requests = 0;
    let latency = Duration::from_millis(1);
    for tick in 1..=ticks(horizon_s) {
        let now = Duration::from_millis(tick * TICK_MS);
        // This tick's arrivals, recorded just before it.
        let at = now - Duration::from_millis(1);
        for (i, w) in windows.iter().enumerate() {
            let n = rng.poisson(per_tick[i].2);
            for _ in 0..n {
                w.record_at(w.epoch() + at, latency, false, rng.bernoulli(nan[i]));
            }
            if i == 1 {
                candidate_requests += n;
            }
            arms[i].window = w.counts_at(w.epoch() + now);
        }
        if hard_trigger(&cfg, CHAMPION, &arms).is_some() {
            return decided(tick, candidate_requests);
        }
    }
    RunOutcome { candidate_requests, ..RunOutcome::default() }
}

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

fn started(plan: Plan) -> Rollout {
    let spec = RolloutSpec {
        id: format!("{MODEL}-{T0}"),
        model: MODEL.into(),
        salt: 7,
        champion: CHAMPION,
        plan,
        shadow: None,
        triggers: Default::default(),
    };
    Rollout::start(spec, &[CHAMPION, CANDIDATE], T0, &Actor::system(), None).expect("a valid plan").0
}

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

/// Champion-challenger with the automatic gate (conversion, threshold 2%,
/// window 3600 s, 500 samples each side): `rate` requests/s, the default
/// 10% to the challenger, each request converting with probability
/// `conversion` on both sides. Every tick the observation is built as the
/// controller's `observation` builds it (stage samples, the KPI over the
/// gate's window from the OutcomeStore) and `Rollout::tick` runs with a
/// Healthy verdict; decided when it promotes the challenger.
pub fn champion_challenger(rng: &mut Rng, rate: f64, conversion: f64, horizon_s: u64) -> RunOutcome {
    let window_secs = 3600;
    let mut rollout = started(Plan::ChampionChallenger {
        challengers: vec![CANDIDATE],
        fraction_percent: 10.0,
        gate: PromotionGate::Automatic {
            kpi: "conversion".into(),
            threshold: 0.02,
            window_secs,
            min_samples: 500,
            higher_is_better: true,
        },
    });
    let alpha = ModelConfig::default().analysis.alpha;
    let store = OutcomeStore::new(OutcomeLimits::with_join_bytes(0));
    let dt = TICK_MS as f64 / 1000.0;
    let means = [(CHAMPION, rate * 0.9 * dt), (CANDIDATE, rate * 0.1 * dt)];
    let mut samples: BTreeMap<u64, u64> = BTreeMap::new();
    for tick in 1..=ticks(horizon_s) {
        let now = T0 + tick * TICK_MS;
        for (v, mean) in means {
            let n = rng.poisson(mean);
            *samples.entry(v).or_insert(0) += n;
            for _ in 0..n {
                let value = if rng.bernoulli(conversion) { 1.0 } else { 0.0 };
                store.record(MODEL, v, "conversion", value, now - 1, now).expect("within the limits");
            }
        }
        let mut obs = ArmObservation::new().with_alpha(alpha);
        for (v, n) in &samples {
            obs = obs.with_samples(*v, *n);
        }
        for (v, _) in means {
            if let Some(s) = store.summary(MODEL, v, "conversion", now, window_secs * 1000) {
                obs = obs.with_kpi_variance(v, s.mean, s.n, s.variance);
            }
        }
        let events = rollout.tick(now, &obs, &StepVerdict::Healthy);
        if events.iter().any(|e| e.action == Action::Promoted) {
            return decided(tick, samples.get(&CANDIDATE).copied().unwrap_or(0));
        }
    }
    RunOutcome::default()
}
