use proptest::prelude::*;

use super::*;

/// (salt, key, bucket, full xxh3 hash). Pinned forever: a change here moves
/// users between arms mid-rollout and breaks agreement between replicas.
/// The seed-0 empty-key hash is XXH3's published reference value
/// 0x2D06800538D394C2.
const GOLDEN: [(u64, &str, u32, u64); 10] = [
    (0, "user-1", 6057, 8_968_379_626_967_066_057),
    (0, "user-2", 1220, 2_320_263_887_105_451_220),
    (0, "", 3138, 3_244_421_341_483_603_138),
    (0, "alice", 8080, 5_593_767_425_381_308_080),
    (0, "héllo", 5375, 7_657_728_615_535_385_375),
    (42, "user-1", 9575, 10_685_459_568_967_829_575),
    (42, "user-2", 7511, 2_123_198_499_050_907_511),
    (42, "", 7650, 12_693_748_630_217_917_650),
    (42, "alice", 7190, 9_203_602_360_671_217_190),
    (42, "héllo", 4534, 9_567_102_211_516_744_534),
];

#[test]
fn bucket_golden_vectors_never_change() {
    for (salt, key, expected_bucket, expected_hash) in GOLDEN {
        assert_eq!(xxh3_64_with_seed(key.as_bytes(), salt), expected_hash, "hash of {key:?} salt {salt}");
        assert_eq!(bucket(salt, key.as_bytes()), expected_bucket, "bucket of {key:?} salt {salt}");
    }
    assert_eq!(GOLDEN[2].3, 0x2D06_8005_38D3_94C2);
}

#[test]
fn shadow_sampling_golden_vectors_and_edges() {
    // xxh3(key, 42 ^ SHADOW_SEED_XOR) % 10000: req-1 → 2760, req-2 → 9176.
    assert!(shadow_sampled(42, b"req-1", 2761));
    assert!(!shadow_sampled(42, b"req-1", 2760));
    assert!(shadow_sampled(42, b"req-2", 9177));
    assert!(!shadow_sampled(42, b"req-2", 9176));
    assert!(shadow_sampled(42, b"anything", BUCKETS));
    assert!(!shadow_sampled(42, b"anything", 0));
}

#[test]
fn shadow_sampling_is_independent_of_arm_assignment() {
    // Among keys in the first half of the buckets, a 50% shadow should still
    // pick about half; a shared hash would pick all or none of them.
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let low: Vec<&String> = keys.iter().filter(|k| bucket(7, k.as_bytes()) < 5000).collect();
    let sampled = low.iter().filter(|k| shadow_sampled(7, k.as_bytes(), 5000)).count();
    let share = sampled as f64 / low.len() as f64;
    assert!((0.47..0.53).contains(&share), "shadow share among low buckets {share}");
}

#[test]
fn role_names_are_lowercase() {
    let roles = [
        (Role::Champion, "champion"),
        (Role::Canary, "canary"),
        (Role::Challenger, "challenger"),
        (Role::Blue, "blue"),
        (Role::Green, "green"),
        (Role::Control, "control"),
        (Role::Treatment, "treatment"),
        (Role::Shadow, "shadow"),
        (Role::Pinned, "pinned"),
    ];
    for (role, name) in roles {
        assert_eq!(role.as_str(), name);
        assert_eq!(role.to_string(), name);
        assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{name}\""));
    }
}

#[test]
fn canary_at_20_percent_sends_about_20_percent_and_is_sticky() {
    let table = RoutingTable::canary(0xfeed, 1, 2, 2000);
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let canary = keys.iter().filter(|k| table.route_key(k.as_bytes()).role == Role::Canary).count();
    assert!((1850..=2150).contains(&canary), "canary got {canary} of 10000");
    for k in &keys {
        assert_eq!(table.route_key(k.as_bytes()), table.route_key(k.as_bytes()));
    }
    let arm = table.route_key(b"user-1");
    assert_eq!(arm.version, if arm.role == Role::Canary { 2 } else { 1 });
}

#[test]
fn canary_layout_grows_from_bucket_zero() {
    let table = RoutingTable::canary(0, 1, 2, 500);
    assert_eq!(table.route(0).name, "canary");
    assert_eq!(table.route(499).name, "canary");
    assert_eq!(table.route(500).name, "champion");
    assert_eq!(table.route(9999).name, "champion");
    assert_eq!(table.route(10_000 + 3).name, "canary", "buckets wrap modulo 10000");
    let weights = table.weights();
    assert_eq!(weights[0].basis_points, 500);
    assert_eq!(weights[1].basis_points, 9500);
}

#[test]
fn zero_and_full_canary_keep_both_arms_listed() {
    let zero = RoutingTable::canary(0, 1, 2, 0);
    assert_eq!(zero.weights().iter().map(|w| w.basis_points).collect::<Vec<_>>(), [0, 10_000]);
    assert_eq!(zero.versions(), [1]);
    let full = RoutingTable::canary(0, 1, 2, 20_000);
    assert_eq!(full.weights().iter().map(|w| w.basis_points).collect::<Vec<_>>(), [10_000, 0]);
}

#[test]
fn champion_challenger_splits_the_slice_evenly_from_zero() {
    let table = RoutingTable::champion_challenger(0, 1, &[3, 4, 5], 1000);
    let w = table.weights();
    let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["challenger-3", "challenger-4", "challenger-5", "champion"]);
    let bp: Vec<u32> = w.iter().map(|w| w.basis_points).collect();
    assert_eq!(bp, [334, 333, 333, 9000]);
    assert_eq!(table.arms()[0].ranges, [(0, 334)]);
    assert_eq!(table.arms()[1].ranges, [(334, 667)]);
    assert_eq!(table.arms()[2].ranges, [(667, 1000)]);
    assert_eq!(table.arms()[3].ranges, [(1000, 10_000)]);
    assert!(table.arms()[..3].iter().all(|a| a.role == Role::Challenger));
}

#[test]
fn weighted_arms_sum_to_exactly_10000() {
    let arms = vec![
        ("a".to_owned(), 1, Role::Control, 1),
        ("b".to_owned(), 2, Role::Treatment, 1),
        ("c".to_owned(), 3, Role::Treatment, 1),
    ];
    let table = RoutingTable::weighted(0, &arms).unwrap();
    let bp: Vec<u32> = table.weights().iter().map(|w| w.basis_points).collect();
    assert_eq!(bp, [3334, 3333, 3333]);
    let arms =
        vec![("control".to_owned(), 1, Role::Control, 70), ("treatment".to_owned(), 2, Role::Treatment, 30)];
    let table = RoutingTable::weighted(0, &arms).unwrap();
    assert_eq!(table.arms()[0].ranges, [(0, 7000)]);
    assert_eq!(table.arms()[1].ranges, [(7000, 10_000)]);
    let zero = vec![("a".to_owned(), 1, Role::Control, 0)];
    assert_eq!(RoutingTable::weighted(0, &zero), Err(RoutingError::ZeroTotalWeight));
}

#[test]
fn blue_green_is_all_or_nothing() {
    let before = RoutingTable::blue_green(0, 1, 2, false);
    assert!((0..BUCKETS).all(|b| before.route(b).role == Role::Blue));
    let after = RoutingTable::blue_green(0, 1, 2, true);
    assert!((0..BUCKETS).all(|b| after.route(b).role == Role::Green));
}

#[test]
fn validate_rejects_bad_tables() {
    let a = |name: &str, ranges: Vec<(u32, u32)>| Arm {
        version: 1,
        role: Role::Champion,
        name: name.to_owned(),
        ranges,
    };
    assert_eq!(RoutingTable::new(0, vec![], vec![]), Err(RoutingError::NoArms));
    let gap = RoutingTable::new(0, vec![a("x", vec![(0, 10)]), a("y", vec![(11, BUCKETS)])], vec![]);
    assert_eq!(gap, Err(RoutingError::Gap { bucket: 10 }));
    let short = RoutingTable::new(0, vec![a("x", vec![(0, 9999)])], vec![]);
    assert_eq!(short, Err(RoutingError::Gap { bucket: 9999 }));
    let overlap = RoutingTable::new(0, vec![a("x", vec![(0, 10)]), a("y", vec![(5, BUCKETS)])], vec![]);
    assert_eq!(
        overlap.unwrap_err().to_string(),
        "bucket 5 is covered by arm 'x' and arm 'y'; expected exactly one arm per bucket"
    );
    let reversed = RoutingTable::new(0, vec![a("x", vec![(10, 0)])], vec![]);
    assert!(matches!(reversed, Err(RoutingError::RangeOutOfBounds { .. })));
    let past = RoutingTable::new(0, vec![a("x", vec![(0, BUCKETS + 1)])], vec![]);
    assert!(matches!(past, Err(RoutingError::RangeOutOfBounds { .. })));
    let dup = RoutingTable::new(0, vec![a("x", vec![(0, 10)]), a("x", vec![(10, BUCKETS)])], vec![]);
    assert_eq!(dup, Err(RoutingError::DuplicateArmName { name: "x".to_owned() }));
    let shadow = ShadowTarget { version: 9, fraction_bp: BUCKETS + 1 };
    let bad_shadow = RoutingTable::new(0, vec![a("x", vec![(0, BUCKETS)])], vec![shadow]);
    assert!(matches!(bad_shadow, Err(RoutingError::ShadowFraction { .. })));
    let split =
        RoutingTable::new(0, vec![a("x", vec![(0, 10), (20, BUCKETS)]), a("y", vec![(10, 20)])], vec![]);
    assert!(split.is_ok(), "an arm may own several ranges");
}

#[test]
fn deserialising_checks_the_table() {
    let ok = r#"{"salt":1,"arms":[{"version":1,"role":"champion","name":"champion","ranges":[[0,10000]]}]}"#;
    let table: RoutingTable = serde_json::from_str(ok).unwrap();
    assert_eq!(table, RoutingTable::champion_only(1, 1));
    let gap = r#"{"salt":1,"arms":[{"version":1,"role":"champion","name":"champion","ranges":[[0,9000]]}]}"#;
    let err = serde_json::from_str::<RoutingTable>(gap).unwrap_err();
    assert!(err.to_string().contains("bucket 9000 is covered by no arm"), "{err}");
}

#[test]
fn shadows_for_samples_each_target() {
    let table = RoutingTable::champion_only(1, 42).with_shadows(vec![
        ShadowTarget { version: 3, fraction_bp: 20_000 },
        ShadowTarget { version: 4, fraction_bp: 0 },
    ]);
    assert_eq!(table.shadows()[0].fraction_bp, BUCKETS, "clamped");
    assert_eq!(table.shadows_for(b"req-1").collect::<Vec<_>>(), [3]);
    assert_eq!(table.versions(), [1, 3, 4]);
}

proptest! {
    #[test]
    fn canary_growth_never_moves_a_user_out(a in 0u32..=BUCKETS, b in 0u32..=BUCKETS, key in any::<Vec<u8>>(), salt in any::<u64>()) {
        let (small, large) = (a.min(b), a.max(b));
        let before = RoutingTable::canary(salt, 1, 2, small);
        let after = RoutingTable::canary(salt, 1, 2, large);
        // Growing: in the canary before ⇒ in it after. Shrinking is the
        // same statement read backwards: out before ⇒ out after.
        if before.route_key(&key).role == Role::Canary {
            prop_assert_eq!(after.route_key(&key).role, Role::Canary);
        }
        if after.route_key(&key).role == Role::Champion {
            prop_assert_eq!(before.route_key(&key).role, Role::Champion);
        }
    }

    #[test]
    fn canary_layout_is_always_valid(bp in 0u32..=2 * BUCKETS) {
        let table = RoutingTable::canary(0, 1, 2, bp);
        prop_assert!(table.validate().is_ok());
        prop_assert_eq!(table.weights()[0].basis_points, bp.min(BUCKETS));
    }

    #[test]
    fn weighted_layout_covers_everything_once(weights in prop::collection::vec(0u32..1_000_000, 1..12)) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let arms: Vec<(String, u64, Role, u32)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("arm-{i}"), i as u64, Role::Treatment, *w))
            .collect();
        let table = RoutingTable::weighted(0, &arms).unwrap();
        prop_assert!(table.validate().is_ok());
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        for (w, arm) in weights.iter().zip(table.arms()) {
            let exact = f64::from(*w) * f64::from(BUCKETS) / total as f64;
            prop_assert!((f64::from(arm.basis_points()) - exact).abs() < 1.0, "{} vs {}", arm.basis_points(), exact);
        }
        for b in (0..BUCKETS).step_by(97) {
            prop_assert_eq!(table.arms().iter().filter(|a| a.contains(b)).count(), 1);
        }
    }

    #[test]
    fn challenger_layout_covers_everything_once(n in 1usize..8, bp in 0u32..=BUCKETS) {
        let challengers: Vec<u64> = (10..10 + n as u64).collect();
        let table = RoutingTable::champion_challenger(0, 1, &challengers, bp);
        prop_assert!(table.validate().is_ok());
        let sizes: Vec<u32> = table.weights().iter().map(|w| w.basis_points).collect();
        let (slice, champion) = sizes.split_at(n);
        prop_assert_eq!(slice.iter().sum::<u32>(), bp);
        prop_assert_eq!(champion[0], BUCKETS - bp);
        prop_assert!(slice.iter().max().unwrap() - slice.iter().min().unwrap() <= 1);
    }
}
