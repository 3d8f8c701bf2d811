//! Operator operations, routing derivation and persistence.

use super::*;
use crate::plan::{AbArm, CanaryStep, PromotionGate};
use crate::routing::BUCKETS;

pub(super) const T0: Millis = 1_700_000_000_000;
pub(super) const READY: [u64; 4] = [1, 2, 3, 4];

pub(super) fn alice() -> Actor {
    Actor::new("alice")
}

pub(super) fn start(plan: Plan) -> Rollout {
    start_with(plan, None)
}

pub(super) fn start_with(plan: Plan, shadow: Option<ShadowPlan>) -> Rollout {
    let spec = RolloutSpec {
        id: "r-1".to_owned(),
        model: "breast-cancer".to_owned(),
        salt: 0x5eed,
        champion: 1,
        plan,
        shadow,
        triggers: Default::default(),
    };
    Rollout::start(spec, &READY, T0, &alice(), Some("ship it".to_owned())).unwrap().0
}

/// Basis points per arm name, in table order.
pub(super) fn split(rollout: &Rollout) -> Vec<(String, u64, u32)> {
    rollout.routing_table().weights().into_iter().map(|w| (w.name, w.version, w.basis_points)).collect()
}

fn all_to(rollout: &Rollout, version: u64) -> bool {
    let table = rollout.routing_table();
    (0..BUCKETS).all(|b| table.route(b).version == version)
}

pub(super) fn ab_plan() -> Plan {
    Plan::AbTest {
        arms: vec![
            AbArm { name: "control".to_owned(), version: 1, weight: 50 },
            AbArm { name: "new-ranker".to_owned(), version: 2, weight: 50 },
        ],
        metric: "ctr".to_owned(),
        mde: 0.1,
        alpha: 0.05,
        power: 0.8,
        variance: 1.0,
        min_duration_secs: 7 * 24 * 3600,
        higher_is_better: true,
    }
}

pub(super) fn challenger_plan(gate: PromotionGate) -> Plan {
    Plan::ChampionChallenger { challengers: vec![2, 3], fraction_percent: 10.0, gate }
}

#[test]
fn start_validates_the_plan() {
    let spec = RolloutSpec {
        id: "r".to_owned(),
        model: "m".to_owned(),
        salt: 1,
        champion: 1,
        plan: Plan::canary(9),
        shadow: None,
        triggers: Default::default(),
    };
    let err = Rollout::start(spec.clone(), &READY, T0, &alice(), None).unwrap_err();
    assert_eq!(err.to_string(), "version 9 is not ready; expected one of the ready versions [1, 2, 3, 4]");
    let nested = RolloutSpec {
        plan: Plan::Shadow(ShadowPlan { versions: vec![2], fraction_percent: 100.0 }),
        shadow: Some(ShadowPlan { versions: vec![3], fraction_percent: 100.0 }),
        ..spec.clone()
    };
    assert_eq!(Rollout::start(nested, &READY, T0, &alice(), None).unwrap_err(), RolloutError::NestedShadow);
    let bad_shadow = RolloutSpec {
        plan: Plan::canary(2),
        shadow: Some(ShadowPlan { versions: vec![1], fraction_percent: 100.0 }),
        ..spec
    };
    assert_eq!(
        Rollout::start(bad_shadow, &READY, T0, &alice(), None).unwrap_err(),
        RolloutError::Plan(PlanError::IsChampion { version: 1 })
    );
}

#[test]
fn start_records_who_why_and_the_first_split() {
    let spec = RolloutSpec {
        id: "r-1".to_owned(),
        model: "m".to_owned(),
        salt: 7,
        champion: 1,
        plan: Plan::canary(2),
        shadow: None,
        triggers: Default::default(),
    };
    let (rollout, events) = Rollout::start(spec, &READY, T0, &alice(), Some("ship it".to_owned())).unwrap();
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!((rollout.stage, rollout.stage_started_ms, rollout.started_ms), (0, T0, T0));
    assert_eq!(rollout.salt, 7);
    let [event] = events.as_slice() else { panic!("one event expected, got {events:?}") };
    assert_eq!(event.action, Action::Started);
    assert_eq!(event.actor.who, "alice");
    assert_eq!(event.reason.as_deref(), Some("ship it"));
    assert_eq!(event.to_stage, Some(0));
    assert_eq!(event.numbers["percent"], 1.0);
    let before = event.weights_before.as_ref().unwrap();
    let after = event.weights_after.as_ref().unwrap();
    assert_eq!(before.iter().map(|w| w.basis_points).collect::<Vec<_>>(), [10_000]);
    assert_eq!(
        after.iter().map(|w| (w.name.as_str(), w.basis_points)).collect::<Vec<_>>(),
        [("canary", 100), ("champion", 9900)]
    );
}

#[test]
fn full_canary_walk_promotes_with_events() {
    let mut rollout = start(Plan::canary(2));
    let mut actions = Vec::new();
    for (i, expected) in [5, 20, 50].into_iter().enumerate() {
        let now = T0 + (i as u64 + 1) * 60_000;
        let events = rollout.advance(now, &alice(), None).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].from_stage, events[0].to_stage), (Some(i), Some(i + 1)));
        assert_eq!(events[0].numbers["percent"], f64::from(expected));
        assert_eq!(rollout.canary_percent(), Some(expected));
        assert_eq!(rollout.stage_started_ms, now);
        assert_eq!(split(&rollout)[0], ("canary".to_owned(), 2, expected * 100));
        actions.extend(events.iter().map(|e| e.action));
    }
    let events = rollout.advance(T0 + 240_000, &alice(), Some("looks good".to_owned())).unwrap();
    actions.extend(events.iter().map(|e| e.action));
    assert_eq!(actions, [Action::Advanced, Action::Advanced, Action::Advanced, Action::Promoted]);
    let promoted = &events[0];
    assert_eq!((promoted.version, promoted.from_stage, promoted.to_stage), (Some(2), Some(3), Some(4)));
    assert_eq!(promoted.weights_after.as_ref().unwrap()[0].basis_points, 10_000);
    assert_eq!(rollout.state, RolloutState::Promoted { version: 2 });
    assert_eq!(rollout.current_champion(), 2);
    assert_eq!(rollout.finished_ms, Some(T0 + 240_000));
    assert_eq!(split(&rollout), [("champion".to_owned(), 2, 10_000)]);
    assert!(all_to(&rollout, 2));
    assert_eq!(rollout.versions_in_use(T0 + 240_000), [2]);
}

#[test]
fn canary_steps_keep_canary_users_in_the_canary() {
    let mut rollout = start(Plan::canary(2));
    let keys: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
    let mut previous: Vec<bool> = vec![false; keys.len()];
    for _ in 0..4 {
        let table = rollout.routing_table();
        let now: Vec<bool> = keys.iter().map(|k| table.route_key(k.as_bytes()).version == 2).collect();
        assert!(previous.iter().zip(&now).all(|(before, after)| !before || *after));
        previous = now;
        rollout.advance(T0, &alice(), None).unwrap();
    }
}

#[test]
fn finished_rollouts_refuse_operations_and_say_their_state() {
    let mut rollout = start(Plan::canary(2));
    rollout.promote(2, T0, &alice(), None).unwrap();
    let err = rollout.advance(T0, &alice(), None).unwrap_err();
    assert_eq!(err.to_string(), "cannot advance rollout 'r-1': it is already promoted (v2 is champion)");
    assert!(rollout.pause(T0, &alice(), None).is_err());
    assert!(rollout.rollback(T0, &alice(), None).is_err());
    let mut aborted = start(Plan::canary(2));
    aborted.abort(T0, &alice(), Some("wrong model".to_owned())).unwrap();
    assert_eq!(
        aborted.promote(2, T0, &alice(), None).unwrap_err().to_string(),
        "cannot promote rollout 'r-1': it is already aborted (wrong model)"
    );
}

#[test]
fn pause_and_resume() {
    let mut rollout = start(Plan::canary(2));
    let events = rollout.pause(T0 + 1, &alice(), Some("investigating".to_owned())).unwrap();
    assert_eq!(events[0].action, Action::Paused);
    assert!(events[0].weights_after.is_none(), "pausing keeps the split");
    assert!(rollout.is_paused());
    assert_eq!(rollout.canary_percent(), Some(1));
    assert_eq!(
        rollout.pause(T0, &alice(), None).unwrap_err().to_string(),
        "rollout 'r-1' is already paused; expected a running rollout"
    );
    // Operators still drive a paused rollout; it stays paused.
    rollout.advance(T0 + 2, &alice(), None).unwrap();
    assert!(rollout.is_paused());
    assert_eq!(rollout.canary_percent(), Some(5));
    assert_eq!(rollout.resume(T0 + 3, &alice(), None).unwrap()[0].action, Action::Resumed);
    assert_eq!(rollout.state, RolloutState::Running);
    assert_eq!(
        rollout.resume(T0, &alice(), None).unwrap_err().to_string(),
        "rollout 'r-1' is running, not paused; expected a paused rollout"
    );
}

#[test]
fn rollback_and_abort_send_everything_to_the_champion() {
    for op in ["rollback", "abort"] {
        let mut rollout = start(Plan::canary(2));
        rollout.advance(T0, &alice(), None).unwrap();
        rollout.advance(T0, &alice(), None).unwrap();
        let events = match op {
            "rollback" => rollout.rollback(T0 + 5, &alice(), Some("ctr down".to_owned())).unwrap(),
            _ => rollout.abort(T0 + 5, &alice(), None).unwrap(),
        };
        assert!(all_to(&rollout, 1), "{op}");
        assert_eq!(split(&rollout), [("champion".to_owned(), 1, 10_000)]);
        assert_eq!(events[0].from_stage, Some(2));
        assert_eq!(events[0].weights_before.as_ref().unwrap()[0].basis_points, 2000);
        assert_eq!(rollout.versions_in_use(T0 + 5), [1]);
        assert_eq!(rollout.current_champion(), 1);
    }
    let mut rollout = start(Plan::canary(2));
    rollout.rollback(T0, &alice(), Some("ctr down".to_owned())).unwrap();
    assert_eq!(rollout.state, RolloutState::RolledBack { reason: "ctr down".to_owned(), trigger: None });
    let mut rollout = start(Plan::canary(2));
    rollout.abort(T0, &alice(), None).unwrap();
    assert_eq!(rollout.state, RolloutState::Aborted { reason: "aborted by alice".to_owned() });
}

#[test]
fn triggered_rollback_records_the_trigger_and_numbers() {
    let mut rollout = start(Plan::canary(2));
    let numbers = BTreeMap::from([("p99_ms".to_owned(), 812.0), ("sla_ms".to_owned(), 250.0)]);
    let events =
        rollout.rollback_triggered(T0, "p99_over_sla", "p99 812 ms over 250 ms".to_owned(), numbers).unwrap();
    let event = &events[0];
    assert_eq!((event.action, event.actor.who.as_str()), (Action::RolledBack, Actor::SYSTEM));
    assert_eq!(event.trigger.as_deref(), Some("p99_over_sla"));
    assert_eq!(event.numbers["p99_ms"], 812.0);
    assert_eq!(
        rollout.state,
        RolloutState::RolledBack {
            reason: "p99 812 ms over 250 ms".to_owned(),
            trigger: Some("p99_over_sla".to_owned())
        }
    );
    assert!(all_to(&rollout, 1));
}

#[test]
fn set_weights_overrides_and_advance_moves_above_it() {
    let mut rollout = start(Plan::canary(2));
    let events = rollout.set_weights(30, T0, &alice(), Some("faster".to_owned())).unwrap();
    assert_eq!(events[0].action, Action::WeightsSet);
    assert_eq!((events[0].numbers["percent_before"], events[0].numbers["percent"]), (1.0, 30.0));
    assert_eq!(rollout.canary_percent(), Some(30));
    assert_eq!(split(&rollout)[0].2, 3000);
    let events = rollout.advance(T0, &alice(), None).unwrap();
    assert_eq!((events[0].from_stage, events[0].to_stage), (Some(0), Some(3)), "first step above 30% is 50%");
    assert_eq!(rollout.canary_percent(), Some(50));
    assert_eq!(rollout.canary_override_percent(), None);
    rollout.set_weights(0, T0, &alice(), None).unwrap();
    assert!(all_to(&rollout, 1));
    assert_eq!(rollout.versions_in_use(T0), [1, 2], "a 0% candidate stays loaded while live");
    assert_eq!(
        rollout.set_weights(101, T0, &alice(), None).unwrap_err(),
        RolloutError::PercentOutOfRange { percent: 101 }
    );
    rollout.set_weights(100, T0, &alice(), None).unwrap();
    assert!(rollout.state == RolloutState::Running && all_to(&rollout, 2));
    assert_eq!(rollout.advance(T0, &alice(), None).unwrap()[0].action, Action::Promoted);
    let mut ab = start(ab_plan());
    assert_eq!(
        ab.set_weights(10, T0, &alice(), None).unwrap_err().to_string(),
        "cannot set weights of a ab_test rollout; an A/B test keeps a fixed split; promote an arm, complete or abort"
    );
}

#[test]
fn blue_green_switch_rollback_and_retention() {
    let plan = Plan::BlueGreen { green: 2, retention_secs: 600 };
    let mut rollout = start(plan.clone());
    assert!(all_to(&rollout, 1));
    assert_eq!(split(&rollout), [("green".to_owned(), 2, 0), ("blue".to_owned(), 1, 10_000)]);
    assert_eq!(rollout.versions_in_use(T0), [1, 2], "green is warm before the switch");
    let events = rollout.advance(T0 + 1000, &alice(), None).unwrap();
    assert_eq!(events[0].action, Action::Switched);
    assert_eq!(events[0].numbers["retention_secs"], 600.0);
    assert!(all_to(&rollout, 2));
    assert_eq!(rollout.routing_table().route(0).role, Role::Green);
    assert_eq!(rollout.blue_retained_until_ms(), Some(T0 + 1000 + 600_000));
    assert_eq!(
        rollout.switch(T0, &alice(), None).unwrap_err().to_string(),
        "blue/green rollout 'r-1' already switched to green v2; expected promote or rollback"
    );
    rollout.rollback(T0 + 2000, &alice(), None).unwrap();
    assert!(all_to(&rollout, 1), "rollback goes back to blue");
    assert_eq!(rollout.versions_in_use(T0 + 2000), [1]);

    let mut promoted = start(plan.clone());
    promoted.switch(T0, &alice(), None).unwrap();
    promoted.promote(2, T0 + 1000, &alice(), None).unwrap();
    assert!(all_to(&promoted, 2));
    assert_eq!(promoted.versions_in_use(T0 + 1000), [1, 2], "blue retained after promotion");
    assert_eq!(promoted.versions_in_use(T0 + 600_000), [2], "retention over");

    let mut direct = start(plan);
    direct.promote(2, T0, &alice(), None).unwrap();
    assert_eq!(
        direct.blue_retained_until_ms(),
        Some(T0 + 600_000),
        "promoting before the switch retains blue"
    );
    assert!(all_to(&direct, 2));
}

#[test]
fn champion_challenger_split_and_manual_promotion() {
    let mut rollout = start(challenger_plan(PromotionGate::Manual));
    assert_eq!(
        split(&rollout),
        [
            ("challenger-2".to_owned(), 2, 500),
            ("challenger-3".to_owned(), 3, 500),
            ("champion".to_owned(), 1, 9000)
        ]
    );
    assert_eq!(
        rollout.advance(T0, &alice(), None).unwrap_err().to_string(),
        "cannot advance a champion_challenger rollout; challengers keep a fixed slice; promote a challenger, complete or abort"
    );
    assert_eq!(
        rollout.promote(4, T0, &alice(), None).unwrap_err().to_string(),
        "version 4 is not part of rollout 'r-1'; expected one of [2, 3]"
    );
    let events = rollout.promote(3, T0 + 5, &alice(), Some("audit #12".to_owned())).unwrap();
    assert_eq!((events[0].action, events[0].version), (Action::Promoted, Some(3)));
    // The slice is permanent: v1 becomes a challenger in v3's place.
    assert_eq!(
        events[0].reason.as_deref(),
        Some(
            "audit #12; v3 is the champion; v1 stays on the challenger slice; a new evaluation period starts"
        )
    );
    assert_eq!(events[0].numbers["previous_champion"], 1.0);
    assert_eq!(
        (rollout.state.clone(), rollout.champion, rollout.stage_started_ms),
        (RolloutState::Running, 3, T0 + 5)
    );
    assert_eq!(
        split(&rollout),
        // v1 in v3's place: v2 keeps its buckets.
        [
            ("challenger-2".to_owned(), 2, 500),
            ("challenger-1".to_owned(), 1, 500),
            ("champion".to_owned(), 3, 9000)
        ]
    );
    // The old champion can be promoted back; complete ends the slice.
    rollout.promote(1, T0 + 6, &alice(), None).unwrap();
    assert_eq!(rollout.champion, 1);
    rollout.complete(T0 + 7, &alice(), None).unwrap();
    assert_eq!(rollout.current_champion(), 1);
    assert!(all_to(&rollout, 1));
}

#[test]
fn ab_test_arms_follow_weights_and_roles() {
    let mut rollout = start(ab_plan());
    let table = rollout.routing_table();
    assert_eq!(split(&rollout), [("control".to_owned(), 1, 5000), ("new-ranker".to_owned(), 2, 5000)]);
    assert_eq!(table.arms()[0].role, Role::Control);
    assert_eq!(table.arms()[1].role, Role::Treatment);
    let keys = (0..10_000).map(|i| format!("user-{i}"));
    let treated = keys.filter(|k| table.route_key(k.as_bytes()).version == 2).count();
    assert!((4850..=5150).contains(&treated), "{treated}");
    assert!(rollout.advance(T0, &alice(), None).is_err());
    rollout.complete(T0, &alice(), Some("no effect".to_owned())).unwrap();
    assert_eq!(rollout.state, RolloutState::Completed);
    assert!(all_to(&rollout, 1));
}

#[test]
fn shadows_ride_beside_a_plan_and_stop_when_it_ends() {
    let shadow = ShadowPlan { versions: vec![3], fraction_percent: 25.0 };
    let mut rollout = start_with(Plan::canary(2), Some(shadow));
    let table = rollout.routing_table();
    assert_eq!(table.shadows(), [ShadowTarget { version: 3, fraction_bp: 2500 }]);
    assert_eq!(rollout.versions_in_use(T0), [1, 2, 3]);
    let sampled =
        (0..10_000).filter(|i| table.shadows_for(format!("req-{i}").as_bytes()).count() == 1).count();
    assert!((2350..=2650).contains(&sampled), "{sampled}");
    rollout.abort(T0, &alice(), None).unwrap();
    assert!(rollout.routing_table().shadows().is_empty());

    let mut dark = start(Plan::Shadow(ShadowPlan { versions: vec![2, 3], fraction_percent: 100.0 }));
    assert!(all_to(&dark, 1));
    assert_eq!(dark.routing_table().shadows_for(b"any").collect::<Vec<_>>(), [2, 3]);
    assert!(dark.set_weights(5, T0, &alice(), None).is_err());
    assert_eq!(dark.complete(T0, &alice(), None).unwrap()[0].action, Action::Completed);
    let mut canary = start(Plan::canary(2));
    assert_eq!(
        canary.complete(T0, &alice(), None).unwrap_err().to_string(),
        "cannot complete a canary rollout; use advance, set weights, promote, rollback or abort"
    );
}

#[test]
fn alert_changes_nothing() {
    let rollout = start(Plan::canary(2));
    let before = rollout.clone();
    let event = rollout.alert(
        T0,
        "distribution_shift",
        "psi 0.31 over 0.2".to_owned(),
        BTreeMap::from([("psi".to_owned(), 0.31)]),
    );
    assert_eq!((event.action, event.trigger.as_deref()), (Action::Alert, Some("distribution_shift")));
    assert!(event.weights_after.is_none());
    assert_eq!(rollout, before);
}

#[test]
fn serde_round_trip_mid_canary_routes_identically() {
    let plan = Plan::Canary {
        candidate: 2,
        steps: [1, 5, 20, 50, 100].map(CanaryStep::at).to_vec(),
        auto_advance: true,
    };
    let shadow = ShadowPlan { versions: vec![3], fraction_percent: 33.33 };
    let mut rollout = start_with(plan, Some(shadow));
    rollout.advance(T0 + 60_000, &alice(), None).unwrap();
    rollout.advance(T0 + 120_000, &alice(), None).unwrap();
    rollout.pause(T0 + 130_000, &alice(), None).unwrap();
    let json = serde_json::to_string_pretty(&rollout).unwrap();
    let restored: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, rollout);
    assert_eq!(restored.routing_table(), rollout.routing_table());
    let (a, b) = (restored.routing_table(), rollout.routing_table());
    for i in 0..2000 {
        let key = format!("user-{i}");
        assert_eq!(a.route_key(key.as_bytes()), b.route_key(key.as_bytes()));
    }
    // The table itself also round-trips and stays valid.
    let table: RoutingTable = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(table, a);
}

#[test]
fn every_state_round_trips() {
    let mut rollouts = vec![start(challenger_plan(PromotionGate::Manual)), start(ab_plan())];
    let mut r = start(Plan::canary(2));
    r.rollback_triggered(T0, "nan_rate", "nan 2%".to_owned(), BTreeMap::new()).unwrap();
    rollouts.push(r);
    let mut r = start(Plan::BlueGreen { green: 2, retention_secs: 1 });
    r.switch(T0, &alice(), None).unwrap();
    rollouts.push(r);
    for rollout in rollouts {
        let restored: Rollout = serde_json::from_str(&serde_json::to_string(&rollout).unwrap()).unwrap();
        assert_eq!(restored, rollout);
        assert_eq!(restored.routing_table(), rollout.routing_table());
    }
}

#[test]
fn candidate_is_the_single_promotable_version() {
    assert_eq!(start(Plan::canary(2)).candidate(), Some(2));
    assert_eq!(start(Plan::BlueGreen { green: 3, retention_secs: 1 }).candidate(), Some(3));
    assert_eq!(start(ab_plan()).candidate(), Some(2), "the control is not a candidate");
    assert_eq!(start(challenger_plan(PromotionGate::Manual)).candidate(), None, "two challengers");
}

#[test]
fn a_shadow_attaches_beside_a_canary_and_survives_a_round_trip() {
    let mut r = start(Plan::canary(2));
    let weights = split(&r);
    let shadow = ShadowPlan { versions: vec![3], fraction_percent: 50.0 };
    let events = r.attach_shadow(shadow, &READY, T0 + 1, &alice(), None).unwrap();
    assert_eq!(events[0].action, Action::Started);
    assert_eq!(events[0].version, Some(3));
    assert_eq!(split(&r), weights, "attaching a shadow moves no live traffic");
    assert_eq!(r.routing_table().shadows(), &[ShadowTarget { version: 3, fraction_bp: 5000 }]);
    let back: Rollout = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back.routing_table(), r.routing_table());
    // A shadow plan takes no second shadow; unknown versions are refused.
    let mut s = start(Plan::Shadow(ShadowPlan { versions: vec![2], fraction_percent: 100.0 }));
    let e = s.attach_shadow(
        ShadowPlan { versions: vec![3], fraction_percent: 100.0 },
        &READY,
        T0,
        &alice(),
        None,
    );
    assert_eq!(e.unwrap_err(), RolloutError::NestedShadow);
    let e = r.attach_shadow(
        ShadowPlan { versions: vec![9], fraction_percent: 100.0 },
        &READY,
        T0,
        &alice(),
        None,
    );
    assert!(e.is_err());
}
