//! Layer 1, telemetry: the Prometheus registry and its metric families
//! ([`metrics`]), OpenTelemetry tracing and the log format ([`otel`]).
//! Nothing here imports another module of the crate.

pub mod metrics;
pub mod otel;
