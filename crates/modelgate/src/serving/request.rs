//! A request as the request path sees it, whichever protocol it came in on,
//! what it answers, and the checks a request passes against the served
//! version's signature before it is queued.

use modelgate_rollout::Role;
use modelgate_runtime::Tensor;
use std::time::Instant;

/// Longest request id accepted; ids are echoed and logged.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// A request, decoded from whichever protocol it came in on.
#[derive(Debug)]
pub struct InferRequest {
    pub model: String,
    /// A pinned version; `None` lets the gateway route.
    pub version: Option<i64>,
    /// The sticky key; `None` falls back to the request id.
    pub routing_key: Option<String>,
    pub request_id: String,
    pub inputs: Vec<Tensor>,
    /// Outputs wanted; empty means all.
    pub outputs: Vec<String>,
    pub deadline: Option<Instant>,
}

/// A served request.
#[derive(Debug)]
pub struct InferResponse {
    pub model: String,
    pub version: u64,
    pub role: Role,
    pub request_id: String,
    pub outputs: Vec<Tensor>,
}

/// The checks a decoded request passes against the version's signature
/// before it is queued. An unnamed single input binds to the model's only
/// input, so simple clients need not know its name. Pure: the fuzz targets
/// (see [`crate::hostile`]) call exactly this.
pub fn check_request(
    signature: &modelgate_runtime::Signature,
    inputs: &mut [Tensor],
    outputs: &[String],
) -> Result<(), modelgate_runtime::InputError> {
    if let [only] = inputs
        && only.name.is_empty()
        && let [spec] = signature.inputs.as_slice()
    {
        only.name = spec.name.clone();
    }
    signature.check_inputs(inputs)?;
    signature.check_outputs(outputs)
}

/// What `outputs` take in a response: their elements in the raw layout
/// (strings with their 4-byte length) plus each tensor's name and shape. A
/// typed Predict response can be larger still; its handler checks the exact
/// encoded size too.
pub fn response_bytes(outputs: &[Tensor]) -> usize {
    outputs
        .iter()
        .map(|t| {
            let data = match &t.data {
                modelgate_runtime::TensorData::String(v) => v.iter().map(|s| s.len() + 4).sum(),
                modelgate_runtime::TensorData::Raw { bytes, .. } => bytes.len(),
                d => d.len() * d.dtype().element_size().unwrap_or(1),
            };
            data + t.name.len() + t.shape.len() * 10 + 16
        })
        .sum()
}
