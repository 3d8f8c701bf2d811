//! Automatic decisions: what the controller's periodic `tick` may change by
//! itself, and the human-readable account of what a rollout waits for.

use std::collections::BTreeMap;

use super::{Rollout, RolloutState};
use crate::Millis;
use crate::audit::{Action, Actor, AuditEvent};
use crate::observe::{AbArmProgress, AbProgress, ArmObservation, StepVerdict};
use crate::plan::{CanaryStep, Plan, PromotionGate};
use crate::triggers::thousands;

/// A challenger that passed the automatic gate, with the numbers why.
struct Winner {
    version: u64,
    gain: f64,
    threshold: f64,
    numbers: BTreeMap<String, f64>,
    /// The always-valid test of the lift when both arms report variances,
    /// else the relative lift against the threshold.
    decision: crate::DecidingTest,
}

impl Rollout {
    /// One controller tick. Only a running (not paused, not finished)
    /// rollout decides anything:
    /// - canary with `auto_advance`: advances once the step's minimum
    ///   duration has passed, its minimum samples are in and `analysis` is
    ///   healthy, unless an operator override holds it;
    /// - blue/green after the switch: promotes green when blue's retention
    ///   ends, unless `analysis` is unhealthy;
    /// - A/B: emits `ExperimentReady` once, when every arm has its samples
    ///   and the minimum duration passed (promotion stays a person's call);
    /// - champion-challenger with an automatic gate: promotes the best
    ///   challenger once it beats the champion by the threshold and
    ///   `analysis` is healthy.
    ///
    /// Unhealthy verdicts only block here; rolling back is the caller's
    /// decision ([`Self::rollback_triggered`]). See [`Self::waiting_for`] for
    /// what a rollout that did nothing is waiting for.
    pub fn tick(
        &mut self,
        now_ms: Millis,
        stats: &ArmObservation,
        analysis: &StepVerdict,
    ) -> Vec<AuditEvent> {
        if self.state != RolloutState::Running {
            return Vec::new();
        }
        self.last_verdict = Some(analysis.clone());
        let healthy = *analysis == StepVerdict::Healthy;
        let system = Actor::system();
        match &self.plan {
            Plan::Canary { auto_advance: true, .. } if healthy && self.canary_override_percent.is_none() => {
                let Some((step, candidate)) = self.canary_step() else {
                    return Vec::new();
                };
                if !self.canary_gates(now_ms, stats).is_empty() {
                    return Vec::new();
                }
                let samples = stats.samples(candidate);
                let elapsed_s = now_ms.saturating_sub(self.stage_started_ms) / 1000;
                let numbers = BTreeMap::from([
                    ("samples".to_owned(), samples as f64),
                    ("min_samples".to_owned(), step.min_samples as f64),
                    ("elapsed_secs".to_owned(), elapsed_s as f64),
                    ("min_duration_secs".to_owned(), step.min_duration_secs as f64),
                ]);
                let reason = format!(
                    "auto-advance: {samples} samples (min {}), {elapsed_s} s in step (min {} s), analysis healthy",
                    step.min_samples, step.min_duration_secs
                );
                self.advance_canary(now_ms, &system, Some(reason), numbers)
            }
            Plan::BlueGreen { green, .. } => {
                let green = *green;
                let retention_over =
                    self.stage >= 1 && self.blue_retained_until_ms.is_some_and(|until| now_ms >= until);
                if !retention_over || matches!(analysis, StepVerdict::Unhealthy(_)) {
                    return Vec::new();
                }
                let reason = format!(
                    "blue v{} retention ended with green v{green} serving all traffic",
                    self.champion
                );
                vec![self.promote_to(green, now_ms, &system, Some(reason), BTreeMap::new())]
            }
            Plan::AbTest { metric, .. } => {
                let metric = metric.clone();
                match self.ab_progress(now_ms, stats) {
                    Some(progress) if progress.complete && !self.experiment_ready => {
                        self.experiment_ready = true;
                        let before = self.routing_table().weights();
                        let reason = format!(
                            "every arm has its {} samples for '{metric}' and the minimum duration passed",
                            progress.required_per_arm
                        );
                        let mut event =
                            self.event(&before, now_ms, &system, Action::ExperimentReady, Some(reason));
                        event = event
                            .number("required_per_arm", progress.required_per_arm as f64)
                            .number("elapsed_secs", (progress.elapsed_ms / 1000) as f64);
                        for arm in &progress.arms {
                            event = event.number(&format!("samples.{}", arm.name), arm.samples as f64);
                        }
                        vec![event]
                    }
                    _ => Vec::new(),
                }
            }
            Plan::ChampionChallenger { .. } if healthy => match self.challenger_gate(now_ms, stats) {
                Ok(winner) => {
                    let reason = format!(
                        "automatic gate: challenger v{} beat champion v{} by {:.2}% (threshold {:.2}%)",
                        winner.version,
                        self.champion,
                        winner.gain * 100.0,
                        winner.threshold * 100.0
                    );
                    vec![
                        self.promote_to(winner.version, now_ms, &system, Some(reason), winner.numbers)
                            .decided_by(Some(winner.decision)),
                    ]
                }
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// What the rollout is waiting for at `now_ms` given `stats`, e.g.
    /// "waiting: 312 of 500 samples; 45 s of 60 s". `None` when finished,
    /// or when the next tick will act (every automatic gate is met).
    pub fn waiting_for(&self, now_ms: Millis, stats: &ArmObservation) -> Option<String> {
        match self.state {
            RolloutState::Running => {}
            RolloutState::Paused => {
                return Some("paused: automatic decisions are off until resume".to_owned());
            }
            _ => return None,
        }
        match &self.plan {
            Plan::Canary { auto_advance, .. } => {
                if let Some(percent) = self.canary_override_percent {
                    return Some(format!(
                        "held at {percent}% by an operator override: an operator to advance"
                    ));
                }
                let mut unmet = self.canary_gates(now_ms, stats);
                if !auto_advance {
                    unmet.push("an operator to advance (auto-advance is off)".to_owned());
                } else if let Some(verdict) = self.verdict_unmet() {
                    unmet.push(verdict);
                }
                waiting(unmet)
            }
            Plan::BlueGreen { green, .. } => Some(match self.blue_retained_until_ms {
                Some(until) if self.stage >= 1 => format!(
                    "green v{green} serves all traffic; blue v{} stays loaded for rollback for {} more s",
                    self.champion,
                    until.saturating_sub(now_ms).div_ceil(1000)
                ),
                _ => format!("waiting: an operator to switch to green v{green}"),
            }),
            Plan::Shadow(shadow) => Some(format!(
                "shadowing {} on {}% of requests: an operator to promote, complete or abort",
                list_versions(&shadow.versions),
                shadow.fraction_percent
            )),
            Plan::AbTest { .. } => {
                let progress = self.ab_progress(now_ms, stats)?;
                if progress.complete {
                    return Some(format!(
                        "experiment ready: every arm has its {} samples: an operator to promote an arm or complete",
                        progress.required_per_arm
                    ));
                }
                let mut unmet: Vec<String> = progress
                    .arms
                    .iter()
                    .filter(|a| a.samples < a.required)
                    .map(|a| {
                        format!("{} {} of {} samples", a.name, thousands(a.samples), thousands(a.required))
                    })
                    .collect();
                if progress.elapsed_ms < progress.min_duration_ms {
                    unmet.push(fmt_progress(progress.elapsed_ms, progress.min_duration_ms / 1000));
                }
                waiting(unmet)
            }
            Plan::ChampionChallenger { .. } => match self.challenger_gate(now_ms, stats) {
                Err(unmet) => waiting(unmet),
                Ok(_) => self.verdict_unmet().map(|v| format!("waiting: {v}")),
            },
        }
    }

    /// An A/B test's progress toward its required samples per arm and its
    /// minimum duration; `None` for other strategies.
    pub fn ab_progress(&self, now_ms: Millis, stats: &ArmObservation) -> Option<AbProgress> {
        let Plan::AbTest { arms, min_duration_secs, .. } = &self.plan else {
            return None;
        };
        let required = self.ab_required_per_arm?;
        let arms: Vec<AbArmProgress> = arms
            .iter()
            .map(|a| AbArmProgress {
                name: a.name.clone(),
                version: a.version,
                samples: stats.samples(a.version),
                required,
            })
            .collect();
        let elapsed_ms = now_ms.saturating_sub(self.started_ms);
        let min_duration_ms = min_duration_secs.saturating_mul(1000);
        let complete = elapsed_ms >= min_duration_ms && arms.iter().all(|a| a.samples >= required);
        Some(AbProgress { required_per_arm: required, arms, elapsed_ms, min_duration_ms, complete })
    }

    /// The live canary step and the candidate.
    fn canary_step(&self) -> Option<(CanaryStep, u64)> {
        match &self.plan {
            Plan::Canary { candidate, steps, .. } => steps.get(self.stage).map(|s| (*s, *candidate)),
            _ => None,
        }
    }

    /// The canary step's unmet duration and sample gates, in words.
    fn canary_gates(&self, now_ms: Millis, stats: &ArmObservation) -> Vec<String> {
        let Some((step, candidate)) = self.canary_step() else {
            return Vec::new();
        };
        let mut unmet = Vec::new();
        let samples = stats.samples(candidate);
        if samples < step.min_samples {
            unmet.push(format!("{} of {} samples", thousands(samples), thousands(step.min_samples)));
        }
        let elapsed_ms = now_ms.saturating_sub(self.stage_started_ms);
        if elapsed_ms < step.min_duration_secs.saturating_mul(1000) {
            unmet.push(fmt_progress(elapsed_ms, step.min_duration_secs));
        }
        unmet
    }

    /// The last verdict, in words, unless it was healthy.
    fn verdict_unmet(&self) -> Option<String> {
        match &self.last_verdict {
            Some(StepVerdict::Healthy) => None,
            Some(StepVerdict::Inconclusive) => Some("safety analysis inconclusive".to_owned()),
            Some(StepVerdict::Waiting(what)) => Some(what.clone()),
            Some(StepVerdict::Unhealthy(found)) => {
                Some(format!("safety analysis unhealthy: {}", StepVerdict::unhealthy_text(found)))
            }
            None => Some("a safety analysis".to_owned()),
        }
    }

    /// The automatic champion-challenger gate: a full window has passed,
    /// the champion and a challenger each have `min_samples` KPI samples,
    /// and the best challenger's relative improvement reaches `threshold`.
    /// Ties go to the challenger listed first. `Err` lists what is unmet.
    fn challenger_gate(&self, now_ms: Millis, stats: &ArmObservation) -> Result<Winner, Vec<String>> {
        let Plan::ChampionChallenger { challengers, gate, .. } = &self.plan else {
            return Err(Vec::new());
        };
        let PromotionGate::Automatic { kpi, threshold, window_secs, min_samples, higher_is_better } = gate
        else {
            return Err(vec!["an operator to promote a challenger (manual gate)".to_owned()]);
        };
        let mut unmet = Vec::new();
        let elapsed_ms = now_ms.saturating_sub(self.stage_started_ms);
        if elapsed_ms < window_secs.saturating_mul(1000) {
            unmet.push(format!("{} of the first window", fmt_progress(elapsed_ms, *window_secs)));
        }
        let champion = match stats.kpi(self.champion) {
            Some(k) if k.n >= *min_samples && k.mean != 0.0 && k.mean.is_finite() => Some(k),
            Some(k) if k.n >= *min_samples => {
                unmet.push(format!(
                    "champion v{} '{kpi}' mean is {}; expected a finite, non-zero mean to compare against",
                    self.champion, k.mean
                ));
                None
            }
            k => {
                let n = k.map_or(0, |k| k.n);
                unmet.push(format!("champion v{} {n} of {min_samples} '{kpi}' samples", self.champion));
                None
            }
        };
        let mut best: Option<(u64, f64, f64, u64)> = None;
        let mut significant: Option<f64> = None;
        if let Some(champion) = champion {
            for &version in challengers {
                let Some(c) = stats.kpi(version).filter(|c| c.n >= *min_samples && c.mean.is_finite()) else {
                    continue;
                };
                let gain = (c.mean - champion.mean) / champion.mean.abs();
                let gain = if *higher_is_better { gain } else { -gain };
                if best.is_none_or(|(_, g, _, _)| gain > g) {
                    best = Some((version, gain, c.mean, c.n));
                }
            }
            match best {
                None => unmet.push(format!("a challenger with {min_samples} '{kpi}' samples")),
                Some((version, gain, _, _)) if gain < *threshold => unmet.push(format!(
                    "best challenger v{version} improves '{kpi}' by {:.2}%; needs {:.2}%",
                    gain * 100.0,
                    threshold * 100.0
                )),
                Some((version, _, _, _)) => {
                    let alpha = stats.alpha();
                    significant =
                        significance(&champion, &stats.kpi(version), *threshold, *higher_is_better, alpha);
                    if let Some(p) = significant
                        && p > alpha
                    {
                        unmet.push(format!(
                            "challenger v{version}'s lift on '{kpi}' is not yet significant: always-valid p = {p:.3}, needs ≤ {alpha}"
                        ));
                    }
                }
            }
        }
        match (champion, best) {
            (Some(champion), Some((version, gain, mean, n))) if unmet.is_empty() => Ok(Winner {
                version,
                gain,
                threshold: *threshold,
                decision: match significant {
                    Some(p) => crate::DecidingTest::new("msprt", p, stats.alpha()),
                    None => crate::DecidingTest::new("relative_lift", gain, *threshold),
                }
                .with_n(self.champion, champion.n)
                .with_n(version, n),
                numbers: BTreeMap::from([
                    ("champion_mean".to_owned(), champion.mean),
                    ("champion_n".to_owned(), champion.n as f64),
                    ("challenger_version".to_owned(), version as f64),
                    ("challenger_mean".to_owned(), mean),
                    ("challenger_n".to_owned(), n as f64),
                    ("relative_improvement".to_owned(), gain),
                    ("threshold".to_owned(), *threshold),
                    ("window_secs".to_owned(), *window_secs as f64),
                    ("min_samples".to_owned(), *min_samples as f64),
                ]),
            }),
            _ => Err(unmet),
        }
    }
}

/// The always-valid one-sided p-value that `challenger` beats `champion`
/// on the KPI (mSPRT with τ = the threshold's absolute size), when both
/// report variances; `None` when they do not (the gate then goes by the
/// means alone). Both variances 0 with different means is certainty: 0.
fn significance(
    champion: &crate::KpiSample,
    challenger: &Option<crate::KpiSample>,
    threshold: f64,
    higher_is_better: bool,
    alpha: f64,
) -> Option<f64> {
    let c = challenger.as_ref()?;
    let (vc, vh) = (c.variance?, champion.variance?);
    let diff = if higher_is_better { c.mean - champion.mean } else { champion.mean - c.mean };
    let var_of_diff = vc / c.n.max(1) as f64 + vh / champion.n.max(1) as f64;
    if var_of_diff <= 0.0 {
        return Some(if diff > 0.0 { 0.0 } else { 1.0 });
    }
    let tau = (threshold * champion.mean.abs()).max(f64::MIN_POSITIVE.sqrt());
    let seq = crate::analysis::sequential_diff(diff, var_of_diff, tau * tau, alpha).ok()?;
    // One-sided: evidence in the challenger's favour only.
    Some(if seq.diff > 0.0 { seq.p_value } else { 1.0 })
}

/// "waiting: a; b", or `None` when nothing is unmet.
fn waiting(unmet: Vec<String>) -> Option<String> {
    (!unmet.is_empty()).then(|| format!("waiting: {}", unmet.join("; ")))
}

fn list_versions(versions: &[u64]) -> String {
    versions.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")
}

/// "45 s of 60 s"; minutes, hours or days for longer totals.
fn fmt_progress(elapsed_ms: Millis, total_secs: u64) -> String {
    let elapsed = elapsed_ms / 1000;
    match total_secs {
        0..120 => format!("{elapsed} s of {total_secs} s"),
        120..7200 => format!("{} min of {} min", elapsed / 60, total_secs / 60),
        7200..172_800 => format!("{:.1} h of {:.1} h", elapsed as f64 / 3600.0, total_secs as f64 / 3600.0),
        _ => format!("{:.1} d of {:.1} d", elapsed as f64 / 86_400.0, total_secs as f64 / 86_400.0),
    }
}
