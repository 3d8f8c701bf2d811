//! KServe v2 / Open Inference Protocol (`inference.GRPCInferenceService`) on
//! the Predict port, so Triton and KServe clients work unchanged. ModelInfer
//! goes through the same [`Gateway::infer`] path as modelgate.v1.Predict:
//! routing, rollouts, shadows, triggers, metrics and traces are shared.
//!
//! Differences of the protocol handled at this edge: datatype names (FP32,
//! BYTES, ...), inputs as `raw_input_contents` or typed `contents`, outputs
//! always in `raw_output_contents` (tritonclient decodes only those), the
//! routing key in the `routing_key` request parameter (or the `x-routing-key`
//! metadata, as for Predict), and the served version and role in the response
//! parameters. A request without an `id` gets a generated one, echoed in the
//! response so that outcomes can be joined to it (RecordOutcome).
//!
//! Triton's own calls (ModelConfig, ModelStatistics, ModelStreamInfer and
//! the unsupported rest) are in [`triton`].

mod triton;

use std::sync::Arc;

use modelgate_proto::inference as kpb;
use modelgate_registry::VersionState;
use modelgate_runtime::tensor::element_count;
use modelgate_runtime::{DataType, Dim, Tensor, TensorData, TensorSpec, quoted};
use tonic::{Request, Response, Status};

use crate::api::error::GatewayError;
use crate::api::inference::{
    deadline_of, header_routing_key, in_request_span, rejected, request_id_or_new, routing_key,
};
use crate::serving::convert::{self, BadRequest, shape_str};
use crate::serving::gateway::Gateway;
use crate::serving::request::InferRequest;
use crate::serving::routing::ModelRoute;

/// The KServe v2 gRPC service.
#[derive(Debug, Clone)]
pub struct KserveService {
    gateway: Arc<Gateway>,
}

impl KserveService {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

/// KServe's name of a datatype.
pub fn datatype_name(dtype: DataType) -> &'static str {
    dtype.kserve_name()
}

const SUPPORTED: &str =
    "FP16, BF16, FP32, FP64, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, BOOL, BYTES";

fn datatype_from_name(name: &str) -> Option<DataType> {
    Some(match name {
        "FP32" => DataType::Float32,
        "FP64" => DataType::Float64,
        "INT32" => DataType::Int32,
        "INT64" => DataType::Int64,
        "BOOL" => DataType::Bool,
        "UINT8" => DataType::Uint8,
        "INT8" => DataType::Int8,
        "BYTES" => DataType::String,
        "FP16" => DataType::Float16,
        "BF16" => DataType::Bfloat16,
        "INT16" => DataType::Int16,
        "UINT16" => DataType::Uint16,
        "UINT32" => DataType::Uint32,
        "UINT64" => DataType::Uint64,
        _ => return None,
    })
}

fn tensor_metadata(spec: &TensorSpec) -> kpb::model_metadata_response::TensorMetadata {
    kpb::model_metadata_response::TensorMetadata {
        name: spec.name.clone(),
        datatype: datatype_name(spec.dtype).to_string(),
        shape: spec
            .dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Dynamic(_) => -1,
            })
            .collect(),
    }
}

/// The typed contents of `dtype`, as our elements; errors name the field.
/// FP16 and BF16 have no typed field in the protocol (raw only).
fn typed_contents(dtype: DataType, c: kpb::InferTensorContents) -> Result<TensorData, String> {
    let name = datatype_name(dtype);
    Ok(match dtype {
        DataType::Float32 => TensorData::Float32(c.fp32_contents),
        DataType::Float64 => TensorData::Float64(c.fp64_contents),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int16 => TensorData::Int16(convert::narrow(c.int_contents, name)?),
        DataType::Int8 => TensorData::Int8(convert::narrow(c.int_contents, name)?),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(convert::narrow(c.uint_contents, name)?),
        DataType::Uint16 => TensorData::Uint16(convert::narrow(c.uint_contents, name)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Float16 | DataType::Bfloat16 => return Err(no_typed_field(dtype)),
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::String => TensorData::String(
            c.bytes_contents
                .into_iter()
                .enumerate()
                .map(|(i, b)| String::from_utf8(b).map_err(|_| format!("BYTES element {i} is not UTF-8")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Which typed-contents fields carry elements.
fn filled_fields(c: &kpb::InferTensorContents) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut note = |filled: bool, name| {
        if filled {
            out.push(name);
        }
    };
    note(!c.bool_contents.is_empty(), "bool_contents");
    note(!c.int_contents.is_empty(), "int_contents");
    note(!c.int64_contents.is_empty(), "int64_contents");
    note(!c.uint_contents.is_empty(), "uint_contents");
    note(!c.uint64_contents.is_empty(), "uint64_contents");
    note(!c.fp32_contents.is_empty(), "fp32_contents");
    note(!c.fp64_contents.is_empty(), "fp64_contents");
    note(!c.bytes_contents.is_empty(), "bytes_contents");
    out
}

/// The typed-contents field of `dtype`; `None` for FP16 and BF16, which the
/// protocol carries only as raw little-endian bytes (as Triton does).
fn field_for(dtype: DataType) -> Option<&'static str> {
    Some(match dtype {
        DataType::Float32 => "fp32_contents",
        DataType::Float64 => "fp64_contents",
        DataType::Int32 | DataType::Int16 | DataType::Int8 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint32 | DataType::Uint16 | DataType::Uint8 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Bool => "bool_contents",
        DataType::String => "bytes_contents",
        DataType::Float16 | DataType::Bfloat16 => return None,
    })
}

fn no_typed_field(dtype: DataType) -> String {
    format!(
        "{} has no typed contents field in KServe v2; send its elements in raw_input_contents \
         ({} little-endian bytes each)",
        datatype_name(dtype),
        dtype.element_size().unwrap_or(2)
    )
}

/// Decodes a request's inputs: all in `raw_input_contents` (one entry per
/// input, in order) or all typed in `contents`, never both. No inputs at all
/// is left to the gateway, whose message lists the inputs the model expects.
pub fn inputs_from_request(
    inputs: Vec<kpb::model_infer_request::InferInputTensor>,
    raw: Vec<prost::bytes::Bytes>,
) -> Result<Vec<Tensor>, BadRequest> {
    if !raw.is_empty() {
        if raw.len() != inputs.len() {
            return Err(BadRequest(format!(
                "raw_input_contents has {} entries for {} inputs; expected one per input, in order",
                raw.len(),
                inputs.len()
            )));
        }
        if let Some(both) =
            inputs.iter().find(|i| i.contents.as_ref().is_some_and(|c| !filled_fields(c).is_empty()))
        {
            return Err(BadRequest(format!(
                "input {}: contents are given both in raw_input_contents and typed; give one",
                quoted(&both.name)
            )));
        }
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .map(|t| {
            let bad = |msg: String| BadRequest(format!("input {}: {msg}", quoted(&t.name)));
            let dtype = datatype_from_name(&t.datatype)
                .ok_or_else(|| bad(format!("datatype {} is not supported; expected one of {SUPPORTED}", quoted(&t.datatype))))?;
            let elements = element_count(&t.shape).ok_or_else(|| {
                bad(format!("shape {} has a negative dimension or is too large", shape_str(&t.shape)))
            })?;
            let data = match raw.next() {
                Some(bytes) => TensorData::from_raw_bytes(dtype, bytes, elements).map_err(|e| bad(e.to_string()))?,
                None => {
                    let contents = t.contents.unwrap_or_default();
                    let filled = filled_fields(&contents);
                    let Some(field) = field_for(dtype) else {
                        // Only an empty tensor can do without raw bytes.
                        if filled.is_empty() && elements == 0 {
                            let empty = TensorData::Raw { dtype, bytes: Default::default() };
                            return Ok(Tensor::new(t.name, t.shape, empty));
                        }
                        return Err(bad(no_typed_field(dtype)));
                    };
                    if let Some(other) = filled.iter().find(|f| **f != field) {
                        return Err(bad(format!(
                            "datatype is {} but elements are in {other}; use {field} or raw_input_contents",
                            t.datatype
                        )));
                    }
                    if filled.is_empty() && elements > 0 {
                        return Err(bad(format!(
                            "no contents for shape {} ({elements} elements): set {field} or raw_input_contents",
                            shape_str(&t.shape)
                        )));
                    }
                    let data = typed_contents(dtype, contents).map_err(bad)?;
                    convert::check_element_count(&t.shape, elements, field, data.len()).map_err(bad)?;
                    data
                }
            };
            Ok(Tensor::new(t.name, t.shape, data))
        })
        .collect()
}

/// The gateway's status, with datatypes spelled the way KServe clients
/// sent them (FP64, not FLOAT64).
fn kserve_status(e: GatewayError) -> Status {
    match e {
        GatewayError::Input {
            model,
            version,
            error: modelgate_runtime::InputError::DType { name, got, expected },
        } => Status::invalid_argument(format!(
            "model '{model}' version {version}: input {} has datatype {}, expected {}",
            quoted(&name),
            datatype_name(got),
            datatype_name(expected)
        )),
        other => other.into(),
    }
}

fn string_param(s: &str) -> kpb::InferParameter {
    kpb::InferParameter {
        parameter_choice: Some(kpb::infer_parameter::ParameterChoice::StringParam(s.into())),
    }
}

fn int_param(v: i64) -> kpb::InferParameter {
    kpb::InferParameter { parameter_choice: Some(kpb::infer_parameter::ParameterChoice::Int64Param(v)) }
}

fn version_of(model: &ModelRoute, version: &str) -> Option<u64> {
    if version.is_empty() {
        return model.champion().map(|c| c.version);
    }
    version.parse::<u64>().ok().filter(|v| model.versions.contains_key(v))
}

#[tonic::async_trait]
impl kpb::grpc_inference_service_server::GrpcInferenceService for KserveService {
    async fn server_live(
        &self,
        _: Request<kpb::ServerLiveRequest>,
    ) -> Result<Response<kpb::ServerLiveResponse>, Status> {
        Ok(Response::new(kpb::ServerLiveResponse { live: true }))
    }

    /// Ready when there is at least one model and every model has a READY
    /// champion, i.e. every model served answers ModelInfer. A model whose
    /// versions all FAILED makes the server not ready, though the other
    /// models still serve; an empty repository is not ready either. The
    /// listener only opens once every version is loaded and warm, or FAILED.
    async fn server_ready(
        &self,
        _: Request<kpb::ServerReadyRequest>,
    ) -> Result<Response<kpb::ServerReadyResponse>, Status> {
        let table = self.gateway.table();
        let models = table.sorted();
        let ready = !models.is_empty() && models.iter().all(|m| m.champion().is_some());
        Ok(Response::new(kpb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<kpb::ModelReadyRequest>,
    ) -> Result<Response<kpb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let table = self.gateway.table();
        // An unknown model is not ready: the question asked has an answer.
        let ready = table.get(&r.name).is_some_and(|m| {
            version_of(m, &r.version)
                .and_then(|v| m.versions.get(&v))
                .is_some_and(|v| matches!(v.state, VersionState::Ready(_)))
        });
        Ok(Response::new(kpb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<kpb::ServerMetadataRequest>,
    ) -> Result<Response<kpb::ServerMetadataResponse>, Status> {
        Ok(Response::new(kpb::ServerMetadataResponse {
            name: "modelgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: triton::EXTENSIONS.map(String::from).to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<kpb::ModelMetadataRequest>,
    ) -> Result<Response<kpb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let table = self.gateway.table();
        let model = table.find(&r.name)?;
        let ready = triton::ready_version(model, &r.name, &r.version)?;
        let versions: Vec<String> = model.ready().map(|v| v.version.to_string()).collect();
        let sig = ready.model().signature();
        Ok(Response::new(kpb::ModelMetadataResponse {
            name: r.name,
            versions,
            platform: "onnxruntime_onnx".into(),
            inputs: sig.inputs.iter().map(tensor_metadata).collect(),
            outputs: sig.outputs.iter().map(tensor_metadata).collect(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<kpb::ModelInferRequest>,
    ) -> Result<Response<kpb::ModelInferResponse>, Status> {
        in_request_span(request, "inference.GRPCInferenceService/ModelInfer", |r| self.infer(r)).await
    }

    async fn repository_index(
        &self,
        request: Request<kpb::RepositoryIndexRequest>,
    ) -> Result<Response<kpb::RepositoryIndexResponse>, Status> {
        let only_ready = request.into_inner().ready;
        let table = self.gateway.table();
        let mut models = Vec::new();
        for model in table.sorted() {
            for v in model.versions.values() {
                let (state, reason) = match &v.state {
                    VersionState::Ready(_) => ("READY", String::new()),
                    VersionState::Failed(reason) => ("UNAVAILABLE", reason.clone()),
                };
                if only_ready && state != "READY" {
                    continue;
                }
                models.push(kpb::repository_index_response::ModelIndex {
                    name: model.name.clone(),
                    version: v.version.to_string(),
                    state: state.into(),
                    reason,
                });
            }
        }
        Ok(Response::new(kpb::RepositoryIndexResponse { models }))
    }

    type ModelStreamInferStream = triton::InferStream;

    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<kpb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Ok(Response::new(self.stream(request)))
    }

    async fn model_config(
        &self,
        request: Request<kpb::ModelConfigRequest>,
    ) -> Result<Response<kpb::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let table = self.gateway.table();
        let model = table.find(&r.name)?;
        let ready = triton::ready_version(model, &r.name, &r.version)?;
        Ok(Response::new(kpb::ModelConfigResponse { config: Some(triton::model_config(model, ready)) }))
    }

    async fn model_statistics(
        &self,
        request: Request<kpb::ModelStatisticsRequest>,
    ) -> Result<Response<kpb::ModelStatisticsResponse>, Status> {
        triton::model_statistics(&self.gateway.table(), &request.into_inner()).map(Response::new)
    }

    async fn repository_model_load(
        &self,
        _: Request<kpb::RepositoryModelLoadRequest>,
    ) -> Result<Response<kpb::RepositoryModelLoadResponse>, Status> {
        triton::unsupported("RepositoryModelLoad", triton::REPOSITORY)
    }

    async fn repository_model_unload(
        &self,
        _: Request<kpb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<kpb::RepositoryModelUnloadResponse>, Status> {
        triton::unsupported("RepositoryModelUnload", triton::REPOSITORY)
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<kpb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<kpb::SystemSharedMemoryStatusResponse>, Status> {
        triton::unsupported("SystemSharedMemoryStatus", triton::SYSTEM_SHARED_MEMORY)
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<kpb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<kpb::SystemSharedMemoryRegisterResponse>, Status> {
        triton::unsupported("SystemSharedMemoryRegister", triton::SYSTEM_SHARED_MEMORY)
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<kpb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<kpb::SystemSharedMemoryUnregisterResponse>, Status> {
        triton::unsupported("SystemSharedMemoryUnregister", triton::SYSTEM_SHARED_MEMORY)
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<kpb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<kpb::CudaSharedMemoryStatusResponse>, Status> {
        triton::unsupported("CudaSharedMemoryStatus", triton::CUDA_SHARED_MEMORY)
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<kpb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<kpb::CudaSharedMemoryRegisterResponse>, Status> {
        triton::unsupported("CudaSharedMemoryRegister", triton::CUDA_SHARED_MEMORY)
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<kpb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<kpb::CudaSharedMemoryUnregisterResponse>, Status> {
        triton::unsupported("CudaSharedMemoryUnregister", triton::CUDA_SHARED_MEMORY)
    }

    async fn trace_setting(
        &self,
        _: Request<kpb::TraceSettingRequest>,
    ) -> Result<Response<kpb::TraceSettingResponse>, Status> {
        triton::unsupported("TraceSetting", triton::TRACE)
    }

    async fn log_settings(
        &self,
        _: Request<kpb::LogSettingsRequest>,
    ) -> Result<Response<kpb::LogSettingsResponse>, Status> {
        triton::unsupported("LogSettings", triton::LOG)
    }
}

impl KserveService {
    async fn infer(
        &self,
        request: Request<kpb::ModelInferRequest>,
    ) -> Result<Response<kpb::ModelInferResponse>, Status> {
        let deadline = deadline_of(request.metadata());
        let header_key = header_routing_key(request.metadata());
        self.infer_message(request.into_inner(), deadline, header_key).await.map(Response::new)
    }

    /// ModelInfer's path, shared with ModelStreamInfer: `deadline` and
    /// `header_key` come from the call's metadata.
    async fn infer_message(
        &self,
        mut r: kpb::ModelInferRequest,
        deadline: Option<std::time::Instant>,
        header_key: Option<String>,
    ) -> Result<kpb::ModelInferResponse, Status> {
        // Mistakes caught while decoding never reach the gateway; count them here.
        let rejected = |e: GatewayError| Status::from(rejected(&self.gateway, &r.model_name, e));
        if r.model_name.is_empty() {
            return Err(rejected(BadRequest("model_name is not set".into()).into()));
        }
        // An unknown model is NOT_FOUND before anything about its inputs.
        self.gateway.check_model(&r.model_name).map_err(rejected)?;
        let version = match r.model_version.as_str() {
            "" => None,
            v => Some(v.parse::<i64>().map_err(|_| {
                rejected(BadRequest(format!("model_version {} is not a version number", quoted(v))).into())
            })?),
        };
        let request_id = request_id_or_new(std::mem::take(&mut r.id)).map_err(|e| rejected(e.into()))?;
        let routing_key = match r.parameters.get("routing_key").and_then(|p| p.parameter_choice.as_ref()) {
            None => routing_key(None, header_key),
            Some(kpb::infer_parameter::ParameterChoice::StringParam(k)) if !k.is_empty() => {
                routing_key(Some(k.clone()), header_key)
            }
            Some(_) => {
                return Err(rejected(
                    BadRequest("parameter routing_key must be a non-empty string".into()).into(),
                ));
            }
        };
        let inputs =
            inputs_from_request(std::mem::take(&mut r.inputs), std::mem::take(&mut r.raw_input_contents))
                .map_err(|e| rejected(e.into()))?;
        let outputs = r.outputs.iter().map(|o| o.name.clone()).collect();
        let resp = self
            .gateway
            .infer(InferRequest {
                model: r.model_name,
                version,
                routing_key,
                request_id,
                inputs,
                outputs,
                deadline,
            })
            .await
            .map_err(kserve_status)?;
        let mut out = kpb::ModelInferResponse {
            model_name: resp.model,
            model_version: resp.version.to_string(),
            id: resp.request_id,
            parameters: [
                ("version".to_string(), int_param(i64::try_from(resp.version).unwrap_or(i64::MAX))),
                ("role".to_string(), string_param(resp.role.as_str())),
            ]
            .into_iter()
            .collect(),
            outputs: Vec::with_capacity(resp.outputs.len()),
            raw_output_contents: Vec::with_capacity(resp.outputs.len()),
        };
        for t in resp.outputs {
            out.outputs.push(kpb::model_infer_response::InferOutputTensor {
                name: t.name.clone(),
                datatype: datatype_name(t.dtype()).into(),
                shape: t.shape.clone(),
                parameters: Default::default(),
                contents: None,
            });
            out.raw_output_contents.push(t.data.into_raw_bytes());
        }
        // The gateway checked the outputs' size; this is the exact one.
        self.gateway
            .check_response_size(&out.model_name, resp.version, prost::Message::encoded_len(&out))
            .map_err(kserve_status)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpb::model_infer_request::InferInputTensor;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<kpb::InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn raw_and_typed_decode_alike() {
        let raw = vec![[1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat().into()];
        let a = inputs_from_request(vec![input("x", "FP32", vec![1, 2], None)], raw).unwrap();
        let typed = kpb::InferTensorContents { fp32_contents: vec![1.0, 2.0], ..Default::default() };
        let b = inputs_from_request(vec![input("x", "FP32", vec![1, 2], Some(typed))], vec![]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].data, TensorData::Float32(vec![1.0, 2.0]));
    }

    #[test]
    fn bytes_int8_uint8_and_bool() {
        let mut raw = Vec::new();
        for s in ["ab", ""] {
            raw.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let t = inputs_from_request(vec![input("s", "BYTES", vec![2], None)], vec![raw.into()]).unwrap();
        assert_eq!(t[0].data, TensorData::String(vec!["ab".into(), String::new()]));
        let c = kpb::InferTensorContents { bytes_contents: vec![b"x".to_vec()], ..Default::default() };
        let t = inputs_from_request(vec![input("s", "BYTES", vec![1], Some(c))], vec![]).unwrap();
        assert_eq!(t[0].data, TensorData::String(vec!["x".into()]));
        let c = kpb::InferTensorContents { int_contents: vec![-128, 127], ..Default::default() };
        let t = inputs_from_request(vec![input("i", "INT8", vec![2], Some(c))], vec![]).unwrap();
        assert_eq!(t[0].data, TensorData::Int8(vec![-128, 127]));
        let c = kpb::InferTensorContents { int_contents: vec![128], ..Default::default() };
        let e = inputs_from_request(vec![input("i", "INT8", vec![1], Some(c))], vec![]).unwrap_err();
        assert!(e.0.contains("element 0 (128) does not fit INT8"), "{}", e.0);
        let c = kpb::InferTensorContents { uint_contents: vec![255], ..Default::default() };
        let t = inputs_from_request(vec![input("u", "UINT8", vec![1], Some(c))], vec![]).unwrap();
        assert_eq!(t[0].data, TensorData::Uint8(vec![255]));
        let t =
            inputs_from_request(vec![input("b", "BOOL", vec![2], None)], vec![vec![1u8, 0].into()]).unwrap();
        assert_eq!(t[0].data, TensorData::Bool(vec![true, false]));
        let e =
            inputs_from_request(vec![input("b", "BOOL", vec![1], None)], vec![vec![2u8].into()]).unwrap_err();
        assert!(e.0.starts_with("input 'b': BOOL elements must be 0 or 1"), "{}", e.0);
    }

    #[test]
    fn sixteen_bit_floats_are_raw_only_and_wide_unsigned_ints_typed() {
        let c = kpb::InferTensorContents { fp32_contents: vec![1.0], ..Default::default() };
        let e = inputs_from_request(vec![input("h", "FP16", vec![1], Some(c))], vec![]).unwrap_err();
        assert_eq!(
            e.0,
            "input 'h': FP16 has no typed contents field in KServe v2; send its elements in raw_input_contents \
             (2 little-endian bytes each)"
        );
        // An empty FP16 tensor needs no contents (the gateway then names the empty batch).
        let t = inputs_from_request(vec![input("h", "FP16", vec![0, 4], None)], vec![]).unwrap();
        assert!(t[0].data.is_empty() && t[0].dtype() == DataType::Float16);
        let t = inputs_from_request(vec![input("h", "BF16", vec![1], None)], vec![vec![0x80, 0x3f].into()])
            .unwrap();
        assert_eq!(
            t[0].data.owned().into_owned(),
            TensorData::Bfloat16(vec![modelgate_runtime::half::bf16::ONE])
        );
        let c = kpb::InferTensorContents { uint_contents: vec![u32::MAX], ..Default::default() };
        let t = inputs_from_request(vec![input("u", "UINT32", vec![1], Some(c))], vec![]).unwrap();
        assert_eq!(t[0].data, TensorData::Uint32(vec![u32::MAX]));
        let c = kpb::InferTensorContents { uint_contents: vec![65536], ..Default::default() };
        let e = inputs_from_request(vec![input("u", "UINT16", vec![1], Some(c))], vec![]).unwrap_err();
        assert_eq!(e.0, "input 'u': element 0 (65536) does not fit UINT16");
        let c = kpb::InferTensorContents { int_contents: vec![-32769], ..Default::default() };
        let e = inputs_from_request(vec![input("i", "INT16", vec![1], Some(c))], vec![]).unwrap_err();
        assert_eq!(e.0, "input 'i': element 0 (-32769) does not fit INT16");
        let c = kpb::InferTensorContents { uint64_contents: vec![u64::MAX], ..Default::default() };
        let t = inputs_from_request(vec![input("u", "UINT64", vec![1], Some(c))], vec![]).unwrap();
        assert_eq!(t[0].data, TensorData::Uint64(vec![u64::MAX]));
    }

    #[test]
    fn mistakes_name_the_input_and_what_was_wrong() {
        let err = |inputs, raw| inputs_from_request(inputs, raw).unwrap_err().0;
        assert_eq!(
            err(vec![input("x", "FP32", vec![1, 2], None)], vec![vec![0u8; 7].into()]),
            "input 'x': raw contents are 7 bytes, expected 8 (2 FLOAT32 elements)"
        );
        let typed = kpb::InferTensorContents { fp32_contents: vec![0.0], ..Default::default() };
        assert!(
            err(vec![input("x", "FP32", vec![1], Some(typed))], vec![vec![0u8; 4].into()])
                .contains("both in raw_input_contents and typed")
        );
        let typed = kpb::InferTensorContents { int64_contents: vec![1], ..Default::default() };
        assert_eq!(
            err(vec![input("x", "FP32", vec![1], Some(typed))], vec![]),
            "input 'x': datatype is FP32 but elements are in int64_contents; use fp32_contents or raw_input_contents"
        );
        let typed = kpb::InferTensorContents { fp32_contents: vec![0.0; 3], ..Default::default() };
        assert!(
            err(vec![input("x", "FP32", vec![2], Some(typed))], vec![])
                .contains("holds 2 elements but fp32_contents has 3")
        );
        assert!(
            err(vec![input("x", "FP8", vec![1], None)], vec![]).contains("datatype 'FP8' is not supported")
        );
        assert!(err(vec![input("x", "FP32", vec![-1, 2], None)], vec![]).contains("negative dimension"));
        assert!(
            err(vec![input("x", "FP32", vec![1, 2], None)], vec![]).contains("no contents for shape [1, 2]")
        );
        assert!(
            err(
                vec![input("x", "FP32", vec![1], None), input("y", "FP32", vec![1], None)],
                vec![vec![0u8; 4].into()]
            )
            .contains("raw_input_contents has 1 entries for 2 inputs")
        );
    }

    #[test]
    fn datatype_names_round_trip() {
        for d in [
            DataType::Float32,
            DataType::Float64,
            DataType::Int32,
            DataType::Int64,
            DataType::Bool,
            DataType::Uint8,
            DataType::Int8,
            DataType::String,
            DataType::Float16,
            DataType::Bfloat16,
            DataType::Int16,
            DataType::Uint16,
            DataType::Uint32,
            DataType::Uint64,
        ] {
            assert_eq!(datatype_from_name(datatype_name(d)), Some(d));
            assert!(SUPPORTED.contains(datatype_name(d)));
        }
    }
}
