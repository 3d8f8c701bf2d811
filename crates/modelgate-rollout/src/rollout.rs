//! The rollout state machine: one model's move from its champion to a new
//! version (or an experiment beside it), with the routing table derived from
//! the state at every step.
//!
//! State changes happen only through operations (operator commands, in
//! `ops.rs`) and [`Rollout::tick`] (automatic decisions, in `tick.rs`); each
//! returns the [`AuditEvent`]s it produced. The routing table is never stored:
//! [`Rollout::routing_table`] derives it, so a rollout restored from JSON
//! routes exactly as before.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Millis;
use crate::audit::{Action, Actor, AuditEvent};
use crate::observe::StepVerdict;
use crate::plan::{Plan, PlanError, ShadowPlan, percent_to_bp};
use crate::routing::{ArmWeight, Role, RoutingTable, ShadowTarget};
use crate::triggers::TriggerOverrides;

pub mod gate;
mod ops;
mod tick;

/// What an operator starts: identity, randomness and the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Unique rollout id, chosen by the caller.
    pub id: String,
    /// The model being rolled out.
    pub model: String,
    /// The routing hash salt, generated randomly by the caller for each
    /// rollout (this crate has no randomness). Fixed for the rollout's life,
    /// which is what keeps users sticky across stages and replicas.
    pub salt: u64,
    /// The version serving before the rollout.
    pub champion: u64,
    /// The strategy.
    pub plan: Plan,
    /// Shadows to run beside the plan; not allowed with a shadow plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowPlan>,
    /// Hard-trigger settings for this rollout, over the model's.
    #[serde(default, skip_serializing_if = "TriggerOverrides::is_empty")]
    pub triggers: TriggerOverrides,
}

/// Where a rollout is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    /// Traffic follows the plan; automatic decisions are on.
    Running,
    /// Traffic keeps its current split; automatic decisions are off.
    Paused,
    /// Finished: `version` is the champion now.
    Promoted {
        /// The new champion.
        version: u64,
    },
    /// Finished: the champion got all traffic back because something went
    /// wrong.
    RolledBack {
        /// Why.
        reason: String,
        /// The automatic trigger that fired, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<String>,
    },
    /// Finished: an operator stopped the rollout; the champion has all
    /// traffic.
    Aborted {
        /// Why.
        reason: String,
    },
    /// Finished: a shadow, A/B or champion-challenger run ended without a
    /// change of champion.
    Completed,
}

impl RolloutState {
    /// Whether the rollout is over (no operation but reading applies).
    pub fn is_finished(&self) -> bool {
        !matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutState::Running => f.write_str("running"),
            RolloutState::Paused => f.write_str("paused"),
            RolloutState::Promoted { version } => write!(f, "promoted (v{version} is champion)"),
            RolloutState::RolledBack { reason, .. } => write!(f, "rolled back ({reason})"),
            RolloutState::Aborted { reason } => write!(f, "aborted ({reason})"),
            RolloutState::Completed => f.write_str("completed"),
        }
    }
}

/// Why an operation was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RolloutError {
    /// The plan failed validation.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A trigger override is out of range.
    #[error(transparent)]
    Triggers(#[from] crate::triggers::TriggerRangeError),
    /// The rollout is over.
    #[error("cannot {operation} rollout '{id}': it is already {state}")]
    Finished {
        /// The rollout.
        id: String,
        /// The refused operation.
        operation: &'static str,
        /// The rollout's state, in words.
        state: String,
    },
    /// The operation does not exist for this strategy.
    #[error("cannot {operation} a {strategy} rollout; {hint}")]
    NotApplicable {
        /// The refused operation.
        operation: &'static str,
        /// The rollout's strategy.
        strategy: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// Pausing twice is probably a mistake worth telling.
    #[error("rollout '{id}' is already paused; expected a running rollout")]
    AlreadyPaused {
        /// The rollout.
        id: String,
    },
    /// Only a paused rollout resumes.
    #[error("rollout '{id}' is running, not paused; expected a paused rollout")]
    NotPaused {
        /// The rollout.
        id: String,
    },
    /// Promotion targets one of the rollout's own versions.
    #[error("version {version} is not part of rollout '{id}'; expected one of {candidates:?}")]
    NotACandidate {
        /// The rollout.
        id: String,
        /// The version asked for.
        version: u64,
        /// The versions that may be promoted.
        candidates: Vec<u64>,
    },
    /// A canary share is a percentage.
    #[error("canary percent is {percent}; expected 0 to 100")]
    PercentOutOfRange {
        /// The requested share.
        percent: u32,
    },
    /// Blue/green switches once.
    #[error("blue/green rollout '{id}' already switched to green v{green}; expected promote or rollback")]
    AlreadySwitched {
        /// The rollout.
        id: String,
        /// The green version.
        green: u64,
    },
    /// One shadow plan per rollout.
    #[error("a shadow plan cannot take a second shadow plan; expected all shadow versions in one plan")]
    NestedShadow,
}

/// One model's rollout. See the module docs.
///
/// The descriptive fields are public for the gateway to read (status pages,
/// counters keyed by `(stage, stage_started_ms)`). Change a rollout only
/// through its operations: they keep the audit trail and the derived routing
/// consistent. Decision bookkeeping stays private.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Unique rollout id.
    pub id: String,
    /// The model being rolled out.
    pub model: String,
    /// The routing hash salt, fixed for the rollout's life.
    pub salt: u64,
    /// The version serving before the rollout started (blue, the control);
    /// for champion-challenger, the current champion (a promotion swaps it
    /// with the promoted challenger and the rollout goes on).
    pub champion: u64,
    /// The strategy.
    pub plan: Plan,
    /// Shadows running beside the plan (a shadow plan's own shadows are in
    /// the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowPlan>,
    /// Where the rollout is in its life.
    pub state: RolloutState,
    /// The canary step index; 0 before and 1 after a blue/green switch;
    /// always 0 for other strategies.
    pub stage: usize,
    /// When the current stage began; sample counts are relative to it.
    pub stage_started_ms: Millis,
    /// When the rollout started.
    pub started_ms: Millis,
    /// When the rollout finished, if it did.
    #[serde(default)]
    pub finished_ms: Option<Millis>,
    /// An operator's canary share, holding the canary off its ladder.
    #[serde(default)]
    canary_override_percent: Option<u32>,
    #[serde(default)]
    blue_retained_until_ms: Option<Millis>,
    // Basis points and sample sizes are fixed at start and stored as
    // integers, so a restore never depends on re-parsing floats.
    #[serde(default)]
    challenger_bp: u32,
    #[serde(default)]
    shadow_targets: Vec<ShadowTarget>,
    #[serde(default)]
    ab_required_per_arm: Option<u64>,
    /// Set once the A/B readiness event was emitted, so it is emitted once.
    #[serde(default)]
    experiment_ready: bool,
    /// The latest verdict `tick` saw for this stage; reported by `waiting_for`.
    #[serde(default)]
    last_verdict: Option<StepVerdict>,
    /// Hard-trigger settings for this rollout, over the model's.
    #[serde(default, skip_serializing_if = "TriggerOverrides::is_empty")]
    pub triggers: TriggerOverrides,
}

/// One evaluation period of the champion-challenger gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvaluationPeriod {
    /// 0 for the first period after the start or the last promotion.
    pub index: u64,
    /// When the period began: the gate's sample counts from here.
    pub start_ms: Millis,
    /// The period's length (the gate's `window_secs`).
    pub length_ms: Millis,
}

impl Rollout {
    /// Validates `spec.plan` (and its side shadows) against the champion and
    /// the READY versions, and starts the rollout at stage 0.
    pub fn start(
        spec: RolloutSpec,
        ready_versions: &[u64],
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<(Rollout, Vec<AuditEvent>), RolloutError> {
        spec.plan.validate(spec.champion, ready_versions)?;
        spec.triggers.validate()?;
        if let Some(shadow) = &spec.shadow {
            if matches!(spec.plan, Plan::Shadow(_)) {
                return Err(RolloutError::NestedShadow);
            }
            shadow.validate(spec.champion, ready_versions)?;
        }
        let shadow_plan = match &spec.plan {
            Plan::Shadow(shadow) => Some(shadow),
            _ => spec.shadow.as_ref(),
        };
        let shadow_targets = shadow_plan.map_or_else(Vec::new, |s| {
            let fraction_bp = s.fraction_bp();
            s.versions.iter().map(|&version| ShadowTarget { version, fraction_bp }).collect()
        });
        let challenger_bp = match &spec.plan {
            Plan::ChampionChallenger { fraction_percent, .. } => percent_to_bp(*fraction_percent),
            _ => 0,
        };
        let rollout = Rollout {
            triggers: spec.triggers.clone(),
            ab_required_per_arm: spec.plan.required_samples_per_arm(),
            id: spec.id,
            model: spec.model,
            salt: spec.salt,
            champion: spec.champion,
            plan: spec.plan,
            shadow: spec.shadow,
            state: RolloutState::Running,
            stage: 0,
            stage_started_ms: now_ms,
            started_ms: now_ms,
            finished_ms: None,
            canary_override_percent: None,
            blue_retained_until_ms: None,
            challenger_bp,
            shadow_targets,
            experiment_ready: false,
            last_verdict: None,
        };
        let before = RoutingTable::champion_only(rollout.champion, rollout.salt).weights();
        let mut event = rollout.event(&before, now_ms, actor, Action::Started, reason);
        event.to_stage = Some(0);
        if let Some(percent) = rollout.canary_percent() {
            event = event.number("percent", f64::from(percent));
        }
        if let Some(n) = rollout.ab_required_per_arm {
            event = event.number("required_per_arm", n as f64);
        }
        Ok((rollout, vec![event]))
    }

    /// The live routing table, derived from the state. Finished rollouts
    /// route everything to the resulting champion: the promoted version, or
    /// the original champion after rollback, abort or completion.
    pub fn routing_table(&self) -> RoutingTable {
        let (salt, champion) = (self.salt, self.champion);
        match &self.state {
            RolloutState::Promoted { version } => {
                return RoutingTable::champion_only(*version, salt);
            }
            RolloutState::RolledBack { .. } | RolloutState::Aborted { .. } | RolloutState::Completed => {
                return RoutingTable::champion_only(champion, salt);
            }
            RolloutState::Running | RolloutState::Paused => {}
        }
        let table = match &self.plan {
            Plan::BlueGreen { green, .. } => {
                RoutingTable::blue_green(salt, champion, *green, self.stage >= 1)
            }
            Plan::Canary { candidate, .. } => {
                let percent = self.canary_percent().unwrap_or(0);
                RoutingTable::canary(salt, champion, *candidate, percent * 100)
            }
            Plan::Shadow(_) => RoutingTable::champion_only(champion, salt),
            Plan::AbTest { arms, .. } => {
                let arms: Vec<(String, u64, Role, u32)> = arms
                    .iter()
                    .map(|a| {
                        let role = if a.version == champion { Role::Control } else { Role::Treatment };
                        (a.name.clone(), a.version, role, a.weight)
                    })
                    .collect();
                // Validated plans always have weight; a hand-edited state
                // file without any falls back to the champion.
                RoutingTable::weighted(salt, &arms)
                    .unwrap_or_else(|_| RoutingTable::champion_only(champion, salt))
            }
            Plan::ChampionChallenger { challengers, .. } => {
                RoutingTable::champion_challenger(salt, champion, challengers, self.challenger_bp)
            }
        };
        table.with_shadows(self.shadow_targets.clone())
    }

    /// The versions the gateway must keep loaded at `now_ms`, ascending.
    ///
    /// While live: the champion and every version of the plan and its
    /// shadows, even at 0% (they may get traffic at the next step). Once
    /// finished: the resulting champion, plus blue after a blue/green
    /// promotion until its retention ends.
    pub fn versions_in_use(&self, now_ms: Millis) -> Vec<u64> {
        let mut versions = self.routing_table().versions();
        if !self.state.is_finished() {
            versions.push(self.champion);
            versions.extend(self.plan.versions(self.champion));
            versions.extend(self.shadow_targets.iter().map(|s| s.version));
        }
        if self.blue_retained_until_ms.is_some_and(|until| now_ms < until) {
            versions.push(self.champion);
        }
        versions.sort_unstable();
        versions.dedup();
        versions
    }

    /// The champion once the rollout finished, else the original champion.
    pub fn current_champion(&self) -> u64 {
        match self.state {
            RolloutState::Promoted { version } => version,
            _ => self.champion,
        }
    }

    /// The single version this rollout would promote, when there is
    /// exactly one (canary candidate, green, a lone challenger, shadow or A/B
    /// treatment); `None` when an operator must name one.
    pub fn candidate(&self) -> Option<u64> {
        match self.plan.versions(self.champion).as_slice() {
            [version] => Some(*version),
            _ => None,
        }
    }

    /// The latest safety verdict a tick saw.
    pub fn last_verdict(&self) -> Option<&StepVerdict> {
        self.last_verdict.as_ref()
    }

    /// Forgets the latest verdict (to compare what routing depends on).
    pub fn clear_verdict(&mut self) {
        self.last_verdict = None;
    }

    /// Whether automatic decisions are paused.
    pub fn is_paused(&self) -> bool {
        self.state == RolloutState::Paused
    }

    /// After a blue/green switch: until when blue stays loaded.
    pub fn blue_retained_until_ms(&self) -> Option<Millis> {
        self.blue_retained_until_ms
    }

    /// A live canary's current share in percent (an operator override wins
    /// over the step); `None` for other strategies and finished rollouts.
    pub fn canary_percent(&self) -> Option<u32> {
        match &self.plan {
            Plan::Canary { steps, .. } if !self.state.is_finished() => Some(
                self.canary_override_percent
                    .unwrap_or_else(|| steps.get(self.stage).map_or(0, |s| s.percent)),
            ),
            _ => None,
        }
    }

    /// The operator's canary override, if one holds the canary.
    pub fn canary_override_percent(&self) -> Option<u32> {
        self.canary_override_percent
    }

    /// An audit event for `action`, with the weights before and after when
    /// the decision changed the split.
    fn event(
        &self,
        before: &[ArmWeight],
        at_ms: Millis,
        actor: &Actor,
        action: Action,
        reason: Option<String>,
    ) -> AuditEvent {
        let after = self.routing_table().weights();
        let changed = before != after.as_slice();
        AuditEvent {
            at_ms,
            rollout_id: self.id.clone(),
            model: self.model.clone(),
            actor: actor.clone(),
            action,
            version: None,
            from_stage: None,
            to_stage: None,
            weights_before: changed.then(|| before.to_vec()),
            weights_after: changed.then_some(after),
            reason,
            trigger: None,
            numbers: BTreeMap::new(),
            decision: None,
        }
    }

    fn ensure_live(&self, operation: &'static str) -> Result<(), RolloutError> {
        if self.state.is_finished() {
            Err(RolloutError::Finished { id: self.id.clone(), operation, state: self.state.to_string() })
        } else {
            Ok(())
        }
    }

    /// The champion-challenger automatic gate's evaluation period at
    /// `now_ms`: periods of the gate's `window_secs` follow each other from
    /// the last promotion (or the start); each is a new test on a new
    /// sample. `None` for other plans and the manual gate.
    pub fn evaluation_period(&self, now_ms: Millis) -> Option<EvaluationPeriod> {
        let Plan::ChampionChallenger { gate: crate::PromotionGate::Automatic { window_secs, .. }, .. } =
            &self.plan
        else {
            return None;
        };
        let length_ms = window_secs.saturating_mul(1000).max(1);
        let index = now_ms.saturating_sub(self.stage_started_ms) / length_ms;
        let start_ms = self.stage_started_ms.saturating_add(index.saturating_mul(length_ms));
        Some(EvaluationPeriod { index, start_ms, length_ms })
    }

    fn finish(&mut self, state: RolloutState, now_ms: Millis) {
        self.state = state;
        self.finished_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tick_tests;
