//! Rollouts for the control plane's unit tests.

use modelgate_rollout::{Actor, CanaryStep, Plan, Rollout, RolloutSpec};

/// When the test rollouts start.
pub const T0: u64 = 1_700_000_000_000;

fn started(plan: Plan) -> Rollout {
    let spec = RolloutSpec {
        id: format!("m-{T0}"),
        model: "m".into(),
        salt: 7,
        champion: 1,
        plan,
        shadow: None,
        triggers: Default::default(),
    };
    Rollout::start(spec, &[1, 2], T0, &Actor::system(), None).expect("a valid plan").0
}

/// A canary of v2 against champion v1 through `percents`, auto-advancing
/// after 60 s and 100 samples per step.
pub fn canary(percents: &[u32]) -> Rollout {
    let steps = percents
        .iter()
        .map(|&percent| CanaryStep { percent, min_duration_secs: 60, min_samples: 100 })
        .collect();
    started(Plan::Canary { candidate: 2, steps, auto_advance: true })
}

/// Blue v1, green v2, five minutes' retention.
pub fn blue_green() -> Rollout {
    started(Plan::BlueGreen { green: 2, retention_secs: 300 })
}
