//! Test support: temporary model repositories built from the committed
//! models, an in-process gateway on an ephemeral loopback port, a client, the
//! golden vectors, and the path of the built binary for process tests.

pub mod azurite;
pub mod fleet;
pub mod gcs;
pub mod kafka;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod python;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use modelgate::{RunningServer, ServeConfig};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_client::PredictClient;
use serde_json::Value;
use tonic::transport::Channel;

/// A loopback port that is free now. Another process can take it before the
/// server meant for it binds it (an outgoing connection's ephemeral port
/// comes from the same range), so whatever starts a server on one waits for
/// the server's exit as well as for it to be ready, and starts it again on a
/// new port when it exits.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback address where connections are refused, and stay refused for
/// as long as this lives: a socket bound to the port that never listens
/// holds it, so no server another test starts can take it (a port merely
/// freed can be).
pub struct ClosedPort {
    pub addr: std::net::SocketAddr,
    _holder: socket2::Socket,
}

pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("bind a loopback port");
    let addr = socket.local_addr().ok().and_then(|a| a.as_socket()).expect("the bound address");
    ClosedPort { addr, _holder: socket }
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A committed model file, e.g. `repository/breast-cancer/1/model.onnx` or `faults/nan.onnx`.
pub fn model_file(rel: &str) -> PathBuf {
    root().join("models").join(rel)
}

pub const V1: &str = "repository/breast-cancer/1/model.onnx";
pub const V2: &str = "repository/breast-cancer/2/model.onnx";
pub const NAN: &str = "faults/nan.onnx";
pub const SLOW: &str = "faults/slow.onnx";
pub const FAIL: &str = "faults/fail.onnx";
pub const OTHER: &str = "faults/other_signature.onnx";
pub const CORRUPT: &str = "faults/corrupt.onnx";

/// A model repository in a temporary folder.
pub struct TestRepo {
    dir: tempfile::TempDir,
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRepo {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies a committed model in as `<model>/<version>/model.onnx`.
    pub fn add(&self, model: &str, version: u64, source: &str) -> &Self {
        let dir = self.dir.path().join(model).join(version.to_string());
        std::fs::create_dir_all(&dir).expect("create version dir");
        std::fs::copy(model_file(source), dir.join("model.onnx")).expect("copy model");
        self
    }

    /// Writes `<model>/model.toml`.
    pub fn config(&self, model: &str, text: &str) -> &Self {
        let dir = self.dir.path().join(model);
        std::fs::create_dir_all(&dir).expect("create model dir");
        std::fs::write(dir.join("model.toml"), text).expect("write model.toml");
        self
    }

    /// The usual repository: breast-cancer v1 and v2.
    pub fn breast_cancer() -> Self {
        let repo = Self::new();
        repo.add("breast-cancer", 1, V1).add("breast-cancer", 2, V2);
        repo
    }
}

/// Starts a gateway on 127.0.0.1:0 serving `repo`, with `tweak` applied to the config.
pub async fn start(repo: &TestRepo, tweak: impl FnOnce(&mut ServeConfig)) -> RunningServer {
    let mut config = ServeConfig::new(repo.path());
    config.drain = Duration::from_secs(5);
    // Hidden: the repository watcher never scans it.
    config.state_dir = repo.path().join(".state");
    config.shadow_dir = config.state_dir.join("shadow");
    // Tests that count comparisons exactly must not have copies skipped by
    // the CPU budget (debug builds spend far more CPU per comparison); the
    // budget's own test sets one.
    config.shadow_cpu_cores = None;
    tweak(&mut config);
    modelgate::start(config).await.expect("gateway starts")
}

pub async fn client(server: &RunningServer) -> PredictClient<Channel> {
    PredictClient::new(channel_to(server.addr).await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// A plaintext channel to a gateway's Predict/KServe port at `addr`.
pub async fn channel_to(addr: impl std::fmt::Display) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect to the gateway")
}

/// Golden vectors written by models/make_models.py with onnxruntime.
pub struct Golden {
    /// Rows of 30 float32 features.
    pub rows: Vec<Vec<f32>>,
    pub labels: Vec<i64>,
    /// Rows of 2 probabilities.
    pub probabilities: Vec<Vec<f32>>,
}

fn numbers(v: &Value) -> Vec<f64> {
    v["data"].as_array().expect("data array").iter().map(|x| x.as_f64().expect("number")).collect()
}

pub fn golden(version: u64) -> Golden {
    let path = root().join(format!("models/golden/breast-cancer-{version}.json"));
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read golden")).expect("golden json");
    let input = numbers(&doc["inputs"]["input"]);
    let probs = numbers(&doc["outputs"]["probabilities"]);
    Golden {
        rows: input.chunks(30).map(|r| r.iter().map(|&x| x as f32).collect()).collect(),
        labels: numbers(&doc["outputs"]["label"]).into_iter().map(|x| x as i64).collect(),
        probabilities: probs.chunks(2).map(|r| r.iter().map(|&x| x as f32).collect()).collect(),
    }
}

/// A float32 tensor of rows, as raw little-endian bytes.
pub fn raw_rows(name: &str, rows: &[Vec<f32>]) -> pb::Tensor {
    let width = rows.first().map_or(0, Vec::len);
    let raw: Vec<u8> = rows.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
    pb::Tensor {
        name: name.into(),
        dtype: pb::DataType::Float32 as i32,
        shape: vec![rows.len() as i64, width as i64],
        raw: raw.into(),
        ..Default::default()
    }
}

/// A float32 tensor of rows, in the typed field.
pub fn typed_rows(name: &str, rows: &[Vec<f32>]) -> pb::Tensor {
    let width = rows.first().map_or(0, Vec::len);
    pb::Tensor {
        name: name.into(),
        dtype: pb::DataType::Float32 as i32,
        shape: vec![rows.len() as i64, width as i64],
        float_data: rows.iter().flatten().copied().collect(),
        ..Default::default()
    }
}

/// A blue/green rollout of breast-cancer to `green`, blue kept for
/// `retention_secs` after the switch.
pub fn blue_green(green: i64, retention_secs: u64) -> pb::StartRolloutRequest {
    pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::BlueGreen(pb::BlueGreenPlan {
            green,
            retention_secs: Some(retention_secs),
        })),
        reason: String::new(),
        triggers: None,
    }
}

/// A Predict request for `model` with one input named `input`.
pub fn request(model: &str, rows: &[Vec<f32>]) -> pb::PredictRequest {
    pb::PredictRequest { model: model.into(), inputs: vec![raw_rows("input", rows)], ..Default::default() }
}

/// A shadow rollout of `model` in which `version` mirrors every request.
pub fn shadow_plan(model: &str, version: i64) -> pb::StartRolloutRequest {
    pb::StartRolloutRequest {
        model: model.into(),
        plan: Some(pb::start_rollout_request::Plan::Shadow(pb::ShadowPlan {
            versions: vec![version],
            fraction_percent: Some(100.0),
        })),
        reason: String::new(),
        triggers: None,
    }
}

/// Decodes an output by name (raw or typed).
pub fn output(resp: &pb::PredictResponse, name: &str) -> modelgate_runtime::Tensor {
    let t = resp.outputs.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no output {name}"));
    modelgate::output_from_pb(t.clone()).expect("decodable output")
}

/// `n` rows of plausible features (copies of the golden rows).
pub fn rows(n: usize) -> Vec<Vec<f32>> {
    let g = golden(1);
    (0..n).map(|i| g.rows[i % g.rows.len()].clone()).collect()
}

/// The built `modelgate` binary (`make test` builds it before the tests run).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/modelgate
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("modelgate");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build -p modelgate` first (`make test` does)",
        bin.display()
    );
    bin
}

/// An admin client for a running gateway, optionally with a bearer token.
pub async fn admin(server: &RunningServer, token: Option<&str>) -> modelgate::cli::admin::Client {
    admin_at(server.admin_addr, token).await
}

/// An admin client for the admin listener at `addr`, optionally with a bearer token.
pub async fn admin_at(addr: impl std::fmt::Display, token: Option<&str>) -> modelgate::cli::admin::Client {
    let conn = modelgate::cli::admin::AdminConn {
        admin_addr: addr.to_string(),
        token: token.map(str::to_string),
        json: false,
        tls: Default::default(),
    };
    modelgate::cli::admin::connect(&conn).await.expect("connect to the admin listener")
}

/// Sends one request per key and returns the version that served each.
pub async fn versions_for_keys(
    c: &mut PredictClient<Channel>,
    model: &str,
    keys: impl IntoIterator<Item = String>,
) -> Vec<(String, i64, i32)> {
    let row = rows(1);
    let mut out = Vec::new();
    for key in keys {
        let mut req = request(model, &row);
        req.routing_key = key.clone();
        let resp = c.predict(req).await.expect("predict succeeds").into_inner();
        out.push((key, resp.version, resp.role));
    }
    out
}

/// The model's rollout status over the admin RPC.
pub async fn rollout_status(
    a: &mut modelgate::cli::admin::Client,
    model: &str,
) -> modelgate_proto::v1::RolloutStatus {
    a.get_rollout(modelgate_proto::v1::GetRolloutRequest { model: model.into() })
        .await
        .expect("GetRollout succeeds")
        .into_inner()
}

/// The model's analysis over the admin RPC.
pub async fn analysis(a: &mut modelgate::cli::admin::Client, model: &str) -> modelgate_proto::v1::Analysis {
    a.get_analysis(modelgate_proto::v1::GetAnalysisRequest { model: model.into() })
        .await
        .expect("GetAnalysis succeeds")
        .into_inner()
}

/// Sends keyed requests in rounds of 100 until `done` holds for the model's
/// analysis, failing after `secs` seconds with the last analysis.
pub async fn traffic_until(
    c: &mut PredictClient<Channel>,
    a: &mut modelgate::cli::admin::Client,
    model: &str,
    secs: u64,
    mut done: impl FnMut(&modelgate_proto::v1::Analysis) -> bool,
) -> modelgate_proto::v1::Analysis {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut i = 0u64;
    loop {
        let got = analysis(a, model).await;
        if done(&got) {
            return got;
        }
        assert!(std::time::Instant::now() < until, "gave up after {secs} s: {got:#?}");
        versions_for_keys(c, model, (i..i + 100).map(|k| format!("t{k}"))).await;
        i += 100;
    }
}

/// `GET http://{addr}{path}` over a plain TCP connection: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A canary of `candidate` for breast-cancer: `percent`, then 100, each step
/// needing `min_samples` and no minimum duration.
pub fn canary_plan(
    candidate: i64,
    percent: u32,
    min_samples: u64,
    auto_advance: bool,
) -> modelgate_proto::v1::StartRolloutRequest {
    modelgate_proto::v1::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(modelgate_proto::v1::start_rollout_request::Plan::Canary(
            modelgate_proto::v1::CanaryPlan {
                candidate,
                steps: vec![
                    modelgate_proto::v1::CanaryStep { percent, min_duration_secs: 0, min_samples },
                    modelgate_proto::v1::CanaryStep { percent: 100, min_duration_secs: 0, min_samples },
                ],
                auto_advance,
            },
        )),
        reason: String::new(),
        triggers: None,
    }
}
