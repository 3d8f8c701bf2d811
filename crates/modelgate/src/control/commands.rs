//! Operator commands (start a plan, advance, pause, roll back, …) and the
//! one commit path every change takes, automatic ones included.

use modelgate_registry::VersionState;
use modelgate_rollout::{Actor, AuditEvent, Millis, Plan, Rollout, RolloutSpec};

use crate::control::counts::StageCounts;
use crate::control::{ControlError, Controller, Inner, Op, analysis, now_ms, plan_refused, state_name};

impl Controller {
    fn ready_versions(&self, model: &str) -> Result<Vec<u64>, ControlError> {
        let table = self.gateway.table();
        let m = table.get(model).ok_or_else(|| ControlError::ModelNotFound(model.to_string()))?;
        Ok(m.ready().map(|r| r.version).collect())
    }

    /// Candidates must take the champion's inputs unchanged.
    fn check_signatures(&self, model: &str, champion: u64, versions: &[u64]) -> Result<(), ControlError> {
        let table = self.gateway.table();
        let m = table.get(model).ok_or_else(|| ControlError::ModelNotFound(model.to_string()))?;
        let sig = |v: u64| match m.versions.get(&v).map(|e| &e.state) {
            Some(VersionState::Ready(r)) => Some(r.model().signature().clone()),
            _ => None,
        };
        let Some(base) = sig(champion) else {
            return Err(ControlError::Precondition(format!("champion version {champion} is not READY")));
        };
        for &v in versions {
            if v == champion {
                continue;
            }
            let Some(s) = sig(v) else {
                return Err(ControlError::Precondition(format!(
                    "version {v} of model '{model}' is not READY"
                )));
            };
            if !base.inputs_compatible_with(&s) {
                return Err(ControlError::Precondition(format!(
                    "version {v} of model '{model}' does not take the champion's (v{champion}) inputs"
                )));
            }
        }
        Ok(())
    }

    /// Starts a plan for `model`.
    pub async fn start(
        &self,
        model: &str,
        plan: Plan,
        triggers: modelgate_rollout::TriggerOverrides,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Rollout, ControlError> {
        let mut inner = self.inner.lock().await;
        let ready = self.ready_versions(model)?;
        let champion = self
            .champion_of(&inner.state, model)
            .ok_or_else(|| ControlError::Precondition(format!("model '{model}' has no READY champion")))?;
        plan.validate(champion, &ready).map_err(plan_refused)?;
        self.check_signatures(model, champion, &plan.versions(champion))?;
        // One traffic-splitting plan at a time; a shadow runs beside any of them.
        let mut side_shadow = None;
        let mut events = Vec::new();
        let mut next = inner.state.clone();
        if let Some(live) = inner.state.live(model) {
            let busy = || ControlError::Busy {
                model: model.to_string(),
                strategy: live.plan.strategy().to_string(),
                id: live.id.clone(),
            };
            match (&live.plan, &plan) {
                (Plan::Shadow(_), Plan::Shadow(_)) => return Err(busy()),
                (_, Plan::Shadow(shadow)) => {
                    let mut r = live.clone();
                    let ev = r
                        .attach_shadow(shadow.clone(), &ready, now_ms(), actor, reason)
                        .map_err(plan_refused)?;
                    self.commit(&mut inner, model, r, ev).await?;
                    return Ok(inner.state.rollouts[model].clone());
                }
                (Plan::Shadow(shadow), _) => {
                    // The new traffic plan takes the running shadow along.
                    let mut old = live.clone();
                    let why = format!("its shadow continues beside the new {} rollout", plan.strategy());
                    events.extend(
                        old.complete(now_ms(), actor, Some(why))
                            .map_err(|e| ControlError::Precondition(e.to_string()))?,
                    );
                    side_shadow = Some(shadow.clone());
                    next.rollouts.insert(model.to_string(), old);
                }
                _ => return Err(busy()),
            }
        }
        let now = now_ms();
        let salt: u64 = uuid::Uuid::new_v4().as_u64_pair().0;
        let id = format!("{model}-{now}");
        let (rollout, started) = Rollout::start(
            RolloutSpec { id, model: model.to_string(), salt, champion, plan, shadow: side_shadow, triggers },
            &ready,
            now,
            actor,
            reason,
        )
        .map_err(plan_refused)?;
        events.extend(started);
        next.rollouts.insert(model.to_string(), rollout.clone());
        next.counts.insert(model.to_string(), StageCounts::epoch_of(&rollout));
        self.persist(&mut inner, &next, &events).await?;
        inner.state = next;
        inner.baselines.forget(model);
        self.publish(&inner.state, model);
        Ok(rollout)
    }

    /// Applies an operator command.
    pub async fn apply(
        &self,
        model: &str,
        op: Op,
        actor: &Actor,
        reason: Option<String>,
        expected_stage: Option<usize>,
    ) -> Result<Rollout, ControlError> {
        let mut inner = self.inner.lock().await;
        let mut rollout = inner
            .state
            .rollouts
            .get(model)
            .cloned()
            .ok_or_else(|| ControlError::NoRollout(model.to_string()))?;
        if let Some(want) = expected_stage
            && (rollout.stage != want || rollout.state.is_finished())
        {
            return Err(ControlError::Conflict(format!(
                "rollout {} of model '{model}' is {} at stage {}, not stage {} (stages numbered from 1): it changed since you looked; nothing was changed",
                rollout.id,
                state_name(&rollout.state),
                rollout.stage + 1,
                want + 1
            )));
        }
        let now = now_ms();
        let result = match op {
            Op::Advance => rollout.advance(now, actor, reason),
            Op::Pause => rollout.pause(now, actor, reason),
            Op::Resume => rollout.resume(now, actor, reason),
            Op::Abort => rollout.abort(now, actor, reason),
            Op::Rollback => rollout.rollback(now, actor, reason),
            Op::Promote(v) => {
                let v = v.or_else(|| rollout.candidate()).ok_or_else(|| {
                    ControlError::Invalid(
                        "this rollout has several candidates; name the version to promote".into(),
                    )
                })?;
                rollout.promote(v, now, actor, reason)
            }
            Op::SetWeights(p) => rollout.set_weights(p, now, actor, reason),
        };
        let events = result.map_err(|e| ControlError::Precondition(e.to_string()))?;
        self.commit(&mut inner, model, rollout, events).await?;
        Ok(inner.state.rollouts[model].clone())
    }

    /// The one path of a change to a rollout: its events get the numbers
    /// the system had, a new counting epoch starts when its stage moved, and
    /// the state and events are written before the routing is published.
    pub(super) async fn commit(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: Rollout,
        mut events: Vec<AuditEvent>,
    ) -> Result<(), ControlError> {
        // Every event carries the numbers the system had when it was made
        // (an operator's pause, rollback or promotion, blue's retention
        // ending), so a post-incident review can replay it: each arm's
        // window and running totals, as routed before the change.
        if events.iter().any(|e| e.numbers.is_empty()) {
            let shown = inner
                .state
                .rollouts
                .get(model)
                .filter(|r| r.id == rollout.id)
                .cloned()
                .unwrap_or_else(|| rollout.clone());
            let counts = inner.state.counts.get(model).cloned().unwrap_or_default();
            let arms = self.arm_numbers(&mut inner.running, model, &shown, &counts);
            let numbers = analysis::event_numbers(&arms);
            for e in events.iter_mut().filter(|e| e.numbers.is_empty()) {
                e.numbers = numbers.clone();
            }
        }
        let mut next = inner.state.clone();
        if rollout.state.is_finished() {
            next.champions.insert(model.to_string(), rollout.current_champion());
        }
        let counts = next.counts.entry(model.to_string()).or_default();
        if !counts.same_epoch(&rollout) {
            *counts = StageCounts::epoch_of(&rollout);
            inner.baselines.forget(model);
        }
        next.rollouts.insert(model.to_string(), rollout);
        self.persist(inner, &next, &events).await?;
        inner.state = next;
        self.publish(&inner.state, model);
        Ok(())
    }

    /// Retires blue once a blue/green rollout no longer needs it.
    pub(super) fn retire_unused(&self, inner: &mut Inner, model: &str, now: Millis) -> bool {
        let Some(r) = inner.state.rollouts.get(model) else { return false };
        let Plan::BlueGreen { .. } = r.plan else { return false };
        let blue = r.champion;
        if r.versions_in_use(now).contains(&blue) || r.current_champion() == blue {
            return false;
        }
        let retired = inner.state.retired.entry(model.to_string()).or_default();
        if retired.contains(&blue) {
            return false;
        }
        retired.push(blue);
        match self.retirer.get() {
            Some(retire) => {
                tracing::info!(model, version = blue, "blue/green retention over; unloading blue");
                retire(model, blue);
            }
            None => tracing::info!(
                model,
                version = blue,
                "blue/green retention over; blue stays loaded (repository watch is off)"
            ),
        }
        true
    }
}
