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
/// `(stage, stage_started_ms)` changes. `kpi` is the gate's KPI since the
/// current champion-challenger evaluation period began
/// ([`crate::Rollout::evaluation_period`]), up to now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmObservation {
    /// Observations by version.
    pub arms: BTreeMap<u64, ArmStats>,
    /// The significance level α of the automatic gate's always-valid test
    /// (the model's `[analysis] alpha`); [`crate::analysis::DEFAULT_ALPHA`]
    /// when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

/// What was observed for one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Responses served in the current stage.
    pub samples: u64,
    /// The KPI's mean and count in the gate's current period, if reported.
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

    /// The same observation judged at significance level `alpha`.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = Some(alpha);
        self
    }

    /// The significance level decisions on this observation use.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(crate::analysis::DEFAULT_ALPHA)
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
///
/// Persisted as a rollout's last verdict. A snapshot written before
/// verdicts were typed holds `{"unhealthy": "<sentence>"}`; it still loads,
/// as one [`RegressionKind::Unrecorded`] regression carrying the sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVerdict {
    /// Nothing wrong was found with enough data to say so.
    Healthy,
    /// Something is wrong: each regression found, never empty.
    Unhealthy(#[serde(deserialize_with = "regressions_or_sentence")] Vec<Regression>),
    /// Not enough data yet.
    Inconclusive,
    /// Not enough evidence yet; says what it waits for.
    Waiting(String),
}

impl StepVerdict {
    /// The regressions' texts, joined for a person to read.
    pub fn unhealthy_text(regressions: &[Regression]) -> String {
        regressions.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("; ")
    }
}

/// One way a version was shown worse than the champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// The version that regressed.
    pub version: u64,
    /// What regressed.
    pub kind: RegressionKind,
    /// The measured values (difference, interval, margin, p-value, n, …).
    #[serde(default)]
    pub numbers: BTreeMap<String, f64>,
    /// The whole finding in words, as operators read it.
    pub text: String,
    /// The test that found it (verdicts saved before it existed load
    /// without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::DecidingTest>,
}

/// What a [`Regression`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionKind {
    /// Error rate worse than the champion's beyond the margin.
    ErrorRate,
    /// Mean latency worse than the champion's beyond the margin.
    Latency,
    /// A business metric (KPI) worse than the control's by at least the MDE.
    Kpi,
    /// A verdict persisted by an earlier build as a sentence only.
    Unrecorded,
}

impl RegressionKind {
    /// The kind's name in alerts, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::Latency => "latency",
            Self::Kpi => "kpi",
            Self::Unrecorded => "unrecorded",
        }
    }
}

/// Regressions as written now, or the sentence an earlier build wrote.
fn regressions_or_sentence<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Regression>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Typed(Vec<Regression>),
        Sentence(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::Typed(list) => list,
        Either::Sentence(text) => {
            vec![Regression {
                version: 0,
                kind: RegressionKind::Unrecorded,
                numbers: BTreeMap::new(),
                text,
                decision: None,
            }]
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unhealthy_verdict_written_as_a_sentence_still_loads() {
        let old: StepVerdict =
            serde_json::from_str(r#"{"unhealthy":"v2 error rate +1.2 pp (CI; margin)"}"#).unwrap();
        let StepVerdict::Unhealthy(list) = &old else { panic!("{old:?}") };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].kind, RegressionKind::Unrecorded);
        assert_eq!(list[0].text, "v2 error rate +1.2 pp (CI; margin)");
        let typed = StepVerdict::Unhealthy(vec![Regression {
            version: 2,
            kind: RegressionKind::Latency,
            numbers: BTreeMap::from([("diff".to_owned(), 3.5)]),
            text: "v2 mean latency".to_owned(),
            decision: Some(crate::DecidingTest::new("always_valid_ci_latency", 4.0, 2.0).with_n(1, 500)),
        }]);
        let back: StepVerdict = serde_json::from_str(&serde_json::to_string(&typed).unwrap()).unwrap();
        assert_eq!(back, typed);
    }
}
