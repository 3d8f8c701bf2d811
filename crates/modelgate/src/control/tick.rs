//! The controller tick, as named steps: count → judge → alert → decide →
//! persist → publish. The judging and deciding are pure (`judge`,
//! `alerts`); this file gathers their snapshots and carries out what they
//! return.
//!
//! In a fleet every replica counts what it served and publishes it; any
//! replica rolls back on a hard trigger its own traffic fires; the leader
//! alone takes the decisions that must happen once (advance, promote,
//! complete, alerts), on the counts of the whole fleet.

use modelgate_rollout::{AuditEvent, Regression, Rollout, StepVerdict};

use crate::control::alerts::{self, Alert};
use crate::control::counts::StageCounts;
use crate::control::detectors::RolloutDetectors;
use crate::control::fleet::{ArmReport, ReplicaReport, Reports};
use crate::control::judge::{self, Authority, Decided, Decision, Judged};
use crate::control::{
    ControlError, Controller, Counted, Inner, PendingRollback, analysis, compared_versions, importance,
    now_ms, state,
};
use crate::store::StoreError;

impl Controller {
    /// One controller pass over every live rollout.
    pub async fn tick(&self) {
        let leader = self.fleet.as_ref().is_none_or(|f| f.is_leader());
        // Network first, without the lock.
        let others = if leader { self.fleet_reports().await } else { None };
        // A leader that cannot see the fleet's counts does not decide on its own.
        let leader = leader && (self.fleet.is_none() || others.is_some());
        let mut inner = self.inner.lock().await;
        let (mut report, mut dirty, mut alert_events) = (ReplicaReport::default(), false, Vec::new());
        for model in inner.state.live_models() {
            let Some(mut rollout) = inner.state.rollouts.get(&model).cloned() else { continue };
            let counted = self.count(&mut inner, &model, &rollout, others.as_ref(), &mut report);
            let judged = self.judge(&model, &rollout, &counted, inner.detectors.of(&rollout.id));
            let alerting = leader && judged.fired.is_none();
            let found = if alerting { self.alert(&mut inner, &rollout, &judged.verdict) } else { Vec::new() };
            let decided =
                judge::decide(&mut rollout, judged, &found, self.authority(&model, leader), now_ms());
            alert_events.extend(decided.alert_events.iter().cloned());
            dirty |= self.carry_out(&mut inner, &model, rollout, counted.counts, decided).await;
        }
        self.end_tick(inner, others, leader, report, alert_events, dirty).await;
    }

    /// Count: this epoch's counts and each arm's numbers, the fleet's
    /// added; this replica's own go into its report.
    fn count(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: &Rollout,
        others: Option<&Reports>,
        report: &mut ReplicaReport,
    ) -> Counted {
        let counted = self.counted(inner, model, rollout, others);
        if self.fleet.is_some() {
            report.counts.insert(model.to_string(), counted.local.clone());
            report.arms.insert(model.to_string(), ArmReport::of(&rollout.id, &counted.local_arms));
        }
        counted
    }

    /// Judge: the hard triggers' detectors fed with this replica's own
    /// traffic, the step's safety verdict, and what the rollout logic
    /// observes.
    fn judge(
        &self,
        model: &str,
        rollout: &Rollout,
        counted: &Counted,
        detectors: &mut RolloutDetectors,
    ) -> Judged {
        let cfg = self.trigger_config(model, Some(rollout));
        let (verdict, evidence) = self.verdict(model, rollout, &counted.arms);
        Judged {
            fired: judge::hard_trigger(detectors, &cfg, rollout.champion, &counted.local_arms, now_ms()),
            verdict,
            evidence,
            ab_verdict: self.ab_verdict(model, rollout),
            observation: self.observation(model, rollout, &counted.counts),
        }
    }

    /// Alert: the soft triggers' findings (prediction shift, feature
    /// importance, regressions in the verdict and in the business metric)
    /// not raised yet for this rollout.
    fn alert(&self, inner: &mut Inner, rollout: &Rollout, verdict: &StepVerdict) -> Vec<Alert> {
        let model = rollout.model.as_str();
        let table = self.gateway.table();
        let Some(route) = table.get(model) else { return Vec::new() };
        let now = now_ms();
        let compared = compared_versions(rollout);
        let shifts = self.prediction_shifts(model, rollout);
        importance::start_check(&self.importance, &self.gateway, rollout, compared.clone(), now);
        let mut findings = self.importance.lock().unwrap_or_else(|p| p.into_inner()).found(&rollout.id);
        findings.retain(|v, _| compared.contains(v));
        {
            let mut scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
            scrape.psi.extend(shifts.iter().map(|(v, s)| ((model.to_string(), *v), s.psi)));
            scrape.importance_shift.extend(findings.iter().map(|(v, f)| ((model.to_string(), *v), f.shift)));
        }
        let mut regressions: Vec<Regression> = analysis::metric_plan(rollout, route.config(), now)
            .map(|plan| analysis::metric_rows(self.gateway.outcomes(), model, &plan, now))
            .unwrap_or_default()
            .iter()
            .filter_map(analysis::kpi_regression)
            .collect();
        if let StepVerdict::Unhealthy(found) = verdict {
            regressions.extend(found.iter().cloned());
        }
        let (warn, alert) = route.config().triggers.importance_levels();
        let mut found = alerts::psi_alerts(&shifts);
        found.extend(alerts::importance_alerts(&findings, warn, alert));
        found.extend(alerts::regression_alerts(&regressions));
        inner.ledger.admit(&rollout.id, found)
    }

    /// For an A/B test, the test behind its verdict on the plan's metric.
    fn ab_verdict(&self, model: &str, rollout: &Rollout) -> Option<modelgate_rollout::DecidingTest> {
        if !matches!(rollout.plan, modelgate_rollout::Plan::AbTest { .. }) {
            return None;
        }
        let table = self.gateway.table();
        let now = now_ms();
        let plan = analysis::metric_plan(rollout, table.get(model)?.config(), now)?;
        analysis::ab_verdict_test(&analysis::metric_rows(self.gateway.outcomes(), model, &plan, now))
    }

    /// Who decides what on this replica, and the model's `pause_on_alert`.
    fn authority(&self, model: &str, leader: bool) -> Authority<'_> {
        let pause_on_alert =
            self.gateway.table().get(model).is_some_and(|r| r.config().triggers.pause_on_alert);
        Authority { leader, replica: self.fleet.as_ref().map(|f| f.replica()), pause_on_alert }
    }

    /// Persist and publish what was decided about one rollout. Returns
    /// whether the state changed without being written (stage counts, an
    /// alert's pause), for the end of the tick to save.
    async fn carry_out(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: Rollout,
        counts: StageCounts,
        decided: Decided,
    ) -> bool {
        let changed_counts = inner
            .state
            .counts
            .get(model)
            .is_none_or(|c| c.samples != counts.samples || c.errors != counts.errors);
        inner.state.counts.insert(model.to_string(), counts);
        match decided.decision {
            Decision::Rollback(events) => {
                self.roll_back(inner, model, rollout, events).await;
                false
            }
            Decision::Commit(events) => {
                for e in &events {
                    tracing::info!(model = %model, action = ?e.action, reason = ?e.reason, "rollout decision");
                }
                if let Err(e) = self.commit(inner, model, rollout, events).await {
                    tracing::error!(model = %model, error = %e, "cannot persist a rollout decision; routing unchanged");
                }
                false
            }
            Decision::Keep => {
                // The verdict is what GetRollout's "waiting for" reports. Its
                // numbers change every tick, so it is kept in memory and
                // written with the next snapshot rather than on its own.
                let stored = inner.state.rollouts.get(model);
                if decided.paused || stored.is_some_and(|s| s.last_verdict() != rollout.last_verdict()) {
                    inner.state.rollouts.insert(model.to_string(), rollout);
                }
                if decided.paused {
                    self.publish(&inner.state, model);
                }
                changed_counts || decided.paused
            }
            // Not this replica's to take: the leader decides once.
            Decision::NotOurs => changed_counts,
        }
    }

    /// An automatic rollback. In a fleet with etcd unreachable: fail static,
    /// but safe — roll back here now and write it back when etcd returns.
    async fn roll_back(&self, inner: &mut Inner, model: &str, rollout: Rollout, events: Vec<AuditEvent>) {
        let pending =
            PendingRollback { model: model.to_string(), rollout: rollout.clone(), events: events.clone() };
        match self.commit(inner, model, rollout, events).await {
            Ok(()) => {}
            Err(ControlError::Store(StoreError::Unavailable(e))) if self.fleet.is_some() => {
                tracing::warn!(model = %model, error = %e, "etcd unreachable: rolling back on this replica only until it returns");
                inner.state.champions.insert(model.to_string(), pending.rollout.current_champion());
                inner.state.rollouts.insert(model.to_string(), pending.rollout.clone());
                self.count_events(&inner.state, &pending.events);
                self.publish(&inner.state, model);
                inner.pending.push(pending);
                self.pending_count.store(inner.pending.len(), std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::error!(model = %model, error = %e, "cannot persist an automatic rollback"),
        }
    }

    /// After every rollout: retire blue where its retention ended, append
    /// the alerts, save stage counts (single server), forget dead processes'
    /// reports (leader) and publish this replica's report (fleet).
    async fn end_tick(
        &self,
        mut inner: tokio::sync::MutexGuard<'_, Inner>,
        others: Option<Reports>,
        leader: bool,
        report: ReplicaReport,
        alert_events: Vec<AuditEvent>,
        mut dirty: bool,
    ) {
        let live = inner.state.live_ids();
        inner.running.retain(&live);
        inner.detectors.retain(&live);
        inner.ledger.retain(&live);
        // Finished blue/green rollouts too: blue goes once its retention ends,
        // however the rollout finished.
        let all: Vec<String> = inner.state.rollouts.keys().cloned().collect();
        for model in all {
            dirty |= self.retire_unused(&mut inner, &model, now_ms());
        }
        if !alert_events.is_empty() {
            let written = match state::encode_events(&alert_events) {
                Ok(lines) => self.store.append_events(lines).await.map_err(ControlError::from),
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => self.count_events(&inner.state, &alert_events),
                Err(e) => tracing::error!(error = %e, "cannot record soft-trigger alerts"),
            }
        }
        if dirty && self.fleet.is_none() {
            // Stage counts change on every tick under traffic. Writing them
            // syncs the file twice; the file store does that on the blocking
            // pool (done on a tokio worker, it stalled every request queued
            // behind it: a p99 regression measured with the shadow bench).
            // The controller lock stays held, so snapshots are written in order.
            let state = inner.state.clone();
            if let Err(e) = self.persist(&mut inner, &state, &[]).await {
                tracing::warn!(error = %e, "cannot persist stage counts");
            }
        }
        // The leader forgets dead processes' reports that nothing live
        // counts any more (their rollout ended or moved to another epoch).
        let forget: Vec<String> = match (&others, leader) {
            (Some(others), true) => others
                .iter()
                .filter(|(_, r)| !r.alive && !r.counts_for(&inner.state))
                .map(|(id, _)| id.clone())
                .collect(),
            _ => Vec::new(),
        };
        drop(inner);
        let Some(f) = self.fleet.as_ref() else { return };
        if !forget.is_empty() {
            match f.delete_reports(&forget).await {
                Ok(()) => tracing::debug!(reports = ?forget, "forgot the reports of dead processes"),
                Err(e) => tracing::debug!(error = %e, "cannot delete dead processes' reports"),
            }
        }
        if f.connected() {
            // Never an empty report: one that does not serialise is an
            // internal error, logged, and the last published report stays.
            match serde_json::to_vec(&report) {
                Ok(bytes) => {
                    if let Err(e) = f.publish_counts(bytes).await {
                        tracing::debug!(error = %e, "cannot publish this replica's counts");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialise this replica's counts; not published")
                }
            }
        }
    }
}
