//! modelgate: the gateway binary's library, in layers (lowest first; each
//! imports only from layers below it; `tests/layers.rs` checks it, and
//! docs/architecture.md "Layers of the binary crate" draws it):
//!
//! 1. [`clock`] and `telemetry` (metrics registry, OpenTelemetry, log format);
//! 2. `store` (the state store: file or etcd);
//! 3. `serving` (the request path: gateway, conversions, shadow, outcomes);
//! 4. `control` (the controller: count, judge, alert, decide, persist);
//! 5. `api` (the gRPC services, auth, TLS, connection limits, errors → status);
//! 6. `server` (composition root: start, stop, config);
//! 7. [`cli`] (clap types and the client commands).
//!
//! [`hostile`] runs untrusted bytes through the decoders for the fuzz
//! targets; [`decisions`] opens the controller's decision functions to the
//! decision simulator (benches, `make bench-decisions`). Only what main.rs, the tests, benches and fuzz targets use is
//! public; it is re-exported below.

pub(crate) mod api;
pub mod cli;
pub mod clock;
pub(crate) mod control;
pub mod hostile;
pub(crate) mod server;
pub(crate) mod serving;
pub(crate) mod store;
pub(crate) mod telemetry;

/// The functions the controller decides with, for the decision simulator
/// (benches/src/decisions): re-exported as they are, so the simulator
/// measures the controller's own code. Nothing here is used by the gateway.
pub mod decisions {
    pub use crate::api::admin_views::sample_ratio_mismatch;
    pub use crate::control::analysis::{
        ArmNumbers, Comparison, MetricPlan, MetricRow, Settings, compare_errors, judge_step, metric_plan,
        metric_rows,
    };
    pub use crate::control::analysis::{RunningTotals, StepProgress};
    pub use crate::control::analysis::{
        ab_verdict_test, kpi_regression, metric_decisions_of, metric_rows_of,
    };
    pub use crate::control::counts::StageCounts;
    pub use crate::control::detectors::{RolloutDetectors, counts_of};
    pub use crate::control::judge::hard_trigger;
    pub use crate::control::observation_of;
    pub use crate::serving::outcome::MetricSummary;
    pub use crate::serving::outcome::{OutcomeLimits, OutcomeStore};
    pub use modelgate_rollout::HardTriggers;
}

pub use server::config::ServeConfig;
pub use server::run::serve;
pub use server::{RunningServer, start};

// What the tests, benches and fuzz targets use from inside the layers.
pub use api::auth::Token;
pub use api::predict::PredictService;
pub use api::tls::TlsFiles;
// The floor server (benches) describes tensors exactly as the gateway does.
pub use serving::convert::{dtype_to_pb, output_from_pb, spec_to_pb};
pub use serving::gateway::Gateway;
pub use serving::records::KafkaSecurity;
#[cfg(feature = "kafka")]
pub use serving::records::kafka::{KafkaWriter, kafka_writer};
pub use serving::records::{
    OutcomeRecord, OutputRecord, PredictionRecord, Record, RecordWriter, SCHEMA_VERSION, SinkError,
    TensorValues,
};
pub use serving::request::InferRequest;
// The record schema and its sinks, for the sink tests (issue 18).
pub use serving::records;
pub use store::etcd::{EtcdAccess, EtcdUrl};
pub use store::{EtcdStore, StateStore};
pub use telemetry::otel::{LogFormat, TraceConfig, init as init_telemetry};
