//! Hard triggers: the conditions that roll a candidate back by themselves.
//!
//! From the strategy notes: error rate above 5× the champion's, p99 above the
//! SLA, NaN/Inf output rate above 1%. Each is judged with Wald's sequential
//! probability ratio test on a Bernoulli rate, so that a handful of requests
//! can neither fire a trigger nor mask one, and judging on every tick does
//! not inflate false alarms beyond the test's α:
//!
//! - NaN/Inf: H0 rate = 1% (the limit) against H1 rate = 2%;
//! - errors: H0 rate = max(5 × champion's rate, floor) against H1 = 2 × H0;
//! - latency: the share of requests slower than the SLA, H0 = 1% (that is,
//!   p99 = SLA) against H1 = 5%.
//!
//! A trigger fires when the log-likelihood ratio crosses ln((1−β)/α) with at
//! least `min_samples` requests in the window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Requests a window needs before any trigger may fire.
    pub min_samples: u64,
    /// SPRT type I error (false rollback).
    pub alpha: f64,
    /// SPRT type II error (missed rollback).
    pub beta: f64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            nan_inf_rate: 0.01,
            error_ratio: 5.0,
            error_rate_floor: 0.01,
            p99_sla_ms: None,
            min_samples: 50,
            alpha: 0.001,
            beta: 0.01,
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
            ..base
        }
    }
}

/// One version's window, as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub requests: u64,
    pub errors: u64,
    pub nan_inf: u64,
    /// Successful requests slower than the SLA (0 without an SLA).
    pub over_sla: u64,
    /// The window's p99 in milliseconds, if it has latencies.
    pub p99_ms: Option<f64>,
}

/// A fired trigger with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// `nan_inf_rate`, `error_rate` or `p99_latency`.
    pub trigger: &'static str,
    pub reason: String,
    pub numbers: BTreeMap<String, f64>,
    /// The SPRT that fired (`sprt_<trigger>`): its log-likelihood ratio
    /// and the bound it crossed. The caller, who knows the versions, adds
    /// the requests per arm.
    pub decision: crate::DecidingTest,
}

/// Wald's SPRT log-likelihood ratio for `x` successes in `n` Bernoulli trials,
/// H1 rate `p1` against H0 rate `p0`.
pub fn sprt_llr(x: u64, n: u64, p0: f64, p1: f64) -> f64 {
    let p0 = p0.clamp(1e-9, 1.0 - 1e-9);
    let p1 = p1.clamp(1e-9, 1.0 - 1e-9);
    x as f64 * (p1 / p0).ln() + (n.saturating_sub(x)) as f64 * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// `x` events in `n` trials, tested at rate `p0` (H0) against `p1` (H1).
#[derive(Debug, Clone, Copy)]
struct RateTest {
    x: u64,
    n: u64,
    p0: f64,
    p1: f64,
}

impl TriggerConfig {
    /// The SPRT's upper boundary: accept H1 (fire) above it.
    pub fn upper_bound(&self) -> f64 {
        ((1.0 - self.beta) / self.alpha).ln()
    }

    /// Where one trigger's test stands.
    fn state(
        &self,
        trigger: &'static str,
        what: &str,
        test: RateTest,
        extra: &[(&str, f64)],
    ) -> TriggerState {
        let RateTest { x, n, p0, p1 } = test;
        let llr = sprt_llr(x, n, p0, p1);
        let rate = if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let mut numbers = BTreeMap::from([
            ("count".to_string(), x as f64),
            ("requests".to_string(), n as f64),
            ("rate".to_string(), rate),
            ("limit".to_string(), p0),
            ("sprt_llr".to_string(), llr),
            ("sprt_bound".to_string(), self.upper_bound()),
            ("min_samples".to_string(), self.min_samples as f64),
        ]);
        for (k, v) in extra {
            if v.is_finite() {
                numbers.insert((*k).to_string(), *v);
            }
        }
        let (status, text) = if n < self.min_samples {
            (
                TriggerStatus::Waiting,
                format!("waiting: {} of {} samples in the window", thousands(n), thousands(self.min_samples)),
            )
        } else if llr >= self.upper_bound() {
            (
                TriggerStatus::Fired,
                format!(
                    "{what}: {x} of {n} requests ({:.2}%) against a limit of {:.2}% (SPRT LLR {llr:.1} ≥ {:.1})",
                    rate * 100.0,
                    p0 * 100.0,
                    self.upper_bound()
                ),
            )
        } else {
            (
                TriggerStatus::Ok,
                format!(
                    "{what}: {x} of {n} requests ({:.2}%), limit {:.2}% (SPRT LLR {llr:.1} < {:.1})",
                    rate * 100.0,
                    p0 * 100.0,
                    self.upper_bound()
                ),
            )
        };
        TriggerState { trigger, status, text, numbers }
    }

    /// The first hard trigger the candidate's window fires, if any.
    pub fn evaluate(&self, champion: &WindowCounts, candidate: &WindowCounts) -> Option<Fired> {
        self.states(champion, candidate).into_iter().find(|s| s.status == TriggerStatus::Fired).map(|s| {
            let number = |k: &str| s.numbers.get(k).copied().unwrap_or(f64::NAN);
            let decision = crate::DecidingTest::new(
                format!("sprt_{}", s.trigger),
                number("sprt_llr"),
                number("sprt_bound"),
            );
            Fired { trigger: s.trigger, reason: s.text, numbers: s.numbers, decision }
        })
    }

    /// Every hard trigger's state for the candidate's window, in the order
    /// they are checked: NaN/Inf, errors, latency.
    pub fn states(&self, champion: &WindowCounts, candidate: &WindowCounts) -> Vec<TriggerState> {
        let n = candidate.requests;
        let mut out = vec![self.state(
            "nan_inf_rate",
            "NaN/Inf outputs",
            RateTest {
                x: candidate.nan_inf,
                n,
                p0: self.nan_inf_rate,
                p1: (2.0 * self.nan_inf_rate).min(0.99),
            },
            &[],
        )];
        let champion_rate =
            if champion.requests == 0 { 0.0 } else { champion.errors as f64 / champion.requests as f64 };
        let error_limit = (self.error_ratio * champion_rate).max(self.error_rate_floor).min(0.5);
        out.push(self.state(
            "error_rate",
            "errors",
            RateTest { x: candidate.errors, n, p0: error_limit, p1: (2.0 * error_limit).min(0.99) },
            &[("champion_error_rate", champion_rate)],
        ));
        match self.p99_sla_ms {
            Some(sla) => {
                let ok = n.saturating_sub(candidate.errors);
                out.push(self.state(
                    "p99_latency",
                    &format!("requests slower than the {sla} ms SLA"),
                    RateTest { x: candidate.over_sla, n: ok, p0: 0.01, p1: 0.05 },
                    &[("sla_ms", sla), ("p99_ms", candidate.p99_ms.unwrap_or(f64::NAN))],
                ));
            }
            None => out.push(TriggerState {
                trigger: "p99_latency",
                status: TriggerStatus::Off,
                text: "off: no p99_sla_ms in model.toml [triggers]".to_string(),
                numbers: BTreeMap::new(),
            }),
        }
        out
    }
}

/// Where a trigger's sequential test stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStatus {
    /// Too few requests in the window to judge.
    Waiting,
    /// Judged, not firing.
    Ok,
    /// The SPRT crossed its bound.
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
    /// In words, e.g. "waiting: 12 of 50 samples in the window".
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

    #[test]
    fn a_handful_of_bad_requests_neither_fires_nor_masks() {
        let cfg = TriggerConfig::default();
        let healthy = w(1000, 0, 0, 0);
        // Below min_samples nothing fires, even at 100% NaN.
        assert!(cfg.evaluate(&healthy, &w(10, 0, 10, 0)).is_none());
        // A lot of NaN fires once there are enough samples.
        let f = cfg.evaluate(&healthy, &w(60, 0, 20, 0)).unwrap();
        assert_eq!(f.trigger, "nan_inf_rate");
        assert!(f.numbers["sprt_llr"] >= f.numbers["sprt_bound"]);
        // The audit event's decision: the test, its LLR and the bound crossed.
        assert_eq!(f.decision.test, "sprt_nan_inf_rate");
        assert_eq!((f.decision.statistic, f.decision.threshold), (f.numbers["sprt_llr"], cfg.upper_bound()));
        // At the limit (1%) it does not fire, however long it runs.
        assert!(cfg.evaluate(&healthy, &w(100_000, 0, 1000, 0)).is_none());
        // Well above it, it does.
        assert!(cfg.evaluate(&healthy, &w(10_000, 0, 300, 0)).is_some());
    }

    #[test]
    fn error_rate_is_judged_against_five_times_the_champion() {
        let cfg = TriggerConfig::default();
        // Champion fails 2%: the limit is 10%; 8% does not fire, 30% does.
        let champion = w(10_000, 200, 0, 0);
        assert!(cfg.evaluate(&champion, &w(5_000, 400, 0, 0)).is_none());
        let f = cfg.evaluate(&champion, &w(500, 150, 0, 0)).unwrap();
        assert_eq!(f.trigger, "error_rate");
        assert!((f.numbers["limit"] - 0.10).abs() < 1e-12);
        // A champion with no errors: the floor (1%) applies.
        let f = cfg.evaluate(&w(10_000, 0, 0, 0), &w(200, 20, 0, 0)).unwrap();
        assert!((f.numbers["limit"] - 0.01).abs() < 1e-12);
    }

    #[test]
    fn latency_fires_on_the_share_over_the_sla() {
        let cfg = TriggerConfig { p99_sla_ms: Some(5.0), ..Default::default() };
        let champion = w(1000, 0, 0, 0);
        assert!(cfg.evaluate(&champion, &w(1000, 0, 0, 10)).is_none(), "1% over the SLA is p99 = SLA");
        let f = cfg.evaluate(&champion, &w(200, 0, 0, 150)).unwrap();
        assert_eq!(f.trigger, "p99_latency");
        assert!(
            TriggerConfig::default().evaluate(&champion, &w(200, 0, 0, 150)).is_none(),
            "no SLA, no trigger"
        );
    }

    #[test]
    fn states_say_what_each_trigger_waits_for() {
        let cfg = TriggerConfig::default();
        let states = cfg.states(&w(1000, 0, 0, 0), &w(12, 0, 0, 0));
        let names: Vec<_> = states.iter().map(|s| (s.trigger, s.status)).collect();
        assert_eq!(
            names,
            [
                ("nan_inf_rate", TriggerStatus::Waiting),
                ("error_rate", TriggerStatus::Waiting),
                ("p99_latency", TriggerStatus::Off)
            ]
        );
        assert_eq!(states[0].text, "waiting: 12 of 50 samples in the window");
        let states = cfg.states(&w(1000, 0, 0, 0), &w(500, 1, 0, 0));
        assert_eq!(states[1].status, TriggerStatus::Ok);
        assert_eq!(states[1].numbers["count"], 1.0);
        assert_eq!(thousands(1070), "1,070");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn overrides_replace_only_what_they_set_and_are_checked() {
        let base = TriggerConfig { p99_sla_ms: Some(100.0), ..Default::default() };
        let o = TriggerOverrides { p99_sla_ms: Some(2.0), min_samples: Some(10), ..Default::default() };
        let c = o.apply(base.clone());
        assert_eq!((c.p99_sla_ms, c.min_samples, c.nan_inf_rate), (Some(2.0), 10, 0.01));
        assert_eq!(TriggerOverrides::default().apply(base.clone()), base);
        let bad = TriggerOverrides { nan_inf_rate: Some(1.5), ..Default::default() };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "triggers.nan_inf_rate must be a rate above 0 and at most 1, got 1.5"
        );
        assert!(o.validate().is_ok());
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
        let numbers: [(&str, Set, f64, f64); 4] = [
            ("p99_sla_ms", |o, v| o.p99_sla_ms = Some(v), 0.001, 600_000.0),
            ("nan_inf_rate", |o, v| o.nan_inf_rate = Some(v), 1e-9, 1.0),
            ("error_ratio", |o, v| o.error_ratio = Some(v), 1.0, 1e6),
            ("error_rate_floor", |o, v| o.error_rate_floor = Some(v), 1e-9, 1.0),
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
    }

    #[test]
    fn sprt_llr_matches_the_closed_form() {
        // 3 successes of 10 at p0 = 0.1, p1 = 0.2.
        let want = 3.0 * (2.0f64).ln() + 7.0 * (0.8f64 / 0.9).ln();
        assert!((sprt_llr(3, 10, 0.1, 0.2) - want).abs() < 1e-12);
    }
}
