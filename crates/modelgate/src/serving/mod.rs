//! Layer 3, serving: the request path. [`gateway`] routes a checked request
//! to a version's executor, records its outcome and offers it to the
//! [`shadow`] pool; [`convert`] turns protobuf tensors into runtime tensors
//! and back (the request path needs it, so it lives here rather than in
//! `api`); [`output_scores`] finds NaN/Inf and the scores the statistics
//! use; [`outcome`] joins late labels to predictions; [`gateway_error`] is
//! what can go wrong, with no gRPC in it (`api::error` maps it to a status).

pub mod convert;
pub mod gateway;
pub mod gateway_error;
pub mod outcome;
pub mod output_scores;
pub mod shadow;
