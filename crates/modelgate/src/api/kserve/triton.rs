//! Triton's additions to the KServe v2 service: ModelConfig and
//! ModelStatistics (read by perf_analyzer and Triton's model tooling),
//! ModelStreamInfer, and an UNIMPLEMENTED that names what is not supported
//! for the calls modelgate does not serve.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use modelgate_proto::inference as kpb;
use modelgate_registry::{ReadyVersion, VersionState};
use modelgate_runtime::{DataType, Dim, TensorSpec, quoted};
use tonic::{Request, Response, Status, Streaming};

use super::{KserveService, datatype_name, version_of};
use crate::api::inference::{deadline_of, header_routing_key, in_request_span};
use crate::serving::routing::{ModelRoute, ModelTable};

/// Requests of one ModelStreamInfer stream served at once; the next is read
/// from the stream only when one of them has answered, so a client cannot
/// make one stream hold more than this many requests.
const STREAM_IN_FLIGHT: usize = 16;

/// ModelStreamInfer's replies, in request order.
pub type InferStream = Pin<Box<dyn Stream<Item = Result<kpb::ModelStreamInferResponse, Status>> + Send>>;

/// What ServerMetadata advertises: exactly the extensions served.
pub const EXTENSIONS: [&str; 2] = ["model_configuration", "statistics"];

/// The READY version a ModelMetadata/ModelConfig request names (its
/// champion when no version is given), or NOT_FOUND listing the READY ones.
pub(super) fn ready_version<'a>(
    model: &'a ModelRoute,
    name: &str,
    version: &str,
) -> Result<&'a Arc<ReadyVersion>, Status> {
    let chosen =
        version_of(model, version).and_then(|v| model.versions.get(&v)).and_then(|v| match &v.state {
            VersionState::Ready(ready) => Some(ready),
            VersionState::Failed(_) => None,
        });
    chosen.ok_or_else(|| {
        let versions: Vec<String> = model.ready().map(|v| v.version.to_string()).collect();
        Status::not_found(format!(
            "version {} of model {} is not READY; READY versions: {}",
            quoted(version),
            quoted(name),
            if versions.is_empty() { "none".to_string() } else { versions.join(", ") }
        ))
    })
}

/// Triton's config name of a datatype: the KServe name with `TYPE_`, but
/// for BYTES, which the config calls STRING.
fn config_datatype(dtype: DataType) -> kpb::DataType {
    match datatype_name(dtype) {
        "BYTES" => kpb::DataType::TypeString,
        name => kpb::DataType::from_str_name(&format!("TYPE_{name}")).unwrap_or(kpb::DataType::TypeInvalid),
    }
}

/// Triton's config of one version: the signature's tensors, the dynamic
/// batching model.toml set (Triton's `max_batch_size` is 0 when requests
/// are not batched, and the tensors' dims then include the first), and the
/// READY versions as the version policy, since any of them can be pinned.
pub(super) fn model_config(model: &ModelRoute, ready: &ReadyVersion) -> kpb::ModelConfig {
    let batching = ready.queue.batching();
    let batched = batching.max_batch > 1;
    let tensor = |spec: &TensorSpec| {
        let dims = spec.dims.iter().skip(usize::from(batched)).map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Dynamic(_) => -1,
        });
        (spec.name.clone(), config_datatype(spec.dtype) as i32, dims.collect::<Vec<i64>>())
    };
    let sig = ready.model().signature();
    kpb::ModelConfig {
        name: model.name.clone(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(kpb::ModelVersionPolicy {
            policy_choice: Some(kpb::model_version_policy::PolicyChoice::Specific(
                kpb::model_version_policy::Specific {
                    versions: model.ready().map(|v| i64::try_from(v.version).unwrap_or(i64::MAX)).collect(),
                },
            )),
        }),
        max_batch_size: if batched { i32::try_from(batching.max_batch).unwrap_or(i32::MAX) } else { 0 },
        input: sig
            .inputs
            .iter()
            .map(|s| {
                let (name, data_type, dims) = tensor(s);
                kpb::ModelInput { name, data_type, dims, ..Default::default() }
            })
            .collect(),
        output: sig
            .outputs
            .iter()
            .map(|s| {
                let (name, data_type, dims) = tensor(s);
                kpb::ModelOutput { name, data_type, dims, ..Default::default() }
            })
            .collect(),
        scheduling_choice: batched.then(|| {
            kpb::model_config::SchedulingChoice::DynamicBatching(kpb::ModelDynamicBatching {
                max_queue_delay_microseconds: u64::try_from(batching.max_queue_delay.as_micros())
                    .unwrap_or(u64::MAX),
                default_queue_policy: Some(kpb::ModelQueuePolicy {
                    max_queue_size: u32::try_from(ready.queue.capacity()).unwrap_or(u32::MAX),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

/// Statistics of every READY version of the models asked for (all models
/// when `name` is empty; every READY version when `version` is empty), from
/// the totals each loaded version keeps. Nothing is kept per request or per
/// name a caller sends: an unknown name is NOT_FOUND.
pub(super) fn model_statistics(
    table: &ModelTable,
    r: &kpb::ModelStatisticsRequest,
) -> Result<kpb::ModelStatisticsResponse, Status> {
    let models = if r.name.is_empty() {
        if !r.version.is_empty() {
            return Err(Status::invalid_argument("a version is given without a model name; name the model"));
        }
        table.sorted()
    } else {
        vec![table.find(&r.name)?]
    };
    let mut model_stats = Vec::new();
    for model in models {
        let versions: Vec<&Arc<ReadyVersion>> = if r.version.is_empty() {
            model.ready().collect()
        } else {
            vec![ready_version(model, &r.name, &r.version)?]
        };
        for ready in versions {
            let totals = model.window(ready.version).map(|s| s.totals.snapshot()).unwrap_or_default();
            let duration = |count, ns| Some(kpb::StatisticDuration { count, ns });
            model_stats.push(kpb::ModelStatistics {
                name: model.name.clone(),
                version: ready.version.to_string(),
                last_inference: totals.last_ms,
                inference_count: totals.inferences,
                execution_count: ready.queue.stats().traffic_runs.load(std::sync::atomic::Ordering::Relaxed),
                inference_stats: Some(kpb::InferStatistics {
                    success: duration(totals.success, totals.success_ns),
                    fail: duration(totals.fail, totals.fail_ns),
                    queue: duration(totals.success, totals.queue_ns),
                    compute_infer: duration(totals.success, totals.compute_ns),
                    ..Default::default()
                }),
                memory_usage: vec![kpb::MemoryUsage {
                    r#type: "CPU".into(),
                    id: 0,
                    byte_size: ready.memory_bytes,
                }],
                ..Default::default()
            });
        }
    }
    Ok(kpb::ModelStatisticsResponse { model_stats })
}

impl KserveService {
    /// Serves each request of the stream as ModelInfer does (same checks,
    /// routing, limits, spans), at most [`STREAM_IN_FLIGHT`] at once, and
    /// answers in request order. A request's failure is its response's
    /// `error_message` (with its id, model and version echoed), as Triton
    /// does; the stream goes on. The stream's `grpc-timeout`, if any, is the
    /// deadline of every request in it.
    pub(super) fn stream(&self, request: Request<Streaming<kpb::ModelInferRequest>>) -> InferStream {
        let deadline = deadline_of(request.metadata());
        let header_key = header_routing_key(request.metadata());
        let (metadata, _, requests) = request.into_parts();
        let service = self.clone();
        let replies = requests
            .map(move |item| {
                let (service, metadata, header_key) = (service.clone(), metadata.clone(), header_key.clone());
                async move {
                    // A message that cannot be decoded ends the stream.
                    let r = item?;
                    let echo = kpb::ModelInferResponse {
                        model_name: r.model_name.clone(),
                        model_version: r.model_version.clone(),
                        id: r.id.clone(),
                        ..Default::default()
                    };
                    let request = Request::from_parts(metadata, Default::default(), r);
                    let served =
                        in_request_span(request, "inference.GRPCInferenceService/ModelStreamInfer", |r| {
                            service.infer_message(r.into_inner(), deadline, header_key)
                        })
                        .await;
                    Ok(match served {
                        Ok(response) => kpb::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        Err(status) => kpb::ModelStreamInferResponse {
                            error_message: status.message().to_string(),
                            infer_response: Some(echo),
                        },
                    })
                }
            })
            .buffered(STREAM_IN_FLIGHT);
        Box::pin(replies)
    }
}

/// Why the repository calls are not served.
pub(super) const REPOSITORY: &str = "modelgate loads every version in its model directory (--models) and watches it; add or remove a version directory there";
/// Why the system shared-memory calls are not served.
pub(super) const SYSTEM_SHARED_MEMORY: &str = "send tensors in the request (raw_input_contents or contents)";
/// Why the CUDA shared-memory calls are not served.
pub(super) const CUDA_SHARED_MEMORY: &str = "modelgate runs models on the CPU; send tensors in the request";
pub(super) const TRACE: &str =
    "traces go to OpenTelemetry (OTEL_EXPORTER_OTLP_ENDPOINT), sampled as the caller's traceparent says";
pub(super) const LOG: &str = "the log filter is RUST_LOG, set at start";

/// UNIMPLEMENTED for a Triton call modelgate does not serve, naming it and
/// what to do instead.
pub(super) fn unsupported<T>(call: &str, instead: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{call} is not supported by modelgate: {instead}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_datatypes_are_tritons_names() {
        use kpb::DataType as T;
        for (dtype, want) in [
            (DataType::Float32, T::TypeFp32),
            (DataType::Float64, T::TypeFp64),
            (DataType::Int8, T::TypeInt8),
            (DataType::Int32, T::TypeInt32),
            (DataType::Int64, T::TypeInt64),
            (DataType::Uint8, T::TypeUint8),
            (DataType::Bool, T::TypeBool),
            (DataType::String, T::TypeString),
            (DataType::Float16, T::TypeFp16),
            (DataType::Bfloat16, T::TypeBf16),
            (DataType::Int16, T::TypeInt16),
            (DataType::Uint16, T::TypeUint16),
            (DataType::Uint32, T::TypeUint32),
            (DataType::Uint64, T::TypeUint64),
        ] {
            assert_eq!(config_datatype(dtype), want, "{dtype:?}");
        }
    }
}
