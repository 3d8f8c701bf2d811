//! `modelgate admin ...`, `modelgate status` and `modelgate rollback`: the
//! operator's side of the admin RPC. Tables by default, one JSON document with
//! `--json`.

use anyhow::Context;
use clap::{Args, Subcommand};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::admin_client::AdminClient;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::cli::predict::CallError;

/// How to reach the admin listener.
#[derive(Debug, Clone, Args)]
pub struct AdminConn {
    /// Admin address (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(long, env = "MODELGATE_ADMIN_ADDR", default_value = "127.0.0.1:50052", global = true)]
    pub admin_addr: String,
    /// Bearer token for the admin listener.
    #[arg(long, env = "MODELGATE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::cli::ClientTls,
}

#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Connects to the admin listener, attaching the token to every call.
pub async fn connect(conn: &AdminConn) -> anyhow::Result<Client> {
    let channel = conn
        .tls
        .endpoint("--admin-addr", &conn.admin_addr)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to the admin listener at {}", conn.admin_addr))?;
    let bearer = match &conn.token {
        Some(t) => Some(format!("Bearer {t}").parse().context("the admin token is not valid metadata")?),
        None => None,
    };
    Ok(AdminClient::with_interceptor(channel, Bearer(bearer)))
}

/// `modelgate admin <call>`.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Models, versions, states, signatures, checksums.
    ListModels,
    /// A model's rollout: strategy, stage, weights, per-arm counts.
    GetRollout(ModelArg),
    /// Start a rollout plan for a model.
    Start(StartArgs),
    /// Canary: set the candidate's share directly.
    SetWeights(SetWeightsArgs),
    /// Canary: next step. Blue/green: switch to green.
    Advance(ModelArg),
    Pause(ModelArg),
    Resume(ModelArg),
    /// Make a candidate the champion.
    Promote(PromoteArgs),
    /// All traffic back to the champion, at once.
    Rollback(ModelArg),
    /// Stop the rollout: candidate at 0%.
    Abort(ModelArg),
    /// The audit log.
    Events(EventsArgs),
    /// Required sample size per arm.
    SampleSize(SampleSizeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ModelArg {
    /// Model name.
    pub model: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Only if the rollout is still at this stage (numbered from 1, as
    /// get-rollout shows them); else ABORTED and nothing changes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub if_stage: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct SetWeightsArgs {
    pub model: String,
    /// The candidate's share, 0-100.
    #[arg(long)]
    pub percent: u32,
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    pub model: String,
    /// The version to promote; default the rollout's candidate.
    #[arg(long)]
    pub version: Option<i64>,
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this model's events.
    #[arg(long)]
    pub model: Option<String>,
    /// Only events at or after this unix-ms time.
    #[arg(long, default_value_t = 0)]
    pub since_ms: i64,
    /// At most this many (newest last).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct SampleSizeArgs {
    /// Means: the metric's variance σ².
    #[arg(long, requires = "mde")]
    pub variance: Option<f64>,
    /// Means: the minimum detectable effect δ.
    #[arg(long)]
    pub mde: Option<f64>,
    /// Proportions: the baseline rate.
    #[arg(long, requires = "target", conflicts_with = "variance")]
    pub baseline: Option<f64>,
    /// Proportions: the rate to detect.
    #[arg(long)]
    pub target: Option<f64>,
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long)]
    pub power: Option<f64>,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    pub model: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// This rollout's p99 latency SLA in ms (over model.toml's).
    #[arg(long)]
    pub p99_sla_ms: Option<f64>,
    /// This rollout's NaN/Inf output rate limit (over model.toml's).
    #[arg(long)]
    pub nan_inf_rate: Option<f64>,
    /// This rollout's error-rate multiple of the champion's (over model.toml's).
    #[arg(long)]
    pub error_ratio: Option<f64>,
    /// This rollout's error-rate floor (over model.toml's).
    #[arg(long)]
    pub error_rate_floor: Option<f64>,
    /// Requests a window needs before a trigger may fire (over model.toml's).
    #[arg(long)]
    pub trigger_min_samples: Option<u64>,
    #[command(subcommand)]
    pub plan: PlanArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PlanArgs {
    /// Load green beside blue, then switch all traffic at once.
    BlueGreen {
        #[arg(long)]
        green: i64,
        /// Seconds blue stays loaded after the switch (default 3600).
        #[arg(long)]
        retention_secs: Option<u64>,
    },
    /// Grow the candidate's share in steps.
    Canary {
        #[arg(long)]
        candidate: i64,
        /// Step percentages, e.g. 1,5,20,50,100.
        #[arg(long, value_delimiter = ',')]
        steps: Vec<u32>,
        /// Minimum seconds per step.
        #[arg(long, default_value_t = 60)]
        step_seconds: u64,
        /// Minimum candidate samples per step.
        #[arg(long, default_value_t = 500)]
        step_samples: u64,
        /// Advance by itself when a step is healthy.
        #[arg(long)]
        auto_advance: bool,
    },
    /// Mirror traffic to versions without affecting replies.
    Shadow {
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<i64>,
        /// Percent of requests mirrored (default 100).
        #[arg(long)]
        fraction: Option<f64>,
    },
    /// A/B test: `--arm name=version:weight`, at least two.
    AbTest {
        #[arg(long = "arm", required = true)]
        arms: Vec<String>,
        #[arg(long)]
        metric: String,
        #[arg(long)]
        mde: f64,
        #[arg(long)]
        variance: f64,
        #[arg(long)]
        alpha: Option<f64>,
        #[arg(long)]
        power: Option<f64>,
        #[arg(long)]
        min_duration_secs: Option<u64>,
        /// Smaller metric values are better (latency, cost).
        #[arg(long)]
        lower_is_better: bool,
    },
    /// Challengers share a fixed slice; promote by hand or automatically.
    ChampionChallenger {
        #[arg(long, value_delimiter = ',', required = true)]
        challengers: Vec<i64>,
        /// Percent for all challengers together (default 10).
        #[arg(long)]
        fraction: Option<f64>,
        /// Automatic gate: the KPI to compare (empty: manual gate).
        #[arg(long, default_value = "")]
        auto_kpi: String,
        #[arg(long, default_value_t = 0.0)]
        auto_threshold: f64,
        #[arg(long, default_value_t = 3600)]
        auto_window_secs: u64,
        /// KPI observations each side needs in the window.
        #[arg(long)]
        auto_min_samples: Option<u64>,
        /// Smaller KPI values are better.
        #[arg(long)]
        auto_lower_is_better: bool,
    },
}

fn parse_arm(s: &str) -> anyhow::Result<pb::AbArm> {
    let (name, rest) = s.split_once('=').context("--arm is name=version:weight")?;
    let (version, weight) = rest.split_once(':').context("--arm is name=version:weight")?;
    Ok(pb::AbArm {
        name: name.to_string(),
        version: version.parse().with_context(|| format!("bad version in --arm {s}"))?,
        weight: weight.parse().with_context(|| format!("bad weight in --arm {s}"))?,
    })
}

/// Builds the StartRollout request from the CLI's words.
pub fn start_request(a: &StartArgs) -> anyhow::Result<pb::StartRolloutRequest> {
    use pb::start_rollout_request::Plan as P;
    let plan = match &a.plan {
        PlanArgs::BlueGreen { green, retention_secs } => {
            P::BlueGreen(pb::BlueGreenPlan { green: *green, retention_secs: *retention_secs })
        }
        PlanArgs::Canary { candidate, steps, step_seconds, step_samples, auto_advance } => {
            P::Canary(pb::CanaryPlan {
                candidate: *candidate,
                steps: steps
                    .iter()
                    .map(|&percent| pb::CanaryStep {
                        percent,
                        min_duration_secs: *step_seconds,
                        min_samples: *step_samples,
                    })
                    .collect(),
                auto_advance: *auto_advance,
            })
        }
        PlanArgs::Shadow { versions, fraction } => {
            P::Shadow(pb::ShadowPlan { versions: versions.clone(), fraction_percent: *fraction })
        }
        PlanArgs::AbTest {
            arms,
            metric,
            mde,
            variance,
            alpha,
            power,
            min_duration_secs,
            lower_is_better,
        } => P::AbTest(pb::AbTestPlan {
            arms: arms.iter().map(|s| parse_arm(s)).collect::<Result<_, _>>()?,
            metric: metric.clone(),
            mde: *mde,
            alpha: *alpha,
            power: *power,
            variance: *variance,
            min_duration_secs: *min_duration_secs,
            lower_is_better: *lower_is_better,
        }),
        PlanArgs::ChampionChallenger {
            challengers,
            fraction,
            auto_kpi,
            auto_threshold,
            auto_window_secs,
            auto_min_samples,
            auto_lower_is_better,
        } => P::ChampionChallenger(pb::ChampionChallengerPlan {
            challengers: challengers.clone(),
            fraction_percent: *fraction,
            auto_kpi: auto_kpi.clone(),
            auto_threshold: *auto_threshold,
            auto_window_secs: *auto_window_secs,
            auto_min_samples: *auto_min_samples,
            auto_lower_is_better: *auto_lower_is_better,
        }),
    };
    let triggers = pb::TriggerOverrides {
        p99_sla_ms: a.p99_sla_ms,
        nan_inf_rate: a.nan_inf_rate,
        error_ratio: a.error_ratio,
        error_rate_floor: a.error_rate_floor,
        min_samples: a.trigger_min_samples,
    };
    let triggers = (triggers != pb::TriggerOverrides::default()).then_some(triggers);
    Ok(pb::StartRolloutRequest {
        model: a.model.clone(),
        plan: Some(plan),
        reason: a.reason.clone(),
        triggers,
    })
}

fn role_name(role: i32) -> String {
    pb::Role::try_from(role)
        .map_or_else(|_| role.to_string(), |r| r.as_str_name().trim_start_matches("ROLE_").to_lowercase())
}

/// A rollout status as text: header, waiting line, and one line per arm with
/// its share and a bar.
pub fn format_status(s: &pb::RolloutStatus) -> String {
    let mut out = String::new();
    if s.rollout_id.is_empty() {
        out.push_str(&format!("{}: champion v{}, no rollout\n", s.model, s.champion));
        return out;
    }
    out.push_str(&format!(
        "{}: {} {} (rollout {}), stage {} of {}, champion v{}\n",
        s.model,
        s.strategy,
        s.state,
        s.rollout_id,
        s.stage,
        s.stages.max(1),
        s.champion
    ));
    if !s.waiting_for.is_empty() {
        out.push_str(&format!("  {}\n", s.waiting_for));
    }
    if s.srm_mismatch {
        out.push_str(&format!(
            "  SAMPLE RATIO MISMATCH: arm counts do not fit the weights (p = {:.2e}); do not trust the comparison\n",
            s.srm_p_value.unwrap_or(0.0)
        ));
    }
    if s.required_samples_per_arm > 0 {
        out.push_str(&format!("  required samples per arm: {}\n", s.required_samples_per_arm));
    }
    for a in &s.alerts {
        out.push_str(&format!("  ALERT {} (v{}): {}\n", a.trigger, a.version, a.reason));
    }
    out.push_str("  arm             version  role        share    requests  errors  p99 ms\n");
    for a in &s.arms {
        let pct = f64::from(a.weight_bp) / 100.0;
        let bar = "#".repeat((pct / 5.0).round() as usize);
        out.push_str(&format!(
            "  {:<15} v{:<7} {:<11} {:>6.2}%  {:>8}  {:>6}  {:>6.2}  {bar}\n",
            a.name,
            a.version,
            role_name(a.role),
            pct,
            a.requests,
            a.errors,
            a.p99_ms
        ));
    }
    for sh in &s.shadows {
        let pct = |x: f64| if x < 0.0 { "-".to_string() } else { format!("{:.2}%", x * 100.0) };
        let diff = if sh.mean_abs_diff < 0.0 { "-".to_string() } else { format!("{:.5}", sh.mean_abs_diff) };
        out.push_str(&format!(
            "  shadow v{} ({:.0}%): {} compared, agreement {}, mean |diff| {diff}, {} dropped, {} errors, NaN/Inf {}, p99 {:.2} ms\n",
            sh.version,
            f64::from(sh.fraction_bp) / 100.0,
            sh.compared,
            pct(sh.agreement_rate),
            sh.dropped,
            sh.errors,
            sh.shadow_nan_inf,
            sh.p99_ms
        ));
    }
    out
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn status_out(conn: &AdminConn, s: &pb::RolloutStatus) -> anyhow::Result<()> {
    if conn.json {
        return print_json(s);
    }
    print!("{}", format_status(s));
    Ok(())
}

/// Runs one admin call.
pub async fn run(conn: AdminConn, cmd: AdminCommand) -> anyhow::Result<()> {
    let mut c = connect(&conn).await?;
    let rr = |m: &ModelArg| pb::RolloutRequest {
        model: m.model.clone(),
        reason: m.reason.clone(),
        expected_stage: m.if_stage,
    };
    match cmd {
        AdminCommand::ListModels => {
            let r = c.list_models(pb::ListModelsRequest {}).await.map_err(CallError)?.into_inner();
            if conn.json {
                return print_json(&r);
            }
            for m in &r.models {
                let rollout = if m.rollout_id.is_empty() {
                    String::new()
                } else {
                    format!(", rollout {}", m.rollout_id)
                };
                println!("{}: champion v{}{rollout}", m.name, m.champion);
                for v in &m.versions {
                    let Some(meta) = &v.metadata else { continue };
                    let state = pb::VersionState::try_from(meta.state).map_or("?".into(), |s| {
                        s.as_str_name().trim_start_matches("VERSION_STATE_").to_string()
                    });
                    let role = if meta.role == 0 { String::new() } else { role_name(meta.role) };
                    let detail = if meta.reason.is_empty() {
                        format!(
                            "sha256 {}… {} bytes, {} sessions",
                            meta.sha256.get(..12).unwrap_or(""),
                            meta.size_bytes,
                            v.sessions
                        )
                    } else {
                        meta.reason.clone()
                    };
                    println!("  v{:<5} {:<7} {:<9} {detail}", meta.version, state, role);
                }
            }
        }
        AdminCommand::GetRollout(m) => {
            let s = c
                .get_rollout(pb::GetRolloutRequest { model: m.model })
                .await
                .map_err(CallError)?
                .into_inner();
            status_out(&conn, &s)?;
        }
        AdminCommand::Start(a) => {
            let s = c.start_rollout(start_request(&a)?).await.map_err(CallError)?.into_inner();
            status_out(&conn, &s)?;
        }
        AdminCommand::SetWeights(a) => {
            let req =
                pb::SetWeightsRequest { model: a.model, candidate_percent: a.percent, reason: a.reason };
            let s = c.set_weights(req).await.map_err(CallError)?.into_inner();
            status_out(&conn, &s)?;
        }
        AdminCommand::Advance(m) => {
            status_out(&conn, &c.advance(rr(&m)).await.map_err(CallError)?.into_inner())?
        }
        AdminCommand::Pause(m) => status_out(&conn, &c.pause(rr(&m)).await.map_err(CallError)?.into_inner())?,
        AdminCommand::Resume(m) => {
            status_out(&conn, &c.resume(rr(&m)).await.map_err(CallError)?.into_inner())?
        }
        AdminCommand::Rollback(m) => {
            status_out(&conn, &c.rollback(rr(&m)).await.map_err(CallError)?.into_inner())?
        }
        AdminCommand::Abort(m) => status_out(&conn, &c.abort(rr(&m)).await.map_err(CallError)?.into_inner())?,
        AdminCommand::Promote(a) => {
            let req =
                pb::PromoteRequest { model: a.model, version: a.version.unwrap_or(0), reason: a.reason };
            status_out(&conn, &c.promote(req).await.map_err(CallError)?.into_inner())?;
        }
        AdminCommand::Events(a) => {
            let req = pb::ListEventsRequest {
                model: a.model.unwrap_or_default(),
                since_ms: a.since_ms,
                until_ms: 0,
                limit: a.limit,
            };
            let r = c.list_events(req).await.map_err(CallError)?.into_inner();
            if conn.json {
                return print_json(&r);
            }
            for e in &r.events {
                println!(
                    "{}  {:<14} {:<12} {:<10} {}  {}",
                    e.at_ms, e.model, e.action, e.who, e.reason, e.numbers_json
                );
            }
        }
        AdminCommand::SampleSize(a) => {
            use pb::sample_size_request::Metric;
            let metric = match (a.variance, a.mde, a.baseline, a.target) {
                (Some(variance), Some(mde), None, None) => {
                    Metric::Means(pb::MeansSampleSize { variance, mde })
                }
                (None, None, Some(baseline), Some(target)) => {
                    Metric::Proportions(pb::ProportionsSampleSize { baseline, target })
                }
                _ => anyhow::bail!(
                    "give --variance and --mde (means), or --baseline and --target (proportions)"
                ),
            };
            let req = pb::SampleSizeRequest { metric: Some(metric), alpha: a.alpha, power: a.power };
            let r = c.sample_size(req).await.map_err(CallError)?.into_inner();
            if conn.json {
                return print_json(&r);
            }
            println!("{} per arm (alpha {}, power {})", r.per_arm, r.alpha, r.power);
        }
    }
    Ok(())
}

fn fmt_interval(i: &Option<pb::Interval>, scale: f64, digits: usize) -> String {
    match i {
        Some(i) => format!("[{:.digits$}, {:.digits$}]", i.low * scale, i.high * scale),
        None => "-".to_string(),
    }
}

fn fmt_comparison(c: &Option<pb::Comparison>, scale: f64, unit: &str) -> String {
    match c {
        Some(c) => format!(
            "{:+.3}{unit} CS {} margin {:.3}{unit} p={:.3} {}",
            c.diff * scale,
            fmt_interval(&c.confidence_sequence, scale, 3),
            c.margin * scale,
            c.p_value,
            c.verdict
        ),
        None => "-".to_string(),
    }
}

/// GetAnalysis as text: the verdict, then per arm its numbers, its
/// comparisons with the champion and its triggers, then business metrics.
pub fn format_analysis(a: &pb::Analysis) -> String {
    let mut out = String::new();
    if a.rollout_id.is_empty() {
        out.push_str(&format!("{}: champion v{}, no rollout to analyse\n", a.model, a.champion));
        return out;
    }
    out.push_str(&format!(
        "{}: {} {} (rollout {}), champion v{}, alpha {}\n",
        a.model, a.strategy, a.state, a.rollout_id, a.champion, a.alpha
    ));
    out.push_str(&format!("  verdict: {}", a.verdict));
    if !a.verdict_reason.is_empty() {
        out.push_str(&format!(" ({})", a.verdict_reason));
    }
    out.push('\n');
    if !a.waiting_for.is_empty() {
        out.push_str(&format!("  {}\n", a.waiting_for));
    }
    match a.srm_p_value {
        Some(p) => out.push_str(&format!(
            "  SRM: chi2 {:.2}, p = {p:.3e}{}\n",
            a.srm_chi2.unwrap_or(f64::NAN),
            if a.srm_mismatch { "  MISMATCH: assignment is broken, do not trust the comparison" } else { "" }
        )),
        None => out.push_str("  SRM: not enough requests yet\n"),
    }
    if a.step_min_samples > 0 || a.required_samples_per_arm > 0 {
        out.push_str(&format!(
            "  sample gates: step {} per candidate, experiment {} per arm\n",
            a.step_min_samples, a.required_samples_per_arm
        ));
    }
    out.push_str(
        "  arm             version  share   stage n   total n  errors (rate, CI)             latency mean ms (CI)          p50     p99  PSI    importance shift\n",
    );
    for arm in &a.arms {
        let psi = arm.psi.map_or("-".to_string(), |p| format!("{p:.3}"));
        let importance = arm.importance_shift.map_or("-".to_string(), |p| format!("{p:.2}"));
        let errors = format!(
            "{} ({:.2}% {})",
            arm.errors,
            arm.error_rate * 100.0,
            fmt_interval(&arm.error_rate_ci, 100.0, 2)
        );
        let latency = format!("{:.3} {}", arm.latency_mean_ms, fmt_interval(&arm.latency_mean_ci, 1.0, 3));
        out.push_str(&format!(
            "  {:<15} v{:<7} {:>5.1}%  {:>7}  {:>8}  {errors:<28}  {latency:<26} {:>6.3}  {:>6.3}  {psi:<6} {importance}\n",
            arm.name,
            arm.version,
            f64::from(arm.weight_bp) / 100.0,
            arm.stage_samples,
            arm.requests,
            arm.p50_ms,
            arm.p99_ms,
        ));
        if arm.errors_vs_champion.is_some() || arm.latency_vs_champion.is_some() {
            out.push_str(&format!(
                "      vs champion: errors {}; latency {}\n",
                fmt_comparison(&arm.errors_vs_champion, 100.0, "pp"),
                fmt_comparison(&arm.latency_vs_champion, 1.0, "ms")
            ));
        }
        for t in &arm.triggers {
            out.push_str(&format!("      trigger {:<13} {:<8} {}\n", t.trigger, t.state, t.text));
        }
    }
    if !a.metrics.is_empty() {
        out.push_str("  metric          arm                 version        n      mean  CI                      p (t)   p (always valid)  decision\n");
        for m in &a.metrics {
            let p = |v: Option<f64>| v.map_or("-".to_string(), |p| format!("{p:.4}"));
            out.push_str(&format!(
                "  {:<15} {:<19} v{:<7} {:>8} {:>9.4}  {:<22}  {:>6}  {:>16}  {}\n",
                m.metric,
                m.arm,
                m.version,
                m.n,
                m.mean,
                fmt_interval(&m.ci, 1.0, 4),
                p(m.p_value),
                p(m.always_valid_p_value),
                m.decision
            ));
        }
    }
    for al in &a.alerts {
        out.push_str(&format!("  ALERT {} (v{}): {}\n", al.trigger, al.version, al.reason));
    }
    out
}

/// `modelgate analysis <model>`.
pub async fn analysis(conn: AdminConn, model: String) -> anyhow::Result<()> {
    let mut c = connect(&conn).await?;
    let a = c.get_analysis(pb::GetAnalysisRequest { model }).await.map_err(CallError)?.into_inner();
    if conn.json {
        return print_json(&a);
    }
    print!("{}", format_analysis(&a));
    Ok(())
}

/// `modelgate status [model]`: every model's rollout, or one.
pub async fn status(conn: AdminConn, model: Option<String>) -> anyhow::Result<()> {
    let mut c = connect(&conn).await?;
    let models = match model {
        Some(m) => vec![m],
        None => c
            .list_models(pb::ListModelsRequest {})
            .await
            .map_err(CallError)?
            .into_inner()
            .models
            .into_iter()
            .map(|m| m.name)
            .collect(),
    };
    let mut all = Vec::new();
    for m in models {
        all.push(c.get_rollout(pb::GetRolloutRequest { model: m }).await.map_err(CallError)?.into_inner());
    }
    if conn.json {
        return print_json(&all);
    }
    for s in &all {
        print!("{}", format_status(s));
    }
    Ok(())
}
