//! Champion-challenger cells: wrong promotions of an identical challenger.

use std::collections::BTreeMap;

use modelgate::decisions::{OutcomeLimits, OutcomeStore};
use modelgate_registry::ModelConfig;
use modelgate_rollout::{Action, ArmObservation, Plan, PromotionGate, StepVerdict};

use super::super::rng::Rng;
use super::super::{Cell, Claim, Scale, span};
use super::{CANDIDATE, CHAMPION, MODEL, RunOutcome, T0, TICK_MS, decided, started, ticks};

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

/// The champion-challenger cells.
pub fn list(scale: Scale) -> Vec<Cell> {
    let mut out = Vec::new();
    let alpha = modelgate_registry::ModelConfig::default().analysis.alpha;
    let day = scale.day_s;
    out.push(Cell {
        name: "cc-aa-promoted",
        setting: format!("conversion 10% both, threshold 2%, window 1 h, 20 req/s, {}", span(day)),
        claim: Claim::FalseRate(alpha),
        runs: scale.day_runs,
        horizon_s: day,
        run: Box::new(move |rng| champion_challenger(rng, 20.0, 0.10, day)),
    });
    out
}
