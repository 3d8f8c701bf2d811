//! `modelgate status <model> --watch` and `admin start … --wait`: follow a
//! rollout until it ends, and end with a status that says how it ended
//! (see `cli::output` for the exit statuses).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_rollout::Plan;

use super::client::Client;
use super::render::{format_status, role_name};
use crate::cli::output::{EXIT_ABORTED, EXIT_ROLLED_BACK, EXIT_TIMED_OUT, Outcome, print_json};
use crate::cli::predict::CallError;

/// How a rollout ended, from its state: `Ok` for promoted or completed, the
/// [`Outcome`] to exit with for rolled back or aborted, `None` while it runs.
fn ended(s: &pb::RolloutStatus) -> Option<Result<(), Outcome>> {
    let message = |how: &str| format!("{}: rollout {} {how}", s.model, s.rollout_id);
    match s.state.as_str() {
        "promoted" | "completed" => Some(Ok(())),
        "rolled_back" => Some(Err(Outcome {
            code: "ROLLED_BACK",
            message: message("was rolled back"),
            exit: EXIT_ROLLED_BACK,
        })),
        "aborted" => {
            Some(Err(Outcome { code: "ABORTED", message: message("was aborted"), exit: EXIT_ABORTED }))
        }
        _ => None,
    }
}

/// A 30-cell bar for `done` of `goal`.
fn bar(done: f64, goal: f64) -> String {
    const WIDTH: usize = 30;
    let frac = if goal > 0.0 { (done / goal).clamp(0.0, 1.0) } else { 1.0 };
    let full = (frac * WIDTH as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), "-".repeat(WIDTH - full))
}

/// Progress bars toward what the current stage needs before it may move on:
/// the canary step's samples and time, or the A/B test's required samples
/// per arm and minimum duration. Empty for strategies without such gates.
pub(super) fn progress(s: &pb::RolloutStatus, now_ms: i64) -> String {
    let Ok(plan) = serde_json::from_str::<Plan>(&s.plan_json) else { return String::new() };
    let secs_since = |ms: i64| (now_ms.saturating_sub(ms).max(0) as f64) / 1000.0;
    let (samples, needed, elapsed, min_secs) = match &plan {
        Plan::Canary { steps, .. } => {
            let Some(step) = s.stage.checked_sub(1).and_then(|i| steps.get(i as usize)) else {
                return String::new();
            };
            let candidate =
                s.arms.iter().filter(|a| a.role == pb::Role::Canary as i32).map(|a| a.requests).sum();
            (candidate, step.min_samples, secs_since(s.stage_started_at_ms), step.min_duration_secs)
        }
        Plan::AbTest { min_duration_secs, .. } => {
            let fewest = s.arms.iter().map(|a| a.requests).min().unwrap_or(0);
            (fewest, s.required_samples_per_arm, secs_since(s.started_at_ms), *min_duration_secs)
        }
        _ => return String::new(),
    };
    let what = if matches!(plan, Plan::AbTest { .. }) { "per arm" } else { "candidate" };
    format!(
        "  samples {} {samples} of {needed} ({what})\n  time    {} {:.0} of {min_secs} s\n",
        bar(samples as f64, needed as f64),
        bar(elapsed, min_secs as f64),
        elapsed.min(min_secs as f64)
    )
}

/// One frame: the status table, the progress bars and the verdict.
fn frame(s: &pb::RolloutStatus, a: Option<&pb::Analysis>, now_ms: i64) -> String {
    let mut out = format_status(s);
    out.push_str(&progress(s, now_ms));
    if let Some(a) = a.filter(|a| !a.verdict.is_empty() && a.rollout_id == s.rollout_id) {
        out.push_str(&format!("  verdict: {}", a.verdict));
        if !a.verdict_reason.is_empty() {
            out.push_str(&format!(" ({})", a.verdict_reason));
        }
        out.push('\n');
    }
    out
}

fn now_ms() -> i64 {
    i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX)
}

/// `modelgate status <model> --watch`: redraws the rollout until it ends (on
/// a terminal in place; otherwise a frame each time the rollout moves, for
/// a CI log), then exits by how it ended. A model with no rollout is printed
/// once and the watch ends.
pub async fn watch(c: &mut Client, model: &str, interval: Duration, json: bool) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut last = String::new();
    loop {
        let s = c
            .get_rollout(pb::GetRolloutRequest { model: model.into() })
            .await
            .map_err(CallError)?
            .into_inner();
        let a = c
            .get_analysis(pb::GetAnalysisRequest { model: model.into() })
            .await
            .map_err(CallError)?
            .into_inner();
        let over = s.rollout_id.is_empty() || ended(&s).is_some();
        // Off a terminal (a CI log) and under --json, a frame is printed when
        // the rollout moves (state, stage, weights, verdict), not on every
        // tick of its clock.
        let weights: Vec<u32> = s.arms.iter().map(|arm| arm.weight_bp).collect();
        let moved = format!("{}/{}/{}/{weights:?}/{}", s.rollout_id, s.state, s.stage, a.verdict);
        if json {
            if moved != last {
                print_json(&s)?;
            }
        } else if terminal {
            // Home, clear the screen, draw: no scrolling history of frames.
            out!("\x1b[H\x1b[2J{}", frame(&s, Some(&a), now_ms()));
        } else if moved != last || over {
            outln!("{}", frame(&s, Some(&a), now_ms()));
        }
        last = moved;
        if over {
            return match ended(&s) {
                Some(Err(outcome)) => Err(outcome.into()),
                _ => Ok(()),
            };
        }
        tokio::time::sleep(interval).await;
    }
}

/// `admin start … --wait`: after the rollout `started` began, follows it
/// until it ends, printing one line per change of stage or state, then the
/// final status. Promoted or completed: Ok; rolled back or aborted: that
/// [`Outcome`]; replaced by another rollout: aborted; `timeout` passed:
/// timed out (the rollout goes on; only the waiting stops).
pub async fn wait(
    c: &mut Client,
    started: &pb::RolloutStatus,
    timeout: Option<Duration>,
    interval: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut seen = (started.state.clone(), started.stage);
    loop {
        let s = c
            .get_rollout(pb::GetRolloutRequest { model: started.model.clone() })
            .await
            .map_err(CallError)?
            .into_inner();
        if s.rollout_id != started.rollout_id {
            return Err(Outcome {
                code: "ABORTED",
                message: format!(
                    "{}: rollout {} was replaced by {}",
                    started.model,
                    started.rollout_id,
                    if s.rollout_id.is_empty() { "no rollout".to_string() } else { s.rollout_id.clone() }
                ),
                exit: EXIT_ABORTED,
            }
            .into());
        }
        if let Some(end) = ended(&s) {
            if json {
                print_json(&s)?;
            } else {
                out!("{}", format_status(&s));
            }
            return end.map_err(Into::into);
        }
        if !json && (s.state.clone(), s.stage) != seen {
            let share: Vec<String> = s
                .arms
                .iter()
                .map(|a| {
                    format!("v{} {} {:.2}%", a.version, role_name(a.role), f64::from(a.weight_bp) / 100.0)
                })
                .collect();
            outln!("{}: {} stage {} of {}: {}", s.model, s.state, s.stage, s.stages.max(1), share.join(", "));
            seen = (s.state.clone(), s.stage);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Outcome {
                code: "TIMED_OUT",
                message: format!(
                    "{}: rollout {} still {} at stage {} of {} after --wait-timeout; it goes on",
                    s.model,
                    s.rollout_id,
                    s.state,
                    s.stage,
                    s.stages.max(1)
                ),
                exit: EXIT_TIMED_OUT,
            }
            .into());
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(stage: u32, candidate_requests: u64, stage_started_at_ms: i64) -> pb::RolloutStatus {
        pb::RolloutStatus {
            model: "m".into(),
            rollout_id: "r1".into(),
            strategy: "canary".into(),
            state: "running".into(),
            stage,
            stages: 2,
            stage_started_at_ms,
            plan_json: r#"{"strategy":"canary","candidate":2,"steps":[{"percent":10,"min_duration_secs":60,"min_samples":500},{"percent":100,"min_duration_secs":0,"min_samples":0}]}"#.into(),
            arms: vec![
                pb::ArmStatus { version: 1, role: pb::Role::Champion as i32, requests: 9000, ..Default::default() },
                pb::ArmStatus {
                    version: 2,
                    role: pb::Role::Canary as i32,
                    requests: candidate_requests,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_canary_step_shows_its_samples_and_time_toward_the_gates() {
        let p = progress(&canary(1, 250, 1_000), 31_000);
        assert!(p.contains(&format!("[{}{}] 250 of 500 (candidate)", "#".repeat(15), "-".repeat(15))), "{p}");
        assert!(p.contains(&format!("[{}{}] 30 of 60 s", "#".repeat(15), "-".repeat(15))), "{p}");
        // Past the gates the bars are full and the time stops at the minimum.
        let p = progress(&canary(1, 900, 0), 600_000);
        assert!(p.contains(&format!("[{}] 900 of 500", "#".repeat(30))) && p.contains("60 of 60 s"), "{p}");
    }

    #[test]
    fn how_a_rollout_ended_sets_the_exit_status() {
        let mut s = canary(2, 0, 0);
        assert!(ended(&s).is_none());
        s.state = "promoted".into();
        assert!(matches!(ended(&s), Some(Ok(()))));
        s.state = "rolled_back".into();
        assert!(matches!(ended(&s), Some(Err(Outcome { exit: EXIT_ROLLED_BACK, .. }))));
        s.state = "aborted".into();
        assert!(matches!(ended(&s), Some(Err(Outcome { exit: EXIT_ABORTED, .. }))));
    }
}
