//! The client commands as scripts and people use them (issue 17, items
//! 8–10): `--json` documents without JSON in strings and JSON errors,
//! `admin start --wait` and `status --watch` ending by how the rollout ended,
//! human times in `admin events`, shell completions and `modelgate outcome`.
//! Real binary, real gateway process, real gRPC on loopback.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use modelgate_tests::process::ServeProcess;
use modelgate_tests::*;
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().expect("run modelgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every key of `v`, at any depth.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Sends keyed requests until `child` exits (or fails after `secs`), then
/// returns its output.
async fn traffic_until_exit(gw: &ServeProcess, mut child: Child, secs: u64) -> Output {
    let mut c = gw.client().await;
    let until = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {secs} s: {}\n{}", text(&out.stdout), text(&out.stderr));
        }
        versions_for_keys(&mut c, "breast-cancer", (i..i + 50).map(|k| format!("w{k}"))).await;
        i += 50;
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelgate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_wait_and_status_watch_end_by_how_the_rollout_ended() {
    // v3 (the newest) starts as champion; v2 is healthy, v1 answers NaN.
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, NAN).add("breast-cancer", 2, V1).add("breast-cancer", 3, V2);
    let gw = ServeProcess::spawn(&repo, &["--tick-ms", "100"]);
    let admin = gw.admin_addr.to_string();

    // A canary of the healthy v2 that advances by itself: --wait exits 0 once
    // it is promoted. The trigger overrides and --reason come after the plan.
    let waiter = spawn(&[
        "admin",
        "--admin-addr",
        &admin,
        "start",
        "breast-cancer",
        "canary",
        "--candidate",
        "2",
        "--steps",
        "50,100",
        "--step-seconds",
        "0",
        "--step-samples",
        "10",
        "--auto-advance",
        "--reason",
        "release 1.4",
        "--p99-sla-ms",
        "5000",
        "--wait",
        "--wait-timeout",
        "600",
    ]);
    let out = traffic_until_exit(&gw, waiter, 300).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("breast-cancer: canary running"), "the start is printed: {stdout}");
    assert!(stdout.contains("canary promoted"), "the end is printed: {stdout}");
    let events = run(&["admin", "--admin-addr", &admin, "events", "--json"]);
    let doc: Value = serde_json::from_slice(&events.stdout).unwrap();
    let started = doc["events"].as_array().unwrap().iter().find(|e| e["action"] == "started").unwrap();
    assert_eq!(started["reason"], "release 1.4", "--reason after the plan is kept");
    assert!(started["event"]["numbers"].is_object(), "nested JSON is an object: {started}");

    // A canary of the NaN-emitting v1: the hard trigger rolls it back, and
    // both --wait and a watcher exit 3. The watcher, not on a terminal, prints
    // each changed frame with the progress bars and the verdict.
    let waiter = spawn(&[
        "admin",
        "--admin-addr",
        &admin,
        "start",
        "breast-cancer",
        "canary",
        "--candidate",
        "1",
        "--steps",
        "50,100",
        "--step-samples",
        "100000",
        "--wait",
    ]);
    // The watcher starts once the rollout exists (else it would see none and end).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(&["status", "breast-cancer", "--json", "--admin-addr", &admin]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if doc[0]["arms"].as_array().is_some_and(|arms| arms.iter().any(|a| a["version"] == 1)) {
            break;
        }
        assert!(Instant::now() < until, "the v1 rollout never showed: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let watcher = spawn(&["status", "breast-cancer", "--watch", "--interval", "0.2", "--admin-addr", &admin]);
    let out = traffic_until_exit(&gw, waiter, 300).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "rolled back is exit 3: {stdout}\n{stderr}");
    assert!(stderr.contains("was rolled back"), "{stderr}");
    assert!(stdout.contains("canary rolled_back"), "{stdout}");
    let watched = tokio::task::spawn_blocking(move || watcher.wait_with_output().unwrap()).await.unwrap();
    let (stdout, stderr) = (text(&watched.stdout), text(&watched.stderr));
    assert_eq!(watched.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stdout.contains("samples [") && stdout.contains("of 100000 (candidate)"), "{stdout}");
    assert!(stdout.contains("time    [") && stdout.contains("verdict: "), "{stdout}");
    assert!(stdout.contains("rolled_back"), "the last frame shows the end: {stdout}");
    assert!(!stdout.contains('\u{1b}'), "no terminal codes when not on a terminal");

    // Under --json the watch prints one status object per change.
    let out = run(&["status", "breast-cancer", "--watch", "--json", "--admin-addr", &admin]);
    assert_eq!(out.status.code(), Some(3));
    let last: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "rolled_back");
    let err: Value = serde_json::from_slice(&out.stderr).expect("the error is one JSON object");
    assert_eq!(err["code"], "ROLLED_BACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_holds_objects_and_errors_are_json_too() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::spawn(&repo, &[]);
    let admin = gw.admin_addr.to_string();
    let out = run(&["admin", "--admin-addr", &admin, "start", "breast-cancer", "canary", "--candidate", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["rollback", "breast-cancer", "--admin-addr", &admin, "--reason", "drill"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    for args in [
        vec!["status", "--json"],
        vec!["status", "breast-cancer", "--json"],
        vec!["admin", "events", "--json"],
        vec!["admin", "get-rollout", "breast-cancer", "--json"],
        vec!["analysis", "breast-cancer", "--json"],
    ] {
        let out = run(&[&args[..], &["--admin-addr", &admin]].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let mut all = Vec::new();
        keys(&doc, &mut all);
        assert!(!all.iter().any(|k| k.ends_with("_json")), "{args:?}: JSON in a string: {all:?}");
    }
    let out = run(&["status", "breast-cancer", "--json", "--admin-addr", &admin]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc[0]["plan"]["strategy"], "canary", "{doc}");
    assert!(doc[0]["plan"]["steps"].is_array(), "{doc}");
    let out = run(&["admin", "events", "--json", "--admin-addr", &admin]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rolled = doc["events"].as_array().unwrap().iter().find(|e| e["action"] == "rolled_back").unwrap();
    assert!(rolled["numbers"].is_object() || rolled["numbers"].is_null(), "{rolled}");
    assert_eq!(rolled["event"]["reason"], "drill", "{rolled}");

    // A refused call under --json: one object on stderr, nothing on stdout,
    // the same exit status as without --json.
    let plain = run(&["status", "no-such-model", "--admin-addr", &admin]);
    let json = run(&["status", "no-such-model", "--json", "--admin-addr", &admin]);
    assert_eq!(plain.status.code(), Some(1));
    assert_eq!(json.status.code(), plain.status.code());
    assert!(json.stdout.is_empty());
    let err: Value = serde_json::from_slice(&json.stderr).expect("one JSON object on stderr");
    assert_eq!(err["code"], "NOT_FOUND");
    assert!(err["message"].as_str().unwrap().contains("no-such-model"), "{err}");
    assert!(text(&plain.stderr).starts_with("error: NOT_FOUND"), "{}", text(&plain.stderr));

    // Nothing listening: said once, UNAVAILABLE under --json.
    let port = modelgate_tests::closed_port();
    let nobody = port.addr.to_string();
    let out = run(&["status", "--admin-addr", &nobody]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(said.matches("tcp connect error").count(), 1, "{said}");
    let out = run(&["predict", "--addr", &nobody, "--model", "m", "--input", "[[1]]", "--json"]);
    let err: Value = serde_json::from_slice(&out.stderr).expect("one JSON object on stderr");
    assert_eq!(err["code"], "UNAVAILABLE", "{err}");
    assert_eq!(err["message"].as_str().unwrap().matches("tcp connect error").count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_and_print_human_times() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::spawn(&repo, &[]);
    let admin = gw.admin_addr.to_string();
    let out = run(&["admin", "--admin-addr", &admin, "start", "breast-cancer", "canary", "--candidate", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = |since: &str| {
        let out = run(&["admin", "events", "--since", since, "--admin-addr", &admin]);
        assert!(out.status.success(), "--since {since}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let recent = events("10m");
    let line = recent.lines().find(|l| l.contains("started")).expect("the start event");
    // 2026-12-07T04:00:00.123Z breast-cancer  started ...
    let at = line.split_whitespace().next().unwrap();
    assert!(at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{line}");
    assert!(events(at).contains("started"), "an RFC 3339 --since at the event includes it");
    assert!(events("2999-01-01T00:00:00+01:00").trim().is_empty(), "nothing after a future time");
    assert!(events("0").contains("started"), "unix ms still works");
    let out = run(&["admin", "events", "--since", "last tuesday", "--admin-addr", &admin]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--since") && text(&out.stderr).contains("RFC 3339"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef modelgate"), ("fish", "complete -c modelgate")]
    {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("rollback") && script.contains("admin-addr"), "{shell}");
    }
    // bash itself reads the script without a complaint.
    let script = text(&run(&["completions", "bash"]).stdout);
    let out =
        Command::new("bash").args(["-c", &format!("{script}\ncomplete -p modelgate")]).output().unwrap();
    assert!(out.status.success() && text(&out.stdout).contains("modelgate"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_records_a_business_metric_for_a_served_request() {
    let repo = TestRepo::breast_cancer();
    let gw = ServeProcess::spawn(&repo, &[]);
    let (addr, admin) = (gw.addr.to_string(), gw.admin_addr.to_string());
    let out = run(&["admin", "--admin-addr", &admin, "start", "breast-cancer", "canary", "--candidate", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut c = gw.client().await;
    let mut req = request("breast-cancer", &rows(1));
    req.routing_key = "user-9".into();
    let served = c.predict(req).await.unwrap().into_inner();

    let out = run(&[
        "outcome",
        "breast-cancer",
        "--request-id",
        &served.request_id,
        "--metric",
        "conversion",
        "--value",
        "1",
        "--addr",
        &addr,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["joined"], true, "{doc}");
    assert_eq!(doc["version"], served.version, "{doc}");

    let out = run(&[
        "outcome",
        "breast-cancer",
        "--routing-key",
        "user-9",
        "--metric",
        "revenue",
        "--value",
        "-2.5",
        "--at",
        "5m",
        "--addr",
        &addr,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("revenue = -2.5 recorded for breast-cancer v{}", served.version))
    );

    // An unknown request is said, not an error; a missing identifier is a usage error.
    let out = run(&[
        "outcome",
        "breast-cancer",
        "--request-id",
        "nope",
        "--metric",
        "m",
        "--value",
        "1",
        "--addr",
        &addr,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("not joined"), "{}", text(&out.stdout));
    let out = run(&["outcome", "breast-cancer", "--metric", "m", "--value", "1", "--addr", &addr]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out =
        run(&["outcome", "no-such", "--request-id", "x", "--metric", "m", "--value", "1", "--addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("NOT_FOUND"), "{}", text(&out.stderr));
}
