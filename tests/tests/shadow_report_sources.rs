//! `modelgate shadow report --from` each place the record sinks write
//! (issue 18, item 5): a real gateway with a shadow writes the same traffic
//! to the file sink, a Kafka topic (tansu) and Parquet tables on S3
//! (s3s-fs) at once, outcomes come in through RecordOutcome, and the report
//! read back from each of the three is the same report, with the numbers
//! GetRollout gave live. The same again for Parquet on Google Cloud Storage
//! and Azure Blob Storage (their emulators). A broker that does not answer and a prefix with no
//! tables end the report with an error saying so.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::azurite::Azurite;
use modelgate_tests::gcs::GcsServer;
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
    report_with(from, extra, &s3_env_owned())
}

/// [`report`] with the provider variables `envs`.
fn report_with(from: &str, extra: &[&str], envs: &[(String, String)]) -> Exited {
    let mut cmd = Command::new(binary());
    cmd.args(["shadow", "report", MODEL, "--from", from]).args(extra);
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    run_to_exit(cmd, 180)
}

/// The `--json` report of `from`, which must read every record cleanly.
fn json_report_with(from: &str, envs: &[(String, String)]) -> Value {
    let out = report_with(from, &["--json", "--top", "5"], envs);
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

/// What the gateway's shadow did live, from GetRollout.
struct Live {
    sent: u64,
    compared: u64,
    agreement_rate: f64,
}

/// Runs a gateway writing to the file sink in `files` and to each of
/// `sinks`, with `envs`; v2 is the champion and v1 shadows every request.
/// Sends the golden rows and scaled copies (so the versions' scores spread
/// out and disagree now and then), waits for every copy, reports an outcome
/// for each request and stops the gateway gracefully, which flushes every
/// sink (the last Parquet files are uploaded).
async fn serve_shadow_traffic(
    repo: &TestRepo,
    files: &std::path::Path,
    sinks: &[&str],
    envs: &[(String, String)],
) -> Live {
    let mut cmd = serve_command(repo.path(), &repo.path().join(".state"));
    cmd.args(["--shadow-queue", "1000", "--shadow-cpu-budget", "off"])
        .arg("--records")
        .arg(format!("file://{}", files.display()));
    for sink in sinks {
        cmd.args(["--records", sink]);
    }
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    let mut gw = ServeProcess::start(cmd, &repo.path().join(".serve.log"))
        .unwrap_or_else(|log| panic!("modelgate serve did not start; its log:\n{log}"));
    let mut admin = gw.admin(None).await;
    admin.start_rollout(shadow_plan(MODEL, 1)).await.unwrap();
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
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(120)).is_some_and(|s| s.success()), "{}", gw.log());
    Live { sent, compared: live.compared, agreement_rate: live.agreement_rate }
}

/// The `--json` reports from each of `sources` (name, `--from`), read with
/// `envs`, must each hold every record and equal the first one's; the first
/// must have GetRollout's live numbers.
fn assert_same_reports(sources: &[(&str, &str)], envs: &[(String, String)], live: &Live) {
    let mut reports: Vec<(&str, Value)> = Vec::new();
    for (name, from) in sources {
        let mut doc = json_report_with(from, envs);
        let read = doc.as_object_mut().unwrap().remove("read").unwrap();
        assert_eq!(
            read["records"].as_u64(),
            Some(2 * live.sent),
            "{name}: every prediction and outcome: {read}"
        );
        assert_eq!(read["unreadable"], 0, "{name}: {read}");
        match *name {
            "kafka" => assert_eq!(read["partitions"], 3, "{read}"),
            // At least a file per table; the other model-less files are not read.
            "file" => assert!(read["files"].as_u64().unwrap() >= 1, "{read}"),
            _ => assert!(read["files"].as_u64().unwrap() >= 2, "{name}: {read}"),
        }
        doc.as_object_mut().unwrap().remove("from").unwrap();
        reports.push((name, doc));
    }
    let (first, base) = &reports[0];
    for (name, doc) in &reports[1..] {
        if let Err(e) = same(base, doc, "") {
            panic!("--from {name} differs from the {first} report at {e}\n{first}: {base}\n{name}: {doc}");
        }
    }
    // The same numbers GetRollout gave live.
    let v = &base["versions"][0];
    assert_eq!((v["shadow_version"].as_u64(), v["compared"].as_u64()), (Some(1), Some(live.compared)));
    assert_eq!(base["skipped"]["outcomes"].as_u64(), Some(live.sent));
    let agreement = v["agreement_rate"].as_f64().unwrap();
    assert!((agreement - live.agreement_rate).abs() <= 1e-9, "{agreement} vs {}", live.agreement_rate);
}

fn s3_env_owned() -> Vec<(String, String)> {
    s3_env().iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
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
    let live =
        serve_shadow_traffic(&repo, &files, &[&format!("{topic}?linger.ms=5"), &tables], &s3_env_owned())
            .await;
    let sources = [("file", files.to_str().unwrap()), ("kafka", &topic), ("s3", &tables)];
    assert_same_reports(&sources, &s3_env_owned(), &live);

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

/// Parquet on Google Cloud Storage and Azure Blob Storage, each configured
/// the way an operator of that cloud does it: GCS through a service-account
/// file (`GOOGLE_SERVICE_ACCOUNT`; the emulator's says no OAuth and names
/// its base URL) with `GOOGLE_ALLOW_HTTP`, Azure through
/// `AZURE_STORAGE_USE_EMULATOR` and `AZURITE_BLOB_STORAGE_URL` (object_store's
/// Azurite switch: the emulator's well-known account and key). The report
/// from each equals the file sink's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_on_google_cloud_storage_and_azure_gives_the_file_sinks_report() {
    let repo = TestRepo::breast_cancer();
    let gcs = GcsServer::start();
    gcs.create_bucket(BUCKET);
    let azurite = Azurite::start();
    azurite.create_container(BUCKET);
    let key_file = repo.path().join("gcs-service-account.json");
    std::fs::write(&key_file, gcs.service_account_key()).unwrap();
    let envs: Vec<(String, String)> = vec![
        ("GOOGLE_SERVICE_ACCOUNT".into(), key_file.to_str().unwrap().into()),
        ("GOOGLE_ALLOW_HTTP".into(), "true".into()),
        ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
        ("AZURITE_BLOB_STORAGE_URL".into(), format!("http://{}", azurite.authority())),
    ];
    let files = repo.path().join("records");
    let (on_gcs, on_azure) = (format!("gs://{BUCKET}/shadow"), format!("az://{BUCKET}/shadow"));
    let live = serve_shadow_traffic(&repo, &files, &[&on_gcs, &on_azure], &envs).await;
    let keys = gcs.keys(BUCKET, "shadow/");
    assert!(keys.iter().any(|k| k.starts_with("shadow/predictions/model=breast-cancer/date=")), "{keys:?}");
    let sources = [("file", files.to_str().unwrap()), ("gcs", &on_gcs), ("azure", &on_azure)];
    assert_same_reports(&sources, &envs, &live);

    // A prefix with no tables says so on each.
    for empty in [format!("gs://{BUCKET}/empty"), format!("az://{BUCKET}/empty")] {
        let out = report_with(&empty, &[], &envs);
        assert!(!out.status.success(), "{}", out.stdout);
        assert!(out.stderr.contains("no records found"), "{empty}: {}", out.stderr);
    }
}

#[test]
fn a_broker_that_does_not_answer_ends_the_report_with_an_error_naming_it() {
    // Connections to it are refused.
    let closed = modelgate_tests::closed_port();
    let port = closed.addr.port();
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
