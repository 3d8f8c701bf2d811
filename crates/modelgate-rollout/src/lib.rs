//! modelgate's policy brain: sticky routing, rollout plans, the rollout state
//! machine, the statistics its decisions need, and the audit events it emits.
//!
//! Everything here is pure: no I/O, no threads, no async runtime, no model
//! runtime. Time is always passed in as [`Millis`] (unix milliseconds), so the
//! gateway's controller loop decides when "now" is and tests can replay any
//! schedule. Every type derives serde, so the gateway can persist a
//! [`Rollout`] as JSON and, after a restart, derive exactly the same
//! [`RoutingTable`] from it.
//!
//! The flow, from the gateway's point of view:
//! 1. an operator submits a [`Plan`]; [`Rollout::start`] validates it against
//!    the champion and the READY versions;
//! 2. [`Rollout::routing_table`] is published as the model's routing snapshot,
//!    and [`RoutingTable::route_key`] picks the arm for each request;
//! 3. the controller calls [`Rollout::tick`] with per-arm observations and the
//!    safety verdict; operator commands call the operation methods;
//! 4. every state change returns [`AuditEvent`]s carrying the numbers it was
//!    based on, and the routing table is derived again.

pub mod analysis;
pub mod audit;
pub mod observe;
pub mod plan;
pub mod rollout;
pub mod routing;
pub mod stats;
pub mod triggers;

pub use audit::{Action, Actor, AuditEvent, DecidingTest};
pub use observe::{
    AbArmProgress, AbProgress, ArmObservation, ArmStats, KpiSample, Regression, RegressionKind, StepVerdict,
};
pub use plan::{AbArm, CanaryStep, Plan, PlanError, PromotionGate, ShadowPlan};
pub use rollout::{EvaluationPeriod, Rollout, RolloutError, RolloutSpec, RolloutState};
pub use routing::{
    Arm, ArmWeight, BUCKETS, Role, RoutingError, RoutingTable, SHADOW_SEED_XOR, ShadowTarget, bucket,
    shadow_sampled,
};
pub use stats::{RunningStats, StatsError, normal_quantile, sample_size_means, sample_size_proportions};
pub use triggers::{
    Fired, HardTriggers, MAX_MIN_SAMPLES, TriggerConfig, TriggerOverrides, TriggerRangeError, TriggerState,
    TriggerStatus, WindowCounts, thousands,
};

/// A point in time or a duration in milliseconds; points are unix epoch ms.
pub type Millis = u64;

/// Where "now" comes from. The crate never reads the system clock itself; the
/// gateway implements this over `SystemTime`, tests over a counter.
pub trait Clock {
    /// The current time in unix milliseconds.
    fn now_ms(&self) -> Millis;
}

impl<F: Fn() -> Millis> Clock for F {
    fn now_ms(&self) -> Millis {
        self()
    }
}
