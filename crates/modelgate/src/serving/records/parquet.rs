//! The Parquet sink: records as Parquet files on object storage (a local
//! directory, S3 or an S3-compatible server, GCS, Azure), laid out as a
//! Hive-partitioned external table per record kind:
//!
//! ```text
//! <prefix>/predictions/model=<model>/date=<YYYY-MM-DD>/<replica>-<unix-ms>-<seq>.parquet
//! <prefix>/outcomes/model=<model>/date=<YYYY-MM-DD>/<replica>-<unix-ms>-<seq>.parquet
//! ```
//!
//! `model` and `date` (the record's own UTC day) live in the path only, not
//! as columns: BigQuery and Athena refuse a partition key that is also a
//! column of the files. The columns are [`prediction_schema`] and
//! [`outcome_schema`] (in `schema`), derived from
//! [`PredictionRecord`](super::PredictionRecord) and
//! [`OutcomeRecord`](super::OutcomeRecord) (same names; `ts` is `ts_ms` as a
//! UTC timestamp; Snappy compression; file metadata `modelgate.record_schema`
//! = [`SCHEMA_VERSION`](super::SCHEMA_VERSION)).
//!
//! Rows wait in memory per partition until a file is due: `max_rows` rows or
//! `max_bytes` (estimated, uncompressed) in the writer in total, or the
//! oldest row open `max_open`. A due file is encoded at once under its final
//! name and uploaded at the start of the next `write` or `flush`; an upload
//! that fails (bucket down, over `timeout`) keeps the file for the next call
//! and returns [`SinkError::Transient`] without taking the new batch, so the
//! buffer never holds more than one file's rows plus one batch, and a retried
//! upload rewrites the same object instead of duplicating rows. Dropping the
//! writer (shutdown, on its own thread) uploads what is left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use super::{Record, RecordWriter, SinkError, TensorValues};

mod schema;
pub use schema::{DecodedRows, outcome_schema, outcomes_from, prediction_schema, predictions_from};

/// How a Parquet sink rolls and uploads its files (the URL's query).
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetSettings {
    /// Rows in the writer (all partitions) that make the files due.
    pub max_rows: usize,
    /// Estimated uncompressed bytes in the writer that make the files due.
    pub max_bytes: usize,
    /// How long a row waits in memory before its file is due.
    pub max_open: Duration,
    /// Bound on one upload, retries included.
    pub timeout: Duration,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_open: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The URL's query parameters the sink knows; anything else is an error.
const PARAMS: &str = "max_rows, max_bytes, max_open, timeout, endpoint, region, allow_http";

/// A Parquet sink for `url`, writing files named after `replica`.
///
/// `url` is `file:///dir`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]` or
/// `az://container[/prefix]` (object_store's other Azure forms too), with an
/// optional `parquet+` before the scheme, and these query parameters:
/// `max_rows` (default 100000), `max_bytes` (default 67108864), `max_open`
/// (default `5m`), `timeout` (default `30s`), `endpoint` (an S3- or
/// GCS-compatible server, or an Azure account's blob endpoint such as
/// Azurite's `http://host:port/devstoreaccount1`), `allow_http=true` (plain
/// http is refused unless asked for here or by the provider's `*_ALLOW_HTTP`)
/// and, for S3, `region`. Credentials come
/// from the provider's standard variables in the process environment
/// (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
pub fn parquet_writer(url: &str, replica: &str) -> Result<Box<dyn RecordWriter>, String> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(Box::new(ParquetWriter::open(url, replica, &env, Box::new(|| crate::clock::now_ms() as i64))?))
}

/// Which table a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Predictions,
    Outcomes,
}

impl Table {
    fn of(record: &Record) -> Self {
        match record {
            Record::Prediction(_) => Table::Predictions,
            Record::Outcome(_) => Table::Outcomes,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Table::Predictions => "predictions",
            Table::Outcomes => "outcomes",
        }
    }
}

/// One Hive partition: table, model and the record's UTC day.
type PartitionKey = (Table, String, String);

/// Rows of one partition waiting for their file.
struct Open {
    records: Vec<Record>,
    /// Unix ms of the oldest row.
    since_ms: i64,
}

/// A file that is due, encoded under its final name, not yet uploaded.
struct Sealed {
    path: Path,
    bytes: bytes::Bytes,
    rows: usize,
}

/// Writes [`Record`]s as Parquet files to an object store (see the module).
pub struct ParquetWriter {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    replica: String,
    settings: ParquetSettings,
    /// object_store is async; the writer runs on its own blocking thread, so
    /// it drives its uploads on a runtime of its own.
    /// Always set until the writer is dropped (then shut down without
    /// blocking, which is allowed even inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    clock: Box<dyn Fn() -> i64 + Send>,
    open: BTreeMap<PartitionKey, Open>,
    open_rows: usize,
    open_bytes: usize,
    sealed: Vec<Sealed>,
    seq: u64,
}

impl ParquetWriter {
    /// See [`parquet_writer`]; the provider's variables are read from `env`
    /// instead of the process environment, and `clock` gives unix ms (tests
    /// choose both).
    pub fn open(
        url: &str,
        replica: &str,
        env: &[(String, String)],
        clock: Box<dyn Fn() -> i64 + Send>,
    ) -> Result<Self, String> {
        if replica.is_empty() {
            return Err("parquet sink: the replica id is empty".into());
        }
        let (store, prefix, settings) = store_of(url, env)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("parquet sink: cannot start its runtime: {e}"))?;
        Ok(Self {
            store,
            prefix,
            replica: replica.to_owned(),
            settings,
            runtime: Some(runtime),
            clock,
            open: BTreeMap::new(),
            open_rows: 0,
            open_bytes: 0,
            sealed: Vec::new(),
            seq: 0,
        })
    }

    /// Rows held in memory, uploaded or not: never more than one file's
    /// worth plus the last batch taken.
    pub fn buffered_rows(&self) -> usize {
        self.open_rows + self.sealed.iter().map(|s| s.rows).sum::<usize>()
    }

    fn take(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        for record in batch {
            let key = (Table::of(record), record.model().to_owned(), day_of(record.ts_ms()));
            let now = (self.clock)();
            let open = self.open.entry(key).or_insert_with(|| Open { records: Vec::new(), since_ms: now });
            open.records.push(record.clone());
            self.open_rows += 1;
            self.open_bytes += approx_bytes(record);
            if self.open_rows >= self.settings.max_rows || self.open_bytes >= self.settings.max_bytes {
                self.seal_all()?;
            }
        }
        Ok(())
    }

    /// Encodes every open partition as a file: the writer is full.
    fn seal_all(&mut self) -> Result<(), SinkError> {
        self.seal_where(|_| true)
    }

    /// Encodes the partitions whose oldest row has waited `max_open`.
    fn seal_aged(&mut self) -> Result<(), SinkError> {
        let deadline = (self.clock)() - self.settings.max_open.as_millis() as i64;
        self.seal_where(|open| open.since_ms <= deadline)
    }

    fn seal_where(&mut self, due: impl Fn(&Open) -> bool) -> Result<(), SinkError> {
        let keys: Vec<PartitionKey> =
            self.open.iter().filter(|(_, o)| due(o)).map(|(k, _)| k.clone()).collect();
        let mut failed = None;
        for key in keys {
            let Some(open) = self.open.remove(&key) else { continue };
            self.open_rows -= open.records.len();
            self.open_bytes -= open.records.iter().map(approx_bytes).sum::<usize>();
            let (table, model, day) = key;
            match schema::encode(&open.records) {
                Ok(bytes) => {
                    let name = format!("{}-{}-{}.parquet", self.replica, (self.clock)(), self.seq);
                    self.seq += 1;
                    let path = Path::from_iter(
                        self.prefix
                            .parts()
                            .chain([
                                table.dir().into(),
                                format!("model={model}").into(),
                                format!("date={day}").into(),
                            ])
                            .chain([name.into()]),
                    );
                    self.sealed.push(Sealed { path, bytes, rows: open.records.len() });
                }
                // Rows Arrow cannot encode never will be: they are dropped.
                Err(e) => {
                    failed = Some(SinkError::Permanent(format!("parquet sink: cannot encode {model}: {e}")))
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Uploads the sealed files in order; the first failure stops it and
    /// keeps that file and the rest for the next call.
    fn upload_sealed(&mut self) -> Result<(), SinkError> {
        let Some(runtime) = &self.runtime else { return Ok(()) };
        if !self.sealed.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            // block_on would panic: a writer must run on its own thread.
            return Err(SinkError::Transient("parquet sink: called from inside an async runtime".into()));
        }
        while let Some(file) = self.sealed.first() {
            let put = self.store.put(&file.path, PutPayload::from(file.bytes.clone()));
            let result = runtime.block_on(async { tokio::time::timeout(self.settings.timeout, put).await });
            match result {
                Ok(Ok(_)) => {
                    self.sealed.remove(0);
                }
                Ok(Err(e)) => {
                    return Err(SinkError::Transient(format!(
                        "parquet sink: upload of {} failed: {e}",
                        file.path
                    )));
                }
                Err(_) => {
                    return Err(SinkError::Transient(format!(
                        "parquet sink: upload of {} took over {:?}",
                        file.path, self.settings.timeout
                    )));
                }
            }
        }
        Ok(())
    }
}

impl RecordWriter for ParquetWriter {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn write(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        // Files from earlier calls go first: while they cannot, the batch is
        // refused (the queue keeps it), so the buffer does not grow.
        self.upload_sealed()?;
        self.take(batch)?;
        self.seal_aged()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.seal_aged()?;
        self.upload_sealed()
    }
}

impl Drop for ParquetWriter {
    fn drop(&mut self) {
        // The queue drops the writer on its own thread; one dropped inside
        // an async runtime (start-up failing after it was made) cannot
        // block there, so it only says what it leaves behind.
        let sealed = self.seal_all();
        if let Err(e) = sealed.and_then(|()| self.upload_sealed()) {
            tracing::warn!(rows = self.buffered_rows(), error = %e, "parquet sink: rows lost at shutdown");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The store, the path prefix inside it and the settings for `url`, with
/// the provider's credentials from `env` (`shadow report --from` opens the
/// tables the same way). A `file://` directory is created if missing.
pub fn store_of(
    url: &str,
    env: &[(String, String)],
) -> Result<(Arc<dyn ObjectStore>, Path, ParquetSettings), String> {
    // What the builders' from_env do, on `env`: every variable with the
    // provider's prefix that names one of its settings.
    let vars = |prefix: &'static str| {
        env.iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
    };
    let raw = url.strip_prefix("parquet+").unwrap_or(url);
    let mut parsed = url::Url::parse(raw).map_err(|e| format!("parquet sink URL {url:?}: {e}"))?;
    let mut settings = ParquetSettings::default();
    let (mut endpoint, mut region, mut allow_http) = (None, None, false);
    for (key, value) in parsed.query_pairs() {
        let bad = |what: &str| format!("parquet sink URL: {key}={value:?} is not {what}");
        match key.as_ref() {
            "max_rows" => settings.max_rows = positive(&value).ok_or_else(|| bad("a positive row count"))?,
            "max_bytes" => {
                settings.max_bytes = positive(&value).ok_or_else(|| bad("a positive byte count"))?
            }
            "max_open" => {
                settings.max_open = duration(&value).ok_or_else(|| bad("a duration like 30s or 5m"))?
            }
            "timeout" => {
                settings.timeout = duration(&value).ok_or_else(|| bad("a duration like 30s or 5m"))?
            }
            "endpoint" => endpoint = Some(value.into_owned()),
            "region" => region = Some(value.into_owned()),
            "allow_http" => allow_http = value.parse::<bool>().map_err(|_| bad("true or false"))?,
            other => {
                return Err(format!("parquet sink URL: unknown parameter {other:?} (expected {PARAMS})"));
            }
        }
    }
    parsed.set_query(None);
    let scheme = parsed.scheme().to_owned();
    if !matches!(scheme.as_str(), "s3" | "s3a") && region.is_some() {
        return Err(format!("parquet sink URL: region is for s3:// URLs, not {scheme}://"));
    }
    if scheme == "file" && (endpoint.is_some() || allow_http) {
        return Err("parquet sink URL: endpoint and allow_http are for object stores, not file://".into());
    }
    let timeout = settings.timeout;
    // Each upload is bounded by `timeout` as a whole; the client's own
    // retries must fit inside it rather than run for minutes.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: timeout / 4,
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: timeout,
    };
    let client =
        ClientOptions::new().with_timeout(timeout).with_connect_timeout(timeout.min(Duration::from_secs(5)));
    if scheme != "file" {
        // reqwest is built without a bundled TLS provider; ring is the one
        // the rest of the gateway uses. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let prefix = Path::parse(parsed.path().trim_matches('/'))
        .map_err(|e| format!("parquet sink URL {url:?}: bad path: {e}"))?;
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "file" => {
            let dir =
                parsed.to_file_path().map_err(|()| format!("parquet sink URL {url:?}: not a local path"))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("parquet sink: cannot create {}: {e}", dir.display()))?;
            let local = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| format!("parquet sink: cannot open {}: {e}", dir.display()))?;
            return Ok((Arc::new(local), Path::default(), settings));
        }
        // Client options and retries go first: setting them after the
        // variables would reset the client keys those set (AWS_ALLOW_HTTP…).
        "s3" | "s3a" => {
            let mut builder = AmazonS3Builder::new().with_client_options(client).with_retry(retry);
            for (key, value) in vars("AWS_") {
                if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            builder = builder.with_url(parsed.as_str());
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = region {
                builder = builder.with_region(region);
            }
            if allow_http {
                builder = builder.with_allow_http(true);
            }
            Arc::new(builder.build().map_err(|e| format!("parquet sink URL {url:?}: {e}"))?)
        }
        // `endpoint` is the JSON/XML API's base URL (a GCS-compatible
        // server or emulator), as GOOGLE_BASE_URL is.
        "gs" => {
            let mut builder = vars("GOOGLE_")
                .filter_map(|(key, value)| Some((key.parse::<GoogleConfigKey>().ok()?, value)))
                .fold(
                    GoogleCloudStorageBuilder::new().with_client_options(client).with_retry(retry),
                    |b, (k, v)| b.with_config(k, v),
                )
                .with_url(parsed.as_str());
            if let Some(endpoint) = endpoint {
                builder = builder.with_config(GoogleConfigKey::BaseUrl, endpoint);
            }
            if allow_http {
                builder = builder.with_config(GoogleConfigKey::Client(ClientConfigKey::AllowHttp), "true");
            }
            Arc::new(builder.build().map_err(|e| format!("parquet sink URL {url:?}: {e}"))?)
        }
        // `endpoint` is the account's blob endpoint (Azurite's is
        // `http://host:port/<account>`), as AZURE_STORAGE_ENDPOINT is.
        "az" | "adl" | "azure" | "abfs" | "abfss" => {
            let mut builder = vars("AZURE_")
                .filter_map(|(key, value)| Some((key.parse::<AzureConfigKey>().ok()?, value)))
                .fold(
                    MicrosoftAzureBuilder::new().with_client_options(client).with_retry(retry),
                    |b, (k, v)| b.with_config(k, v),
                )
                .with_url(parsed.as_str());
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if allow_http {
                builder = builder.with_allow_http(true);
            }
            Arc::new(builder.build().map_err(|e| format!("parquet sink URL {url:?}: {e}"))?)
        }
        other => {
            return Err(format!(
                "parquet sink URL {url:?}: unknown scheme {other:?} (expected file, s3, gs or az)"
            ));
        }
    };
    Ok((store, prefix, settings))
}

fn positive(value: &str) -> Option<usize> {
    value.parse::<usize>().ok().filter(|&n| n > 0)
}

fn duration(value: &str) -> Option<Duration> {
    humantime::parse_duration(value).ok().filter(|d| !d.is_zero())
}

/// The record's UTC day, `YYYY-MM-DD`.
fn day_of(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default().format("%Y-%m-%d").to_string()
}

/// A cheap estimate of a record's in-memory size, for `max_bytes`.
fn approx_bytes(record: &Record) -> usize {
    fn tensor(t: &TensorValues) -> usize {
        48 + t.dtype.len()
            + 8 * (t.shape.len() + t.values.len())
            + t.strings.iter().map(|s| s.len() + 8).sum::<usize>()
    }
    match record {
        Record::Prediction(p) => {
            128 + p.request_id.len()
                + p.replica.len()
                + p.outputs
                    .iter()
                    .map(|o| 64 + o.name.len() + tensor(&o.champion) + o.shadow.as_ref().map_or(0, tensor))
                    .sum::<usize>()
                + p.inputs.iter().flatten().map(tensor).sum::<usize>()
        }
        Record::Outcome(o) => 96 + o.request_id.len() + o.replica.len() + o.metric.len(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicI64, Ordering};

    use arrow_array::Array;
    use arrow_array::RecordBatch;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::serving::records::{OutcomeRecord, OutputRecord, PredictionRecord, SCHEMA_VERSION};

    /// 2026-12-07T10:00:00Z.
    const T0: i64 = 1_796_637_600_000;

    fn tensor(values: &[f64]) -> TensorValues {
        TensorValues {
            dtype: "FP32".into(),
            shape: vec![1, values.len() as i64],
            values: values.iter().map(|&v| Some(v)).collect(),
            strings: Vec::new(),
            truncated: false,
            count: values.len() as u64,
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
            mean: Some(values.iter().sum::<f64>() / values.len() as f64),
        }
    }

    fn prediction(model: &str, request_id: &str, ts_ms: i64) -> Record {
        Record::Prediction(PredictionRecord {
            schema: SCHEMA_VERSION,
            ts_ms,
            request_id: request_id.into(),
            model: model.into(),
            replica: "r1".into(),
            champion_version: 1,
            champion_role: "champion".into(),
            shadow_version: 2,
            shadow_role: "shadow".into(),
            routing_key_hash: Some("ab12".into()),
            champion_latency_us: 150,
            shadow_latency_us: 170,
            shadow_error: None,
            outputs: vec![OutputRecord {
                name: "probabilities".into(),
                champion: tensor(&[0.25, 0.75]),
                shadow: Some(tensor(&[0.5, 0.5])),
                elements: 2,
                max_abs_diff: Some(0.25),
                mean_abs_diff: Some(0.25),
                agreement: None,
                champion_nan_inf: 0,
                shadow_nan_inf: 0,
                mismatch: None,
            }],
            inputs: None,
        })
    }

    fn outcome(model: &str, request_id: &str, ts_ms: i64) -> Record {
        Record::Outcome(OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms,
            request_id: request_id.into(),
            model: model.into(),
            replica: "r1".into(),
            routing_key_hash: None,
            metric: "clicked".into(),
            value: 1.0,
            joined: true,
            version: Some(2),
            role: Some("shadow".into()),
        })
    }

    /// A writer on a temporary directory whose clock the test moves.
    fn writer(dir: &std::path::Path, query: &str) -> (ParquetWriter, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(T0));
        let clock = Arc::clone(&now);
        let url = format!("file://{}{query}", dir.display());
        (ParquetWriter::open(&url, "r1", &[], Box::new(move || clock.load(Ordering::SeqCst))).unwrap(), now)
    }

    /// Every .parquet file under `dir`, relative to it, sorted.
    fn files(dir: &std::path::Path) -> Vec<String> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, &mut out);
        let mut names: Vec<String> =
            out.iter().map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    fn read(path: &std::path::Path) -> RecordBatch {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1, "a test's small file is one batch");
        batches[0].clone()
    }

    fn rows_in(dir: &std::path::Path) -> usize {
        files(dir).iter().map(|f| read(&dir.join(f)).num_rows()).sum()
    }

    #[test]
    fn records_in_files_out_in_hive_partitions_with_the_documented_schema() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, now) = writer(dir.path(), "?max_open=1m");
        let day2 = T0 + 24 * 3_600_000;
        let batch = [
            prediction("iris", "a", T0),
            prediction("iris", "b", T0 + 1),
            prediction("fraud", "c", T0),
            prediction("iris", "d", day2),
            outcome("iris", "a", T0 + 5),
        ];
        w.write(&batch).unwrap();
        w.flush().unwrap();
        assert!(files(dir.path()).is_empty(), "nothing is due before max_open");
        now.store(T0 + 60_000, Ordering::SeqCst);
        w.flush().unwrap();
        let found = files(dir.path());
        let stamp = T0 + 60_000;
        assert_eq!(
            found,
            vec![
                format!("outcomes/model=iris/date=2026-12-07/r1-{stamp}-3.parquet"),
                format!("predictions/model=fraud/date=2026-12-07/r1-{stamp}-0.parquet"),
                format!("predictions/model=iris/date=2026-12-07/r1-{stamp}-1.parquet"),
                format!("predictions/model=iris/date=2026-12-08/r1-{stamp}-2.parquet"),
            ]
        );
        let iris = read(&dir.path().join(&found[2]));
        assert_eq!(iris.schema(), prediction_schema());
        let ids = iris.column_by_name("request_id").unwrap().as_string::<i32>();
        assert_eq!(ids.iter().collect::<Vec<_>>(), vec![Some("a"), Some("b")]);
        let outputs = iris.column_by_name("outputs").unwrap().as_list::<i32>();
        let first = outputs.value(0);
        let output = first.as_struct();
        assert_eq!(output.column_by_name("name").unwrap().as_string::<i32>().value(0), "probabilities");
        let values = |side: &str| {
            let tensor = output.column_by_name(side).unwrap().as_struct();
            let list = tensor.column_by_name("values").unwrap().as_list::<i32>();
            list.value(0).as_primitive::<Float64Type>().values().to_vec()
        };
        assert_eq!(values("champion"), vec![0.25, 0.75]);
        assert_eq!(values("shadow"), vec![0.5, 0.5]);
        assert_eq!(
            output.column_by_name("max_abs_diff").unwrap().as_primitive::<Float64Type>().value(0),
            0.25
        );
        assert!(iris.column_by_name("inputs").unwrap().is_null(0), "inputs are off by default");
        let latency = iris.column_by_name("shadow_latency_us").unwrap().as_primitive::<Int64Type>();
        assert_eq!(latency.value(1), 170);
        let outcomes = read(&dir.path().join(&found[0]));
        assert_eq!(outcomes.schema(), outcome_schema());
        assert_eq!(outcomes.column_by_name("version").unwrap().as_primitive::<Int64Type>().value(0), 2);
    }

    #[test]
    fn files_roll_by_rows_and_bytes_and_every_row_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = writer(dir.path(), "?max_rows=4");
        for i in 0..10 {
            w.write(&[prediction("iris", &format!("r{i}"), T0)]).unwrap();
            assert!(w.buffered_rows() <= 4, "the buffer holds at most one file");
        }
        let rolled = files(dir.path());
        assert_eq!(rolled.len(), 2, "two full files of 4 rows: {rolled:?}");
        assert!(rolled.iter().all(|f| read(&dir.path().join(f)).num_rows() == 4));
        drop(w);
        assert_eq!(rows_in(dir.path()), 10, "dropping the writer uploads the rest");

        let dir = tempfile::tempdir().unwrap();
        let one = approx_bytes(&prediction("iris", "r0", T0));
        let (mut w, _) = writer(dir.path(), &format!("?max_bytes={}", one * 3));
        for i in 0..7 {
            w.write(&[prediction("iris", &format!("r{i}"), T0)]).unwrap();
        }
        assert_eq!(files(dir.path()).len(), 2, "rolled every 3 rows' worth of bytes");
        w.flush().unwrap();
        assert_eq!(rows_in(dir.path()), 6, "the 7th row waits for its file");
    }

    #[test]
    fn files_roll_by_time_even_without_new_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, now) = writer(dir.path(), "?max_open=10s");
        w.write(&[prediction("iris", "a", T0), outcome("iris", "a", T0)]).unwrap();
        now.store(T0 + 9_999, Ordering::SeqCst);
        w.flush().unwrap();
        assert!(files(dir.path()).is_empty());
        now.store(T0 + 10_000, Ordering::SeqCst);
        w.flush().unwrap();
        assert_eq!(files(dir.path()).len(), 2, "one file per table");
        assert_eq!(w.buffered_rows(), 0);
        // A later row opens a new file with its own clock.
        w.write(&[prediction("iris", "b", T0)]).unwrap();
        now.store(T0 + 15_000, Ordering::SeqCst);
        w.flush().unwrap();
        assert_eq!(files(dir.path()).len(), 2);
    }

    #[test]
    fn a_failed_upload_is_transient_keeps_its_rows_bounded_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the table's directory must go: every upload fails.
        let blocker = dir.path().join("predictions");
        std::fs::write(&blocker, b"in the way").unwrap();
        let (mut w, _) = writer(dir.path(), "?max_rows=3");
        w.write(&[prediction("iris", "a", T0), prediction("iris", "b", T0), prediction("iris", "c", T0)])
            .unwrap();
        for round in 0..5 {
            let refused = w.write(&[prediction("iris", &format!("x{round}"), T0)]);
            assert!(matches!(refused, Err(SinkError::Transient(_))), "{refused:?}");
            assert_eq!(w.buffered_rows(), 3, "a refused batch is not taken");
            assert!(matches!(w.flush(), Err(SinkError::Transient(_))));
        }
        std::fs::remove_file(&blocker).unwrap();
        w.flush().unwrap();
        assert_eq!(w.buffered_rows(), 0);
        w.write(&[prediction("iris", "d", T0)]).unwrap();
        drop(w);
        let ids: Vec<String> = files(dir.path())
            .iter()
            .flat_map(|f| {
                let batch = read(&dir.path().join(f));
                let ids = batch.column_by_name("request_id").unwrap().as_string::<i32>().clone();
                ids.iter().map(|s| s.unwrap().to_owned()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids, vec!["a", "b", "c", "d"], "each row once, none lost");
    }

    #[test]
    fn bad_urls_are_refused_with_what_was_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("file://{}", dir.path().display());
        let err = |url: &str| ParquetWriter::open(url, "r1", &[], Box::new(|| T0)).err().unwrap();
        assert!(err(&format!("{base}?max_rowz=3")).contains("unknown parameter \"max_rowz\""));
        assert!(err(&format!("{base}?max_rows=0")).contains("max_rows=\"0\" is not a positive row count"));
        assert!(err(&format!("{base}?max_open=soon")).contains("max_open"));
        assert!(err("ftp://host/dir").contains("unknown scheme \"ftp\""));
        assert!(err("gs://bucket?region=eu").contains("region is for s3:// URLs, not gs://"));
        assert!(err(&format!("{base}?endpoint=http://127.0.0.1:1")).contains("not file://"));
        assert!(err("not a url").contains("parquet sink URL"));
        assert!(ParquetWriter::open(&base, "", &[], Box::new(|| T0)).err().unwrap().contains("replica"));
        // The accepted forms build without touching the network.
        for url in [
            format!("parquet+{base}"),
            "s3://bucket/some/prefix?endpoint=http://127.0.0.1:9&region=us-east-1&allow_http=true".to_owned(),
            "gs://bucket/p?endpoint=http://127.0.0.1:9&allow_http=true".to_owned(),
            "az://container/p?endpoint=http://127.0.0.1:9/acct&allow_http=true".to_owned(),
        ] {
            // Azure needs its account named; the key may come later (workload identity).
            let env = [("AZURE_STORAGE_ACCOUNT_NAME".to_owned(), "acct".to_owned())];
            ParquetWriter::open(&url, "r1", &env, Box::new(|| T0)).unwrap();
        }
    }

    #[tokio::test]
    async fn a_writer_inside_an_async_runtime_errs_instead_of_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = writer(dir.path(), "?max_rows=1");
        w.write(&[prediction("iris", "a", T0)]).unwrap();
        assert!(matches!(w.flush(), Err(SinkError::Transient(e)) if e.contains("inside an async runtime")));
        drop(w);
        assert!(files(dir.path()).is_empty());
    }
}
