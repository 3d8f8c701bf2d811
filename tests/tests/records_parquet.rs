//! The Parquet record sink (issue 18) read back by independent readers:
//! records go in through `parquet_writer` to a real local directory (and a
//! real S3 server, Google's and Microsoft's storage emulators), and pyarrow
//! and DuckDB read the Hive-partitioned tables
//! (tests/python/parquet_read.py, in the venv of requirements-kafka-s3.txt),
//! checked field by field against what went in.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate::records::parquet::{ParquetWriter, parquet_writer};
use modelgate::records::{
    OutcomeRecord, OutputRecord, PredictionRecord, Record, RecordWriter, SCHEMA_VERSION, SinkError,
    TensorValues,
};
use modelgate_tests::azurite::Azurite;
use modelgate_tests::gcs::GcsServer;
use modelgate_tests::python::{run_bounded, venv};
use modelgate_tests::s3::S3Server;
use serde_json::{Value, json};

/// 2026-12-07T10:00:00Z: records from it run into the next UTC day.
const T0: i64 = 1_796_637_600_000;
const DAY: i64 = 24 * 3_600_000;

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

/// A summary only: the tensor was over the record's size cap.
fn truncated(count: u64, mean: f64) -> TensorValues {
    TensorValues {
        dtype: "FP32".into(),
        shape: vec![1, count as i64],
        values: Vec::new(),
        strings: Vec::new(),
        truncated: true,
        count,
        min: Some(0.0),
        max: Some(1.0),
        mean: Some(mean),
    }
}

fn labels(text: &str) -> TensorValues {
    TensorValues {
        dtype: "BYTES".into(),
        shape: vec![1],
        values: Vec::new(),
        strings: vec![text.into()],
        truncated: false,
        count: 1,
        min: None,
        max: None,
        mean: None,
    }
}

fn model_of(i: usize) -> &'static str {
    if i.is_multiple_of(3) { "fraud" } else { "iris" }
}

/// Prediction i: some on the next day, every 10th shadow failed, every 7th
/// output over the cap, every 5th with its inputs. Values are multiples of
/// 1/1024 so their decimal text is exact and JSON compares them exactly.
fn prediction(i: usize, replica: &str) -> PredictionRecord {
    let p = i as f64 / 256.0;
    let failed = i.is_multiple_of(10);
    let (champion, shadow) = if i.is_multiple_of(7) {
        (truncated(5000, p), truncated(5000, p + 0.0625))
    } else {
        (tensor(&[p, 1.0 - p]), tensor(&[p + 0.125, 0.875 - p]))
    };
    let mut outputs = vec![OutputRecord {
        name: "probabilities".into(),
        champion,
        shadow: (!failed).then_some(shadow),
        elements: if failed { 0 } else { 2 },
        max_abs_diff: (!failed).then_some(0.125),
        mean_abs_diff: (!failed).then_some(0.125),
        agreement: None,
        champion_nan_inf: 0,
        shadow_nan_inf: 0,
        mismatch: failed.then(|| "shadow failed".to_owned()),
    }];
    outputs.push(OutputRecord {
        name: "label".into(),
        champion: labels("yes"),
        shadow: (!failed).then(|| labels(if i.is_multiple_of(2) { "yes" } else { "no" })),
        elements: if failed { 0 } else { 1 },
        max_abs_diff: None,
        mean_abs_diff: None,
        agreement: (!failed).then_some(if i.is_multiple_of(2) { 1.0 } else { 0.0 }),
        champion_nan_inf: 0,
        shadow_nan_inf: 0,
        mismatch: None,
    });
    PredictionRecord {
        schema: SCHEMA_VERSION,
        ts_ms: if i >= 100 { T0 + DAY + i as i64 } else { T0 + i as i64 * 1000 },
        request_id: format!("req-{i:04}"),
        model: model_of(i).into(),
        replica: replica.into(),
        champion_version: 1,
        champion_role: "champion".into(),
        shadow_version: 2,
        shadow_role: "shadow".into(),
        routing_key_hash: (i % 2 == 1).then(|| format!("{i:016x}")),
        champion_latency_us: 100 + i as u64,
        shadow_latency_us: 200 + i as u64,
        shadow_error: failed.then(|| "deadline exceeded".to_owned()),
        outputs,
        inputs: i.is_multiple_of(5).then(|| vec![tensor(&[1.0, 2.0, p, 0.5])]),
    }
}

fn outcome(i: usize, replica: &str) -> OutcomeRecord {
    OutcomeRecord {
        schema: SCHEMA_VERSION,
        ts_ms: T0 + i as i64 * 1000 + 500,
        request_id: format!("req-{i:04}"),
        model: model_of(i).into(),
        replica: replica.into(),
        routing_key_hash: None,
        metric: "clicked".into(),
        value: (i % 2) as f64,
        joined: true,
        version: Some(1),
        role: Some("champion".into()),
    }
}

/// Predictions 0..150 from two replicas (a fleet writing one table) and an
/// outcome for every 4th of the first 100, through the writers `open` makes
/// for a replica.
fn write_fleet(open: impl Fn(&str) -> Box<dyn RecordWriter>) -> (Vec<PredictionRecord>, Vec<OutcomeRecord>) {
    let mut predictions = Vec::new();
    let mut outcomes = Vec::new();
    for (replica, range) in [("replica-a", 0..120), ("replica-b", 120..150)] {
        let mut writer = open(replica);
        let records: Vec<Record> = range
            .clone()
            .map(|i| prediction(i, replica))
            .inspect(|p| predictions.push(p.clone()))
            .map(Record::Prediction)
            .chain(
                range
                    .filter(|i| i.is_multiple_of(4) && *i < 100)
                    .map(|i| outcome(i, replica))
                    .inspect(|o| outcomes.push(o.clone()))
                    .map(Record::Outcome),
            )
            .collect();
        for batch in records.chunks(16) {
            writer.write(batch).expect("write");
        }
        writer.flush().expect("flush");
        // Dropping the writer uploads the files that are not due yet.
        drop(writer);
    }
    (predictions, outcomes)
}

fn day(ts_ms: i64) -> &'static str {
    if ts_ms >= T0 + DAY { "2026-12-08" } else { "2026-12-07" }
}

fn tensor_json(t: &TensorValues) -> Value {
    json!({
        "dtype": t.dtype, "shape": t.shape, "values": t.values, "strings": t.strings,
        "truncated": t.truncated, "count": t.count, "mean": t.mean,
    })
}

/// A prediction as parquet_read.py reports a pyarrow row.
fn expected_row(p: &PredictionRecord) -> Value {
    json!({
        "schema": p.schema, "ts_ms": p.ts_ms, "request_id": p.request_id, "replica": p.replica,
        "champion_version": p.champion_version, "champion_role": p.champion_role,
        "shadow_version": p.shadow_version, "shadow_role": p.shadow_role,
        "routing_key_hash": p.routing_key_hash,
        "champion_latency_us": p.champion_latency_us, "shadow_latency_us": p.shadow_latency_us,
        "shadow_error": p.shadow_error,
        "outputs": p.outputs.iter().map(|o| json!({
            "name": o.name, "champion": tensor_json(&o.champion), "shadow": o.shadow.as_ref().map(tensor_json),
            "max_abs_diff": o.max_abs_diff, "mismatch": o.mismatch,
        })).collect::<Vec<_>>(),
        "inputs": p.inputs.as_ref().map(|ts| ts.iter().map(tensor_json).collect::<Vec<_>>()),
        "model": p.model, "date": day(p.ts_ms),
    })
}

fn read_back(args: &[&str], envs: &[(String, String)]) -> Value {
    let python = venv("kafka-s3", "requirements-kafka-s3.txt");
    let mut cmd = Command::new(python);
    cmd.arg(modelgate_tests::root().join("tests/python/parquet_read.py")).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run_bounded(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "parquet_read.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("parquet_read.py prints JSON")
}

/// pyarrow's rows equal the records that went in, field by field, with the
/// partition columns from the paths.
fn check_pyarrow(seen: &Value, predictions: &[PredictionRecord], outcomes: &[OutcomeRecord]) {
    let mut want: Vec<&PredictionRecord> = predictions.iter().collect();
    want.sort_by(|a, b| (&a.request_id, &a.replica).cmp(&(&b.request_id, &b.replica)));
    let rows = seen["predictions"].as_array().expect("prediction rows");
    assert_eq!(rows.len(), want.len(), "every prediction read back once");
    for (row, p) in rows.iter().zip(want) {
        assert_eq!(row, &expected_row(p), "prediction {}", p.request_id);
    }
    let rows = seen["outcomes"].as_array().expect("outcome rows");
    assert_eq!(rows.len(), outcomes.len());
    for row in rows {
        let o = outcomes.iter().find(|o| o.request_id == row["request_id"]).expect("an outcome written");
        assert_eq!(row["value"], json!(o.value));
        assert_eq!(row["version"], json!(o.version));
        assert_eq!(row["joined"], json!(true));
        assert_eq!(row["model"], json!(o.model));
        assert_eq!(row["date"], json!("2026-12-07"));
    }
    let schema = &seen["predictions_schema"];
    assert_eq!(schema["champion_latency_us"], "int64");
    assert_eq!(schema["ts"], "timestamp[ms, tz=UTC]");
    let outputs = schema["outputs"].as_str().expect("outputs type");
    assert!(
        outputs.starts_with("list<item: struct<name: string not null, champion: struct<dtype: string"),
        "{outputs}"
    );
    assert!(outputs.contains("values: list<item: double>"), "{outputs}");
}

#[test]
fn pyarrow_and_duckdb_read_the_local_tables_as_hive_partitioned_datasets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("records");
    let url = format!("file://{}?max_rows=50", root.display());
    let (predictions, outcomes) =
        write_fleet(|replica| parquet_writer(&url, replica).expect("parquet writer"));
    let seen = read_back(&["local", root.to_str().expect("utf-8 path")], &[]);
    check_pyarrow(&seen["pyarrow"], &predictions, &outcomes);

    let duck = &seen["duckdb"];
    let rows = duck["predictions"].as_array().expect("duckdb rows");
    assert_eq!(rows.len(), predictions.len());
    for row in rows {
        let p = predictions
            .iter()
            .find(|p| p.request_id == row["request_id"] && p.replica == row["replica"])
            .expect("a prediction written");
        assert_eq!(row["model"], json!(p.model));
        assert_eq!(row["date"], json!(day(p.ts_ms)));
        assert_eq!(row["champion_version"], json!(1));
        assert_eq!(row["shadow_error"], json!(p.shadow_error));
        assert_eq!(row["output"], json!("probabilities"));
        assert_eq!(row["champion_values"], json!(p.outputs[0].champion.values));
        assert_eq!(row["shadow_values"], json!(p.outputs[0].shadow.as_ref().map(|s| &s.values)));
        assert_eq!(row["truncated"], json!(p.outputs[0].champion.truncated));
    }
    // Outcomes join their predictions on request id (and model) offline.
    let joined = duck["joined"].as_array().expect("joined rows");
    assert_eq!(joined.len(), outcomes.len());
    for (row, o) in joined.iter().zip(&outcomes) {
        assert_eq!(row, &json!([o.request_id, o.metric, o.value, o.version, 2]));
    }
    assert_files_named(&root, &predictions);
}

/// Files sit at `<table>/model=<m>/date=<day>/<replica>-<unix-ms>-<seq>.parquet`.
fn assert_files_named(root: &Path, predictions: &[PredictionRecord]) {
    let mut days = std::collections::BTreeSet::new();
    for model in ["fraud", "iris"] {
        for entry in
            std::fs::read_dir(root.join("predictions").join(format!("model={model}"))).expect("model dir")
        {
            let date_dir = entry.expect("entry").path();
            let date = date_dir.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
            days.insert(date.clone());
            for file in std::fs::read_dir(&date_dir).expect("date dir") {
                let name = file.expect("entry").file_name().into_string().expect("utf-8");
                let parts: Vec<&str> = name.trim_end_matches(".parquet").rsplitn(3, '-').collect();
                assert!(name.ends_with(".parquet") && parts.len() == 3, "{name}");
                assert!(parts[0].parse::<u64>().is_ok() && parts[1].parse::<u64>().is_ok(), "{name}");
                assert!(["replica-a", "replica-b"].contains(&parts[2]), "{name}");
            }
        }
    }
    let want: std::collections::BTreeSet<String> =
        predictions.iter().map(|p| format!("date={}", day(p.ts_ms))).collect();
    assert_eq!(days, want);
}

/// The provider variables a writer gets for `server`: its keys and region
/// (the endpoint and plain http are in the sink URL).
fn s3_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), S3Server::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), S3Server::SECRET_KEY.into()),
        ("AWS_REGION".into(), S3Server::REGION.into()),
    ]
}

fn s3_writer(url: &str, replica: &str) -> ParquetWriter {
    let clock = || SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    ParquetWriter::open(url, replica, &s3_env(), Box::new(clock)).expect("parquet writer on S3")
}

#[test]
fn pyarrow_reads_the_tables_written_to_an_s3_server() {
    let server = S3Server::start();
    server.create_bucket("lake");
    let url = format!("s3://lake/shadow/records?endpoint={}&allow_http=true&max_rows=50", server.endpoint());
    let (predictions, outcomes) = write_fleet(|replica| Box::new(s3_writer(&url, replica)));
    let keys = server.keys("lake");
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(
            key.starts_with("shadow/records/predictions/model=")
                || key.starts_with("shadow/records/outcomes/model="),
            "{key}"
        );
        assert!(key.ends_with(".parquet"), "{key}");
    }
    let env = s3_env();
    let seen = read_back(&["s3", &server.endpoint(), "lake/shadow/records"], &env);
    check_pyarrow(&seen["pyarrow"], &predictions, &outcomes);
}

fn clock() -> Box<dyn Fn() -> i64 + Send> {
    Box::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

/// The layout every object store must show: only Parquet files, under the
/// two tables' model partitions.
fn assert_table_keys(keys: &[String], prefix: &str) {
    assert!(!keys.is_empty());
    for key in keys {
        assert!(
            key.starts_with(&format!("{prefix}/predictions/model="))
                || key.starts_with(&format!("{prefix}/outcomes/model=")),
            "{key}"
        );
        assert!(key.ends_with(".parquet"), "{key}");
    }
}

#[test]
fn pyarrow_reads_the_tables_written_to_google_cloud_storage() {
    let server = GcsServer::start();
    server.create_bucket("lake");
    let url = format!("gs://lake/shadow/records?endpoint={}&allow_http=true&max_rows=50", server.endpoint());
    // The emulator checks no credentials: a key without OAuth.
    let env = vec![("GOOGLE_SERVICE_ACCOUNT_KEY".to_owned(), server.service_account_key())];
    let (predictions, outcomes) = write_fleet(|replica| {
        Box::new(ParquetWriter::open(&url, replica, &env, clock()).expect("parquet writer on GCS"))
    });
    assert_table_keys(&server.keys("lake", "shadow/records/"), "shadow/records");
    let seen = read_back(&["gcs", &server.endpoint(), "lake/shadow/records"], &[]);
    check_pyarrow(&seen["pyarrow"], &predictions, &outcomes);
}

#[test]
fn pyarrow_reads_the_tables_written_to_azure_blob_storage() {
    let azurite = Azurite::start();
    azurite.create_container("lake");
    let url = format!("az://lake/shadow/records?endpoint={}&allow_http=true&max_rows=50", azurite.endpoint());
    // Requests are signed with the account key (Shared Key), which Azurite checks.
    let env = azurite.env();
    let (predictions, outcomes) = write_fleet(|replica| {
        Box::new(ParquetWriter::open(&url, replica, &env, clock()).expect("parquet writer on Azure"))
    });
    let seen = read_back(&["azure", &azurite.authority(), "lake/shadow/records"], &env);
    check_pyarrow(&seen["pyarrow"], &predictions, &outcomes);

    // A wrong key is refused by the service: the write fails, it is not
    // taken as stored.
    let wrong = vec![
        ("AZURE_STORAGE_ACCOUNT_NAME".to_owned(), Azurite::ACCOUNT.to_owned()),
        ("AZURE_STORAGE_ACCOUNT_KEY".to_owned(), "d3Jvbmcga2V5IGZvciB0aGUgZW11bGF0b3I=".to_owned()),
    ];
    let url = format!("az://lake/denied?endpoint={}&allow_http=true&max_rows=1", azurite.endpoint());
    let mut writer =
        ParquetWriter::open(&url, "replica-a", &wrong, clock()).expect("a writer is made offline");
    writer.write(&[Record::Prediction(prediction(1, "replica-a"))]).expect("the first file is only sealed");
    let refused = writer.flush();
    assert!(matches!(&refused, Err(SinkError::Transient(_))), "{refused:?}");
    assert_eq!(writer.buffered_rows(), 1, "a refused upload keeps its rows");
}

fn ids_on(server: &S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    let seen = read_back(&["s3", &server.endpoint(), &format!("{bucket}/{prefix}")], &s3_env());
    let mut ids: Vec<String> = seen["pyarrow"]["predictions"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["request_id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_bucket_that_is_down_refuses_batches_keeps_one_file_and_recovers() {
    let server = S3Server::start();
    let record = |i: usize| Record::Prediction(prediction(i, "replica-a"));
    // A file where the bucket's folder must be: the server answers, but
    // cannot store anything in that bucket until the file is gone.
    let blocker = server.data().join("lake");
    std::fs::write(&blocker, b"in the way").expect("write the blocker");
    let url = format!("s3://lake/t?endpoint={}&allow_http=true&max_rows=10&timeout=20s", server.endpoint());
    let mut writer = s3_writer(&url, "replica-a");
    let first: Vec<Record> = (0..10).map(record).collect();
    writer.write(&first).expect("the first file is only sealed");
    for round in 0..3 {
        let refused = writer.write(&[record(100 + round)]);
        assert!(matches!(refused, Err(SinkError::Transient(_))), "{refused:?}");
        assert_eq!(writer.buffered_rows(), 10, "a refused batch is not taken: the buffer stays one file");
    }
    assert!(matches!(writer.flush(), Err(SinkError::Transient(_))));
    std::fs::remove_file(&blocker).expect("remove the blocker");
    server.create_bucket("lake");
    writer.flush().expect("the bucket is back");
    assert_eq!(writer.buffered_rows(), 0);
    writer.write(&[record(10)]).expect("write");
    drop(writer);
    let want: Vec<String> = (0..=10).map(|i| format!("req-{i:04}")).collect();
    assert_eq!(ids_on(&server, "lake", "t"), want, "every accepted row once, the refused ones not");

    // The server stopped: connections are refused, the error comes within
    // the upload timeout and the buffer stays bounded.
    let endpoint = server.endpoint();
    drop(server);
    let url = format!("s3://lake/t?endpoint={endpoint}&allow_http=true&max_rows=10&timeout=20s");
    let mut writer = s3_writer(&url, "replica-a");
    writer.write(&first).expect("sealed");
    for round in 0..3 {
        let refused = writer.write(&[record(200 + round)]);
        assert!(matches!(refused, Err(SinkError::Transient(_))), "{refused:?}");
        assert_eq!(writer.buffered_rows(), 10);
    }
}
