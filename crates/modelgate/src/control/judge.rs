//! Judging a step and deciding what follows: the hard triggers' detectors,
//! and the decision a tick takes from them, the safety verdict and the
//! alerts. Pure but for the detectors, which accumulate evidence tick by
//! tick (control/detectors.rs): every other input is a snapshot.

use modelgate_rollout::{
    Action, ArmObservation, AuditEvent, DecidingTest, Fired, Millis, Rollout, StepVerdict, TriggerConfig,
};

use crate::control::alerts::{self, Alert};
use crate::control::analysis::ArmNumbers;
use crate::control::detectors::RolloutDetectors;

/// Feeds the rollout's detectors with what each candidate served since the
/// last tick (the arms' running totals as of `now`), and returns the first
/// hard trigger any candidate fires: its SPRT since the rollout started or
/// its CUSUM crossed the bound its share of the false-alarm budget sets.
/// Its decision counts the requests each arm served since the rollout
/// started.
pub fn hard_trigger(
    detectors: &mut RolloutDetectors,
    cfg: &TriggerConfig,
    champion: u64,
    arms: &[ArmNumbers],
    now: Millis,
) -> Option<Fired> {
    detectors.observe(cfg, champion, arms, now);
    detectors.fired(cfg, champion, arms)
}

/// What was judged about one rollout this tick.
#[derive(Debug, Clone)]
pub struct Judged {
    /// A hard trigger that fired.
    pub fired: Option<Fired>,
    /// The step's safety verdict.
    pub verdict: StepVerdict,
    /// For a healthy verdict, the comparison that decided it (see
    /// [`crate::control::analysis::judge_step`]).
    pub evidence: Option<DecidingTest>,
    /// For an A/B test, the test behind its verdict (see
    /// [`crate::control::analysis::ab_verdict_test`]).
    pub ab_verdict: Option<DecidingTest>,
    /// What the rollout logic sees (samples, KPIs).
    pub observation: ArmObservation,
}

/// Who may decide what: any replica rolls back on what its own windows
/// show; only the leader (or a single server) alerts and takes the
/// decisions that must happen once.
#[derive(Debug, Clone, Copy)]
pub struct Authority<'a> {
    pub leader: bool,
    /// Fleet mode: this replica's name, said in a rollback's reason.
    pub replica: Option<&'a str>,
    pub pause_on_alert: bool,
}

/// What a tick does with a rollout.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// A hard trigger fired: roll back now, with these events.
    Rollback(Vec<AuditEvent>),
    /// Automatic decisions (advance, switch, promote, complete) to commit.
    Commit(Vec<AuditEvent>),
    /// Nothing to commit: keep the rollout (its verdict, an alert's pause).
    Keep,
    /// A decision that is not this replica's to take: drop it.
    NotOurs,
}

/// The decision and the alert events (to append to the audit log).
#[derive(Debug)]
pub struct Decided {
    pub decision: Decision,
    pub alert_events: Vec<AuditEvent>,
    /// Whether an alert paused the rollout.
    pub paused: bool,
}

/// Decides on `rollout` (changed in place): a fired hard trigger rolls it
/// back; otherwise new alerts are recorded (pausing it under
/// `pause_on_alert`), and the rollout's own logic advances, switches or
/// promotes on the verdict and the observation.
pub fn decide(
    rollout: &mut Rollout,
    judged: Judged,
    alerts: &[Alert],
    who: Authority<'_>,
    now: Millis,
) -> Decided {
    if let Some(fired) = judged.fired {
        let mut reason = fired.reason;
        if let Some(replica) = who.replica {
            reason = format!("{reason} (seen by replica {replica})");
        }
        tracing::warn!(model = %rollout.model, rollout = %rollout.id, trigger = fired.trigger, reason = %reason, "hard trigger fired; rolling back");
        let decision = match rollout.rollback_triggered(now, fired.trigger, reason, fired.numbers) {
            Ok(events) => Decision::Rollback(
                events.into_iter().map(|e| e.decided_by(Some(fired.decision.clone()))).collect(),
            ),
            Err(e) => {
                tracing::error!(model = %rollout.model, error = %e, "automatic rollback refused");
                Decision::NotOurs
            }
        };
        return Decided { decision, alert_events: Vec::new(), paused: false };
    }
    let was_paused = rollout.is_paused();
    let alert_events =
        if who.leader { alerts::apply(rollout, alerts, who.pause_on_alert, now) } else { Vec::new() };
    let paused = !was_paused && rollout.is_paused();
    let mut events = rollout.tick(now, &judged.observation, &judged.verdict);
    for e in events.iter_mut().filter(|e| e.action == Action::ExperimentReady) {
        e.decision = judged.ab_verdict.clone().filter(DecidingTest::is_finite);
    }
    if judged.verdict == StepVerdict::Healthy {
        // What the healthy verdict let happen, unless the rollout's own
        // gate (champion-challenger) recorded the test it decided on.
        for e in events.iter_mut().filter(|e| {
            matches!(e.action, Action::Advanced | Action::Switched | Action::Promoted) && e.decision.is_none()
        }) {
            e.decision = judged.evidence.clone().filter(DecidingTest::is_finite);
        }
    }
    let decision = match (events.is_empty(), who.leader) {
        (true, _) => Decision::Keep,
        (false, true) => Decision::Commit(events),
        (false, false) => Decision::NotOurs,
    };
    Decided { decision, alert_events, paused }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use modelgate_rollout::{Regression, RegressionKind, RolloutState};

    use super::*;
    use crate::control::alerts::regression_alerts;
    use crate::control::testing::{T0, canary};

    const LEADER: Authority<'static> = Authority { leader: true, replica: None, pause_on_alert: false };

    fn unhealthy() -> StepVerdict {
        StepVerdict::Unhealthy(vec![Regression {
            version: 2,
            kind: RegressionKind::Latency,
            numbers: BTreeMap::new(),
            text: "v2 mean latency +40 ms (always-valid 95% CI +30 to +50; margin 10 ms) regressed beyond the margin".into(),
            decision: None,
        }])
    }

    fn judged(fired: Option<Fired>, verdict: StepVerdict, samples: u64) -> Judged {
        let observation = ArmObservation::new().with_samples(1, samples * 9).with_samples(2, samples);
        let evidence = (verdict == StepVerdict::Healthy)
            .then(|| DecidingTest::new("always_valid_ci_latency", 1.5, 2.0).with_n(1, 900).with_n(2, 100));
        Judged { fired, verdict, observation, evidence, ab_verdict: None }
    }

    fn actions(d: &Decision) -> Vec<Action> {
        match d {
            Decision::Rollback(e) | Decision::Commit(e) => e.iter().map(|e| e.action).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_hard_trigger_rolls_back_whatever_the_verdict_and_on_any_replica() {
        let fired = Fired {
            trigger: "error_rate",
            reason: "version 2: error rate 30%".into(),
            numbers: BTreeMap::new(),
            decision: DecidingTest::new("sprt_error_rate", 9.5, 6.9).with_n(1, 900).with_n(2, 100),
        };
        let mut rollout = canary(&[10, 50, 100]);
        let follower = Authority { leader: false, replica: Some("r2"), pause_on_alert: true };
        let d = decide(&mut rollout, judged(Some(fired), unhealthy(), 500), &[], follower, T0 + 1_000);
        assert_eq!(actions(&d.decision), [Action::RolledBack]);
        let Decision::Rollback(events) = &d.decision else { unreachable!() };
        let test = events[0].decision.as_ref().expect("the rollback's deciding test");
        assert_eq!((test.test.as_str(), test.statistic, test.threshold), ("sprt_error_rate", 9.5, 6.9));
        assert_eq!(test.n, BTreeMap::from([(1, 900), (2, 100)]));
        assert!(
            matches!(&rollout.state, RolloutState::RolledBack { reason, .. } if reason.contains("seen by replica r2"))
        );
    }

    #[test]
    fn an_unhealthy_verdict_alerts_and_pauses_as_configured_and_never_advances() {
        let found = regression_alerts(match &unhealthy() {
            StepVerdict::Unhealthy(r) => r,
            _ => unreachable!(),
        });
        // Alert only.
        let mut rollout = canary(&[10, 50, 100]);
        let d = decide(&mut rollout, judged(None, unhealthy(), 500), &found, LEADER, T0 + 61_000);
        assert_eq!((d.decision, d.paused), (Decision::Keep, false));
        assert_eq!(d.alert_events.iter().map(|e| e.action).collect::<Vec<_>>(), [Action::Alert]);
        assert_eq!(rollout.stage, 0, "unhealthy blocks the advance");
        // Alert and pause.
        let mut rollout = canary(&[10, 50, 100]);
        let pausing = Authority { pause_on_alert: true, ..LEADER };
        let d = decide(&mut rollout, judged(None, unhealthy(), 500), &found, pausing, T0 + 61_000);
        assert!(d.paused && rollout.is_paused());
        assert_eq!(
            d.alert_events.iter().map(|e| e.action).collect::<Vec<_>>(),
            [Action::Alert, Action::Paused]
        );
    }

    #[test]
    fn a_healthy_step_advances_once_its_time_and_samples_are_met() {
        let mut rollout = canary(&[10, 50, 100]);
        let early = decide(&mut rollout, judged(None, StepVerdict::Healthy, 500), &[], LEADER, T0 + 59_000);
        assert_eq!(early.decision, Decision::Keep, "60 s not over");
        let short = decide(&mut rollout, judged(None, StepVerdict::Healthy, 99), &[], LEADER, T0 + 61_000);
        assert_eq!(short.decision, Decision::Keep, "100 samples not in");
        let follower = Authority { leader: false, ..LEADER };
        let mut copy = rollout.clone();
        let theirs = decide(&mut copy, judged(None, StepVerdict::Healthy, 100), &[], follower, T0 + 61_000);
        assert_eq!(theirs.decision, Decision::NotOurs, "only the leader advances");
        let met = decide(&mut rollout, judged(None, StepVerdict::Healthy, 100), &[], LEADER, T0 + 61_000);
        assert_eq!(actions(&met.decision), [Action::Advanced]);
        let Decision::Commit(events) = &met.decision else { unreachable!() };
        assert_eq!(events[0].decision.as_ref().map(|d| d.test.as_str()), Some("always_valid_ci_latency"));
        assert_eq!(rollout.canary_percent(), Some(50));
    }
}
