//! The one place errors become gRPC statuses: the gateway's and the control
//! plane's. A client's mistake is never INTERNAL; INTERNAL means ONNX
//! Runtime failed on valid input, or the server failed itself (a state that
//! does not serialise).

use modelgate_runtime::quote::truncated;
use tonic::{Code, Status};

pub use crate::control::error::ControlError;
pub use crate::serving::gateway_error::GatewayError;

/// Longest `grpc-message` sent. Client strings in messages are already cut
/// ([`quoted`]); this bounds a message that lists many of them, well under
/// the 16 KiB of headers HTTP/2 clients accept by default.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4096;

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        bounded_status(e.code(), &e.to_string())
    }
}

impl ControlError {
    pub fn code(&self) -> Code {
        match self {
            Self::ModelNotFound(_) => Code::NotFound,
            Self::NoRollout(_) | Self::Busy { .. } | Self::Precondition(_) => Code::FailedPrecondition,
            Self::Invalid(_) => Code::InvalidArgument,
            Self::Conflict(_) => Code::Aborted,
            Self::Store(_) => Code::Unavailable,
            Self::UnknownStateFormat { .. } => Code::FailedPrecondition,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        bounded_status(e.code(), &e.to_string())
    }
}

/// A body over a budget is the server's resource running out; a body that
/// does not arrive in time has run past a deadline the server set.
impl From<crate::api::request_body::BodyLimitError> for Status {
    fn from(e: crate::api::request_body::BodyLimitError) -> Self {
        use crate::api::request_body::BodyLimitError as E;
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

#[cfg(test)]
mod tests {
    use modelgate_rollout::{PlanError, RolloutError};

    use super::*;
    use crate::control::plan_refused;

    fn code(e: impl Into<RolloutError>) -> Code {
        Status::from(plan_refused(e)).code()
    }

    #[test]
    fn a_wrong_plan_is_invalid_argument_a_missing_version_a_precondition() {
        assert_eq!(
            code(PlanError::StepsNotIncreasing { index: 1, percent: 10, previous: 50 }),
            Code::InvalidArgument
        );
        assert_eq!(code(PlanError::ZeroWeight { name: "b".into() }), Code::InvalidArgument);
        assert_eq!(code(PlanError::Empty { field: "steps" }), Code::InvalidArgument);
        assert_eq!(
            code(RolloutError::Triggers(modelgate_rollout::TriggerRangeError {
                field: "min_samples",
                expected: "between 1 and 1000000000",
                got: "0".into(),
            })),
            Code::InvalidArgument
        );
        assert_eq!(
            code(PlanError::VersionNotReady { version: 9, ready: vec![1, 2] }),
            Code::FailedPrecondition
        );
        assert_eq!(code(PlanError::IsChampion { version: 2 }), Code::FailedPrecondition);
    }

    #[test]
    fn a_server_failure_in_control_is_internal_and_says_what_failed() {
        let s = Status::from(ControlError::Internal(
            "cannot serialise the rollout state: key must be a string".into(),
        ));
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error: cannot serialise the rollout state: key must be a string");
    }
}
