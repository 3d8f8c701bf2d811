//! The controller's persisting and publishing: the one conditional write of
//! the state with its events, adopting a state written elsewhere, writing
//! back what was decided while etcd was away, publishing routing to the
//! gateway, and counting recorded events in the metrics.

use std::sync::Arc;

use modelgate_rollout::AuditEvent;
use modelgate_rollout::triggers::TRIGGERS;

use crate::control::alerts::AlertKind;
use crate::control::fleet::{self, Reports};
use crate::control::state::{self, ControlState, Phase};
use crate::control::{ControlError, Controller, Inner};
use crate::serving::routing::Policy;
use crate::store::{FleetEvent, Snapshot, StoreError};
use crate::telemetry::metrics::RolloutSeries;

impl Controller {
    /// Publishes `model`'s policy from the state.
    pub(super) fn publish(&self, state: &ControlState, model: &str) {
        {
            let mut scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
            match state.rollouts.get(model) {
                Some(r) => {
                    scrape.rollouts.insert(
                        model.to_string(),
                        (r.plan.strategy().to_string(), Phase::of(&r.state), r.stage),
                    );
                }
                None => {
                    scrape.rollouts.remove(model);
                }
            }
            if state.live(model).is_none() {
                scrape.psi.retain(|(m, _), _| m != model);
                scrape.importance_shift.retain(|(m, _), _| m != model);
                self.gateway.forget_input_samples(model);
            }
        }
        if let Some(r) = state.live(model) {
            let weights = r.routing_table().weights();
            let arms: Vec<(u64, &str)> = weights.iter().map(|w| (w.version, w.role.as_str())).collect();
            let rollback_triggers: Vec<&str> = TRIGGERS.iter().copied().chain(["manual"]).collect();
            let alert_triggers = AlertKind::RAISED.map(AlertKind::as_str);
            self.gateway.metrics().rollout_series(
                model,
                &RolloutSeries {
                    arms: &arms,
                    candidates: &r.plan.versions(r.champion),
                    rollback_triggers: &rollback_triggers,
                    alert_triggers: &alert_triggers,
                },
            );
        }
        let Some(champion) = self.champion_of(state, model) else { return };
        let policy = match state.live(model) {
            Some(r) => Policy { champion, routing: Some(r.routing_table()), rollout_id: Some(r.id.clone()) },
            None => Policy { champion, routing: None, rollout_id: None },
        };
        if policy.routing.as_ref().is_some_and(|t| t.arms().len() > 1) {
            // Requests of a traffic split are remembered for outcome joins:
            // reserve that memory (~10 ms for the default 32 MiB, once) off
            // the request path.
            // NOTE: on tokio's blocking pool, which the runtime owns and
            // waits for at shutdown, not on a thread of its own that nobody
            // joins; inline where there is no runtime (it takes ~10 ms).
            let outcomes = Arc::clone(self.gateway.outcomes());
            if !outcomes.reserved() {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(move || outcomes.reserve())),
                    Err(_) => outcomes.reserve(),
                }
            }
        }
        self.gateway.set_policy(model, Some(policy));
    }

    /// Persists events and the snapshot in one commit conditioned on the
    /// revision `inner.state` was read at; called with the lock held. On a
    /// conflict (another replica wrote first) nothing is written, the
    /// current state is read back and published, and the caller's change is
    /// refused. A state or event that does not serialise is an internal
    /// error, and nothing is written.
    pub(super) async fn persist(
        &self,
        inner: &mut Inner,
        next: &ControlState,
        events: &[AuditEvent],
    ) -> Result<(), ControlError> {
        let lines = state::encode_events(events)?;
        let bytes = state::encode_state(next)?;
        match self.store.commit(inner.revision, bytes, lines).await {
            Ok(revision) => {
                inner.revision = revision;
                self.count_events(next, events);
                Ok(())
            }
            Err(StoreError::Conflict { current }) => {
                if let Ok(Some(snap)) = self.store.load_snapshot().await {
                    self.adopt(inner, snap);
                }
                Err(ControlError::Conflict(format!(
                    "the rollout state changed on another replica (revision {current}) before this change was written; nothing was changed here — look at the rollout again and retry"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the current state (champions, rollouts, stage counts) now.
    /// In a fleet every decision is written when it is taken and stage
    /// counts are each replica's own, so there is nothing to save.
    pub async fn save(&self) -> Result<(), ControlError> {
        if self.fleet.is_some() {
            return Ok(());
        }
        let mut inner = self.inner.lock().await;
        let state = inner.state.clone();
        self.persist(&mut inner, &state, &[]).await
    }

    /// Takes a state written elsewhere (another replica, or etcd after a
    /// reconnect) as this replica's, and publishes what changed.
    pub(super) fn adopt(&self, inner: &mut Inner, snap: Snapshot) -> bool {
        if snap.revision <= inner.revision {
            return false;
        }
        let next = match state::parse_state(&snap) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(revision = snap.revision, error = %e, "ignoring a fleet state that does not parse");
                return false;
            }
        };
        let changed = inner.state.adopt(next);
        inner.revision = snap.revision;
        for model in &changed {
            tracing::info!(model = %model, revision = snap.revision, "applying a rollout change made elsewhere in the fleet");
            inner.baselines.forget(model);
            self.publish(&inner.state, model);
        }
        !changed.is_empty()
    }

    /// Applies what the etcd store reports, until the store goes away.
    pub fn spawn_follower(
        self: &Arc<Self>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<FleetEvent>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            // An event being applied is finished before shutdown ends the task.
            while let Some(event) = tokio::select! {
                () = shutdown.cancelled() => None,
                event = events.recv() => event,
            } {
                match event {
                    FleetEvent::Changed(snap) => {
                        let mut inner = me.inner.lock().await;
                        me.adopt(&mut inner, snap);
                    }
                    FleetEvent::Connected(snap) => {
                        let mut inner = me.inner.lock().await;
                        me.resync(&mut inner, snap).await;
                    }
                    FleetEvent::Disconnected(reason) => {
                        tracing::warn!(%reason, "fleet state store lost; serving the last known routing");
                    }
                }
            }
        })
    }

    /// After (re)connecting: writes back the rollbacks made while etcd was
    /// away, then takes the fleet's state.
    async fn resync(&self, inner: &mut Inner, snap: Option<Snapshot>) {
        let mut snap = snap;
        for p in std::mem::take(&mut inner.pending) {
            let Some(current) = &snap else { break };
            let Ok(remote) = state::parse_state(current) else { break };
            let still_live = remote.live(&p.model).is_some_and(|r| r.id == p.rollout.id);
            let mut next = remote.clone();
            next.champions.insert(p.model.clone(), p.rollout.current_champion());
            next.rollouts.insert(p.model.clone(), p.rollout.clone());
            // Never an empty write: a state or an event that does not
            // serialise is an internal error, logged, and the rollback stays
            // pending.
            let encoded = state::encode_events(&p.events).and_then(|lines| {
                Ok((lines, if still_live { state::encode_state(&next)? } else { Vec::new() }))
            });
            let (lines, bytes) = match encoded {
                Ok(encoded) => encoded,
                Err(e) => {
                    tracing::error!(model = %p.model, error = %e, "cannot write back a local rollback; it stays pending");
                    inner.pending.push(p);
                    continue;
                }
            };
            let result = if still_live {
                // The fleet still runs what this replica rolled back: roll it
                // back everywhere (safety first).
                let origin = current.origin.clone();
                self.store.commit(current.revision, bytes.clone(), lines).await.map(|rev| {
                    snap = Some(Snapshot { bytes, revision: rev, origin });
                })
            } else {
                // Already over in the fleet: the local rollback is still a
                // fact for the audit log.
                self.store.append_events(lines).await
            };
            match result {
                Ok(()) => {
                    tracing::info!(model = %p.model, rollout = %p.rollout.id, written_back = still_live, "a rollback made while etcd was unreachable is recorded in the fleet")
                }
                Err(e) => {
                    tracing::warn!(model = %p.model, error = %e, "cannot write back a local rollback yet");
                    inner.pending.push(p);
                }
            }
        }
        self.pending_count.store(inner.pending.len(), std::sync::atomic::Ordering::Relaxed);
        let Some(snap) = snap else { return };
        // After a partition the fleet's revision can be anything: take it as is.
        inner.revision = 0;
        self.adopt(inner, snap);
    }

    /// Fleet mode: what the other replicas last published, if etcd answers.
    pub(super) async fn fleet_reports(&self) -> Option<Reports> {
        let f = self.fleet.as_ref()?;
        match f.fleet_counts().await {
            Ok(list) => Some(fleet::parse_reports(list, f.incarnation())),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the fleet's reports");
                None
            }
        }
    }

    /// Counts recorded audit events in the metrics: every action, rollbacks
    /// by version and trigger ("manual" for an operator's), alerts by
    /// trigger. `state` holds the events' rollouts (a rollback event names
    /// no version: the rollout's candidates are the versions it took
    /// traffic from).
    pub(super) fn count_events(&self, state: &ControlState, events: &[AuditEvent]) {
        let metrics = self.gateway.metrics();
        for e in events {
            let action = serde_json::to_value(e.action).ok();
            let action = action.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown");
            metrics.rollout_event(&e.model, action);
            // Each decision is its own short trace, with its numbers.
            let span = tracing::info_span!(
                target: "modelgate::span",
                parent: None,
                "rollout.decision",
                model = %e.model,
                action,
                rollout.id = %e.rollout_id,
                who = %e.actor.who,
                version = e.version.map(|v| v as i64),
                trigger = e.trigger.as_deref(),
                reason = e.reason.as_deref(),
            );
            if !span.is_disabled() {
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                for (k, v) in &e.numbers {
                    span.set_attribute(format!("numbers.{k}"), *v);
                }
            }
            drop(span);
            match e.action {
                modelgate_rollout::Action::RolledBack => {
                    let trigger = e.trigger.as_deref().unwrap_or("manual");
                    let candidates = state
                        .rollouts
                        .get(&e.model)
                        .filter(|r| r.id == e.rollout_id)
                        .map(|r| r.plan.versions(r.champion))
                        .unwrap_or_default();
                    if candidates.is_empty() {
                        // Not expected (the state holds the rollout it just
                        // rolled back), but the rollback still counts.
                        metrics.rollback(&e.model, "", trigger);
                    }
                    for version in candidates {
                        metrics.rollback(&e.model, &version.to_string(), trigger);
                    }
                }
                modelgate_rollout::Action::Alert => {
                    metrics.alert(&e.model, e.trigger.as_deref().unwrap_or("unknown"))
                }
                _ => {}
            }
        }
    }
}
