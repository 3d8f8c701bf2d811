//! Targets `rollout_plan` and `rollout_plan_structured`: a StartRollout
//! request (from the wire, or built with `arbitrary` from
//! [`PlanInput`](super::PlanInput)) converted, validated and started the way
//! the controller does, then driven by operator commands, with the routing
//! table checked after every step.

use arbitrary::{Arbitrary, Unstructured};
use modelgate_proto::v1 as pb;
use modelgate_rollout::{
    Actor, BUCKETS, Plan, PlanError, Role, Rollout, RolloutError, RolloutSpec, RolloutState, ShadowPlan,
    TriggerOverrides,
};
use prost::Message;
use tonic::Code;

use super::plan_input::{OpInput, PlanInput};
use crate::api::admin;
use crate::control;

/// The champion and READY versions plans from the wire are checked against.
pub const CHAMPION: u64 = 2;
pub const READY: [u64; 5] = [1, 2, 3, 4, 5];

/// Target `rollout_plan`: an Admin `StartRolloutRequest` as StartRollout
/// converts, validates and starts it (against champion v2, READY 1 to 5).
pub fn fuzz_rollout_plan(data: &[u8]) {
    let Ok(mut req) = pb::StartRolloutRequest::decode(data) else {
        return;
    };
    match admin::start_from_pb(&mut req) {
        Ok((plan, triggers)) => start_and_drive(CHAMPION, &READY, plan, None, triggers, &[]),
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message()),
    }
}

/// Target `rollout_plan_structured`: [`PlanInput`] built from the bytes with
/// `arbitrary`, so most inputs are plans the validator has to think about.
pub fn fuzz_rollout_plan_structured(data: &[u8]) {
    let Ok(input) = PlanInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let champion = input.champion.version();
    let ready: Vec<u64> = input.ready.iter().map(|v| v.version()).collect();
    let plan = input.plan.build();
    let shadow = input.shadow.map(|s| s.build());
    let triggers = input.triggers.build();
    start_and_drive(champion, &ready, plan, shadow, triggers, &input.ops);
}

/// Starts a plan the way the controller does and, when it starts, runs the
/// operations on it; after every step the routing table is checked.
fn start_and_drive(
    champion: u64,
    ready: &[u64],
    plan: Plan,
    shadow: Option<ShadowPlan>,
    triggers: TriggerOverrides,
    ops: &[OpInput],
) {
    let actor = Actor::new("fuzz");
    let validated = plan.validate(champion, ready);
    let spec =
        RolloutSpec { id: "fuzz-1".into(), model: "m".into(), salt: 7, champion, plan, shadow, triggers };
    let (mut rollout, _) = match Rollout::start(spec, ready, 1_000, &actor, None) {
        Ok(started) => started,
        Err(e) => {
            check_refusal(e);
            return;
        }
    };
    assert_eq!(validated, Ok(()), "a started plan validates");
    check_routing(&rollout);
    let mut now = 1_000;
    for op in ops {
        now += 60_000;
        let result = match op {
            OpInput::Advance => rollout.advance(now, &actor, None),
            OpInput::SetWeights(p) => rollout.set_weights(u32::from(*p), now, &actor, None),
            OpInput::Pause => rollout.pause(now, &actor, None),
            OpInput::Resume => rollout.resume(now, &actor, None),
            OpInput::Promote(v) => rollout.promote(v.version(), now, &actor, None),
            OpInput::Rollback => rollout.rollback(now, &actor, None),
            OpInput::Abort => rollout.abort(now, &actor, None),
            OpInput::Complete => rollout.complete(now, &actor, None),
            OpInput::AttachShadow(s) => rollout.attach_shadow(s.clone().build(), ready, now, &actor, None),
        };
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }
        check_routing(&rollout);
    }
}

/// A refused plan becomes a status a client can act on: INVALID_ARGUMENT for
/// a wrong plan, FAILED_PRECONDITION only for a version the server does not
/// have READY (or the champion).
fn check_refusal(e: RolloutError) {
    let message = e.to_string();
    assert!(!message.is_empty());
    let state_dependent =
        matches!(e, RolloutError::Plan(PlanError::VersionNotReady { .. } | PlanError::IsChampion { .. }));
    let code = tonic::Status::from(control::plan_refused(e)).code();
    let expected = if state_dependent { Code::FailedPrecondition } else { Code::InvalidArgument };
    assert_eq!(code, expected, "{message}");
}

/// The derived routing table covers every bucket once; every arm the plan
/// promises traffic gets at least one bucket; and a restart (the rollout
/// through its JSON state) routes the same.
fn check_routing(rollout: &Rollout) {
    let table = rollout.routing_table();
    table.validate().expect("a derived routing table is valid");
    let total: u32 = table.arms().iter().map(|a| a.basis_points()).sum();
    assert_eq!(total, BUCKETS, "arm weights sum to 100%");
    let bp = |role: Role, version: u64| {
        table.arms().iter().filter(|a| a.role == role && a.version == version).map(|a| a.basis_points()).sum()
    };
    if matches!(rollout.state, RolloutState::Running | RolloutState::Paused) {
        match &rollout.plan {
            Plan::AbTest { arms, .. } => {
                for a in table.arms() {
                    assert!(a.basis_points() > 0, "A/B arm '{}' gets no traffic: {:?}", a.name, arms);
                }
                assert_eq!(table.arms().len(), arms.len());
            }
            Plan::ChampionChallenger { challengers, fraction_percent, .. } => {
                for &c in challengers {
                    let got: u32 = bp(Role::Challenger, c);
                    assert!(got > 0, "challenger v{c} gets no traffic at {fraction_percent}%");
                }
                let champion: u32 = bp(Role::Champion, rollout.champion);
                assert!(
                    champion > 0,
                    "the champion gets no traffic at a {fraction_percent}% challenger slice"
                );
            }
            Plan::Canary { candidate, .. } => {
                let percent = rollout.canary_percent().expect("a live canary has a percent");
                assert!(percent <= 100);
                assert_eq!(bp(Role::Canary, *candidate), percent * 100);
            }
            Plan::BlueGreen { .. } | Plan::Shadow(_) => {}
        }
    }
    for s in table.shadows() {
        assert!(s.fraction_bp <= BUCKETS);
    }
    let json = serde_json::to_string(rollout).expect("a rollout serialises");
    let back: Rollout = serde_json::from_str(&json).unwrap_or_else(|e| panic!("state reloads: {e}\n{json}"));
    assert_eq!(back.routing_table(), table, "a restarted rollout routes the same");
}
