//! Plans: what an operator asks for, with the defaults from the strategy
//! notes, and the validation that runs before any traffic moves.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::routing::{BUCKETS, split_by_weight};
use crate::stats;

/// Blue is kept loaded this long after the switch so rollback stays instant.
pub const DEFAULT_RETENTION_SECS: u64 = 3600;
/// A canary step lasts at least this long before it may advance.
pub const DEFAULT_STEP_SECS: u64 = 60;
/// A canary step needs at least this many candidate responses to advance.
pub const DEFAULT_STEP_SAMPLES: u64 = 500;
/// The default canary ladder, in percent.
pub const DEFAULT_STEPS: [u32; 5] = [1, 5, 20, 50, 100];
/// An A/B test runs at least one full weekly business cycle.
pub const DEFAULT_AB_SECS: u64 = 7 * 24 * 3600;
/// Champion-challenger's standing challenger share, in percent.
pub const DEFAULT_CHALLENGER_PERCENT: f64 = 10.0;
/// The automatic gate's minimum KPI samples per side over the window.
pub const DEFAULT_GATE_SAMPLES: u64 = 500;

/// A rollout strategy and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Plan {
    /// Keep the champion (blue) serving while green warms up, then switch
    /// all traffic at once.
    BlueGreen {
        /// The new version.
        green: u64,
        /// How long blue stays loaded after the switch, for instant rollback.
        #[serde(default = "default_retention_secs")]
        retention_secs: u64,
    },
    /// Grow the candidate's share step by step.
    Canary {
        /// The new version.
        candidate: u64,
        /// The ladder; strictly increasing percentages ending at 100.
        #[serde(default = "default_steps")]
        steps: Vec<CanaryStep>,
        /// Advance by itself once a step's gates are met and the safety
        /// verdict is healthy; otherwise an operator advances.
        #[serde(default)]
        auto_advance: bool,
    },
    /// Copy requests to other versions without affecting replies; the
    /// champion keeps all traffic.
    Shadow(ShadowPlan),
    /// A fixed-split experiment measuring one metric.
    AbTest {
        /// At least two arms; at most one may run the champion (the control).
        arms: Vec<AbArm>,
        /// The primary metric, fixed before the experiment starts.
        metric: String,
        /// Minimum detectable effect δ, in the metric's units.
        mde: f64,
        /// Type I error rate of the two-tailed test.
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// 1 − β.
        #[serde(default = "default_power")]
        power: f64,
        /// The metric's variance σ² estimate.
        variance: f64,
        /// The experiment's minimum length.
        #[serde(default = "default_ab_secs")]
        min_duration_secs: u64,
        /// Whether a larger metric is better (conversion) or worse (latency).
        #[serde(default = "default_true")]
        higher_is_better: bool,
    },
    /// Challengers permanently share a fixed slice; one is promoted when it
    /// beats the champion.
    ChampionChallenger {
        /// The challengers, sharing the slice evenly in this order.
        challengers: Vec<u64>,
        /// The challengers' combined share, in percent.
        #[serde(default = "default_challenger_percent")]
        fraction_percent: f64,
        /// How a challenger becomes champion.
        #[serde(default)]
        gate: PromotionGate,
    },
}

/// One rung of a canary ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// The candidate's share during this step, 1 to 100.
    pub percent: u32,
    /// Minimum time in this step before advancing.
    #[serde(default = "default_step_secs")]
    pub min_duration_secs: u64,
    /// Minimum candidate responses in this step before advancing.
    #[serde(default = "default_step_samples")]
    pub min_samples: u64,
}

impl CanaryStep {
    /// A step at `percent` with the default duration and sample gates.
    pub fn at(percent: u32) -> Self {
        CanaryStep { percent, min_duration_secs: DEFAULT_STEP_SECS, min_samples: DEFAULT_STEP_SAMPLES }
    }
}

/// Shadow copies to other versions; also runs beside any other plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowPlan {
    /// The shadowed versions.
    pub versions: Vec<u64>,
    /// The share of requests copied, in percent (0.01 to 100).
    #[serde(default = "default_hundred")]
    pub fraction_percent: f64,
}

/// One A/B arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbArm {
    /// The arm's name, unique within the test.
    pub name: String,
    /// The version it serves; the champion's version makes it the control.
    pub version: u64,
    /// Its relative share of traffic.
    pub weight: u32,
}

/// How a champion-challenger challenger gets promoted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromotionGate {
    /// An operator promotes.
    #[default]
    Manual,
    /// Promoted by `tick` when a challenger's KPI is shown to beat the
    /// champion's by more than `threshold` (relative): a one-sided
    /// always-valid test on the current evaluation period's sample
    /// (periods of `window_secs`, restarting at each boundary and after a
    /// promotion; see `rollout::gate`).
    Automatic {
        /// The KPI the caller reports means for.
        kpi: String,
        /// The minimum relative lift: promote when the challenger's KPI
        /// beats the champion's by more than this fraction of the
        /// champion's value, e.g. 0.02 for 2%; 0 means "shown better".
        threshold: f64,
        /// The evaluation period (at most a day); the caller's KPI
        /// summaries cover the current period from its start.
        window_secs: u64,
        /// KPI samples each side needs within the period.
        #[serde(default = "default_gate_samples")]
        min_samples: u64,
        /// Whether a larger KPI is better (conversion) or worse (latency).
        #[serde(default = "default_true")]
        higher_is_better: bool,
    },
}

/// Why a plan cannot start.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    /// Traffic can only go to a loaded, warmed-up version.
    #[error("version {version} is not ready; expected one of the ready versions {ready:?}")]
    VersionNotReady {
        /// The version asked for.
        version: u64,
        /// The versions that are READY.
        ready: Vec<u64>,
    },
    /// Rolling the champion out to itself does nothing.
    #[error("version {version} is the current champion; expected a different version")]
    IsChampion {
        /// The champion's version.
        version: u64,
    },
    /// A version listed twice would get two slices or two shadows.
    #[error("version {version} appears more than once; expected each version once")]
    DuplicateVersion {
        /// The repeated version.
        version: u64,
    },
    /// A list that needs entries is empty.
    #[error("{field} is empty; expected at least one entry")]
    Empty {
        /// The empty field.
        field: &'static str,
    },
    /// A canary step outside 1..=100.
    #[error("steps[{index}].percent is {percent}; expected 1 to 100")]
    StepPercent {
        /// The step's index.
        index: usize,
        /// Its percent.
        percent: u32,
    },
    /// Canary steps must only grow the candidate.
    #[error(
        "steps[{index}].percent is {percent}, not above the previous step's {previous}; expected strictly increasing percentages"
    )]
    StepsNotIncreasing {
        /// The step's index.
        index: usize,
        /// Its percent.
        percent: u32,
        /// The previous step's percent.
        previous: u32,
    },
    /// A canary that never reaches 100% never finishes.
    #[error("the last step's percent is {percent}; expected 100")]
    LastStepNotFull {
        /// The last step's percent.
        percent: u32,
    },
    /// A number outside its valid range.
    #[error("{field} is {value}; expected {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// An A/B test compares at least two arms.
    #[error("the A/B test has {count} arm(s); expected at least 2")]
    TooFewArms {
        /// How many arms were given.
        count: usize,
    },
    /// Arm names label replies and results.
    #[error("arm name '{name}' is used twice; expected unique arm names")]
    DuplicateArmName {
        /// The repeated name.
        name: String,
    },
    /// An arm with no weight gets no traffic and no result.
    #[error("arm '{name}' has weight 0; expected a positive weight")]
    ZeroWeight {
        /// The arm's name.
        name: String,
    },
    /// An arm whose weight is too small a share of the total for one bucket
    /// would be listed but never served.
    #[error(
        "arm '{name}' has weight {weight} of a total {total}, less than one bucket (0.01%) of traffic; expected each arm's weight to be at least 1/10000 of the total"
    )]
    ArmTooSmall {
        /// The arm's name.
        name: String,
        /// Its weight.
        weight: u32,
        /// The sum of all arms' weights.
        total: u64,
    },
    /// The challengers' slice must leave the champion at least one bucket.
    #[error(
        "fraction_percent {fraction_percent} rounds to {basis_points} of 10000 buckets, leaving the champion no traffic; expected at most 99.99"
    )]
    SliceTooLarge {
        /// The requested share.
        fraction_percent: f64,
        /// That share in buckets.
        basis_points: u32,
    },
    /// Each challenger needs at least one bucket.
    #[error(
        "fraction_percent {fraction_percent} gives {basis_points} buckets to {challengers} challengers; expected at least one bucket (0.01%) each"
    )]
    SliceTooSmall {
        /// The requested share.
        fraction_percent: f64,
        /// That share in buckets.
        basis_points: u32,
        /// The number of challengers.
        challengers: usize,
    },
}

impl Plan {
    /// The strategy's snake_case name, as in the JSON `strategy` tag.
    pub fn strategy(&self) -> &'static str {
        match self {
            Plan::BlueGreen { .. } => "blue_green",
            Plan::Canary { .. } => "canary",
            Plan::Shadow(_) => "shadow",
            Plan::AbTest { .. } => "ab_test",
            Plan::ChampionChallenger { .. } => "champion_challenger",
        }
    }

    /// A canary over the default ladder 1, 5, 20, 50, 100 with manual advance.
    pub fn canary(candidate: u64) -> Self {
        Plan::Canary { candidate, steps: default_steps(), auto_advance: false }
    }

    /// The versions this plan sends traffic or copies to, besides the
    /// champion; the A/B control arm is left out.
    pub fn versions(&self, champion: u64) -> Vec<u64> {
        match self {
            Plan::BlueGreen { green, .. } => vec![*green],
            Plan::Canary { candidate, .. } => vec![*candidate],
            Plan::Shadow(shadow) => shadow.versions.clone(),
            Plan::AbTest { arms, .. } => arms.iter().map(|a| a.version).filter(|v| *v != champion).collect(),
            Plan::ChampionChallenger { challengers, .. } => challengers.clone(),
        }
    }

    /// Checks the plan against the current champion and the READY versions:
    /// every version exists and is ready, none is the champion (except an
    /// A/B control arm), and every number is in range.
    pub fn validate(&self, champion: u64, ready_versions: &[u64]) -> Result<(), PlanError> {
        match self {
            Plan::BlueGreen { green, .. } => check_versions(&[*green], champion, ready_versions),
            Plan::Canary { candidate, steps, .. } => {
                check_versions(&[*candidate], champion, ready_versions)?;
                check_steps(steps)
            }
            Plan::Shadow(shadow) => shadow.validate(champion, ready_versions),
            Plan::AbTest { arms, metric, mde, alpha, power, variance, .. } => {
                check_arms(arms, champion, ready_versions)?;
                if metric.trim().is_empty() {
                    return Err(PlanError::Empty { field: "metric" });
                }
                check_probability("alpha", *alpha)?;
                check_probability("power", *power)?;
                check_positive("mde", *mde)?;
                check_positive("variance", *variance)
            }
            Plan::ChampionChallenger { challengers, fraction_percent, gate } => {
                if challengers.is_empty() {
                    return Err(PlanError::Empty { field: "challengers" });
                }
                check_versions(challengers, champion, ready_versions)?;
                if !(*fraction_percent > 0.0 && *fraction_percent < 100.0) {
                    return Err(PlanError::OutOfRange {
                        field: "fraction_percent",
                        value: *fraction_percent,
                        expected: "a percentage above 0 and below 100",
                    });
                }
                let basis_points = percent_to_bp(*fraction_percent);
                if basis_points >= BUCKETS {
                    return Err(PlanError::SliceTooLarge {
                        fraction_percent: *fraction_percent,
                        basis_points,
                    });
                }
                if (basis_points as usize) < challengers.len() {
                    return Err(PlanError::SliceTooSmall {
                        fraction_percent: *fraction_percent,
                        basis_points,
                        challengers: challengers.len(),
                    });
                }
                gate.validate()
            }
        }
    }

    /// The A/B test's required samples per arm; `None` for other plans or
    /// out-of-range settings (which [`Self::validate`] rejects).
    pub fn required_samples_per_arm(&self) -> Option<u64> {
        match self {
            Plan::AbTest { mde, alpha, power, variance, .. } => {
                stats::sample_size_means(*alpha, *power, *variance, *mde).ok()
            }
            _ => None,
        }
    }
}

impl ShadowPlan {
    /// Checks versions (ready, not the champion, each once) and the fraction.
    pub fn validate(&self, champion: u64, ready_versions: &[u64]) -> Result<(), PlanError> {
        if self.versions.is_empty() {
            return Err(PlanError::Empty { field: "versions" });
        }
        check_versions(&self.versions, champion, ready_versions)?;
        if !(self.fraction_percent >= 0.01 && self.fraction_percent <= 100.0) {
            return Err(PlanError::OutOfRange {
                field: "fraction_percent",
                value: self.fraction_percent,
                expected: "a percentage from 0.01 to 100",
            });
        }
        Ok(())
    }

    /// The sampled share in basis points.
    pub fn fraction_bp(&self) -> u32 {
        percent_to_bp(self.fraction_percent)
    }
}

impl PromotionGate {
    fn validate(&self) -> Result<(), PlanError> {
        match self {
            PromotionGate::Manual => Ok(()),
            PromotionGate::Automatic { kpi, threshold, window_secs, .. } => {
                if kpi.trim().is_empty() {
                    return Err(PlanError::Empty { field: "kpi" });
                }
                if !(threshold.is_finite() && *threshold >= 0.0) {
                    return Err(PlanError::OutOfRange {
                        field: "threshold",
                        value: *threshold,
                        expected: "a relative improvement of 0 or more, e.g. 0.02",
                    });
                }
                if *window_secs == 0 || *window_secs > crate::rollout::gate::MAX_PERIOD_SECS {
                    return Err(PlanError::OutOfRange {
                        field: "window_secs",
                        value: *window_secs as f64,
                        expected: "an evaluation period of 1 to 86400 seconds (the outcome store keeps a day)",
                    });
                }
                Ok(())
            }
        }
    }
}

/// A percentage as whole basis points (rounded), clamped to [0, 10000].
pub fn percent_to_bp(percent: f64) -> u32 {
    // NaN casts to 0; the clamp bounds the rest.
    (percent * 100.0).round().clamp(0.0, f64::from(BUCKETS)) as u32
}

fn check_versions(versions: &[u64], champion: u64, ready: &[u64]) -> Result<(), PlanError> {
    for (i, &version) in versions.iter().enumerate() {
        if version == champion {
            return Err(PlanError::IsChampion { version });
        }
        if !ready.contains(&version) {
            let mut ready = ready.to_vec();
            ready.sort_unstable();
            return Err(PlanError::VersionNotReady { version, ready });
        }
        if versions[..i].contains(&version) {
            return Err(PlanError::DuplicateVersion { version });
        }
    }
    Ok(())
}

fn check_steps(steps: &[CanaryStep]) -> Result<(), PlanError> {
    let Some(last) = steps.last() else {
        return Err(PlanError::Empty { field: "steps" });
    };
    for (index, step) in steps.iter().enumerate() {
        if !(1..=100).contains(&step.percent) {
            return Err(PlanError::StepPercent { index, percent: step.percent });
        }
        if let Some(previous) = index.checked_sub(1).map(|i| steps[i].percent)
            && step.percent <= previous
        {
            return Err(PlanError::StepsNotIncreasing { index, percent: step.percent, previous });
        }
    }
    if last.percent != 100 {
        return Err(PlanError::LastStepNotFull { percent: last.percent });
    }
    Ok(())
}

fn check_arms(arms: &[AbArm], champion: u64, ready: &[u64]) -> Result<(), PlanError> {
    if arms.len() < 2 {
        return Err(PlanError::TooFewArms { count: arms.len() });
    }
    for (i, a) in arms.iter().enumerate() {
        if a.name.trim().is_empty() {
            return Err(PlanError::Empty { field: "arm name" });
        }
        if arms[..i].iter().any(|b| b.name == a.name) {
            return Err(PlanError::DuplicateArmName { name: a.name.clone() });
        }
        if a.weight == 0 {
            return Err(PlanError::ZeroWeight { name: a.name.clone() });
        }
        // Arms are told apart by version in observations, so each version
        // appears once; this also allows at most one control arm.
        if arms[..i].iter().any(|b| b.version == a.version) {
            return Err(PlanError::DuplicateVersion { version: a.version });
        }
    }
    // The routing table sizes arms by exactly this split; an arm rounded down
    // to no bucket would never be served.
    let weights: Vec<u32> = arms.iter().map(|a| a.weight).collect();
    let sizes = split_by_weight(&weights).unwrap_or_default();
    if let Some((a, _)) = arms.iter().zip(&sizes).find(|(_, size)| **size == 0) {
        let total = weights.iter().map(|w| u64::from(*w)).sum();
        return Err(PlanError::ArmTooSmall { name: a.name.clone(), weight: a.weight, total });
    }
    let treatments: Vec<u64> = arms.iter().map(|a| a.version).filter(|v| *v != champion).collect();
    check_versions(&treatments, champion, ready)
}

fn check_probability(field: &'static str, value: f64) -> Result<(), PlanError> {
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(PlanError::OutOfRange { field, value, expected: "a probability strictly between 0 and 1" })
    }
}

fn check_positive(field: &'static str, value: f64) -> Result<(), PlanError> {
    if value > 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(PlanError::OutOfRange { field, value, expected: "a finite number above 0" })
    }
}

fn default_retention_secs() -> u64 {
    DEFAULT_RETENTION_SECS
}
fn default_steps() -> Vec<CanaryStep> {
    DEFAULT_STEPS.iter().map(|p| CanaryStep::at(*p)).collect()
}
fn default_step_secs() -> u64 {
    DEFAULT_STEP_SECS
}
fn default_step_samples() -> u64 {
    DEFAULT_STEP_SAMPLES
}
fn default_hundred() -> f64 {
    100.0
}
fn default_alpha() -> f64 {
    0.05
}
fn default_power() -> f64 {
    0.8
}
fn default_ab_secs() -> u64 {
    DEFAULT_AB_SECS
}
fn default_challenger_percent() -> f64 {
    DEFAULT_CHALLENGER_PERCENT
}
fn default_gate_samples() -> u64 {
    DEFAULT_GATE_SAMPLES
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests;
