//! The live model directory: versions dropped in while serving are loaded,
//! validated and warmed without taking traffic by themselves; broken ones are
//! FAILED; a serving version's folder cannot be pulled from under it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

async fn metadata(
    c: &mut pb::predict_client::PredictClient<tonic::transport::Channel>,
) -> pb::ModelMetadataResponse {
    c.model_metadata(pb::ModelMetadataRequest { model: "breast-cancer".into() }).await.unwrap().into_inner()
}

/// Polls until `done` holds (bounded: 20 s).
async fn eventually(
    c: &mut pb::predict_client::PredictClient<tonic::transport::Channel>,
    what: &str,
    done: impl Fn(&pb::ModelMetadataResponse) -> bool,
) -> pb::ModelMetadataResponse {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metadata(c).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_of(m: &pb::ModelMetadataResponse, v: i64) -> Option<i32> {
    m.versions.iter().find(|x| x.version == v).map(|x| x.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_renamed_in_becomes_ready_without_taking_traffic() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.rescan = Duration::from_millis(100);
        c.settle = Duration::from_millis(200);
    })
    .await;
    let mut c = client(&server).await;

    // Write elsewhere (a hidden folder is never scanned), then rename in.
    let staging = repo.path().join(".staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(model_file(V1), staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.path().join("breast-cancer/3")).unwrap();

    let m = eventually(&mut c, "v3 READY", |m| state_of(m, 3) == Some(pb::VersionState::Ready as i32)).await;
    assert_eq!(m.champion, 2, "a new version does not become champion by itself");
    let resp = c.predict(request("breast-cancer", &rows(1))).await.unwrap().into_inner();
    assert_eq!(resp.version, 2);
    let mut pinned = request("breast-cancer", &rows(1));
    pinned.version = Some(3);
    let resp = c.predict(pinned).await.unwrap().into_inner();
    assert_eq!(resp.version, 3);

    // A corrupt version is FAILED with ORT's reason; serving goes on.
    repo.add("breast-cancer", 4, CORRUPT);
    let m =
        eventually(&mut c, "v4 FAILED", |m| state_of(m, 4) == Some(pb::VersionState::Failed as i32)).await;
    let v4 = m.versions.iter().find(|v| v.version == 4).unwrap();
    assert!(v4.reason.contains("ONNX Runtime rejected the model"), "{}", v4.reason);
    c.predict(request("breast-cancer", &rows(2))).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_copy_is_waited_out_not_loaded_half_written() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.rescan = Duration::from_millis(50);
        c.settle = Duration::from_millis(1500);
    })
    .await;
    let mut c = client(&server).await;
    let bytes = std::fs::read(model_file(V2)).unwrap();
    let dir = repo.path().join("breast-cancer/5");
    std::fs::create_dir_all(&dir).unwrap();
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    std::fs::write(dir.join("model.onnx"), head).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("model.onnx")).unwrap();
        f.write_all(tail).unwrap();
    }
    let m = eventually(&mut c, "v5 loaded", |m| state_of(m, 5).is_some()).await;
    assert_eq!(state_of(&m, 5), Some(pb::VersionState::Ready as i32), "never loaded half-written: {m:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_serving_version_is_refused_and_an_idle_one_is_unloaded() {
    let repo = TestRepo::breast_cancer();
    let server = start(&repo, |c| {
        c.rescan = Duration::from_millis(100);
        c.settle = Duration::from_millis(100);
    })
    .await;
    let mut c = client(&server).await;
    std::fs::remove_dir_all(repo.path().join("breast-cancer/1")).unwrap();
    std::fs::remove_dir_all(repo.path().join("breast-cancer/2")).unwrap();
    let m = eventually(&mut c, "v1 unloaded", |m| state_of(m, 1).is_none()).await;
    assert_eq!(state_of(&m, 2), Some(pb::VersionState::Ready as i32), "the champion stays loaded");
    // Give the watcher more passes: the champion is still there and serving.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = c.predict(request("breast-cancer", &rows(1))).await.unwrap().into_inner();
    assert_eq!(resp.version, 2);
    server.stop().await.unwrap();
}

/// Issue 15: a blue/green rollout keeps green loaded at 0% weight until the
/// switch (`Rollout::versions_in_use`), so pulling green's folder before the
/// switch must not unload it; an idle version removed in the same watcher
/// pass is unloaded, which shows the pass ran. (v3 is the champion, being the
/// highest; v2 is idle.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_at_zero_weight_is_not_unloaded_before_the_switch() {
    let repo = TestRepo::breast_cancer();
    repo.add("breast-cancer", 3, V1);
    let server = start(&repo, |c| {
        c.rescan = Duration::from_millis(100);
        c.settle = Duration::from_millis(100);
    })
    .await;
    let mut c = client(&server).await;
    let mut a = admin(&server, None).await;
    a.start_rollout(blue_green(1, 60)).await.unwrap();
    std::fs::remove_dir_all(repo.path().join("breast-cancer/1")).unwrap();
    std::fs::remove_dir_all(repo.path().join("breast-cancer/2")).unwrap();
    let m = eventually(&mut c, "idle v2 unloaded", |m| state_of(m, 2).is_none()).await;
    assert_eq!(
        state_of(&m, 1),
        Some(pb::VersionState::Ready as i32),
        "green was unloaded before its switch: {m:?}"
    );
    a.advance(pb::RolloutRequest {
        model: "breast-cancer".into(),
        reason: "switch".into(),
        expected_stage: None,
    })
    .await
    .unwrap();
    let resp = c.predict(request("breast-cancer", &rows(1))).await.unwrap().into_inner();
    assert_eq!((resp.version, resp.role), (1, pb::Role::Green as i32), "green serves after the switch");
    server.stop().await.unwrap();
}

/// Editing model.toml's `[analysis]` while serving takes effect without a
/// restart; an edit that does not validate keeps the settings in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_model_toml_changes_the_analysis_settings_without_a_restart() {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, V1);
    let server = start(&repo, |c| {
        c.rescan = Duration::from_millis(100);
        c.settle = Duration::from_millis(100);
    })
    .await;
    let mut a = admin(&server, None).await;
    assert_eq!(analysis(&mut a, "breast-cancer").await.alpha, 0.05);
    repo.config("breast-cancer", "[analysis]\nalpha = 0.01\n");
    let until = Instant::now() + Duration::from_secs(20);
    while analysis(&mut a, "breast-cancer").await.alpha != 0.01 {
        assert!(Instant::now() < until, "the edit never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // alpha must be at most 0.5: refused, the previous settings stay.
    repo.config("breast-cancer", "[analysis]\nalpha = 2.0\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(analysis(&mut a, "breast-cancer").await.alpha, 0.01);
    // The model still serves.
    let mut c = client(&server).await;
    assert_eq!(metadata(&mut c).await.champion, 1);
    server.stop().await.unwrap();
}
