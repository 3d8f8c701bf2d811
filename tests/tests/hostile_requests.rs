//! Hostile requests against the real gateway (issue 14, items 4, 5 and 8):
//! what a client sends must not multiply what the gateway holds, and what
//! it sent is never echoed whole into a status message. The memory checks
//! run the real binary and read VmRSS/VmHWM from /proc/<pid>/status.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use modelgate_proto::inference as kpb;
use modelgate_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_proto::v1 as pb;
use modelgate_tests::process::{Memory, ServeProcess};
use modelgate_tests::*;
use tonic::Code;
use tonic::transport::Channel;

const MIB: u64 = 1024;

/// A KServe ModelInfer of `rows` for breast-cancer, raw contents.
fn kserve_request(rows: &[Vec<f32>], outputs: &[&str]) -> kpb::ModelInferRequest {
    let raw: Vec<u8> = rows.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    kpb::ModelInferRequest {
        model_name: "breast-cancer".into(),
        inputs: vec![kpb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows.len() as i64, 30],
            ..Default::default()
        }],
        outputs: outputs
            .iter()
            .map(|o| kpb::model_infer_request::InferRequestedOutputTensor {
                name: (*o).into(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

fn kserve(channel: Channel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// Growth from `before` to now: (RSS now, peak), in KiB.
fn growth(before: Memory, now: Memory) -> (i64, i64) {
    (now.rss_kib as i64 - before.rss_kib as i64, now.hwm_kib as i64 - before.rss_kib as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_output_names_are_refused_before_the_model_runs_and_memory_stays_flat() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::serve(repo.path(), &["--no-watch", "--threads", "2"]);
    let mut c = gw.client().await;
    let mut k = kserve(gw.channel().await);
    let rows = rows(10_000);
    // Warm up the paths the attack takes, with a legitimate request of the
    // same size, so the baseline holds what any 10,000-row request leaves.
    let mut ok = request("breast-cancer", &rows);
    ok.output_names = vec!["probabilities".into()];
    let resp = c.predict(ok.clone()).await.unwrap().into_inner();
    assert_eq!(output(&resp, "probabilities").shape, vec![10_000, 2]);
    k.model_infer(kserve_request(&rows, &["probabilities"])).await.unwrap();
    let before = gw.memory();
    let reset = gw.reset_peak();
    let cpu = gw.cpu_ms();

    // The attack of the issue: 10,000 rows, "probabilities" x 6000 (1.3 MB
    // of names), a 480 MB response before the fix. Sent five times; more
    // names than any model has outputs are refused before decoding.
    let mut attack = ok.clone();
    attack.output_names = vec!["probabilities".to_string(); 6000];
    for _ in 0..5 {
        let e = c.predict(attack.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert_eq!(e.message(), "request has more than 1024 output names");
    }
    // Under that cap, a repeated name is refused by name, before the model runs.
    for n in [2, 1000] {
        let mut attack = ok.clone();
        attack.output_names = vec!["probabilities".to_string(); n];
        let e = c.predict(attack).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert_eq!(
            e.message(),
            "model 'breast-cancer' version 2: output 'probabilities' is requested more than once"
        );
    }
    // The same over KServe's `outputs` list.
    let e = k.model_infer(kserve_request(&rows, &vec!["probabilities"; 6000])).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "request has more than 1024 outputs"));
    for _ in 0..5 {
        let e = k.model_infer(kserve_request(&rows, &["probabilities"; 1000])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(
            e.message().ends_with("output 'probabilities' is requested more than once"),
            "{}",
            e.message()
        );
    }
    // Asking for each output once is fine, in any order; an unknown one says
    // which outputs there are.
    let mut both = ok.clone();
    both.output_names = vec!["label".into(), "probabilities".into()];
    let resp = c.predict(both).await.unwrap().into_inner();
    assert_eq!(resp.outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["label", "probabilities"]);
    let mut unknown = ok.clone();
    unknown.output_names = vec!["probabilities".into(), "nope".into()];
    let e = c.predict(unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("unknown output 'nope' requested; the model's outputs are:"),
        "{}",
        e.message()
    );

    let after = gw.memory();
    let (rss, peak) = growth(before, after);
    eprintln!(
        "repeated outputs: RSS {before:?} -> {after:?}; growth {rss} KiB, peak growth {peak} KiB (peak reset: {reset}); server CPU {} ms",
        gw.cpu_ms() - cpu
    );
    assert!(rss < 50 * MIB as i64, "RSS grew {rss} KiB");
    if reset {
        assert!(peak < 100 * MIB as i64, "peak grew {peak} KiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_limit_is_resource_exhausted_on_every_path() {
    let repo = TestRepo::breast_cancer();
    // Batches wait up to 50 ms for company, so concurrent requests are run
    // together and split back.
    repo.config("breast-cancer", "max_batch = 32\nmax_queue_delay_us = 50000\n");
    // 4 rows answer ~140 bytes, 16 rows ~330 raw (more typed).
    let gw =
        ServeProcess::serve(repo.path(), &["--no-watch", "--threads", "1", "--max-response-bytes", "250"]);
    let mut c = gw.client().await;
    let mut k = kserve(gw.channel().await);

    assert!(c.predict(request("breast-cancer", &rows(4))).await.is_ok());
    let e = c.predict(request("breast-cancer", &rows(16))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(
        e.message().starts_with("model 'breast-cancer' version 2: the response would be ")
            && e.message().contains("bytes, over the 250-byte limit (--max-response-bytes)"),
        "{}",
        e.message()
    );
    let bytes: usize =
        e.message().split("would be ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((300..400).contains(&bytes), "{bytes}");

    // Typed outputs too (their exact encoded size is checked as well).
    let mut typed = request("breast-cancer", &rows(4));
    typed.typed_outputs = true;
    assert!(c.predict(typed.clone()).await.is_ok());
    typed.inputs = request("breast-cancer", &rows(16)).inputs;
    assert_eq!(c.predict(typed).await.unwrap_err().code(), Code::ResourceExhausted);

    // KServe ModelInfer.
    assert!(k.model_infer(kserve_request(&rows(4), &[])).await.is_ok());
    let e = k.model_infer(kserve_request(&rows(16), &[])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("over the 250-byte limit"), "{}", e.message());

    // Batched: small and large requests run together; each is judged on
    // its own share of the batch.
    let mut calls = Vec::new();
    for i in 0..6 {
        let mut c = c.clone();
        let n = if i % 2 == 0 { 4 } else { 16 };
        calls.push(tokio::spawn(async move { (n, c.predict(request("breast-cancer", &rows(n))).await) }));
    }
    for call in calls {
        let (n, result) = call.await.unwrap();
        match n {
            4 => assert_eq!(output(&result.unwrap().into_inner(), "label").shape, vec![4]),
            _ => assert_eq!(result.unwrap_err().code(), Code::ResourceExhausted),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_without_a_rollout_are_not_stored_and_huge_metric_names_are_refused() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::serve(repo.path(), &["--no-watch", "--threads", "1"]);
    let mut c = gw.client().await;
    let outcome = |metric: String| pb::RecordOutcomeRequest {
        model: "breast-cancer".into(),
        routing_key: "user-1".into(),
        metric,
        value: 1.0,
        ..Default::default()
    };
    // Warm the path with one call of each kind.
    c.record_outcome(outcome("warm".into())).await.unwrap();
    c.record_outcome(outcome("m".repeat(1 << 20))).await.unwrap_err();
    let before = gw.memory();
    let reset = gw.reset_peak();
    let cpu = gw.cpu_ms();

    // The attack of the issue: no rollout, 400 distinct 1 MB metric names
    // (415 MB kept before the fix).
    for i in 0..400 {
        let mut name = format!("{i:04}");
        name.push_str(&"m".repeat((1 << 20) - 4));
        let e = c.record_outcome(outcome(name)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "metric name is 1048576 bytes, at most 128 allowed");
    }
    // Valid names without a rollout: answered, not joined, not stored.
    for i in 0..400 {
        let r = c.record_outcome(outcome(format!("metric-{i}"))).await.unwrap().into_inner();
        assert!(!r.joined, "stored without a rollout");
    }
    let after = gw.memory();
    let (rss, peak) = growth(before, after);
    eprintln!(
        "outcome names: RSS {before:?} -> {after:?}; growth {rss} KiB, peak growth {peak} KiB (peak reset: {reset}); server CPU {} ms",
        gw.cpu_ms() - cpu
    );
    assert!(rss < 30 * MIB as i64, "RSS grew {rss} KiB");
    if reset {
        assert!(peak < 100 * MIB as i64, "peak grew {peak} KiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_rollout_metric_names_are_capped_per_model_and_timestamps_bounded() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::serve(
        repo.path(),
        &["--no-watch", "--threads", "1", "--outcome-metrics-per-model", "3"],
    );
    let mut c = gw.client().await;
    let mut a = gw.admin(None).await;
    a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap();
    let outcome = |metric: &str| pb::RecordOutcomeRequest {
        model: "breast-cancer".into(),
        routing_key: "user-1".into(),
        metric: metric.into(),
        value: 1.0,
        ..Default::default()
    };
    for m in ["a", "b", "c", "a"] {
        let r = c.record_outcome(outcome(m)).await.unwrap().into_inner();
        assert!(r.joined, "{m}");
    }
    let e = c.record_outcome(outcome("d")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "model 'breast-cancer' already has 3 metrics ('a', 'b', 'c'); metric 'd' would be one more (at most 3 per model)"
    );
    // Known names still count.
    assert!(c.record_outcome(outcome("c")).await.unwrap().into_inner().joined);
    let e = c.record_outcome(outcome(&"x".repeat(129))).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "metric name is 129 bytes, at most 128 allowed")
    );
    // A timestamp outside the kept day is refused, not a bucket of its own.
    for ts in [1, i64::MAX, -5] {
        let mut r = outcome("a");
        r.timestamp_ms = ts;
        let e = c.record_outcome(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{ts}");
        assert!(e.message().contains("is outside the last 24 hours"), "{}", e.message());
    }
    let mut r = outcome("a");
    r.request_id = "r".repeat(257);
    let e = c.record_outcome(r).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "request_id is 257 bytes, at most 256 allowed")
    );
}

fn head(s: &str) -> String {
    s.chars().take(300).collect()
}

/// A status message quoting a 1 MB string: short, cut, with the length.
fn assert_short(e: &tonic::Status, code: Code) {
    assert_eq!(e.code(), code, "{}", e.message());
    assert!(e.message().len() < 1024, "{} bytes: {}", e.message().len(), head(e.message()));
    assert!(e.message().contains("…' (1048576 bytes)"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_names_come_back_cut_in_the_status() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let channel = channel_to(server.addr).await;
    let mut c = client(&server).await;
    let mut k = kserve(channel);
    let huge = "n".repeat(1 << 20);

    // A 1 MB model name: NOT_FOUND, with a short message, on every RPC.
    let e = c.predict(request(&huge, &rows(1))).await.unwrap_err();
    assert_short(&e, Code::NotFound);
    assert!(e.message().ends_with("not found; models served: breast-cancer"), "{}", e.message());
    let mut infer = kserve_request(&rows(1), &[]);
    infer.model_name = huge.clone();
    assert_short(&k.model_infer(infer).await.unwrap_err(), Code::NotFound);
    let meta = kpb::ModelMetadataRequest { name: huge.clone(), version: String::new() };
    assert_short(&k.model_metadata(meta).await.unwrap_err(), Code::NotFound);
    let meta = pb::ModelMetadataRequest { model: huge.clone() };
    assert_short(&c.model_metadata(meta).await.unwrap_err(), Code::NotFound);
    let outcome = pb::RecordOutcomeRequest {
        model: huge.clone(),
        request_id: "r1".into(),
        metric: "conversion".into(),
        value: 1.0,
        ..Default::default()
    };
    assert_short(&c.record_outcome(outcome).await.unwrap_err(), Code::NotFound);

    // Names inside a request to a real model: INVALID_ARGUMENT, short.
    let mut req = request("breast-cancer", &rows(1));
    req.inputs[0].name = huge.clone();
    assert_short(&c.predict(req).await.unwrap_err(), Code::InvalidArgument);
    let mut req = request("breast-cancer", &rows(1));
    req.output_names = vec![huge.clone()];
    assert_short(&c.predict(req).await.unwrap_err(), Code::InvalidArgument);
    let mut req = request("breast-cancer", &rows(1));
    req.inputs[0].dtype = 0;
    req.inputs[0].name = huge.clone();
    assert_short(&c.predict(req).await.unwrap_err(), Code::InvalidArgument);
    let mut infer = kserve_request(&rows(1), &[]);
    infer.inputs[0].datatype = huge.clone();
    assert_short(&k.model_infer(infer).await.unwrap_err(), Code::InvalidArgument);
    let mut infer = kserve_request(&rows(1), &[]);
    infer.model_version = huge.clone();
    assert_short(&k.model_infer(infer).await.unwrap_err(), Code::InvalidArgument);
    let mut infer = kserve_request(&rows(1), &[&huge]);
    infer.inputs[0].name = huge.clone();
    assert_short(&k.model_infer(infer).await.unwrap_err(), Code::InvalidArgument);
    let meta = kpb::ModelMetadataRequest { name: "breast-cancer".into(), version: huge.clone() };
    assert_short(&k.model_metadata(meta).await.unwrap_err(), Code::NotFound);

    // A long shape is shown by its first few dimensions.
    let mut req = request("breast-cancer", &rows(1));
    req.inputs[0].shape = vec![1; 60];
    req.inputs[0].shape[59] = -1;
    let e = c.predict(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().len() < 256 && e.message().contains(", …] (60 dims)"), "{}", head(e.message()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_empty_structures_are_refused_before_they_are_decoded() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::serve(repo.path(), &["--no-watch", "--threads", "1"]);
    let mut c = gw.client().await;
    let mut k = kserve(gw.channel().await);
    c.predict(request("breast-cancer", &rows(1))).await.unwrap();
    let before = gw.memory();
    let reset = gw.reset_peak();
    let cpu = gw.cpu_ms();

    // 8 MiB of empty tensors: 4M x 232 bytes once decoded (16 MiB of them
    // peaked at 1.9 GB before the fix).
    let mut req = request("breast-cancer", &rows(1));
    req.inputs = vec![pb::Tensor::default(); 4 << 20];
    let e = c.predict(req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "request has more than 1024 inputs"));
    // 8 MiB of empty output names (16 MiB peaked at 225 MB).
    let mut req = request("breast-cancer", &rows(1));
    req.output_names = vec![String::new(); 4 << 20];
    let e = c.predict(req).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "request has more than 1024 output names"));
    // A shape of 8M zero dimensions and no data (16M peaked at 160 MB).
    let mut req = request("breast-cancer", &rows(1));
    req.inputs[0].shape = vec![0; 8 << 20];
    req.inputs[0].raw = Default::default();
    let e = c.predict(req).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "a tensor's shape has more than 64 dimensions")
    );
    // KServe: empty inputs, raw contents and requested outputs.
    let mut infer = kserve_request(&rows(1), &[]);
    infer.inputs = vec![Default::default(); 4 << 20];
    assert_eq!(k.model_infer(infer).await.unwrap_err().message(), "request has more than 1024 inputs");
    let mut infer = kserve_request(&rows(1), &[]);
    infer.raw_input_contents = vec![Default::default(); 4 << 20];
    assert_eq!(
        k.model_infer(infer).await.unwrap_err().message(),
        "request has more than 1024 raw_input_contents"
    );
    let mut infer = kserve_request(&rows(1), &[]);
    infer.outputs = vec![Default::default(); 4 << 20];
    assert_eq!(k.model_infer(infer).await.unwrap_err().message(), "request has more than 1024 outputs");

    // Ordinary requests still pass.
    assert!(c.predict(request("breast-cancer", &rows(3))).await.is_ok());
    assert!(k.model_infer(kserve_request(&rows(3), &[])).await.is_ok());
    let after = gw.memory();
    let (rss, peak) = growth(before, after);
    eprintln!(
        "repeated structures: RSS {before:?} -> {after:?}; growth {rss} KiB, peak growth {peak} KiB (peak reset: {reset}); server CPU {} ms",
        gw.cpu_ms() - cpu
    );
    assert!(rss < 50 * MIB as i64, "RSS grew {rss} KiB");
    if reset {
        assert!(peak < 100 * MIB as i64, "peak grew {peak} KiB");
    }
}

/// The INVALID_ARGUMENT refusals of breast-cancer counted before routing.
async fn refused_at_the_edge(server: &modelgate::RunningServer) -> f64 {
    let (_, metrics) = http_get(server.metrics_addr.expect("a metrics listener"), "/metrics").await;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("modelgate_requests_total{")
                && l.contains("model=\"breast-cancer\"")
                && l.contains("version=\"\"")
                && l.contains("code=\"INVALID_ARGUMENT\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Predict and KServe share one edge (api/inference.rs): an unknown model
/// is the same NOT_FOUND text on every call of both, with an empty
/// repository too ("none"; KServe's and Predict's ModelMetadata used to say
/// "models served: " with nothing after it), and a request refused while
/// decoding is counted alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_and_kserve_share_the_edge() {
    async fn not_found_texts(server: &modelgate::RunningServer) -> Vec<String> {
        let mut c = client(server).await;
        let mut k = kserve(channel_to(server.addr).await);
        let mut infer = kserve_request(&rows(1), &[]);
        infer.model_name = "nope".into();
        let answers = [
            c.predict(request("nope", &rows(1))).await.map(|_| ()),
            c.model_metadata(pb::ModelMetadataRequest { model: "nope".into() }).await.map(|_| ()),
            k.model_infer(infer).await.map(|_| ()),
            k.model_metadata(kpb::ModelMetadataRequest { name: "nope".into(), version: String::new() })
                .await
                .map(|_| ()),
        ];
        answers
            .into_iter()
            .map(|a| {
                let e = a.unwrap_err();
                assert_eq!(e.code(), Code::NotFound, "{}", e.message());
                e.message().to_string()
            })
            .collect()
    }

    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let texts = not_found_texts(&server).await;
    assert!(texts.iter().all(|t| t == "model 'nope' not found; models served: breast-cancer"), "{texts:?}");

    let before = refused_at_the_edge(&server).await;
    let mut c = client(&server).await;
    let mut req = request("breast-cancer", &rows(1));
    req.request_id = "r".repeat(300);
    let e = c.predict(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut k = kserve(channel_to(server.addr).await);
    let mut infer = kserve_request(&rows(1), &[]);
    infer.id = "r".repeat(300);
    let k_e = k.model_infer(infer).await.unwrap_err();
    assert_eq!(k_e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), k_e.message());
    assert_eq!(refused_at_the_edge(&server).await, before + 2.0);
    server.stop().await.unwrap();

    let empty = TestRepo::new();
    let server = start(&empty, |_| {}).await;
    let texts = not_found_texts(&server).await;
    assert!(texts.iter().all(|t| t == "model 'nope' not found; models served: none"), "{texts:?}");
    server.stop().await.unwrap();
}
