//! The floor server (benches/src/bin/floor_server.rs) answers the bundled
//! models like the gateway does, in everything the wire carries but the
//! values: same output names, dtypes and shapes, responses of the same
//! encoded size, over Predict and KServe v2; and the load generator drives
//! both servers over both protocols without an error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use modelgate_proto::inference as kpb;
use modelgate_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use prost::Message;
use tonic::transport::Channel;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/repository")
}

/// A floor server process, killed when dropped.
struct FloorProcess {
    child: Child,
    addr: String,
}

impl Drop for FloorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the floor server and waits (up to 120 s: it loads the models
/// first) for the line naming its address.
fn start_floor() -> FloorProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floor_server"))
        .arg("--models")
        .arg(repository())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start floor_server");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("floor ready: Predict (modelgate.v1) on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(120)).expect("floor_server printed its address");
    FloorProcess { child, addr }
}

async fn gateway(state: &Path) -> modelgate::RunningServer {
    let mut config = modelgate::ServeConfig::new(repository());
    config.state_dir = state.to_path_buf();
    config.shadow_dir = state.join("shadow");
    config.watch = false;
    config.metrics_listen = None;
    modelgate::start(config).await.expect("gateway starts")
}

async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect")
}

/// One breast-cancer row of 30 features, as the load generator sends it.
fn row() -> Vec<u8> {
    modelgate_benches::features(1, 30).iter().flat_map(|x| x.to_le_bytes()).collect()
}

async fn predict(addr: &str) -> pb::PredictResponse {
    let mut c = PredictClient::new(channel(addr).await);
    let input = pb::Tensor {
        name: "input".into(),
        dtype: pb::DataType::Float32 as i32,
        shape: vec![1, 30],
        raw: row().into(),
        ..Default::default()
    };
    let req = pb::PredictRequest { model: "breast-cancer".into(), inputs: vec![input], ..Default::default() };
    c.predict(req).await.expect("Predict answers").into_inner()
}

async fn model_infer(addr: &str) -> kpb::ModelInferResponse {
    let mut c = GrpcInferenceServiceClient::new(channel(addr).await);
    let req = kpb::ModelInferRequest {
        model_name: "breast-cancer".into(),
        inputs: vec![kpb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 30],
            ..Default::default()
        }],
        raw_input_contents: vec![row().into()],
        ..Default::default()
    };
    c.model_infer(req).await.expect("ModelInfer answers").into_inner()
}

/// Runs the release-or-debug load generator built beside the floor server
/// for a moment and returns its JSON line.
fn loadgen(addr: &str, protocol: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--addr", addr, "--protocol", protocol, "--concurrency", "2", "--connections", "2"])
        .args(["--warmup", "0", "--duration", "0.5", "--max-requests", "200", "--label", "t"])
        .output()
        .expect("run loadgen");
    assert!(out.status.success(), "loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_answers_like_the_gateway_in_everything_but_the_values() {
    let state = tempfile::tempdir().unwrap();
    let gw = gateway(state.path()).await;
    let floor = start_floor();
    let gw_addr = gw.addr.to_string();

    let (g, f) = (predict(&gw_addr).await, predict(&floor.addr).await);
    assert!(!g.outputs.is_empty(), "the gateway answers with outputs");
    let layout = |r: &pb::PredictResponse| -> Vec<(String, i32, Vec<i64>, usize)> {
        r.outputs.iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.raw.len())).collect()
    };
    assert_eq!(layout(&f), layout(&g), "Predict outputs: names, dtypes, shapes, sizes");
    assert_eq!((f.model.as_str(), f.version, f.role), (g.model.as_str(), g.version, g.role));
    assert_eq!(f.encoded_len(), g.encoded_len(), "Predict responses are the same size on the wire");

    let (g, f) = (model_infer(&gw_addr).await, model_infer(&floor.addr).await);
    assert!(!g.outputs.is_empty(), "the gateway answers with outputs");
    let layout = |r: &kpb::ModelInferResponse| -> Vec<(String, String, Vec<i64>, usize)> {
        r.outputs
            .iter()
            .zip(&r.raw_output_contents)
            .map(|(t, raw)| (t.name.clone(), t.datatype.clone(), t.shape.clone(), raw.len()))
            .collect()
    };
    assert_eq!(layout(&f), layout(&g), "ModelInfer outputs: names, datatypes, shapes, sizes");
    assert_eq!(f.model_version, g.model_version);
    assert_eq!(f.parameters, g.parameters, "version and role parameters");
    assert_eq!(f.encoded_len(), g.encoded_len(), "ModelInfer responses are the same size on the wire");

    for addr in [&gw_addr, &floor.addr] {
        for protocol in ["predict", "kserve"] {
            let line = loadgen(addr, protocol);
            assert_eq!(line["protocol"], protocol, "{line}");
            assert_eq!(line["errors"], 0, "{addr} {protocol}: {line}");
            assert!(line["requests"].as_u64().unwrap() > 0, "{addr} {protocol}: {line}");
        }
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn the_floor_names_what_it_does_not_serve() {
    let floor = start_floor();
    let mut c = PredictClient::new(channel(&floor.addr).await);
    let e = c
        .predict(pb::PredictRequest { model: "no-such-model".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("no-such-model"), "{}", e.message());
    let e = c
        .predict(pb::PredictRequest {
            model: "breast-cancer".into(),
            version: Some(99),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("99"), "{}", e.message());

    let mut k = GrpcInferenceServiceClient::new(channel(&floor.addr).await);
    let e = k
        .model_infer(kpb::ModelInferRequest {
            model_name: "breast-cancer".into(),
            model_version: "latest".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("latest"), "{}", e.message());
    let e = k.repository_index(kpb::RepositoryIndexRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("RepositoryIndex"), "{}", e.message());
}
