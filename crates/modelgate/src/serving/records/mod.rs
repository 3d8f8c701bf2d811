//! Records for offline analysis (issue 18): what a shadow copy predicted
//! beside the champion, and the business outcomes reported for served
//! requests, in one versioned schema that every sink writes.
//!
//! The schema is `SCHEMA_VERSION` 1. A record is one JSON object (JSON lines
//! in files, one Kafka message each) tagged by `kind`: `prediction` or
//! `outcome`; the Parquet sink writes the same fields as columns (its Arrow
//! schema is derived from these types; see `parquet`). A field is only ever
//! added, never renamed or retyped, within a schema version; readers ignore
//! fields they do not know.
//!
//! Sinks are [`RecordWriter`]s: blocking writers that run on their own
//! background thread behind a bounded queue, so a slow or dead broker or
//! bucket never reaches the request path (the queue drops and counts).

// Until the queue and sinks use every item (issue 18, in progress): H1 removes this.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

pub mod kafka;

/// The schema version every record carries in `schema`.
pub const SCHEMA_VERSION: u32 = 1;

/// One record: a shadow's prediction beside the champion's, or an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Prediction(PredictionRecord),
    Outcome(OutcomeRecord),
}

impl Record {
    /// The SHA-256-prefix hash of the routing key (never the key), which is
    /// also the Kafka message key so one user's records stay in order.
    pub fn routing_key_hash(&self) -> Option<&str> {
        match self {
            Record::Prediction(p) => p.routing_key_hash.as_deref(),
            Record::Outcome(o) => o.routing_key_hash.as_deref(),
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Record::Prediction(p) => &p.model,
            Record::Outcome(o) => &o.model,
        }
    }

    /// Unix ms of the prediction or of the outcome.
    pub fn ts_ms(&self) -> i64 {
        match self {
            Record::Prediction(p) => p.ts_ms,
            Record::Outcome(o) => o.ts_ms,
        }
    }
}

/// A shadow copy of one request, beside the champion's answer to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub schema: u32,
    /// When the shadow's result was compared, unix ms.
    pub ts_ms: i64,
    pub request_id: String,
    pub model: String,
    /// The replica that served it (fleet mode: its id; else the host name).
    pub replica: String,
    pub champion_version: u64,
    /// The role of the version that answered the client (champion, canary…).
    pub champion_role: String,
    pub shadow_version: u64,
    pub shadow_role: String,
    pub routing_key_hash: Option<String>,
    pub champion_latency_us: u64,
    pub shadow_latency_us: u64,
    /// Set when the shadow failed; then `outputs` holds the champion's only.
    pub shadow_error: Option<String>,
    pub outputs: Vec<OutputRecord>,
    /// The request's inputs, when the model's model.toml asks for them
    /// (`[records] inputs = true`); absent by default.
    pub inputs: Option<Vec<TensorValues>>,
}

/// One output of both versions and how they differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub name: String,
    pub champion: TensorValues,
    /// Absent when the shadow failed or lacked this output.
    pub shadow: Option<TensorValues>,
    /// Elements compared (0 when shapes or dtypes differ).
    pub elements: u64,
    pub max_abs_diff: Option<f64>,
    pub mean_abs_diff: Option<f64>,
    /// Share of equal elements, for integer, bool and string outputs.
    pub agreement: Option<f64>,
    pub champion_nan_inf: u64,
    pub shadow_nan_inf: u64,
    /// Why the two could not be compared element by element.
    pub mismatch: Option<String>,
}

/// A tensor's values as a record keeps them: every element up to the
/// size cap (numbers as f64, strings as text), else only summary
/// statistics with `truncated` set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorValues {
    /// FP32, INT64, BYTES… (the KServe v2 names).
    pub dtype: String,
    pub shape: Vec<i64>,
    /// Numeric elements in row-major order (bool as 0/1); empty when
    /// truncated or for strings. NaN and ±Inf are written as null in JSON.
    pub values: Vec<Option<f64>>,
    /// String elements (BYTES outputs), when not truncated.
    pub strings: Vec<String>,
    /// Set when the tensor had more elements than the cap: `values` and
    /// `strings` are empty and only the statistics below describe it.
    pub truncated: bool,
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// A business outcome reported through RecordOutcome, with the version it
/// was joined to, so outcomes and predictions join offline on `request_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub schema: u32,
    /// When the outcome happened (the caller's timestamp, else arrival), unix ms.
    pub ts_ms: i64,
    pub request_id: String,
    pub model: String,
    pub replica: String,
    pub routing_key_hash: Option<String>,
    pub metric: String,
    pub value: f64,
    /// Whether the gateway joined it to a served version.
    pub joined: bool,
    /// The version and role that served the request, when joined.
    pub version: Option<u64>,
    pub role: Option<String>,
}

/// Why a sink could not write a batch. The queue retries a batch with
/// backoff and drops it (counted) when it keeps failing or the buffer is full.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: a broker or bucket that is down or slow.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (a record the destination refuses).
    #[error("{0}")]
    Permanent(String),
}

/// A destination for records, driven by one background thread: `write` is
/// called with batches in order, `flush` when the queue is idle, at a size
/// or time boundary and at shutdown. Implementations may block (that is
/// what the thread is for) but should bound each call by their own timeouts.
pub trait RecordWriter: Send + 'static {
    /// The sink's name in metrics and logs: `file`, `kafka`, `parquet`.
    fn name(&self) -> &'static str;
    /// Writes (or hands to the client library) every record of `batch`.
    fn write(&mut self, batch: &[Record]) -> Result<(), SinkError>;
    /// Makes what was written durable and visible to readers.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Records an asynchronous sink accepted in an earlier `write` and then
    /// failed to deliver (Kafka: broker down past `message.timeout.ms`), since
    /// the last call. The queue thread calls it after each `write` and
    /// `flush` and counts them as dropped; sinks that fail in `write` itself
    /// keep the default.
    fn take_undelivered(&mut self) -> u64 {
        0
    }
}
