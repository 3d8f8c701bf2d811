//! The controller's statistics: running totals per rollout arm, the
//! always-valid comparisons that let a canary step advance, business-metric
//! results from outcomes, and the numbers GetAnalysis shows.
//!
//! The hard triggers judge the sliding window (recent behaviour, fast
//! rollback). The sequential comparisons here judge everything a version
//! served since the rollout started, folded out of the same windows as their
//! intervals close, so the hot path records once and the mSPRT sees a sample
//! that only grows, as its always-valid guarantee requires. The totals live
//! in memory: after a restart they start again (the stage counts, which the
//! sample gates use, are persisted).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use modelgate_registry::ModelConfig;
use modelgate_rollout::analysis::{self, MarginVerdict, SequentialDiff, Summary};
use modelgate_rollout::plan::CanaryStep;
use modelgate_rollout::{
    DecidingTest, Millis, Plan, PromotionGate, Regression, RegressionKind, Rollout, StepVerdict,
    TriggerConfig,
};
use modelgate_telemetry::{VersionStats, WindowSnapshot};

use crate::serving::outcome::OutcomeStore;

/// One arm's totals since the rollout started, folded out of its window.
#[derive(Debug)]
struct Running {
    /// Which window the indexes belong to (a reloaded version gets a new one).
    window: usize,
    /// The first interval not folded in yet.
    next: u64,
    total: WindowSnapshot,
}

/// Running totals per (rollout id, version).
#[derive(Debug, Default)]
pub struct RunningTotals {
    map: BTreeMap<(String, u64), Running>,
}

impl RunningTotals {
    /// Everything `version` served in rollout `rollout_id` since it was first
    /// asked about, as of `now`: closed intervals are folded in for good, the
    /// open one is added to the answer. The controller passes
    /// `Instant::now()`; the decision simulator its simulated time.
    pub fn total(
        &mut self,
        rollout_id: &str,
        version: u64,
        stats: &Arc<VersionStats>,
        now: Instant,
    ) -> WindowSnapshot {
        let w = &stats.window;
        let id = Arc::as_ptr(stats) as usize;
        let now = w.index_of(now);
        let r = self.map.entry((rollout_id.to_string(), version)).or_insert_with(|| Running {
            window: id,
            next: now,
            total: WindowSnapshot::empty(std::time::Duration::ZERO),
        });
        if r.window != id {
            // The version was reloaded: its new window starts now.
            r.window = id;
            r.next = now;
        }
        if now > r.next {
            let closed = w.merge_range(r.next, now - 1);
            r.total.add(&closed);
            r.next = now;
        }
        let mut out = r.total.clone();
        out.add(&w.merge_range(now, now));
        out
    }

    /// Forgets rollouts that are no longer live.
    pub fn retain(&mut self, live: &BTreeSet<String>) {
        self.map.retain(|(id, _), _| live.contains(id));
    }
}

/// The analysis settings of a model (model.toml `[analysis]` and the
/// trigger's `min_samples`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub error_margin: f64,
    pub latency_margin: f64,
    pub latency_margin_min_ms: f64,
    pub alpha: f64,
    pub min_samples: u64,
}

impl Settings {
    pub fn of(config: &ModelConfig) -> Self {
        let a = &config.analysis;
        Settings {
            error_margin: a.error_margin,
            latency_margin: a.latency_margin,
            latency_margin_min_ms: a.latency_margin_min_ms,
            alpha: a.alpha,
            min_samples: config.triggers.min_samples.unwrap_or(TriggerConfig::default().min_samples),
        }
    }
}

/// An always-valid comparison with the champion against a margin.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub seq: SequentialDiff,
    pub margin: f64,
    pub verdict: MarginVerdict,
    /// The fixed-horizon test's p-value, for reference.
    pub fixed_p: Option<f64>,
}

/// One arm's numbers.
#[derive(Debug, Clone)]
pub struct ArmNumbers {
    pub version: u64,
    pub name: String,
    pub weight_bp: u32,
    pub stage_samples: u64,
    /// Since the rollout started.
    pub total: WindowSnapshot,
    /// The sliding window (what the hard triggers judge).
    pub window: WindowSnapshot,
}

/// The numbers an audit event records about the arms it was made on, by
/// `v<version>.<name>`: weight, samples this stage, and the sliding window's
/// and the rollout's running totals (requests, errors, NaN/Inf, mean and
/// p99 latency in ms where there are requests).
pub fn event_numbers(arms: &[ArmNumbers]) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for a in arms {
        let mut put = |name: &str, value: f64| {
            out.insert(format!("v{}.{name}", a.version), value);
        };
        put("weight_bp", f64::from(a.weight_bp));
        put("stage_samples", a.stage_samples as f64);
        for (which, snap) in [("window", &a.window), ("total", &a.total)] {
            put(&format!("{which}_requests"), snap.requests as f64);
            put(&format!("{which}_errors"), snap.errors as f64);
            put(&format!("{which}_nan_inf"), snap.nan_inf as f64);
            if let Some(mean) = snap.mean_us() {
                put(&format!("{which}_mean_ms"), mean / 1000.0);
            }
            if let Some(p99) = snap.p(0.99) {
                put(&format!("{which}_p99_ms"), p99 as f64 / 1000.0);
            }
        }
    }
    out
}

impl ArmNumbers {
    /// Mean and sample variance of the successful requests' latency, in ms.
    pub fn latency_ms(&self) -> Option<Summary> {
        let n = self.total.latency_us.len();
        let mean = self.total.mean_us()? / 1000.0;
        let variance = self.total.variance_us2().unwrap_or(0.0) / 1e6;
        Some(Summary { n, mean, variance })
    }
}

/// Error rate of the candidate minus the champion's, always valid from the
/// first request: each arm's rate has a beta-binomial confidence sequence
/// at `α/2` ([`modelgate_rollout::stats::bernoulli_cs`], prior tuned to the
/// margin), and the difference lies in `[L_cand − U_champ, U_cand − L_champ]`
/// at every tick with probability `1 − α` (a union bound over the arms).
/// The verdict is non-inferior when `U_cand − L_champ` is below the margin
/// and a regression when `L_cand − U_champ` is above it. The sequences
/// depend on `(errors, requests)` only, so the controller's once-a-tick
/// looks at running totals keep the guarantee. The comparison's p-value is
/// the always-valid one for equal rates
/// ([`modelgate_rollout::stats::equal_rates_p_value`]); `se` is half the
/// interval's width.
pub fn compare_errors(
    champion: &WindowSnapshot,
    candidate: &WindowSnapshot,
    s: &Settings,
) -> Option<Comparison> {
    use modelgate_rollout::stats::{BetaPrior, bernoulli_cs, equal_rates_p_value};
    let (nh, nc) = (champion.requests, candidate.requests);
    if nh == 0 || nc == 0 {
        return None;
    }
    let (xh, xc) = (champion.errors.min(nh), candidate.errors.min(nc));
    let prior = BetaPrior::for_margin(s.error_margin);
    let (lh, uh) = bernoulli_cs(xh, nh, s.alpha / 2.0, prior);
    let (lc, uc) = bernoulli_cs(xc, nc, s.alpha / 2.0, prior);
    let diff = xc as f64 / nc as f64 - xh as f64 / nh as f64;
    let p_value = equal_rates_p_value(xh, nh, xc, nc, prior);
    let (ci_low, ci_high) = (lc - uh, uc - lh);
    let seq = SequentialDiff {
        diff,
        se: (ci_high - ci_low) / 2.0,
        log_lambda: -p_value.ln(),
        p_value,
        ci_low,
        ci_high,
    };
    let fixed_p = analysis::two_proportion_z_test(xh, nh, xc, nc).ok().map(|z| z.p_value);
    Some(Comparison { seq, margin: s.error_margin, verdict: seq.against_margin(s.error_margin), fixed_p })
}

/// Successful requests each arm needs before the mean-latency comparison
/// is made. The always-valid normal mixture assumes the variance is known;
/// it uses the sample variance instead, which at small n is too noisy (and,
/// for latency's right-skewed distributions, biased low: the rare slow
/// request is not in the sample yet). At 200 requests the sample standard
/// deviation of a distribution with kurtosis up to ~10 is within ±15% of
/// the true one (one sd), and the mean's sampling distribution is close to
/// normal for the moderately skewed latencies a model server sees; the
/// mixture boundary, which is loose at the once-a-tick looks the controller
/// takes, absorbs the rest. The canary steps' default of 500 samples is
/// above it, so it does not slow a default rollout down.
pub const LATENCY_MIN_SAMPLES: u64 = 200;

/// Mean latency of the candidate minus the champion's (ms), always valid
/// (the normal mixture with plug-in variances) once both arms have
/// [`LATENCY_MIN_SAMPLES`] successful requests; the margin is
/// `latency_margin` × the champion's mean, at least `latency_margin_min_ms`.
pub fn compare_latency(champion: &ArmNumbers, candidate: &ArmNumbers, s: &Settings) -> Option<Comparison> {
    latency_comparison(champion, candidate, s, true)
}

/// [`compare_latency`], with the fixed-horizon Welch p-value (shown for
/// reference, never decided on) only when `fixed` is set: with hundreds of
/// thousands of samples its incomplete beta function costs more than the
/// rest of the tick, so the verdict each tick leaves it out.
fn latency_comparison(
    champion: &ArmNumbers,
    candidate: &ArmNumbers,
    s: &Settings,
    fixed: bool,
) -> Option<Comparison> {
    let (h, c) = (champion.latency_ms()?, candidate.latency_ms()?);
    if h.n < LATENCY_MIN_SAMPLES || c.n < LATENCY_MIN_SAMPLES {
        return None;
    }
    let var = h.variance / h.n as f64 + c.variance / c.n as f64;
    let margin = (s.latency_margin * h.mean).max(s.latency_margin_min_ms);
    let seq = analysis::sequential_diff(c.mean - h.mean, var, margin * margin, s.alpha).ok()?;
    let fixed_p = fixed
        .then(|| analysis::welch_t_test(h.mean, h.variance, h.n, c.mean, c.variance, c.n).ok())
        .flatten()
        .map(|t| t.p_value);
    Some(Comparison { seq, margin, verdict: seq.against_margin(margin), fixed_p })
}

fn describe(what: &str, unit: &str, c: &Comparison, alpha: f64) -> String {
    let scale = if unit == "pp" { 100.0 } else { 1.0 };
    format!(
        "{what} {:+.3} {unit} (always-valid {:.0}% CI {:+.3} to {:+.3}; margin {:.3} {unit})",
        c.seq.diff * scale,
        100.0 * (1.0 - alpha),
        c.seq.ci_low * scale,
        c.seq.ci_high * scale,
        c.margin * scale
    )
}

/// Where a canary is in its current step: the step's minimums (samples
/// and time) and the time spent in it. A step is not called healthy before
/// its minimums are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    pub candidate: u64,
    pub step: CanaryStep,
    pub elapsed_ms: Millis,
}

impl StepProgress {
    /// The live step of a canary `rollout` at `now_ms`; `None` for other
    /// strategies (and past the last step).
    pub fn of(rollout: &Rollout, now_ms: Millis) -> Option<Self> {
        let Plan::Canary { candidate, steps, .. } = &rollout.plan else { return None };
        let step = *steps.get(rollout.stage)?;
        Some(StepProgress {
            candidate: *candidate,
            step,
            elapsed_ms: now_ms.saturating_sub(rollout.stage_started_ms),
        })
    }

    /// The minimums not met yet with the candidate's `samples` this step,
    /// in words ("312 of 500 samples; 45 s of 60 s in the step").
    pub fn unmet(&self, samples: u64) -> Option<String> {
        let mut unmet = Vec::new();
        if samples < self.step.min_samples {
            unmet.push(format!(
                "{} of {} samples",
                modelgate_rollout::thousands(samples),
                modelgate_rollout::thousands(self.step.min_samples)
            ));
        }
        let min_ms = self.step.min_duration_secs.saturating_mul(1000);
        if self.elapsed_ms < min_ms {
            unmet.push(format!("{} s of {} s", self.elapsed_ms / 1000, self.step.min_duration_secs));
        }
        (!unmet.is_empty())
            .then(|| format!("v{} step minimums: {} in the step", self.candidate, unmet.join(", ")))
    }
}

/// The safety verdict on the current step: healthy when every candidate is
/// shown no worse than the champion beyond the margins on errors and mean
/// latency and the canary step's minimums (`step`) are met; unhealthy when
/// one is shown worse (at any time: a regression does not wait for the
/// minimums); waiting otherwise, saying for what. With a healthy verdict
/// comes the comparison that came closest to its margin (the one that
/// decided: every other cleared its margin by more), for the audit event
/// of the advance it allows.
pub fn judge_step(
    champion: u64,
    arms: &[ArmNumbers],
    s: &Settings,
    step: Option<&StepProgress>,
) -> (StepVerdict, Option<DecidingTest>) {
    let Some(ch) = arms.iter().find(|a| a.version == champion) else {
        return (StepVerdict::Waiting("the champion's numbers".into()), None);
    };
    // (ci_high / margin, test) of the tightest non-inferiority shown.
    let mut tightest: Option<(f64, DecidingTest)> = None;
    let mut waiting = Vec::new();
    let mut unhealthy = Vec::new();
    if let Some(step) = step {
        let samples = arms.iter().find(|a| a.version == step.candidate).map_or(0, |a| a.stage_samples);
        waiting.extend(step.unmet(samples));
    }
    for c in arms.iter().filter(|a| a.version != champion && a.weight_bp > 0) {
        let v = c.version;
        if c.total.requests < s.min_samples {
            waiting.push(format!(
                "v{v} {} of {} samples for the sequential tests",
                modelgate_rollout::thousands(c.total.requests),
                modelgate_rollout::thousands(s.min_samples)
            ));
            continue;
        }
        if ch.total.requests < s.min_samples {
            if ch.weight_bp == 0 {
                // Nothing to compare with (blue/green after the switch, a
                // 100% step): the hard triggers' absolute limits stand guard.
                continue;
            }
            waiting.push(format!(
                "champion v{champion} {} of {} samples for the sequential tests",
                modelgate_rollout::thousands(ch.total.requests),
                modelgate_rollout::thousands(s.min_samples)
            ));
            continue;
        }
        let checks = [
            (
                RegressionKind::ErrorRate,
                "error rate",
                "pp",
                compare_errors(&ch.total, &c.total, s),
                (ch.total.requests, c.total.requests),
            ),
            (
                RegressionKind::Latency,
                "mean latency",
                "ms",
                latency_comparison(ch, c, s, false),
                (ch.total.latency_us.len(), c.total.latency_us.len()),
            ),
        ];
        for (kind, what, unit, cmp, (nh, nc)) in checks {
            let test = |cmp: &Comparison, statistic: f64| {
                let name = match kind {
                    RegressionKind::Latency => "always_valid_ci_latency",
                    _ => "always_valid_ci_error_rate",
                };
                DecidingTest::new(name, statistic, cmp.margin).with_n(champion, nh).with_n(v, nc)
            };
            match cmp {
                None if kind == RegressionKind::Latency => waiting.push(format!(
                    "v{v} {what}: not enough data to compare (needs {LATENCY_MIN_SAMPLES} successful requests per arm)"
                )),
                None => waiting.push(format!("v{v} {what}: not enough data to compare")),
                Some(cmp) => match cmp.verdict {
                    MarginVerdict::NonInferior => {
                        // Upper bound below the margin: nearest to it decides.
                        let closeness = cmp.seq.ci_high / cmp.margin;
                        if tightest.as_ref().is_none_or(|(c, _)| closeness > *c) {
                            tightest = Some((closeness, test(&cmp, cmp.seq.ci_high)));
                        }
                    }
                    MarginVerdict::Regression => unhealthy.push(Regression {
                        version: v,
                        kind,
                        numbers: BTreeMap::from([
                            ("version".to_string(), v as f64),
                            ("diff".to_string(), cmp.seq.diff),
                            ("ci_low".to_string(), cmp.seq.ci_low),
                            ("ci_high".to_string(), cmp.seq.ci_high),
                            ("margin".to_string(), cmp.margin),
                            ("champion_n".to_string(), ch.total.requests as f64),
                            ("candidate_n".to_string(), c.total.requests as f64),
                        ]),
                        text: format!(
                            "v{v} {} regressed beyond the margin",
                            describe(what, unit, &cmp, s.alpha)
                        ),
                        // Lower bound above the margin.
                        decision: Some(test(&cmp, cmp.seq.ci_low)),
                    }),
                    MarginVerdict::Undecided => waiting.push(format!(
                        "v{v} {} not yet shown within the margin",
                        describe(what, unit, &cmp, s.alpha)
                    )),
                },
            }
        }
    }
    if !unhealthy.is_empty() {
        (StepVerdict::Unhealthy(unhealthy), None)
    } else if !waiting.is_empty() {
        (StepVerdict::Waiting(waiting.join("; ")), None)
    } else {
        (StepVerdict::Healthy, tightest.map(|(_, t)| t))
    }
}

/// The business metric a rollout is judged on, if any.
#[derive(Debug, Clone)]
pub struct MetricPlan {
    pub metric: String,
    /// The smallest change that matters (absolute)…
    pub mde: Option<f64>,
    /// …or relative to the control's mean (champion-challenger thresholds).
    pub relative_mde: Option<f64>,
    pub higher_is_better: bool,
    pub from_ms: Millis,
    pub required: u64,
    pub alpha: f64,
    /// (arm name, version), control first.
    pub arms: Vec<(String, u64)>,
}

/// What metric (if any) `rollout` is judged on, and over which arms.
pub fn metric_plan(rollout: &Rollout, config: &ModelConfig, now_ms: Millis) -> Option<MetricPlan> {
    match &rollout.plan {
        Plan::AbTest { arms, metric, mde, alpha, higher_is_better, .. } => {
            let relative_mde = None;
            let mut named: Vec<(String, u64)> = arms.iter().map(|a| (a.name.clone(), a.version)).collect();
            // The arm running the champion is the control; else the first.
            if let Some(i) = named.iter().position(|(_, v)| *v == rollout.champion) {
                let control = named.remove(i);
                named.insert(0, control);
            }
            Some(MetricPlan {
                metric: metric.clone(),
                mde: Some(*mde),
                relative_mde,
                higher_is_better: *higher_is_better,
                from_ms: rollout.started_ms,
                required: rollout.plan.required_samples_per_arm().unwrap_or(0),
                alpha: *alpha,
                arms: named,
            })
        }
        Plan::ChampionChallenger {
            challengers,
            gate: PromotionGate::Automatic { kpi, threshold, min_samples, higher_is_better, .. },
            ..
        } => Some(MetricPlan {
            metric: kpi.clone(),
            mde: None,
            relative_mde: Some(*threshold),
            higher_is_better: *higher_is_better,
            // The gate's evaluation period: a sample that only grows until
            // the next period, so the always-valid tests on it (the KPI
            // regression alert included) keep their α.
            // (An automatic gate always has one; its start otherwise.)
            from_ms: rollout.evaluation_period(now_ms).map_or(rollout.stage_started_ms, |p| p.start_ms),
            required: *min_samples,
            // The plan has no α of its own: the model's, as the gate uses.
            alpha: config.analysis.alpha,
            arms: std::iter::once(("champion".to_string(), rollout.champion))
                .chain(challengers.iter().map(|v| (format!("challenger v{v}"), *v)))
                .collect(),
        }),
        _ => {
            let kpi = config.analysis.kpi.clone()?;
            let table = rollout.routing_table();
            let arms = std::iter::once(("champion".to_string(), rollout.champion))
                .chain(
                    table
                        .arms()
                        .iter()
                        .filter(|a| a.version != rollout.champion)
                        .map(|a| (format!("v{}", a.version), a.version)),
                )
                .collect();
            Some(MetricPlan {
                metric: kpi,
                mde: config.analysis.kpi_mde,
                relative_mde: None,
                higher_is_better: config.analysis.kpi_higher_is_better,
                from_ms: rollout.started_ms,
                required: 0,
                alpha: config.analysis.alpha,
                arms,
            })
        }
    }
}

/// One arm's result on the rollout's metric.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub metric: String,
    pub arm: String,
    pub version: u64,
    pub mde: f64,
    pub higher_is_better: bool,
    pub required: u64,
    /// The significance level the row is judged at (the plan's or model's).
    pub alpha: f64,
    /// The control arm's version and observations.
    pub control: (u64, u64),
    pub result: analysis::ArmResult,
}

/// Every arm's result on the plan's metric, control first, from the
/// outcomes recorded since the plan's start.
pub fn metric_rows(
    outcomes: &OutcomeStore,
    model: &str,
    plan: &MetricPlan,
    now_ms: Millis,
) -> Vec<MetricRow> {
    let window = now_ms.saturating_sub(plan.from_ms).max(1);
    metric_rows_of(plan, |v| {
        outcomes.summary(model, v, &plan.metric, now_ms, window).map(|s| Summary {
            n: s.n,
            mean: s.mean,
            variance: s.variance,
        })
    })
}

/// [`metric_rows`] from each version's summary of the metric (`None` when
/// it has no outcomes).
pub fn metric_rows_of(plan: &MetricPlan, summary: impl Fn(u64) -> Option<Summary>) -> Vec<MetricRow> {
    rows_with(plan, summary, analysis::ab_arm_result)
}

/// [`metric_rows_of`] without the numbers that are only shown (each arm's
/// mean interval and Welch's test): the same decisions, the always-valid
/// test and [`kpi_regression`]'s input, at a fraction of the cost. The
/// decision simulator drives the controller's decisions through this.
pub fn metric_decisions_of(plan: &MetricPlan, summary: impl Fn(u64) -> Option<Summary>) -> Vec<MetricRow> {
    rows_with(plan, summary, analysis::ab_arm_decision)
}

type ArmJudge =
    fn(&Summary, &Summary, bool, f64, f64, u64, bool) -> Result<analysis::ArmResult, analysis::AnalysisError>;

fn rows_with(plan: &MetricPlan, summary: impl Fn(u64) -> Option<Summary>, judge: ArmJudge) -> Vec<MetricRow> {
    let summary = |v: u64| summary(v).unwrap_or(Summary { n: 0, mean: 0.0, variance: 0.0 });
    let Some((_, control_version)) = plan.arms.first() else { return Vec::new() };
    let control = summary(*control_version);
    let mde = match (plan.mde, plan.relative_mde) {
        (Some(m), _) => m,
        // Champion-challenger: the threshold is relative to the champion's mean.
        (None, Some(r)) if control.n > 0 && control.mean != 0.0 => control.mean.abs() * r,
        _ => return Vec::new(),
    };
    plan.arms
        .iter()
        .enumerate()
        .filter_map(|(i, (name, v))| {
            let arm = if i == 0 { control } else { summary(*v) };
            let result =
                judge(&control, &arm, i == 0, mde, plan.alpha, plan.required, plan.higher_is_better).ok()?;
            Some(MetricRow {
                metric: plan.metric.clone(),
                arm: name.clone(),
                version: *v,
                mde,
                higher_is_better: plan.higher_is_better,
                required: plan.required,
                alpha: plan.alpha,
                control: (*control_version, control.n),
                result,
            })
        })
        .collect()
}

impl MetricRow {
    /// The one test that decides this arm (the always-valid mSPRT): its
    /// always-valid p-value against the row's α, with n per arm. `None` for
    /// the control and below the minimum samples per arm.
    pub fn deciding_test(&self) -> Option<DecidingTest> {
        let (p, alpha) = self.result.deciding(self.alpha)?;
        Some(
            DecidingTest::new(analysis::AB_DECIDING_TEST, p, alpha)
                .with_n(self.control.0, self.control.1)
                .with_n(self.version, self.result.n),
        )
    }
}

/// The test behind an A/B test's verdict once it is ready: the always-valid
/// mSPRT, the only test that decides (Welch's p is shown for reference and
/// never decides). Of the treatment arms, the one with the smallest
/// always-valid p-value: it decided when its p is at most the plan's α (the
/// threshold), and no arm did otherwise; with every arm's count. `None`
/// while no arm has the minimum samples for the test.
pub fn ab_verdict_test(rows: &[MetricRow]) -> Option<DecidingTest> {
    let best = rows
        .iter()
        .skip(1)
        .filter_map(|r| r.deciding_test())
        .min_by(|a, b| a.statistic.total_cmp(&b.statistic))?;
    let first = rows.first()?;
    let test = best.with_n(first.control.0, first.control.1);
    Some(rows.iter().skip(1).fold(test, |t, r| t.with_n(r.version, r.result.n)))
}

/// A business-metric regression, judged every tick and so with an
/// always-valid test: the arm is shown worse than the control by the mSPRT
/// at the row's α (its confidence sequence excludes 0 on the worse side,
/// which for an identical arm happens at some tick with probability at most
/// α), and the estimate is worse by at least the MDE (a difference too small
/// to matter raises no alert). Nothing below the minimum samples per arm.
pub fn kpi_regression(row: &MetricRow) -> Option<Regression> {
    let seq = row.result.sequential?;
    let worse_by = if row.higher_is_better { -seq.diff } else { seq.diff };
    let shown_worse = if row.higher_is_better { seq.ci_high < 0.0 } else { seq.ci_low > 0.0 };
    (shown_worse && seq.p_value <= row.alpha && worse_by >= row.mde).then(|| Regression {
        version: row.version,
        kind: RegressionKind::Kpi,
        numbers: BTreeMap::from([
            ("version".to_string(), row.version as f64),
            ("n".to_string(), row.result.n as f64),
            ("mean".to_string(), row.result.mean),
            ("diff".to_string(), seq.diff),
            ("ci_low".to_string(), seq.ci_low),
            ("ci_high".to_string(), seq.ci_high),
            ("always_valid_p".to_string(), seq.p_value),
            ("alpha".to_string(), row.alpha),
            ("mde".to_string(), row.mde),
        ]),
        decision: row.deciding_test(),
        text: format!(
            "business metric '{}' of {} is worse than the control's by {:.4} (MDE {:.4}; always-valid {:.0}% CI {:+.4} to {:+.4}, p = {:.4}, n = {} and {})",
            row.metric,
            row.arm,
            worse_by,
            row.mde,
            100.0 * (1.0 - row.alpha),
            seq.ci_low,
            seq.ci_high,
            seq.p_value,
            row.control.1,
            row.result.n
        ),
    })
}

/// The Wilson score interval for `x` of `n` at `1 − alpha`.
pub fn wilson(x: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = modelgate_rollout::normal_quantile(1.0 - alpha / 2.0);
    let (n, p) = (n as f64, x as f64 / n as f64);
    let z2 = z * z;
    let center = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let low = if x == 0 { 0.0 } else { (center - half).max(0.0) };
    let high = if x as f64 == n { 1.0 } else { (center + half).min(1.0) };
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn step_verdict(champion: u64, arms: &[ArmNumbers], s: &Settings) -> StepVerdict {
        judge_step(champion, arms, s, None).0
    }

    fn settings() -> Settings {
        Settings {
            error_margin: 0.01,
            latency_margin: 0.2,
            latency_margin_min_ms: 0.1,
            alpha: 0.05,
            min_samples: 50,
        }
    }

    fn arm(version: u64, weight_bp: u32, latencies_us: &[u64], errors: u64) -> ArmNumbers {
        let w = modelgate_telemetry::SlidingWindow::new(Duration::from_secs(3600), 1);
        for &l in latencies_us {
            w.record(Duration::from_micros(l), false, false);
        }
        for _ in 0..errors {
            w.record(Duration::ZERO, true, false);
        }
        let total = w.snapshot();
        ArmNumbers {
            version,
            name: format!("v{version}"),
            weight_bp,
            stage_samples: total.requests,
            window: total.clone(),
            total,
        }
    }

    fn spread(n: usize, base: u64) -> Vec<u64> {
        (0..n).map(|i| base + (i as u64 * 7919) % 40).collect()
    }

    #[test]
    fn a_candidate_like_the_champion_is_healthy_once_there_is_enough_data() {
        let s = settings();
        let ch = arm(2, 8000, &spread(5000, 300), 0);
        let few = arm(1, 2000, &spread(20, 300), 0);
        match step_verdict(2, &[ch.clone(), few], &s) {
            StepVerdict::Waiting(w) => assert!(w.contains("v1 20 of 50 samples"), "{w}"),
            v => panic!("{v:?}"),
        }
        let enough = arm(1, 2000, &spread(2000, 302), 0);
        let (verdict, decided_by) = judge_step(2, &[ch, enough], &s, None);
        assert_eq!(verdict, StepVerdict::Healthy);
        // The comparison nearest its margin decided: its upper bound is below it.
        let d = decided_by.expect("the deciding comparison");
        assert!(d.test.starts_with("always_valid_ci_") && d.statistic < d.threshold, "{d:?}");
        assert_eq!(d.n.keys().copied().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_slower_or_failing_candidate_is_unhealthy_and_a_close_one_waits() {
        let s = settings();
        let ch = arm(2, 8000, &spread(5000, 300), 0);
        let slow = arm(1, 2000, &spread(2000, 600), 0);
        match step_verdict(2, &[ch.clone(), slow], &s) {
            StepVerdict::Unhealthy(r) => {
                assert_eq!((r.len(), r[0].version, r[0].kind), (1, 1, RegressionKind::Latency), "{r:?}");
                assert!(r[0].text.starts_with("v1 mean latency"), "{r:?}");
                assert!(r[0].numbers["diff"] > r[0].numbers["margin"], "{r:?}");
                let d = r[0].decision.as_ref().expect("the deciding test");
                assert_eq!(
                    (d.test.as_str(), d.statistic, d.threshold),
                    ("always_valid_ci_latency", r[0].numbers["ci_low"], r[0].numbers["margin"])
                );
                assert_eq!(d.n, BTreeMap::from([(1, 2000), (2, 5000)]));
            }
            v => panic!("{v:?}"),
        }
        let failing = arm(1, 2000, &spread(2000, 300), 200);
        match step_verdict(2, &[ch.clone(), failing], &s) {
            StepVerdict::Unhealthy(r) => {
                assert_eq!((r[0].version, r[0].kind), (1, RegressionKind::ErrorRate), "{r:?}");
                // The whole finding, margin and closing parenthesis included.
                assert!(r[0].text.contains("; margin") && r[0].text.ends_with("regressed beyond the margin"));
                assert!(r[0].text.contains(" pp)"), "{r:?}");
            }
            v => panic!("{v:?}"),
        }
        // 9 failures in 500: 1.8%, close to the 1 pp margin: not decided yet.
        let close = arm(1, 2000, &spread(491, 300), 9);
        match step_verdict(2, &[ch, close], &s) {
            StepVerdict::Waiting(w) => assert!(w.contains("v1 error rate"), "{w}"),
            v => panic!("{v:?}"),
        }
    }

    /// The bug the confidence sequences fix: no errors in 200 requests
    /// against a champion at 1% was "within the 1 pp margin" with the
    /// plug-in variance; 200 requests cannot show a rate below 2%.
    #[test]
    fn a_few_hundred_clean_requests_do_not_show_the_error_rate_within_the_margin() {
        let s = settings();
        let ch = arm(2, 9500, &spread(19_800, 300), 200);
        let clean = arm(1, 500, &spread(200, 300), 0);
        let cmp = compare_errors(&ch.total, &clean.total, &s).expect("a comparison");
        assert_eq!(cmp.verdict, MarginVerdict::Undecided, "{cmp:?}");
        match step_verdict(2, &[ch.clone(), clean], &s) {
            StepVerdict::Waiting(w) => {
                assert!(w.contains("v1 error rate") && w.contains("not yet shown"), "{w}")
            }
            v => panic!("{v:?}"),
        }
        // With 5,000 clean requests it is shown.
        let clean = arm(1, 500, &spread(5000, 300), 0);
        assert_eq!(compare_errors(&ch.total, &clean.total, &s).unwrap().verdict, MarginVerdict::NonInferior);
    }

    /// The difference's interval is made of the two arms' α/2 sequences.
    #[test]
    fn the_error_comparison_is_built_from_each_arms_confidence_sequence() {
        use modelgate_rollout::stats::{BetaPrior, bernoulli_cs};
        let s = settings();
        let ch = arm(2, 9500, &spread(9_900, 300), 100);
        let cand = arm(1, 500, &spread(1_970, 300), 30);
        let cmp = compare_errors(&ch.total, &cand.total, &s).unwrap();
        let prior = BetaPrior::for_margin(0.01);
        let (lh, uh) = bernoulli_cs(100, 10_000, 0.025, prior);
        let (lc, uc) = bernoulli_cs(30, 2_000, 0.025, prior);
        assert_eq!((cmp.seq.ci_low, cmp.seq.ci_high), (lc - uh, uc - lh));
        assert!((cmp.seq.diff - 0.005).abs() < 1e-12);
        assert!(cmp.seq.p_value > 0.0 && cmp.seq.p_value <= 1.0);
        // Far worse: a regression, with the lower bound above the margin.
        let bad = arm(1, 500, &spread(1_700, 300), 300);
        let cmp = compare_errors(&ch.total, &bad.total, &s).unwrap();
        assert_eq!(cmp.verdict, MarginVerdict::Regression);
        assert!(cmp.seq.ci_low > 0.01 && cmp.seq.p_value < 1e-6, "{cmp:?}");
    }

    #[test]
    fn latency_is_compared_only_with_enough_samples_for_its_variance() {
        let s = settings();
        let ch = arm(2, 9500, &spread(5000, 300), 0);
        let few = arm(1, 500, &spread(LATENCY_MIN_SAMPLES as usize - 1, 300), 0);
        assert!(compare_latency(&ch, &few, &s).is_none());
        match step_verdict(2, &[ch.clone(), few], &s) {
            StepVerdict::Waiting(w) => assert!(
                w.contains(
                    "v1 mean latency: not enough data to compare (needs 200 successful requests per arm)"
                ),
                "{w}"
            ),
            v => panic!("{v:?}"),
        }
        let enough = arm(1, 500, &spread(LATENCY_MIN_SAMPLES as usize, 300), 0);
        assert!(compare_latency(&ch, &enough, &s).is_some());
    }

    /// Healthy waits for the canary step's minimums; a regression does not.
    #[test]
    fn a_step_is_healthy_only_once_its_minimums_are_met() {
        let s = settings();
        let ch = arm(2, 9500, &spread(20_000, 300), 0);
        let good = arm(1, 500, &spread(3_000, 300), 0);
        let step = |elapsed_ms| StepProgress {
            candidate: 1,
            step: CanaryStep { percent: 5, min_duration_secs: 60, min_samples: 5_000 },
            elapsed_ms,
        };
        assert_eq!(step_verdict(2, &[ch.clone(), good.clone()], &s), StepVerdict::Healthy);
        match judge_step(2, &[ch.clone(), good.clone()], &s, Some(&step(45_000))).0 {
            StepVerdict::Waiting(w) => {
                assert_eq!(w, "v1 step minimums: 3,000 of 5,000 samples, 45 s of 60 s in the step")
            }
            v => panic!("{v:?}"),
        }
        let more = arm(1, 500, &spread(5_000, 300), 0);
        match judge_step(2, &[ch.clone(), more.clone()], &s, Some(&step(59_999))).0 {
            StepVerdict::Waiting(w) => assert_eq!(w, "v1 step minimums: 59 s of 60 s in the step"),
            v => panic!("{v:?}"),
        }
        let (verdict, decided_by) = judge_step(2, &[ch.clone(), more], &s, Some(&step(60_000)));
        assert_eq!(verdict, StepVerdict::Healthy);
        assert!(decided_by.is_some());
        let failing = arm(1, 500, &spread(1_000, 300), 200);
        assert!(matches!(judge_step(2, &[ch, failing], &s, Some(&step(1_000))).0, StepVerdict::Unhealthy(_)));
    }

    #[test]
    fn step_progress_reads_the_canary_plan() {
        use modelgate_rollout::{Actor, RolloutSpec};
        let spec = RolloutSpec {
            id: "r".into(),
            model: "m".into(),
            salt: 1,
            champion: 1,
            plan: Plan::canary(2),
            shadow: None,
            triggers: Default::default(),
        };
        let r = Rollout::start(spec, &[1, 2], 1_000, &Actor::system(), None).unwrap().0;
        let p = StepProgress::of(&r, 31_000).expect("a canary step");
        assert_eq!((p.candidate, p.step, p.elapsed_ms), (2, CanaryStep::at(1), 30_000));
    }

    /// The running totals follow the time they are given, so the decision
    /// simulator can drive them on simulated time.
    #[test]
    fn running_totals_fold_closed_intervals_at_the_time_given() {
        let stats = Arc::new(VersionStats::new(Duration::from_secs(10), 6));
        let t0 = stats.window.epoch();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut running = RunningTotals::default();
        assert_eq!(running.total("r", 2, &stats, at(0)).requests, 0);
        // 300 s of requests, five times the window, read every 5 s as a
        // controller would: the totals keep them all.
        for s in 0..300 {
            stats.window.record_at(at(s), Duration::from_micros(500), s % 100 == 0, false);
            if s % 5 == 0 {
                running.total("r", 2, &stats, at(s));
            }
        }
        let total = running.total("r", 2, &stats, at(299));
        assert_eq!((total.requests, total.errors), (300, 3));
        assert_eq!(stats.window.snapshot_at(at(299)).requests, 60);
    }

    /// The business-metric alert judges at the plan's α, not a default:
    /// the same data is a regression at a lenient α and none at a strict one.
    #[test]
    fn kpi_regression_uses_the_plans_alpha() {
        use crate::serving::outcome::OutcomeLimits;
        let outcomes = OutcomeStore::new(OutcomeLimits::with_join_bytes(0));
        let now = 1_000_000_000;
        for i in 0..400u64 {
            let noise = ((i * 7919) % 100) as f64 / 100.0 - 0.5;
            outcomes.record("m", 1, "revenue", 10.0 + noise, now, now).unwrap();
            outcomes.record("m", 2, "revenue", 9.93 + noise, now, now).unwrap();
        }
        let plan = |alpha: f64| MetricPlan {
            metric: "revenue".into(),
            mde: Some(0.05),
            relative_mde: None,
            higher_is_better: true,
            from_ms: now - 60_000,
            required: 0,
            alpha,
            arms: vec![("control".into(), 1), ("b".into(), 2)],
        };
        let regression = |alpha: f64| {
            let rows = metric_rows(&outcomes, "m", &plan(alpha), now);
            assert_eq!(rows[1].alpha, alpha);
            rows.iter().find_map(kpi_regression)
        };
        let p = metric_rows(&outcomes, "m", &plan(0.05), now)[1].result.sequential.unwrap().p_value;
        assert!(p > 0.0 && p < 0.5, "p = {p}");
        let found = regression((2.0 * p).min(0.9)).expect("a regression at α above p");
        assert_eq!(found.numbers["alpha"], (2.0 * p).min(0.9));
        let d = found.decision.expect("the deciding test");
        assert_eq!((d.test.as_str(), d.statistic, d.threshold), ("msprt", p, (2.0 * p).min(0.9)));
        assert_eq!(d.n, BTreeMap::from([(1, 400), (2, 400)]));
        assert!(regression(p / 2.0).is_none(), "no regression at α below p");
        // The A/B verdict's test: the always-valid p on the metric, against
        // the plan's α (Welch's p is only for reference).
        let rows = metric_rows(&outcomes, "m", &plan(0.01), now);
        let d = ab_verdict_test(&rows).expect("a comparison");
        assert_eq!((d.test.as_str(), d.statistic, d.threshold), ("msprt", p, 0.01));
        assert_eq!(d.n, BTreeMap::from([(1, 400), (2, 400)]));
    }

    /// Below the minimum per arm neither the A/B verdict nor the KPI alert
    /// has a test to go on, however far apart the arms are; once it is in,
    /// the decisions-only rows decide exactly as the full ones.
    #[test]
    fn no_ab_verdict_or_kpi_alert_below_the_minimum_and_decisions_match_the_full_rows() {
        let plan = MetricPlan {
            metric: "revenue".into(),
            mde: Some(0.05),
            relative_mde: None,
            higher_is_better: true,
            from_ms: 0,
            required: 100,
            alpha: 0.05,
            arms: vec![("control".into(), 1), ("b".into(), 2)],
        };
        let m = analysis::AB_MIN_SAMPLES_PER_ARM;
        let at =
            |n: u64| move |v: u64| Some(Summary { n, mean: if v == 1 { 10.0 } else { 5.0 }, variance: 1.0 });
        let rows = metric_rows_of(&plan, at(m - 1));
        assert_eq!(rows[1].result.decision, analysis::AbDecision::Collecting);
        assert!(ab_verdict_test(&rows).is_none() && rows.iter().all(|r| kpi_regression(r).is_none()));
        for n in [m, 100, 5000] {
            let (full, decisions) = (metric_rows_of(&plan, at(n)), metric_decisions_of(&plan, at(n)));
            assert_eq!(full[1].result.decision, analysis::AbDecision::Worse);
            for (a, b) in full.iter().zip(&decisions) {
                assert_eq!(
                    (a.result.decision, a.result.sequential),
                    (b.result.decision, b.result.sequential)
                );
                assert_eq!(kpi_regression(a).map(|r| r.numbers), kpi_regression(b).map(|r| r.numbers));
            }
            let d = ab_verdict_test(&full).expect("the test ran");
            assert_eq!((d.test.as_str(), d.threshold), ("msprt", 0.05));
            assert!(d.statistic <= 0.05 && d.n == BTreeMap::from([(1, n), (2, n)]), "{d:?}");
        }
    }

    #[test]
    fn wilson_matches_a_known_value() {
        // 10 of 100 at 95%: statsmodels proportion_confint(method="wilson").
        let (lo, hi) = wilson(10, 100, 0.05);
        assert!((lo - 0.055_229_2).abs() < 1e-6 && (hi - 0.174_365_7).abs() < 1e-6, "{lo} {hi}");
        assert_eq!(wilson(0, 0, 0.05), (0.0, 1.0));
    }
}
