//! Why the gateway could not answer a request: the request path's own error
//! type and the gRPC code it means (the request path labels its metrics with
//! it). Only `api::error` turns it into a `tonic::Status`.

use std::time::Duration;

use modelgate_runtime::quote::quoted;
use modelgate_runtime::{InputError, StopReason};
use tonic::Code;

use crate::serving::convert::BadRequest;
use crate::serving::outcome::OutcomeError;

/// Why the gateway could not answer a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("model {} not found; models served: {available}", quoted(.model))]
    ModelNotFound { model: String, available: String },
    #[error("version {version} of model '{model}' not found; versions: {known}")]
    VersionNotFound { model: String, version: i64, known: String },
    #[error("version {version} of model '{model}' is FAILED and never served: {reason}")]
    VersionFailed { model: String, version: u64, reason: String },
    #[error("model '{model}' has no READY version")]
    NoReadyVersion { model: String },
    #[error("{0}")]
    BadRequest(#[from] BadRequest),
    #[error("model '{model}' version {version}: {error}")]
    Input { model: String, version: u64, error: InputError },
    #[error("model '{model}' version {version}: queue is full ({capacity} requests waiting); retry later")]
    QueueFull { model: String, version: u64, capacity: usize },
    #[error("model '{model}' version {version}: deadline exceeded after {waited:?}; the request was not run")]
    DeadlineExceeded { model: String, version: u64, waited: Duration },
    #[error(
        "model '{model}' version {version}: deadline exceeded after {after:?} while the request ran; the run is \
         being stopped"
    )]
    DeadlineExceededRunning { model: String, version: u64, after: Duration },
    #[error("model '{model}' version {version}: the run was stopped after {ran:?}: {reason}")]
    Stopped { model: String, version: u64, reason: StopReason, ran: Duration },
    #[error(
        "model '{model}' version {version}: ONNX Runtime could not allocate memory for this request: {message}"
    )]
    OutOfMemory { model: String, version: u64, message: String },
    #[error("model '{model}' version {version}: inference failed in ONNX Runtime: {message}")]
    Inference { model: String, version: u64, message: String },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error(
        "model '{model}' version {version}: the response would be {bytes} bytes, over the {limit}-byte limit (--max-response-bytes); ask for fewer rows or outputs"
    )]
    ResponseTooLarge { model: String, version: u64, bytes: usize, limit: usize },
    #[error("{0}")]
    Outcome(#[from] OutcomeError),
}

impl GatewayError {
    /// The error for a job of `model`'s `version` the executor would not queue.
    pub fn from_submit(model: &str, version: u64, error: modelgate_runtime::SubmitError) -> Self {
        match error {
            modelgate_runtime::SubmitError::QueueFull { capacity } => {
                Self::QueueFull { model: model.to_string(), version, capacity }
            }
            modelgate_runtime::SubmitError::Shutdown => Self::ShuttingDown,
        }
    }

    /// The error for a run of `model`'s `version` that produced no outputs.
    pub fn from_run(model: &str, version: u64, error: modelgate_runtime::RunError) -> Self {
        use modelgate_runtime::RunError;
        let model = model.to_string();
        match error {
            RunError::DeadlineExceeded { waited } => Self::DeadlineExceeded { model, version, waited },
            RunError::Stopped { reason, ran } => Self::Stopped { model, version, reason, ran },
            RunError::OutOfMemory(message) => Self::OutOfMemory { model, version, message },
            RunError::Inference(message) => Self::Inference { model, version, message },
        }
    }
}

impl GatewayError {
    /// The gRPC code this error is answered with, which the request path
    /// also labels its metrics with; `api::error` builds the status.
    pub fn code(&self) -> Code {
        match self {
            Self::ModelNotFound { .. } | Self::VersionNotFound { .. } | Self::VersionFailed { .. } => {
                Code::NotFound
            }
            Self::NoReadyVersion { .. } | Self::ShuttingDown => Code::Unavailable,
            Self::BadRequest(_) | Self::Input { .. } => Code::InvalidArgument,
            Self::QueueFull { .. } | Self::ResponseTooLarge { .. } => Code::ResourceExhausted,
            Self::Outcome(e) => e.code(),
            Self::DeadlineExceeded { .. } | Self::DeadlineExceededRunning { .. } => Code::DeadlineExceeded,
            Self::Stopped { reason, .. } => match reason {
                // The model's own max_run_ms: the run took too long, which a
                // client cannot fix by retrying at once.
                StopReason::Deadline | StopReason::TimeLimit(_) => Code::DeadlineExceeded,
                StopReason::Cancelled => Code::Cancelled,
                StopReason::Shutdown => Code::Unavailable,
            },
            Self::OutOfMemory { .. } => Code::ResourceExhausted,
            Self::Inference { .. } => Code::Internal,
        }
    }
}
