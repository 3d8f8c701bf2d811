//! Layer 5, api: the gRPC edges. [`predict`] (modelgate.v1 Predict),
//! [`kserve`] (KServe v2 / Triton) and [`admin`] (rollouts; its answers are
//! built in [`admin_views`]) are the
//! services; [`inference`] is what Predict and KServe share before the
//! gateway (span, deadline, request id, routing key, refusals counted);
//! [`auth`] and [`tls`] guard them; [`connection`] and
//! [`request_body`] bound what a connection and a body may cost; [`error`]
//! is the one place an internal error becomes a `tonic::Status`.

pub mod admin;
pub mod admin_views;
pub mod auth;
pub mod connection;
pub mod error;
pub mod inference;
pub mod kserve;
pub mod predict;
pub mod request_body;
pub mod tls;
