//! What the admin API answers, built from the controller's data: a
//! rollout's status (with its sample ratio mismatch test), its alerts, and
//! GetAnalysis's numbers. Pure functions of their inputs; the service in
//! [`crate::api::admin`] gathers the inputs.

use modelgate_proto::v1 as pb;
use modelgate_rollout::analysis::{SRM_ALPHA, SequentialSrm};
use modelgate_rollout::{Plan, Rollout, RolloutState, RoutingTable, StepVerdict};

use crate::api::predict::role_to_pb;
use crate::control::counts::StageCounts;
use crate::control::now_ms;

pub use crate::control::state_name;

/// The sample ratio mismatch test over the arms that should get traffic:
/// do the stage's counts fit the weights? The sequential test
/// ([`modelgate_rollout::analysis::srm_sequential`], at `SRM_ALPHA`), so
/// that showing it at every look (GetRollout, GetAnalysis, the CLI, the
/// decision simulator's every tick) flags a fair split in at most
/// `SRM_ALPHA` of stages. `None` with one such arm or under 100 requests in
/// the stage (too few to say anything; the Bayes factor needs no minimum to
/// stay valid).
pub fn sample_ratio_mismatch(table: &RoutingTable, counts: &StageCounts) -> Option<SequentialSrm> {
    let (observed, weights) = srm_counts(table, counts)?;
    modelgate_rollout::analysis::srm_sequential(&observed, &weights, SRM_ALPHA).ok()
}

/// The stage's counts and weights of the arms that should get traffic;
/// `None` with one such arm or under 100 requests.
fn srm_counts(table: &RoutingTable, counts: &StageCounts) -> Option<(Vec<u64>, Vec<f64>)> {
    let (observed, weights): (Vec<u64>, Vec<f64>) = table
        .weights()
        .iter()
        .filter(|w| w.basis_points > 0)
        .map(|w| (counts.samples.get(&w.version).copied().unwrap_or(0), f64::from(w.basis_points)))
        .unzip();
    (observed.len() >= 2 && observed.iter().sum::<u64>() >= 100).then_some((observed, weights))
}

/// A rollout as the admin API shows it.
pub fn status_of(
    model: &str,
    rollout: Option<&Rollout>,
    counts: &StageCounts,
    obs: &modelgate_rollout::ArmObservation,
    champion: u64,
) -> pb::RolloutStatus {
    status_and_srm(model, rollout, counts, obs, champion).0
}

/// [`status_of`], and the sample ratio mismatch test it reports (computed
/// once; GetAnalysis shows its chi-square too).
fn status_and_srm(
    model: &str,
    rollout: Option<&Rollout>,
    counts: &StageCounts,
    obs: &modelgate_rollout::ArmObservation,
    champion: u64,
) -> (pb::RolloutStatus, Option<SequentialSrm>) {
    let Some(r) = rollout else {
        let status =
            pb::RolloutStatus { model: model.to_string(), champion: champion as i64, ..Default::default() };
        return (status, None);
    };
    let table = r.routing_table();
    let live = matches!(r.state, RolloutState::Running | RolloutState::Paused);
    let arms = table
        .weights()
        .into_iter()
        .map(|w| pb::ArmStatus {
            name: w.name.clone(),
            version: w.version as i64,
            role: role_to_pb(w.role) as i32,
            weight_bp: w.basis_points,
            requests: counts.samples.get(&w.version).copied().unwrap_or(0),
            errors: counts.errors.get(&w.version).copied().unwrap_or(0),
            p50_ms: 0.0,
            p99_ms: 0.0,
            total_requests: 0,
            total_errors: 0,
        })
        .collect();
    let srm = if live { sample_ratio_mismatch(&table, counts) } else { None };
    let stages = match &r.plan {
        Plan::Canary { steps, .. } => steps.len() as u32,
        Plan::BlueGreen { .. } => 2,
        _ => 1,
    };
    let mut waiting = if live { r.waiting_for(now_ms(), obs).unwrap_or_default() } else { String::new() };
    if let RolloutState::RolledBack { reason, .. } | RolloutState::Aborted { reason } = &r.state {
        waiting = reason.clone();
    }
    let status = pb::RolloutStatus {
        model: model.to_string(),
        rollout_id: r.id.clone(),
        strategy: r.plan.strategy().to_string(),
        state: state_name(&r.state).to_string(),
        // Numbered from 1, as the CLI's text and the metric show it; 0 is no rollout.
        stage: r.stage as u32 + 1,
        stages,
        arms,
        started_at_ms: r.started_ms as i64,
        stage_started_at_ms: r.stage_started_ms as i64,
        waiting_for: waiting,
        plan_json: serde_json::to_string(&r.plan).unwrap_or_default(),
        champion: champion as i64,
        required_samples_per_arm: r.plan.required_samples_per_arm().unwrap_or(0),
        shadows: Vec::new(),
        srm_p_value: srm.map(|s| s.p_value),
        srm_mismatch: srm.is_some_and(|s| s.mismatch),
        alerts: Vec::new(),
        srm_log_bayes_factor: srm.map(|s| s.log_bayes_factor),
    };
    (status, srm)
}

/// An ALERT audit event as the admin API shows it.
pub fn alert_of(e: &modelgate_rollout::AuditEvent) -> pb::Alert {
    pb::Alert {
        at_ms: e.at_ms as i64,
        trigger: e.trigger.clone().unwrap_or_default(),
        reason: e.reason.clone().unwrap_or_default(),
        version: e.numbers.get("version").map_or(0, |v| *v as i64),
    }
}

fn interval(low: f64, high: f64) -> Option<pb::Interval> {
    (low.is_finite() && high.is_finite()).then_some(pb::Interval { low, high })
}

fn comparison_of(c: &crate::control::analysis::Comparison) -> pb::Comparison {
    pb::Comparison {
        diff: c.seq.diff,
        confidence_sequence: interval(c.seq.ci_low, c.seq.ci_high),
        p_value: c.seq.p_value,
        margin: c.margin,
        verdict: match c.verdict {
            modelgate_rollout::analysis::MarginVerdict::NonInferior => "non_inferior",
            modelgate_rollout::analysis::MarginVerdict::Regression => "regression",
            modelgate_rollout::analysis::MarginVerdict::Undecided => "undecided",
        }
        .to_string(),
        fixed_horizon_p_value: c.fixed_p,
    }
}

/// GetAnalysis's answer from the controller's view.
pub fn analysis_of(model: &str, view: &crate::control::AnalysisView, alerts: Vec<pb::Alert>) -> pb::Analysis {
    use crate::control::analysis::{compare_errors, compare_latency, wilson};
    let mut out = pb::Analysis {
        model: model.to_string(),
        champion: view.champion as i64,
        alerts,
        alpha: view.settings.as_ref().map_or(0.05, |s| s.alpha),
        ..Default::default()
    };
    let Some(r) = &view.rollout else {
        out.verdict = "none".into();
        out.verdict_reason = "no rollout".into();
        return out;
    };
    let live = matches!(r.state, RolloutState::Running | RolloutState::Paused);
    let (status, srm) = status_and_srm(model, Some(r), &view.counts, &view.observation, view.champion);
    out.rollout_id = r.id.clone();
    out.strategy = status.strategy;
    out.state = status.state;
    out.waiting_for = status.waiting_for;
    out.srm_p_value = status.srm_p_value;
    out.srm_mismatch = status.srm_mismatch;
    out.required_samples_per_arm = status.required_samples_per_arm;
    if let Plan::Canary { steps, .. } = &r.plan {
        out.step_min_samples = steps.get(r.stage).map_or(0, |s| s.min_samples);
    }
    // Pearson's statistic on the same counts, shown for reference only.
    out.srm_chi2 = srm_counts(&r.routing_table(), &view.counts)
        .filter(|_| srm.is_some())
        .and_then(|(observed, weights)| modelgate_rollout::analysis::srm_chi_square(&observed, &weights).ok())
        .map(|c| c.chi2);
    out.srm_log_bayes_factor = srm.map(|s| s.log_bayes_factor);
    out.srm_alpha = SRM_ALPHA;
    let (verdict, reason) = match &view.verdict {
        StepVerdict::Healthy => ("healthy", String::new()),
        StepVerdict::Unhealthy(found) => ("unhealthy", StepVerdict::unhealthy_text(found)),
        StepVerdict::Inconclusive => ("waiting", "inconclusive".to_string()),
        StepVerdict::Waiting(why) => ("waiting", why.clone()),
    };
    out.verdict = if live { verdict.to_string() } else { "finished".to_string() };
    out.verdict_reason = reason;
    let alpha = out.alpha;
    let champion = view.arms.iter().find(|a| a.version == view.champion);
    for a in &view.arms {
        let t = &a.total;
        let latency = a.latency_ms();
        let (lat_lo, lat_hi) = latency
            .as_ref()
            .and_then(|s| modelgate_rollout::analysis::mean_interval(s, alpha).ok())
            .unwrap_or((f64::NAN, f64::NAN));
        let (err_lo, err_hi) = wilson(t.errors, t.requests, alpha);
        let is_candidate = a.version != view.champion;
        let (errors_vs, latency_vs) = match (champion, view.settings.as_ref()) {
            (Some(ch), Some(s)) if is_candidate => (
                compare_errors(&ch.total, &a.total, s).as_ref().map(comparison_of),
                compare_latency(ch, a, s).as_ref().map(comparison_of),
            ),
            _ => (None, None),
        };
        let triggers = if is_candidate {
            view.trigger_states
                .get(&a.version)
                .into_iter()
                .flatten()
                .cloned()
                .map(|st| pb::TriggerState {
                    version: a.version as i64,
                    trigger: st.trigger.to_string(),
                    state: st.status.as_str().to_string(),
                    text: st.text,
                    numbers: st.numbers.into_iter().collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        out.arms.push(pb::ArmAnalysis {
            version: a.version as i64,
            name: a.name.clone(),
            weight_bp: a.weight_bp,
            stage_samples: a.stage_samples,
            requests: t.requests,
            errors: t.errors,
            nan_inf: t.nan_inf,
            error_rate: if t.requests == 0 { 0.0 } else { t.errors as f64 / t.requests as f64 },
            error_rate_ci: interval(err_lo, err_hi),
            latency_mean_ms: latency.map_or(0.0, |l| l.mean),
            latency_mean_ci: interval(lat_lo, lat_hi),
            p50_ms: a.window.p(0.50).map_or(0.0, |us| us as f64 / 1000.0),
            p99_ms: a.window.p(0.99).map_or(0.0, |us| us as f64 / 1000.0),
            errors_vs_champion: errors_vs,
            latency_vs_champion: latency_vs,
            psi: view.psi.get(&a.version).copied(),
            importance_shift: view.importance_shift.get(&a.version).copied(),
            triggers,
            window_requests: a.window.requests,
        });
    }
    out.metrics = view
        .metrics
        .iter()
        .map(|m| (m, m.deciding_test()))
        .map(|(m, deciding)| pb::MetricResult {
            metric: m.metric.clone(),
            arm: m.arm.clone(),
            version: m.version as i64,
            n: m.result.n,
            mean: m.result.mean,
            ci: interval(m.result.ci_low, m.result.ci_high),
            p_value: m.result.welch.map(|w| w.p_value),
            always_valid_p_value: m.result.sequential.map(|s| s.p_value),
            diff: m.result.sequential.map(|s| s.diff).or(m.result.welch.map(|w| w.diff)),
            decision: m.result.decision.as_str().to_string(),
            required: m.required,
            deciding_test: deciding.as_ref().map_or(String::new(), |d| d.test.clone()),
            statistic: deciding.as_ref().map(|d| d.statistic),
            threshold: m.alpha,
            control_n: m.control.1,
            min_samples: modelgate_rollout::analysis::AB_MIN_SAMPLES_PER_ARM,
            diff_confidence_sequence: m.result.sequential.and_then(|s| interval(s.ci_low, s.ci_high)),
        })
        .collect();
    out
}
