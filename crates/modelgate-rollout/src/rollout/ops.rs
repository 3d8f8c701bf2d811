//! Operator commands. Each one either changes the rollout and returns its
//! audit events, or changes nothing and says why not.

use std::collections::BTreeMap;

use super::{Rollout, RolloutError, RolloutState};
use crate::Millis;
use crate::audit::{Action, Actor, AuditEvent};
use crate::plan::{Plan, ShadowPlan};
use crate::routing::ShadowTarget;

impl Rollout {
    /// Moves to the next stage: a canary's next step (reaching 100% promotes
    /// the candidate), or a blue/green [`Self::switch`]. Works while paused:
    /// pausing stops automatic decisions, not operators.
    pub fn advance(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("advance")?;
        match self.plan {
            Plan::Canary { .. } => Ok(self.advance_canary(now_ms, actor, reason, BTreeMap::new())),
            Plan::BlueGreen { .. } => self.switch(now_ms, actor, reason),
            _ => Err(self.not_applicable("advance")),
        }
    }

    /// Blue/green: moves all traffic to green at once. Blue stays loaded for
    /// the plan's retention so rollback remains instant.
    pub fn switch(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("switch")?;
        let Plan::BlueGreen { green, retention_secs } = self.plan else {
            return Err(self.not_applicable("switch"));
        };
        if self.stage >= 1 {
            return Err(RolloutError::AlreadySwitched { id: self.id.clone(), green });
        }
        let before = self.routing_table().weights();
        self.stage = 1;
        self.stage_started_ms = now_ms;
        self.last_verdict = None;
        self.blue_retained_until_ms = Some(now_ms.saturating_add(retention_secs.saturating_mul(1000)));
        let mut event = self.event(&before, now_ms, actor, Action::Switched, reason);
        event.version = Some(green);
        event.from_stage = Some(0);
        event.to_stage = Some(1);
        Ok(vec![event.number("retention_secs", retention_secs as f64)])
    }

    /// Stops automatic decisions; the traffic split stays as it is.
    pub fn pause(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("pause")?;
        if self.is_paused() {
            return Err(RolloutError::AlreadyPaused { id: self.id.clone() });
        }
        let before = self.routing_table().weights();
        self.state = RolloutState::Paused;
        Ok(vec![self.event(&before, now_ms, actor, Action::Paused, reason)])
    }

    /// Turns automatic decisions back on. The stage clock is not reset:
    /// traffic kept flowing at the same split while paused.
    pub fn resume(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("resume")?;
        if !self.is_paused() {
            return Err(RolloutError::NotPaused { id: self.id.clone() });
        }
        let before = self.routing_table().weights();
        self.state = RolloutState::Running;
        Ok(vec![self.event(&before, now_ms, actor, Action::Resumed, reason)])
    }

    /// An operator stops the rollout: candidates drop to 0% and the champion
    /// takes all traffic (for blue/green, blue does again).
    pub fn abort(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("abort")?;
        let before = self.routing_table().weights();
        let why = reason.clone().unwrap_or_else(|| format!("aborted by {}", actor.who));
        self.finish(RolloutState::Aborted { reason: why }, now_ms);
        let mut event = self.event(&before, now_ms, actor, Action::Aborted, reason);
        event.from_stage = Some(self.stage);
        Ok(vec![event])
    }

    /// The champion takes all traffic back at once (for blue/green after the
    /// switch: back to blue). This is the one-command rollback.
    pub fn rollback(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("roll back")?;
        let why = reason.clone().unwrap_or_else(|| format!("rolled back by {}", actor.who));
        Ok(vec![self.roll_back(now_ms, actor, why, reason, None, BTreeMap::new())])
    }

    /// A hard trigger fired: roll back as the system, recording the trigger
    /// and the numbers that fired it (e.g. `p99_ms`, `sla_ms`).
    pub fn rollback_triggered(
        &mut self,
        now_ms: Millis,
        trigger: &str,
        reason: String,
        numbers: BTreeMap<String, f64>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("roll back")?;
        let event = self.roll_back(
            now_ms,
            &Actor::system(),
            reason.clone(),
            Some(reason),
            Some(trigger.to_owned()),
            numbers,
        );
        Ok(vec![event])
    }

    /// Makes `version` the champion and finishes the rollout. Allowed for a
    /// canary's candidate (skipping remaining steps), blue/green's green
    /// (switching if not yet switched), an A/B arm, or a shadowed version.
    /// A champion-challenger challenger becomes the champion without ending
    /// the rollout: the old champion takes its place on the challenger
    /// slice ([`Self::promote_challenger`]).
    pub fn promote(
        &mut self,
        version: u64,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("promote")?;
        let candidates = match &self.plan {
            Plan::AbTest { arms, .. } => arms.iter().map(|a| a.version).collect(),
            plan => plan.versions(self.champion),
        };
        if !candidates.contains(&version) {
            return Err(RolloutError::NotACandidate { id: self.id.clone(), version, candidates });
        }
        if matches!(self.plan, Plan::ChampionChallenger { .. }) {
            return Ok(vec![self.promote_challenger(version, now_ms, actor, reason, BTreeMap::new())]);
        }
        Ok(vec![self.promote_to(version, now_ms, actor, reason, BTreeMap::new())])
    }

    /// Champion-challenger: `version` becomes the champion and the old
    /// champion a challenger in its place, on the same slice (the slice is
    /// permanent; complete or abort ends it). The counting epoch and the
    /// gate's evaluation periods start again from `now_ms`.
    pub(super) fn promote_challenger(
        &mut self,
        version: u64,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
        numbers: BTreeMap<String, f64>,
    ) -> AuditEvent {
        let before = self.routing_table().weights();
        let old = self.champion;
        if let Plan::ChampionChallenger { challengers, .. } = &mut self.plan {
            for c in challengers.iter_mut().filter(|c| **c == version) {
                *c = old;
            }
        }
        self.champion = version;
        self.stage_started_ms = now_ms;
        self.last_verdict = None;
        let slice = format!(
            "v{version} is the champion; v{old} stays on the challenger slice; a new evaluation period starts"
        );
        let reason = Some(match reason {
            Some(r) => format!("{r}; {slice}"),
            None => slice,
        });
        let mut event = self.event(&before, now_ms, actor, Action::Promoted, reason);
        event.version = Some(version);
        event.numbers = numbers;
        event.number("previous_champion", old as f64)
    }

    /// Ends a shadow, A/B or champion-challenger run without changing the
    /// champion. Canary and blue/green end by promote, rollback or abort.
    pub fn complete(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("complete")?;
        if matches!(self.plan, Plan::Canary { .. } | Plan::BlueGreen { .. }) {
            return Err(self.not_applicable("complete"));
        }
        let before = self.routing_table().weights();
        self.finish(RolloutState::Completed, now_ms);
        Ok(vec![self.event(&before, now_ms, actor, Action::Completed, reason)])
    }

    /// Canary: an operator sets the candidate's share (0 to 100) directly,
    /// keeping the monotone layout. The override holds the canary: automatic
    /// advance stops until an operator advances, which moves to the first
    /// step above the override.
    pub fn set_weights(
        &mut self,
        candidate_percent: u32,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("set weights of")?;
        if !matches!(self.plan, Plan::Canary { .. }) {
            return Err(self.not_applicable("set weights of"));
        }
        if candidate_percent > 100 {
            return Err(RolloutError::PercentOutOfRange { percent: candidate_percent });
        }
        let was = self.canary_percent().unwrap_or(0);
        let before = self.routing_table().weights();
        self.canary_override_percent = Some(candidate_percent);
        // New weights start a new counting epoch, as a new stage does: the
        // step's samples and duration, and the sample-ratio check, count
        // only what was routed under these weights.
        self.stage_started_ms = now_ms;
        let event = self
            .event(&before, now_ms, actor, Action::WeightsSet, reason)
            .number("percent_before", f64::from(was))
            .number("percent", f64::from(candidate_percent));
        Ok(vec![event])
    }

    /// Starts shadows beside this rollout's traffic plan ("shadow runs beside
    /// any of them"), replacing any side shadow. A shadow plan cannot take
    /// another; start one shadow plan with every version instead.
    pub fn attach_shadow(
        &mut self,
        shadow: ShadowPlan,
        ready_versions: &[u64],
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Vec<AuditEvent>, RolloutError> {
        self.ensure_live("attach a shadow to")?;
        if matches!(self.plan, Plan::Shadow(_)) {
            return Err(RolloutError::NestedShadow);
        }
        shadow.validate(self.champion, ready_versions)?;
        let before = self.routing_table().weights();
        let fraction_bp = shadow.fraction_bp();
        self.shadow_targets =
            shadow.versions.iter().map(|&version| ShadowTarget { version, fraction_bp }).collect();
        let first = shadow.versions.first().copied();
        self.shadow = Some(shadow);
        let mut event = self
            .event(&before, now_ms, actor, Action::Started, reason)
            .number("shadow_fraction_bp", f64::from(fraction_bp));
        event.version = first;
        Ok(vec![event])
    }

    /// A soft trigger fired: an alert event for a person to review. Changes
    /// nothing.
    pub fn alert(
        &self,
        now_ms: Millis,
        trigger: &str,
        reason: String,
        numbers: BTreeMap<String, f64>,
    ) -> AuditEvent {
        let before = self.routing_table().weights();
        let mut event = self.event(&before, now_ms, &Actor::system(), Action::Alert, Some(reason));
        event.trigger = Some(trigger.to_owned());
        event.numbers = numbers;
        event
    }

    /// The canary's next step above its current share; into the 100% step
    /// (or past an override of 100) it promotes the candidate.
    pub(super) fn advance_canary(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
        numbers: BTreeMap<String, f64>,
    ) -> Vec<AuditEvent> {
        let Plan::Canary { candidate, steps, .. } = &self.plan else {
            return Vec::new();
        };
        let candidate = *candidate;
        let current = self.canary_percent().unwrap_or(0);
        let from = self.stage;
        let next = steps
            .iter()
            .enumerate()
            .skip(from + 1)
            .find(|(_, s)| s.percent > current)
            .map(|(i, s)| (i, s.percent));
        let last = steps.len().saturating_sub(1);
        match next {
            Some((to, percent)) if percent < 100 => {
                let before = self.routing_table().weights();
                self.stage = to;
                self.stage_started_ms = now_ms;
                self.canary_override_percent = None;
                self.last_verdict = None;
                let mut event = self.event(&before, now_ms, actor, Action::Advanced, reason);
                event.from_stage = Some(from);
                event.to_stage = Some(to);
                event.numbers = numbers;
                vec![event.number("percent", f64::from(percent))]
            }
            _ => {
                self.stage = last;
                let mut event = self.promote_to(candidate, now_ms, actor, reason, numbers);
                event.from_stage = Some(from);
                event.to_stage = Some(last);
                vec![event]
            }
        }
    }

    pub(super) fn promote_to(
        &mut self,
        version: u64,
        now_ms: Millis,
        actor: &Actor,
        reason: Option<String>,
        numbers: BTreeMap<String, f64>,
    ) -> AuditEvent {
        let before = self.routing_table().weights();
        if let Plan::BlueGreen { retention_secs, .. } = self.plan
            && self.blue_retained_until_ms.is_none()
        {
            // Promoting before the switch is a switch too: keep blue.
            self.blue_retained_until_ms = Some(now_ms.saturating_add(retention_secs.saturating_mul(1000)));
        }
        self.canary_override_percent = None;
        self.finish(RolloutState::Promoted { version }, now_ms);
        let mut event = self.event(&before, now_ms, actor, Action::Promoted, reason);
        event.version = Some(version);
        event.numbers = numbers;
        event
    }

    fn roll_back(
        &mut self,
        now_ms: Millis,
        actor: &Actor,
        why: String,
        reason: Option<String>,
        trigger: Option<String>,
        numbers: BTreeMap<String, f64>,
    ) -> AuditEvent {
        let before = self.routing_table().weights();
        self.finish(RolloutState::RolledBack { reason: why, trigger: trigger.clone() }, now_ms);
        let mut event = self.event(&before, now_ms, actor, Action::RolledBack, reason);
        event.from_stage = Some(self.stage);
        event.trigger = trigger;
        event.numbers = numbers;
        event
    }

    fn not_applicable(&self, operation: &'static str) -> RolloutError {
        let hint = match self.plan {
            Plan::BlueGreen { .. } => "use switch, promote, rollback or abort",
            Plan::Canary { .. } => "use advance, set weights, promote, rollback or abort",
            Plan::Shadow(_) => "shadows take no live traffic; promote a version, complete or abort",
            Plan::AbTest { .. } => "an A/B test keeps a fixed split; promote an arm, complete or abort",
            Plan::ChampionChallenger { .. } => {
                "challengers keep a fixed slice; promote a challenger, complete or abort"
            }
        };
        RolloutError::NotApplicable { operation, strategy: self.plan.strategy(), hint }
    }
}
