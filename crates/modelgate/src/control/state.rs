//! The persisted control state: champions, rollouts and their stage counts,
//! the format it is written in, how it is read back, and what changed when
//! another replica's state is adopted. Pure: the store is the caller's.

use std::collections::{BTreeMap, BTreeSet};

use modelgate_rollout::{AuditEvent, Rollout, RolloutState};
use serde::{Deserialize, Serialize};

use crate::control::counts::StageCounts;
use crate::control::error::ControlError;
use crate::store::Snapshot;

/// The format of the state snapshot this build writes.
pub const STATE_FORMAT: u32 = 0;
/// Every snapshot format this build reads. A snapshot in any other (written
/// by a newer build) stops start-up rather than being misread and then
/// overwritten.
pub const KNOWN_STATE_FORMATS: &[u32] = &[STATE_FORMAT];

/// Everything persisted: champions, rollouts, and their stage counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlState {
    pub format: u32,
    pub champions: BTreeMap<String, u64>,
    pub rollouts: BTreeMap<String, Rollout>,
    pub counts: BTreeMap<String, StageCounts>,
    /// Versions unloaded because nothing uses them any more (blue after its
    /// retention); unloaded again after a restart.
    #[serde(default)]
    pub retired: BTreeMap<String, Vec<u64>>,
}

impl Default for ControlState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            champions: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            counts: BTreeMap::new(),
            retired: BTreeMap::new(),
        }
    }
}

impl ControlState {
    /// `model`'s rollout, if it is live (running or paused).
    pub fn live(&self, model: &str) -> Option<&Rollout> {
        self.rollouts.get(model).filter(|r| !r.state.is_finished())
    }

    /// The models with a live rollout.
    pub fn live_models(&self) -> Vec<String> {
        self.rollouts.iter().filter(|(_, r)| !r.state.is_finished()).map(|(m, _)| m.clone()).collect()
    }

    /// The ids of the live rollouts.
    pub fn live_ids(&self) -> BTreeSet<String> {
        self.rollouts.values().filter(|r| !r.state.is_finished()).map(|r| r.id.clone()).collect()
    }

    /// Takes `next` (written elsewhere) and returns the models whose routing
    /// changed. What this replica unloaded stays its own business.
    pub fn adopt(&mut self, mut next: ControlState) -> Vec<String> {
        next.retired = std::mem::take(&mut self.retired);
        let old = std::mem::replace(self, next);
        let mut models: BTreeSet<&String> = old.rollouts.keys().collect();
        models.extend(self.rollouts.keys());
        models.extend(old.champions.keys());
        models.extend(self.champions.keys());
        models
            .into_iter()
            .filter(|m| {
                let routed =
                    |s: &ControlState| (s.rollouts.get(*m).map(routing_part), s.champions.get(*m).copied());
                routed(&old) != routed(self)
            })
            .cloned()
            .collect()
    }
}

/// What routing depends on in a rollout (not its last verdict's numbers).
fn routing_part(r: &Rollout) -> Rollout {
    let mut r = r.clone();
    r.clear_verdict();
    r
}

/// A rollout's state as the API, metrics and the CLI name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Running,
    Paused,
    Promoted,
    RolledBack,
    Aborted,
    Completed,
}

impl Phase {
    pub fn of(s: &RolloutState) -> Self {
        match s {
            RolloutState::Running => Self::Running,
            RolloutState::Paused => Self::Paused,
            RolloutState::Promoted { .. } => Self::Promoted,
            RolloutState::RolledBack { .. } => Self::RolledBack,
            RolloutState::Aborted { .. } => Self::Aborted,
            RolloutState::Completed => Self::Completed,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Aborted => "aborted",
            Self::Completed => "completed",
        }
    }

    /// Running or paused.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// A rollout state's name in the API, metrics and the CLI.
pub fn state_name(s: &RolloutState) -> &'static str {
    Phase::of(s).as_str()
}

/// A stored snapshot, if its format is one this build reads.
pub fn parse_state(snap: &Snapshot) -> Result<ControlState, ControlError> {
    /// Only the format, whatever else a newer build put beside it.
    #[derive(Deserialize)]
    struct Head {
        format: Option<serde_json::Value>,
    }
    if let Ok(Head { format: Some(found) }) = serde_json::from_slice::<Head>(&snap.bytes) {
        let known = found
            .as_u64()
            .and_then(|f| u32::try_from(f).ok())
            .is_some_and(|f| KNOWN_STATE_FORMATS.contains(&f));
        if !known {
            let mut found = found.to_string();
            found.truncate(64);
            return Err(ControlError::UnknownStateFormat {
                origin: snap.origin.clone(),
                found,
                known: KNOWN_STATE_FORMATS.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            });
        }
    }
    serde_json::from_slice::<ControlState>(&snap.bytes).map_err(|e| {
        ControlError::Precondition(format!("the rollout state in {} does not parse: {e}", snap.origin))
    })
}

/// The snapshot's bytes. A state that does not serialise is an internal
/// error: nothing is written (never an empty snapshot).
pub fn encode_state(state: &ControlState) -> Result<Vec<u8>, ControlError> {
    serde_json::to_vec(state)
        .map_err(|e| ControlError::Internal(format!("cannot serialise the rollout state: {e}")))
}

/// One JSON line per audit event; an event that does not serialise is an
/// internal error and none is written.
pub fn encode_events(events: &[AuditEvent]) -> Result<Vec<String>, ControlError> {
    events
        .iter()
        .map(|e| {
            serde_json::to_string(e).map_err(|err| {
                ControlError::Internal(format!(
                    "cannot serialise the audit event {:?} of rollout {}: {err}",
                    e.action, e.rollout_id
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_in_an_unknown_format_is_refused_naming_where_and_which() {
        let snap = |text: &str| Snapshot { bytes: text.into(), revision: 1, origin: "/s/state.json".into() };
        let written = serde_json::to_string(&ControlState::default()).unwrap();
        assert!(written.contains("\"format\":0"), "{written}");
        assert!(parse_state(&snap(&written)).is_ok());
        for (text, found) in [
            (r#"{"format":7,"champions":{},"rollouts":{},"counts":{},"future":[]}"#, "7"),
            (r#"{"format":"v2"}"#, "\"v2\""),
            (r#"{"format":-1}"#, "-1"),
            (r#"{"format":4294967296}"#, "4294967296"),
        ] {
            let e = parse_state(&snap(text)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/s/state.json holds rollout state in format {found}, "))
                    && e.contains("it knows format 0"),
                "{e}"
            );
        }
        let e = parse_state(&snap("{\"format\":0,")).unwrap_err().to_string();
        assert!(e.starts_with("the rollout state in /s/state.json does not parse"), "{e}");
    }

    #[test]
    fn adopting_a_state_names_the_models_whose_routing_changed_and_keeps_what_was_retired() {
        use crate::control::testing::{T0, canary};
        let mut mine = ControlState::default();
        mine.rollouts.insert("m".into(), canary(&[10, 100]));
        mine.champions.insert("n".into(), 1);
        mine.retired.insert("m".into(), vec![3]);
        // Only a new verdict: routing is the same.
        let mut theirs = mine.clone();
        theirs.retired.clear();
        let mut judged = canary(&[10, 100]);
        judged.tick(T0 + 1, &Default::default(), &modelgate_rollout::StepVerdict::Healthy);
        theirs.rollouts.insert("m".into(), judged);
        assert!(mine.clone().adopt(theirs.clone()).is_empty());
        theirs.champions.insert("n".into(), 2);
        assert_eq!(mine.adopt(theirs), ["n"]);
        assert_eq!(mine.retired["m"], [3], "what this replica unloaded stays its own");
    }

    #[test]
    fn phases_name_the_states_as_labels() {
        assert_eq!(Phase::of(&RolloutState::Running).as_str(), "running");
        assert_eq!(state_name(&RolloutState::Promoted { version: 2 }), "promoted");
        assert!(Phase::Paused.is_live() && !Phase::Completed.is_live());
    }
}
