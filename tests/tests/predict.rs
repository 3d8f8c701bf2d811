//! Predict over real gRPC on loopback against the committed models.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_registry::VersionState::Ready;
use modelgate_runtime::TensorData;
use modelgate_tests::*;
use tonic::Code;

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5, "{what}[{i}]: got {g}, want {w}");
    }
}

fn probs_of(resp: &pb::PredictResponse) -> Vec<f32> {
    match output(resp, "probabilities").data {
        TensorData::Float32(v) => v,
        other => panic!("probabilities are {:?}", other.dtype()),
    }
}

fn labels_of(resp: &pb::PredictResponse) -> Vec<i64> {
    match output(resp, "label").data {
        TensorData::Int64(v) => v,
        other => panic!("label is {:?}", other.dtype()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_outputs_match_for_both_versions_raw_and_typed() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    for version in [1u64, 2] {
        let g = golden(version);
        let want_probs: Vec<f32> = g.probabilities.iter().flatten().copied().collect();
        for (typed_in, typed_out) in [(false, false), (true, true), (false, true)] {
            let input = if typed_in { typed_rows("input", &g.rows) } else { raw_rows("input", &g.rows) };
            let resp = c
                .predict(pb::PredictRequest {
                    model: "breast-cancer".into(),
                    version: Some(version as i64),
                    inputs: vec![input],
                    typed_outputs: typed_out,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(resp.version, version as i64);
            assert_eq!(labels_of(&resp), g.labels, "v{version} labels");
            assert_close(&probs_of(&resp), &want_probs, &format!("v{version} probabilities"));
            assert_eq!(output(&resp, "probabilities").shape, vec![16, 2]);
        }
        // Row by row gives the same answers as the batch.
        for (i, row) in g.rows.iter().enumerate() {
            let mut req = request("breast-cancer", std::slice::from_ref(row));
            req.version = Some(version as i64);
            let resp = c.predict(req).await.unwrap().into_inner();
            assert_eq!(labels_of(&resp), vec![g.labels[i]]);
            assert_close(&probs_of(&resp), &g.probabilities[i], &format!("v{version} row {i}"));
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn champion_is_the_highest_ready_version_and_ids_are_echoed() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    let mut req = request("breast-cancer", &rows(1));
    req.request_id = "req-42".into();
    let resp = c.predict(req).await.unwrap().into_inner();
    assert_eq!(resp.version, 2);
    assert_eq!(resp.role, pb::Role::Champion as i32);
    assert_eq!(resp.request_id, "req-42");
    assert_eq!(resp.model, "breast-cancer");

    let resp = c.predict(request("breast-cancer", &rows(1))).await.unwrap().into_inner();
    assert_eq!(resp.request_id.len(), 32, "a request id is generated when none is given");

    let mut pinned = request("breast-cancer", &rows(1));
    pinned.version = Some(1);
    let resp = c.predict(pinned).await.unwrap().into_inner();
    assert_eq!((resp.version, resp.role), (1, pb::Role::Pinned as i32));

    // Only the outputs asked for come back.
    let mut only = request("breast-cancer", &rows(2));
    only.output_names = vec!["label".into()];
    let resp = c.predict(only).await.unwrap().into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, "label");

    let meta = c
        .model_metadata(pb::ModelMetadataRequest { model: "breast-cancer".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.champion, 2);
    assert_eq!(meta.versions.len(), 2);
    let v1 = &meta.versions[0];
    assert_eq!(v1.inputs[0].name, "input");
    assert_eq!(v1.inputs[0].shape, vec![-1, 30]);
    assert_eq!(v1.sha256.len(), 64);
    server.stop().await.unwrap();
}

async fn expect_status(
    c: &mut pb::predict_client::PredictClient<tonic::transport::Channel>,
    req: pb::PredictRequest,
    code: Code,
    needles: &[&str],
) {
    let err = c.predict(req).await.expect_err("request must fail");
    assert_eq!(err.code(), code, "{}", err.message());
    for n in needles {
        assert!(err.message().contains(n), "message {:?} should mention {n:?}", err.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_mistake_gets_a_clear_status() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| c.max_request_bytes = 1 << 20).await;
    let mut c = client(&server).await;
    let bc = "breast-cancer";

    expect_status(
        &mut c,
        request("nope", &rows(1)),
        Code::NotFound,
        &["model 'nope' not found", "breast-cancer"],
    )
    .await;
    let mut req = request(bc, &rows(1));
    req.version = Some(7);
    expect_status(&mut c, req, Code::NotFound, &["version 7", "1 (READY)"]).await;
    let mut req = request(bc, &rows(1));
    req.version = Some(-1);
    expect_status(&mut c, req, Code::NotFound, &["version -1"]).await;
    expect_status(&mut c, request("", &rows(1)), Code::InvalidArgument, &["model is not set"]).await;

    // Wrong input name.
    let mut req = request(bc, &rows(1));
    req.inputs[0].name = "features".into();
    expect_status(
        &mut c,
        req,
        Code::InvalidArgument,
        &["unknown input 'features'", "'input' (FLOAT32 [N, 30])"],
    )
    .await;
    // Wrong dtype.
    let mut req = request(bc, &rows(1));
    req.inputs[0].dtype = pb::DataType::Float64 as i32;
    req.inputs[0].raw = vec![0u8; 30 * 8].into();
    expect_status(&mut c, req, Code::InvalidArgument, &["input 'input' has dtype FLOAT64, expected FLOAT32"])
        .await;
    // Wrong shape.
    let req = pb::PredictRequest {
        model: bc.into(),
        inputs: vec![raw_rows("input", &[vec![0.0; 29]])],
        ..Default::default()
    };
    expect_status(&mut c, req, Code::InvalidArgument, &["input 'input' has shape [1, 29], expected [N, 30]"])
        .await;
    // Raw byte length not matching shape × dtype.
    let mut req = request(bc, &rows(1));
    req.inputs[0].raw = vec![0u8; 30 * 4 - 1].into();
    expect_status(&mut c, req, Code::InvalidArgument, &["input 'input'", "119 bytes, expected 120"]).await;
    // Typed count not matching the shape.
    let mut req = pb::PredictRequest {
        model: bc.into(),
        inputs: vec![typed_rows("input", &rows(1))],
        ..Default::default()
    };
    req.inputs[0].float_data.pop();
    expect_status(&mut c, req, Code::InvalidArgument, &["holds 30 elements but float_data has 29"]).await;
    // Empty batch.
    let mut req = request(bc, &[]);
    req.inputs[0].shape = vec![0, 30];
    expect_status(&mut c, req, Code::InvalidArgument, &["empty batch", "[0, 30]"]).await;
    // No inputs at all.
    let req = pb::PredictRequest { model: bc.into(), ..Default::default() };
    expect_status(&mut c, req, Code::InvalidArgument, &["no inputs given", "'input'"]).await;
    // Duplicate inputs.
    let mut req = request(bc, &rows(1));
    req.inputs.push(req.inputs[0].clone());
    expect_status(&mut c, req, Code::InvalidArgument, &["input 'input' is given more than once"]).await;
    // Missing dtype, both raw and typed, negative dims.
    let mut req = request(bc, &rows(1));
    req.inputs[0].dtype = 0;
    expect_status(&mut c, req, Code::InvalidArgument, &["dtype is not set"]).await;
    let mut req = request(bc, &rows(1));
    req.inputs[0].float_data = vec![0.0; 30];
    expect_status(&mut c, req, Code::InvalidArgument, &["both as raw and as float_data"]).await;
    let mut req = request(bc, &rows(1));
    req.inputs[0].shape = vec![-1, 30];
    expect_status(&mut c, req, Code::InvalidArgument, &["negative dimension"]).await;
    // Unknown output.
    let mut req = request(bc, &rows(1));
    req.output_names = vec!["score".into()];
    expect_status(
        &mut c,
        req,
        Code::InvalidArgument,
        &["unknown output 'score'", "'label', 'probabilities'"],
    )
    .await;
    // Oversized request: 2 MiB against a 1 MiB limit.
    let req = request(bc, &vec![vec![0.0; 30]; 2 * 1024 * 1024 / 120]);
    expect_status(&mut c, req, Code::ResourceExhausted, &["bytes, over the 1048576-byte limit"]).await;
    let long_id = pb::PredictRequest { request_id: "x".repeat(1000), ..request(bc, &rows(1)) };
    expect_status(&mut c, long_id, Code::InvalidArgument, &["request_id is 1000 bytes"]).await;

    // After all that the server still serves.
    let resp = c.predict(request(bc, &rows(3))).await.unwrap().into_inner();
    assert_eq!(labels_of(&resp).len(), 3);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_failure_is_internal_with_ort_message_and_only_that_request_fails() {
    let repo = TestRepo::new();
    repo.add("failing", 1, FAIL);
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    let mut bad = rows(2);
    bad[1][0] = -1.0;
    let err = c.predict(request("failing", &bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(
        err.message().contains("model 'failing' version 1: inference failed in ONNX Runtime"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("out of data bounds"), "ORT's own message: {}", err.message());
    let ok = c.predict(request("failing", &rows(2))).await.unwrap().into_inner();
    assert_eq!(labels_of(&ok).len(), 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_fault_model_returns_nan_rows_as_documented() {
    let repo = TestRepo::new();
    repo.add("nan", 1, NAN);
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    let mut input = rows(2);
    input[0][0] = 20.0;
    input[1][0] = 10.0;
    let resp = c.predict(request("nan", &input)).await.unwrap().into_inner();
    let p = probs_of(&resp);
    assert!(p[0].is_nan() && p[1].is_nan(), "row 0 has feature 0 >= 15: {p:?}");
    assert!(p[2].is_finite() && p[3].is_finite(), "row 1 is below 15: {p:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_unnamed_input_binds_to_the_models_only_input() {
    let repo = TestRepo::new();
    repo.add("linear", 1, OTHER);
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    let req = pb::PredictRequest {
        model: "linear".into(),
        inputs: vec![raw_rows("", &[vec![1.0, 1.0, 1.0, 1.0]])],
        ..Default::default()
    };
    let resp = c.predict(req).await.unwrap().into_inner();
    assert_eq!(output(&resp, "y").data, TensorData::Float32(vec![10.5]));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_clients_times_two_hundred_requests_all_succeed() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let g = golden(2);
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let mut c = client(&server).await;
        let g_rows = g.rows.clone();
        let g_labels = g.labels.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200usize {
                let k = (t * 200 + i) % g_rows.len();
                let resp = c
                    .predict(request("breast-cancer", std::slice::from_ref(&g_rows[k])))
                    .await
                    .expect("request succeeds")
                    .into_inner();
                assert_eq!(labels_of(&resp), vec![g_labels[k]]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let table = server.gateway.table();
    let stats = match &table.get("breast-cancer").unwrap().versions[&2].state {
        Ready(r) => r.queue.stats().completed.load(std::sync::atomic::Ordering::Relaxed),
        _ => panic!("v2 ready"),
    };
    assert_eq!(stats, 3200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted_at_once_instead_of_waiting() {
    let repo = TestRepo::new();
    repo.add("slow", 1, SLOW).config("slow", "queue_capacity = 1\nsessions = 1\n");
    let server = start(&repo, |c| c.threads = 1).await;
    // ~4 ms a row: 50 rows keep the only thread busy for ~200 ms.
    let mut tasks = Vec::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..12 {
        let mut c = client(&server).await;
        let done = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.predict(request("slow", &rows(50))).await;
            let _ = done.send((i, r.as_ref().map(|_| ()).map_err(|e| e.code())));
            r
        }));
    }
    drop(done_tx);
    let mut order = Vec::new();
    while let Some(x) = tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await.expect("no hang")
    {
        order.push(x);
    }
    let ok = order.iter().filter(|(_, r)| r.is_ok()).count();
    let exhausted = order.iter().filter(|(_, r)| *r == Err(Code::ResourceExhausted)).count();
    assert_eq!(ok + exhausted, 12, "only successes and RESOURCE_EXHAUSTED: {order:?}");
    assert!(exhausted >= 1, "{order:?}");
    assert!(ok >= 1, "{order:?}");
    // Rejections come back before the first slow request finishes: they never waited.
    let first_ok = order.iter().position(|(_, r)| r.is_ok()).unwrap();
    assert!(order[..first_ok].iter().all(|(_, r)| *r == Err(Code::ResourceExhausted)));
    assert!(first_ok >= 1, "at least one rejection beat the first success: {order:?}");
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert!(e.message().contains("queue is full (1 requests waiting)"), "{}", e.message());
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_deadline_passes_in_the_queue_is_not_run() {
    let repo = TestRepo::new();
    repo.add("slow", 1, SLOW).config("slow", "sessions = 1\n");
    let server = start(&repo, |c| c.threads = 1).await;
    let mut busy = client(&server).await;
    let hog = tokio::spawn(async move { busy.predict(request("slow", &rows(100))).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = client(&server).await;
    let mut req = tonic::Request::new(request("slow", &rows(1)));
    req.set_timeout(Duration::from_millis(100));
    let err = c.predict(req).await.unwrap_err();
    // The gateway answers DEADLINE_EXCEEDED a few ms before the deadline, but
    // tonic's client enforces the same deadline itself (CANCELLED "Timeout
    // expired"), and on a loaded machine its timer can win the race. What
    // matters here is that the request never ran; the gateway's own answer is
    // asserted below without a client timer in the way.
    assert!(
        err.code() == Code::DeadlineExceeded && err.message().contains("was not run")
            || err.code() == Code::Cancelled && err.message() == "Timeout expired",
        "{:?}: {}",
        err.code(),
        err.message()
    );
    // In process, the gateway's own verdict on an expired queued request.
    let slow_rows = rows(1);
    let deadline_req = modelgate::InferRequest {
        model: "slow".into(),
        version: None,
        routing_key: None,
        request_id: "expired".into(),
        inputs: vec![modelgate_runtime::Tensor::new(
            "input",
            vec![1, 30],
            modelgate_runtime::TensorData::Float32(slow_rows[0].clone()),
        )],
        outputs: vec![],
        deadline: Some(std::time::Instant::now() + Duration::from_millis(30)),
    };
    let err = server.gateway.infer(deadline_req).await.unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), Code::DeadlineExceeded);
    hog.await.unwrap().expect("the long request still succeeds");
    // Let the executor reach the expired job.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let table = server.gateway.table();
    let Ready(v) = &table.get("slow").unwrap().versions[&1].state else { panic!("ready") };
    let s = v.queue.stats();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(s.completed.load(Relaxed), 1, "only the long request ran (warm-up is not queued)");
    assert_eq!(
        s.expired.load(Relaxed) + s.abandoned.load(Relaxed),
        2,
        "both expired requests were dropped unrun"
    );
    server.stop().await.unwrap();
}
