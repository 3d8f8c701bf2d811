//! The test servers themselves, driven by clients independent of modelgate
//! (venv `.cache/venv-kafka-s3` from tests/python/requirements-kafka-s3.txt):
//! librdkafka produces and consumes through tansu (tests/src/kafka.rs), boto3
//! does a multipart round trip through s3s-fs (tests/src/s3.rs), and a
//! Parquet file pyarrow writes there is read back by DuckDB over S3. If these
//! pass, a failing sink test is about the sink, not the server.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use modelgate_tests::kafka::{self, Broker};
use modelgate_tests::s3::S3Server;
use modelgate_tests::{python, root};
use serde_json::Value;

fn venv() -> PathBuf {
    python::venv("kafka-s3", "requirements-kafka-s3.txt")
}

/// Runs a tests/python script and parses the JSON it prints; `context` (a
/// server log) is shown when it fails.
fn run_json(script: &str, args: &[String], context: impl Fn() -> String) -> Value {
    let mut cmd = Command::new(venv());
    cmd.arg(root().join("tests/python").join(script)).args(args);
    // Generous: librdkafka's retries and pip-fresh imports on a busy machine.
    let out = python::run_bounded(cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

fn kafka_args(command: &str, broker: &Broker, topic: &str, count: usize) -> Vec<String> {
    [command, "--bootstrap", &broker.bootstrap(), "--topic", topic, "--count", &count.to_string()]
        .map(String::from)
        .to_vec()
}

/// The `i` of every consumed message, checking each key matches its value.
fn consumed_indexes(consumed: &Value) -> Vec<u64> {
    consumed["messages"]
        .as_array()
        .expect("a messages array")
        .iter()
        .map(|m| {
            let value: Value =
                serde_json::from_str(m["value"].as_str().expect("a text value")).expect("JSON value");
            let i = value["i"].as_u64().expect("an index");
            assert_eq!(m["key"], format!("k{i}"), "key and value disagree: {m}");
            i
        })
        .collect()
}

#[test]
fn tansu_takes_1000_idempotent_acks_all_messages_and_gives_them_back() {
    let broker = Broker::start();
    broker.create_topic("smoke", 3);

    let produced =
        run_json("kafka_client.py", &kafka_args("produce", &broker, "smoke", 1000), || broker.log());
    assert_eq!(produced["delivered"], 1000, "{produced}");
    let partitions = produced["partitions"].as_object().expect("partitions");
    assert!(partitions.len() > 1, "keys spread over the 3 partitions: {produced}");

    let consumed =
        run_json("kafka_client.py", &kafka_args("consume", &broker, "smoke", 1000), || broker.log());
    let indexes = consumed_indexes(&consumed);
    assert_eq!(indexes.len(), 1000, "exactly the 1000 produced, no duplicates from retries");
    assert_eq!(indexes.iter().copied().collect::<BTreeSet<_>>(), (0..1000).collect(), "every message once");
}

#[test]
fn tansu_stops_and_serves_again_on_the_same_port() {
    let mut broker = Broker::start();
    let addr = broker.addr();
    let apis = kafka::api_versions(addr).expect("ApiVersions answered");
    // Produce, Fetch, Metadata, ApiVersions, CreateTopics, InitProducerId:
    // what an idempotent producer and a consumer need.
    for key in [0, 1, 3, 18, 19, 22] {
        assert!(apis.contains(&key), "API {key} not among {apis:?}");
    }

    broker.stop();
    assert!(!broker.is_running());
    assert!(kafka::api_versions(addr).is_err(), "a stopped broker answers nothing");

    broker.start_again();
    assert_eq!(broker.addr(), addr);
    assert!(broker.is_running());
    // Memory storage: the restarted broker is empty, and takes new topics.
    broker.create_topic("after-restart", 1);
    let produced =
        run_json("kafka_client.py", &kafka_args("produce", &broker, "after-restart", 10), || broker.log());
    assert_eq!(produced["delivered"], 10, "{produced}");
    let consumed =
        run_json("kafka_client.py", &kafka_args("consume", &broker, "after-restart", 10), || broker.log());
    assert_eq!(consumed_indexes(&consumed), (0..10).collect::<Vec<_>>(), "one partition keeps order");
}

fn s3_args(server: &S3Server, command: &str, rest: &[&str]) -> Vec<String> {
    let mut args = vec![
        command.to_string(),
        "--endpoint".into(),
        server.endpoint(),
        "--access-key".into(),
        S3Server::ACCESS_KEY.into(),
        "--secret-key".into(),
        S3Server::SECRET_KEY.into(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

#[test]
fn s3s_fs_round_trips_a_multipart_object_with_boto3() {
    let server = S3Server::start();
    server.create_bucket("made-by-harness");

    let seen = run_json(
        "s3_client.py",
        &s3_args(&server, "multipart", &["--bucket", "smoke", "--key", "a/b/blob"]),
        || server.log(),
    );
    assert_eq!(seen["parts"], 3, "{seen}");
    assert_eq!(seen["get_sha256"], seen["put_sha256"], "the object read back is the one uploaded");
    let size = seen["size"].as_u64().expect("size");
    assert_eq!(seen["listed"], serde_json::json!([{"key": "a/b/blob", "size": size}]));
    let buckets = seen["buckets"].as_array().expect("buckets");
    assert!(buckets.contains(&"smoke".into()) && buckets.contains(&"made-by-harness".into()), "{seen}");
    assert_eq!(seen["wrong_secret"], "SignatureDoesNotMatch", "authentication is on");

    let on_disk = std::fs::metadata(server.object_path("smoke", "a/b/blob")).expect("the object's file");
    assert_eq!(on_disk.len(), size);
    assert_eq!(server.keys("smoke"), ["a/b/blob"]);
}

#[test]
fn parquet_written_by_pyarrow_is_read_back_by_duckdb_over_s3() {
    let server = S3Server::start();
    let rows = 5000;
    let seen = run_json(
        "s3_client.py",
        &s3_args(
            &server,
            "parquet",
            &["--bucket", "lake", "--key", "day=1/part-0.parquet", "--rows", &rows.to_string()],
        ),
        || server.log(),
    );
    assert_eq!(seen["written"], rows, "{seen}");
    assert_eq!(seen["duckdb_count"], rows, "{seen}");
    assert_eq!(seen["duckdb_sum"], seen["expected_sum"], "{seen}");
    assert_eq!(seen["duckdb_squares"], seen["expected_squares"], "{seen}");

    let file = std::fs::read(server.object_path("lake", "day=1/part-0.parquet")).expect("the Parquet file");
    assert!(file.starts_with(b"PAR1") && file.ends_with(b"PAR1"), "a Parquet file on disk");

    let counted = run_json(
        "s3_client.py",
        &s3_args(
            &server,
            "query",
            &["--sql", "SELECT count(*) AS n FROM read_parquet('s3://lake/day=1/*.parquet') WHERE i % 2 = 0"],
        ),
        || server.log(),
    );
    assert_eq!(counted["rows"], serde_json::json!([[rows / 2]]), "{counted}");
}
