//! Audit events: one record per decision, with who made it, why, and the
//! numbers it was based on. The gateway appends them to its JSON-lines log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Millis;
use crate::routing::ArmWeight;

/// Who made a decision: an operator's identity, or [`Actor::system`] for the
/// gateway's own automatic decisions. Serialises as a bare string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor {
    /// The operator's name or the system's name.
    pub who: String,
}

impl Actor {
    /// The name automatic decisions are recorded under.
    pub const SYSTEM: &'static str = "modelgate";

    /// An operator (or service account) by name.
    pub fn new(who: impl Into<String>) -> Self {
        Actor { who: who.into() }
    }

    /// The gateway itself: auto-advance, automatic gates, hard triggers.
    pub fn system() -> Self {
        Actor::new(Self::SYSTEM)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A rollout began.
    Started,
    /// A canary moved to its next step.
    Advanced,
    /// Blue/green moved all traffic to green.
    Switched,
    /// An operator overrode the canary's share.
    WeightsSet,
    /// Automatic decisions stopped.
    Paused,
    /// Automatic decisions resumed.
    Resumed,
    /// A version became the champion; the rollout is finished.
    Promoted,
    /// All traffic went back to the champion because something went wrong.
    RolledBack,
    /// All traffic went back to the champion because an operator stopped.
    Aborted,
    /// A shadow, A/B test or champion-challenger run ended with no change of
    /// champion.
    Completed,
    /// An A/B test reached its required samples and minimum duration.
    ExperimentReady,
    /// A soft trigger fired; a person should look.
    Alert,
}

/// One decision about one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, in unix ms.
    pub at_ms: Millis,
    /// The rollout's id.
    pub rollout_id: String,
    /// The model the rollout belongs to.
    pub model: String,
    /// Who decided.
    pub actor: Actor,
    /// What happened.
    pub action: Action,
    /// The version concerned (the promoted one, for promotions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The stage before, for stage changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_stage: Option<usize>,
    /// The stage after, for stage changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_stage: Option<usize>,
    /// The traffic split before, when the decision changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_before: Option<Vec<ArmWeight>>,
    /// The traffic split after, when the decision changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_after: Option<Vec<ArmWeight>>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The trigger that fired, for automatic rollbacks and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The numbers the decision was based on, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub numbers: BTreeMap<String, f64>,
    /// The statistical test that decided, for automatic decisions taken on
    /// one (events written before it existed load without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecidingTest>,
}

/// The test behind an automatic decision: which, its statistic, the
/// threshold it crossed (or stayed within) and how many observations each
/// arm had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecidingTest {
    /// The test, e.g. `sprt_error_rate`, `always_valid_ci_latency`, `msprt`,
    /// `relative_lift`.
    pub test: String,
    /// The test's statistic (an SPRT log-likelihood ratio, a confidence
    /// bound, an always-valid p-value, a relative lift).
    pub statistic: f64,
    /// What the statistic was compared with (the SPRT bound, the margin,
    /// α, the gate's threshold).
    pub threshold: f64,
    /// Observations per arm, by version.
    #[serde(default, with = "version_keys")]
    pub n: BTreeMap<u64, u64>,
}

/// A map by version whose JSON keys are the versions' digits, read back
/// through string keys: serde's buffered (untagged) path cannot parse
/// integer keys itself, and a [`DecidingTest`] is read through one inside a
/// persisted [`crate::StepVerdict`].
mod version_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(map: &BTreeMap<u64, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k.to_string(), v)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, u64>, D::Error> {
        BTreeMap::<String, u64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                k.parse::<u64>()
                    .map(|k| (k, v))
                    .map_err(|_| D::Error::custom(format!("version key '{k}' is not a whole number")))
            })
            .collect()
    }
}

impl DecidingTest {
    /// A test with no arm counts yet.
    pub fn new(test: impl Into<String>, statistic: f64, threshold: f64) -> Self {
        Self { test: test.into(), statistic, threshold, n: BTreeMap::new() }
    }

    /// The same test with `version`'s count of observations.
    pub fn with_n(mut self, version: u64, n: u64) -> Self {
        self.n.insert(version, n);
        self
    }

    /// Whether JSON can carry it: a non-finite statistic or threshold would
    /// not restore.
    pub fn is_finite(&self) -> bool {
        self.statistic.is_finite() && self.threshold.is_finite()
    }
}

impl AuditEvent {
    /// Adds a number the decision was based on. Non-finite values are
    /// skipped: JSON cannot carry them and they would not restore.
    pub fn number(mut self, name: &str, value: f64) -> Self {
        if value.is_finite() {
            self.numbers.insert(name.to_owned(), value);
        }
        self
    }

    /// Records the test that decided; one whose numbers JSON cannot carry
    /// (not finite) is left out, as [`AuditEvent::number`] does.
    pub fn decided_by(mut self, test: Option<DecidingTest>) -> Self {
        self.decision = test.filter(DecidingTest::is_finite);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_written_before_decisions_loads_and_one_with_a_decision_round_trips() {
        let old = r#"{"at_ms":1,"rollout_id":"r","model":"m","actor":"modelgate","action":"rolled_back","trigger":"error_rate","numbers":{"sprt_llr":7.1}}"#;
        let event: AuditEvent = serde_json::from_str(old).unwrap();
        assert_eq!(event.decision, None);
        let decided = event
            .decided_by(Some(DecidingTest::new("sprt_error_rate", 7.1, 6.9).with_n(1, 900).with_n(2, 100)));
        let json = serde_json::to_string(&decided).unwrap();
        assert!(json.contains(r#""decision":{"test":"sprt_error_rate","statistic":7.1,"threshold":6.9,"n":{"1":900,"2":100}}"#), "{json}");
        assert_eq!(serde_json::from_str::<AuditEvent>(&json).unwrap(), decided);
        // Numbers JSON cannot carry are left out, as for `number`.
        let infinite = decided.decided_by(Some(DecidingTest::new("msprt", f64::INFINITY, 0.05)));
        assert_eq!(infinite.decision, None);
    }
}
