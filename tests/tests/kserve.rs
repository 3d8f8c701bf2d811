//! KServe v2 / Open Inference Protocol against NVIDIA's real Python client,
//! `tritonclient[grpc]` from PyPI, in a venv this test makes once
//! (`.cache/venv-tritonclient`, from tests/python/requirements.txt).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged_through_the_same_gateway_path() {
    let python =
        tokio::task::spawn_blocking(|| python::venv("tritonclient", "requirements.txt")).await.unwrap();
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    // Champion v2 with a 50% canary of v1, so routing has something to decide.
    let mut a = admin(&server, None).await;
    a.start_rollout(pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::Canary(pb::CanaryPlan {
            candidate: 1,
            steps: [50, 100]
                .map(|percent| pb::CanaryStep { percent, min_duration_secs: 0, min_samples: 0 })
                .into(),
            auto_advance: false,
        })),
        reason: "kserve test".into(),
        triggers: None,
    })
    .await
    .unwrap();

    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/python/kserve_client.py"))
        .arg(server.addr.to_string())
        .arg(root().join("models/golden"));
    let started = Instant::now();
    let out =
        tokio::task::spawn_blocking(move || python::run_bounded(cmd, Duration::from_secs(45))).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Triton client's checks failed ({}):\n{stderr}", out.status);
    eprintln!("tritonclient checks took {:?}", started.elapsed());
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["server_extensions"], serde_json::json!(["model_repository"]));

    // ModelInfer routes exactly like Predict: same key, same version and role.
    let routed = seen["routed"].as_object().unwrap();
    assert_eq!(routed.len(), 60);
    let mut c = client(&server).await;
    let predict = versions_for_keys(&mut c, "breast-cancer", routed.keys().cloned()).await;
    for (key, version, role) in predict {
        let role = pb::Role::try_from(role).unwrap().as_str_name().trim_start_matches("ROLE_").to_lowercase();
        assert_eq!(routed[&key], serde_json::json!([version, role]), "{key}");
    }
    for (version, role) in [(1, "canary"), (2, "champion")] {
        assert!(
            routed.values().any(|v| *v == serde_json::json!([version, role])),
            "no key went to v{version}"
        );
    }

    // Every mistake got a status naming what was wrong.
    let errors = seen["errors"].as_object().unwrap();
    let message = |k: &str| errors[k][1].as_str().unwrap().to_string();
    assert_eq!(errors.len(), 10);
    assert!(message("wrong_shape").contains("[16, 29]"), "{}", message("wrong_shape"));
    assert!(message("wrong_dtype").contains("datatype FP64, expected FP32"), "{}", message("wrong_dtype"));
    assert!(message("wrong_name").contains("unknown input 'nope'"), "{}", message("wrong_name"));
    assert!(message("empty_batch").contains("empty batch"), "{}", message("empty_batch"));
    assert!(message("unknown_output").contains("'nope'"), "{}", message("unknown_output"));
    assert!(
        message("unknown_datatype").contains("'FP8' is not supported"),
        "{}",
        message("unknown_datatype")
    );
    assert!(message("raw_byte_length").contains("119 bytes, expected 120"), "{}", message("raw_byte_length"));
    assert!(message("raw_and_typed").contains("both"), "{}", message("raw_and_typed"));
    for k in ["unknown_model", "unknown_model_metadata"] {
        assert!(
            message(k).contains("'no-such-model' not found; models served: breast-cancer"),
            "{}",
            message(k)
        );
    }

    // ModelInfer went through the same gateway path: it is in the metrics.
    let (_, metrics) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("modelgate_requests_total{model=\"breast-cancer\",")
            && l.contains("code=\"INVALID_ARGUMENT\"")),
        "{metrics}"
    );
    server.stop().await.unwrap();
}
