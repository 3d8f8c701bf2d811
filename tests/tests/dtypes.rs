//! FLOAT16, BFLOAT16, INT16, UINT16, UINT32 and UINT64 tensors are served
//! like the others, on Predict and on KServe ModelInfer, raw and typed,
//! against golden outputs of one committed model per type (models/dtypes/,
//! golden/dtypes.json; see models/README.md). Comparisons are bit for bit:
//! -0.0, subnormals and each type's extremes are in the golden inputs.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use modelgate_proto::inference as kpb;
use modelgate_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_proto::v1 as pb;
use modelgate_runtime::half::{bf16, f16};
use modelgate_runtime::{DataType, TensorData};
use modelgate_tests::*;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

/// One model's golden vectors.
struct Case {
    model: String,
    dtype: DataType,
    shape: Vec<i64>,
    x: TensorData,
    y: TensorData,
    echo: TensorData,
}

fn dtype_named(name: &str) -> DataType {
    [
        DataType::Float16,
        DataType::Bfloat16,
        DataType::Int16,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
    ]
    .into_iter()
    .find(|d| d.as_str() == name)
    .unwrap_or_else(|| panic!("golden dtype {name}"))
}

/// The golden numbers as elements of `dtype`: the 16-bit floats are exact
/// doubles in the file, the integers exact integers.
fn elements(dtype: DataType, t: &Value) -> TensorData {
    let nums = t["data"].as_array().unwrap();
    let f = || nums.iter().map(|n| n.as_f64().unwrap());
    let i = || nums.iter().map(|n| n.as_i64().unwrap());
    match dtype {
        DataType::Float16 => TensorData::Float16(f().map(f16::from_f64).collect()),
        DataType::Bfloat16 => TensorData::Bfloat16(f().map(bf16::from_f64).collect()),
        DataType::Int16 => TensorData::Int16(i().map(|v| i16::try_from(v).unwrap()).collect()),
        DataType::Uint16 => TensorData::Uint16(i().map(|v| u16::try_from(v).unwrap()).collect()),
        DataType::Uint32 => TensorData::Uint32(i().map(|v| u32::try_from(v).unwrap()).collect()),
        DataType::Uint64 => TensorData::Uint64(nums.iter().map(|n| n.as_u64().unwrap()).collect()),
        other => panic!("no golden model for {other}"),
    }
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(model_file("golden/dtypes.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases: Vec<Case> = doc
        .as_object()
        .unwrap()
        .iter()
        .map(|(model, g)| {
            let x = &g["inputs"]["x"];
            let dtype = dtype_named(x["dtype"].as_str().unwrap());
            Case {
                model: model.clone(),
                dtype,
                shape: x["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect(),
                x: elements(dtype, x),
                y: elements(dtype, &g["outputs"]["y"]),
                echo: elements(dtype, &g["outputs"]["echo"]),
            }
        })
        .collect();
    assert_eq!(cases.len(), 6, "one golden model per dtype");
    cases
}

/// Every dtype's model, as version 1 of the model of its golden name.
fn repo() -> TestRepo {
    let repo = TestRepo::new();
    for c in cases() {
        repo.add(&c.model, 1, &format!("dtypes/{}.onnx", c.model));
    }
    repo
}

fn kserve(channel: Channel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel)
}

/// Each dtype's names: modelgate.v1's enum and KServe's datatype.
fn names(dtype: DataType) -> (pb::DataType, &'static str) {
    match dtype {
        DataType::Float16 => (pb::DataType::Float16, "FP16"),
        DataType::Bfloat16 => (pb::DataType::Bfloat16, "BF16"),
        DataType::Int16 => (pb::DataType::Int16, "INT16"),
        DataType::Uint16 => (pb::DataType::Uint16, "UINT16"),
        DataType::Uint32 => (pb::DataType::Uint32, "UINT32"),
        DataType::Uint64 => (pb::DataType::Uint64, "UINT64"),
        other => panic!("no golden model for {other}"),
    }
}

fn pb_dtype(dtype: DataType) -> i32 {
    names(dtype).0 as i32
}

fn kserve_name(dtype: DataType) -> &'static str {
    names(dtype).1
}

/// Bit-for-bit equality of two tensors' elements (IEEE equality would let
/// -0.0 pass for 0.0 and fail every NaN).
fn assert_same(what: &str, got: &TensorData, want: &TensorData) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_eq!(got.to_raw(), want.to_raw(), "{what}: {:?} != {:?}", got.owned(), want);
}

/// The golden input in the typed Predict field of its dtype.
fn typed_predict_input(c: &Case) -> pb::Tensor {
    let mut t = pb::Tensor {
        name: "x".into(),
        dtype: pb_dtype(c.dtype),
        shape: c.shape.clone(),
        ..Default::default()
    };
    match &c.x {
        TensorData::Float16(v) => t.float_data = v.iter().map(|&x| f32::from(x)).collect(),
        TensorData::Bfloat16(v) => t.float_data = v.iter().map(|&x| f32::from(x)).collect(),
        TensorData::Int16(v) => t.int_data = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::Uint16(v) => t.int_data = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::Uint32(v) => t.uint64_data = v.iter().map(|&x| u64::from(x)).collect(),
        TensorData::Uint64(v) => t.uint64_data = v.clone(),
        other => panic!("{other:?}"),
    }
    t
}

fn raw_predict_input(c: &Case) -> pb::Tensor {
    pb::Tensor {
        name: "x".into(),
        dtype: pb_dtype(c.dtype),
        shape: c.shape.clone(),
        raw: c.x.to_raw().into(),
        ..Default::default()
    }
}

fn predict(model: &str, input: pb::Tensor, typed_outputs: bool) -> pb::PredictRequest {
    pb::PredictRequest { model: model.into(), inputs: vec![input], typed_outputs, ..Default::default() }
}

fn kserve_request(model: &str, input: kpb::model_infer_request::InferInputTensor) -> kpb::ModelInferRequest {
    kpb::ModelInferRequest { model_name: model.into(), inputs: vec![input], ..Default::default() }
}

fn kserve_input(c: &Case, datatype: &str) -> kpb::model_infer_request::InferInputTensor {
    kpb::model_infer_request::InferInputTensor {
        name: "x".into(),
        datatype: datatype.into(),
        shape: c.shape.clone(),
        ..Default::default()
    }
}

/// The golden input in KServe's typed contents, for the dtypes the protocol
/// has a field for (FP16 and BF16 have none).
fn typed_kserve_contents(c: &Case) -> Option<kpb::InferTensorContents> {
    let mut contents = kpb::InferTensorContents::default();
    match &c.x {
        TensorData::Int16(v) => contents.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::Uint16(v) => contents.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::Uint32(v) => contents.uint_contents = v.clone(),
        TensorData::Uint64(v) => contents.uint64_contents = v.clone(),
        _ => return None,
    }
    Some(contents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dtype_serves_its_golden_outputs_on_predict_raw_and_typed() {
    let repo = repo();
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    for case in cases() {
        let meta = c
            .model_metadata(pb::ModelMetadataRequest { model: case.model.clone() })
            .await
            .unwrap()
            .into_inner();
        let v = &meta.versions[0];
        let want = pb_dtype(case.dtype);
        for t in v.inputs.iter().chain(&v.outputs) {
            assert_eq!(t.dtype, want, "{}: metadata of {}", case.model, t.name);
        }
        let requests = [
            ("raw in, raw out", raw_predict_input(&case), false),
            ("raw in, typed out", raw_predict_input(&case), true),
            ("typed in, raw out", typed_predict_input(&case), false),
            ("typed in, typed out", typed_predict_input(&case), true),
        ];
        for (how, input, typed) in requests {
            let resp = c.predict(predict(&case.model, input, typed)).await.unwrap().into_inner();
            for (name, want) in [("y", &case.y), ("echo", &case.echo)] {
                let t = resp.outputs.iter().find(|t| t.name == name).unwrap();
                assert_eq!(t.dtype, pb_dtype(case.dtype));
                assert_eq!(t.shape, case.shape, "{}: {how}: {name} shape", case.model);
                // Typed outputs are in the field the proto names for the dtype.
                assert_eq!(t.raw.is_empty(), typed, "{}: {how}: {name} raw or typed", case.model);
                let got = output(&resp, name);
                assert_same(&format!("{} predict {how}: {name}", case.model), &got.data, want);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dtype_serves_its_golden_outputs_on_kserve_raw_and_typed() {
    let repo = repo();
    let server = start(&repo, |_| {}).await;
    let mut k = kserve(channel_to(server.addr).await);
    for case in cases() {
        let name = kserve_name(case.dtype);
        let meta = k
            .model_metadata(kpb::ModelMetadataRequest { name: case.model.clone(), version: String::new() })
            .await
            .unwrap()
            .into_inner();
        for t in meta.inputs.iter().chain(&meta.outputs) {
            assert_eq!(t.datatype, name, "{}: metadata of {}", case.model, t.name);
        }
        let mut raw = kserve_request(&case.model, kserve_input(&case, name));
        raw.raw_input_contents = vec![case.x.to_raw().into()];
        let mut requests = vec![("raw", raw)];
        if let Some(contents) = typed_kserve_contents(&case) {
            let mut input = kserve_input(&case, name);
            input.contents = Some(contents);
            requests.push(("typed", kserve_request(&case.model, input)));
        }
        assert_eq!(requests.len(), if case.dtype.is_float() { 1 } else { 2 }, "{}", case.model);
        for (how, req) in requests {
            let resp = k.model_infer(req).await.unwrap().into_inner();
            assert_eq!(resp.raw_output_contents.len(), resp.outputs.len());
            for (out, raw) in resp.outputs.iter().zip(&resp.raw_output_contents) {
                assert_eq!(out.datatype, name, "{}: {how}: {}", case.model, out.name);
                assert_eq!(out.shape, case.shape);
                let want = match out.name.as_str() {
                    "y" => &case.y,
                    "echo" => &case.echo,
                    other => panic!("unexpected output {other}"),
                };
                let got = TensorData::from_raw(case.dtype, raw, want.len()).unwrap();
                assert_same(&format!("{} kserve {how}: {}", case.model, out.name), &got, want);
            }
        }
    }
}

/// The status of a call that must fail with INVALID_ARGUMENT.
fn invalid<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> String {
    let status = r.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    status.message().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_lengths_and_out_of_range_values_are_invalid_argument_naming_the_input() {
    let repo = repo();
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    let mut k = kserve(channel_to(server.addr).await);
    for case in cases() {
        // A raw buffer one byte short, on both protocols.
        let size = case.dtype.element_size().unwrap();
        let (got, expected) = (12 * size - 1, 12 * size);
        let want = format!(
            "input 'x': raw contents are {got} bytes, expected {expected} (12 {} elements)",
            case.dtype
        );
        let mut input = raw_predict_input(&case);
        input.raw = input.raw.slice(1..);
        let m = invalid(&case.model, c.predict(predict(&case.model, input, false)).await);
        assert_eq!(m, want, "{} predict", case.model);
        let mut req = kserve_request(&case.model, kserve_input(&case, kserve_name(case.dtype)));
        req.raw_input_contents = vec![case.x.to_raw()[1..].to_vec().into()];
        let m = invalid(&case.model, k.model_infer(req).await);
        assert!(m.starts_with("input 'x': raw contents are"), "{} kserve: {m}", case.model);
        assert!(m.contains(&format!("{got} bytes, expected {expected}")), "{} kserve: {m}", case.model);
    }

    // Typed Predict values the dtype cannot hold.
    let typed = |dtype: pb::DataType, fill: &dyn Fn(&mut pb::Tensor)| {
        let mut t =
            pb::Tensor { name: "x".into(), dtype: dtype as i32, shape: vec![1, 4], ..Default::default() };
        fill(&mut t);
        t
    };
    let out_of_range = [
        (
            "fp16",
            typed(pb::DataType::Float16, &|t| t.float_data = vec![70000.0, 0.0, 0.0, 0.0]),
            "input 'x': element 0 (70000) is out of FLOAT16's range (±65504)",
        ),
        (
            "bf16",
            typed(pb::DataType::Bfloat16, &|t| t.float_data = vec![0.0, f32::MAX, 0.0, 0.0]),
            "input 'x': element 1 (3.4028235e38) is out of BFLOAT16's range (±3.3895314e38)",
        ),
        (
            "int16",
            typed(pb::DataType::Int16, &|t| t.int_data = vec![0, 0, 40000, 0]),
            "input 'x': element 2 (40000) does not fit INT16",
        ),
        (
            "uint16",
            typed(pb::DataType::Uint16, &|t| t.int_data = vec![-1, 0, 0, 0]),
            "input 'x': element 0 (-1) does not fit UINT16",
        ),
        (
            "uint32",
            typed(pb::DataType::Uint32, &|t| t.uint64_data = vec![0, 0, 0, 1 << 32]),
            "input 'x': element 3 (4294967296) does not fit UINT32",
        ),
        (
            "uint64",
            typed(pb::DataType::Uint64, &|t| t.int64_data = vec![1, 2, 3, 4]),
            "input 'x': dtype is UINT64 but elements are in int64_data; use uint64_data or raw",
        ),
    ];
    for (model, input, want) in out_of_range {
        let m = invalid(model, c.predict(predict(model, input, false)).await);
        assert_eq!(m, want, "{model}");
    }

    // KServe typed contents the dtype cannot hold, FP16/BF16 typed, a wrong datatype.
    let cases = cases();
    let case = |model: &str| cases.iter().find(|c| c.model == model).unwrap();
    let with = |model: &str, datatype: &str, contents: kpb::InferTensorContents| {
        let mut input = kserve_input(case(model), datatype);
        input.shape = vec![1, 4];
        input.contents = Some(contents);
        kserve_request(model, input)
    };
    let kserve_mistakes = [
        (
            with(
                "int16",
                "INT16",
                kpb::InferTensorContents { int_contents: vec![0, -40000, 0, 0], ..Default::default() },
            ),
            "input 'x': element 1 (-40000) does not fit INT16",
        ),
        (
            with(
                "uint16",
                "UINT16",
                kpb::InferTensorContents { uint_contents: vec![0, 0, 65536, 0], ..Default::default() },
            ),
            "input 'x': element 2 (65536) does not fit UINT16",
        ),
        (
            with(
                "fp16",
                "FP16",
                kpb::InferTensorContents { fp32_contents: vec![0.5; 4], ..Default::default() },
            ),
            "input 'x': FP16 has no typed contents field in KServe v2; send its elements in raw_input_contents \
             (2 little-endian bytes each)",
        ),
        (
            with("bf16", "BF16", kpb::InferTensorContents::default()),
            "input 'x': BF16 has no typed contents field in KServe v2; send its elements in raw_input_contents \
             (2 little-endian bytes each)",
        ),
        (
            with(
                "uint64",
                "UINT64",
                kpb::InferTensorContents { uint_contents: vec![1; 4], ..Default::default() },
            ),
            "input 'x': datatype is UINT64 but elements are in uint_contents; use uint64_contents or raw_input_contents",
        ),
    ];
    for (req, want) in kserve_mistakes {
        let model = req.model_name.clone();
        let m = invalid(&model, k.model_infer(req).await);
        assert_eq!(m, want, "{model}");
    }
    let mut req = kserve_request("bf16", kserve_input(case("bf16"), "FP16"));
    req.raw_input_contents = vec![case("fp16").x.to_raw().into()];
    let m = invalid("FP16 to bf16", k.model_infer(req).await);
    assert!(m.contains("input 'x' has datatype FP16, expected BF16"), "{m}");
}

/// The sum of `metric`'s samples for `model` (0 while it has none).
async fn counter(server: &modelgate::RunningServer, metric: &str, model: &str) -> f64 {
    let (status, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && s.labels.get("model") == Some(model))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric} is {other:?}"),
        })
        .sum()
}

/// Polls until `metric` for `model` reaches `want` (metrics are recorded as
/// the response leaves; a busy machine may scrape first).
async fn wait_for_counter(server: &modelgate::RunningServer, metric: &str, model: &str, want: f64) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let got = counter(server, metric, model).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < until, "{metric}{{model={model}}} is {got}, waited for {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bit_nan_and_inf_outputs_are_counted_and_integers_never_are() {
    let repo = repo();
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    const NAN: &str = "modelgate_nan_inf_outputs_total";
    const REQUESTS: &str = "modelgate_requests_total";
    let cases = cases();
    // The golden inputs are finite: nothing is counted.
    for case in &cases {
        c.predict(predict(&case.model, raw_predict_input(case), false)).await.unwrap();
        wait_for_counter(&server, REQUESTS, &case.model, 1.0).await;
        assert_eq!(counter(&server, NAN, &case.model).await, 0.0, "{}", case.model);
    }
    // A NaN FP16 and an infinite BF16 element come back in `echo`.
    let with = |data: TensorData| pb::Tensor {
        name: "x".into(),
        dtype: pb_dtype(data.dtype()),
        shape: vec![1, 4],
        raw: data.to_raw().into(),
        ..Default::default()
    };
    let nan = TensorData::Float16(vec![f16::ONE, f16::NAN, f16::ZERO, f16::ONE]);
    let resp = c.predict(predict("fp16", with(nan), false)).await.unwrap().into_inner();
    let TensorData::Float16(echo) = output(&resp, "echo").data else { panic!("fp16 echo") };
    assert!(echo[1].is_nan());
    let inf = TensorData::Bfloat16(vec![bf16::NEG_INFINITY, bf16::ONE, bf16::ONE, bf16::ONE]);
    c.predict(predict("bf16", with(inf), false)).await.unwrap();
    wait_for_counter(&server, NAN, "fp16", 1.0).await;
    wait_for_counter(&server, NAN, "bf16", 1.0).await;
    // The largest unsigned values are numbers, not infinities.
    let max = TensorData::Uint64(vec![u64::MAX; 4]);
    c.predict(predict("uint64", with(max), false)).await.unwrap();
    wait_for_counter(&server, REQUESTS, "uint64", 2.0).await;
    assert_eq!(counter(&server, NAN, "uint64").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_sends_and_reads_every_dtype_with_numpy_types() {
    let python =
        tokio::task::spawn_blocking(|| python::venv("tritonclient", "requirements.txt")).await.unwrap();
    let repo = repo();
    let server = start(&repo, |_| {}).await;
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/python/dtypes_client.py"))
        .arg(server.addr.to_string())
        .arg(model_file("golden/dtypes.json"));
    let out =
        tokio::task::spawn_blocking(move || python::run_bounded(cmd, Duration::from_secs(60))).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Triton client's checks failed ({}):\n{stderr}", out.status);
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    for case in cases() {
        let name = kserve_name(case.dtype);
        assert_eq!(seen[&case.model], serde_json::json!({"y": name, "echo": name}), "{}", case.model);
    }
    assert_eq!(seen["wrong_datatype"][0], "StatusCode.INVALID_ARGUMENT");
    let message = seen["wrong_datatype"][1].as_str().unwrap();
    assert!(message.contains("datatype FP16, expected BF16"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_predicts_with_sixteen_bit_floats_and_the_largest_unsigned_values() {
    let repo = repo();
    let server = start(&repo, |_| {}).await;
    let addr = server.addr.to_string();
    let run = |model: &'static str, input: &'static str| {
        let mut cmd = Command::new(binary());
        cmd.args(["predict", "--addr", &addr, "--model", model, "--json", "--input", input]);
        tokio::task::spawn_blocking(move || python::run_bounded(cmd, Duration::from_secs(60)))
    };
    let json = |out: std::process::Output| -> Value {
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let fp16 = json(run("fp16", "[[0.5, 1000, 65504, -2.25]]").await.unwrap());
    assert_eq!(fp16["outputs"]["y"], serde_json::json!([[1.25, 501.0, 32752.0, -0.125]]), "{fp16}");
    let uint64 = json(run("uint64", "[[18446744073709551615, 0, 9223372036854775807, 7]]").await.unwrap());
    assert_eq!(uint64["outputs"]["y"], serde_json::json!([[u64::MAX, 1u64, u64::MAX, 15u64]]), "{uint64}");
    // A value the dtype cannot hold is refused before anything is sent.
    let out = run("fp16", "[[1, 2, 3, 70000]]").await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("input 'x': element 3 (70000) is out of FLOAT16's range (±65504)"), "{stderr}");
}

/// One row of a golden tensor, as its own tensor.
fn row(data: &TensorData, r: usize) -> TensorData {
    let raw = data.to_raw();
    let width = raw.len() / 3;
    TensorData::from_raw(data.dtype(), &raw[r * width..(r + 1) * width], 4).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_rows_come_back_to_their_requests_and_shadows_compare_floats_and_labels() {
    let repo = TestRepo::new();
    let cases = cases();
    for c in &cases {
        let file = format!("dtypes/{}.onnx", c.model);
        repo.add(&c.model, 1, &file)
            .add(&c.model, 2, &file)
            .config(&c.model, "max_batch = 16\nmax_queue_delay_us = 20000\nqueue_capacity = 256\n");
    }
    // One inference thread, so concurrent requests queue up and are batched.
    let server = start(&repo, |c| {
        c.threads = 1;
        c.shadow_queue = 1000;
    })
    .await;
    let mut a = admin(&server, None).await;
    for c in &cases {
        // v2 is the champion; v1 (the same graph) shadows it.
        let plan = pb::StartRolloutRequest {
            model: c.model.clone(),
            plan: Some(pb::start_rollout_request::Plan::Shadow(pb::ShadowPlan {
                versions: vec![1],
                fraction_percent: Some(100.0),
            })),
            reason: "dtypes".into(),
            triggers: None,
        };
        a.start_rollout(plan).await.unwrap();
    }
    const PER_MODEL: usize = 12;
    let mut tasks = Vec::new();
    for c in &cases {
        for i in 0..PER_MODEL {
            let mut client = client(&server).await;
            let (model, r) = (c.model.clone(), i % 3);
            let input = pb::Tensor {
                name: "x".into(),
                dtype: pb_dtype(c.dtype),
                shape: vec![1, 4],
                raw: row(&c.x, r).to_raw().into(),
                ..Default::default()
            };
            tasks.push(tokio::spawn(async move {
                let resp = client.predict(predict(&model, input, false)).await.unwrap().into_inner();
                (model, r, resp)
            }));
        }
    }
    for t in tasks {
        let (model, r, resp) = t.await.unwrap();
        let c = cases.iter().find(|c| c.model == model).unwrap();
        assert_eq!(resp.version, 2, "{model}: the champion serves");
        assert_same(&format!("{model} row {r}: y"), &output(&resp, "y").data, &row(&c.y, r));
        assert_same(&format!("{model} row {r}: echo"), &output(&resp, "echo").data, &row(&c.x, r));
    }
    // The champions' batch histograms: every row counted, in fewer runs.
    let (status, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    let champion_sum = |metric: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(metric) && l.contains("version=\"2\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let requests = (PER_MODEL * cases.len()) as f64;
    assert_eq!(champion_sum("modelgate_batch_size_rows_sum"), requests);
    let runs = champion_sum("modelgate_batch_size_rows_count");
    assert!(runs < requests, "{runs} runs for {requests} requests: no request was batched with another");
    let stats = std::sync::Arc::clone(server.gateway.shadow_stats());
    let until = Instant::now() + Duration::from_secs(120);
    for c in &cases {
        while stats.get(&c.model, 1).is_none_or(|t| (t.compared as usize) < PER_MODEL) {
            assert!(Instant::now() < until, "{}: shadow comparisons", c.model);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = stats.get(&c.model, 1).unwrap();
        assert_eq!((t.compared as usize, t.errors, t.dropped), (PER_MODEL, 0, 0), "{}", c.model);
        if c.dtype.is_float() {
            // Compared as numbers: identical graphs differ by nothing.
            assert_eq!((t.mean_abs_diff(), t.agreement_rate()), (Some(0.0), None), "{}", c.model);
        } else {
            // Compared as labels: they all agree.
            assert_eq!((t.mean_abs_diff(), t.agreement_rate()), (None, Some(1.0)), "{}", c.model);
        }
        assert_eq!(t.shadow_nan_inf, 0, "{}", c.model);
    }
    // A NaN in FP16 is seen in the shadow's outputs as well.
    let nan = TensorData::Float16(vec![f16::NAN, f16::ONE, f16::ONE, f16::ONE]);
    let input = pb::Tensor {
        name: "x".into(),
        dtype: pb_dtype(DataType::Float16),
        shape: vec![1, 4],
        raw: nan.to_raw().into(),
        ..Default::default()
    };
    client(&server).await.predict(predict("fp16", input, false)).await.unwrap();
    while stats.get("fp16", 1).is_none_or(|t| (t.compared as usize) < PER_MODEL + 1) {
        assert!(Instant::now() < until, "fp16: the NaN request's comparison");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stats.get("fp16", 1).unwrap().shadow_nan_inf > 0);
    server.stop().await.unwrap();
}
