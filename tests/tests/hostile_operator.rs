//! What an operator's files, flags and credentials can do to the gateway
//! (issue 14, items 12-15), run against the real thing:
//!
//! - model.toml's `[triggers]` and a rollout's trigger overrides are one
//!   validation: the same values refused with the same words;
//! - the admin token is compared exactly, and reflection on the admin port
//!   needs it like Admin does;
//! - a state file or etcd state in a format this build does not know stops
//!   start-up and is left alone; an audit log's last line without its
//!   newline keeps its bytes;
//! - absurd durations are usage errors naming the flag, never a panic.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use modelgate_proto::v1 as pb;
use modelgate_tests::process::{ServeProcess as Served, run_to_exit, serve_command};
use modelgate_tests::*;
use tonic::Code;

// ---- item 12: one validation for model.toml and the admin API ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_settings_in_model_toml_are_refused_as_the_admin_api_refuses_them() {
    let repo = TestRepo::breast_cancer();
    type Set = fn(&mut pb::TriggerOverrides);
    let cases: [(&str, &str, Set); 8] = [
        ("min-samples", "min_samples = 0", |t| t.min_samples = Some(0)),
        ("min-samples-huge", "min_samples = 2000000000", |t| t.min_samples = Some(2_000_000_000)),
        ("nan-inf-rate", "nan_inf_rate = 1.5", |t| t.nan_inf_rate = Some(1.5)),
        ("error-ratio", "error_ratio = 0.5", |t| t.error_ratio = Some(0.5)),
        ("error-rate-floor", "error_rate_floor = 0.0", |t| t.error_rate_floor = Some(0.0)),
        ("p99-sla", "p99_sla_ms = -3.0", |t| t.p99_sla_ms = Some(-3.0)),
        ("budget", "false_alarm_budget = 0.9", |t| t.false_alarm_budget = Some(0.9)),
        ("budget-hours", "budget_hours = 0.0", |t| t.budget_hours = Some(0.0)),
    ];
    for (model, line, _) in &cases {
        repo.add(model, 1, V1).config(model, &format!("[triggers]\n{line}\n"));
    }
    let server = start(&repo, |_| {}).await;
    let mut a = admin(&server, None).await;
    let models = a.list_models(pb::ListModelsRequest {}).await.unwrap().into_inner().models;
    for (model, line, set) in cases {
        // The admin API's refusal of the same value as a rollout override…
        let mut plan = canary_plan(1, 10, 100, false);
        let mut overrides = pb::TriggerOverrides::default();
        set(&mut overrides);
        plan.triggers = Some(overrides);
        let refused = a.start_rollout(plan).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{line}: {refused:?}");
        // …is the reason the model's version is FAILED with.
        let info = models.iter().find(|m| m.name == model).unwrap();
        let v = info.versions[0].metadata.as_ref().unwrap();
        assert_eq!(v.state, pb::VersionState::Failed as i32, "{line}: {v:?}");
        assert_eq!(v.reason, format!("model.toml: {}", refused.message()), "{line}");
    }
    let min_samples = models.iter().find(|m| m.name == "min-samples").unwrap();
    assert_eq!(
        min_samples.versions[0].metadata.as_ref().unwrap().reason,
        "model.toml: triggers.min_samples must be between 1 and 1000000000, got 0"
    );
    // The healthy model is untouched, and a valid override is taken.
    let mut plan = canary_plan(1, 10, 100, false);
    plan.triggers = Some(pb::TriggerOverrides {
        min_samples: Some(1),
        false_alarm_budget: Some(0.01),
        budget_hours: Some(1.0),
        ..Default::default()
    });
    a.start_rollout(plan).await.unwrap();
    server.stop().await.unwrap();
}

// ---- item 13: the admin token, exactly; reflection on the admin port ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_with_whitespace_around_it_is_refused_and_not_echoed() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| c.admin_tokens = vec![modelgate::Token::new("ops", "s3cret")]).await;
    for presented in [" s3cret", "s3cret ", "\ts3cret", "s3cret\t", "  s3cret  "] {
        let mut a = admin(&server, Some(presented)).await;
        let e = a.list_models(pb::ListModelsRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{presented:?}: {e:?}");
        assert!(e.message().contains("leading or trailing whitespace"), "{presented:?}: {}", e.message());
        assert!(!e.message().contains("s3cret"), "the token is echoed: {}", e.message());
    }
    for presented in ["s3cre", "s3cretx", "S3CRET"] {
        let e =
            admin(&server, Some(presented)).await.list_models(pb::ListModelsRequest {}).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "admin token not recognised"));
    }
    let mut ok = admin(&server, Some("s3cret")).await;
    ok.list_models(pb::ListModelsRequest {}).await.unwrap();
    server.stop().await.unwrap();
}

/// Lists the services over reflection on `addr`, with `token` when given.
async fn reflected_services(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let bearer: Option<tonic::metadata::MetadataValue<_>> =
        token.map(|t| format!("Bearer {t}").parse().unwrap());
    let mut client = ServerReflectionClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(b) = &bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    });
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(futures::stream::iter(vec![list])).await?.into_inner();
    match stream.message().await?.expect("a reply").message_response.expect("a response") {
        MessageResponse::ListServicesResponse(l) => Ok(l.service.into_iter().map(|s| s.name).collect()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_on_the_admin_port_needs_the_admin_token() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| c.admin_tokens = vec![modelgate::Token::new("ops", "s3cret")]).await;
    let e = reflected_services(server.admin_addr, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = reflected_services(server.admin_addr, Some("wrong")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let listed = reflected_services(server.admin_addr, Some("s3cret")).await.unwrap();
    assert!(listed.iter().any(|s| s == "modelgate.v1.Admin"), "{listed:?}");
    // The Predict port's reflection stays public, as Predict is.
    let public = reflected_services(server.addr, None).await.unwrap();
    assert!(public.iter().any(|s| s == "modelgate.v1.Predict"), "{public:?}");
    server.stop().await.unwrap();
}

// ---- item 14: state in an unknown format; an audit line without its newline ----

#[test]
fn a_state_file_in_an_unknown_format_stops_start_up_and_is_left_alone() {
    let repo = TestRepo::breast_cancer();
    let state = repo.path().join(".state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("state.json");
    let text = r#"{"format":7,"champions":{"breast-cancer":1},"rollouts":{},"counts":{},"shards":[1,2]}"#;
    std::fs::write(&file, text).unwrap();
    let out = run_to_exit(serve_command(repo.path(), &state), 300);
    assert!(!out.status.success(), "{out:?}");
    let want = format!("{} holds rollout state in format 7, which this build does not read", file.display());
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(out.stderr.contains("it knows format 0"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "the state file is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_state_in_an_unknown_format_stops_start_up_and_is_left_alone() {
    let etcd = fleet::Etcd::start();
    let mut client = etcd.client(None).await;
    let text = r#"{"format":9,"champions":{},"rollouts":{},"counts":{}}"#;
    client.put("/hostile/state", text, None).await.unwrap();
    let repo = TestRepo::breast_cancer();
    let dir = tempfile::tempdir().unwrap();
    let Err(log) = fleet::Replica::try_start(&repo, &etcd.url("hostile"), "a", dir.path(), &[]) else {
        panic!("a replica served a fleet state it cannot read")
    };
    assert!(log.contains("etcd key /hostile/state at "), "{log}");
    assert!(log.contains("holds rollout state in format 9, which this build does not read"), "{log}");
    assert!(log.contains("it knows format 0"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let kept = client.get("/hostile/state", None).await.unwrap();
    assert_eq!(kept.kvs()[0].value(), text.as_bytes(), "the fleet state is untouched");
}

/// The files moved aside from the audit log.
fn torn_files(state: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit.jsonl.torn-"))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

async fn actions(served: &Served) -> Vec<String> {
    let mut a = served.admin(None).await;
    let events = a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    events.into_iter().map(|e| e.action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_line_without_its_newline_is_kept_or_moved_aside_never_emptied() {
    let repo = TestRepo::breast_cancer();
    let state = repo.path().join(".state");
    let logs = tempfile::tempdir().unwrap();
    let audit = state.join("audit.jsonl");
    // One real event, then kill -9.
    {
        let served = Served::start(serve_command(repo.path(), &state), &logs.path().join("1.log")).unwrap();
        served.admin(None).await.start_rollout(canary_plan(1, 20, 1_000_000, false)).await.unwrap();
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let event = text.trim_end_matches('\n').to_string();

    // The only line, whole but without its newline: kept, newline added.
    std::fs::write(&audit, &event).unwrap();
    {
        let served = Served::start(serve_command(repo.path(), &state), &logs.path().join("2.log")).unwrap();
        assert_eq!(std::fs::read_to_string(&audit).unwrap(), format!("{event}\n"));
        assert_eq!(actions(&served).await, ["started"]);
        assert!(served.log().contains("it is whole, so it was kept"), "{}", served.log());
        assert!(torn_files(&state).is_empty());
    }

    // A torn write after it: moved aside with a WARN naming where, the
    // whole line kept.
    let torn = &event[..event.len() / 2];
    std::fs::write(&audit, format!("{event}\n{torn}")).unwrap();
    {
        let served = Served::start(serve_command(repo.path(), &state), &logs.path().join("3.log")).unwrap();
        assert_eq!(std::fs::read_to_string(&audit).unwrap(), format!("{event}\n"));
        let aside = torn_files(&state);
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), torn);
        let log = served.log();
        assert!(log.contains("WARN") && log.contains(&aside[0].display().to_string()), "{log}");
        assert_eq!(actions(&served).await, ["started"]);
        // New events go on the whole log.
        served
            .admin(None)
            .await
            .pause(pb::RolloutRequest {
                model: "breast-cancer".into(),
                reason: "after the repair".into(),
                expected_stage: None,
            })
            .await
            .unwrap();
        assert_eq!(actions(&served).await, ["started", "paused"]);
    }
}

// ---- item 15: duration flags ----

#[test]
fn absurd_durations_are_usage_errors_naming_the_flag_never_panics() {
    let repo = TestRepo::breast_cancer();
    let state = repo.path().join(".state");
    let check = |cmd: std::process::Command, flag: &str, range: &str, what: &str| {
        let out = run_to_exit(cmd, 60);
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        assert!(out.stderr.contains(flag) && out.stderr.contains(range), "{what}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
    };
    for (flag, value, range) in [
        ("--drain-seconds", "1e300", "from 0 to 86400"),
        ("--drain-seconds", "-1", "from 0 to 86400"),
        ("--drain-seconds", "NaN", "from 0 to 86400"),
        ("--drain-seconds", "inf", "from 0 to 86400"),
        ("--rescan-seconds", "1e300", "from 0.05 to 3600"),
        ("--rescan-seconds", "-0.5", "from 0.05 to 3600"),
        ("--settle-ms", "18446744073709551615", "from 0 to 600000"),
        ("--tick-ms", "0", "from 10 to 60000"),
        ("--tick-ms", "-5", "from 10 to 60000"),
    ] {
        let mut cmd = serve_command(repo.path(), &state);
        cmd.args([flag, value]);
        check(cmd, flag, range, &format!("{flag} {value}"));
    }
    // The environment fallbacks go through the same check.
    let mut cmd = serve_command(repo.path(), &state);
    cmd.env("MODELGATE_DRAIN_SECONDS", "1e300");
    check(cmd, "--drain-seconds", "from 0 to 86400", "MODELGATE_DRAIN_SECONDS=1e300");
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["predict", "--timeout-seconds", "1e300", "--input", "{}"]);
    check(cmd, "--timeout-seconds", "from 0.001 to 86400", "predict --timeout-seconds 1e300");
}
