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
}
