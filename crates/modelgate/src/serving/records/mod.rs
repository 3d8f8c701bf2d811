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

pub mod file;
pub mod queue;

pub use file::FileWriter;
pub use queue::{QueueSettings, RecordSinks};

use modelgate_runtime::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// The Kafka sink: librdkafka compiled from C, so it is a cargo feature
/// (`kafka`, on by default) that builds without it can leave out (the fuzz
/// targets do: their sanitizer flags break librdkafka's C build).
#[cfg(feature = "kafka")]
pub mod kafka;
mod kafka_security;
pub mod parquet;

pub use kafka_security::KafkaSecurity;

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

impl TensorValues {
    /// `tensor`'s values, or only its statistics when it has more than
    /// `max_values` elements.
    pub fn of(tensor: &Tensor, max_values: usize) -> Self {
        let data = tensor.data.owned();
        let numbers: Option<Vec<f64>> = match &*data {
            TensorData::Float32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Float64(v) => Some(v.clone()),
            TensorData::Float16(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Bfloat16(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Int32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Int64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            TensorData::Int16(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Int8(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Uint8(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Uint16(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Uint32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
            TensorData::Uint64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            TensorData::Bool(v) => Some(v.iter().map(|&x| f64::from(u8::from(x))).collect()),
            TensorData::String(_) | TensorData::Raw { .. } => None,
        };
        let count = data.len();
        let truncated = count > max_values;
        let mut out = Self {
            dtype: tensor.dtype().kserve_name().to_string(),
            shape: tensor.shape.clone(),
            values: Vec::new(),
            strings: Vec::new(),
            truncated,
            count: count as u64,
            min: None,
            max: None,
            mean: None,
        };
        match (numbers, &*data) {
            (Some(v), _) => {
                // Statistics over the finite elements: one NaN would hide the rest.
                let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
                if !finite.is_empty() {
                    out.min = Some(finite.iter().copied().fold(f64::INFINITY, f64::min));
                    out.max = Some(finite.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                    out.mean = Some(finite.iter().sum::<f64>() / finite.len() as f64);
                }
                if !truncated {
                    out.values = v.into_iter().map(|x| x.is_finite().then_some(x)).collect();
                }
            }
            (None, TensorData::String(v)) if !truncated => out.strings = v.clone(),
            _ => {}
        }
        out
    }
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

/// What every sink is opened with.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// This replica's id: file names and records carry it.
    pub replica: String,
    /// The file sink's rotation size (`--shadow-file-bytes`).
    pub file_max_bytes: u64,
    /// TLS/SASL for `kafka://` sinks (`--kafka-*` flags; they win over the
    /// URL's own keys).
    pub kafka: KafkaSecurity,
}

/// Why a `--records` destination cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("--records {url}: {why}")]
    Bad { url: String, why: String },
    #[error("--records {url}: {source}")]
    Io { url: String, source: std::io::Error },
}

/// Opens the sink a `--records` URL names: the one place a new sink plugs
/// in (a scheme here, its writer in its own file beside this one).
pub fn open(url: &str, ctx: &SinkContext) -> Result<Box<dyn RecordWriter>, OpenError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(OpenError::Bad {
            url: url.into(),
            why: "expected a URL such as file:///var/lib/modelgate/records, kafka://… or s3://…".into(),
        });
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(OpenError::Bad {
                    url: url.into(),
                    why: "a file:// URL needs an absolute directory (file:///dir)".into(),
                });
            }
            let writer = FileWriter::open(std::path::Path::new(rest), &ctx.replica, ctx.file_max_bytes)
                .map_err(|source| OpenError::Io { url: url.into(), source })?;
            Ok(Box::new(writer))
        }
        // Object storage holds Parquet tables; `parquet+file://` writes them
        // to a local (or mounted) directory.
        "parquet+file" | "parquet+s3" | "parquet+s3a" | "parquet+gs" | "parquet+az" | "s3" | "s3a" | "gs"
        | "az" => {
            parquet::parquet_writer(url, &ctx.replica).map_err(|why| OpenError::Bad { url: url.into(), why })
        }
        #[cfg(feature = "kafka")]
        "kafka" => {
            kafka::kafka_writer(url, &ctx.kafka).map_err(|why| OpenError::Bad { url: url.into(), why })
        }
        #[cfg(not(feature = "kafka"))]
        "kafka" => Err(OpenError::Bad {
            url: url.into(),
            why: "this binary was built without the kafka feature (cargo build --features kafka)".into(),
        }),
        other => Err(OpenError::Bad {
            url: url.into(),
            why: format!(
                "unknown scheme '{other}', expected file, kafka, s3, gs, az or parquet+file (parquet+s3…)"
            ),
        }),
    }
}

/// An outcome record numbered `i`, for the sinks' and the queue's unit tests.
#[cfg(test)]
pub(crate) fn test_outcome(i: u64) -> Record {
    Record::Outcome(OutcomeRecord {
        schema: SCHEMA_VERSION,
        ts_ms: 1,
        request_id: format!("r{i}"),
        model: "m".into(),
        replica: "host-1".into(),
        routing_key_hash: None,
        metric: "clicks".into(),
        value: i as f64,
        joined: false,
        version: None,
        role: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction() -> PredictionRecord {
        let t = Tensor::new("p", vec![1, 2], TensorData::Float32(vec![0.25, f32::NAN]));
        PredictionRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 1_700_000_000_000,
            request_id: "r1".into(),
            model: "m".into(),
            replica: "host-1".into(),
            champion_version: 1,
            champion_role: "champion".into(),
            shadow_version: 2,
            shadow_role: "shadow".into(),
            routing_key_hash: Some("00ff".into()),
            champion_latency_us: 10,
            shadow_latency_us: 20,
            shadow_error: None,
            outputs: vec![OutputRecord {
                name: "p".into(),
                champion: TensorValues::of(&t, 8),
                shadow: Some(TensorValues::of(&t, 1)),
                elements: 2,
                max_abs_diff: Some(0.0),
                mean_abs_diff: Some(0.0),
                agreement: None,
                champion_nan_inf: 1,
                shadow_nan_inf: 1,
                mismatch: None,
            }],
            inputs: Some(vec![TensorValues::of(
                &Tensor::new("s", vec![2], TensorData::String(vec!["a".into(), "b".into()])),
                8,
            )]),
        }
    }

    #[test]
    fn records_round_trip_through_json_tagged_by_kind() {
        let outcome = Record::Outcome(OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 5,
            request_id: "r1".into(),
            model: "m".into(),
            replica: "host-1".into(),
            routing_key_hash: None,
            metric: "revenue".into(),
            value: 1.5,
            joined: true,
            version: Some(1),
            role: Some("champion".into()),
        });
        for r in [Record::Prediction(prediction()), outcome] {
            let line = serde_json::to_string(&r).unwrap();
            let kind = if matches!(r, Record::Prediction(_)) { "prediction" } else { "outcome" };
            assert!(line.starts_with(&format!("{{\"kind\":\"{kind}\"")), "{line}");
            assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        }
        // NaN is not JSON: it is written as null and read back as None.
        let line = serde_json::to_string(&Record::Prediction(prediction())).unwrap();
        assert!(line.contains("\"values\":[0.25,null]"), "{line}");
    }

    #[test]
    fn tensors_over_the_cap_keep_statistics_only() {
        let t = Tensor::new("p", vec![2, 2], TensorData::Int64(vec![1, 2, 3, 6]));
        let whole = TensorValues::of(&t, 4);
        assert_eq!(whole.values, vec![Some(1.0), Some(2.0), Some(3.0), Some(6.0)]);
        assert_eq!((whole.dtype.as_str(), whole.truncated, whole.count), ("INT64", false, 4));
        let cut = TensorValues::of(&t, 3);
        assert!(cut.truncated && cut.values.is_empty());
        assert_eq!((cut.count, cut.min, cut.max, cut.mean), (4, Some(1.0), Some(6.0), Some(3.0)));
        assert_eq!(cut.shape, vec![2, 2]);
        let s = Tensor::new("s", vec![3], TensorData::String(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(TensorValues::of(&s, 3).strings, vec!["a", "b", "c"]);
        let s = TensorValues::of(&s, 2);
        assert!(s.truncated && s.strings.is_empty() && s.mean.is_none());
        assert_eq!(s.dtype, "BYTES");
    }

    #[test]
    fn sink_urls_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SinkContext { replica: "r".into(), file_max_bytes: 1024, kafka: Default::default() };
        let url = format!("file://{}", dir.path().display());
        assert_eq!(open(&url, &ctx).unwrap().name(), "file");
        #[cfg(feature = "kafka")]
        {
            assert_eq!(open("kafka://127.0.0.1:9092/topic", &ctx).unwrap().name(), "kafka");
            let e = open("kafka://127.0.0.1:9092/topic?acks=0", &ctx).err().unwrap().to_string();
            assert!(e.contains("acks"), "{e}");
        }
        let parquet = format!("parquet+file://{}", dir.path().display());
        assert_eq!(open(&parquet, &ctx).unwrap().name(), "parquet");
        let e = open("s3://bucket/x?max_rows=lots", &ctx).err().unwrap().to_string();
        assert!(e.contains("max_rows"), "{e}");
        let e = open("file://relative", &ctx).err().unwrap().to_string();
        assert!(e.contains("absolute directory"), "{e}");
        let e = open("/tmp/x", &ctx).err().unwrap().to_string();
        assert!(e.contains("expected a URL"), "{e}");
        let e = open("ftp://x", &ctx).err().unwrap().to_string();
        assert!(e.contains("unknown scheme 'ftp'"), "{e}");
    }
}
