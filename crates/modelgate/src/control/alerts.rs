//! Soft triggers: one ledger of the alerts raised per rollout, for every
//! kind (prediction shift, regressions, feature importance). Each finding is
//! a typed [`Alert`]; the ledger lets through only those not raised yet (or
//! raised now at a higher level), and [`apply`] records them on the
//! rollout, pausing it when `pause_on_alert` says so.

use std::collections::{BTreeMap, BTreeSet};

use modelgate_rollout::analysis::{PsiLevel, psi};
use modelgate_rollout::{Actor, AuditEvent, DecidingTest, Millis, Regression, RegressionKind, Rollout};

use crate::control::importance::Finding;

/// Scores each side needs before PSI is computed.
pub const PSI_MIN_SCORES: usize = 200;
const PSI_BINS: usize = 10;

/// What an alert is about; its name is the audit event's trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    /// The prediction distribution moved from the champion's.
    Psi,
    ErrorRegression,
    LatencyRegression,
    KpiRegression,
    /// A regression an earlier build recorded as a sentence only.
    Regression,
    FeatureImportance,
}

impl AlertKind {
    /// The kinds this build raises (not the legacy `Regression`).
    pub const RAISED: [AlertKind; 5] = [
        Self::Psi,
        Self::ErrorRegression,
        Self::LatencyRegression,
        Self::KpiRegression,
        Self::FeatureImportance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Psi => "psi",
            Self::ErrorRegression => "error_regression",
            Self::LatencyRegression => "latency_regression",
            Self::KpiRegression => "kpi_regression",
            Self::Regression => "regression",
            Self::FeatureImportance => "feature_importance",
        }
    }
}

/// How loud an alert is: only `Alert` pauses under `pause_on_alert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Warn,
    Alert,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Alert => "alert",
        }
    }
}

/// One soft-trigger finding about one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub version: u64,
    pub kind: AlertKind,
    pub level: Level,
    /// The whole finding in words.
    pub reason: String,
    pub numbers: BTreeMap<String, f64>,
    /// The test that found it, for findings a test decides (regressions).
    pub decision: Option<DecidingTest>,
}

/// The alerts already raised, per (rollout id, version, kind), at the
/// highest level raised.
#[derive(Debug, Default)]
pub struct Ledger(BTreeMap<(String, u64, AlertKind), Level>);

impl Ledger {
    /// The alerts of `found` not raised yet for `rollout_id`, or raised
    /// before at a lower level; they count as raised from now on.
    pub fn admit(&mut self, rollout_id: &str, found: Vec<Alert>) -> Vec<Alert> {
        found
            .into_iter()
            .filter(|a| {
                let key = (rollout_id.to_string(), a.version, a.kind);
                if self.0.get(&key).is_some_and(|raised| *raised >= a.level) {
                    return false;
                }
                self.0.insert(key, a.level);
                true
            })
            .collect()
    }

    /// Forgets rollouts that are no longer live.
    pub fn retain(&mut self, live: &BTreeSet<String>) {
        self.0.retain(|(id, _, _), _| live.contains(id));
    }
}

/// A version's prediction shift from the champion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub psi: f64,
    pub level: PsiLevel,
    pub champion_scores: usize,
    pub candidate_scores: usize,
}

/// PSI of each compared version's recent scores against the champion's,
/// where both sides have [`PSI_MIN_SCORES`].
pub fn psi_per_version(
    champion: &[f64],
    compared: impl IntoIterator<Item = (u64, Vec<f64>)>,
) -> BTreeMap<u64, Shift> {
    if champion.len() < PSI_MIN_SCORES {
        return BTreeMap::new();
    }
    compared
        .into_iter()
        .filter(|(_, scores)| scores.len() >= PSI_MIN_SCORES)
        .filter_map(|(v, scores)| {
            let p = psi(champion, &scores, PSI_BINS).ok()?;
            Some((
                v,
                Shift {
                    psi: p.value,
                    level: p.level,
                    champion_scores: champion.len(),
                    candidate_scores: scores.len(),
                },
            ))
        })
        .collect()
}

/// Prediction-distribution shift: 0.1 warns, 0.25 alerts.
pub fn psi_alerts(shifts: &BTreeMap<u64, Shift>) -> Vec<Alert> {
    shifts
        .iter()
        .filter_map(|(&v, s)| {
            let level = match s.level {
                PsiLevel::Ok => return None,
                PsiLevel::Warn => Level::Warn,
                PsiLevel::Alert => Level::Alert,
            };
            Some(Alert {
                version: v,
                kind: AlertKind::Psi,
                level,
                reason: format!(
                    "prediction distribution of version {v} shifted from the champion's: PSI {:.3} ({}; 0.1 warns, 0.25 alerts)",
                    s.psi,
                    level.as_str()
                ),
                numbers: BTreeMap::from([
                    ("psi".to_string(), s.psi),
                    ("version".to_string(), v as f64),
                    ("champion_scores".to_string(), s.champion_scores as f64),
                    ("candidate_scores".to_string(), s.candidate_scores as f64),
                ]),
                decision: None,
            })
        })
        .collect()
}

/// Regressions (the step verdict's, and business metrics worse than the
/// control beyond the MDE) as alerts; the reason is the regression's whole
/// text.
pub fn regression_alerts(regressions: &[Regression]) -> Vec<Alert> {
    regressions
        .iter()
        .map(|r| Alert {
            version: r.version,
            kind: match r.kind {
                RegressionKind::ErrorRate => AlertKind::ErrorRegression,
                RegressionKind::Latency => AlertKind::LatencyRegression,
                RegressionKind::Kpi => AlertKind::KpiRegression,
                RegressionKind::Unrecorded => AlertKind::Regression,
            },
            level: Level::Alert,
            reason: r.text.clone(),
            numbers: {
                let mut n = r.numbers.clone();
                n.insert("version".to_string(), r.version as f64);
                n
            },
            decision: r.decision.clone(),
        })
        .collect()
}

/// A candidate or shadow whose reliance on the inputs moved from the
/// champion's by `warn` (total variation) warns, by `alert` alerts.
pub fn importance_alerts(findings: &BTreeMap<u64, Finding>, warn: f64, alert: f64) -> Vec<Alert> {
    findings
        .iter()
        .filter_map(|(&v, f)| {
            let level = if f.shift >= alert {
                Level::Alert
            } else if f.shift >= warn {
                Level::Warn
            } else {
                return None;
            };
            let moved: Vec<String> =
                f.moves.iter().map(|(j, a, b)| format!("feature {j} {:.0}% → {:.0}%", a * 100.0, b * 100.0)).collect();
            let mut numbers = BTreeMap::from([
                ("importance_shift".to_string(), f.shift),
                ("version".to_string(), v as f64),
                ("rows".to_string(), f.rows as f64),
            ]);
            if let Some((j, a, b)) = f.moves.first() {
                numbers.insert("top_feature".to_string(), *j as f64);
                numbers.insert("top_feature_champion_share".to_string(), *a);
                numbers.insert("top_feature_candidate_share".to_string(), *b);
            }
            Some(Alert {
                version: v,
                kind: AlertKind::FeatureImportance,
                level,
                reason: format!(
                    "version {v} relies on the inputs differently from the champion: feature-importance shift {:.2} ({}; {warn} warns, {alert} alerts) on {} live rows; moved most: {}",
                    f.shift,
                    level.as_str(),
                    f.rows,
                    moved.join(", ")
                ),
                numbers,
                decision: None,
            })
        })
        .collect()
}

/// Records each alert as an ALERT audit event of `rollout` and, for an
/// `Alert`-level one under `pause_on_alert`, pauses the rollout for a
/// person to decide (the pause carries the alert's numbers). Returns the
/// events, to be appended to the audit log.
pub fn apply(rollout: &mut Rollout, alerts: &[Alert], pause_on_alert: bool, now: Millis) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    for a in alerts {
        tracing::warn!(model = %rollout.model, version = a.version, trigger = a.kind.as_str(), level = a.level.as_str(), reason = %a.reason, "soft trigger");
        events.push(
            rollout
                .alert(now, a.kind.as_str(), a.reason.clone(), a.numbers.clone())
                .decided_by(a.decision.clone()),
        );
        if pause_on_alert && a.level == Level::Alert && !rollout.is_paused() {
            match rollout.pause(now, &Actor::system(), Some(format!("pause_on_alert: {}", a.reason))) {
                Ok(paused) => events.extend(paused.into_iter().map(|mut e| {
                    if e.numbers.is_empty() {
                        e.numbers = a.numbers.clone();
                    }
                    e
                })),
                Err(e) => {
                    tracing::warn!(model = %rollout.model, error = %e, "pause_on_alert could not pause")
                }
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::testing::{T0, canary};
    use modelgate_rollout::Action;

    fn alert(version: u64, kind: AlertKind, level: Level) -> Alert {
        Alert {
            version,
            kind,
            level,
            reason: format!("{kind:?} {level:?}"),
            numbers: BTreeMap::new(),
            decision: None,
        }
    }

    #[test]
    fn the_same_alert_is_raised_once_and_a_changed_one_again() {
        let mut ledger = Ledger::default();
        let warn = alert(2, AlertKind::Psi, Level::Warn);
        assert_eq!(ledger.admit("r1", vec![warn.clone()]), std::slice::from_ref(&warn));
        assert!(ledger.admit("r1", vec![warn.clone()]).is_empty(), "the same alert twice");
        // Louder, or about something else: raised.
        let loud = alert(2, AlertKind::Psi, Level::Alert);
        let other = alert(2, AlertKind::FeatureImportance, Level::Warn);
        assert_eq!(ledger.admit("r1", vec![loud.clone(), other.clone()]), [loud.clone(), other]);
        // Quieter than what was raised: not again.
        assert!(ledger.admit("r1", vec![warn.clone(), loud]).is_empty());
        // Another rollout starts a clean slate; a finished one is forgotten.
        assert_eq!(ledger.admit("r2", vec![warn.clone()]).len(), 1);
        ledger.retain(&BTreeSet::from(["r2".to_string()]));
        assert_eq!(ledger.admit("r1", vec![warn]).len(), 1);
    }

    #[test]
    fn an_alerts_reason_is_the_whole_regression_text() {
        let text = "v2 error rate +14.4 pp (always-valid 95% CI +12.4 to +16.4; margin 1.0 pp) regressed beyond the margin";
        let regression = Regression {
            version: 2,
            kind: RegressionKind::ErrorRate,
            numbers: BTreeMap::from([("diff".to_string(), 0.144)]),
            text: text.to_string(),
            decision: Some(
                DecidingTest::new("always_valid_ci_error_rate", 0.124, 0.01).with_n(1, 900).with_n(2, 100),
            ),
        };
        let alerts = regression_alerts(&[regression]);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].kind.as_str(), alerts[0].reason.as_str()), ("error_regression", text));
        assert!(alerts[0].reason.contains("1.0 pp)"), "cut mid-parenthesis: {}", alerts[0].reason);
        assert_eq!(alerts[0].numbers["version"], 2.0);
        let mut rollout = canary(&[10, 100]);
        let events = apply(&mut rollout, &alerts, false, T0 + 1);
        assert_eq!(events[0].reason.as_deref(), Some(text));
        // The event carries the test that found the regression.
        let d = events[0].decision.as_ref().expect("the deciding test");
        assert_eq!((d.test.as_str(), d.statistic, d.threshold), ("always_valid_ci_error_rate", 0.124, 0.01));
        assert_eq!(d.n, BTreeMap::from([(1, 900), (2, 100)]));
    }

    #[test]
    fn an_alert_pauses_under_pause_on_alert_and_a_warning_never() {
        let warn = alert(2, AlertKind::Psi, Level::Warn);
        let loud = alert(2, AlertKind::LatencyRegression, Level::Alert);
        let mut rollout = canary(&[10, 100]);
        let events = apply(&mut rollout, std::slice::from_ref(&warn), true, T0 + 1);
        assert_eq!(events.iter().map(|e| e.action).collect::<Vec<_>>(), [Action::Alert]);
        let events = apply(&mut rollout, std::slice::from_ref(&loud), false, T0 + 1);
        assert_eq!(events.len(), 1);
        assert!(!rollout.is_paused(), "alert only, as configured");
        let events = apply(&mut rollout, &[loud], true, T0 + 1);
        assert_eq!(events.iter().map(|e| e.action).collect::<Vec<_>>(), [Action::Alert, Action::Paused]);
        assert!(rollout.is_paused());
    }
}
