//! Layer 1, telemetry: the Prometheus registry and its metric families
//! ([`metrics`]), OpenTelemetry tracing and the log format ([`otel`]), the
//! OTLP exporter ([`otlp`]) and the server span of any gRPC call
//! ([`server_span`]). Nothing here imports another module of the crate.

pub mod metrics;
pub mod otel;
pub mod otlp;
pub mod server_span;
