//! The `arbitrary` inputs of `rollout_plan_structured`: plans, triggers and
//! operator commands drawn so that most of them are plans the validator has
//! to think about (small colliding version numbers, plausible numbers mixed
//! with any f64), and how each becomes the rollout crate's type.

use arbitrary::Arbitrary;
use modelgate_rollout::{AbArm, CanaryStep, Plan, PromotionGate, ShadowPlan, TriggerOverrides};

/// A version number drawn small, so versions collide with the champion, the
/// READY set and each other often.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct VersionInput(u8);

impl VersionInput {
    pub(super) fn version(self) -> u64 {
        u64::from(self.0 % 8)
    }
}

/// A number as a fuzzer should try it: mostly a plausible value with three
/// decimals (0 to 200, so 99.996 and 100.004 are reachable), sometimes any
/// f64 (NaN, infinities, subnormals).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum NumberInput {
    Milli(u32),
    Any(f64),
}

impl NumberInput {
    fn value(self) -> f64 {
        match self {
            NumberInput::Milli(m) => f64::from(m % 200_001) / 1000.0,
            NumberInput::Any(x) => x,
        }
    }
}

/// A probability: mostly strictly between 0 and 1, sometimes any f64.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ProbabilityInput {
    Unit(u16),
    Any(f64),
}

impl ProbabilityInput {
    fn value(self) -> f64 {
        match self {
            ProbabilityInput::Unit(x) => (f64::from(x) + 1.0) / 65_537.0,
            ProbabilityInput::Any(x) => x,
        }
    }
}

/// An A/B weight: small and huge ones mixed, so one arm's share can round
/// to nothing.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum WeightInput {
    Small(u8),
    Any(u32),
}

impl WeightInput {
    fn value(self) -> u32 {
        match self {
            WeightInput::Small(w) => u32::from(w),
            WeightInput::Any(w) => w,
        }
    }
}

/// A plan for [`fuzz_rollout_plan_structured`](super::fuzz_rollout_plan_structured).
#[derive(Debug, Arbitrary)]
pub struct PlanInput {
    pub champion: VersionInput,
    pub ready: Vec<VersionInput>,
    pub plan: PlanShape,
    pub shadow: Option<ShadowInput>,
    pub triggers: TriggersInput,
    pub ops: Vec<OpInput>,
}

#[derive(Debug, Arbitrary)]
pub enum PlanShape {
    BlueGreen {
        green: VersionInput,
        retention_secs: u64,
    },
    Canary {
        candidate: VersionInput,
        steps: Vec<StepInput>,
        auto_advance: bool,
    },
    Shadow(ShadowInput),
    AbTest {
        arms: Vec<ArmInput>,
        metric: bool,
        mde: NumberInput,
        alpha: ProbabilityInput,
        power: ProbabilityInput,
        variance: NumberInput,
    },
    ChampionChallenger {
        challengers: Vec<VersionInput>,
        fraction_percent: NumberInput,
        gate: Option<GateInput>,
    },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct StepInput {
    pub percent: u8,
    pub min_duration_secs: u16,
    pub min_samples: u16,
}

#[derive(Debug, Clone, Arbitrary)]
pub struct ShadowInput {
    pub versions: Vec<VersionInput>,
    pub fraction_percent: NumberInput,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct ArmInput {
    /// Arm names come from a small set so duplicates happen.
    pub name: u8,
    pub version: VersionInput,
    pub weight: WeightInput,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct GateInput {
    pub threshold: NumberInput,
    pub window_secs: u32,
    pub min_samples: u16,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct TriggersInput {
    pub p99_sla_ms: Option<NumberInput>,
    pub nan_inf_rate: Option<ProbabilityInput>,
    pub error_ratio: Option<NumberInput>,
    pub error_rate_floor: Option<ProbabilityInput>,
    pub min_samples: Option<u8>,
}

/// An operator command after the plan started.
#[derive(Debug, Clone, Arbitrary)]
pub enum OpInput {
    Advance,
    SetWeights(u8),
    Pause,
    Resume,
    Promote(VersionInput),
    Rollback,
    Abort,
    Complete,
    AttachShadow(ShadowInput),
}

impl ShadowInput {
    pub(super) fn build(self) -> ShadowPlan {
        ShadowPlan {
            versions: self.versions.into_iter().map(VersionInput::version).collect(),
            fraction_percent: self.fraction_percent.value(),
        }
    }
}

impl TriggersInput {
    pub(super) fn build(self) -> TriggerOverrides {
        TriggerOverrides {
            p99_sla_ms: self.p99_sla_ms.map(NumberInput::value),
            nan_inf_rate: self.nan_inf_rate.map(ProbabilityInput::value),
            error_ratio: self.error_ratio.map(NumberInput::value),
            error_rate_floor: self.error_rate_floor.map(ProbabilityInput::value),
            min_samples: self.min_samples.map(u64::from),
            ..Default::default()
        }
    }
}

impl PlanShape {
    pub(super) fn build(self) -> Plan {
        match self {
            PlanShape::BlueGreen { green, retention_secs } => {
                Plan::BlueGreen { green: green.version(), retention_secs }
            }
            PlanShape::Canary { candidate, steps, auto_advance } => Plan::Canary {
                candidate: candidate.version(),
                steps: steps
                    .into_iter()
                    .map(|s| CanaryStep {
                        percent: u32::from(s.percent),
                        min_duration_secs: u64::from(s.min_duration_secs),
                        min_samples: u64::from(s.min_samples),
                    })
                    .collect(),
                auto_advance,
            },
            PlanShape::Shadow(s) => Plan::Shadow(s.build()),
            PlanShape::AbTest { arms, metric, mde, alpha, power, variance } => Plan::AbTest {
                arms: arms
                    .into_iter()
                    .map(|a| AbArm {
                        name: format!("arm{}", a.name % 6),
                        version: a.version.version(),
                        weight: a.weight.value(),
                    })
                    .collect(),
                metric: if metric { "ctr".into() } else { String::new() },
                mde: mde.value(),
                alpha: alpha.value(),
                power: power.value(),
                variance: variance.value(),
                min_duration_secs: 60,
                higher_is_better: true,
            },
            PlanShape::ChampionChallenger { challengers, fraction_percent, gate } => {
                Plan::ChampionChallenger {
                    challengers: challengers.into_iter().map(VersionInput::version).collect(),
                    fraction_percent: fraction_percent.value(),
                    gate: gate.map_or(PromotionGate::Manual, |g| PromotionGate::Automatic {
                        kpi: "revenue".into(),
                        threshold: g.threshold.value(),
                        window_secs: u64::from(g.window_secs),
                        min_samples: u64::from(g.min_samples),
                        higher_is_better: true,
                    }),
                }
            }
        }
    }
}
