//! Automatic decisions: what the controller's periodic `tick` may change by
//! itself, and the human-readable account of what a rollout waits for.

use std::collections::BTreeMap;

use super::gate;
use super::{Rollout, RolloutState};
use crate::Millis;
use crate::audit::{Action, Actor, AuditEvent};
use crate::observe::{AbArmProgress, AbProgress, ArmObservation, KpiSample, StepVerdict};
use crate::plan::{CanaryStep, Plan, PromotionGate};
use crate::triggers::thousands;

/// A challenger that passed the automatic gate, with the numbers why.
struct Winner {
    version: u64,
    gain: f64,
    threshold: f64,
    numbers: BTreeMap<String, f64>,
    /// The always-valid test of "lift above the threshold" when both arms
    /// report variances, else the relative lift against the threshold.
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
    /// - champion-challenger with an automatic gate: promotes the challenger
    ///   whose lift is shown above the threshold in the current evaluation
    ///   period, when `analysis` is healthy; the old champion takes the
    ///   challenger's place on the slice and a new period starts.
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
                Some(winner) => {
                    let reason = format!(
                        "automatic gate: challenger v{} beat champion v{} by {:.2}%, shown above the threshold {:.2}% (lower bound {:.2}%)",
                        winner.version,
                        self.champion,
                        winner.gain * 100.0,
                        winner.threshold * 100.0,
                        winner.numbers.get("lift_lower_bound").copied().unwrap_or(winner.gain) * 100.0
                    );
                    vec![
                        self.promote_challenger(
                            winner.version,
                            now_ms,
                            &system,
                            Some(reason),
                            winner.numbers,
                        )
                        .decided_by(Some(winner.decision)),
                    ]
                }
                None => Vec::new(),
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
            Plan::ChampionChallenger { .. } => match self.gate_unmet(now_ms, stats) {
                unmet if !unmet.is_empty() => waiting(unmet),
                _ => self.verdict_unmet().map(|v| format!("waiting: {v}")),
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

    /// The automatic champion-challenger gate on the current evaluation
    /// period's sample (the observation's KPI summaries since
    /// [`Self::evaluation_period`] began): the champion and a challenger
    /// each have `min_samples`, and the challenger's lift is shown above the
    /// threshold by the one-sided always-valid test of [`gate`] at the
    /// period's α (see [`period_alpha`]), split evenly over the challengers.
    /// Of several shown, the largest lift wins (ties: listed first).
    fn gate_check(&self, stats: &ArmObservation) -> GateCheck {
        let Plan::ChampionChallenger { challengers, gate, .. } = &self.plan else {
            return GateCheck::NotAGate;
        };
        let PromotionGate::Automatic { threshold, window_secs, min_samples, higher_is_better, .. } = gate
        else {
            return GateCheck::Manual;
        };
        let champion = match stats.kpi(self.champion) {
            Some(k) if k.n >= *min_samples && k.mean != 0.0 && k.mean.is_finite() => k,
            Some(k) if k.n >= *min_samples => return GateCheck::ChampionMean(k.mean),
            k => return GateCheck::ChampionSamples(k.map_or(0, |k| k.n)),
        };
        let alpha = gate::period_alpha(stats.alpha(), *window_secs) / challengers.len().max(1) as f64;
        let mut best: Option<(u64, f64, KpiSample)> = None;
        let mut shown: Option<(u64, f64, KpiSample)> = None;
        for &version in challengers {
            let Some(c) = stats.kpi(version).filter(|c| c.n >= *min_samples && c.mean.is_finite()) else {
                continue;
            };
            let s = if *higher_is_better { 1.0 } else { -1.0 };
            let lift = s * (c.mean - champion.mean) / champion.mean.abs();
            if best.is_none_or(|(_, l, _)| lift > l) {
                best = Some((version, lift, c));
            }
            let passed = match gate::lift_crossed(&champion, &c, *threshold, *higher_is_better, alpha) {
                Some(crossed) => crossed,
                // No variances reported: the point estimate alone.
                None => lift > *threshold,
            };
            if passed && shown.is_none_or(|(_, l, _)| lift > l) {
                shown = Some((version, lift, c));
            }
        }
        match (shown, best) {
            (Some((version, _, c)), _) => GateCheck::Shown { version, champion, challenger: c, alpha },
            (None, Some((version, _, c))) => GateCheck::NotShown { version, champion, challenger: c, alpha },
            (None, None) => GateCheck::NoChallenger,
        }
    }

    /// The gate's winner with its numbers, when [`Self::gate_check`] shows one.
    fn challenger_gate(&self, now_ms: Millis, stats: &ArmObservation) -> Option<Winner> {
        let GateCheck::Shown { version, champion, challenger, alpha } = self.gate_check(stats) else {
            return None;
        };
        let Plan::ChampionChallenger {
            gate: PromotionGate::Automatic { threshold, window_secs, min_samples, higher_is_better, .. },
            ..
        } = &self.plan
        else {
            return None;
        };
        let period = self.evaluation_period(now_ms)?;
        let s = if *higher_is_better { 1.0 } else { -1.0 };
        let gain = s * (challenger.mean - champion.mean) / champion.mean.abs();
        let test = gate::lift_test(&champion, &challenger, *threshold, *higher_is_better, alpha);
        let mut numbers = BTreeMap::from([
            ("champion_mean".to_owned(), champion.mean),
            ("champion_n".to_owned(), champion.n as f64),
            ("challenger_version".to_owned(), version as f64),
            ("challenger_mean".to_owned(), challenger.mean),
            ("challenger_n".to_owned(), challenger.n as f64),
            ("relative_improvement".to_owned(), gain),
            ("threshold".to_owned(), *threshold),
            ("alpha".to_owned(), alpha),
            ("period".to_owned(), (period.index + 1) as f64),
            ("period_started_ms".to_owned(), period.start_ms as f64),
            ("window_secs".to_owned(), *window_secs as f64),
            ("min_samples".to_owned(), *min_samples as f64),
        ]);
        let decision = match test {
            Some(t) => {
                numbers.insert("lift_lower_bound".to_owned(), t.lower_bound);
                numbers.insert("log_evidence".to_owned(), t.log_evidence);
                crate::DecidingTest::new("lift_above_threshold", t.lower_bound, *threshold)
            }
            None => crate::DecidingTest::new("relative_lift", gain, *threshold),
        }
        .with_n(self.champion, champion.n)
        .with_n(version, challenger.n);
        Some(Winner { version, gain, threshold: *threshold, numbers, decision })
    }

    /// What the automatic gate waits for, in words, with its numbers.
    fn gate_unmet(&self, now_ms: Millis, stats: &ArmObservation) -> Vec<String> {
        let Plan::ChampionChallenger { gate, .. } = &self.plan else {
            return Vec::new();
        };
        let PromotionGate::Automatic { kpi, threshold, window_secs, min_samples, higher_is_better } = gate
        else {
            return vec!["an operator to promote a challenger (manual gate)".to_owned()];
        };
        let period = self.evaluation_period(now_ms).map_or(String::new(), |p| {
            format!(
                "period {} ({} in): ",
                p.index + 1,
                fmt_progress(now_ms.saturating_sub(p.start_ms), *window_secs)
            )
        });
        let unmet = match self.gate_check(stats) {
            GateCheck::NotAGate => return Vec::new(),
            GateCheck::Manual => "an operator to promote a challenger (manual gate)".to_owned(),
            GateCheck::ChampionMean(mean) => format!(
                "champion v{} '{kpi}' mean is {mean}; expected a finite, non-zero mean to compare against",
                self.champion
            ),
            GateCheck::ChampionSamples(n) => {
                format!("champion v{} {n} of {min_samples} '{kpi}' samples", self.champion)
            }
            GateCheck::NoChallenger => format!("a challenger with {min_samples} '{kpi}' samples"),
            GateCheck::NotShown { version, champion, challenger, alpha } => {
                match gate::lift_test(&champion, &challenger, *threshold, *higher_is_better, alpha) {
                    Some(t) => format!(
                        "best challenger v{version} lifts '{kpi}' by {:.2}% (always-valid lower bound {:.2}% at α {}); needs the bound above {:.2}%",
                        t.lift * 100.0,
                        t.lower_bound * 100.0,
                        fmt_alpha(alpha),
                        threshold * 100.0
                    ),
                    None => format!(
                        "best challenger v{version} improves '{kpi}' by {:.2}%; needs more than {:.2}%",
                        (if *higher_is_better { 1.0 } else { -1.0 }) * (challenger.mean - champion.mean)
                            / champion.mean.abs()
                            * 100.0,
                        threshold * 100.0
                    ),
                }
            }
            GateCheck::Shown { .. } => return Vec::new(),
        };
        vec![format!("{period}{unmet}")]
    }
}

/// What the automatic gate found this tick.
enum GateCheck {
    NotAGate,
    Manual,
    ChampionMean(f64),
    ChampionSamples(u64),
    NoChallenger,
    NotShown { version: u64, champion: KpiSample, challenger: KpiSample, alpha: f64 },
    Shown { version: u64, champion: KpiSample, challenger: KpiSample, alpha: f64 },
}

fn fmt_alpha(alpha: f64) -> String {
    if alpha >= 0.01 { format!("{alpha:.2}") } else { format!("{alpha:.2e}") }
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
