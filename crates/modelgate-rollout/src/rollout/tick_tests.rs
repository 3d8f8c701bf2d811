//! Automatic decisions: `tick`, `waiting_for` and `ab_progress`.

use super::tests::{T0, ab_plan, alice, challenger_plan, split, start};
use super::*;
use crate::observe::ArmObservation;
use crate::plan::{CanaryStep, PromotionGate};

const HEALTHY: StepVerdict = StepVerdict::Healthy;

fn auto_canary() -> Rollout {
    start(Plan::Canary {
        candidate: 2,
        steps: [1, 5, 20, 50, 100].map(CanaryStep::at).to_vec(),
        auto_advance: true,
    })
}

fn samples(n: u64) -> ArmObservation {
    ArmObservation::new().with_samples(2, n).with_samples(1, n * 50)
}

#[test]
fn auto_advance_waits_for_duration_samples_and_verdict() {
    let mut rollout = auto_canary();
    let at = |secs: u64| T0 + secs * 1000;
    assert_eq!(
        rollout.waiting_for(at(45), &samples(312)).unwrap(),
        "waiting: 312 of 500 samples; 45 s of 60 s; a safety analysis"
    );
    assert!(rollout.tick(at(45), &samples(312), &HEALTHY).is_empty());
    assert_eq!(
        rollout.waiting_for(at(45), &samples(312)).unwrap(),
        "waiting: 312 of 500 samples; 45 s of 60 s"
    );
    // Samples in, time not up.
    assert!(rollout.tick(at(59), &samples(500), &HEALTHY).is_empty());
    assert_eq!(rollout.waiting_for(at(59), &samples(500)).unwrap(), "waiting: 59 s of 60 s");
    // Time up, samples short.
    assert!(rollout.tick(at(61), &samples(499), &HEALTHY).is_empty());
    // Both in, but the verdict is not healthy.
    assert!(rollout.tick(at(61), &samples(500), &StepVerdict::Inconclusive).is_empty());
    assert_eq!(rollout.waiting_for(at(61), &samples(500)).unwrap(), "waiting: safety analysis inconclusive");
    let unhealthy = unhealthy_of("error rate 6x champion");
    assert!(rollout.tick(at(61), &samples(500), &unhealthy).is_empty());
    assert_eq!(
        rollout.waiting_for(at(61), &samples(500)).unwrap(),
        "waiting: safety analysis unhealthy: error rate 6x champion"
    );
    assert_eq!(rollout.state, RolloutState::Running, "unhealthy blocks; rolling back is the caller's call");
    assert_eq!(rollout.canary_percent(), Some(1));
    // Everything met.
    let events = rollout.tick(at(61), &samples(500), &HEALTHY);
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!((event.action, event.actor.who.as_str()), (Action::Advanced, Actor::SYSTEM));
    assert_eq!((event.from_stage, event.to_stage), (Some(0), Some(1)));
    assert_eq!(event.numbers["samples"], 500.0);
    assert_eq!(event.numbers["elapsed_secs"], 61.0);
    assert_eq!(event.numbers["min_duration_secs"], 60.0);
    assert!(event.reason.as_deref().unwrap().starts_with("auto-advance: 500 samples (min 500)"));
    assert_eq!(rollout.canary_percent(), Some(5));
    assert_eq!(rollout.stage_started_ms, at(61));
    // The new stage starts its clock and counts again, and forgets the verdict.
    assert!(rollout.tick(at(62), &samples(0), &HEALTHY).is_empty());
}

#[test]
fn auto_advance_walks_to_promotion() {
    let mut rollout = auto_canary();
    let mut now = T0;
    let mut actions = Vec::new();
    while !rollout.state.is_finished() {
        now += 60_000;
        actions.extend(rollout.tick(now, &samples(500), &HEALTHY).into_iter().map(|e| e.action));
    }
    assert_eq!(actions, [Action::Advanced, Action::Advanced, Action::Advanced, Action::Promoted]);
    assert_eq!(split(&rollout), [("champion".to_owned(), 2, 10_000)]);
    assert!(rollout.tick(now + 60_000, &samples(500), &HEALTHY).is_empty(), "finished rollouts do nothing");
    assert_eq!(rollout.waiting_for(now, &samples(500)), None);
}

#[test]
fn pause_stops_auto_advance() {
    let mut rollout = auto_canary();
    rollout.pause(T0, &alice(), None).unwrap();
    assert!(rollout.tick(T0 + 600_000, &samples(10_000), &HEALTHY).is_empty());
    assert_eq!(rollout.canary_percent(), Some(1));
    assert_eq!(
        rollout.waiting_for(T0 + 600_000, &samples(10_000)).unwrap(),
        "paused: automatic decisions are off until resume"
    );
    rollout.resume(T0 + 600_000, &alice(), None).unwrap();
    assert_eq!(rollout.tick(T0 + 600_001, &samples(10_000), &HEALTHY)[0].action, Action::Advanced);
}

#[test]
fn manual_canary_and_overrides_never_advance_by_themselves() {
    let mut manual = start(Plan::canary(2));
    assert!(manual.tick(T0 + 600_000, &samples(10_000), &HEALTHY).is_empty());
    assert_eq!(
        manual.waiting_for(T0 + 600_000, &samples(10_000)).unwrap(),
        "waiting: an operator to advance (auto-advance is off)"
    );
    assert_eq!(
        manual.waiting_for(T0, &samples(3)).unwrap(),
        "waiting: 3 of 500 samples; 0 s of 60 s; an operator to advance (auto-advance is off)"
    );
    let mut held = auto_canary();
    held.set_weights(10, T0, &alice(), None).unwrap();
    assert!(held.tick(T0 + 600_000, &samples(10_000), &HEALTHY).is_empty());
    assert_eq!(held.canary_percent(), Some(10));
    assert_eq!(
        held.waiting_for(T0, &samples(0)).unwrap(),
        "held at 10% by an operator override: an operator to advance"
    );
}

#[test]
fn blue_green_promotes_green_when_retention_ends() {
    let mut rollout = start(Plan::BlueGreen { green: 2, retention_secs: 600 });
    assert!(
        rollout.tick(T0 + 10_000_000, &ArmObservation::new(), &HEALTHY).is_empty(),
        "never switches by itself"
    );
    assert_eq!(
        rollout.waiting_for(T0, &ArmObservation::new()).unwrap(),
        "waiting: an operator to switch to green v2"
    );
    rollout.switch(T0, &alice(), None).unwrap();
    assert!(rollout.tick(T0 + 599_999, &ArmObservation::new(), &HEALTHY).is_empty());
    assert_eq!(
        rollout.waiting_for(T0 + 300_000, &ArmObservation::new()).unwrap(),
        "green v2 serves all traffic; blue v1 stays loaded for rollback for 300 more s"
    );
    let unhealthy = unhealthy_of("p99 over sla");
    assert!(rollout.tick(T0 + 600_000, &ArmObservation::new(), &unhealthy).is_empty());
    let events = rollout.tick(T0 + 600_000, &ArmObservation::new(), &StepVerdict::Inconclusive);
    assert_eq!((events[0].action, events[0].version), (Action::Promoted, Some(2)));
    assert_eq!(rollout.versions_in_use(T0 + 600_000), [2]);
}

#[test]
fn ab_progress_and_readiness() {
    let mut rollout = start(ab_plan());
    let obs = ArmObservation::new().with_samples(1, 1000).with_samples(2, 1570);
    let progress = rollout.ab_progress(T0 + 86_400_000, &obs).unwrap();
    assert_eq!(progress.required_per_arm, 1570);
    assert_eq!(
        progress.arms.iter().map(|a| (a.name.as_str(), a.samples)).collect::<Vec<_>>(),
        [("control", 1000), ("new-ranker", 1570)]
    );
    assert!(!progress.complete);
    assert_eq!(
        rollout.waiting_for(T0 + 86_400_000, &obs).unwrap(),
        "waiting: control 1,000 of 1,570 samples; 1.0 d of 7.0 d"
    );
    let week = T0 + 7 * 86_400_000;
    assert!(rollout.tick(week, &obs, &HEALTHY).is_empty());
    let done = ArmObservation::new().with_samples(1, 1570).with_samples(2, 2000);
    let events = rollout.tick(week, &done, &HEALTHY);
    assert_eq!(events[0].action, Action::ExperimentReady);
    assert_eq!(events[0].numbers["samples.control"], 1570.0);
    assert_eq!(events[0].numbers["required_per_arm"], 1570.0);
    assert!(rollout.tick(week + 1, &done, &HEALTHY).is_empty(), "announced once");
    assert_eq!(rollout.state, RolloutState::Running, "promotion stays a person's call");
    assert!(rollout.waiting_for(week, &done).unwrap().starts_with("experiment ready"));
    assert_eq!(start(Plan::canary(2)).ab_progress(T0, &done), None);
    let restored: Rollout = serde_json::from_str(&serde_json::to_string(&rollout).unwrap()).unwrap();
    assert!(restored.clone().tick(week + 2, &done, &HEALTHY).is_empty(), "still announced after restore");
}

fn gate(threshold: f64, higher_is_better: bool) -> PromotionGate {
    PromotionGate::Automatic {
        kpi: "ctr".to_owned(),
        threshold,
        window_secs: 3600,
        min_samples: 500,
        higher_is_better,
    }
}

/// A conversion KPI: mean `p` over `n` outcomes of 0/1.
fn conv(obs: ArmObservation, version: u64, p: f64, n: u64) -> ArmObservation {
    obs.with_kpi_variance(version, p, n, p * (1.0 - p))
}

#[test]
fn automatic_gate_promotes_a_shown_lift_and_keeps_the_slice() {
    let mut rollout = start(challenger_plan(gate(0.02, true)));
    let now = T0 + 600_000;
    // v3: +50% on 10% with 20,000 a side; v2: +1% on 2,000.
    let obs = conv(conv(conv(ArmObservation::new(), 1, 0.100, 20_000), 2, 0.101, 2_000), 3, 0.150, 20_000);
    // Not healthy.
    assert!(rollout.tick(now, &obs, &StepVerdict::Inconclusive).is_empty());
    // No full window to wait for: the test is valid at every look.
    let events = rollout.tick(now, &obs, &HEALTHY);
    let event = &events[0];
    assert_eq!(
        (event.action, event.version, event.actor.who.as_str()),
        (Action::Promoted, Some(3), Actor::SYSTEM)
    );
    assert_eq!(event.numbers["champion_mean"], 0.100);
    assert_eq!(event.numbers["challenger_mean"], 0.150);
    assert_eq!(event.numbers["challenger_n"], 20_000.0);
    assert_eq!(event.numbers["previous_champion"], 1.0);
    assert_eq!(event.numbers["period"], 1.0);
    assert!((event.numbers["relative_improvement"] - 0.5).abs() < 1e-12);
    assert_eq!(event.numbers["threshold"], 0.02);
    // α 0.05 spread over a day of 1 h periods, split over two challengers.
    assert!((event.numbers["alpha"] - 0.05 / 24.0 / 2.0).abs() < 1e-15);
    let bound = event.numbers["lift_lower_bound"];
    assert!(bound > 0.02 && bound < 0.5, "{bound}");
    let d = event.decision.as_ref().expect("the deciding test");
    assert_eq!((d.test.as_str(), d.statistic, d.threshold), ("lift_above_threshold", bound, 0.02));
    assert_eq!(d.n, BTreeMap::from([(1, 20_000), (3, 20_000)]));
    let reason = event.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("automatic gate: challenger v3 beat champion v1 by 50.00%, shown above the threshold 2.00% (lower bound "),
        "{reason}"
    );
    assert!(
        reason.ends_with(
            "v3 is the champion; v1 stays on the challenger slice; a new evaluation period starts"
        ),
        "{reason}"
    );
    // The slice stays: v1 takes v3's place; the rollout goes on.
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!((rollout.champion, rollout.current_champion(), rollout.stage_started_ms), (3, 3, now));
    assert_eq!(
        split(&rollout),
        // v1 in v3's place: v2 keeps its buckets.
        [
            ("challenger-2".to_owned(), 2, 500),
            ("challenger-1".to_owned(), 1, 500),
            ("champion".to_owned(), 3, 9000)
        ]
    );
    assert_eq!(rollout.evaluation_period(now).unwrap().start_ms, now);
    // v1, now a challenger, is worse than v3: nothing more happens.
    assert!(rollout.tick(now + 500, &obs, &HEALTHY).is_empty());
    let restored: Rollout = serde_json::from_str(&serde_json::to_string(&rollout).unwrap()).unwrap();
    assert_eq!(restored, rollout, "the swap survives a restore");
}

#[test]
fn evaluation_periods_restart_at_each_boundary() {
    let rollout = start(challenger_plan(gate(0.02, true)));
    let hour = 3_600_000;
    let first = rollout.evaluation_period(T0 + hour - 1).unwrap();
    assert_eq!((first.index, first.start_ms, first.length_ms), (0, T0, hour));
    let second = rollout.evaluation_period(T0 + hour).unwrap();
    assert_eq!((second.index, second.start_ms), (1, T0 + hour));
    assert_eq!(rollout.evaluation_period(T0 + 5 * hour + 7).unwrap().start_ms, T0 + 5 * hour);
    assert_eq!(start(challenger_plan(PromotionGate::Manual)).evaluation_period(T0), None);
    let thin = ArmObservation::new().with_kpi(1, 0.1, 400).with_kpi(3, 0.2, 550);
    assert_eq!(
        rollout.waiting_for(T0 + hour + 120_000, &thin).unwrap(),
        "waiting: period 2 (2 min of 60 min in): champion v1 400 of 500 'ctr' samples"
    );
}

#[test]
fn automatic_gate_waits_for_samples_and_a_shown_lift() {
    let mut rollout = start(challenger_plan(gate(0.02, true)));
    let now = T0 + 1_800_000;
    let few = ArmObservation::new().with_kpi(1, 0.1, 400).with_kpi(3, 0.2, 550);
    assert!(rollout.tick(now, &few, &HEALTHY).is_empty());
    assert_eq!(
        rollout.waiting_for(now, &few).unwrap(),
        "waiting: period 1 (30 min of 60 min in): champion v1 400 of 500 'ctr' samples"
    );
    let thin = ArmObservation::new().with_kpi(1, 0.1, 900).with_kpi(3, 0.2, 499);
    assert!(rollout.tick(now, &thin, &HEALTHY).is_empty());
    assert_eq!(
        rollout.waiting_for(now, &thin).unwrap(),
        "waiting: period 1 (30 min of 60 min in): a challenger with 500 'ctr' samples"
    );
    // Without variances the point estimate must exceed the threshold.
    let close = ArmObservation::new().with_kpi(1, 0.1, 900).with_kpi(2, 0.1012, 900).with_kpi(3, 0.099, 900);
    assert!(rollout.tick(now, &close, &HEALTHY).is_empty());
    assert_eq!(
        rollout.waiting_for(now, &close).unwrap(),
        "waiting: period 1 (30 min of 60 min in): best challenger v2 improves 'ctr' by 1.20%; needs more than 2.00%"
    );
    let zero = ArmObservation::new().with_kpi(1, 0.0, 900).with_kpi(2, 0.1, 900);
    assert!(rollout.tick(now, &zero, &HEALTHY).is_empty(), "relative gain over a zero mean is undefined");
    // A 4% lift on 10% with 600 a side: noise hides it; the bound says so.
    let noisy = conv(conv(ArmObservation::new(), 1, 0.100, 600), 3, 0.104, 600);
    assert!(rollout.tick(now, &noisy, &HEALTHY).is_empty());
    let why = rollout.waiting_for(now, &noisy).unwrap();
    assert!(
        why.starts_with("waiting: period 1 (30 min of 60 min in): best challenger v3 lifts 'ctr' by 4.00% (always-valid lower bound -"),
        "{why}"
    );
    assert!(why.ends_with("at α 1.04e-3); needs the bound above 2.00%"), "{why}");
    // Exactly at the threshold, however many samples: never shown above it.
    let boundary = conv(conv(ArmObservation::new(), 1, 0.100, 10_000_000), 3, 0.102, 10_000_000);
    assert!(rollout.tick(now, &boundary, &HEALTHY).is_empty());
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!(rollout.champion, 1);
}

#[test]
fn automatic_gate_for_lower_is_better_kpis() {
    let mut rollout = start(challenger_plan(gate(0.10, false)));
    let obs = ArmObservation::new().with_kpi(1, 200.0, 900).with_kpi(2, 170.0, 900).with_kpi(3, 210.0, 900);
    let events = rollout.tick(T0 + 3_600_000, &obs, &HEALTHY);
    assert_eq!(events[0].version, Some(2));
    assert!((events[0].numbers["relative_improvement"] - 0.15).abs() < 1e-12);
}

#[test]
fn manual_gate_never_promotes_by_itself() {
    let mut rollout = start(challenger_plan(PromotionGate::Manual));
    let obs = ArmObservation::new().with_kpi(1, 0.1, 9000).with_kpi(2, 0.5, 9000);
    assert!(rollout.tick(T0 + 86_400_000, &obs, &HEALTHY).is_empty());
    assert_eq!(
        rollout.waiting_for(T0, &obs).unwrap(),
        "waiting: an operator to promote a challenger (manual gate)"
    );
}

#[test]
fn shadow_plans_report_what_they_shadow() {
    let rollout =
        start(Plan::Shadow(crate::plan::ShadowPlan { versions: vec![2, 3], fraction_percent: 50.0 }));
    assert_eq!(
        rollout.waiting_for(T0, &ArmObservation::new()).unwrap(),
        "shadowing v2, v3 on 50% of requests: an operator to promote, complete or abort"
    );
}

#[test]
fn clock_trait_accepts_closures() {
    use crate::Clock;
    let clock = || T0 + 5;
    assert_eq!(clock.now_ms(), T0 + 5);
}

#[test]
fn automatic_gate_judges_at_the_observations_alpha_per_period() {
    let now = T0 + 1_800_000;
    // +13% on 10% (threshold 2%) with 20,000 a side: ln Λ⁺ ≈ 4.55
    // (scipy), below ln(48 / 0.05) = 6.87 (α 0.05 over 24 periods and two
    // challengers) and above ln(48 / 0.9) = 3.98.
    let obs = conv(conv(ArmObservation::new(), 1, 0.100, 20_000), 3, 0.113, 20_000);
    let mut strict = start(challenger_plan(gate(0.02, true)));
    assert!(strict.tick(now, &obs.clone().with_alpha(0.05), &HEALTHY).is_empty());
    let mut lenient = start(challenger_plan(gate(0.02, true)));
    let events = lenient.tick(now, &obs.with_alpha(0.9), &HEALTHY);
    assert_eq!((events[0].action, events[0].version), (Action::Promoted, Some(3)));
    assert!((events[0].numbers["log_evidence"] - 4.551781007172386).abs() < 1e-6);
}

fn unhealthy_of(text: &str) -> StepVerdict {
    StepVerdict::Unhealthy(vec![crate::Regression {
        version: 2,
        kind: crate::RegressionKind::ErrorRate,
        numbers: BTreeMap::new(),
        text: text.to_owned(),
        decision: None,
    }])
}
