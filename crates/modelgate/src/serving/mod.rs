//! Layer 3, serving: the request path. [`gateway`] is the path itself
//! (route, check, run, record, offer to the [`shadow`] pool); [`routing`] is
//! the model table it reads (an immutable snapshot, private fields);
//! [`request`] is the request type and its checks against the signature;
//! [`input_samples`] keeps a few live inputs for the importance check;
//! [`convert`] turns protobuf tensors into runtime tensors and back (the
//! request path needs it, so it lives here rather than in `api`);
//! [`output_scores`] finds NaN/Inf and the scores the statistics use;
//! [`outcome`] joins late labels to predictions; [`gateway_error`] is what
//! can go wrong, with no gRPC in it (`api::error` maps it to a status).

pub mod convert;
pub mod gateway;
pub mod gateway_error;
pub mod input_samples;
pub mod outcome;
pub mod output_scores;
pub mod records;
pub mod request;
pub mod routing;
pub mod shadow;
