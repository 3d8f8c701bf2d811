//! Crash safety of the file store: `kill -9` of a real gateway process in a
//! loop while admin calls write rollout state. After every kill the state
//! file parses, the gateway starts again on it, and every audit event whose
//! call was acknowledged is in the log.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

/// Starts `modelgate serve` on `repo` with its state in `state`; returns the
/// child and its admin address.
fn serve(repo: &TestRepo, state: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .args(["--no-watch", "--threads", "1", "--tick-ms", "20", "--models"])
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state)
        .env_remove("ORT_DYLIB_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("  admin on ") {
            admin = Some(a.trim().to_string());
        }
        if line.starts_with("try: ") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, admin.expect("the gateway started"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_event_and_leaves_a_whole_state() {
    let repo = TestRepo::breast_cancer();
    let state = repo.path().join(".state");
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut n = 0u64;
    let rounds = 25;
    for round in 0..rounds {
        let (mut child, admin_addr) = serve(&repo, &state);
        let conn = modelgate::cli::admin::AdminConn {
            admin_addr,
            token: None,
            json: false,
            tls: Default::default(),
        };
        let mut a = modelgate::cli::admin::connect(&conn).await.unwrap();
        // The state left by the last kill restored whole.
        let s = rollout_status(&mut a, "breast-cancer").await;
        if round == 0 {
            assert_eq!(s.state, "");
            a.start_rollout(canary_plan(1, 20, 1_000_000, false)).await.unwrap();
        } else {
            assert!(matches!(s.state.as_str(), "running" | "paused"), "round {round}: {s:?}");
        }
        // Pause and resume as fast as the store takes them, each with a
        // unique reason, and kill -9 somewhere in the middle of it.
        let kill_after = Duration::from_millis(40 + 37 * round);
        let started = std::time::Instant::now();
        let mut paused = s.state == "paused";
        while started.elapsed() < kill_after {
            n += 1;
            let reason = format!("crash-op-{n}");
            let req = pb::RolloutRequest {
                model: "breast-cancer".into(),
                reason: reason.clone(),
                expected_stage: None,
            };
            let call = if paused { a.resume(req).await } else { a.pause(req).await };
            match call {
                Ok(_) => {
                    acked.insert(reason);
                    paused = !paused;
                }
                Err(e) => panic!("round {round}: an admin call failed before the kill: {e:?}"),
            }
        }
        // Fire one more without waiting for it: the kill lands mid-write.
        let mut in_flight = a.clone();
        let req = pb::RolloutRequest {
            model: "breast-cancer".into(),
            reason: format!("crash-op-{}", n + 1),
            expected_stage: None,
        };
        n += 1;
        let racing = tokio::spawn(async move {
            let _ = if paused { in_flight.resume(req).await } else { in_flight.pause(req).await };
        });
        tokio::time::sleep(Duration::from_millis(round % 3)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = racing.await;

        // Whole snapshot, every acknowledged event.
        let bytes = std::fs::read(state.join("state.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("round {round}: state.json does not parse: {e}"));
        assert!(doc["rollouts"]["breast-cancer"].is_object(), "round {round}: {doc}");
        let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
        let logged: BTreeSet<String> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|r| !logged.contains(*r)).collect();
        assert!(lost.is_empty(), "round {round}: acknowledged events lost: {lost:?}");
    }
    assert!(acked.len() > rounds as usize, "the loop wrote: {} acknowledged changes", acked.len());
    eprintln!("{} acknowledged changes over {rounds} kills, none lost", acked.len());
}
