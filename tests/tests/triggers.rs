//! Hard triggers roll a bad candidate back by themselves, within a tick, and
//! say why with the numbers.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

async fn canary_rolls_back(
    candidate_file: &str,
    config: &str,
    overrides: Option<pb::TriggerOverrides>,
    trigger: &str,
) {
    let repo = TestRepo::new();
    // v1 = the faulty candidate, v2 = a healthy champion (the highest READY).
    repo.add("breast-cancer", 1, candidate_file).add("breast-cancer", 2, V2).config("breast-cancer", config);
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let mut c = client(&server).await;
    // Manual steps far out of reach: only a trigger moves this canary.
    let mut start_canary = canary_plan(1, 50, 1_000_000, false);
    start_canary.triggers = overrides;
    a.start_rollout(start_canary).await.unwrap();
    let g = golden(2);
    let until = Instant::now() + Duration::from_secs(30);
    let mut i = 0usize;
    let status = loop {
        // Golden rows: 11 of 16 have feature 0 >= 15 (NaN on the fault model).
        let mut req = request("breast-cancer", std::slice::from_ref(&g.rows[i % 16]));
        req.routing_key = format!("k{i}");
        c.predict(req).await.expect("requests keep succeeding during a rollback");
        i += 1;
        if i.is_multiple_of(20) {
            let s = rollout_status(&mut a, "breast-cancer").await;
            if s.state == "rolled_back" {
                break s;
            }
        }
        assert!(Instant::now() < until, "no automatic rollback after {i} requests");
    };
    assert!(status.waiting_for.contains("version 1"), "{}", status.waiting_for);
    // After the rollback tick, nothing reaches the candidate.
    let after = versions_for_keys(&mut c, "breast-cancer", (0..300).map(|k| format!("k{k}"))).await;
    assert!(after.iter().all(|(_, v, _)| *v == 2));
    let events = a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    let rb = events.iter().find(|e| e.action == "rolled_back").unwrap();
    assert_eq!(rb.who, "modelgate");
    let full: serde_json::Value = serde_json::from_str(&rb.event_json).unwrap();
    assert_eq!(full["trigger"], trigger);
    assert!(full["numbers"]["sprt_llr"].as_f64().unwrap() >= full["numbers"]["sprt_bound"].as_f64().unwrap());
    // Both statistics and their bounds are recorded.
    let n = |k: &str| full["numbers"][k].as_f64().unwrap();
    assert!(n("cusum") > 0.0 && n("cusum_requests") <= n("requests"), "{full}");
    assert!(n("cusum_bound") > n("sprt_bound"), "{full}");
    assert!(full["numbers"]["sprt_alpha"].as_f64().unwrap() < 0.001);
    assert_eq!(full["numbers"]["version"], 1.0);
    // The typed decision: the SPRT since the rollout started (a version bad
    // from the start crosses it first), its LLR, the bound crossed and the
    // requests each arm served since the rollout started.
    let d = &full["decision"];
    assert_eq!(d["test"], format!("sprt_{trigger}"), "{full}");
    assert_eq!(d["statistic"], full["numbers"]["sprt_llr"], "{full}");
    assert_eq!(d["threshold"], full["numbers"]["sprt_bound"], "{full}");
    assert!(d["statistic"].as_f64().unwrap() >= d["threshold"].as_f64().unwrap(), "{full}");
    assert!(d["n"]["1"].as_f64().unwrap() >= full["numbers"]["requests"].as_f64().unwrap(), "{full}");
    assert!(d["n"]["2"].as_u64().unwrap() > 0, "{full}");
    server.stop().await.unwrap();

    // The rollback survives a restart.
    let server = start(&repo, |_| {}).await;
    let mut a = admin(&server, None).await;
    let s = rollout_status(&mut a, "breast-cancer").await;
    assert_eq!(s.state, "rolled_back");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_canary_rolls_back_by_itself() {
    canary_rolls_back(NAN, "", None, "nan_inf_rate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_over_its_latency_sla_rolls_back_by_itself() {
    canary_rolls_back(SLOW, "sessions = 1\n[triggers]\np99_sla_ms = 2.0\n", None, "p99_latency").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_own_sla_overrides_the_models() {
    // model.toml's SLA (1 s) would never fire; the plan's 2 ms does.
    let plan = pb::TriggerOverrides { p99_sla_ms: Some(2.0), ..Default::default() };
    canary_rolls_back(SLOW, "sessions = 1\n[triggers]\np99_sla_ms = 1000.0\n", Some(plan), "p99_latency")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_override_is_invalid_argument() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |_| {}).await;
    let mut a = admin(&server, None).await;
    let mut req = canary_plan(1, 10, 100, false);
    req.triggers = Some(pb::TriggerOverrides { nan_inf_rate: Some(2.0), ..Default::default() });
    let e = a.start_rollout(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "triggers.nan_inf_rate must be a rate above 0 and at most 1, got 2");
    assert_eq!(rollout_status(&mut a, "breast-cancer").await.rollout_id, "", "nothing started");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prediction_shift_raises_an_alert_and_pauses_when_asked() {
    let repo = TestRepo::breast_cancer();
    repo.config("breast-cancer", "[triggers]\npause_on_alert = true\n");
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let start_canary = pb::StartRolloutRequest {
        model: "breast-cancer".into(),
        plan: Some(pb::start_rollout_request::Plan::Canary(pb::CanaryPlan {
            candidate: 1,
            steps: vec![
                pb::CanaryStep { percent: 20, min_duration_secs: 3600, min_samples: 1_000_000 },
                pb::CanaryStep { percent: 100, min_duration_secs: 3600, min_samples: 1_000_000 },
            ],
            auto_advance: true,
        })),
        reason: String::new(),
        triggers: None,
    };
    a.start_rollout(start_canary).await.unwrap();
    // The PSI arithmetic is fixture-tested against numpy; here the scores
    // the versions recorded are shaped directly, to test the alert path: the
    // champion scores low, the candidate high.
    let table = server.gateway.table();
    let m = table.get("breast-cancer").unwrap();
    m.window(2).unwrap().scores.record((0..500).map(|i| f64::from(i % 50) / 100.0));
    m.window(1).unwrap().scores.record((0..500).map(|i| 0.5 + f64::from(i % 50) / 100.0));
    let until = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = rollout_status(&mut a, "breast-cancer").await;
        if s.state == "paused" {
            break s;
        }
        assert!(Instant::now() < until, "no pause: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(s.stage, 1);
    let events = a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    let alert = events.iter().find(|e| e.action == "alert").expect("an ALERT event");
    assert!(alert.reason.contains("PSI"), "{}", alert.reason);
    let full: serde_json::Value = serde_json::from_str(&alert.event_json).unwrap();
    assert!(full["numbers"]["psi"].as_f64().unwrap() >= 0.25);
    assert_eq!(events.iter().filter(|e| e.action == "alert").count(), 1, "raised once");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_samples_neither_roll_back_nor_advance_and_say_why() {
    let repo = TestRepo::new();
    // A short window (2 × 0.1 s) shows the triggers' window aging out while
    // the analysis keeps its running totals.
    repo.add("breast-cancer", 1, NAN)
        .add("breast-cancer", 2, V2)
        .config("breast-cancer", "[triggers]\nwindow_interval_secs = 0.1\nwindow_intervals = 2\n");
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let mut c = client(&server).await;
    a.start_rollout(canary_plan(1, 50, 1070, true)).await.unwrap();
    // 30 requests, about half to the candidate, most of those NaN: far over
    // the 1% limit, but too few to judge.
    let g = golden(2);
    for i in 0..30 {
        let mut req = request("breast-cancer", std::slice::from_ref(&g.rows[i % 16]));
        req.routing_key = format!("few{i}");
        c.predict(req).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = rollout_status(&mut a, "breast-cancer").await;
    assert_eq!((s.state.as_str(), s.stage), ("running", 1), "{s:?}");
    assert!(s.waiting_for.contains(" of 1,070 samples"), "{}", s.waiting_for);
    let x = analysis(&mut a, "breast-cancer").await;
    assert_eq!(x.verdict, "waiting", "{x:?}");
    assert!(x.verdict_reason.contains("of 50 samples for the sequential tests"), "{}", x.verdict_reason);
    let candidate = x.arms.iter().find(|arm| arm.version == 1).unwrap();
    assert!(candidate.nan_inf > 0 && candidate.requests < 50, "{candidate:?}");
    assert_eq!(candidate.window_requests, 0, "the 0.2 s window has moved on: {candidate:?}");
    let nan = candidate.triggers.iter().find(|t| t.trigger == "nan_inf_rate").unwrap();
    assert_eq!(nan.state, "waiting");
    assert!(
        nan.text.starts_with("waiting: ") && nan.text.ends_with(" of 50 requests since the rollout started"),
        "{}",
        nan.text
    );
    assert_eq!(candidate.triggers.iter().find(|t| t.trigger == "p99_latency").unwrap().state, "off");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_candidate_is_held_and_alerted_by_the_sequential_test() {
    let repo = TestRepo::new();
    // No SLA: the hard latency trigger is off, so only the sequential
    // comparison with the champion can catch the slow version.
    repo.add("breast-cancer", 1, SLOW).add("breast-cancer", 2, V2);
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let mut c = client(&server).await;
    a.start_rollout(canary_plan(1, 50, 20, true)).await.unwrap();
    let x = traffic_until(&mut c, &mut a, "breast-cancer", 60, |x| x.verdict == "unhealthy").await;
    assert!(x.verdict_reason.contains("v1 mean latency"), "{}", x.verdict_reason);
    let slow = x.arms.iter().find(|arm| arm.version == 1).unwrap();
    let latency = slow.latency_vs_champion.as_ref().unwrap();
    assert_eq!(latency.verdict, "regression");
    assert!(latency.confidence_sequence.as_ref().unwrap().low > latency.margin, "{latency:?}");
    // Held, not rolled back (no hard trigger fired), and alerted once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = rollout_status(&mut a, "breast-cancer").await;
    assert_eq!((s.state.as_str(), s.stage), ("running", 1), "{s:?}");
    assert!(s.waiting_for.contains("safety analysis unhealthy"), "{}", s.waiting_for);
    let alerts: Vec<_> = s.alerts.iter().filter(|al| al.trigger == "latency_regression").collect();
    assert_eq!(alerts.len(), 1, "{:?}", s.alerts);
    assert_eq!(alerts[0].version, 1);
    // The reason is the whole finding, not cut at the "; margin" inside it.
    let reason = &alerts[0].reason;
    assert!(reason.contains("; margin") && reason.contains(" ms)"), "{reason}");
    assert!(reason.ends_with("regressed beyond the margin"), "{reason}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_metric_regression_raises_an_alert() {
    let repo = TestRepo::breast_cancer();
    repo.config("breast-cancer", "[analysis]\nkpi = \"revenue\"\nkpi_mde = 0.5\n");
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let mut c = client(&server).await;
    a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap();
    // The candidate's users spend about 1.3 less per request.
    for i in 0..300 {
        let mut req = request("breast-cancer", &rows(1));
        req.routing_key = format!("rev{i}");
        let resp = c.predict(req).await.unwrap().into_inner();
        let base = if resp.version == 1 { 2.0 } else { 3.3 };
        c.record_outcome(pb::RecordOutcomeRequest {
            model: "breast-cancer".into(),
            request_id: resp.request_id,
            metric: "revenue".into(),
            value: base + f64::from(i % 7) * 0.2,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = rollout_status(&mut a, "breast-cancer").await;
        if s.alerts.iter().any(|al| al.trigger == "kpi_regression") {
            break s;
        }
        assert!(Instant::now() < until, "no alert: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let alert = s.alerts.iter().find(|al| al.trigger == "kpi_regression").unwrap();
    assert_eq!(alert.version, 1);
    assert!(alert.reason.contains("'revenue'"), "{}", alert.reason);
    let x = analysis(&mut a, "breast-cancer").await;
    let row = x.metrics.iter().find(|m| m.version == 1).unwrap();
    assert_eq!(row.decision, "worse", "{row:?}");
    assert!((row.diff.unwrap() + 1.3).abs() < 0.2, "{row:?}");
    let control = x.metrics.iter().find(|m| m.version == 2).unwrap();
    assert_eq!(control.decision, "control");
    assert!(control.ci.as_ref().unwrap().low < 3.9 && control.ci.as_ref().unwrap().high > 3.9, "{control:?}");
    let events = a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    let raised: Vec<_> = events.iter().filter(|e| e.action == "alert").collect();
    assert_eq!(raised.len(), 1, "raised once");
    // The alert names the always-valid test, its p-value, the model's α and n per arm.
    let full: serde_json::Value = serde_json::from_str(&raised[0].event_json).unwrap();
    let d = &full["decision"];
    assert_eq!(d["test"], "msprt", "{full}");
    assert_eq!(d["statistic"], full["numbers"]["always_valid_p"], "{full}");
    assert!(d["statistic"].as_f64().unwrap() <= d["threshold"].as_f64().unwrap(), "{full}");
    assert!(d["n"]["1"].as_u64().unwrap() > 0 && d["n"]["2"].as_u64().unwrap() > 0, "{full}");
    server.stop().await.unwrap();
}

/// Row `i` of a stream of plausible, varied breast-cancer rows: blends of
/// two golden rows.
fn blended_row(g: &Golden, i: usize) -> Vec<f32> {
    let (a, b) = (&g.rows[i % 16], &g.rows[(i * 7 + 3) % 16]);
    let t = (i % 11) as f32 / 10.0;
    a.iter().zip(b).map(|(x, y)| x * t + y * (1.0 - t)).collect()
}

/// Sends `n` one-row requests with distinct routing keys.
async fn send_rows(
    c: &mut modelgate_proto::v1::predict_client::PredictClient<tonic::transport::Channel>,
    g: &Golden,
    n: usize,
    tag: &str,
) {
    for i in 0..n {
        let mut req = request("breast-cancer", &[blended_row(g, i)]);
        req.routing_key = format!("{tag}-{i}");
        c.predict(req).await.expect("predict succeeds");
    }
}

/// The feature-importance shift the gateway exports for `version`, once it has one.
async fn importance_shift(server: &modelgate::RunningServer, version: u64) -> f64 {
    let series =
        format!(r#"modelgate_feature_importance_shift{{model="breast-cancer",version="{version}"}}"#);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
        if let Some(v) =
            body.lines().find_map(|l| l.strip_prefix(&series).and_then(|v| v.trim().parse().ok()))
        {
            return v;
        }
        assert!(Instant::now() < until, "no {series} on /metrics");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_leaning_on_other_features_raises_an_importance_alert_and_its_twin_does_not() {
    // Champion v3 is the gradient-boosted v2's file; v2 is its twin; v1 is
    // the logistic regression, which weighs all 30 features, where the
    // trees lean on a few.
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, V1).add("breast-cancer", 2, V2).add("breast-cancer", 3, V2);
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let mut c = client(&server).await;
    let g = golden(1);
    let events = |a: &mut modelgate::cli::admin::Client| {
        let mut a = a.clone();
        async move { a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events }
    };

    // The twin: the same model relies on the same features.
    a.start_rollout(canary_plan(2, 50, 1_000_000, false)).await.unwrap();
    send_rows(&mut c, &g, 400, "twin").await;
    let twin = importance_shift(&server, 2).await;
    assert!(twin < 1e-9, "the same model, the same reliance: {twin}");
    let rr =
        pb::RolloutRequest { model: "breast-cancer".into(), reason: "next".into(), expected_stage: None };
    a.rollback(rr).await.unwrap();
    assert!(!events(&mut a).await.iter().any(|e| e.action == "alert"), "no alert for the twin");

    // The logistic regression scores the same rows on other evidence.
    a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap();
    send_rows(&mut c, &g, 400, "lr").await;
    let shift = importance_shift(&server, 1).await;
    eprintln!("feature-importance shift, logistic regression vs gradient boosting: {shift:.3}");
    let until = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let found =
            events(&mut a).await.into_iter().find(|e| e.action == "alert" && e.reason.contains("relies on"));
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < until, "no feature-importance alert (shift {shift})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(alert.reason.contains("relies on the inputs differently"), "{}", alert.reason);
    let full: serde_json::Value = serde_json::from_str(&alert.event_json).unwrap();
    assert_eq!(full["trigger"], "feature_importance", "{full}");
    assert!(full["numbers"]["importance_shift"].as_f64().unwrap() >= 0.2, "{full}");
    let status = rollout_status(&mut a, "breast-cancer").await;
    assert!(status.alerts.iter().any(|x| x.reason.contains("feature-importance shift")), "{status:?}");
    // GetAnalysis shows it per arm.
    let got = analysis(&mut a, "breast-cancer").await;
    let arm = got.arms.iter().find(|x| x.version == 1).unwrap();
    assert_eq!(arm.importance_shift, Some(shift), "{arm:?}");
    // The chart's ModelgateSoftTrigger rule tickets on this counter.
    let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        body.lines().any(|l| l.starts_with("modelgate_alerts_total{")
            && l.contains(r#"trigger="feature_importance""#)
            && l.ends_with(" 1")),
        "{body}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importance_levels_come_from_model_toml() {
    // The same 0.52 shift under a warn level of 0.6 raises nothing.
    let repo = TestRepo::breast_cancer();
    repo.config("breast-cancer", "[triggers]\nimportance_warn = 0.6\nimportance_alert = 0.9\n");
    let server = start(&repo, |c| c.tick = Duration::from_millis(50)).await;
    let mut a = admin(&server, None).await;
    let mut c = client(&server).await;
    a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap();
    send_rows(&mut c, &golden(1), 400, "quiet").await;
    let shift = importance_shift(&server, 1).await;
    assert!((0.2..0.6).contains(&shift), "measured {shift}");
    // Ticks go on; still no alert.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    assert!(!events.iter().any(|e| e.action == "alert" && e.reason.contains("relies on")), "{events:?}");
    server.stop().await.unwrap();
}
