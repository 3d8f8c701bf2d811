//! What the controller shows: a rollout with its counts (GetRollout), the
//! analysis behind the automatic decisions (GetAnalysis), the audit log and
//! a rollout's alerts.

use std::collections::BTreeMap;

use modelgate_rollout::{Action, ArmObservation, AuditEvent, Millis, StepVerdict};

use crate::control::{AnalysisView, ControlError, Controller, RolloutView, analysis, now_ms};

impl Controller {
    /// The rollout of `model`, if any, with this stage's counts and each
    /// arm's numbers (live rollouts as of now, not as of the last tick).
    pub async fn get(&self, model: &str) -> Result<RolloutView, ControlError> {
        let others = self.fleet_reports().await;
        let mut inner = self.inner.lock().await;
        if !self.gateway.table().serves(model) && !inner.state.rollouts.contains_key(model) {
            return Err(ControlError::ModelNotFound(model.to_string()));
        }
        let champion = self.champion_of(&inner.state, model).unwrap_or(0);
        let rollout = inner.state.rollouts.get(model).cloned();
        let (counts, arms) = match &rollout {
            Some(r) if !r.state.is_finished() => {
                let c = self.counted(&mut inner, model, r, others.as_ref());
                (c.counts, c.arms)
            }
            _ => (inner.state.counts.get(model).cloned().unwrap_or_default(), Vec::new()),
        };
        Ok(RolloutView { rollout, counts, arms, champion })
    }

    /// The audit log, oldest first, filtered.
    pub async fn events(
        &self,
        model: Option<&str>,
        since_ms: Millis,
        until_ms: Millis,
    ) -> Result<Vec<(AuditEvent, String)>, ControlError> {
        let mut out = Vec::new();
        for line in self.store.read_events_since(since_ms).await? {
            let Ok(e) = serde_json::from_str::<AuditEvent>(&line) else { continue };
            if model.is_some_and(|m| m != e.model)
                || e.at_ms < since_ms
                || (until_ms > 0 && e.at_ms > until_ms)
            {
                continue;
            }
            out.push((e, line));
        }
        Ok(out)
    }

    /// The ALERT events of rollout `rollout_id`, which started at
    /// `started_ms`, oldest first.
    pub async fn alerts(&self, model: &str, rollout_id: &str, started_ms: Millis) -> Vec<AuditEvent> {
        self.events(Some(model), started_ms, 0)
            .await
            .map(|events| {
                events
                    .into_iter()
                    .map(|(e, _)| e)
                    .filter(|e| e.rollout_id == rollout_id && e.action == Action::Alert)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything the automatic decisions look at for `model`, as of now.
    pub async fn analysis(&self, model: &str) -> Result<AnalysisView, ControlError> {
        // In a fleet, any replica shows the whole fleet's numbers.
        let others = self.fleet_reports().await;
        let mut inner = self.inner.lock().await;
        if !self.gateway.table().serves(model) && !inner.state.rollouts.contains_key(model) {
            return Err(ControlError::ModelNotFound(model.to_string()));
        }
        let champion = self.champion_of(&inner.state, model).unwrap_or(0);
        let triggers = self.trigger_config(model, inner.state.rollouts.get(model));
        let settings = self.gateway.table().get(model).map(|r| analysis::Settings::of(r.config()));
        let Some(rollout) = inner.state.rollouts.get(model).cloned() else {
            return Ok(AnalysisView {
                rollout: None,
                champion,
                counts: Default::default(),
                arms: Vec::new(),
                settings,
                triggers,
                trigger_states: BTreeMap::new(),
                verdict: StepVerdict::Waiting("no rollout".into()),
                metrics: Vec::new(),
                psi: BTreeMap::new(),
                importance_shift: BTreeMap::new(),
                observation: ArmObservation::new(),
            });
        };
        let live = !rollout.state.is_finished();
        let (counts, arms, verdict, psi, trigger_states) = if live {
            let c = self.counted(&mut inner, model, &rollout, others.as_ref());
            let (verdict, _) = self.verdict(model, &rollout, &c.arms);
            let psi = self.prediction_shifts(model, &rollout).into_iter().map(|(v, s)| (v, s.psi)).collect();
            // The detectors judge this replica's own traffic, as of its last tick.
            let fresh = crate::control::detectors::RolloutDetectors::default();
            let detectors = inner.detectors.get(&rollout.id).unwrap_or(&fresh);
            let trigger_states = detectors.states(&triggers, rollout.champion, &c.local_arms);
            (c.counts, c.arms, verdict, psi, trigger_states)
        } else {
            let counts = inner.state.counts.get(model).cloned().unwrap_or_default();
            let verdict = rollout.last_verdict().cloned().unwrap_or(StepVerdict::Waiting("finished".into()));
            (counts, Vec::new(), verdict, BTreeMap::new(), BTreeMap::new())
        };
        let now = now_ms();
        let metrics = self
            .gateway
            .table()
            .get(model)
            .and_then(|r| analysis::metric_plan(&rollout, r.config(), now))
            .map(|plan| analysis::metric_rows(self.gateway.outcomes(), model, &plan, now))
            .unwrap_or_default();
        let observation = self.observation(model, &rollout, &counts);
        let importance_shift = {
            let checks = self.importance.lock().unwrap_or_else(|p| p.into_inner());
            checks.found(&rollout.id).into_iter().map(|(v, f)| (v, f.shift)).collect()
        };
        Ok(AnalysisView {
            rollout: Some(rollout),
            champion,
            counts,
            arms,
            settings,
            triggers,
            trigger_states,
            verdict,
            metrics,
            psi,
            importance_shift,
            observation,
        })
    }
}
