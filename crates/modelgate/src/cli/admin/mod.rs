//! `modelgate admin ...`, `modelgate status` and `modelgate rollback`: the
//! operator's side of the admin RPC. Tables by default, one JSON document with
//! `--json`.
//!
//! This module runs the calls and prints their answers; `client` connects to
//! the admin listener, `commands` holds the clap definitions (and turns
//! `admin start` into its request), `render` the status and analysis text.

use modelgate_proto::v1 as pb;

use crate::cli::predict::CallError;

mod client;
mod commands;
mod render;
mod watch;

pub use client::{AdminConn, Bearer, Client, connect};
pub use commands::{
    AdminCommand, EventsArgs, ModelArg, PlanArgs, PromoteArgs, SampleSizeArgs, SetWeightsArgs, StartArgs,
    start_request,
};
pub use render::{format_analysis, format_status};

pub(crate) use render::role_name;

use crate::cli::output::print_json;
use crate::cli::when::{format_ms, parse_when_ms};

fn status_out(conn: &AdminConn, s: &pb::RolloutStatus) -> anyhow::Result<()> {
    if conn.json {
        return print_json(s);
    }
    out!("{}", format_status(s));
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
                outln!("{}: champion v{}{rollout}", m.name, m.champion);
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
                    outln!("  v{:<5} {:<7} {:<9} {detail}", meta.version, state, role);
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
            if a.wait {
                if !conn.json {
                    out!("{}", format_status(&s));
                }
                let timeout = a.wait_timeout.map(std::time::Duration::from_secs_f64);
                return watch::wait(&mut c, &s, timeout, WAIT_POLL, conn.json).await;
            }
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
            let when = |flag: &str, v: &Option<String>| match v {
                Some(v) => parse_when_ms(v).map_err(|e| anyhow::anyhow!("{flag}: {e:#}")),
                None => Ok(0),
            };
            let req = pb::ListEventsRequest {
                model: a.model.unwrap_or_default(),
                since_ms: when("--since", &a.since)?,
                until_ms: when("--until", &a.until)?,
                limit: a.limit,
            };
            let r = c.list_events(req).await.map_err(CallError)?.into_inner();
            if conn.json {
                return print_json(&r);
            }
            for e in &r.events {
                outln!(
                    "{}  {:<14} {:<12} {:<10} {}{}",
                    format_ms(e.at_ms),
                    e.model,
                    e.action,
                    e.who,
                    e.reason,
                    render::numbers_text(&e.numbers_json)
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
            outln!("{} per arm (alpha {}, power {})", r.per_arm, r.alpha, r.power);
        }
    }
    Ok(())
}

/// `modelgate analysis <model>`.
pub async fn analysis(conn: AdminConn, model: String) -> anyhow::Result<()> {
    let mut c = connect(&conn).await?;
    let a = c.get_analysis(pb::GetAnalysisRequest { model }).await.map_err(CallError)?.into_inner();
    if conn.json {
        return print_json(&a);
    }
    out!("{}", format_analysis(&a));
    Ok(())
}

/// How often `--wait` looks at the rollout.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `modelgate status [model] [--watch]`: every model's rollout, or one;
/// with `--watch`, one model's redrawn until the rollout ends.
pub async fn status(conn: AdminConn, model: Option<String>, watch: Option<f64>) -> anyhow::Result<()> {
    let mut c = connect(&conn).await?;
    if let (Some(interval), Some(model)) = (watch, &model) {
        return watch::watch(&mut c, model, std::time::Duration::from_secs_f64(interval), conn.json).await;
    }
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
        out!("{}", format_status(s));
    }
    Ok(())
}
