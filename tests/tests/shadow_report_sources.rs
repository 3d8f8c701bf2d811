//! `modelgate shadow report --from` each place the record sinks write
//! (issue 18, item 5): a real gateway with a shadow writes the same traffic
//! to the file sink, a Kafka topic (tansu) and Parquet tables on S3
//! (s3s-fs) at once, outcomes come in through RecordOutcome, and the report
//! read back from each of the three is the same report, with the numbers
//! GetRollout gave live. A broker that does not answer and a prefix with no
//! tables end the report with an error saying so.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::kafka::Broker;
use modelgate_tests::process::{Exited, ServeProcess, run_to_exit, serve_command};
use modelgate_tests::s3::S3Server;
use modelgate_tests::{TestRepo, binary, golden, request, rollout_status, shadow_plan};
use serde_json::Value;

const MODEL: &str = "breast-cancer";
const BUCKET: &str = "lake";

/// The S3 server's credentials, as the provider's variables.
fn s3_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
        ("AWS_REGION", S3Server::REGION),
    ]
}

/// `modelgate shadow report MODEL --from <from> <extra>`, to its exit
/// (killed and failed past a generous ceiling: it must never hang).
fn report(from: &str, extra: &[&str]) -> Exited {
    let mut cmd = Command::new(binary());
    cmd.args(["shadow", "report", MODEL, "--from", from]).args(extra).envs(s3_env());
    run_to_exit(cmd, 180)
}

/// The `--json` report of `from`, which must read every record cleanly.
fn json_report(from: &str) -> Value {
    let out = report(from, &["--json", "--top", "5"]);
    assert!(out.status.success(), "--from {from}: {}", out.stderr);
    assert!(out.stderr.is_empty(), "--from {from}: every record is a v1 record: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// Whether `a` and `b` are the same JSON, numbers to a relative 1e-9: the
/// sources hand over records in different orders (Kafka interleaves its
/// partitions), so sums may round differently in their last bits.
fn same(a: &Value, b: &Value, at: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) {
                Ok(())
            } else {
                Err(format!("{at}: {x} vs {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().try_for_each(|(i, (x, y))| same(x, y, &format!("{at}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x.iter().try_for_each(|(k, v)| {
            y.get(k)
                .ok_or_else(|| format!("{at}.{k}: missing"))
                .and_then(|w| same(v, w, &format!("{at}.{k}")))
        }),
        _ if a == b => Ok(()),
        _ => Err(format!("{at}: {a} vs {b}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_kafka_and_parquet_on_s3_give_the_same_report() {
    let repo = TestRepo::breast_cancer();
    let broker = Broker::start();
    broker.create_topic("shadow", 3);
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let files = repo.path().join("records");
    let topic = format!("kafka://{}/shadow", broker.bootstrap());
    let tables = format!("s3://{BUCKET}/shadow?endpoint={}&allow_http=true", s3.endpoint());
    let mut cmd = serve_command(repo.path(), &repo.path().join(".state"));
    cmd.args(["--shadow-queue", "1000", "--shadow-cpu-budget", "off"])
        .arg("--records")
        .arg(format!("file://{}", files.display()))
        .args(["--records", &format!("{topic}?linger.ms=5"), "--records", &tables])
        .envs(s3_env());
    let mut gw = ServeProcess::start(cmd, &repo.path().join(".serve.log"))
        .unwrap_or_else(|log| panic!("modelgate serve did not start; its log:\n{log}"));
    let mut admin = gw.admin(None).await;
    // v2 is the champion; v1 shadows every request.
    let plan = shadow_plan(MODEL, 1);
    admin.start_rollout(plan).await.unwrap();
    // The golden rows and scaled copies, so the versions' scores spread
    // out and disagree now and then.
    let g = golden(2);
    let mut c = gw.client().await;
    let mut ids = Vec::new();
    for (i, row) in g.rows.iter().enumerate() {
        for scale in [1.0f32, 0.6, 1.5] {
            let scaled: Vec<f32> = row.iter().map(|x| x * scale).collect();
            let mut req = request(MODEL, &[scaled]);
            req.request_id = format!("req-{i}-{scale}");
            req.routing_key = format!("user-{i}");
            ids.push((req.request_id.clone(), req.routing_key.clone()));
            c.predict(req).await.unwrap();
        }
    }
    let sent = ids.len() as u64;
    let until = Instant::now() + Duration::from_secs(120);
    let live = loop {
        let status = rollout_status(&mut admin, MODEL).await;
        let shadow = status.shadows.iter().find(|s| s.version == 1).cloned();
        if let Some(s) = shadow.filter(|s| s.compared + s.errors + s.dropped == sent) {
            break s;
        }
        assert!(Instant::now() < until, "the shadow did not finish {sent} copies: {:?}", status.shadows);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(live.dropped, 0, "no copy was dropped with a queue of 1000 and no CPU budget");
    for (k, (id, key)) in ids.iter().enumerate() {
        let joined = c
            .record_outcome(pb::RecordOutcomeRequest {
                model: MODEL.into(),
                request_id: id.clone(),
                routing_key: key.clone(),
                metric: "revenue".into(),
                value: k as f64,
                timestamp_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .joined;
        assert!(joined, "{id}");
    }
    // A graceful stop flushes every sink: the last Parquet files are uploaded.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(120)).is_some_and(|s| s.success()), "{}", gw.log());

    let mut reports: Vec<(&str, Value)> = Vec::new();
    for (name, from) in [("file", files.to_str().unwrap()), ("kafka", &topic), ("s3", &tables)] {
        let mut doc = json_report(from);
        let read = doc.as_object_mut().unwrap().remove("read").unwrap();
        assert_eq!(read["records"].as_u64(), Some(2 * sent), "{name}: every prediction and outcome: {read}");
        assert_eq!(read["unreadable"], 0, "{name}: {read}");
        match name {
            "kafka" => assert_eq!(read["partitions"], 3, "{read}"),
            // At least a file per table; the other model-less files are not read.
            "s3" => assert!(read["files"].as_u64().unwrap() >= 2, "{read}"),
            _ => assert!(read["files"].as_u64().unwrap() >= 1, "{read}"),
        }
        doc.as_object_mut().unwrap().remove("from").unwrap();
        reports.push((name, doc));
    }
    let (_, file) = &reports[0];
    for (name, doc) in &reports[1..] {
        if let Err(e) = same(file, doc, "") {
            panic!("--from {name} differs from the file sink's report at {e}\nfile: {file}\n{name}: {doc}");
        }
    }
    // The same numbers GetRollout gave live.
    let v = &file["versions"][0];
    assert_eq!((v["shadow_version"].as_u64(), v["compared"].as_u64()), (Some(1), Some(live.compared)));
    assert_eq!(file["skipped"]["outcomes"].as_u64(), Some(sent));
    let agreement = v["agreement_rate"].as_f64().unwrap();
    assert!((agreement - live.agreement_rate).abs() <= 1e-9, "{agreement} vs {}", live.agreement_rate);

    // A topic the brokers do not have, and a prefix with no tables, say so.
    let out = report(&format!("kafka://{}/nope", broker.bootstrap()), &["--timeout", "20s"]);
    assert!(!out.status.success() && out.stderr.contains("nope"), "{}", out.stderr);
    let empty = format!("s3://{BUCKET}/empty?endpoint={}&allow_http=true", s3.endpoint());
    let out = report(&empty, &[]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stderr.contains("no records found") && out.stderr.contains("predictions/model=breast-cancer/"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_broker_that_does_not_answer_ends_the_report_with_an_error_naming_it() {
    // A port that was just free: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let from = format!("kafka://127.0.0.1:{port}/shadow");
    // run_to_exit fails the test if the report is still running after its ceiling.
    let out = report(&from, &["--timeout", "3s"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&format!("no answer from the Kafka brokers 127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}
