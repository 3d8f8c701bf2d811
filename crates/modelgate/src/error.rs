//! The one place gateway errors become gRPC statuses. A client's mistake is
//! never INTERNAL; INTERNAL means ONNX Runtime failed on valid input.

use std::time::Duration;

use modelgate_runtime::quote::{quoted, truncated};
use modelgate_runtime::{InputError, StopReason};
use tonic::{Code, Status};

use crate::convert::BadRequest;
use crate::outcome::OutcomeError;

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

impl GatewayError {
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

/// Longest `grpc-message` sent. Client strings in messages are already cut
/// ([`quoted`]); this bounds a message that lists many of them, well under
/// the 16 KiB of headers HTTP/2 clients accept by default.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4096;

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        bounded_status(e.code(), &e.to_string())
    }
}

/// A body over a budget is the server's resource running out; a body that
/// does not arrive in time has run past a deadline the server set.
impl From<crate::request_body::BodyLimitError> for Status {
    fn from(e: crate::request_body::BodyLimitError) -> Self {
        use crate::request_body::BodyLimitError as E;
        let code = match e {
            E::ConnectionBudget { .. } | E::ListenerBudget { .. } => Code::ResourceExhausted,
            E::Timeout { .. } => Code::DeadlineExceeded,
        };
        Status::new(code, e.to_string())
    }
}

/// A status whose message is at most [`MAX_STATUS_MESSAGE_BYTES`].
pub fn bounded_status(code: Code, message: &str) -> Status {
    Status::new(code, truncated(message, MAX_STATUS_MESSAGE_BYTES))
}

/// tonic answers a request over `max_decoding_message_size` with OUT_OF_RANGE;
/// gRPC's convention (and every other server's) is RESOURCE_EXHAUSTED. This
/// response map rewrites exactly that status, keeping tonic's numbers.
pub fn oversize_to_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    if resp.headers().get("grpc-status").map(|v| v.as_bytes()) != Some(b"11") {
        return resp;
    }
    let Some(status) = Status::from_header_map(resp.headers()) else {
        return resp;
    };
    if !status.message().contains("message length too large") {
        return resp;
    }
    let found =
        status.message().split("found ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or("?").to_string();
    let limit = status
        .message()
        .split("limit is: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or("?")
        .to_string();
    let rewritten = Status::resource_exhausted(format!(
        "request is {found} bytes, over the {limit}-byte limit (--max-request-bytes)"
    ));
    let _ = rewritten.add_header(resp.headers_mut());
    resp
}
