//! Replays the fuzz targets' seed corpus (fuzz/corpus/<target>/) and every
//! saved crash (fuzz/regressions/<target>/) through the same bodies the
//! cargo-fuzz targets run (`modelgate::hostile`), so `make test` catches a
//! regression without cargo-fuzz or a nightly flag.
//!
//! The seeds are real requests built here; `MODELGATE_WRITE_FUZZ_SEEDS=1
//! cargo test -p modelgate --test fuzz_corpus` rewrites fuzz/corpus from
//! [`seeds`].

use std::path::{Path, PathBuf};

use modelgate::hostile::TARGETS;
use modelgate_proto::{inference as kpb, v1 as pb};
use prost::Message;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("a readable directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn f32_raw(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn tensor(name: &str, dtype: pb::DataType, shape: &[i64]) -> pb::Tensor {
    pb::Tensor { name: name.into(), dtype: dtype as i32, shape: shape.to_vec(), ..Default::default() }
}

fn predict_seeds() -> Seeds {
    use pb::DataType as D;
    let request = |inputs, outputs: &[&str]| pb::PredictRequest {
        model: "breast-cancer".into(),
        routing_key: "user-1".into(),
        inputs,
        output_names: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let one_row = pb::Tensor {
        raw: f32_raw((0..30).map(|i| i as f32 * 0.5)).into(),
        ..tensor("input", D::Float32, &[1, 30])
    };
    let two_rows = pb::Tensor { float_data: vec![1.25; 60], ..tensor("input", D::Float32, &[2, 30]) };
    let unnamed = pb::Tensor { raw: f32_raw([1.0, 1.0, 1.0, 1.0]).into(), ..tensor("", D::Float32, &[1, 4]) };
    let every_dtype = vec![
        pb::Tensor { double_data: vec![0.5, -2.0], ..tensor("f64", D::Float64, &[1, 2]) },
        pb::Tensor { int_data: vec![-7], ..tensor("i32", D::Int32, &[1]) },
        pb::Tensor { int64_data: vec![1, 2, 3], ..tensor("i64", D::Int64, &[1, 3]) },
        pb::Tensor { bool_data: vec![true], ..tensor("b", D::Bool, &[1]) },
        pb::Tensor { int_data: vec![255], ..tensor("u8", D::Uint8, &[1, 1]) },
        pb::Tensor { raw: vec![0x80].into(), ..tensor("i8", D::Int8, &[1]) },
        pb::Tensor { string_data: vec![b"h\xc3\xa9llo".to_vec()], ..tensor("s", D::String, &[1]) },
    ];
    let scalar = vec![
        pb::Tensor { float_data: vec![3.5], ..tensor("scalar", D::Float32, &[]) },
        pb::Tensor {
            raw: [7i64, 8, 9].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
            ..tensor("v", D::Int64, &[3])
        },
    ];
    vec![
        ("breast_cancer_raw_1_row", request(vec![one_row], &["label"])),
        ("breast_cancer_typed_2_rows", request(vec![two_rows], &["label", "probabilities"])),
        ("unnamed_single_input", request(vec![unnamed], &[])),
        ("every_dtype", request(every_dtype, &["out"])),
        ("scalar_and_vector", request(scalar, &[])),
    ]
    .into_iter()
    .map(|(name, r)| (name, r.encode_to_vec()))
    .collect()
}

fn kserve_seeds() -> Seeds {
    use kpb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    let input = |name: &str, datatype: &str, shape: &[i64], contents: Option<kpb::InferTensorContents>| {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents,
        }
    };
    let request = |inputs, raw: Vec<Vec<u8>>, outputs: &[&str]| kpb::ModelInferRequest {
        model_name: "breast-cancer".into(),
        id: "req-1".into(),
        inputs,
        raw_input_contents: raw.into_iter().map(Into::into).collect(),
        outputs: outputs
            .iter()
            .map(|o| InferRequestedOutputTensor { name: o.to_string(), parameters: Default::default() })
            .collect(),
        ..Default::default()
    };
    let c = kpb::InferTensorContents::default;
    let typed = vec![
        input(
            "f64",
            "FP64",
            &[1, 2],
            Some(kpb::InferTensorContents { fp64_contents: vec![0.5, 1.5], ..c() }),
        ),
        input("i32", "INT32", &[1], Some(kpb::InferTensorContents { int_contents: vec![-1], ..c() })),
        input("i64", "INT64", &[1, 2], Some(kpb::InferTensorContents { int64_contents: vec![4, 5], ..c() })),
        input("b", "BOOL", &[1], Some(kpb::InferTensorContents { bool_contents: vec![false], ..c() })),
        input("u8", "UINT8", &[1, 1], Some(kpb::InferTensorContents { uint_contents: vec![200], ..c() })),
        input("i8", "INT8", &[1], Some(kpb::InferTensorContents { int_contents: vec![-128], ..c() })),
        input(
            "s",
            "BYTES",
            &[1],
            Some(kpb::InferTensorContents { bytes_contents: vec![b"abc".to_vec()], ..c() }),
        ),
    ];
    let mut strings = Vec::new();
    for s in ["ab", "", "\u{1F600}"] {
        strings.extend_from_slice(&(s.len() as u32).to_le_bytes());
        strings.extend_from_slice(s.as_bytes());
    }
    vec![
        (
            "breast_cancer_raw",
            request(
                vec![input("input", "FP32", &[1, 30], None)],
                vec![f32_raw((0..30).map(|i| i as f32))],
                &["label"],
            ),
        ),
        (
            "breast_cancer_typed",
            request(
                vec![input(
                    "input",
                    "FP32",
                    &[1, 30],
                    Some(kpb::InferTensorContents { fp32_contents: vec![0.25; 30], ..c() }),
                )],
                vec![],
                &["probabilities"],
            ),
        ),
        ("every_datatype_typed", request(typed, vec![], &["out"])),
        ("bytes_raw", request(vec![input("s", "BYTES", &[3], None)], vec![strings], &[])),
    ]
    .into_iter()
    .map(|(name, r)| (name, r.encode_to_vec()))
    .collect()
}

fn model_toml_seeds() -> Seeds {
    let bundled = include_str!("../../../models/repository/breast-cancer/model.toml");
    let full = "sessions = 2\nintra_op_threads = 1\ninter_op_threads = 1\nqueue_capacity = 256\nmax_batch = 32\n\
                max_queue_delay_us = 200\non_new_version = \"canary\"\n\n[triggers]\np99_sla_ms = 25.0\n\
                nan_inf_rate = 0.01\nerror_ratio = 5.0\nerror_rate_floor = 0.001\nmin_samples = 100\n\
                pause_on_alert = true\nwindow_interval_secs = 0.5\nwindow_intervals = 4\n\n[analysis]\n\
                error_margin = 0.02\nlatency_margin = 0.5\nlatency_margin_min_ms = 1.0\nalpha = 0.05\n\
                kpi = \"revenue\"\nkpi_mde = 0.5\nkpi_higher_is_better = false\n";
    vec![
        ("bundled", bundled.as_bytes().to_vec()),
        ("every_key", full.as_bytes().to_vec()),
        ("inline_tables", b"triggers = { p99_sla_ms = 10.0 }\nanalysis = { alpha = 0.1 }\n".to_vec()),
        ("typo", b"queue_capcity = 4\n".to_vec()),
    ]
}

fn rollout_plan_seeds() -> Seeds {
    use pb::start_rollout_request::Plan as P;
    let request = |plan, triggers| pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(plan),
        reason: "fuzz seed".into(),
        triggers,
    };
    let step =
        |percent, secs, samples| pb::CanaryStep { percent, min_duration_secs: secs, min_samples: samples };
    let arm = |name: &str, version, weight| pb::AbArm { name: name.into(), version, weight };
    vec![
        (
            "canary_default_steps",
            request(P::Canary(pb::CanaryPlan { candidate: 3, steps: vec![], auto_advance: false }), None),
        ),
        (
            "canary_steps_triggers",
            request(
                P::Canary(pb::CanaryPlan {
                    candidate: 3,
                    steps: vec![step(1, 60, 500), step(20, 60, 500), step(100, 0, 0)],
                    auto_advance: true,
                }),
                Some(pb::TriggerOverrides {
                    p99_sla_ms: Some(25.0),
                    nan_inf_rate: Some(0.01),
                    error_ratio: Some(5.0),
                    error_rate_floor: Some(0.001),
                    min_samples: Some(50),
                    false_alarm_budget: Some(0.001),
                    budget_hours: Some(24.0),
                }),
            ),
        ),
        ("blue_green", request(P::BlueGreen(pb::BlueGreenPlan { green: 4, retention_secs: Some(60) }), None)),
        (
            "shadow",
            request(P::Shadow(pb::ShadowPlan { versions: vec![3, 4], fraction_percent: Some(12.5) }), None),
        ),
        (
            "ab_test",
            request(
                P::AbTest(pb::AbTestPlan {
                    arms: vec![arm("control", 2, 50), arm("treatment", 3, 50)],
                    metric: "ctr".into(),
                    mde: 0.01,
                    variance: 0.04,
                    ..Default::default()
                }),
                None,
            ),
        ),
        (
            "champion_challenger_auto",
            request(
                P::ChampionChallenger(pb::ChampionChallengerPlan {
                    challengers: vec![3, 4, 5],
                    fraction_percent: Some(10.0),
                    auto_kpi: "revenue".into(),
                    auto_threshold: 0.02,
                    auto_window_secs: 3600,
                    auto_min_samples: Some(100),
                    auto_lower_is_better: false,
                }),
                None,
            ),
        ),
        // Refused since fuzzing found them accepted (INVALID_ARGUMENT now).
        (
            "ab_arm_too_light_for_a_bucket",
            request(
                P::AbTest(pb::AbTestPlan {
                    arms: vec![arm("control", 2, 100_000), arm("treatment", 3, 1)],
                    metric: "ctr".into(),
                    mde: 0.01,
                    variance: 0.04,
                    ..Default::default()
                }),
                None,
            ),
        ),
        (
            "challenger_slice_rounds_to_all_traffic",
            request(
                P::ChampionChallenger(pb::ChampionChallengerPlan {
                    challengers: vec![3],
                    fraction_percent: Some(99.996),
                    ..Default::default()
                }),
                None,
            ),
        ),
    ]
    .into_iter()
    .map(|(name, r)| (name, r.encode_to_vec()))
    .collect()
}

fn structured_seeds() -> Seeds {
    // arbitrary's encoding is not meant to be written by hand: these only
    // give the fuzzer a start at each plan shape (the enum tag is the first
    // bytes `arbitrary` reads after the champion and the READY list).
    (0u8..5)
        .map(|shape| {
            let mut bytes = vec![2, 1, 3, 4, 5, 0, shape];
            bytes.extend((0u8..48).map(|i| i.wrapping_mul(37).wrapping_add(shape)));
            bytes
        })
        .zip(["shape_0", "shape_1", "shape_2", "shape_3", "shape_4"])
        .map(|(bytes, name)| (name, bytes))
        .collect()
}

/// `arbitrary` bytes for [`modelgate::hostile::model_fuzz::ModelInput`]:
/// each byte string decodes to some model; these pick a spread of inputs,
/// node kinds and sizes.
fn hostile_model_seeds() -> Seeds {
    let mut seeds: Seeds = Vec::new();
    for (name, first) in [("float_small", 0u8), ("double_huge", 1), ("int64_dims", 2), ("string", 7)] {
        let mut bytes = vec![first, 3, 0, 5, 1, 9, 2, 4];
        bytes.extend((0u8..48).map(|i| i.wrapping_mul(37).wrapping_add(first)));
        seeds.push((name, bytes));
    }
    seeds.push(("zeros", vec![0; 64]));
    seeds.push(("ones", vec![1; 64]));
    seeds.push(("ramp", (0u8..=255).collect()));
    seeds
}

/// Named seed files of one target.
type Seeds = Vec<(&'static str, Vec<u8>)>;

/// The seed corpus, by target: real requests and files, encoded.
fn seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("predict_decode", predict_seeds()),
        ("kserve_decode", kserve_seeds()),
        ("model_toml", model_toml_seeds()),
        ("rollout_plan", rollout_plan_seeds()),
        ("rollout_plan_structured", structured_seeds()),
        ("hostile_model", hostile_model_seeds()),
    ]
}

#[test]
fn seeds_pass_every_target() {
    let write = std::env::var_os("MODELGATE_WRITE_FUZZ_SEEDS").is_some();
    for (target, seeds) in seeds() {
        let (_, body) = TARGETS.iter().find(|(name, _)| *name == target).expect("a known target");
        let dir = fuzz_dir().join("corpus").join(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (name, bytes) in seeds {
            body(&bytes);
            let path = dir.join(name);
            if write {
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(
                    committed,
                    bytes,
                    "{} is stale: rerun with MODELGATE_WRITE_FUZZ_SEEDS=1",
                    path.display()
                );
            }
        }
    }
}

/// Every committed corpus file and saved crash runs clean.
#[test]
fn corpus_and_regressions_replay() {
    let mut replayed = 0;
    for (target, body) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(kind).join(target)) {
                let bytes = std::fs::read(&path).unwrap();
                // A panic names the file, so the failing input is one command away.
                eprintln!("replaying {}", path.display());
                body(&bytes);
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 20, "expected the committed corpus under fuzz/, found {replayed} files");
}
