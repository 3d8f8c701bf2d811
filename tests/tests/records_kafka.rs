//! The Kafka record sink against a real Kafka-protocol broker (tansu, see
//! tests/src/kafka.rs), read back by an independent consumer (librdkafka
//! through Python's confluent-kafka, tests/python/kafka_consume.py): every
//! record arrives once, as the JSON written, keyed by the routing key's hash
//! (else the request id) with each key's records in order; a broker stopped
//! mid-stream costs refused and counted records but never a blocked write,
//! and records written once it is back arrive.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use modelgate::{
    KafkaSecurity, KafkaWriter, OutcomeRecord, OutputRecord, PredictionRecord, Record, RecordWriter,
    SCHEMA_VERSION, SinkError, TensorValues,
};
use modelgate_tests::kafka::Broker;
use modelgate_tests::python;
use serde_json::Value;

/// The ceiling for anything that waits on the broker: generous for a busy
/// machine, never a timing claim.
const CEILING: Duration = Duration::from_secs(120);

fn venv() -> PathBuf {
    python::venv("kafka-s3", "requirements-kafka-s3.txt")
}

fn tensor(values: &[f64]) -> TensorValues {
    TensorValues {
        dtype: "FP32".into(),
        shape: vec![1, values.len() as i64],
        values: values.iter().copied().map(Some).collect(),
        strings: vec![],
        truncated: false,
        count: values.len() as u64,
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        mean: Some(values.iter().sum::<f64>() / values.len() as f64),
    }
}

/// Record `i`: mostly predictions, every fifth an outcome; users cycle so
/// each key gets several records, and every seventh has no routing key.
fn record(prefix: &str, i: usize) -> Record {
    let hash = (!i.is_multiple_of(7)).then(|| format!("user{:02}", i % 5));
    let request_id = format!("{prefix}-{i:05}");
    if i % 5 == 4 {
        return Record::Outcome(OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms: 1_765_000_000_000 + i as i64,
            request_id,
            model: "breast-cancer".into(),
            replica: "replica-a".into(),
            routing_key_hash: hash,
            metric: "clicked".into(),
            value: (i % 2) as f64,
            joined: true,
            version: Some(2),
            role: Some("canary".into()),
        });
    }
    let champion = [0.25 + i as f64 / 1000.0, 0.75 - i as f64 / 1000.0];
    let shadow = [champion[0] + 0.001, champion[1] - 0.001];
    Record::Prediction(PredictionRecord {
        schema: SCHEMA_VERSION,
        ts_ms: 1_765_000_000_000 + i as i64,
        request_id,
        model: "breast-cancer".into(),
        replica: "replica-a".into(),
        champion_version: 1,
        champion_role: "champion".into(),
        shadow_version: 2,
        shadow_role: "shadow".into(),
        routing_key_hash: hash,
        champion_latency_us: 800 + i as u64,
        shadow_latency_us: 900 + i as u64,
        shadow_error: None,
        outputs: vec![OutputRecord {
            name: "probabilities".into(),
            champion: tensor(&champion),
            shadow: Some(tensor(&shadow)),
            elements: 2,
            max_abs_diff: Some(0.001),
            mean_abs_diff: Some(0.001),
            agreement: None,
            champion_nan_inf: 0,
            shadow_nan_inf: 0,
            mismatch: None,
        }],
        inputs: None,
    })
}

fn request_id(r: &Record) -> &str {
    match r {
        Record::Prediction(p) => &p.request_id,
        Record::Outcome(o) => &o.request_id,
    }
}

/// What the independent consumer read.
fn consume(broker: &Broker, topic: &str, count: usize) -> Vec<Value> {
    let mut cmd = Command::new(venv());
    cmd.arg(modelgate_tests::root().join("tests/python/kafka_consume.py"))
        .args(["--bootstrap", &broker.bootstrap(), "--topic", topic])
        .args(["--count", &count.to_string(), "--timeout", "90"]);
    let out = python::run_bounded(cmd, CEILING + Duration::from_secs(60));
    assert!(
        out.status.success(),
        "kafka_consume.py: {}\nbroker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    read["messages"].as_array().unwrap().clone()
}

/// Flushes until the broker acknowledged everything (flush is bounded by
/// flush.timeout.ms and says Transient while it has not).
fn flush_until_acknowledged(writer: &mut KafkaWriter) {
    let until = Instant::now() + CEILING;
    loop {
        match writer.flush() {
            Ok(()) => return,
            Err(e) if Instant::now() < until => eprintln!("flush: {e}; again"),
            Err(e) => panic!("records still not acknowledged after {CEILING:?}: {e}"),
        }
    }
}

#[test]
fn every_record_arrives_once_as_written_keyed_and_in_order_per_key() {
    let broker = Broker::start();
    broker.create_topic("shadow-records", 3);
    let url = format!("kafka://{}/shadow-records?compression=lz4&linger.ms=5", broker.bootstrap());
    let mut writer = KafkaWriter::open(&url, &KafkaSecurity::default()).unwrap();
    let records: Vec<Record> = (0..300).map(|i| record("req", i)).collect();
    for batch in records.chunks(40) {
        writer.write(batch).unwrap();
    }
    flush_until_acknowledged(&mut writer);
    assert_eq!(writer.take_undelivered(), 0, "{:?}", writer.last_error());
    assert_eq!(writer.delivered(), 300);

    let messages = consume(&broker, "shadow-records", records.len());
    assert_eq!(messages.len(), records.len(), "every record read back");
    let written: HashMap<&str, &Record> = records.iter().map(|r| (request_id(r), r)).collect();
    let mut seen_ids = std::collections::HashSet::new();
    // key -> (partition, offsets in request order)
    let mut by_key: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    for m in &messages {
        let text = m["value"].as_str().unwrap();
        let read: Record = serde_json::from_str(text).unwrap();
        let original = written[request_id(&read)];
        assert!(seen_ids.insert(request_id(original).to_string()), "{} read twice", request_id(original));
        // Byte for byte (parsing back could round the last digit of a float).
        assert_eq!(text, serde_json::to_string(original).unwrap(), "the JSON as written");
        let key = m["key"].as_str().unwrap().to_string();
        let expected_key = original.routing_key_hash().unwrap_or(request_id(original));
        assert_eq!(key, expected_key, "key = routing-key hash, else request id");
        assert_eq!(m["timestamp"].as_i64(), Some(original.ts_ms()));
        let kind = if matches!(original, Record::Outcome(_)) { "outcome" } else { "prediction" };
        assert_eq!(m["headers"]["kind"], kind);
        assert_eq!(m["headers"]["model"], "breast-cancer");
        assert_eq!(m["headers"]["schema"], SCHEMA_VERSION.to_string());
        by_key.entry(key).or_default().push((
            m["partition"].as_i64().unwrap(),
            m["offset"].as_i64().unwrap(),
            request_id(original).to_string(),
        ));
    }
    assert_eq!(by_key.keys().filter(|k| k.starts_with("user")).count(), 5);
    for (key, mut seen) in by_key {
        let partition = seen[0].0;
        assert!(seen.iter().all(|s| s.0 == partition), "{key}: one partition per key, got {seen:?}");
        seen.sort_by_key(|s| s.1);
        let order: Vec<&String> = seen.iter().map(|s| &s.2).collect();
        assert!(order.is_sorted(), "{key}: records in the order written, got {order:?}");
    }
}

#[test]
fn a_stopped_broker_costs_counted_records_never_a_blocked_write_and_later_records_arrive() {
    let mut broker = Broker::start();
    broker.create_topic("outage", 2);
    let url = format!(
        "kafka://{}/outage?compression=zstd&linger.ms=5&queue.records=60&message.timeout.ms=3000&flush.timeout.ms=1000",
        broker.bootstrap()
    );
    let mut writer = KafkaWriter::open(&url, &KafkaSecurity::default()).unwrap();
    writer.write(&(0..10).map(|i| record("before", i)).collect::<Vec<_>>()).unwrap();
    flush_until_acknowledged(&mut writer);
    assert_eq!((writer.delivered(), writer.take_undelivered()), (10, 0));

    broker.stop();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for b in 0..30 {
        let batch: Vec<Record> = (0..10).map(|i| record("outage", b * 10 + i)).collect();
        let started = Instant::now();
        match writer.write(&batch) {
            Ok(()) => accepted += 10,
            Err(SinkError::Transient(e)) => {
                assert!(e.contains("queue full"), "{e}");
                refused += 10;
            }
            Err(SinkError::Permanent(e)) => panic!("a down broker is not a permanent failure: {e}"),
        }
        // The writer never waits for the broker; the bound is only generous.
        assert!(started.elapsed() < Duration::from_secs(10), "write blocked {:?}", started.elapsed());
    }
    assert!(accepted >= 60 && refused > 0, "accepted {accepted}, refused {refused}: the bound of 60 holds");
    let started = Instant::now();
    let Err(SinkError::Transient(e)) = writer.flush() else {
        panic!("a flush with the broker down must fail as transient");
    };
    assert!(e.contains("not acknowledged"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "flush past its 1 s timeout: {:?}",
        started.elapsed()
    );
    // Every accepted record fails at message.timeout.ms and is counted once.
    let mut undelivered = 0;
    let until = Instant::now() + CEILING;
    while (undelivered < accepted || writer.queued() > 0) && Instant::now() < until {
        undelivered += writer.take_undelivered();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(undelivered, accepted, "each accepted record counted as undelivered");
    assert_eq!(writer.delivered(), 10);

    // Back (empty: the broker keeps topics in memory). Later records arrive;
    // the first may still meet a reconnecting client, so write until a
    // batch is acknowledged whole.
    broker.start_again();
    broker.create_topic("outage", 2);
    let until = Instant::now() + CEILING;
    let mut attempt = 0;
    let last = loop {
        let batch: Vec<Record> = (0..10).map(|i| record(&format!("after{attempt}"), i)).collect();
        let before = writer.delivered();
        let written = writer.write(&batch).is_ok() && writer.flush().is_ok();
        let lost = writer.take_undelivered();
        if written && lost == 0 && writer.delivered() == before + 10 {
            break batch;
        }
        assert!(
            Instant::now() < until,
            "no batch acknowledged since the broker came back: {:?}",
            writer.last_error()
        );
        attempt += 1;
    };
    let arrived = (writer.delivered() - 10) as usize;
    let messages = consume(&broker, "outage", arrived);
    let read: Vec<String> = messages
        .iter()
        .map(|m| request_id(&serde_json::from_str(m["value"].as_str().unwrap()).unwrap()).to_string())
        .collect();
    for r in &last {
        assert!(
            read.iter().any(|id| id == request_id(r)),
            "{} written after the outage arrived",
            request_id(r)
        );
    }
}

/// Under steady writes the producer's queue never empties: a producer left
/// stale by a broker that lost its state (tansu restarted empty) is still
/// replaced once its records have failed for a whole message.timeout.ms,
/// and later records are delivered without any pause in the writes.
#[test]
fn a_producer_left_stale_by_a_restarted_broker_is_replaced_under_steady_writes() {
    let mut broker = Broker::start();
    broker.create_topic("steady", 2);
    let url = format!(
        "kafka://{}/steady?linger.ms=5&message.timeout.ms=2000&flush.timeout.ms=500",
        broker.bootstrap()
    );
    let mut writer = KafkaWriter::open(&url, &KafkaSecurity::default()).unwrap();
    writer.write(&(0..10).map(|i| record("before", i)).collect::<Vec<_>>()).unwrap();
    flush_until_acknowledged(&mut writer);
    assert_eq!(writer.delivered(), 10);

    broker.stop();
    broker.start_again();
    broker.create_topic("steady", 2);
    // A batch every 20 ms, never a flush, so records are always in flight.
    let until = Instant::now() + CEILING;
    let mut batch = 0;
    while writer.delivered() < 10 + 100 {
        assert!(
            Instant::now() < until,
            "{} delivered since the restart after {batch} batches: {:?}",
            writer.delivered() - 10,
            writer.last_error()
        );
        let records: Vec<Record> = (0..10).map(|i| record(&format!("steady{batch}"), i)).collect();
        match writer.write(&records) {
            Ok(()) | Err(SinkError::Transient(_)) => {}
            Err(SinkError::Permanent(e)) => panic!("a restarted broker is not a permanent failure: {e}"),
        }
        let _ = writer.take_undelivered();
        batch += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}
