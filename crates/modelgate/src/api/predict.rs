//! The modelgate.v1 Predict service: decodes requests into [`InferRequest`]s
//! and encodes [`InferResponse`]s. Nothing here knows about models.

use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_registry::VersionState;
use tonic::{Request, Response, Status};

use crate::api::error::GatewayError;
use crate::serving::convert::{self, BadRequest};
use crate::serving::gateway::{Gateway, InferRequest, Role};

pub use crate::serving::gateway::MAX_REQUEST_ID_BYTES;

/// How much earlier than the client's deadline the gateway gives up. tonic's
/// own timeout layer answers CANCELLED at the deadline itself; answering a
/// little before it makes the client see DEADLINE_EXCEEDED, as gRPC intends.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// The `Predict` gRPC service.
#[derive(Debug, Clone)]
pub struct PredictService {
    gateway: Arc<Gateway>,
}

impl PredictService {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

/// Parses gRPC's `grpc-timeout` header ("100m", "5S", ...).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline a request carries, if any.
pub fn deadline_of(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let timeout = metadata.get("grpc-timeout")?.to_str().ok().and_then(parse_grpc_timeout)?;
    Some(Instant::now() + timeout.saturating_sub(DEADLINE_MARGIN))
}

/// The request id to use: the client's, or a new one.
pub fn request_id_or_new(id: String) -> Result<String, BadRequest> {
    if id.is_empty() {
        return Ok(uuid::Uuid::new_v4().simple().to_string());
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(BadRequest(format!(
            "request_id is {} bytes, at most {MAX_REQUEST_ID_BYTES} allowed",
            id.len()
        )));
    }
    Ok(id)
}

pub fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Champion => pb::Role::Champion,
        Role::Canary => pb::Role::Canary,
        Role::Challenger => pb::Role::Challenger,
        Role::Blue => pb::Role::Blue,
        Role::Green => pb::Role::Green,
        Role::Control => pb::Role::Control,
        Role::Treatment => pb::Role::Treatment,
        Role::Shadow => pb::Role::Shadow,
        Role::Pinned => pb::Role::Pinned,
    }
}

#[tonic::async_trait]
impl pb::predict_server::Predict for PredictService {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        use tracing::Instrument;
        let span = crate::telemetry::otel::request_span(request.metadata(), "modelgate.v1.Predict/Predict");
        let result = self.predict_in_span(request).instrument(span.clone()).await;
        crate::telemetry::otel::record_status(
            &span,
            result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok),
        );
        result
    }

    async fn record_outcome(
        &self,
        request: Request<pb::RecordOutcomeRequest>,
    ) -> Result<Response<pb::RecordOutcomeResponse>, Status> {
        self.record_outcome_impl(request).await
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        self.model_metadata_impl(request).await
    }
}

impl PredictService {
    async fn predict_in_span(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        let deadline = deadline_of(request.metadata());
        let header_key =
            request.metadata().get("x-routing-key").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut req = request.into_inner();
        let typed = req.typed_outputs;
        let inputs = std::mem::take(&mut req.inputs);
        // Mistakes caught while decoding never reach the gateway; count them here.
        let rejected = |e: GatewayError| {
            let known = self.gateway.table().models.contains_key(&req.model);
            self.gateway.metrics().rejected(known.then_some(req.model.as_str()), e.code());
            e
        };
        let request_id =
            request_id_or_new(std::mem::take(&mut req.request_id)).map_err(|e| rejected(e.into()))?;
        if req.model.is_empty() {
            return Err(rejected(BadRequest("model is not set".into()).into()).into());
        }
        self.gateway.check_model(&req.model).map_err(rejected)?;
        let inputs = convert::inputs_from_pb(inputs).map_err(|e| rejected(e.into()))?;
        let routing_key = Some(req.routing_key).filter(|k| !k.is_empty()).or(header_key);
        let resp = self
            .gateway
            .infer(InferRequest {
                model: req.model,
                version: req.version,
                routing_key,
                request_id,
                inputs,
                outputs: req.output_names,
                deadline,
            })
            .await?;
        let version = resp.version;
        let out = pb::PredictResponse {
            model: resp.model,
            version: i64::try_from(resp.version).unwrap_or(i64::MAX),
            role: role_to_pb(resp.role) as i32,
            request_id: resp.request_id,
            outputs: resp.outputs.into_iter().map(|t| convert::tensor_to_pb(t, typed)).collect(),
        };
        // The gateway checked the outputs' raw size; typed elements encode
        // larger (a negative INT8 is a 10-byte varint), so check what tonic
        // will encode, before it does.
        self.gateway.check_response_size(&out.model, version, prost::Message::encoded_len(&out))?;
        Ok(Response::new(out))
    }

    async fn record_outcome_impl(
        &self,
        request: Request<pb::RecordOutcomeRequest>,
    ) -> Result<Response<pb::RecordOutcomeResponse>, Status> {
        let r = request.into_inner();
        // Negative is as far out of the window as a timestamp gets.
        let at_ms = (r.timestamp_ms != 0).then(|| u64::try_from(r.timestamp_ms).unwrap_or(0));
        let joined = self.gateway.record_outcome(
            &r.model,
            &r.request_id,
            &r.routing_key,
            &r.metric,
            r.value,
            at_ms,
            crate::clock::now_ms(),
        )?;
        Ok(Response::new(match joined {
            Some((version, role)) => pb::RecordOutcomeResponse {
                joined: true,
                version: i64::try_from(version).unwrap_or(i64::MAX),
                role: role_to_pb(role) as i32,
            },
            None => pb::RecordOutcomeResponse::default(),
        }))
    }

    async fn model_metadata_impl(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let name = request.into_inner().model;
        let table = self.gateway.table();
        let Some(model) = table.models.get(&name) else {
            let mut names: Vec<&str> = table.models.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(GatewayError::ModelNotFound { model: name, available: names.join(", ") }.into());
        };
        let champion = model.champion().map(|c| c.version);
        let versions = model.versions.values().map(|v| version_metadata(v, champion)).collect::<Vec<_>>();
        Ok(Response::new(pb::ModelMetadataResponse {
            model: model.name.clone(),
            versions,
            champion: champion.map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX)),
        }))
    }
}

/// A version as metadata: state, reason, role, signature, checksum, size.
pub fn version_metadata(v: &modelgate_registry::VersionEntry, champion: Option<u64>) -> pb::VersionMetadata {
    let mut meta =
        pb::VersionMetadata { version: i64::try_from(v.version).unwrap_or(i64::MAX), ..Default::default() };
    match &v.state {
        VersionState::Ready(r) => {
            let m = r.model();
            meta.state = pb::VersionState::Ready as i32;
            meta.inputs = m.signature().inputs.iter().map(convert::spec_to_pb).collect();
            meta.outputs = m.signature().outputs.iter().map(convert::spec_to_pb).collect();
            meta.sha256 = m.sha256().to_string();
            meta.size_bytes = m.size_bytes();
            if champion == Some(v.version) {
                meta.role = pb::Role::Champion as i32;
            }
        }
        VersionState::Failed(reason) => {
            meta.state = pb::VersionState::Failed as i32;
            meta.reason = reason.clone();
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id_or_new(String::new()).unwrap().len(), 32);
        assert_eq!(request_id_or_new("abc".into()).unwrap(), "abc");
        assert!(request_id_or_new("x".repeat(300)).is_err());
    }
}
