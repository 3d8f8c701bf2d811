//! What the controller observed, handed to [`crate::Rollout::tick`], and the
//! progress reports derived from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// Per-version observations for one tick.
///
/// Contract with the caller: `samples` counts the responses a version served
/// to clients since the rollout's current stage began
/// ([`crate::Rollout::stage_started_ms`]); the caller resets its counters when
/// `(stage, stage_started_ms)` changes. `kpi` is the gate's KPI over the
/// champion-challenger window (`window_secs`) ending now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmObservation {
    /// Observations by version.
    pub arms: BTreeMap<u64, ArmStats>,
}

/// What was observed for one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Responses served in the current stage.
    pub samples: u64,
    /// The KPI's mean and count over the gate's window, if reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpi: Option<KpiSample>,
}

/// A KPI mean and how many observations it averages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KpiSample {
    /// The mean.
    pub mean: f64,
    /// Observations behind the mean.
    pub n: u64,
    /// The observations' sample variance, when known; the automatic gate
    /// then also requires the always-valid test to show the improvement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variance: Option<f64>,
}

impl ArmObservation {
    /// No observations.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same observation with `version`'s sample count set.
    pub fn with_samples(mut self, version: u64, samples: u64) -> Self {
        self.arms.entry(version).or_default().samples = samples;
        self
    }

    /// The same observation with `version`'s KPI set.
    pub fn with_kpi(mut self, version: u64, mean: f64, n: u64) -> Self {
        self.arms.entry(version).or_default().kpi = Some(KpiSample { mean, n, variance: None });
        self
    }

    /// The same observation with `version`'s KPI and its variance set.
    pub fn with_kpi_variance(mut self, version: u64, mean: f64, n: u64, variance: f64) -> Self {
        self.arms.entry(version).or_default().kpi = Some(KpiSample { mean, n, variance: Some(variance) });
        self
    }

    /// `version`'s sample count, 0 when not reported.
    pub fn samples(&self, version: u64) -> u64 {
        self.arms.get(&version).map_or(0, |a| a.samples)
    }

    /// `version`'s KPI, if reported.
    pub fn kpi(&self, version: u64) -> Option<KpiSample> {
        self.arms.get(&version).and_then(|a| a.kpi)
    }
}

/// The safety analysis's verdict on the current stage, computed by the
/// caller (triggers, comparisons) and consumed by automatic decisions: only
/// `Healthy` lets a rollout advance or promote by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVerdict {
    /// Nothing wrong was found with enough data to say so.
    Healthy,
    /// Something is wrong; the reason says what.
    Unhealthy(String),
    /// Not enough data yet.
    Inconclusive,
    /// Not enough evidence yet; says what it waits for.
    Waiting(String),
}

/// An A/B test's progress toward its required sample size and duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbProgress {
    /// Samples each arm needs (from `sample_size_means`).
    pub required_per_arm: u64,
    /// Each arm's progress, in declared order.
    pub arms: Vec<AbArmProgress>,
    /// Time since the experiment started.
    pub elapsed_ms: Millis,
    /// The experiment's minimum duration.
    pub min_duration_ms: Millis,
    /// Whether every arm has its samples and the minimum duration passed.
    pub complete: bool,
}

/// One A/B arm's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbArmProgress {
    /// The arm's name.
    pub name: String,
    /// The arm's version.
    pub version: u64,
    /// Samples so far.
    pub samples: u64,
    /// Samples needed.
    pub required: u64,
}
