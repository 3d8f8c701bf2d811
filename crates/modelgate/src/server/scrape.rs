//! What a metrics scrape reads from the running gateway: the live routing
//! snapshot, the controller's rollout view and the shadow totals. It sits
//! with the server (the composition root) because it reads both the request
//! path and the controller; `metrics` itself only defines the source trait.

use std::sync::Arc;

use crate::telemetry::metrics::{ArmLabels, StateMetrics, StateSource, VersionLabels, VersionReasonLabels};

/// The state source of a running gateway: its live snapshot, the
/// controller's rollout view and the shadow totals.
pub struct GatewayState {
    pub gateway: Arc<crate::serving::gateway::Gateway>,
    pub controller: Arc<crate::control::Controller>,
}

impl StateSource for GatewayState {
    fn collect(&self, out: &mut StateMetrics) {
        use std::sync::atomic::Ordering::Relaxed;
        let labels = |model: &str, version: u64| VersionLabels {
            model: model.to_string(),
            version: version.to_string(),
        };
        let table = self.gateway.table();
        for route in table.sorted() {
            let name = &route.name;
            if let Some(ms) = route.config().triggers.p99_sla_ms {
                out.sla.push((name.clone(), ms / 1000.0));
            }
            for v in route.versions.values() {
                match &v.state {
                    modelgate_registry::VersionState::Ready(r) => {
                        out.version_state.push((labels(name, v.version), "ready"));
                        let l = labels(name, v.version);
                        out.queue_depth.push((l.clone(), r.queue.len() as i64));
                        out.queue_rejected.push((l.clone(), r.queue.stats().rejected.load(Relaxed)));
                        out.queue_expired.push((l.clone(), r.queue.stats().expired.load(Relaxed)));
                        let st = r.queue.stats();
                        out.runs_stopped.extend(by_reason(
                            &l,
                            &modelgate_runtime::StopReason::NAMES,
                            &st.stopped,
                        ));
                        let per_bucket: Vec<u64> =
                            st.run_rows_buckets.iter().map(|b| b.load(Relaxed)).collect();
                        out.batch_rows.push((
                            l.clone(),
                            st.run_rows.load(Relaxed),
                            st.runs.load(Relaxed),
                            per_bucket,
                        ));
                        out.batch_retries.push((l.clone(), st.batch_retries.load(Relaxed)));
                        out.inline_missed.extend(by_reason(
                            &l,
                            &modelgate_runtime::INLINE_MISS_REASONS,
                            &st.inline_missed,
                        ));
                        out.inline_runs.push((l, st.inline_runs.load(Relaxed)));
                    }
                    modelgate_registry::VersionState::Failed(_) => {
                        out.version_state.push((labels(name, v.version), "failed"));
                    }
                }
            }
            match route.routing() {
                Some(routing) => {
                    for w in routing.weights() {
                        out.weights.push((
                            ArmLabels {
                                model: name.clone(),
                                version: w.version.to_string(),
                                role: w.role.as_str().to_string(),
                            },
                            f64::from(w.basis_points) / 10_000.0,
                        ));
                    }
                }
                None => {
                    if let Some(c) = route.champion() {
                        out.weights.push((
                            ArmLabels {
                                model: name.clone(),
                                version: c.version.to_string(),
                                role: "champion".into(),
                            },
                            1.0,
                        ));
                    }
                }
            }
        }
        let view = self.controller.scrape_view();
        for (model, (strategy, state, stage)) in &view.rollouts {
            out.rollout_state.push((model.clone(), state.as_str()));
            if state.is_live() {
                // Numbered from 1, as `modelgate status` and RolloutStatus.stage.
                out.rollout_stage.push((model.clone(), strategy.clone(), *stage as i64 + 1));
            }
        }
        for ((model, version), psi) in &view.psi {
            out.psi.push((labels(model, *version), *psi));
        }
        for ((model, version), shift) in &view.importance_shift {
            out.importance_shift.push((labels(model, *version), *shift));
        }
        out.fleet = self.controller.fleet_status().map(|(c, l)| (c, l, self.controller.pending_rollbacks()));
        if let Some(records) = self.gateway.record_sinks() {
            out.shadow_records = records.counts();
        }
        out.shadow_cpu = self
            .gateway
            .shadow_cpu_budget()
            .map(|b| (b.used().as_secs_f64(), b.cores(), b.effective_cores()));
        for ((model, version), t) in self.gateway.shadow_stats().all() {
            let l = labels(&model, version);
            out.shadow_compared.push((l.clone(), t.compared));
            out.shadow_errors.push((l.clone(), t.errors));
            out.shadow_dropped.push((l.clone(), t.dropped));
            if let Some(a) = t.agreement_rate() {
                out.shadow_agreement.push((l.clone(), a));
            }
            if let Some(d) = t.mean_abs_diff() {
                out.shadow_mean_abs_diff.push((l, d));
            }
        }
    }
}

/// One version's counters split by reason, `names[i]` counting `counters[i]`.
fn by_reason<'a>(
    l: &'a VersionLabels,
    names: &'a [&str],
    counters: &'a [std::sync::atomic::AtomicU64],
) -> impl Iterator<Item = (VersionReasonLabels, u64)> + 'a {
    names.iter().zip(counters).map(|(reason, n)| {
        (
            VersionReasonLabels {
                model: l.model.clone(),
                version: l.version.clone(),
                reason: (*reason).into(),
            },
            n.load(std::sync::atomic::Ordering::Relaxed),
        )
    })
}
