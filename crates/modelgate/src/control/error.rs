//! The control plane's errors. No gRPC here: `api/error.rs` is the one
//! place they become statuses.

use modelgate_rollout::{PlanError, RolloutError};

/// A control-plane failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    #[error("model '{0}' has no rollout")]
    NoRollout(String),
    #[error(
        "model '{model}' already has a running {strategy} rollout ({id}); finish, abort or roll it back first"
    )]
    Busy { model: String, strategy: String, id: String },
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    /// Another replica changed the rollout first; this change was not made.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The stored state was written in a format this build does not read.
    #[error(
        "{origin} holds rollout state in format {found}, which this build does not read (it knows format {known}); nothing was read or written: run the modelgate that wrote it, or move the state aside to start without rollout state"
    )]
    UnknownStateFormat { origin: String, found: String, known: String },
    /// This server failed, not the request: a state or an event that does
    /// not serialise, the controller held where it must be free. Nothing
    /// was written.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A plan the rollout crate refused. A plan that is wrong whatever the
/// server holds (a step out of range, a duplicate, an arm too small for a
/// bucket) is the client's mistake, INVALID_ARGUMENT; one naming a version
/// that is not READY, or the champion itself, depends on the server's state,
/// FAILED_PRECONDITION.
pub fn plan_refused(e: impl Into<RolloutError>) -> ControlError {
    let e = e.into();
    match &e {
        RolloutError::Plan(PlanError::VersionNotReady { .. } | PlanError::IsChampion { .. }) => {
            ControlError::Precondition(e.to_string())
        }
        RolloutError::Plan(_) | RolloutError::Triggers(_) | RolloutError::NestedShadow => {
            ControlError::Invalid(e.to_string())
        }
        _ => ControlError::Precondition(e.to_string()),
    }
}
