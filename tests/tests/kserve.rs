//! KServe v2 / Open Inference Protocol against NVIDIA's real Python client,
//! `tritonclient[grpc]` from PyPI, in a venv this test makes once
//! (`.cache/venv-tritonclient`, from tests/python/requirements.txt), and
//! ModelStreamInfer's body accounting with tonic's client.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use modelgate_proto::inference as kpb;
use modelgate_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_proto::v1 as pb;
use modelgate_tests::*;
use serde_json::json;

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
    let out = tokio::task::spawn_blocking(move || python::run_bounded(cmd, Duration::from_secs(120)))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Triton client's checks failed ({}):\n{stderr}", out.status);
    eprintln!("tritonclient checks took {:?}", started.elapsed());
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Only what is served is advertised: no model_repository (load/unload are not).
    assert_eq!(seen["server_extensions"], json!(["model_configuration", "statistics"]));

    // ModelInfer routes exactly like Predict: same key, same version and role.
    let routed = seen["routed"].as_object().unwrap();
    assert_eq!(routed.len(), 60);
    let mut c = client(&server).await;
    let predict = versions_for_keys(&mut c, "breast-cancer", routed.keys().cloned()).await;
    for (key, version, role) in predict {
        let role = pb::Role::try_from(role).unwrap().as_str_name().trim_start_matches("ROLE_").to_lowercase();
        assert_eq!(routed[&key], json!([version, role]), "{key}");
    }
    for (version, role) in [(1, "canary"), (2, "champion")] {
        assert!(routed.values().any(|v| *v == json!([version, role])), "no key went to v{version}");
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

    check_triton_calls(&seen);

    // ModelInfer went through the same gateway path: it is in the metrics.
    let (_, metrics) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("modelgate_requests_total{model=\"breast-cancer\",")
            && l.contains("code=\"INVALID_ARGUMENT\"")),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

/// What the Triton client saw of ModelConfig, ModelStatistics,
/// ModelStreamInfer and the calls modelgate does not serve.
fn check_triton_calls(seen: &serde_json::Value) {
    // ModelConfig: the signature in Triton's terms. model.toml's default
    // batching (max_batch 32) is on, so dims leave out the batch dimension.
    let config = &seen["config"];
    assert_eq!(config["name"], "breast-cancer");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["backend"], "onnxruntime");
    assert_eq!(config["max_batch_size"], 32);
    assert_eq!(config["version_policy"], json!({"specific": {"versions": ["1", "2"]}}));
    assert_eq!(config["input"], json!([{"name": "input", "data_type": "TYPE_FP32", "dims": ["30"]}]));
    let outputs: std::collections::BTreeMap<&str, (&str, serde_json::Value)> = config["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            // JSON leaves an empty dims list out.
            (
                o["name"].as_str().unwrap(),
                (o["data_type"].as_str().unwrap(), o.get("dims").cloned().unwrap_or(json!([]))),
            )
        })
        .collect();
    assert_eq!(
        outputs,
        [("label", ("TYPE_INT64", json!([]))), ("probabilities", ("TYPE_FP32", json!(["2"])))]
            .into_iter()
            .collect()
    );
    assert!(config["dynamic_batching"].is_object(), "{config}");
    assert_eq!(seen["config_champion"], *config, "v1 and v2 have the same signature and settings");
    assert_eq!(
        seen["config_unknown_version"],
        json!([
            "StatusCode.NOT_FOUND",
            "version '99' of model 'breast-cancer' is not READY; READY versions: 1, 2"
        ])
    );

    // ModelStatistics moved by exactly what was sent to v1: 5 requests of 4
    // rows (one run each: the client waits for each reply), 1 refused.
    let d = &seen["statistics_delta"];
    for (field, want) in [
        ("success_count", 5),
        ("inference_count", 20),
        ("execution_count", 5),
        ("queue_count", 5),
        ("compute_infer_count", 5),
        ("fail_count", 1),
    ] {
        assert_eq!(d[field], want, "{field}: {d}");
    }
    let ns = |k: &str| d[k].as_u64().unwrap();
    assert!(ns("compute_infer_ns") > 0 && ns("fail_ns") > 0, "{d}");
    assert!(ns("success_ns") >= ns("queue_ns") + ns("compute_infer_ns"), "{d}");
    assert_eq!(d["last_inference_moved"], true, "{d}");
    assert_eq!(seen["statistics_all"], json!([["breast-cancer", "1"], ["breast-cancer", "2"]]));
    assert_eq!(seen["statistics_unknown"][0], "StatusCode.NOT_FOUND");
    let unknown = seen["statistics_unknown"][1].as_str().unwrap();
    assert!(unknown.contains("'no-such-model' not found; models served: breast-cancer"), "{unknown}");
    assert_eq!(
        seen["statistics_version_only"],
        json!(["StatusCode.INVALID_ARGUMENT", "a version is given without a model name; name the model"])
    );

    // ModelStreamInfer: the same answers as ModelInfer (golden outputs were
    // checked by the client; versions and roles here), errors in the stream.
    let stream = &seen["stream"];
    assert_eq!(stream["stream-1"], json!([1, "canary"]));
    assert_eq!(stream["stream-2"], json!([2, "champion"]));
    assert_eq!(stream["stream-after-errors"], json!([2, "champion"]), "the stream went on after its errors");
    let routed = stream["routed"].as_object().unwrap();
    assert_eq!(routed.len(), 10);
    for (key, got) in routed {
        assert_eq!(*got, seen["routed"][key], "{key}: the stream routed it as ModelInfer did");
    }
    let errors: Vec<&str> =
        stream["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("[16, 29]")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("'no-such-model' not found")), "{errors:?}");

    // The calls not served are UNIMPLEMENTED and say what to do instead.
    for (call, rpc, instead) in [
        ("load_model", "RepositoryModelLoad", "model directory"),
        ("unload_model", "RepositoryModelUnload", "model directory"),
        ("system_shared_memory", "SystemSharedMemoryStatus", "send tensors in the request"),
        ("cuda_shared_memory", "CudaSharedMemoryStatus", "on the CPU"),
        ("trace_settings", "TraceSetting", "OpenTelemetry"),
        ("log_settings", "LogSettings", "RUST_LOG"),
    ] {
        let (code, message) = (&seen["unsupported"][call][0], seen["unsupported"][call][1].as_str().unwrap());
        assert_eq!(code, "StatusCode.UNIMPLEMENTED", "{call}: {message}");
        assert!(message.starts_with(&format!("{rpc} is not supported by modelgate: ")), "{call}: {message}");
        assert!(message.contains(instead), "{call}: {message}");
    }
}

/// A ModelInferRequest of `rows` (raw FP32) for breast-cancer.
fn kserve_request(id: String, rows: &[Vec<f32>]) -> kpb::ModelInferRequest {
    let raw: Vec<u8> = rows.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    kpb::ModelInferRequest {
        model_name: "breast-cancer".into(),
        id,
        inputs: vec![kpb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows.len() as i64, 30],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

/// A stream sends as many messages as it likes: each message's bytes are
/// released once it is in, so a stream carrying many times the connection's
/// body budget in total is served in full, in order, each reply equal to
/// ModelInfer's for the same request. At most 16 of a stream's requests are
/// in flight: a version queue of 16 is never full (no RESOURCE_EXHAUSTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_is_served_in_full_within_the_body_budgets() {
    let repo = TestRepo::breast_cancer();
    repo.config("breast-cancer", "queue_capacity = 16\n");
    let server = start(&repo, |c| {
        c.max_request_bytes = 16 << 10;
        c.connections.connection_body_bytes = 64 << 10;
        c.connections.body_budget_bytes = 64 << 10;
    })
    .await;
    let mut client = GrpcInferenceServiceClient::new(channel_to(server.addr).await);
    let rows = rows(16);
    // 200 messages of ~2 KB: six times the 64 KiB connection budget.
    let sent = 200;
    let requests = (0..sent).map(|i| kserve_request(format!("s-{i}"), &rows)).collect::<Vec<_>>();
    let unary = client.model_infer(kserve_request("unary".into(), &rows)).await.unwrap().into_inner();
    let mut replies = client.model_stream_infer(futures::stream::iter(requests)).await.unwrap().into_inner();
    let mut got = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        assert_eq!(reply.error_message, "", "reply {got}");
        let r = reply.infer_response.unwrap();
        assert_eq!(r.id, format!("s-{got}"), "replies come in request order");
        assert_eq!((&r.outputs, &r.raw_output_contents), (&unary.outputs, &unary.raw_output_contents));
        got += 1;
    }
    assert_eq!(got, sent);
    drop((replies, client));
    server.stop().await.unwrap();
}
