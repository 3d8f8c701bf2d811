//! Shadow records end to end: a shadow rollout and RecordOutcome calls on a
//! real gateway write prediction and outcome records to every configured
//! sink; reading the JSON lines back, the outputs are what Predict answered
//! and the outcomes join the predictions on the request id.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_runtime::{Tensor, TensorData};
use modelgate_tests::*;
use serde_json::Value;

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Outputs as f32: the models' own precision (serde_json's default parser
/// may miss an f64's last bit, never an f32's).
fn numbers(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::Float32(v) => v.clone(),
        TensorData::Int64(v) => v.iter().map(|&x| x as f32).collect(),
        other => panic!("unexpected output type {:?}", other.dtype()),
    }
}

fn json_numbers(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Every record in every `.jsonl` file under `dir`, as text lines.
fn lines(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        assert_eq!(path.extension().unwrap(), "jsonl", "{}", path.display());
        out.extend(std::fs::read_to_string(&path).unwrap().lines().map(str::to_string));
    }
    out.sort();
    out
}

fn metric(body: &str, sink: &str, outcome: &str) -> Option<u64> {
    let prefix = format!("modelgate_shadow_records_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_and_outcomes_reach_every_sink_and_join_on_the_request_id() {
    let repo = TestRepo::breast_cancer();
    // Inputs are recorded for this model; 30 features are over the cap of
    // 16 (statistics only), the outputs (1 and 2 elements) are not. One row
    // per run: a dynamically batched run may differ in the last bits from
    // the single-row run it is compared with.
    repo.config("breast-cancer", "max_batch = 1\n[records]\ninputs = true\nmax_values = 16\n");
    let (a, b) = (repo.path().join("records-a"), repo.path().join("records-b"));
    let tables = repo.path().join("tables");
    let broker = modelgate_tests::kafka::Broker::start();
    broker.create_topic("shadow", 3);
    let server = start(&repo, |c| {
        c.shadow_queue = 1000;
        c.records = vec![
            format!("file://{}", a.display()),
            format!("file://{}", b.display()),
            format!("parquet+file://{}", tables.display()),
            format!("kafka://{}/shadow?linger.ms=5", broker.bootstrap()),
        ];
    })
    .await;
    let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    for sink in ["file", "file-2", "parquet", "kafka"] {
        for outcome in ["written", "dropped_full", "dropped_failed", "retried"] {
            assert_eq!(
                metric(&body, sink, outcome),
                Some(0),
                "{sink}/{outcome} exists from the start:\n{body}"
            );
        }
    }
    let g = golden(2);
    let mut c = client(&server).await;
    // What v1 (the shadow to be) answers for each row, asked directly before
    // the rollout (a pinned request then has no shadow of its own).
    let mut direct = Vec::new();
    for row in &g.rows {
        let mut req = request("breast-cancer", std::slice::from_ref(row));
        req.version = Some(1);
        let resp = c.predict(req).await.unwrap().into_inner();
        assert_eq!(resp.version, 1);
        direct.push(resp);
    }
    // v2 is the champion; v1 shadows every request.
    admin(&server, None).await.start_rollout(shadow_plan("breast-cancer", 1)).await.unwrap();
    let mut served = HashMap::new();
    for (i, row) in g.rows.iter().enumerate() {
        let mut req = request("breast-cancer", std::slice::from_ref(row));
        req.request_id = format!("req-{i}");
        req.routing_key = format!("user-{i}");
        let resp = c.predict(req).await.unwrap().into_inner();
        assert_eq!(resp.version, 2);
        served.insert(resp.request_id.clone(), (i, resp));
    }
    let n = g.rows.len();
    let stats = std::sync::Arc::clone(server.gateway.shadow_stats());
    wait_for("every shadow compared", || {
        stats.get("breast-cancer", 1).is_some_and(|t| t.compared == n as u64)
    })
    .await;
    for i in 0..n {
        let r = c
            .record_outcome(pb::RecordOutcomeRequest {
                model: "breast-cancer".into(),
                request_id: format!("req-{i}"),
                routing_key: format!("user-{i}"),
                metric: "revenue".into(),
                value: i as f64,
                timestamp_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.joined);
    }
    // An outcome the gateway cannot join is recorded too, flagged.
    let r = c
        .record_outcome(pb::RecordOutcomeRequest {
            model: "breast-cancer".into(),
            request_id: "req-unknown".into(),
            metric: "revenue".into(),
            value: -1.0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.joined);
    assert!(server.gateway.record_sinks().unwrap().flush(Duration::from_secs(120)));
    let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    for sink in ["file", "file-2", "parquet", "kafka"] {
        assert_eq!(metric(&body, sink, "written"), Some(2 * n as u64 + 1), "{body}");
        assert_eq!(metric(&body, sink, "dropped_full"), Some(0), "{body}");
    }
    let replica = server.gateway.replica().to_string();
    server.stop().await.unwrap();

    let records = lines(&a);
    assert_eq!(records, lines(&b), "every sink gets every record");
    assert_eq!(records.len(), 2 * n + 1);
    let records: Vec<Value> = records.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut predictions = HashMap::new();
    for p in records.iter().filter(|r| r["kind"] == "prediction") {
        assert_eq!(p["schema"], 1);
        assert_eq!(p["model"], "breast-cancer");
        assert_eq!(p["replica"], replica.as_str());
        assert_eq!((&p["champion_version"], &p["champion_role"]), (&2.into(), &"champion".into()));
        assert_eq!((&p["shadow_version"], &p["shadow_role"]), (&1.into(), &"shadow".into()));
        assert!(p["shadow_error"].is_null());
        let id = p["request_id"].as_str().unwrap().to_string();
        let (i, resp) = &served[&id];
        for name in ["label", "probabilities"] {
            let o = p["outputs"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap();
            let champion = output(resp, name);
            assert_eq!(json_numbers(&o["champion"]["values"]), numbers(&champion), "{id} {name}");
            assert_eq!(o["champion"]["shape"], serde_json::json!(champion.shape));
            assert_eq!(o["champion"]["truncated"], false);
            let shadow = output(&direct[*i], name);
            assert_eq!(json_numbers(&o["shadow"]["values"]), numbers(&shadow), "{id} {name}");
            assert!(o["mismatch"].is_null());
        }
        let inputs = p["inputs"].as_array().unwrap();
        assert_eq!(inputs.len(), 1);
        let input = &inputs[0];
        assert_eq!(
            (&input["dtype"], &input["truncated"], &input["count"]),
            (&"FP32".into(), &true.into(), &30.into())
        );
        assert!(input["values"].as_array().unwrap().is_empty());
        let row = &g.rows[*i];
        let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / row.len() as f64;
        assert!((input["mean"].as_f64().unwrap() - mean).abs() < 1e-6 * mean.abs().max(1.0));
        assert!(predictions.insert(id, p["routing_key_hash"].as_str().unwrap().to_string()).is_none());
    }
    assert_eq!(predictions.len(), n);
    let outcomes: Vec<&Value> = records.iter().filter(|r| r["kind"] == "outcome").collect();
    assert_eq!(outcomes.len(), n + 1);
    for o in outcomes {
        assert_eq!((&o["schema"], &o["metric"]), (&1.into(), &"revenue".into()));
        assert_eq!(o["replica"], replica.as_str());
        let id = o["request_id"].as_str().unwrap();
        if id == "req-unknown" {
            assert_eq!(
                (&o["joined"], &o["version"], &o["role"]),
                (&false.into(), &Value::Null, &Value::Null)
            );
            continue;
        }
        // Joined to the version that served the request, and to its prediction.
        assert_eq!((&o["joined"], &o["version"], &o["role"]), (&true.into(), &2.into(), &"champion".into()));
        assert_eq!(o["routing_key_hash"].as_str(), Some(predictions[id].as_str()));
        assert_eq!(o["value"].as_f64().unwrap(), served[id].0 as f64);
    }

    // The Parquet sink got the same records, sealed and written at shutdown:
    // pyarrow reads both tables, DuckDB joins outcomes to predictions.
    let python = modelgate_tests::python::venv("kafka-s3", "requirements-kafka-s3.txt");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root().join("tests/python/parquet_read.py")).arg("local").arg(&tables);
    let out = modelgate_tests::python::run_bounded(cmd, Duration::from_secs(120));
    assert!(out.status.success(), "parquet_read.py: {}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |rows: &Value| {
        let mut ids: Vec<String> =
            rows.as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    let mut want: Vec<String> = predictions.keys().cloned().collect();
    want.sort();
    assert_eq!(ids(&seen["pyarrow"]["predictions"]), want);
    assert_eq!(seen["pyarrow"]["outcomes"].as_array().unwrap().len(), n + 1);
    for row in seen["pyarrow"]["predictions"].as_array().unwrap() {
        assert_eq!((&row["model"], &row["replica"]), (&"breast-cancer".into(), &replica.as_str().into()));
    }
    let joined = seen["duckdb"]["joined"].as_array().unwrap();
    assert_eq!(joined.len(), n, "every joined outcome meets its prediction: {joined:?}");

    // The Kafka sink: an independent consumer reads the same records, each
    // message one JSON record keyed by its routing key's hash.
    let python = modelgate_tests::python::venv("kafka-s3", "requirements-kafka-s3.txt");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root().join("tests/python/kafka_consume.py"))
        .args(["--bootstrap", &broker.bootstrap(), "--topic", "shadow"])
        .args(["--count", &(2 * n + 1).to_string(), "--timeout", "90"]);
    let out = modelgate_tests::python::run_bounded(cmd, Duration::from_secs(180));
    assert!(out.status.success(), "kafka_consume.py: {}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut from_kafka: Vec<Value> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let record: Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
            let key =
                record["routing_key_hash"].as_str().or(record["request_id"].as_str()).unwrap().to_string();
            assert_eq!(m["key"].as_str(), Some(key.as_str()), "{m}");
            record
        })
        .collect();
    let mut from_file = records.clone();
    let order = |r: &Value| format!("{}{}", r["kind"], r["request_id"]);
    from_kafka.sort_by_key(order);
    from_file.sort_by_key(order);
    assert_eq!(from_kafka, from_file, "Kafka carries exactly the records the file sink wrote");
}

#[tokio::test]
async fn a_sink_url_that_cannot_work_stops_start_up_naming_it() {
    let repo = TestRepo::breast_cancer();
    let mut config = modelgate::ServeConfig::new(repo.path());
    config.state_dir = repo.path().join(".state");
    config.records = vec!["kafka://127.0.0.1:9/shadow?compression=brotli".into()];
    let e = format!("{:#}", modelgate::start(config).await.err().unwrap());
    assert!(
        e.contains("--records kafka://127.0.0.1:9/shadow?compression=brotli") && e.contains("brotli"),
        "{e}"
    );
}

/// `[records]` is read again when model.toml changes while serving: inputs
/// start being recorded without a restart; an invalid edit is refused and
/// the settings in use stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_records_table_applies_without_a_restart() {
    let repo = TestRepo::breast_cancer();
    let dir = repo.path().join("records");
    let server = start(&repo, |c| {
        c.rescan = Duration::from_millis(100);
        c.settle = Duration::from_millis(100);
        c.shadow_queue = 1000;
        c.records = vec![format!("file://{}", dir.display())];
    })
    .await;
    admin(&server, None).await.start_rollout(shadow_plan("breast-cancer", 1)).await.unwrap();
    let mut c = client(&server).await;
    let sinks = std::sync::Arc::clone(server.gateway.record_sinks().unwrap());
    let stats = std::sync::Arc::clone(server.gateway.shadow_stats());
    let mut sent = 0u64;
    // Predicts once and returns its prediction record's `inputs`.
    let mut inputs_of_next = async || {
        let mut req = request("breast-cancer", &rows(1));
        req.request_id = format!("req-{sent}");
        c.predict(req).await.unwrap();
        sent += 1;
        wait_for("the copy compared", || stats.get("breast-cancer", 1).is_some_and(|t| t.compared == sent))
            .await;
        assert!(sinks.flush(Duration::from_secs(120)));
        let id = format!("req-{}", sent - 1);
        lines(&dir)
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["request_id"] == id.as_str())
            .unwrap()["inputs"]
            .clone()
    };
    assert!(inputs_of_next().await.is_null(), "off by default");
    // Replaced whole (a rename): a scan that caught the file truncated
    // mid-write would read an empty, valid model.toml.
    let edit = |text: &str| {
        let tmp = repo.path().join("breast-cancer").join(".model.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, repo.path().join("breast-cancer").join("model.toml")).unwrap();
    };
    edit("[records]\ninputs = true\n");
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let inputs = inputs_of_next().await;
        if !inputs.is_null() {
            assert_eq!(inputs[0]["values"].as_array().unwrap().len(), 30, "{inputs}");
            break;
        }
        assert!(Instant::now() < until, "the edit never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Refused like any invalid model.toml: the settings in use stay.
    edit("[records]\ninputs = true\nmax_values = 2000000\n");
    edit("[records]\ninputs = true\nmax_value = 1\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inputs = inputs_of_next().await;
    assert_eq!(inputs[0]["truncated"], false);
    server.stop().await.unwrap();
}

/// A Kafka broker that dies under load costs the champion nothing: with the
/// shadow mirroring every request into a Kafka sink, the broker is stopped
/// and a bounded burst at concurrency 8 all answers OK from the champion;
/// the sink counts what it could not deliver; and a graceful stop returns
/// with the broker still down (the flush is bounded, the state is saved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_under_load_fails_no_predict_and_counts_what_it_lost() {
    let repo = TestRepo::breast_cancer();
    let mut broker = modelgate_tests::kafka::Broker::start();
    broker.create_topic("shadow", 3);
    let server = start(&repo, |c| {
        c.shadow_queue = 1000;
        c.records = vec![format!(
            "kafka://{}/shadow?linger.ms=5&queue.records=200&message.timeout.ms=2000&flush.timeout.ms=500",
            broker.bootstrap()
        )];
    })
    .await;
    let metrics = server.metrics_addr.unwrap();
    let counts = || async move {
        let (_, body) = http_get(metrics, "/metrics").await;
        let get = |outcome: &str| metric(&body, "kafka", outcome).unwrap_or(0);
        (get("written"), get("dropped_full") + get("dropped_failed"))
    };
    admin(&server, None).await.start_rollout(shadow_plan("breast-cancer", 1)).await.unwrap();
    let row = golden(2).rows[0].clone();
    let mut c = client(&server).await;
    // Records flow while the broker is up.
    for i in 0..20 {
        let mut req = request("breast-cancer", std::slice::from_ref(&row));
        req.routing_key = format!("user-{i}");
        c.predict(req).await.unwrap();
    }
    let until = Instant::now() + Duration::from_secs(120);
    while counts().await.0 < 20 {
        assert!(Instant::now() < until, "the first 20 records were not written: {:?}", counts().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    broker.stop();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = c.clone();
        let row = row.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for i in 0..250 {
                let mut req = request("breast-cancer", std::slice::from_ref(&row));
                req.routing_key = format!("user-{t}-{i}");
                match c.predict(req).await {
                    Ok(r) if r.get_ref().version == 2 => {}
                    Ok(r) => failed.push(format!("served by v{}", r.get_ref().version)),
                    Err(s) => failed.push(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} of 2000 Predicts failed with the broker down: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // 2,000 copies and a producer bound of 200 unacknowledged records with
    // no broker: what was not delivered is counted, not kept.
    let until = Instant::now() + Duration::from_secs(120);
    while counts().await.1 == 0 {
        assert!(Instant::now() < until, "no lost record counted: {:?}", counts().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(120), server.stop())
        .await
        .expect("a graceful stop returns with the broker down")
        .unwrap();
}
