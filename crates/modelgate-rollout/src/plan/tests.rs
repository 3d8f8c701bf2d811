use super::*;

const CHAMPION: u64 = 1;
const READY: [u64; 4] = [1, 2, 3, 4];

fn check(plan: &Plan) -> Result<(), PlanError> {
    plan.validate(CHAMPION, &READY)
}

fn ab(arms: &[(&str, u64, u32)]) -> Plan {
    Plan::AbTest {
        arms: arms
            .iter()
            .map(|(name, version, weight)| AbArm {
                name: (*name).to_owned(),
                version: *version,
                weight: *weight,
            })
            .collect(),
        metric: "ctr".to_owned(),
        mde: 0.1,
        alpha: 0.05,
        power: 0.8,
        variance: 1.0,
        min_duration_secs: DEFAULT_AB_SECS,
        higher_is_better: true,
    }
}

fn challenger(challengers: Vec<u64>, fraction_percent: f64, gate: PromotionGate) -> Plan {
    Plan::ChampionChallenger { challengers, fraction_percent, gate }
}

fn canary_steps(percents: &[u32]) -> Plan {
    Plan::Canary {
        candidate: 2,
        steps: percents.iter().map(|p| CanaryStep::at(*p)).collect(),
        auto_advance: false,
    }
}

fn automatic(kpi: &str, threshold: f64, window_secs: u64) -> PromotionGate {
    PromotionGate::Automatic {
        kpi: kpi.to_owned(),
        threshold,
        window_secs,
        min_samples: DEFAULT_GATE_SAMPLES,
        higher_is_better: true,
    }
}

#[test]
fn defaults_come_from_the_strategy_notes() {
    let plan: Plan = serde_json::from_str(r#"{"strategy":"canary","candidate":2}"#).unwrap();
    assert_eq!(plan, Plan::canary(2));
    let Plan::Canary { steps, auto_advance, .. } = &plan else { unreachable!() };
    assert_eq!(steps.iter().map(|s| s.percent).collect::<Vec<_>>(), [1, 5, 20, 50, 100]);
    assert!(steps.iter().all(|s| s.min_duration_secs == 60 && s.min_samples == 500));
    assert!(!auto_advance);

    let plan: Plan = serde_json::from_str(r#"{"strategy":"blue_green","green":2}"#).unwrap();
    assert_eq!(plan, Plan::BlueGreen { green: 2, retention_secs: 3600 });

    let plan: Plan = serde_json::from_str(r#"{"strategy":"shadow","versions":[2]}"#).unwrap();
    assert_eq!(plan, Plan::Shadow(ShadowPlan { versions: vec![2], fraction_percent: 100.0 }));

    let json = r#"{"strategy":"ab_test","arms":[{"name":"control","version":1,"weight":1},{"name":"b","version":2,"weight":1}],"metric":"ctr","mde":0.1,"variance":1.0}"#;
    let Plan::AbTest { alpha, power, min_duration_secs, .. } = serde_json::from_str(json).unwrap() else {
        unreachable!()
    };
    assert_eq!((alpha, power, min_duration_secs), (0.05, 0.8, 7 * 24 * 3600));

    let plan: Plan = serde_json::from_str(r#"{"strategy":"champion_challenger","challengers":[2]}"#).unwrap();
    assert_eq!(plan, challenger(vec![2], 10.0, PromotionGate::Manual));

    let gate: PromotionGate =
        serde_json::from_str(r#"{"type":"automatic","kpi":"ctr","threshold":0.02,"window_secs":3600}"#)
            .unwrap();
    assert_eq!(gate, automatic("ctr", 0.02, 3600));
}

#[test]
fn unknown_fields_are_errors() {
    let typo = serde_json::from_str::<Plan>(r#"{"strategy":"canary","candidate":2,"auto_advnce":true}"#);
    assert!(typo.unwrap_err().to_string().contains("unknown field `auto_advnce`"));
    let step = serde_json::from_str::<Plan>(
        r#"{"strategy":"canary","candidate":2,"steps":[{"percent":100,"secs":1}]}"#,
    );
    assert!(step.unwrap_err().to_string().contains("unknown field `secs`"));
    let shadow = serde_json::from_str::<Plan>(r#"{"strategy":"shadow","versions":[2],"fraction":5}"#);
    assert!(shadow.unwrap_err().to_string().contains("unknown field `fraction`"));
    let strategy = serde_json::from_str::<Plan>(r#"{"strategy":"big_bang","version":2}"#);
    assert!(strategy.unwrap_err().to_string().contains("unknown variant `big_bang`"));
}

#[test]
fn plans_round_trip_through_json() {
    let plans = [
        Plan::canary(2),
        Plan::BlueGreen { green: 3, retention_secs: 10 },
        Plan::Shadow(ShadowPlan { versions: vec![2, 3], fraction_percent: 12.5 }),
        ab(&[("control", 1, 50), ("b", 2, 50)]),
        challenger(vec![2, 3], 10.0, automatic("ctr", 0.02, 3600)),
    ];
    for plan in plans {
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan, "{json}");
        assert!(json.contains(&format!("\"strategy\":\"{}\"", plan.strategy())));
    }
}

#[test]
fn valid_plans_pass() {
    assert_eq!(check(&Plan::canary(2)), Ok(()));
    assert_eq!(check(&canary_steps(&[100])), Ok(()));
    assert_eq!(check(&Plan::BlueGreen { green: 2, retention_secs: 0 }), Ok(()));
    assert_eq!(check(&Plan::Shadow(ShadowPlan { versions: vec![2, 3], fraction_percent: 0.01 })), Ok(()));
    assert_eq!(check(&ab(&[("control", 1, 1), ("b", 2, 1), ("c", 3, 2)])), Ok(()));
    assert_eq!(check(&ab(&[("b", 2, 1), ("c", 3, 1)])), Ok(()), "a control arm is optional");
    assert_eq!(check(&challenger(vec![2, 3, 4], 10.0, automatic("ctr", 0.0, 1))), Ok(()));
}

#[test]
fn versions_must_be_ready_and_not_the_champion() {
    assert_eq!(
        check(&Plan::canary(7)),
        Err(PlanError::VersionNotReady { version: 7, ready: READY.to_vec() })
    );
    assert_eq!(
        check(&Plan::canary(7)).unwrap_err().to_string(),
        "version 7 is not ready; expected one of the ready versions [1, 2, 3, 4]"
    );
    assert_eq!(check(&Plan::canary(1)), Err(PlanError::IsChampion { version: 1 }));
    assert_eq!(
        check(&Plan::BlueGreen { green: 1, retention_secs: 1 }).unwrap_err().to_string(),
        "version 1 is the current champion; expected a different version"
    );
    assert_eq!(
        check(&Plan::BlueGreen { green: 9, retention_secs: 1 }),
        Err(PlanError::VersionNotReady { version: 9, ready: READY.to_vec() })
    );
    let shadow = |versions: Vec<u64>| Plan::Shadow(ShadowPlan { versions, fraction_percent: 100.0 });
    assert_eq!(check(&shadow(vec![2, 2])), Err(PlanError::DuplicateVersion { version: 2 }));
    assert_eq!(check(&shadow(vec![1])), Err(PlanError::IsChampion { version: 1 }));
    assert_eq!(check(&shadow(vec![])), Err(PlanError::Empty { field: "versions" }));
    assert_eq!(
        check(&challenger(vec![2, 9], 10.0, PromotionGate::Manual)),
        Err(PlanError::VersionNotReady { version: 9, ready: READY.to_vec() })
    );
    assert_eq!(
        check(&challenger(vec![1], 10.0, PromotionGate::Manual)),
        Err(PlanError::IsChampion { version: 1 })
    );
    assert_eq!(
        check(&challenger(vec![], 10.0, PromotionGate::Manual)),
        Err(PlanError::Empty { field: "challengers" })
    );
    assert_eq!(
        check(&ab(&[("a", 2, 1), ("b", 9, 1)])),
        Err(PlanError::VersionNotReady { version: 9, ready: READY.to_vec() })
    );
}

#[test]
fn canary_steps_must_increase_to_100() {
    assert_eq!(check(&canary_steps(&[])), Err(PlanError::Empty { field: "steps" }));
    assert_eq!(check(&canary_steps(&[0, 100])), Err(PlanError::StepPercent { index: 0, percent: 0 }));
    assert_eq!(check(&canary_steps(&[5, 101])), Err(PlanError::StepPercent { index: 1, percent: 101 }));
    assert_eq!(
        check(&canary_steps(&[5, 5, 100])),
        Err(PlanError::StepsNotIncreasing { index: 1, percent: 5, previous: 5 })
    );
    assert_eq!(
        check(&canary_steps(&[20, 5, 100])).unwrap_err().to_string(),
        "steps[1].percent is 5, not above the previous step's 20; expected strictly increasing percentages"
    );
    assert_eq!(
        check(&canary_steps(&[5, 50])).unwrap_err().to_string(),
        "the last step's percent is 50; expected 100"
    );
}

#[test]
fn shadow_fraction_is_a_percentage() {
    for bad in [0.0, 0.001, 100.5, f64::NAN, -1.0] {
        let plan = Plan::Shadow(ShadowPlan { versions: vec![2], fraction_percent: bad });
        assert!(
            matches!(check(&plan), Err(PlanError::OutOfRange { field: "fraction_percent", .. })),
            "{bad}"
        );
    }
    let plan = ShadowPlan { versions: vec![2], fraction_percent: 12.34 };
    assert_eq!(plan.fraction_bp(), 1234);
}

#[test]
fn ab_test_errors() {
    assert_eq!(check(&ab(&[("a", 2, 1)])), Err(PlanError::TooFewArms { count: 1 }));
    assert_eq!(
        check(&ab(&[("a", 2, 1)])).unwrap_err().to_string(),
        "the A/B test has 1 arm(s); expected at least 2"
    );
    assert_eq!(
        check(&ab(&[("a", 2, 1), ("a", 3, 1)])),
        Err(PlanError::DuplicateArmName { name: "a".to_owned() })
    );
    assert_eq!(check(&ab(&[("a", 2, 1), (" ", 3, 1)])), Err(PlanError::Empty { field: "arm name" }));
    assert_eq!(check(&ab(&[("a", 2, 1), ("b", 3, 0)])), Err(PlanError::ZeroWeight { name: "b".to_owned() }));
    assert_eq!(
        check(&ab(&[("control", 1, 1), ("again", 1, 1)])),
        Err(PlanError::DuplicateVersion { version: 1 }),
        "at most one control arm"
    );
    let with = |edit: fn(&mut Plan)| {
        let mut plan = ab(&[("control", 1, 1), ("b", 2, 1)]);
        edit(&mut plan);
        check(&plan)
    };
    let field = |r: Result<(), PlanError>| match r {
        Err(PlanError::OutOfRange { field, .. }) => field,
        other => panic!("expected an out-of-range error, got {other:?}"),
    };
    assert_eq!(
        field(with(|p| if let Plan::AbTest { alpha, .. } = p {
            *alpha = 0.0
        })),
        "alpha"
    );
    assert_eq!(
        field(with(|p| if let Plan::AbTest { alpha, .. } = p {
            *alpha = 1.0
        })),
        "alpha"
    );
    assert_eq!(
        field(with(|p| if let Plan::AbTest { power, .. } = p {
            *power = 1.5
        })),
        "power"
    );
    assert_eq!(
        field(with(|p| if let Plan::AbTest { mde, .. } = p {
            *mde = 0.0
        })),
        "mde"
    );
    assert_eq!(
        field(with(|p| if let Plan::AbTest { variance, .. } = p {
            *variance = -1.0
        })),
        "variance"
    );
    assert_eq!(
        with(|p| if let Plan::AbTest { metric, .. } = p {
            metric.clear()
        }),
        Err(PlanError::Empty { field: "metric" })
    );
    assert_eq!(
        with(|p| if let Plan::AbTest { mde, .. } = p {
            *mde = f64::INFINITY
        })
        .unwrap_err()
        .to_string(),
        "mde is inf; expected a finite number above 0"
    );
}

#[test]
fn champion_challenger_errors() {
    for bad in [0.0, 100.0, -5.0, f64::NAN] {
        let err = check(&challenger(vec![2], bad, PromotionGate::Manual));
        assert!(matches!(err, Err(PlanError::OutOfRange { field: "fraction_percent", .. })), "{bad}");
    }
    assert_eq!(
        check(&challenger(vec![2, 3, 4], 0.02, PromotionGate::Manual)),
        Err(PlanError::SliceTooSmall { fraction_percent: 0.02, basis_points: 2, challengers: 3 })
    );
    assert_eq!(
        check(&challenger(vec![2], 10.0, automatic("", 0.02, 60))),
        Err(PlanError::Empty { field: "kpi" })
    );
    assert!(matches!(
        check(&challenger(vec![2], 10.0, automatic("ctr", -0.1, 60))),
        Err(PlanError::OutOfRange { field: "threshold", .. })
    ));
    assert!(matches!(
        check(&challenger(vec![2], 10.0, automatic("ctr", 0.02, 0))),
        Err(PlanError::OutOfRange { field: "window_secs", .. })
    ));
    // An evaluation period longer than the outcome store keeps.
    assert_eq!(check(&challenger(vec![2], 10.0, automatic("ctr", 0.02, 86_400))), Ok(()));
    assert!(matches!(
        check(&challenger(vec![2], 10.0, automatic("ctr", 0.02, 86_401))),
        Err(PlanError::OutOfRange { field: "window_secs", .. })
    ));
}

#[test]
fn required_samples_come_from_the_plan() {
    assert_eq!(ab(&[("control", 1, 1), ("b", 2, 1)]).required_samples_per_arm(), Some(1570));
    assert_eq!(Plan::canary(2).required_samples_per_arm(), None);
}

#[test]
fn plan_versions_leave_out_the_control() {
    assert_eq!(ab(&[("control", 1, 1), ("b", 2, 1)]).versions(1), [2]);
    assert_eq!(challenger(vec![3, 2], 10.0, PromotionGate::Manual).versions(1), [3, 2]);
}

/// Found by fuzzing (fuzz/regressions/rollout_plan_structured/): the arm got
/// 0 of 10000 buckets and was listed but never served.
#[test]
fn an_ab_arm_too_light_for_one_bucket_is_refused() {
    let e = check(&ab(&[("a", 1, 100_000), ("b", 3, 1)])).unwrap_err();
    assert_eq!(e, PlanError::ArmTooSmall { name: "b".to_owned(), weight: 1, total: 100_001 });
    assert!(e.to_string().starts_with("arm 'b' has weight 1 of a total 100001"), "{e}");
    // 1 of 10000 still gets its bucket.
    assert_eq!(check(&ab(&[("a", 1, 9_999), ("b", 3, 1)])), Ok(()));
}

/// Found by fuzzing (fuzz/regressions/rollout_plan_structured/): 99.996%
/// rounded to all 10000 buckets and the champion got no traffic.
#[test]
fn a_challenger_slice_rounding_to_all_traffic_is_refused() {
    assert_eq!(
        check(&challenger(vec![2], 99.996, PromotionGate::Manual)),
        Err(PlanError::SliceTooLarge { fraction_percent: 99.996, basis_points: 10_000 })
    );
    assert_eq!(check(&challenger(vec![2], 99.99, PromotionGate::Manual)), Ok(()));
}
