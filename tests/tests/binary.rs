//! The `modelgate` binary as a person runs it: `serve` prints a ready line with
//! a sample command, and that command works; errors exit non-zero.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use modelgate_tests::*;

struct Served {
    child: Child,
    addr: String,
    admin: String,
    sample: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(repo: &TestRepo) -> Served {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--models"])
        .arg(repo.path())
        .arg("--state-dir")
        .arg(repo.path().join(".state"))
        .args(["--admin-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn modelgate serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut admin = None;
    let mut sample = None;
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        if let Some(rest) = line.strip_prefix("modelgate ready: Predict (modelgate.v1) on ") {
            addr = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.strip_prefix("  admin on ") {
            admin = Some(rest.trim().to_string());
        }
        if let Some(cmd) = line.strip_prefix("try: ") {
            sample = Some(cmd.to_string());
            break;
        }
    }
    Served {
        child,
        addr: addr.expect("ready line"),
        admin: admin.expect("admin line"),
        sample: sample.expect("sample command"),
    }
}

fn run_predict(args: &[&str]) -> std::process::Output {
    Command::new(binary()).arg("predict").args(args).output().expect("run modelgate predict")
}

#[test]
fn the_printed_sample_command_works() {
    let repo = TestRepo::breast_cancer();
    let served = serve(&repo);
    // The sample is `<program> predict --addr A --model M --input '<json>'`.
    let input = served.sample.split("--input '").nth(1).expect("input").trim_end_matches('\'');
    let out = run_predict(&["--addr", &served.addr, "--model", "breast-cancer", "--input", input]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("model breast-cancer  version 2  role champion"), "{stdout}");
    assert!(stdout.contains("row  label  probabilities"), "{stdout}");

    let g = golden(1);
    let rows: Vec<String> = g.rows[..2]
        .iter()
        .map(|r| format!("[{}]", r.iter().map(f32::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    let json_input = format!("{{\"input\": [{}]}}", rows.join(","));
    let out = run_predict(&[
        "--addr",
        &served.addr,
        "--model",
        "breast-cancer",
        "--version",
        "1",
        "--routing-key",
        "user-7",
        "--json",
        "--input",
        &json_input,
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["role"], "pinned");
    assert_eq!(doc["outputs"]["label"], serde_json::json!(g.labels[..2]));
    assert_eq!(doc["request_id"].as_str().map(str::len), Some(32));
    let p0 = doc["outputs"]["probabilities"][0][0].as_f64().unwrap() as f32;
    assert!((p0 - g.probabilities[0][0]).abs() < 1e-5);
}

#[test]
fn predict_errors_exit_non_zero_with_the_status() {
    let repo = TestRepo::breast_cancer();
    let served = serve(&repo);
    let out = run_predict(&["--addr", &served.addr, "--model", "nope", "--input", "[[1]]"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: NOT_FOUND: model 'nope' not found"), "{stderr}");
    let out = run_predict(&["--addr", &served.addr, "--model", "breast-cancer", "--input", "[[1, 2]]"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("INVALID_ARGUMENT") && stderr.contains("expected [N, 30]"), "{stderr}");
}

#[test]
fn a_missing_onnx_runtime_is_one_clear_error() {
    let repo = TestRepo::breast_cancer();
    let out = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--ort-lib", "/nonexistent/libonnxruntime.so", "--models"])
        .arg(repo.path())
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ONNX Runtime library not found at /nonexistent/libonnxruntime.so"), "{stderr}");
}

#[test]
fn a_missing_model_repository_is_one_clear_error() {
    let out = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--models", "/nonexistent/models"])
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read model repository /nonexistent/models"), "{stderr}");
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary()).args(args).output().expect("run modelgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operators_drive_a_canary_and_roll_back_with_one_command() {
    let repo = TestRepo::breast_cancer();
    let served = serve(&repo);
    let admin = ["--admin-addr", served.admin.as_str()];
    let (ok, out, err) = run_cli(
        &[
            &["admin"],
            &admin[..],
            &["start", "breast-cancer", "canary", "--candidate", "1", "--steps", "10,50,100"],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("breast-cancer: canary running"), "{out}");
    assert!(out.contains("canary          v1"), "{out}");

    let (ok, out, err) = run_cli(&[&["status"], &admin[..], &["--json"]].concat());
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc[0]["strategy"], "canary");
    assert_eq!(doc[0]["arms"].as_array().unwrap().len(), 2);

    let (ok, out, err) = run_cli(&[&["analysis", "breast-cancer"], &admin[..]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("breast-cancer: canary running"), "{out}");
    // The verdict also waits for the step's own minimums (issue 16).
    assert!(
        out.contains(
            "verdict: waiting (v1 step minimums: 0 of 500 samples, 0 s of 60 s in the step; v1 0 of 50 samples for the sequential tests)"
        ),
        "{out}"
    );
    assert!(
        out.contains("trigger nan_inf_rate  waiting  waiting: 0 of 50 requests since the rollout started"),
        "{out}"
    );
    let (ok, out, err) = run_cli(&[&["analysis", "breast-cancer"], &admin[..], &["--json"]].concat());
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["arms"].as_array().unwrap().len(), 2);
    let (ok, _, err) = run_cli(&[&["analysis", "no-such-model"], &admin[..]].concat());
    assert!(!ok);
    assert!(err.contains("error: NOT_FOUND"), "{err}");

    let (ok, out, err) = run_cli(&[&["rollback", "breast-cancer"], &admin[..]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("rolled_back"), "{out}");

    let (ok, out, _) = run_cli(&[&["admin"], &admin[..], &["events", "--model", "breast-cancer"]].concat());
    assert!(ok);
    assert!(out.contains("started") && out.contains("rolled_back"), "{out}");

    let (ok, out, _) =
        run_cli(&[&["admin"], &admin[..], &["sample-size", "--variance", "1", "--mde", "0.1"]].concat());
    assert!(ok);
    assert!(out.starts_with("1570 per arm"), "{out}");

    // A mistake is the server's status and a non-zero exit.
    let (ok, _, err) = run_cli(&[&["admin"], &admin[..], &["advance", "breast-cancer"]].concat());
    assert!(!ok);
    assert!(err.contains("error: FAILED_PRECONDITION"), "{err}");
    let (ok, out, err) = run_cli(&[&["admin"], &admin[..], &["list-models"]].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("breast-cancer: champion v2") && out.contains("v1") && out.contains("READY"),
        "{out}"
    );
}

/// The stage is numbered from 1 everywhere an operator reads it: the text of
/// `modelgate status`, its `--json` (RolloutStatus.stage), the
/// `modelgate_rollout_stage` gauge and `--if-stage`. They used to disagree
/// (text "stage 1 of 3", JSON and gauge 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_text_json_and_stage_metric_agree() {
    let repo = TestRepo::breast_cancer();
    let gw = modelgate_tests::process::ServeProcess::spawn(&repo, &[]);
    let admin_addr = gw.admin_addr.to_string();
    let admin = ["--admin-addr", admin_addr.as_str()];
    let start = [&["admin"], &admin[..], &["start", "breast-cancer", "canary", "--candidate", "1"]].concat();
    let (ok, _, err) = run_cli(&[&start[..], &["--steps", "10,50,100"]].concat());
    assert!(ok, "{err}");
    let labels = [("model", "breast-cancer"), ("strategy", "canary")];
    for stage in [1u32, 2] {
        let (ok, text, err) = run_cli(&[&["status", "breast-cancer"], &admin[..]].concat());
        assert!(ok, "{err}");
        assert!(text.contains(&format!("stage {stage} of 3")), "{text}");
        let (ok, json, err) = run_cli(&[&["status", "breast-cancer"], &admin[..], &["--json"]].concat());
        assert!(ok, "{err}");
        let doc: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
        let status = if doc.is_array() { &doc[0] } else { &doc };
        assert_eq!(status["stage"], stage, "{json}");
        assert_eq!(status["stages"], 3, "{json}");
        assert_eq!(gw.metric("modelgate_rollout_stage", &labels).await, f64::from(stage));
        // --if-stage takes the number the operator just read.
        let advance = [&["admin"], &admin[..], &["advance", "breast-cancer", "--if-stage"]].concat();
        let (ok, _, err) = run_cli(&[&advance[..], &[stage.to_string().as_str()]].concat());
        assert!(ok, "advance --if-stage {stage}: {err}");
    }
    // The number just left is refused, and says so in the same numbering.
    let advance = [&["admin"], &admin[..], &["advance", "breast-cancer", "--if-stage", "2"]].concat();
    let (ok, _, err) = run_cli(&advance);
    assert!(!ok);
    assert!(err.contains("at stage 3, not stage 2"), "{err}");
    // Over gRPC, 0 names no stage.
    let zero = modelgate_proto::v1::RolloutRequest {
        model: "breast-cancer".into(),
        reason: String::new(),
        expected_stage: Some(0),
    };
    let e = gw.admin(None).await.advance(zero).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("numbered from 1"), "{}", e.message());
}

/// Issue 17 (6, 7): a client command whose reader has gone away
/// (`modelgate status | head -1`) ends quietly with status 0 instead of
/// panicking; the server's log to a file carries no colour codes.
#[test]
fn client_commands_end_quietly_when_their_reader_goes_away() {
    let repo = TestRepo::breast_cancer();
    let served = serve(&repo);
    let admin = ["--admin-addr", served.admin.as_str()];
    let start = [&["admin"], &admin[..], &["start", "breast-cancer", "canary", "--candidate", "1"]].concat();
    let (ok, _, err) = run_cli(&start);
    assert!(ok, "{err}");
    let calls: [Vec<&str>; 5] = [
        [&["status"], &admin[..]].concat(),
        [&["status"], &admin[..], &["--json"]].concat(),
        [&["analysis", "breast-cancer"], &admin[..]].concat(),
        [&["admin"], &admin[..], &["list-models"]].concat(),
        [&["admin"], &admin[..], &["events"]].concat(),
    ];
    for args in calls {
        let mut child = Command::new(binary())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn modelgate");
        // The reader goes away before the command has written anything (it
        // has a connection to make first).
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for modelgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
    }

    drop(served);
    let gw = modelgate_tests::process::ServeProcess::spawn(&repo, &[]);
    let log = gw.log();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log:?}");
}
