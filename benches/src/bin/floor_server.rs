//! The floor: a gRPC server that does no work. It serves modelgate's Predict
//! and KServe v2's ModelInfer for the models of a repository, answering each
//! call with outputs of the right names, dtypes and shapes (zeros), so its
//! responses are as large as the gateway's, and does nothing else: no
//! routing, checks, queue, inference, windows, metrics or spans.
//!
//! Two calibrations add work on the handler's thread: `--run-model` runs the
//! model in ONNX Runtime on each ModelInfer call's inputs (the floor plus the
//! model's own run: what the gateway costs above that is its own work), and
//! `--work-us N` spins N µs per call. They still answer zeros.
//!
//! Everything between the socket and the handler is the gateway's: the same
//! tonic and generated services (with their request-size scan), the same
//! HTTP/2 settings (`ServeConfig`'s defaults: streams, header size,
//! keepalive), flow-control windows, message limits, TCP_NODELAY and TCP
//! keepalive, and a multi-threaded tokio runtime with one worker per core.
//! So `make bench` can say what share of what gRPC itself allows here the
//! gateway reaches. Prints `floor ready: Predict (modelgate.v1) on ADDR`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use modelgate::{dtype_to_pb, spec_to_pb};
use modelgate_proto::inference as kpb;
use modelgate_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::predict_server::{Predict, PredictServer};
use modelgate_registry::{ModelEntry, VersionState};
use modelgate_runtime::{DataType, Dim, LoadedModel, Tensor, TensorData, TensorSpec};
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
struct Args {
    /// The model repository whose signatures the answers take.
    #[arg(long, default_value = "models/repository")]
    models: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// ONNX Runtime's shared library (read once, for the signatures).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
    /// Spins this many µs on the handler's thread per ModelInfer or Predict
    /// call: a calibration, to measure what a given amount of handler CPU
    /// costs in throughput on this machine (0: the floor itself).
    #[arg(long, default_value_t = 0)]
    work_us: u64,
    /// Runs the model in ONNX Runtime on each ModelInfer call's inputs (on
    /// the handler's thread, like the gateway's inline runs) and still
    /// answers zeros: the floor plus the model's own run and nothing of the
    /// gateway's. A calibration, as `--work-us` is.
    #[arg(long)]
    run_model: bool,
}

/// The gateway's flow-control windows (crates/modelgate/src/server/mod.rs:
/// 1 MiB per stream, 4 MiB per connection), which `ServeConfig` does not hold.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The gateway's TCP keepalive on the Predict listener.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A model as the floor answers for it: its champion (the gateway's default,
/// the highest READY version) and every version's declared tensors.
struct FloorModel {
    champion: u64,
    versions: HashMap<u64, Arc<FloorVersion>>,
    predict_metadata: pb::ModelMetadataResponse,
}

struct FloorVersion {
    version: u64,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    /// For `--run-model`.
    model: Arc<LoadedModel>,
}

#[derive(Clone)]
struct Floor {
    models: Arc<HashMap<String, FloorModel>>,
    /// Request ids for calls without one (the gateway makes a 32-character
    /// UUID; these are as long, so responses are the same size).
    next_id: Arc<AtomicU64>,
    /// `--work-us`: CPU spent per inference call.
    work: Duration,
    /// `--run-model`.
    run_model: bool,
}

impl Floor {
    fn new(entries: &[ModelEntry]) -> Self {
        let mut models = HashMap::new();
        for entry in entries {
            let Some(champion) = entry.latest_ready().map(|r| r.version) else { continue };
            let mut versions = HashMap::new();
            let mut metadata = Vec::new();
            for v in entry.versions.values() {
                let mut meta = pb::VersionMetadata {
                    version: i64::try_from(v.version).unwrap_or(i64::MAX),
                    ..Default::default()
                };
                match &v.state {
                    VersionState::Ready(ready) => {
                        let m = ready.model();
                        let sig = m.signature();
                        meta.state = pb::VersionState::Ready as i32;
                        meta.inputs = sig.inputs.iter().map(spec_to_pb).collect();
                        meta.outputs = sig.outputs.iter().map(spec_to_pb).collect();
                        meta.sha256 = m.sha256().to_string();
                        meta.size_bytes = m.size_bytes();
                        if v.version == champion {
                            meta.role = pb::Role::Champion as i32;
                        }
                        let version = FloorVersion {
                            version: v.version,
                            inputs: sig.inputs.clone(),
                            outputs: sig.outputs.clone(),
                            model: Arc::clone(m),
                        };
                        versions.insert(v.version, Arc::new(version));
                    }
                    VersionState::Failed(reason) => {
                        meta.state = pb::VersionState::Failed as i32;
                        meta.reason = reason.clone();
                    }
                }
                metadata.push(meta);
            }
            let predict_metadata = pb::ModelMetadataResponse {
                model: entry.name.clone(),
                versions: metadata,
                champion: i64::try_from(champion).unwrap_or(i64::MAX),
            };
            models.insert(entry.name.clone(), FloorModel { champion, versions, predict_metadata });
        }
        Self {
            models: Arc::new(models),
            next_id: Arc::new(AtomicU64::new(1)),
            work: Duration::ZERO,
            run_model: false,
        }
    }

    /// `--work-us`: spins on this thread, as a handler's own CPU would.
    fn work(&self) {
        if self.work.is_zero() {
            return;
        }
        let started = std::time::Instant::now();
        while started.elapsed() < self.work {
            std::hint::spin_loop();
        }
    }

    fn model(&self, name: &str) -> Result<&FloorModel, Status> {
        self.models.get(name).ok_or_else(|| Status::not_found(format!("model \"{name}\" is not served")))
    }

    /// The version a call asked for (`None`: the champion), and the role the
    /// gateway would report for it.
    fn version(&self, model: &str, version: Option<u64>) -> Result<(Arc<FloorVersion>, pb::Role), Status> {
        let m = self.model(model)?;
        let want = version.unwrap_or(m.champion);
        let v = m
            .versions
            .get(&want)
            .ok_or_else(|| Status::not_found(format!("model \"{model}\" has no READY version {want}")))?;
        let role = if want == m.champion { pb::Role::Champion } else { pb::Role::Pinned };
        Ok((Arc::clone(v), role))
    }

    fn request_id(&self, given: String) -> String {
        if given.is_empty() {
            format!("{:032x}", self.next_id.fetch_add(1, Ordering::Relaxed))
        } else {
            given
        }
    }
}

/// An output's shape for a request of `rows` rows: a dynamic first dimension
/// is the batch, any other dynamic one 1.
fn output_shape(spec: &TensorSpec, rows: i64) -> Vec<i64> {
    spec.dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(n) => *n,
            Dim::Dynamic(_) if i == 0 => rows,
            Dim::Dynamic(_) => 1,
        })
        .collect()
}

/// Zeroed raw bytes for `shape`: elements of the dtype's size, or for strings
/// an empty string each (its 4-byte length).
fn zeros(dtype: DataType, shape: &[i64]) -> bytes::Bytes {
    let n: i64 = shape.iter().product();
    bytes::Bytes::from(vec![0u8; usize::try_from(n).unwrap_or(0) * dtype.element_size().unwrap_or(4)])
}

/// The rows of a request: its first input's first dimension when the model's
/// first input is batched (dynamic first dimension), else 1.
fn rows_of(declared: &[TensorSpec], first_shape: Option<&[i64]>) -> i64 {
    let batched = declared.first().is_some_and(|s| matches!(s.dims.first(), Some(Dim::Dynamic(_))));
    match first_shape.and_then(|s| s.first()) {
        Some(&n) if batched && n > 0 => n,
        _ => 1,
    }
}

/// The outputs a call asked for (`wanted` empty: all), in declared order.
fn wanted<'a>(outputs: &'a [TensorSpec], wanted: &'a [String]) -> impl Iterator<Item = &'a TensorSpec> {
    outputs.iter().filter(move |s| wanted.is_empty() || wanted.contains(&s.name))
}

#[tonic::async_trait]
impl Predict for Floor {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let req = request.into_inner();
        let pinned = req
            .version
            .map(|v| {
                u64::try_from(v).map_err(|_| Status::invalid_argument(format!("version {v} is negative")))
            })
            .transpose()?;
        let (v, role) = self.version(&req.model, pinned)?;
        self.work();
        let rows = rows_of(&v.inputs, req.inputs.first().map(|t| t.shape.as_slice()));
        let outputs = wanted(&v.outputs, &req.output_names)
            .map(|spec| {
                let shape = output_shape(spec, rows);
                pb::Tensor {
                    name: spec.name.clone(),
                    dtype: dtype_to_pb(spec.dtype) as i32,
                    raw: zeros(spec.dtype, &shape),
                    shape,
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pb::PredictResponse {
            model: req.model,
            version: i64::try_from(v.version).unwrap_or(i64::MAX),
            role: role as i32,
            request_id: self.request_id(req.request_id),
            outputs,
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        Ok(Response::new(self.model(&request.into_inner().model)?.predict_metadata.clone()))
    }

    async fn record_outcome(
        &self,
        _: Request<pb::RecordOutcomeRequest>,
    ) -> Result<Response<pb::RecordOutcomeResponse>, Status> {
        Err(floor_only("RecordOutcome"))
    }
}

/// `--run-model`: runs `v` on a KServe call's raw inputs, on a free session
/// (or waiting for the first), and drops the outputs. The inputs are read in
/// place with no checks, not through the gateway's KServe conversion: that
/// conversion is part of what the floor+run is the reference for.
fn run_model(
    v: &FloorVersion,
    inputs: &[kpb::model_infer_request::InferInputTensor],
    raw: &[bytes::Bytes],
) -> Result<(), Status> {
    let mut tensors = Vec::with_capacity(inputs.len());
    for (t, bytes) in inputs.iter().zip(raw) {
        let spec = v
            .inputs
            .iter()
            .find(|s| s.name == t.name)
            .ok_or_else(|| Status::invalid_argument(format!("no input \"{}\"", t.name)))?;
        let elements = t.shape.iter().product::<i64>().max(0) as usize;
        let data = TensorData::from_raw_bytes(spec.dtype, bytes.clone(), elements)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tensors.push(Tensor::new(t.name.clone(), t.shape.clone(), data));
    }
    let result = match v.model.try_session(0..usize::MAX) {
        Some(mut session) => session.run(&tensors, &[]),
        None => v.model.run(0, &tensors, &[]),
    };
    result.map(drop).map_err(Status::internal)
}

/// What the floor does not serve: it exists for the load generator's calls.
fn floor_only(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc}: the floor server answers only Predict, ModelInfer, metadata and readiness"
    ))
}

fn kserve_param(choice: kpb::infer_parameter::ParameterChoice) -> kpb::InferParameter {
    kpb::InferParameter { parameter_choice: Some(choice) }
}

#[tonic::async_trait]
impl GrpcInferenceService for Floor {
    async fn model_infer(
        &self,
        request: Request<kpb::ModelInferRequest>,
    ) -> Result<Response<kpb::ModelInferResponse>, Status> {
        use kpb::infer_parameter::ParameterChoice;
        let r = request.into_inner();
        let pinned = match r.model_version.as_str() {
            "" => None,
            s => Some(s.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!("model_version \"{s}\" is not a version number"))
            })?),
        };
        let (v, role) = self.version(&r.model_name, pinned)?;
        self.work();
        if self.run_model {
            run_model(&v, &r.inputs, &r.raw_input_contents)?;
        }
        let rows = rows_of(&v.inputs, r.inputs.first().map(|t| t.shape.as_slice()));
        let names: Vec<String> = r.outputs.into_iter().map(|o| o.name).collect();
        let mut out = kpb::ModelInferResponse {
            model_name: r.model_name,
            model_version: v.version.to_string(),
            id: self.request_id(r.id),
            // The gateway's two parameters; the role names are Role's lowercase ones.
            parameters: [
                (
                    "version".to_string(),
                    kserve_param(ParameterChoice::Int64Param(i64::try_from(v.version).unwrap_or(i64::MAX))),
                ),
                (
                    "role".to_string(),
                    kserve_param(ParameterChoice::StringParam(
                        role.as_str_name().trim_start_matches("ROLE_").to_lowercase(),
                    )),
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        for spec in wanted(&v.outputs, &names) {
            let shape = output_shape(spec, rows);
            out.raw_output_contents.push(zeros(spec.dtype, &shape));
            out.outputs.push(kpb::model_infer_response::InferOutputTensor {
                name: spec.name.clone(),
                datatype: spec.dtype.kserve_name().into(),
                shape,
                ..Default::default()
            });
        }
        Ok(Response::new(out))
    }

    async fn model_metadata(
        &self,
        request: Request<kpb::ModelMetadataRequest>,
    ) -> Result<Response<kpb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let pinned =
            match r.version.as_str() {
                "" => None,
                s => Some(s.parse::<u64>().map_err(|_| {
                    Status::invalid_argument(format!("version \"{s}\" is not a version number"))
                })?),
            };
        let (v, _) = self.version(&r.name, pinned)?;
        let m = self.model(&r.name)?;
        let mut versions: Vec<u64> = m.versions.keys().copied().collect();
        versions.sort_unstable();
        let meta = |s: &TensorSpec| kpb::model_metadata_response::TensorMetadata {
            name: s.name.clone(),
            datatype: s.dtype.kserve_name().into(),
            shape: s.shape_i64(),
        };
        Ok(Response::new(kpb::ModelMetadataResponse {
            name: r.name,
            versions: versions.iter().map(u64::to_string).collect(),
            platform: "onnxruntime_onnx".into(),
            inputs: v.inputs.iter().map(meta).collect(),
            outputs: v.outputs.iter().map(meta).collect(),
        }))
    }

    async fn server_live(
        &self,
        _: Request<kpb::ServerLiveRequest>,
    ) -> Result<Response<kpb::ServerLiveResponse>, Status> {
        Ok(Response::new(kpb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<kpb::ServerReadyRequest>,
    ) -> Result<Response<kpb::ServerReadyResponse>, Status> {
        Ok(Response::new(kpb::ServerReadyResponse { ready: !self.models.is_empty() }))
    }

    async fn model_ready(
        &self,
        request: Request<kpb::ModelReadyRequest>,
    ) -> Result<Response<kpb::ModelReadyResponse>, Status> {
        Ok(Response::new(kpb::ModelReadyResponse {
            ready: self.models.contains_key(&request.into_inner().name),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<kpb::ServerMetadataRequest>,
    ) -> Result<Response<kpb::ServerMetadataResponse>, Status> {
        Err(floor_only("ServerMetadata"))
    }

    async fn repository_index(
        &self,
        _: Request<kpb::RepositoryIndexRequest>,
    ) -> Result<Response<kpb::RepositoryIndexResponse>, Status> {
        Err(floor_only("RepositoryIndex"))
    }

    type ModelStreamInferStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<kpb::ModelStreamInferResponse, Status>> + Send>,
    >;

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<kpb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Err(floor_only("ModelStreamInfer"))
    }

    async fn model_config(
        &self,
        _: Request<kpb::ModelConfigRequest>,
    ) -> Result<Response<kpb::ModelConfigResponse>, Status> {
        Err(floor_only("ModelConfig"))
    }

    async fn model_statistics(
        &self,
        _: Request<kpb::ModelStatisticsRequest>,
    ) -> Result<Response<kpb::ModelStatisticsResponse>, Status> {
        Err(floor_only("ModelStatistics"))
    }

    async fn repository_model_load(
        &self,
        _: Request<kpb::RepositoryModelLoadRequest>,
    ) -> Result<Response<kpb::RepositoryModelLoadResponse>, Status> {
        Err(floor_only("RepositoryModelLoad"))
    }

    async fn repository_model_unload(
        &self,
        _: Request<kpb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<kpb::RepositoryModelUnloadResponse>, Status> {
        Err(floor_only("RepositoryModelUnload"))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<kpb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<kpb::SystemSharedMemoryStatusResponse>, Status> {
        Err(floor_only("SystemSharedMemoryStatus"))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<kpb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<kpb::SystemSharedMemoryRegisterResponse>, Status> {
        Err(floor_only("SystemSharedMemoryRegister"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<kpb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<kpb::SystemSharedMemoryUnregisterResponse>, Status> {
        Err(floor_only("SystemSharedMemoryUnregister"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<kpb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<kpb::CudaSharedMemoryStatusResponse>, Status> {
        Err(floor_only("CudaSharedMemoryStatus"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<kpb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<kpb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(floor_only("CudaSharedMemoryRegister"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<kpb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<kpb::CudaSharedMemoryUnregisterResponse>, Status> {
        Err(floor_only("CudaSharedMemoryUnregister"))
    }

    async fn trace_setting(
        &self,
        _: Request<kpb::TraceSettingRequest>,
    ) -> Result<Response<kpb::TraceSettingResponse>, Status> {
        Err(floor_only("TraceSetting"))
    }

    async fn log_settings(
        &self,
        _: Request<kpb::LogSettingsRequest>,
    ) -> Result<Response<kpb::LogSettingsResponse>, Status> {
        Err(floor_only("LogSettings"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The signatures come from loading the repository as the gateway does
    // (sessions and warm-up included); nothing runs a model after this.
    let entries = {
        let (lib, models) = (args.ort_lib.clone(), args.models.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<ModelEntry>> {
            let runtime = modelgate_runtime::Runtime::init(lib.as_deref())?;
            Ok(modelgate_registry::load_repository(
                &runtime,
                &models,
                &modelgate_registry::LoadSettings::default(),
            )?)
        })
        .await
        .context("loading task panicked")??
    };
    let floor = Floor {
        work: Duration::from_micros(args.work_us),
        run_model: args.run_model,
        ..Floor::new(&entries)
    };
    anyhow::ensure!(!floor.models.is_empty(), "no READY model in {}", args.models.display());
    let config = modelgate::ServeConfig::new(&args.models);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let predict = PredictServer::new(floor.clone())
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    let kserve = GrpcInferenceServiceServer::new(floor)
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    println!("floor ready: Predict (modelgate.v1) on {addr}");
    println!(
        "  KServe v2 (inference.GRPCInferenceService) on the same port; answers with zeros, runs nothing"
    );
    config
        .connections
        .server()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_service(predict)
        .add_service(kserve)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("gRPC server failed")
}
