//! Fleet mode: three `modelgate serve` processes sharing a real etcd act as
//! one gateway. A change through any replica reaches all of them; they
//! assign every key alike; a hard trigger seen by one rolls back all; a
//! replica killed with -9 comes back in the same state; two replicas racing
//! to advance cannot both win; and with etcd gone they keep serving, refuse
//! changes, still roll back, and resync when it returns.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use modelgate_proto::v1 as pb;
use modelgate_tests::fleet::{Etcd, Replica, eventually};
use modelgate_tests::*;

/// The ceiling on waiting for a state the fleet reaches by itself. Three
/// debug-build replicas and etcd share the machine's cores with whatever
/// else runs (`make test` runs test binaries in parallel), so a step that
/// takes 100 ms when quiet can take many seconds; a passing run never waits
/// this long, a failing one says what it waited for.
const PATIENCE: u64 = 120;

struct Fleet {
    etcd: Etcd,
    replicas: Vec<Replica>,
    _dirs: tempfile::TempDir,
}

/// etcd and three replicas (a, b, c) serving `repo`, each connected to etcd
/// and one of them leading.
async fn fleet(repo: &TestRepo) -> Fleet {
    let etcd = Etcd::start();
    let dirs = tempfile::tempdir().unwrap();
    let url = etcd.url("fleet-test");
    let replicas =
        ["a", "b", "c"].iter().map(|id| Replica::start(repo, &url, id, &dirs.path().join(id))).collect();
    let f = Fleet { etcd, replicas, _dirs: dirs };
    f.joined().await;
    f
}

impl Fleet {
    /// Waits until every replica is connected to etcd and exactly one leads.
    /// A replica prints its ready line after at most 2 s of trying to reach
    /// etcd (past that it serves fail-static and refuses changes), and
    /// leadership takes a campaign round or two: on a busy machine neither
    /// is done when the ready line appears.
    async fn joined(&self) {
        for r in &self.replicas {
            eventually(PATIENCE, &format!("replica {} to connect to etcd", r.id), || async {
                (r.metric("modelgate_fleet_store_connected").await == Some(1.0)).then_some(())
            })
            .await;
        }
        eventually(PATIENCE, "exactly one replica to lead", || async {
            let mut leaders = 0.0;
            for r in &self.replicas {
                leaders += r.metric("modelgate_fleet_leader").await.unwrap_or(0.0);
            }
            (leaders == 1.0).then_some(())
        })
        .await;
    }
}

/// A repository whose v1 is `candidate` and v2 the healthy champion.
fn repo_with_candidate(candidate: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, candidate).add("breast-cancer", 2, V2);
    repo
}

fn rr(expected_stage: Option<u32>) -> pb::RolloutRequest {
    pb::RolloutRequest { model: "breast-cancer".into(), reason: "fleet test".into(), expected_stage }
}

/// Waits until replica `r` reports the rollout `id` in `state` at `stage`.
async fn sees(r: &Replica, id: &str, state: &str, stage: u32) -> std::time::Duration {
    let what = format!("rollout {id} {state} at stage {stage}");
    shows(r, &what, |s| s.rollout_id == id && s.state == state && s.stage == stage).await.1
}

/// Waits until replica `r`'s rollout status satisfies `done`; past
/// [`PATIENCE`] fails with what it reported last and the end of its log.
async fn shows(
    r: &Replica,
    what: &str,
    done: impl Fn(&pb::RolloutStatus) -> bool,
) -> (pb::RolloutStatus, std::time::Duration) {
    let mut a = r.admin().await;
    let start = std::time::Instant::now();
    loop {
        let s = rollout_status(&mut a, "breast-cancer").await;
        if done(&s) {
            return (s, start.elapsed());
        }
        if start.elapsed() > std::time::Duration::from_secs(PATIENCE) {
            let log = r.log();
            let mut tail: Vec<&str> = log.lines().rev().take(60).collect();
            tail.reverse();
            panic!(
                "gave up after {PATIENCE} s waiting for replica {} to show {what}; it shows {} {} at stage {}; its log ends:\n{}",
                r.id,
                s.rollout_id,
                s.state,
                s.stage,
                tail.join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The version each key is served by on `r`, with a row the NaN fault model
/// answers cleanly (feature 0 under 15), so looking moves no trigger.
async fn assignments(r: &Replica, keys: std::ops::Range<u64>) -> Vec<(String, i64)> {
    let mut c = r.client().await;
    let g = golden(1);
    let row = g.rows.iter().find(|row| row[0] < 15.0).unwrap().clone();
    let mut out = Vec::new();
    for k in keys {
        let mut req = request("breast-cancer", std::slice::from_ref(&row));
        req.routing_key = format!("user-{k}");
        let resp = c.predict(req).await.expect("predict succeeds").into_inner();
        out.push((format!("user-{k}"), resp.version));
    }
    out
}

/// A port chosen for etcd and taken before etcd binds it (CI at stop 27):
/// etcd exits at once, and the fixture starts it again on new ports rather
/// than waiting out its ceiling.
#[tokio::test]
async fn an_etcd_whose_port_was_taken_starts_again_on_new_ports() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let etcd = Etcd::start_on_a_taken_port(taken);
    let log = etcd.log();
    assert_ne!(etcd.client_port(), taken);
    assert!(log.contains("address already in use") && log.contains("--- etcd exited"), "{log}");
    let mut client = etcd.client(None).await;
    client.put("k", "v", None).await.unwrap();
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_replica_reaches_all_and_they_assign_alike() {
    let repo = repo_with_candidate(V1);
    let f = fleet(&repo).await;
    let (a, b, c) = (&f.replicas[0], &f.replicas[1], &f.replicas[2]);
    let mut admin_a = a.admin().await;
    let started = admin_a.start_rollout(canary_plan(1, 30, 1_000_000, false)).await.unwrap().into_inner();
    assert_eq!((started.state.as_str(), started.stage), ("running", 1));
    for r in [b, c] {
        let took = sees(r, &started.rollout_id, "running", 1).await;
        eprintln!("start through a seen by {} after {took:?}", r.id);
    }
    // Sticky assignment is the same function of the key on every replica.
    let on_a = assignments(a, 0..300).await;
    assert!(on_a.iter().any(|(_, v)| *v == 1) && on_a.iter().any(|(_, v)| *v == 2), "30% canary splits keys");
    assert_eq!(assignments(b, 0..300).await, on_a);
    assert_eq!(assignments(c, 0..300).await, on_a);

    // A stage change through b reaches a and c: into the 100% step, which
    // is the promotion.
    let mut admin_b = b.admin().await;
    let advanced = admin_b.advance(rr(Some(1))).await.unwrap().into_inner();
    assert_eq!((advanced.state.as_str(), advanced.stage), ("promoted", 2));
    for r in [a, c] {
        let took = sees(r, &started.rollout_id, "promoted", 2).await;
        eprintln!("advance through b seen by {} after {took:?}", r.id);
    }
    assert!(assignments(c, 0..50).await.iter().all(|(_, v)| *v == 1), "v1 is everyone's champion now");

    // The audit log is the fleet's: read through c, written through a and b.
    let mut admin_c = c.admin().await;
    let events = admin_c.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["started", "promoted"], "{events:#?}");

    // Exactly one replica leads.
    let mut leaders = 0.0;
    for r in &f.replicas {
        assert_eq!(r.metric("modelgate_fleet_store_connected").await, Some(1.0));
        leaders += r.metric("modelgate_fleet_leader").await.unwrap();
    }
    assert_eq!(leaders, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reports_the_whole_fleets_numbers() {
    let repo = repo_with_candidate(V1);
    let f = fleet(&repo).await;
    let mut admin_a = f.replicas[0].admin().await;
    let started = admin_a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap().into_inner();
    for r in &f.replicas {
        sees(r, &started.rollout_id, "running", 1).await;
    }
    // 40 distinct users on each replica: each serves a third of the traffic.
    for (i, r) in f.replicas.iter().enumerate() {
        let i = i as u64;
        assignments(r, i * 40..(i + 1) * 40).await;
    }
    for r in &f.replicas {
        let admin = r.admin().await;
        let (got, _) = eventually(PATIENCE, &format!("replica {} to count all 120 requests", r.id), || {
            let mut admin = admin.clone();
            async move {
                let got = analysis(&mut admin, "breast-cancer").await;
                let total: u64 = got.arms.iter().map(|a| a.requests).sum();
                let stage: u64 = got.arms.iter().map(|a| a.stage_samples).sum();
                let window: u64 = got.arms.iter().map(|a| a.window_requests).sum();
                (total == 120 && stage == 120 && window == 120).then_some(got)
            }
        })
        .await;
        // SRM and latency come from the merged numbers too.
        assert!(got.srm_p_value.is_some(), "{got:#?}");
        assert!(got.arms.iter().all(|a| a.requests > 0 && a.p99_ms > 0.0), "{got:#?}");
        let status = rollout_status(&mut r.admin().await, "breast-cancer").await;
        let counted: u64 = status.arms.iter().map(|a| a.requests).sum();
        assert_eq!(counted, 120, "GetRollout on {} counts the fleet: {status:#?}", r.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_to_advance_the_same_stage_one_wins() {
    let repo = repo_with_candidate(V1);
    let f = fleet(&repo).await;
    let (a, b, c) = (&f.replicas[0], &f.replicas[1], &f.replicas[2]);
    let mut admin_a = a.admin().await;
    let mut plan = canary_plan(1, 10, 1_000_000, false);
    if let Some(pb::start_rollout_request::Plan::Canary(canary)) = &mut plan.plan {
        for (i, percent) in [30, 50].into_iter().enumerate() {
            canary
                .steps
                .insert(1 + i, pb::CanaryStep { percent, min_duration_secs: 0, min_samples: 1_000_000 });
        }
    }
    let started = admin_a.start_rollout(plan).await.unwrap().into_inner();
    sees(b, &started.rollout_id, "running", 1).await;
    let mut admin_b = b.admin().await;
    for round in 1..3u32 {
        // Both replicas were asked to advance stage `round` at the same moment.
        let (ra, rb) = tokio::join!(admin_a.advance(rr(Some(round))), admin_b.advance(rr(Some(round))));
        let results = [ra.map(|r| r.into_inner().stage), rb.map(|r| r.into_inner().stage)];
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won, [&(round + 1)], "exactly one advance of stage {round} wins: {results:?}");
        let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(lost.code(), tonic::Code::Aborted, "{lost:?}");
        assert!(lost.message().contains("nothing was changed"), "{}", lost.message());
        for r in [a, b, c] {
            sees(r, &started.rollout_id, "running", round + 1).await;
        }
    }
    let events = admin_a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    assert_eq!(events.iter().filter(|e| e.action == "advanced").count(), 2, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_steps_are_taken_once_for_the_whole_fleet() {
    let repo = repo_with_candidate(V1);
    // The steps wait for the safety analysis to show the candidate no worse
    // than the champion, mean latency included. On a loaded machine latency
    // is scheduling noise: it can stay "not yet shown" for long, or be
    // "shown worse" and hold the step with an ALERT. This test is about who
    // takes the steps, not latency, so any latency difference under a
    // minute counts as none.
    repo.config("breast-cancer", "[analysis]\nlatency_margin_min_ms = 60000\n");
    let f = fleet(&repo).await;
    let a = &f.replicas[0];
    let mut admin_a = a.admin().await;
    // Each step needs 60 candidate samples; traffic is spread over the three
    // replicas, so the leader must count the fleet's, not its own.
    let mut plan = canary_plan(1, 50, 60, true);
    if let Some(pb::start_rollout_request::Plan::Canary(canary)) = &mut plan.plan {
        canary.steps.insert(1, pb::CanaryStep { percent: 75, min_duration_secs: 0, min_samples: 60 });
    }
    let started = admin_a.start_rollout(plan).await.unwrap().into_inner();
    let mut clients = Vec::new();
    for r in &f.replicas {
        clients.push(r.client().await);
    }
    let row = rows(1);
    let mut i = 0u64;
    let (_, took) = eventually(PATIENCE, "the canary to be promoted by the leader", || {
        let mut clients = clients.clone();
        let mut admin = admin_a.clone();
        let row = row.clone();
        let base = i;
        i += 30;
        async move {
            for k in base..base + 30 {
                let c = &mut clients[(k % 3) as usize];
                let mut req = request("breast-cancer", &row);
                req.routing_key = format!("u{k}");
                c.predict(req).await.unwrap();
            }
            let s = rollout_status(&mut admin, "breast-cancer").await;
            (s.state == "promoted").then_some(())
        }
    })
    .await;
    let events = admin_a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    let all: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    eprintln!("promoted after {took:?}; audit actions {all:?}");
    // Soft-trigger ALERTs (prediction shift, feature importance) depend on
    // how many requests arrived before the leader acted, which depends on
    // the machine's load; they change nothing and are not steps.
    let mine: Vec<&str> = events
        .iter()
        .filter(|e| e.rollout_id == started.rollout_id && e.action != "alert")
        .map(|e| e.action.as_str())
        .collect();
    // 50% → 75%, then into the 100% step, which is the promotion.
    assert_eq!(mine, ["started", "advanced", "promoted"], "{events:#?}");
}

/// Sends golden rows (most give NaN on the fault model) to `r` until its
/// rollout is rolled back.
async fn nan_traffic_until_rolled_back(r: &Replica) {
    let mut c = r.client().await;
    let mut admin = r.admin().await;
    let g = golden(2);
    let mut i = 0usize;
    eventually(PATIENCE, &format!("replica {} to roll the NaN canary back", r.id), || {
        let mut c = c.clone();
        let mut admin = admin.clone();
        let base = i;
        i += 20;
        let g = g.rows.clone();
        async move {
            for k in base..base + 20 {
                let mut req = request("breast-cancer", std::slice::from_ref(&g[k % 16]));
                req.routing_key = format!("k{k}");
                c.predict(req).await.expect("requests keep succeeding");
            }
            (rollout_status(&mut admin, "breast-cancer").await.state == "rolled_back").then_some(())
        }
    })
    .await;
    let _ = (&mut c, &mut admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_canary_seen_by_one_replica_is_rolled_back_on_all() {
    let repo = repo_with_candidate(NAN);
    let f = fleet(&repo).await;
    let (a, b, c) = (&f.replicas[0], &f.replicas[1], &f.replicas[2]);
    let mut admin_a = a.admin().await;
    let started = admin_a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap().into_inner();
    sees(b, &started.rollout_id, "running", 1).await;
    // Only b gets traffic, so only b's windows show the NaNs.
    nan_traffic_until_rolled_back(b).await;
    for r in [a, c] {
        let took = sees(r, &started.rollout_id, "rolled_back", 1).await;
        eprintln!("b's rollback seen by {} after {took:?}", r.id);
        assert!(assignments(r, 0..100).await.iter().all(|(_, v)| *v == 2), "{} routes to the champion", r.id);
    }
    let events = admin_a.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    let rb: Vec<_> = events.iter().filter(|e| e.action == "rolled_back").collect();
    assert_eq!(rb.len(), 1, "one rollback, written once: {events:#?}");
    let full: serde_json::Value = serde_json::from_str(&rb[0].event_json).unwrap();
    assert_eq!(full["trigger"], "nan_inf_rate");
    assert!(full["reason"].as_str().unwrap().contains("seen by replica b"), "{full}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_rollout_comes_back_in_the_same_state() {
    let repo = repo_with_candidate(V1);
    let mut f = fleet(&repo).await;
    let mut admin_a = f.replicas[0].admin().await;
    let mut plan = canary_plan(1, 10, 1_000_000, false);
    if let Some(pb::start_rollout_request::Plan::Canary(canary)) = &mut plan.plan {
        canary.steps.insert(1, pb::CanaryStep { percent: 40, min_duration_secs: 0, min_samples: 1_000_000 });
    }
    let started = admin_a.start_rollout(plan).await.unwrap().into_inner();
    admin_a.advance(rr(Some(1))).await.unwrap();
    sees(&f.replicas[1], &started.rollout_id, "running", 2).await;
    let before = assignments(&f.replicas[0], 0..200).await;
    // kill -9 b, move the fleet on without it, and start it again.
    f.replicas[1].kill9();
    admin_a.pause(rr(Some(2))).await.unwrap();
    f.replicas[1].restart();
    let b = &f.replicas[1];
    sees(b, &started.rollout_id, "paused", 2).await;
    assert_eq!(assignments(b, 0..200).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_the_fleet_serves_refuses_changes_rolls_back_and_resyncs() {
    let repo = repo_with_candidate(NAN);
    let mut f = fleet(&repo).await;
    let mut admin_a = f.replicas[0].admin().await;
    let started = admin_a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap().into_inner();
    for r in &f.replicas {
        sees(r, &started.rollout_id, "running", 1).await;
    }
    let before = assignments(&f.replicas[2], 0..200).await;

    f.etcd.kill();
    for r in &f.replicas {
        eventually(PATIENCE, &format!("replica {} to notice etcd is gone", r.id), || async {
            (r.metric("modelgate_fleet_store_connected").await == Some(0.0)).then_some(())
        })
        .await;
    }
    // Serving goes on with the last routing; changes are refused, clearly.
    assert_eq!(assignments(&f.replicas[2], 0..200).await, before);
    let refused = admin_a.advance(rr(None)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("etcd is unreachable"), "{}", refused.message());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", f.replicas[0].addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    // The health service follows the store's connection on its own poll
    // (every 200 ms), after the metric already shows it.
    eventually(PATIENCE, "modelgate.fleet health to turn NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest { service: "modelgate.fleet".into() })
                .await
                .unwrap()
                .into_inner()
                .status;
            (status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
                .then_some(())
        }
    })
    .await;
    let overall = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // A hard trigger still rolls back, locally, at once.
    nan_traffic_until_rolled_back(&f.replicas[1]).await;
    // The rollback is published to routing (and GetRollout) a moment before
    // it is counted as pending.
    eventually(PATIENCE, "b to count one rollback to write back", || async {
        (f.replicas[1].metric("modelgate_fleet_pending_rollbacks").await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(rollout_status(&mut admin_a, "breast-cancer").await.state, "running", "a cannot know yet");

    // etcd returns: b writes its rollback back and everyone follows.
    f.etcd.restart();
    for r in &f.replicas {
        sees(r, &started.rollout_id, "rolled_back", 1).await;
    }
    // a and c see the written-back rollback through etcd's watch, possibly
    // before b has counted its commit done.
    eventually(PATIENCE, "b to have nothing left to write back", || async {
        (f.replicas[1].metric("modelgate_fleet_pending_rollbacks").await == Some(0.0)).then_some(())
    })
    .await;
    assert!(assignments(&f.replicas[0], 0..100).await.iter().all(|(_, v)| *v == 2));
    // Changes are accepted again.
    let mut admin_c = f.replicas[2].admin().await;
    let events = admin_c.list_events(pb::ListEventsRequest::default()).await.unwrap().into_inner().events;
    assert_eq!(events.iter().filter(|e| e.action == "rolled_back").count(), 1, "{events:#?}");
    let again = admin_c.start_rollout(canary_plan(1, 5, 1_000_000, false)).await.unwrap().into_inner();
    // a follows it. v1's sliding window still holds the NaNs that rolled the
    // first canary back, so the NaN trigger may roll this one back at the
    // next tick: on a busy machine before a is looked at. Either is the
    // fleet following c's change.
    let what = format!("rollout {} running or rolled back", again.rollout_id);
    shows(&f.replicas[0], &what, |s| {
        s.rollout_id == again.rollout_id && matches!(s.state.as_str(), "running" | "rolled_back")
    })
    .await;
}

/// (requests since the rollout started, this stage's samples, requests in
/// the sliding window) summed over the arms, as `r` reports the fleet's.
async fn fleet_numbers(r: &Replica) -> (u64, u64, u64) {
    let got = analysis(&mut r.admin().await, "breast-cancer").await;
    (
        got.arms.iter().map(|a| a.requests).sum(),
        got.arms.iter().map(|a| a.stage_samples).sum(),
        got.arms.iter().map(|a| a.window_requests).sum(),
    )
}

async fn reports_to(r: &Replica, want: (u64, u64, u64), what: &str) {
    let what = format!("replica {} to report {want:?} {what}", r.id);
    eventually(PATIENCE, &what, || async { (fleet_numbers(r).await == want).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_adds_to_what_its_last_process_counted() {
    let repo = repo_with_candidate(V1);
    let mut f = fleet(&repo).await;
    let mut admin_a = f.replicas[0].admin().await;
    let started = admin_a.start_rollout(canary_plan(1, 50, 1_000_000, false)).await.unwrap().into_inner();
    for r in &f.replicas {
        sees(r, &started.rollout_id, "running", 1).await;
    }
    assignments(&f.replicas[1], 0..60).await;
    reports_to(&f.replicas[0], (60, 60, 60), "after b served 60").await;

    // kill -9 b. Once its lease is gone (5 s) its window no longer counts,
    // as it no longer describes traffic; what it counted this stage and its
    // totals still do.
    f.replicas[1].kill9();
    reports_to(&f.replicas[0], (60, 60, 0), "once b's process is dead").await;

    // A new process of b counts on top of the old one's, and sees them too.
    f.replicas[1].restart();
    sees(&f.replicas[1], &started.rollout_id, "running", 1).await;
    assignments(&f.replicas[1], 60..100).await;
    reports_to(&f.replicas[0], (100, 100, 40), "after b's new process served 40").await;
    reports_to(&f.replicas[1], (100, 100, 40), "on b itself").await;

    // When the rollout is over nothing needs the dead process's report: the
    // leader deletes it and the three live ones remain.
    admin_a.advance(rr(Some(1))).await.unwrap();
    let mut etcd = f.etcd.client(None).await;
    eventually(PATIENCE, "the dead process's report to be deleted", || {
        let mut etcd = etcd.clone();
        async move {
            let keys = etcd
                .get(
                    "/fleet-test/reports/",
                    Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
                .ok()?;
            (keys.kvs().len() == 3).then_some(())
        }
    })
    .await;
    let _ = &mut etcd;
}
