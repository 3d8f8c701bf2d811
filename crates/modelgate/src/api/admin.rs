//! The Admin gRPC service: operators start, drive and inspect rollouts.
//! Every call is authenticated by [`crate::api::auth::AdminAuth`] (when tokens are
//! configured) and every change is an audit event naming who made it.

use std::sync::Arc;

use modelgate_proto::v1 as pb;
use modelgate_rollout::{AbArm, Actor, CanaryStep, Plan, PromotionGate, ShadowPlan, plan};
use tonic::{Request, Response, Status};

use crate::api::admin_views::{alert_of, analysis_of, status_of};
use crate::api::auth;
use crate::api::predict::{role_to_pb, version_metadata};
use crate::control::{ControlError, Controller, Op};
use crate::serving::gateway::Gateway;

/// The `Admin` gRPC service.
#[derive(Debug, Clone)]
pub struct AdminService {
    gateway: Arc<Gateway>,
    controller: Arc<Controller>,
}

impl AdminService {
    pub fn new(gateway: Arc<Gateway>, controller: Arc<Controller>) -> Self {
        Self { gateway, controller }
    }

    async fn status(&self, model: &str) -> Result<pb::RolloutStatus, Status> {
        let view = self.controller.get(model).await?;
        let (rollout, counts) = (&view.rollout, &view.counts);
        let obs = rollout.as_ref().map(|r| self.controller.observation(model, r, counts)).unwrap_or_default();
        let mut status = status_of(model, rollout.as_ref(), counts, &obs, view.champion);
        for arm in &mut status.arms {
            if let Some(numbers) = view.arms.iter().find(|a| a.version == arm.version as u64) {
                arm.total_requests = numbers.total.requests;
                arm.total_errors = numbers.total.errors;
            }
        }
        if let Some(r) = &rollout {
            status.alerts =
                self.controller.alerts(model, &r.id, r.started_ms).await.iter().map(alert_of).collect();
        }
        let table = self.gateway.table();
        if let Some(m) = table.get(model) {
            // Latency over the sliding window (default the last 60 s).
            for arm in &mut status.arms {
                if let Some(w) = m.window(arm.version as u64) {
                    let snap = w.window.snapshot();
                    arm.p50_ms = snap.p(0.50).map_or(0.0, |us| us as f64 / 1000.0);
                    arm.p99_ms = snap.p(0.99).map_or(0.0, |us| us as f64 / 1000.0);
                }
            }
            let stats = self.gateway.shadow_stats();
            status.shadows = m
                .shadows()
                .iter()
                .map(|s| {
                    let v = s.version().version;
                    let t = stats.get(model, v).unwrap_or_default();
                    pb::ShadowStatus {
                        version: v as i64,
                        fraction_bp: s.fraction_bp(),
                        compared: t.compared,
                        errors: t.errors,
                        dropped: t.dropped,
                        agreement_rate: t.agreement_rate().unwrap_or(-1.0),
                        mean_abs_diff: t.mean_abs_diff().unwrap_or(-1.0),
                        shadow_nan_inf: t.shadow_nan_inf,
                        p99_ms: t.latency_p99_us() as f64 / 1000.0,
                    }
                })
                .collect();
        }
        Ok(status)
    }
}

fn actor<T>(req: &Request<T>) -> Actor {
    Actor::new(req.extensions().get::<auth::Actor>().map_or_else(|| "unknown".to_string(), |a| a.0.clone()))
}

fn reason(r: &str) -> Option<String> {
    (!r.is_empty()).then(|| r.to_string())
}

fn version(v: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Status::invalid_argument(format!("{what} must be a positive version, got {v}")))
}

/// The proto plan as the rollout crate's plan, defaults filled in.
pub fn plan_from_pb(p: pb::start_rollout_request::Plan) -> Result<Plan, Status> {
    use pb::start_rollout_request::Plan as P;
    Ok(match p {
        P::BlueGreen(b) => Plan::BlueGreen {
            green: version(b.green, "green")?,
            retention_secs: b.retention_secs.unwrap_or(plan::DEFAULT_RETENTION_SECS),
        },
        P::Canary(c) => Plan::Canary {
            candidate: version(c.candidate, "candidate")?,
            steps: if c.steps.is_empty() {
                plan::DEFAULT_STEPS.iter().map(|&p| CanaryStep::at(p)).collect()
            } else {
                c.steps
                    .into_iter()
                    .map(|s| CanaryStep {
                        percent: s.percent,
                        min_duration_secs: s.min_duration_secs,
                        min_samples: s.min_samples,
                    })
                    .collect()
            },
            auto_advance: c.auto_advance,
        },
        P::Shadow(s) => Plan::Shadow(ShadowPlan {
            versions: s
                .versions
                .into_iter()
                .map(|v| version(v, "shadow version"))
                .collect::<Result<_, _>>()?,
            fraction_percent: s.fraction_percent.unwrap_or(100.0),
        }),
        P::AbTest(a) => Plan::AbTest {
            arms: a
                .arms
                .into_iter()
                .map(|x| {
                    Ok(AbArm { name: x.name, version: version(x.version, "arm version")?, weight: x.weight })
                })
                .collect::<Result<_, Status>>()?,
            metric: a.metric,
            mde: a.mde,
            alpha: a.alpha.unwrap_or(0.05),
            power: a.power.unwrap_or(0.8),
            variance: a.variance,
            min_duration_secs: a.min_duration_secs.unwrap_or(plan::DEFAULT_AB_SECS),
            higher_is_better: !a.lower_is_better,
        },
        P::ChampionChallenger(c) => Plan::ChampionChallenger {
            challengers: c
                .challengers
                .into_iter()
                .map(|v| version(v, "challenger"))
                .collect::<Result<_, _>>()?,
            fraction_percent: c.fraction_percent.unwrap_or(plan::DEFAULT_CHALLENGER_PERCENT),
            gate: if c.auto_kpi.is_empty() {
                PromotionGate::Manual
            } else {
                PromotionGate::Automatic {
                    kpi: c.auto_kpi,
                    threshold: c.auto_threshold,
                    window_secs: c.auto_window_secs,
                    min_samples: c.auto_min_samples.unwrap_or(plan::DEFAULT_GATE_SAMPLES),
                    higher_is_better: !c.auto_lower_is_better,
                }
            },
        },
    })
}

/// A StartRollout request's plan and trigger overrides, defaults filled in
/// and the overrides range-checked (the plan itself is validated against the
/// model's versions by the controller). Takes the plan out of `r`.
pub fn start_from_pb(
    r: &mut pb::StartRolloutRequest,
) -> Result<(Plan, modelgate_rollout::TriggerOverrides), Status> {
    let plan = plan_from_pb(r.plan.take().ok_or_else(|| Status::invalid_argument("plan is not set"))?)?;
    let triggers = r
        .triggers
        .take()
        .map(|t| modelgate_rollout::TriggerOverrides {
            p99_sla_ms: t.p99_sla_ms,
            nan_inf_rate: t.nan_inf_rate,
            error_ratio: t.error_ratio,
            error_rate_floor: t.error_rate_floor,
            min_samples: t.min_samples,
            false_alarm_budget: t.false_alarm_budget,
            budget_hours: t.budget_hours,
        })
        .unwrap_or_default();
    // The same check model.toml's [triggers] passes, so both refuse alike.
    triggers.validate().map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((plan, triggers))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let table = self.gateway.table();
        let models = table
            .sorted()
            .into_iter()
            .map(|m| {
                let champion = m.champion().map(|c| c.version);
                pb::ModelInfo {
                    name: m.name.clone(),
                    champion: champion.map_or(0, |c| c as i64),
                    rollout_id: m.rollout_id().unwrap_or_default().to_string(),
                    versions: m
                        .versions
                        .values()
                        .map(|v| {
                            let mut meta = version_metadata(v, champion);
                            if let Some(arm) = m.routing().and_then(|t| {
                                t.arms().iter().find(|a| a.version == v.version && a.basis_points() > 0)
                            }) && champion != Some(v.version)
                            {
                                meta.role = role_to_pb(arm.role) as i32;
                            }
                            let (loaded_at_ms, sessions, memory_bytes) = match &v.state {
                                modelgate_registry::VersionState::Ready(r) => (
                                    r.model()
                                        .loaded_at()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .map_or(0, |d| d.as_millis() as i64),
                                    r.model().session_count() as u32,
                                    r.memory_bytes,
                                ),
                                modelgate_registry::VersionState::Failed(_) => (0, 0, 0),
                            };
                            pb::ModelVersionInfo {
                                metadata: Some(meta),
                                loaded_at_ms,
                                sessions,
                                memory_bytes,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn get_rollout(
        &self,
        req: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        Ok(Response::new(self.status(&req.into_inner().model).await?))
    }

    async fn get_analysis(
        &self,
        req: Request<pb::GetAnalysisRequest>,
    ) -> Result<Response<pb::Analysis>, Status> {
        let model = req.into_inner().model;
        if model.is_empty() {
            return Err(Status::invalid_argument("model is empty; expected a model name"));
        }
        let view = self.controller.analysis(&model).await?;
        let alerts = match &view.rollout {
            Some(r) => {
                self.controller.alerts(&model, &r.id, r.started_ms).await.iter().map(alert_of).collect()
            }
            None => Vec::new(),
        };
        Ok(Response::new(analysis_of(&model, &view, alerts)))
    }

    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let who = actor(&req);
        let mut r = req.into_inner();
        let (plan, triggers) = start_from_pb(&mut r)?;
        self.controller.start(&r.model, plan, triggers, &who, reason(&r.reason)).await?;
        Ok(Response::new(self.status(&r.model).await?))
    }

    async fn set_weights(
        &self,
        req: Request<pb::SetWeightsRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        if r.candidate_percent > 100 {
            return Err(Status::invalid_argument(format!(
                "candidate_percent must be 0-100, got {}",
                r.candidate_percent
            )));
        }
        self.controller
            .apply(&r.model, Op::SetWeights(r.candidate_percent), &who, reason(&r.reason), None)
            .await?;
        Ok(Response::new(self.status(&r.model).await?))
    }

    async fn advance(&self, req: Request<pb::RolloutRequest>) -> Result<Response<pb::RolloutStatus>, Status> {
        self.op(req, Op::Advance).await
    }

    async fn pause(&self, req: Request<pb::RolloutRequest>) -> Result<Response<pb::RolloutStatus>, Status> {
        self.op(req, Op::Pause).await
    }

    async fn resume(&self, req: Request<pb::RolloutRequest>) -> Result<Response<pb::RolloutStatus>, Status> {
        self.op(req, Op::Resume).await
    }

    async fn promote(&self, req: Request<pb::PromoteRequest>) -> Result<Response<pb::RolloutStatus>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        let v = if r.version == 0 { None } else { Some(version(r.version, "version")?) };
        self.controller.apply(&r.model, Op::Promote(v), &who, reason(&r.reason), None).await?;
        Ok(Response::new(self.status(&r.model).await?))
    }

    async fn rollback(
        &self,
        req: Request<pb::RolloutRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        self.op(req, Op::Rollback).await
    }

    async fn abort(&self, req: Request<pb::RolloutRequest>) -> Result<Response<pb::RolloutStatus>, Status> {
        self.op(req, Op::Abort).await
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = req.into_inner();
        let model = (!r.model.is_empty()).then_some(r.model.as_str());
        let mut events = self
            .controller
            .events(model, u64::try_from(r.since_ms).unwrap_or(0), u64::try_from(r.until_ms).unwrap_or(0))
            .await
            .map_err(Status::from)?;
        let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
        if events.len() > limit {
            events.drain(..events.len() - limit);
        }
        let events = events
            .into_iter()
            .map(|(e, line)| pb::AuditEvent {
                at_ms: e.at_ms as i64,
                model: e.model.clone(),
                rollout_id: e.rollout_id.clone(),
                who: e.actor.who.clone(),
                action: serde_json::to_value(e.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                numbers_json: serde_json::to_string(&e.numbers).unwrap_or_default(),
                event_json: line,
            })
            .collect();
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    async fn sample_size(
        &self,
        req: Request<pb::SampleSizeRequest>,
    ) -> Result<Response<pb::SampleSizeResponse>, Status> {
        use pb::sample_size_request::Metric;
        let r = req.into_inner();
        let alpha = r.alpha.unwrap_or(0.05);
        let power = r.power.unwrap_or(0.8);
        let n = match r
            .metric
            .ok_or_else(|| Status::invalid_argument("metric is not set: give means or proportions"))?
        {
            Metric::Means(m) => modelgate_rollout::sample_size_means(alpha, power, m.variance, m.mde),
            Metric::Proportions(p) => {
                modelgate_rollout::sample_size_proportions(alpha, power, p.baseline, p.target)
            }
        }
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::SampleSizeResponse { per_arm: n, alpha, power }))
    }
}

impl AdminService {
    async fn op(
        &self,
        req: Request<pb::RolloutRequest>,
        op: Op,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        // expected_stage is numbered from 1, as RolloutStatus.stage; the
        // controller counts from 0.
        let expected_stage = match r.expected_stage {
            Some(0) => {
                return Err(Status::invalid_argument(
                    "expected_stage 0 names no stage: stages are numbered from 1, as RolloutStatus.stage",
                ));
            }
            s => s.map(|s| s as usize - 1),
        };
        self.controller
            .apply(&r.model, op, &who, reason(&r.reason), expected_stage)
            .await
            .map_err(|e: ControlError| Status::from(e))?;
        Ok(Response::new(self.status(&r.model).await?))
    }
}
