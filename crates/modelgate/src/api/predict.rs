//! The modelgate.v1 Predict service: decodes requests into [`InferRequest`]s
//! and encodes [`InferResponse`]s. Nothing here knows about models.

use std::sync::Arc;

use modelgate_proto::v1 as pb;
use modelgate_registry::VersionState;
use tonic::{Request, Response, Status};

use crate::api::error::GatewayError;
use crate::api::inference::{
    deadline_of, header_routing_key, in_request_span, rejected, request_id_or_new, routing_key,
};
use crate::serving::convert::{self, BadRequest};
use crate::serving::gateway::Gateway;
use crate::serving::request::InferRequest;
use modelgate_rollout::Role;

// hostile/ calls it from here; it lives in `api::inference` now.

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
        in_request_span(request, "modelgate.v1.Predict/Predict", |r| self.predict_in_span(r)).await
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
        let header_key = header_routing_key(request.metadata());
        let mut req = request.into_inner();
        let typed = req.typed_outputs;
        let inputs = std::mem::take(&mut req.inputs);
        // Mistakes caught while decoding never reach the gateway; count them here.
        let rejected = |e: GatewayError| rejected(&self.gateway, &req.model, e);
        let request_id =
            request_id_or_new(std::mem::take(&mut req.request_id)).map_err(|e| rejected(e.into()))?;
        if req.model.is_empty() {
            return Err(rejected(BadRequest("model is not set".into()).into()).into());
        }
        self.gateway.check_model(&req.model).map_err(rejected)?;
        let inputs = convert::inputs_from_pb(inputs).map_err(|e| rejected(e.into()))?;
        let routing_key = routing_key(Some(req.routing_key), header_key);
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
        let model = table.find(&name)?;
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
