//! `modelgate shadow report` (issue 18, item 5): the offline comparison from
//! stored records alone. Real binary, real files in the file sink's layout
//! (one directory per replica, rotated files), records made from the v1
//! `Record` types; the numbers are checked against the same statistics
//! computed here independently, and, on a real gateway's records, against
//! GetRollout's live shadow totals for the same traffic.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use modelgate::cli::shadow_report::source::{
    OutcomeRecord, OutputRecord, PredictionRecord, Record, TensorValues,
};
use modelgate_tests::process::ServeProcess;
use modelgate_tests::{TestRepo, binary, golden, request, rollout_status, shadow_plan};
use serde_json::Value;

const MODEL: &str = "breast-cancer";
const T0: i64 = 1_796_616_000_000; // 2026-12-07T04:00:00Z

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run modelgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tensor(dtype: &str, values: &[f64]) -> TensorValues {
    TensorValues {
        dtype: dtype.into(),
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

/// What the gateway records for a classifier with a label and a
/// probabilities output: champion probability `p`, shadow `q`.
fn prediction(i: u64, replica: &str, shadow_version: u64, p: f64, q: f64) -> PredictionRecord {
    let label = |x: f64| f64::from(u8::from(x >= 0.5));
    let d = (p - q).abs();
    PredictionRecord {
        schema: 1,
        ts_ms: T0 + i as i64 * 1000,
        request_id: format!("req-{i}"),
        model: MODEL.into(),
        replica: replica.into(),
        champion_version: 1,
        champion_role: "champion".into(),
        shadow_version,
        shadow_role: "shadow".into(),
        routing_key_hash: Some(format!("{i:016x}")),
        champion_latency_us: 1_000 + i % 100,
        shadow_latency_us: 3_000 + i % 300,
        shadow_error: None,
        outputs: vec![
            OutputRecord {
                name: "label".into(),
                champion: tensor("INT64", &[label(p)]),
                shadow: Some(tensor("INT64", &[label(q)])),
                elements: 1,
                max_abs_diff: None,
                mean_abs_diff: None,
                agreement: Some(if label(p) == label(q) { 1.0 } else { 0.0 }),
                champion_nan_inf: 0,
                shadow_nan_inf: 0,
                mismatch: None,
            },
            OutputRecord {
                name: "probabilities".into(),
                champion: tensor("FP32", &[1.0 - p, p]),
                shadow: Some(tensor("FP32", &[1.0 - q, q])),
                elements: 2,
                max_abs_diff: Some(d),
                mean_abs_diff: Some(d),
                agreement: None,
                champion_nan_inf: 0,
                shadow_nan_inf: 0,
                mismatch: None,
            },
        ],
        inputs: None,
    }
}

/// A deterministic spread of probabilities in [0, 1).
fn spread(i: u64, salt: u64) -> f64 {
    let x = (i
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(salt.wrapping_mul(1_442_695_040_888_963_407)))
        >> 11;
    (x % 1_000_000) as f64 / 1_000_000.0
}

/// The fixture: 600 records of shadow v2 and 200 of v3 over two replicas'
/// directories (three files each), 10 v2 shadow errors, an outcome, another
/// model's record and a line cut short. Returns v2's records.
fn fixture(dir: &Path) -> Vec<PredictionRecord> {
    let mut v2 = Vec::new();
    let mut files: Vec<Vec<String>> = vec![Vec::new(); 6];
    for i in 0..800u64 {
        let p = spread(i, 1);
        let q = (p + (spread(i, 2) - 0.5) * 0.2).clamp(0.0, 1.0);
        let version = if i % 4 == 3 { 3 } else { 2 };
        let mut r = prediction(i, if i % 2 == 0 { "gw-0" } else { "gw-1" }, version, p, q);
        if version == 2 && i % 60 == 0 {
            r.shadow_error = Some("shadow failed: out of memory".into());
            r.outputs.iter_mut().for_each(|o| {
                o.shadow = None;
                (o.agreement, o.max_abs_diff, o.mean_abs_diff) = (None, None, None);
            });
        }
        if version == 2 {
            v2.push(r.clone());
        }
        files[(i % 6) as usize].push(serde_json::to_string(&Record::Prediction(r)).unwrap());
    }
    let mut other = prediction(9_999, "gw-0", 2, 0.1, 0.9);
    other.model = "other".into();
    files[0].push(serde_json::to_string(&Record::Prediction(other)).unwrap());
    files[1].push(
        serde_json::to_string(&Record::Outcome(OutcomeRecord {
            schema: 1,
            ts_ms: T0,
            request_id: "req-1".into(),
            model: MODEL.into(),
            replica: "gw-1".into(),
            routing_key_hash: None,
            metric: "click".into(),
            value: 1.0,
            joined: true,
            version: Some(1),
            role: Some("champion".into()),
        }))
        .unwrap(),
    );
    // A replica that died mid-write leaves half a line.
    files[5].push("{\"kind\":\"prediction\",\"schema\":1,\"ts_ms\":17966".into());
    for (n, lines) in files.iter().enumerate() {
        let replica = dir.join(format!("gw-{}", n % 2));
        std::fs::create_dir_all(&replica).unwrap();
        std::fs::write(replica.join(format!("shadow-{T0}-{n}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
    v2
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn near(got: &Value, want: f64, rel: f64) -> bool {
    got.as_f64().is_some_and(|g| (g - want).abs() <= want.abs() * rel + 1e-12)
}

#[test]
fn the_report_merges_replicas_and_matches_statistics_computed_here() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = fixture(dir.path());
    let out =
        run(&["shadow", "report", MODEL, "--from", dir.path().to_str().unwrap(), "--json", "--top", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("skipped 1 lines that are not v1 records") && stderr.contains("not JSON"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(doc["read"]["files"], 6);
    assert_eq!(doc["read"]["unreadable"], 1);
    assert_eq!(doc["skipped"]["other_models"], 1);
    assert_eq!(doc["skipped"]["outcomes"], 1);
    let versions = doc["versions"].as_array().unwrap();
    assert_eq!(versions.iter().map(|v| v["shadow_version"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    let v = &versions[0];
    assert_eq!(v["replicas"], serde_json::json!(["gw-0", "gw-1"]));

    // The same numbers, computed here from the records.
    let compared: Vec<&PredictionRecord> = v2.iter().filter(|r| r.shadow_error.is_none()).collect();
    let errors = v2.len() - compared.len();
    assert_eq!((v["records"].as_u64(), v["errors"].as_u64()), (Some(v2.len() as u64), Some(errors as u64)));
    assert_eq!(v["compared"].as_u64(), Some(compared.len() as u64));
    let agreement =
        compared.iter().map(|r| r.outputs[0].agreement.unwrap()).sum::<f64>() / compared.len() as f64;
    assert!(agreement < 1.0, "the fixture has disagreements");
    assert!(near(&v["agreement_rate"], agreement, 1e-12), "{} vs {agreement}", v["agreement_rate"]);
    let mut diffs: Vec<f64> = compared.iter().map(|r| r.outputs[1].max_abs_diff.unwrap()).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(near(&v["mean_abs_diff"], mean, 1e-12));
    diffs.sort_by(f64::total_cmp);
    let q = &v["record_max_abs_diff"];
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        // HDR histograms keep three significant digits.
        assert!(near(&q[name], quantile(&diffs, p), 2e-3), "{name}: {} vs {}", q[name], quantile(&diffs, p));
    }
    assert!(near(&q["max"], *diffs.last().unwrap(), 1e-12));
    assert!(near(&v["champion_latency"]["p50_ms"], 1.05, 0.02), "{}", v["champion_latency"]);
    assert!(
        v["shadow_latency"]["p99_ms"].as_f64().unwrap() > v["champion_latency"]["p99_ms"].as_f64().unwrap()
    );

    // The top 5 are the five largest differences.
    let mut by_diff = compared.clone();
    by_diff.sort_by(|a, b| b.outputs[1].max_abs_diff.unwrap().total_cmp(&a.outputs[1].max_abs_diff.unwrap()));
    let want: Vec<&str> = by_diff.iter().take(5).map(|r| r.request_id.as_str()).collect();
    let got: Vec<&str> = v["largest_differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);

    // Disagreement by the champion's top probability, bucket by bucket.
    let buckets = v["score_buckets"].as_array().unwrap();
    assert_eq!(buckets.iter().map(|b| b["n"].as_u64().unwrap()).sum::<u64>(), compared.len() as u64);
    for b in buckets {
        let lo = b["lo"].as_f64().unwrap();
        let inside: Vec<&&PredictionRecord> = compared
            .iter()
            .filter(|r| {
                let top = r.outputs[1].champion.max.unwrap();
                top >= lo && (top < lo + 0.1 || (lo >= 0.9 && top <= 1.0))
            })
            .collect();
        assert_eq!(b["n"].as_u64(), Some(inside.len() as u64), "bucket {lo}");
        let disagree = inside.iter().filter(|r| r.outputs[0].agreement == Some(0.0)).count() as f64;
        assert!(near(&b["disagreement_rate"], disagree / inside.len() as f64, 1e-9), "bucket {lo}: {b}");
    }
}

#[test]
fn filters_pick_a_version_and_a_time_window_and_the_table_reads() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let from = dir.path().to_str().unwrap();
    // Records 100..200 (ts T0+100 s up to T0+200 s), v3 only: i % 4 == 3.
    let since = (T0 + 100_000).to_string();
    let out = run(&[
        "shadow",
        "report",
        MODEL,
        "--from",
        from,
        "--json",
        "--version",
        "3",
        "--since",
        &since,
        "--until",
        "2026-12-07T04:03:20Z",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let versions = doc["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(
        (versions[0]["shadow_version"].as_u64(), versions[0]["records"].as_u64()),
        (Some(3), Some(25))
    );
    assert_eq!(versions[0]["first_ts_ms"].as_i64(), Some(T0 + 103_000));

    let out = run(&["shadow", "report", MODEL, "--from", from]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in
        ["shadow v2 beside champion v1", "shadow v3", "agreement", "max |diff|", "latency ms", "0.5–0.6"]
    {
        assert!(table.contains(want), "no {want:?} in:\n{table}");
    }
    // One file alone is a source too.
    let one = dir.path().join("gw-0").join(format!("shadow-{T0}-0.jsonl"));
    let out = run(&["shadow", "report", MODEL, "--from", one.to_str().unwrap(), "--json"]);
    let doc: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(doc["read"]["files"], 1);
}

/// Checks that every element is closed in order (void and self-closed ones
/// aside) and that text holds no raw `<`: enough to catch a broken page.
fn check_well_formed(html: &str) -> Result<(), String> {
    const VOID: [&str; 2] = ["meta", "br"];
    let mut open: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("a tag is never closed")? + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        if tag.contains('<') {
            return Err(format!("raw < inside {tag:?}"));
        }
        let name: String =
            tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if let Some(closing) = tag.strip_prefix('/') {
            let closing = closing.trim();
            match open.pop() {
                Some(o) if o == closing => {}
                o => return Err(format!("</{closing}> closes {o:?}")),
            }
        } else if !tag.ends_with('/') && !VOID.contains(&name.as_str()) {
            open.push(name);
        }
    }
    if open.is_empty() { Ok(()) } else { Err(format!("never closed: {open:?}")) }
}

#[test]
fn the_html_page_is_self_contained_well_formed_and_has_its_plots() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let page = dir.path().join("report.html");
    let out = run(&[
        "shadow",
        "report",
        MODEL,
        "--from",
        dir.path().to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    check_well_formed(&html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Per version: the difference histogram and the latency CDFs.
    assert_eq!(html.matches("<svg").count(), 4);
    assert!(html.contains("histogram of max |diff| per record, shadow v2"));
    assert!(html.contains("latency CDFs, champion and shadow v3"));
    assert_eq!(html.matches("<polyline").count(), 4, "a CDF per version per role");
    assert!(html.matches("<rect").count() >= 60, "the histograms' bars");
    for external in ["http://", "https://", "<script", "<link", "src=", "url(", "@import"] {
        assert!(!html.contains(external), "the page must not load anything: found {external}");
    }
    assert!(check_well_formed("<p><b>x</p></b>").is_err(), "the checker catches crossed tags");
}

#[test]
fn bad_sources_and_bad_input_are_named() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let from = dir.path().to_str().unwrap();
    let fails = |args: &[&str], want: &str| {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
    };
    // The sinks' URL grammar, checked before anything is contacted.
    fails(&["shadow", "report", MODEL, "--from", "kafka://broker/shadow"], "is not host:port");
    fails(&["shadow", "report", MODEL, "--from", "s3://bucket/shadow?max_rowz=1"], "unknown parameter");
    fails(&["shadow", "report", MODEL, "--from", "ftp://host/records"], "unknown scheme ftp://");
    // The sink's --kafka-* flags, checked as the sink checks them.
    fails(
        &["shadow", "report", MODEL, "--from", "kafka://127.0.0.1:9/t", "--kafka-sasl-mechanism", "PLAIN"],
        "needs security.protocol=sasl_plaintext or sasl_ssl",
    );
    fails(&["shadow", "report", MODEL, "--from", "/no/such/records"], "/no/such/records");
    fails(&["shadow", "report", "nope", "--from", from], "no prediction records of model nope");
    fails(&["shadow", "report", MODEL, "--from", from, "--since", "whenever"], "--since");
    fails(&["shadow", "report", MODEL, "--from", from, "--version", "9"], "802 records");
    let out = run(&["shadow", "report", MODEL, "--from", "kafka://x", "--json"]);
    let err: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert!(err["message"].as_str().unwrap().contains("no topic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_gateways_records_give_the_same_numbers_as_get_rollout() {
    let repo = TestRepo::breast_cancer();
    let mut gw = ServeProcess::spawn(&repo, &["--shadow-queue", "1000", "--shadow-cpu-budget", "off"]);
    let mut admin = gw.admin(None).await;
    // v2 is the champion; v1 shadows every request.
    let plan = shadow_plan(MODEL, 1);
    admin.start_rollout(plan).await.unwrap();
    // The golden rows, and scaled copies of them so the two versions'
    // scores spread out and may disagree near the boundary.
    let g = golden(2);
    let mut c = gw.client().await;
    let mut sent = 0u64;
    for (i, row) in g.rows.iter().enumerate() {
        for scale in [1.0f32, 0.6, 0.8, 1.2, 1.5] {
            let scaled: Vec<f32> = row.iter().map(|x| x * scale).collect();
            let mut req = request(MODEL, &[scaled]);
            req.request_id = format!("req-{i}-{scale}");
            req.routing_key = format!("user-{i}");
            c.predict(req).await.unwrap();
            sent += 1;
        }
    }
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
    // A graceful stop flushes the file sink.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(120)).is_some_and(|s| s.success()), "{}", gw.log());

    let records = repo.path().join(".state").join("shadow");
    let out = run(&["shadow", "report", MODEL, "--from", records.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "every line is a v1 record: {}", text(&out.stderr));
    let doc: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let v = &doc["versions"][0];
    assert_eq!(v["shadow_version"], 1);
    assert_eq!(v["champion_versions"], serde_json::json!([2]));
    assert_eq!((v["compared"].as_u64(), v["errors"].as_u64()), (Some(live.compared), Some(live.errors)));
    assert!(
        near(&v["agreement_rate"], live.agreement_rate, 1e-9),
        "{} vs {}",
        v["agreement_rate"],
        live.agreement_rate
    );
    assert!(
        near(&v["mean_abs_diff"], live.mean_abs_diff, 1e-9),
        "{} vs {}",
        v["mean_abs_diff"],
        live.mean_abs_diff
    );
    // Both are HDR histograms of the same latencies at three significant digits.
    assert!(
        near(&v["shadow_latency"]["p99_ms"], live.p99_ms, 2e-3),
        "{} vs {}",
        v["shadow_latency"],
        live.p99_ms
    );
    let buckets: u64 = v["score_buckets"].as_array().unwrap().iter().map(|b| b["n"].as_u64().unwrap()).sum();
    assert_eq!(buckets, live.compared, "every compared record has a champion score");
}

#[test]
fn memory_stays_bounded_whatever_the_input_size() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // ~200 MB of records (100-element outputs), more than the report may hold.
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.path().join("big.jsonl")).unwrap());
    let wide: Vec<f64> = (0..100).map(|k| f64::from(k) / 100.0).collect();
    let mut written = 0u64;
    for i in 0..80_000u64 {
        let mut r = prediction(i, "gw-0", 2, spread(i, 1), spread(i, 3));
        r.outputs[1].champion = tensor("FP32", &wide);
        r.outputs[1].shadow = Some(tensor("FP32", &wide));
        let line = serde_json::to_vec(&Record::Prediction(r)).unwrap();
        written += line.len() as u64 + 1;
        file.write_all(&line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
    drop(file);
    assert!(written > 150 << 20, "the input is {written} bytes");

    let mut child = Command::new(binary())
        .args(["shadow", "report", MODEL, "--from", dir.path().to_str().unwrap(), "--json", "--top", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let until = Instant::now() + Duration::from_secs(600);
    let mut peak_kib = 0u64;
    // VmHWM is the process's peak so far: the last reading before it exits.
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "the report ran over 10 minutes");
        if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(doc["versions"][0]["records"], 80_000);
    assert!(peak_kib > 0, "no memory reading");
    assert!(peak_kib < 80 * 1024, "peak RSS {peak_kib} KiB for a {written}-byte input");
}
