//! Hard triggers: the conditions that roll a candidate back by themselves.
//!
//! From the strategy notes: error rate above 5× the champion's, p99 above the
//! SLA, NaN/Inf output rate above 1%. Each trigger on each candidate is a
//! sequential change detector ([`detector`]) fed, every tick, with the
//! requests the candidate served since the previous tick:
//!
//! - NaN/Inf: H0 rate = 1% (the limit) against H1 rate = 2% (and, for the
//!   SPRT, a mixture with 5%: see [`detector::NEAR_WEIGHT`]);
//! - errors: H0 rate = max(5 × an upper bound on the champion's rate since
//!   the rollout started, floor) against H1 = 2 × H0 (and 5 × H0);
//! - latency: the share of requests slower than the SLA (from the HDR
//!   latency histogram), H0 = 1% (that is, p99 = SLA) against H1 = 5%.
//!
//! Each detector reads its evidence two ways, Wald's SPRT since the rollout
//! started and Page's CUSUM, each with a bound from its share of the
//! rollout's false-alarm budget: the budget (0.001 per 24 h rollout by
//! default) is split evenly across the active triggers × the candidates
//! that take traffic, and within a detector 3/4 to the SPRT and 1/4 to the
//! CUSUM ([`detector::SPRT_SHARE`]). By Ville's inequality and a union bound,
//! a rollout whose candidates are all at or under their limits is rolled
//! back by mistake with probability at most the budget over the budget's
//! horizon, however often it is judged. No trigger fires before the
//! candidate has served `min_samples` requests since the rollout started.

pub mod detector;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use detector::{Bounds, Crossed, Detector, NEAR_WEIGHT, RESTART_SPACING_MS, SPRT_SHARE, sprt_llr};

/// Thresholds and test parameters; defaults from the strategy notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    /// NaN/Inf output rate limit (1%).
    pub nan_inf_rate: f64,
    /// Candidate error rate limit as a multiple of the champion's (5×).
    pub error_ratio: f64,
    /// Error rate limit used when the champion's is (near) zero.
    pub error_rate_floor: f64,
    /// p99 latency SLA in milliseconds; `None` disables the latency trigger.
    pub p99_sla_ms: Option<f64>,
    /// Requests a candidate must have served since the rollout started
    /// before any of its triggers may fire.
    pub min_samples: u64,
    /// The probability that a rollout whose candidates are all at or under
    /// every limit is rolled back by a hard trigger within `budget_hours`
    /// (replaces the old per-look `alpha`; `beta` is gone: the tests are
    /// power-one).
    pub false_alarm_budget: f64,
    /// The horizon the budget covers, in hours (24).
    pub budget_hours: f64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            nan_inf_rate: 0.01,
            error_ratio: 5.0,
            error_rate_floor: 0.01,
            p99_sla_ms: None,
            min_samples: 50,
            false_alarm_budget: 0.001,
            budget_hours: 24.0,
        }
    }
}

/// The largest `min_samples` accepted: more requests than any window holds
/// would silently turn the triggers off.
pub const MAX_MIN_SAMPLES: u64 = 1_000_000_000;

/// A trigger setting outside its range, as model.toml and the admin API both
/// report it: `triggers.min_samples must be between 1 and 1000000000, got 0`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("triggers.{field} must be {expected}, got {got}")]
pub struct TriggerRangeError {
    /// The setting, without the `triggers.` prefix.
    pub field: &'static str,
    /// The range it must be in, in words.
    pub expected: &'static str,
    /// The value given.
    pub got: String,
}

/// Per-plan trigger settings: each one set replaces the model's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_sla_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nan_inf_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_floor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub false_alarm_budget: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_hours: Option<f64>,
}

impl TriggerOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks each value's range; the error names the field and the range.
    ///
    /// This is the one check of these settings: model.toml's `[triggers]`
    /// (the registry) and a rollout's overrides (the admin API) both call
    /// it, so a value one refuses the other refuses too, in the same words.
    pub fn validate(&self) -> Result<(), TriggerRangeError> {
        let number = |field, v: Option<f64>, lo: f64, hi: f64, expected| match v {
            Some(v) if !(v.is_finite() && v >= lo && v <= hi) => {
                Err(TriggerRangeError { field, expected, got: v.to_string() })
            }
            _ => Ok(()),
        };
        let rate = "a rate above 0 and at most 1";
        number("p99_sla_ms", self.p99_sla_ms, 0.001, 600_000.0, "between 0.001 and 600000 ms")?;
        number("nan_inf_rate", self.nan_inf_rate, 1e-9, 1.0, rate)?;
        number("error_ratio", self.error_ratio, 1.0, 1e6, "between 1 and 1000000")?;
        number("error_rate_floor", self.error_rate_floor, 1e-9, 1.0, rate)?;
        number(
            "false_alarm_budget",
            self.false_alarm_budget,
            1e-12,
            0.5,
            "a probability above 0 and at most 0.5",
        )?;
        number("budget_hours", self.budget_hours, 0.01, 8760.0, "between 0.01 and 8760 hours")?;
        match self.min_samples {
            // 0 would let one request fire a trigger; past the ceiling no
            // window ever holds enough requests and the triggers are off.
            Some(n) if !(1..=MAX_MIN_SAMPLES).contains(&n) => Err(TriggerRangeError {
                field: "min_samples",
                expected: "between 1 and 1000000000",
                got: n.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// `base` with every overridden value replaced.
    pub fn apply(&self, base: TriggerConfig) -> TriggerConfig {
        TriggerConfig {
            p99_sla_ms: self.p99_sla_ms.or(base.p99_sla_ms),
            nan_inf_rate: self.nan_inf_rate.unwrap_or(base.nan_inf_rate),
            error_ratio: self.error_ratio.unwrap_or(base.error_ratio),
            error_rate_floor: self.error_rate_floor.unwrap_or(base.error_rate_floor),
            min_samples: self.min_samples.unwrap_or(base.min_samples),
            false_alarm_budget: self.false_alarm_budget.unwrap_or(base.false_alarm_budget),
            budget_hours: self.budget_hours.unwrap_or(base.budget_hours),
        }
    }
}

/// One version's counts as plain numbers: what it served since the rollout
/// started (what the detectors are fed the differences of), or a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub requests: u64,
    pub errors: u64,
    pub nan_inf: u64,
    /// Successful requests slower than the SLA (0 without an SLA).
    pub over_sla: u64,
    /// The p99 in milliseconds, if there are latencies.
    pub p99_ms: Option<f64>,
}

/// A fired trigger with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// `nan_inf_rate`, `error_rate` or `p99_latency`.
    pub trigger: &'static str,
    pub reason: String,
    pub numbers: BTreeMap<String, f64>,
    /// The statistic that crossed its bound (`sprt_<trigger>` or
    /// `cusum_<trigger>`): its value and the bound. The caller, who knows
    /// the versions, adds the requests per arm.
    pub decision: crate::DecidingTest,
}

/// The hard triggers, in the order they are checked.
pub const TRIGGERS: [&str; 3] = ["nan_inf_rate", "error_rate", "p99_latency"];

impl TriggerConfig {
    /// The triggers that judge: NaN/Inf and errors, and latency when an
    /// SLA is set.
    pub fn active_triggers(&self) -> usize {
        if self.p99_sla_ms.is_some() { 3 } else { 2 }
    }

    /// One detector's share of the budget when `candidates` versions take
    /// traffic beside the champion: an even split across active triggers ×
    /// candidates, so the union bound over them all is the budget.
    pub fn detector_alpha(&self, candidates: usize) -> f64 {
        self.false_alarm_budget / (self.active_triggers() * candidates.max(1)) as f64
    }

    /// One detector's bounds when `candidates` versions take traffic.
    pub fn bounds(&self, candidates: usize) -> Bounds {
        Bounds::new(self.detector_alpha(candidates), self.budget_hours)
    }

    /// The error-rate limit (H0) against a champion whose counts are
    /// `champion`: `error_ratio` × an upper bound on its rate, at least the
    /// floor, at most 50%.
    ///
    /// The bound is (x + 2√x + 4)/n, not x/n: a limit set from an estimate
    /// that came out low (a 2% champion with 0 errors in its first 50
    /// requests) judges a candidate at exactly 5× the champion's true rate
    /// against a limit it is over. With x/n the decision simulator measured
    /// 0.4% false rollbacks per 24 h rollout at champion 2%, candidate 10%.
    /// The bound costs little once the champion has served a few thousand
    /// requests (at 2% and 100,000 requests it is 2.03%).
    pub fn error_limit(&self, champion: &WindowCounts) -> f64 {
        let rate = if champion.requests == 0 {
            0.0
        } else {
            let x = champion.errors as f64;
            ((x + 2.0 * x.sqrt() + 4.0) / champion.requests as f64).min(1.0)
        };
        (self.error_ratio * rate).max(self.error_rate_floor).min(0.5)
    }
}

/// The over-SLA share that p99 = SLA means (H0) and the one the latency
/// trigger is built to catch (H1).
const LATENCY_H0: f64 = 0.01;
const LATENCY_H1: f64 = 0.05;

/// The hard triggers' detectors for one candidate of one rollout, and the
/// counts they were last fed up to. Fed once a tick with the candidate's
/// and the champion's counts since the rollout started; each detector sees
/// the difference from the last feed.
#[derive(Debug, Clone, Default)]
pub struct HardTriggers {
    nan_inf: Detector,
    errors: Detector,
    latency: Detector,
    candidate: WindowCounts,
    champion: WindowCounts,
    /// The error limit the last batch was tested at.
    error_limit: Option<f64>,
    /// The budget and ln(1/budget), below every bound it sets: a tick on
    /// which no statistic reaches it needs no bounds worked out.
    quiet_below: (f64, f64),
}

impl HardTriggers {
    /// Feeds what the candidate served since the last call (`candidate`
    /// and `champion` are counts since the rollout started; a count that
    /// went down, such as after a reload, starts again from its new value).
    /// The error limit is set from the champion's rate as of the last call,
    /// before this batch is seen.
    pub fn observe(
        &mut self,
        cfg: &TriggerConfig,
        now_ms: u64,
        champion: &WindowCounts,
        candidate: &WindowCounts,
    ) {
        let last = self.candidate;
        let n = candidate.requests.saturating_sub(last.requests);
        let errors = candidate.errors.saturating_sub(last.errors);
        let nan_inf = candidate.nan_inf.saturating_sub(last.nan_inf);
        let over_sla = candidate.over_sla.saturating_sub(last.over_sla);
        let p = cfg.nan_inf_rate;
        self.nan_inf.feed(now_ms, nan_inf, n, p, (2.0 * p).min(0.99), (5.0 * p).min(0.99));
        let limit = cfg.error_limit(&self.champion);
        self.errors.feed(now_ms, errors, n, limit, (2.0 * limit).min(0.99), (5.0 * limit).min(0.99));
        self.error_limit = Some(limit);
        if cfg.p99_sla_ms.is_some() {
            let ok = n.saturating_sub(errors);
            self.latency.feed(now_ms, over_sla, ok, LATENCY_H0, LATENCY_H1, LATENCY_H1);
        }
        self.candidate = *candidate;
        self.champion = *champion;
        if self.quiet_below.0 != cfg.false_alarm_budget {
            self.quiet_below = (cfg.false_alarm_budget, -cfg.false_alarm_budget.ln());
        }
    }

    /// The first trigger whose statistic crossed its bound, with
    /// `candidates` versions taking traffic. Cheap when nothing fired: the
    /// state and its words are made only for a trigger that did.
    pub fn fired(&self, cfg: &TriggerConfig, candidates: usize) -> Option<Fired> {
        if self.candidate.requests < cfg.min_samples {
            return None;
        }
        let detectors = [&self.nan_inf, &self.errors, &self.latency];
        let active = cfg.active_triggers();
        // Every bound is above ln(1/budget): α_sprt and α_cusum are shares
        // of the budget, and the CUSUM's T is at least 1.
        let quiet = if self.quiet_below.0 == cfg.false_alarm_budget {
            self.quiet_below.1
        } else {
            -cfg.false_alarm_budget.ln()
        };
        if detectors[..active].iter().all(|d| d.below(quiet)) {
            return None;
        }
        let bounds = cfg.bounds(candidates);
        let i = (0..active).find(|&i| detectors[i].crossed(&bounds).is_some())?;
        let trigger = TRIGGERS[i];
        let (state, crossed) = self.judge(cfg, &bounds, trigger);
        let (crossed, statistic, threshold) = crossed?;
        let decision =
            crate::DecidingTest::new(format!("{}_{trigger}", crossed.as_str()), statistic, threshold);
        Some(Fired { trigger, reason: state.text, numbers: state.numbers, decision })
    }

    /// Every hard trigger's state, in the order they are checked: NaN/Inf,
    /// errors, latency.
    pub fn states(&self, cfg: &TriggerConfig, candidates: usize) -> Vec<TriggerState> {
        let bounds = cfg.bounds(candidates);
        TRIGGERS.iter().map(|&t| self.judge(cfg, &bounds, t).0).collect()
    }

    /// One trigger's state, and what crossed which bound.
    fn judge(
        &self,
        cfg: &TriggerConfig,
        b: &Bounds,
        trigger: &'static str,
    ) -> (TriggerState, Option<(Crossed, f64, f64)>) {
        let champion_rate = if self.champion.requests == 0 {
            0.0
        } else {
            self.champion.errors as f64 / self.champion.requests as f64
        };
        let (detector, what, limit, extra) = match trigger {
            "nan_inf_rate" => (&self.nan_inf, "NaN/Inf outputs".to_string(), cfg.nan_inf_rate, vec![]),
            "error_rate" => (
                &self.errors,
                "errors".to_string(),
                self.error_limit.unwrap_or_else(|| cfg.error_limit(&self.champion)),
                vec![("champion_error_rate", champion_rate)],
            ),
            _ => match cfg.p99_sla_ms {
                Some(sla) => (
                    &self.latency,
                    format!("requests slower than the {sla} ms SLA"),
                    LATENCY_H0,
                    vec![("sla_ms", sla), ("p99_ms", self.candidate.p99_ms.unwrap_or(f64::NAN))],
                ),
                None => {
                    let state = TriggerState {
                        trigger,
                        status: TriggerStatus::Off,
                        text: "off: no p99_sla_ms in model.toml [triggers]".to_string(),
                        numbers: BTreeMap::new(),
                    };
                    return (state, None);
                }
            },
        };
        let (x, n) = (detector.x, detector.n);
        let rate = if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let (cusum, (cusum_n, cusum_x)) = (detector.cusum(), detector.cusum_counts());
        let mut numbers = BTreeMap::from([
            ("count".to_string(), x as f64),
            ("requests".to_string(), n as f64),
            ("rate".to_string(), rate),
            ("limit".to_string(), limit),
            ("sprt_llr".to_string(), detector.sprt()),
            ("sprt_bound".to_string(), b.sprt),
            ("sprt_alpha".to_string(), b.alpha_sprt),
            ("cusum".to_string(), cusum),
            ("cusum_bound".to_string(), b.cusum),
            ("cusum_alpha".to_string(), b.alpha_cusum),
            ("cusum_requests".to_string(), cusum_n as f64),
            ("cusum_count".to_string(), cusum_x as f64),
            ("min_samples".to_string(), cfg.min_samples as f64),
        ]);
        for (k, v) in extra {
            if v.is_finite() {
                numbers.insert(k.to_string(), v);
            }
        }
        let pct = |v: f64| v * 100.0;
        let hours = cfg.budget_hours;
        if self.candidate.requests < cfg.min_samples {
            let text = format!(
                "waiting: {} of {} requests since the rollout started",
                thousands(self.candidate.requests),
                thousands(cfg.min_samples)
            );
            return (TriggerState { trigger, status: TriggerStatus::Waiting, text, numbers }, None);
        }
        let crossed = detector.crossed(b);
        let text = match crossed {
            Some(Crossed::Sprt) => format!(
                "{what}: {} of {} requests since the rollout started ({:.2}%) against a limit of {:.2}%: \
                 SPRT log-likelihood ratio {:.1} ≥ {:.1} (false-alarm share {} per {hours} h)",
                thousands(x),
                thousands(n),
                pct(rate),
                pct(limit),
                detector.sprt(),
                b.sprt,
                b.alpha_sprt
            ),
            Some(Crossed::Cusum) => format!(
                "{what}: {} of the last {} requests ({:.2}%) against a limit of {:.2}%: \
                 CUSUM {:.1} ≥ {:.1} (false-alarm share {} per {hours} h)",
                thousands(cusum_x),
                thousands(cusum_n),
                pct(if cusum_n == 0 { 0.0 } else { cusum_x as f64 / cusum_n as f64 }),
                pct(limit),
                cusum,
                b.cusum,
                b.alpha_cusum
            ),
            None => format!(
                "{what}: {} of {} requests ({:.2}%), limit {:.2}% (SPRT {:.1} < {:.1}; CUSUM {:.1} < {:.1})",
                thousands(x),
                thousands(n),
                pct(rate),
                pct(limit),
                detector.sprt(),
                b.sprt,
                cusum,
                b.cusum
            ),
        };
        let status = if crossed.is_some() { TriggerStatus::Fired } else { TriggerStatus::Ok };
        let deciding = crossed.map(|c| match c {
            Crossed::Sprt => (c, detector.sprt(), b.sprt),
            Crossed::Cusum => (c, cusum, b.cusum),
        });
        (TriggerState { trigger, status, text, numbers }, deciding)
    }
}

/// Where a trigger's sequential test stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStatus {
    /// Too few requests since the rollout started to judge.
    Waiting,
    /// Judged, not firing.
    Ok,
    /// The SPRT or the CUSUM crossed its bound.
    Fired,
    /// Not configured.
    Off,
}

impl TriggerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerStatus::Waiting => "waiting",
            TriggerStatus::Ok => "ok",
            TriggerStatus::Fired => "fired",
            TriggerStatus::Off => "off",
        }
    }
}

/// One trigger's state with its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerState {
    pub trigger: &'static str,
    pub status: TriggerStatus,
    /// In words, e.g. "waiting: 12 of 50 requests since the rollout started".
    pub text: String,
    pub numbers: BTreeMap<String, f64>,
}

/// 1070 → "1,070".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(requests: u64, errors: u64, nan_inf: u64, over_sla: u64) -> WindowCounts {
        WindowCounts { requests, errors, nan_inf, over_sla, p99_ms: None }
    }

    /// Feeds `ticks` ticks of 500 ms, each adding `per_tick` to the
    /// candidate's counts (champion: `champion` per tick); returns the
    /// detectors and the tick the first trigger fired at.
    fn run(
        cfg: &TriggerConfig,
        champion: WindowCounts,
        per_tick: WindowCounts,
        ticks: u64,
    ) -> (HardTriggers, Option<(u64, Fired)>) {
        let mut h = HardTriggers::default();
        let (mut c, mut k) = (WindowCounts::default(), WindowCounts::default());
        for t in 1..=ticks {
            for (sum, add) in [(&mut c, champion), (&mut k, per_tick)] {
                sum.requests += add.requests;
                sum.errors += add.errors;
                sum.nan_inf += add.nan_inf;
                sum.over_sla += add.over_sla;
            }
            h.observe(cfg, t * 500, &c, &k);
            if let Some(f) = h.fired(cfg, 1) {
                return (h, Some((t, f)));
            }
        }
        (h, None)
    }

    #[test]
    fn the_budget_is_split_across_triggers_and_candidates() {
        let cfg = TriggerConfig::default();
        assert_eq!(cfg.active_triggers(), 2);
        assert!((cfg.detector_alpha(1) - 0.0005).abs() < 1e-15);
        assert!((cfg.detector_alpha(3) - 0.001 / 6.0).abs() < 1e-15);
        assert_eq!(cfg.detector_alpha(0), cfg.detector_alpha(1), "no candidate counts as one");
        let sla = TriggerConfig { p99_sla_ms: Some(5.0), ..Default::default() };
        assert_eq!(sla.active_triggers(), 3);
        let b = sla.bounds(2);
        let share = 0.001 / 6.0;
        assert!((b.alpha_sprt + b.alpha_cusum - share).abs() < 1e-15);
        assert!((b.sprt - (1.0 / (share * SPRT_SHARE)).ln()).abs() < 1e-12);
        assert!((b.cusum - (172_800.0 / (share * (1.0 - SPRT_SHARE))).ln()).abs() < 1e-9);
        // Summed over every detector, the shares are the budget.
        let total = 6.0 * (b.alpha_sprt + b.alpha_cusum);
        assert!((total - sla.false_alarm_budget).abs() < 1e-15);
    }

    #[test]
    fn a_nan_candidate_fires_the_sprt_after_min_samples_with_its_numbers() {
        let cfg = TriggerConfig::default();
        let healthy = w(100, 0, 0, 0);
        // 100% NaN, 10 requests a tick: waits for 50 requests, then fires.
        let (_, fired) = run(&cfg, healthy, w(10, 0, 10, 0), 100);
        let (tick, f) = fired.expect("fires");
        assert_eq!(tick, 5, "the 50th request, not before");
        assert_eq!(f.trigger, "nan_inf_rate");
        assert_eq!(f.decision.test, "sprt_nan_inf_rate");
        assert_eq!(
            (f.decision.statistic, f.decision.threshold),
            (f.numbers["sprt_llr"], f.numbers["sprt_bound"])
        );
        assert!(f.decision.statistic >= f.decision.threshold);
        assert_eq!(f.numbers["requests"], 50.0);
        assert!(
            f.reason.starts_with("NaN/Inf outputs: 50 of 50 requests since the rollout started"),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("SPRT log-likelihood ratio"), "{}", f.reason);
        // Before min_samples the state says what it waits for.
        let (h, _) = run(&cfg, healthy, w(10, 0, 0, 0), 3);
        let states = h.states(&cfg, 1);
        let names: Vec<_> = states.iter().map(|s| (s.trigger, s.status)).collect();
        assert_eq!(
            names,
            [
                ("nan_inf_rate", TriggerStatus::Waiting),
                ("error_rate", TriggerStatus::Waiting),
                ("p99_latency", TriggerStatus::Off)
            ]
        );
        assert_eq!(states[0].text, "waiting: 30 of 50 requests since the rollout started");
    }

    #[test]
    fn at_the_limit_nothing_fires_and_the_state_shows_both_statistics() {
        let cfg = TriggerConfig::default();
        // Exactly 1% NaN for 24 h at 10 requests a tick, deterministically.
        let mut h = HardTriggers::default();
        let mut k = WindowCounts::default();
        for t in 1..=172_800u64 {
            k.requests += 10;
            k.nan_inf = k.requests / 100;
            h.observe(&cfg, t * 500, &w(0, 0, 0, 0), &k);
            assert!(h.fired(&cfg, 1).is_none(), "tick {t}");
        }
        let s = &h.states(&cfg, 1)[0];
        assert_eq!(s.status, TriggerStatus::Ok);
        assert!(s.numbers["sprt_llr"] < 0.0 && s.numbers["cusum"] < s.numbers["cusum_bound"]);
        for k in ["sprt_bound", "cusum_bound", "sprt_alpha", "cusum_alpha", "cusum_requests"] {
            assert!(s.numbers.contains_key(k), "{k}");
        }
        assert!(s.text.contains("SPRT") && s.text.contains("CUSUM"), "{}", s.text);
    }

    #[test]
    fn a_version_that_goes_bad_mid_rollout_fires_the_cusum() {
        let cfg = TriggerConfig::default();
        let mut h = HardTriggers::default();
        let mut k = WindowCounts::default();
        let mut t = 0;
        // An hour at 0.5% NaN, 10 requests a tick: the SPRT's LLR sinks.
        for _ in 0..7_200 {
            t += 1;
            k.requests += 10;
            k.nan_inf = k.requests / 200;
            h.observe(&cfg, t * 500, &w(0, 0, 0, 0), &k);
        }
        let sunk = h.states(&cfg, 1)[0].numbers["sprt_llr"];
        assert!(sunk < -100.0, "{sunk}");
        // Then 5%.
        let f = loop {
            t += 1;
            k.requests += 20;
            k.nan_inf += 1;
            h.observe(&cfg, t * 500, &w(0, 0, 0, 0), &k);
            if let Some(f) = h.fired(&cfg, 1) {
                break f;
            }
        };
        assert_eq!(f.decision.test, "cusum_nan_inf_rate");
        assert_eq!(f.decision.statistic, f.numbers["cusum"]);
        assert_eq!(f.decision.threshold, f.numbers["cusum_bound"]);
        // Caught on the bad stretch alone.
        assert!(f.numbers["cusum_requests"] < 2_000.0, "{:?}", f.numbers);
        assert!(f.reason.contains("of the last") && f.reason.contains("CUSUM"), "{}", f.reason);
    }

    #[test]
    fn error_rate_is_judged_against_five_times_the_champion() {
        let cfg = TriggerConfig::default();
        // 5 × (200 + 2√200 + 4) / 10,000.
        let want = 5.0 * (204.0 + 2.0 * 200f64.sqrt()) / 10_000.0;
        assert!((cfg.error_limit(&w(10_000, 200, 0, 0)) - want).abs() < 1e-12);
        assert!((cfg.error_limit(&w(100_000, 0, 0, 0)) - 0.01).abs() < 1e-12, "the floor");
        assert!((cfg.error_limit(&w(100, 0, 0, 0)) - 0.2).abs() < 1e-12, "4 / 100 × 5: too few to trust 0");
        assert_eq!(cfg.error_limit(&w(10, 10, 0, 0)), 0.5, "at most 50%");
        assert!((cfg.error_limit(&w(0, 0, 0, 0)) - 0.01).abs() < 1e-12, "no champion yet: the floor");
        // Champion fails 2%: the limit is 10%; 8% does not fire in an hour,
        // 30% fires.
        let (_, fired) = run(&cfg, w(100, 2, 0, 0), w(25, 2, 0, 0), 7_200);
        assert!(fired.is_none());
        let (_, fired) = run(&cfg, w(100, 2, 0, 0), w(10, 3, 0, 0), 7_200);
        let (_, f) = fired.expect("fires");
        assert_eq!(f.trigger, "error_rate");
        assert!((0.10..0.5).contains(&f.numbers["limit"]), "{:?}", f.numbers);
        assert!((f.numbers["champion_error_rate"] - 0.02).abs() < 1e-12);
    }

    #[test]
    fn latency_fires_on_the_share_over_the_sla() {
        let cfg = TriggerConfig { p99_sla_ms: Some(5.0), ..Default::default() };
        let (_, fired) = run(&cfg, w(10, 0, 0, 0), w(100, 0, 0, 1), 7_200);
        assert!(fired.is_none(), "1% over the SLA is p99 = SLA");
        let (_, fired) = run(&cfg, w(10, 0, 0, 0), w(10, 0, 0, 7), 100);
        assert_eq!(fired.expect("fires").1.trigger, "p99_latency");
        let (_, fired) = run(&TriggerConfig::default(), w(10, 0, 0, 0), w(10, 0, 0, 7), 100);
        assert!(fired.is_none(), "no SLA, no trigger");
    }

    #[test]
    fn counts_that_go_down_start_again_from_their_new_value() {
        let cfg = TriggerConfig::default();
        let mut h = HardTriggers::default();
        h.observe(&cfg, 500, &w(0, 0, 0, 0), &w(1000, 0, 5, 0));
        h.observe(&cfg, 1000, &w(0, 0, 0, 0), &w(10, 0, 0, 0));
        h.observe(&cfg, 1500, &w(0, 0, 0, 0), &w(30, 0, 0, 0));
        assert_eq!(h.states(&cfg, 1)[0].numbers["requests"], 1020.0);
    }

    #[test]
    fn overrides_replace_only_what_they_set_and_are_checked() {
        let base = TriggerConfig { p99_sla_ms: Some(100.0), ..Default::default() };
        let o = TriggerOverrides {
            p99_sla_ms: Some(2.0),
            min_samples: Some(10),
            false_alarm_budget: Some(0.01),
            ..Default::default()
        };
        let c = o.apply(base.clone());
        assert_eq!((c.p99_sla_ms, c.min_samples, c.nan_inf_rate), (Some(2.0), 10, 0.01));
        assert_eq!((c.false_alarm_budget, c.budget_hours), (0.01, 24.0));
        assert_eq!(TriggerOverrides::default().apply(base.clone()), base);
        let bad = TriggerOverrides { nan_inf_rate: Some(1.5), ..Default::default() };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "triggers.nan_inf_rate must be a rate above 0 and at most 1, got 1.5"
        );
        assert!(o.validate().is_ok());
        // Persisted overrides without the new fields still parse.
        let old: TriggerOverrides = serde_json::from_str(r#"{"p99_sla_ms":2.0}"#).unwrap();
        assert_eq!(old.false_alarm_budget, None);
    }

    /// Every field at, just inside and just outside its range (and NaN and
    /// infinities), so model.toml and the admin API, which both call this,
    /// agree on every value.
    #[test]
    fn every_trigger_setting_is_range_checked_by_the_one_validation() {
        let with = |f: &dyn Fn(&mut TriggerOverrides)| {
            let mut o = TriggerOverrides::default();
            f(&mut o);
            o.validate().map_err(|e| e.to_string())
        };
        type Set = fn(&mut TriggerOverrides, f64);
        let numbers: [(&str, Set, f64, f64); 6] = [
            ("p99_sla_ms", |o, v| o.p99_sla_ms = Some(v), 0.001, 600_000.0),
            ("nan_inf_rate", |o, v| o.nan_inf_rate = Some(v), 1e-9, 1.0),
            ("error_ratio", |o, v| o.error_ratio = Some(v), 1.0, 1e6),
            ("error_rate_floor", |o, v| o.error_rate_floor = Some(v), 1e-9, 1.0),
            ("false_alarm_budget", |o, v| o.false_alarm_budget = Some(v), 1e-12, 0.5),
            ("budget_hours", |o, v| o.budget_hours = Some(v), 0.01, 8760.0),
        ];
        for (field, set, lo, hi) in numbers {
            for ok in [lo, hi, (lo + hi) / 2.0] {
                assert_eq!(with(&|o| set(o, ok)), Ok(()), "{field} = {ok}");
            }
            for bad in [lo / 2.0, hi * 2.0, 0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let e = with(&|o| set(o, bad)).unwrap_err();
                assert!(e.starts_with(&format!("triggers.{field} must be ")), "{field} = {bad}: {e}");
                assert!(e.ends_with(&format!(", got {bad}")), "{e}");
            }
        }
        assert_eq!(
            with(&|o| o.min_samples = Some(0)),
            Err("triggers.min_samples must be between 1 and 1000000000, got 0".to_string())
        );
        assert!(with(&|o| o.min_samples = Some(MAX_MIN_SAMPLES + 1)).is_err());
        assert_eq!(with(&|o| o.min_samples = Some(1)), Ok(()));
        assert_eq!(with(&|o| o.min_samples = Some(MAX_MIN_SAMPLES)), Ok(()));
        assert_eq!(thousands(1070), "1,070");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
