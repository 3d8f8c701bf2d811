//! The simulated rollouts: each drives one decision function of the
//! controller (through `modelgate::decisions`) on simulated traffic and
//! simulated time, one tick every 500 ms, and says whether (and when) the
//! decision was taken.

use std::time::Duration;

use modelgate::decisions::ArmNumbers;
use modelgate_rollout::{Actor, Plan, Rollout, RolloutSpec};
use modelgate_telemetry::WindowSnapshot;

pub mod ab;
pub mod cc;
pub mod hard;
pub mod step;

/// The controller's tick.
pub const TICK_MS: u64 = 500;
/// When simulated rollouts start (any fixed time does).
pub(crate) const T0: u64 = 1_700_000_000_000;
pub(crate) const MODEL: &str = "m";
pub(crate) const CHAMPION: u64 = 1;
pub(crate) const CANDIDATE: u64 = 2;

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

pub(crate) fn decided(tick: u64, candidate_requests: u64) -> RunOutcome {
    RunOutcome { decided: true, seconds: (tick * TICK_MS) as f64 / 1000.0, candidate_requests }
}

pub(crate) fn ticks(horizon_s: u64) -> u64 {
    horizon_s * 1000 / TICK_MS
}

pub(crate) fn arm(version: u64, weight_bp: u32) -> ArmNumbers {
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
    pub(crate) fn per_tick(&self) -> [(u64, u32, f64); 2] {
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
pub(crate) fn started(plan: Plan) -> Rollout {
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
