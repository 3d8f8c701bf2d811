//! The model repository at start: broken versions and settings are FAILED
//! with their reason, never served, and never stop the rest.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use modelgate_proto::v1 as pb;
use modelgate_tests::*;
use tonic::Code;

/// (version, state) of every version a metadata answer lists.
fn states(meta: &pb::ModelMetadataResponse) -> Vec<(i64, i32)> {
    meta.versions.iter().map(|v| (v.version, v.state)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_versions_are_listed_with_reasons_and_the_rest_serve() {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, V1).add("breast-cancer", 3, CORRUPT);
    // A version folder without model.onnx.
    std::fs::create_dir_all(repo.path().join("breast-cancer/4")).unwrap();
    // A model whose settings are wrong: all its versions fail, others serve.
    repo.add("typo", 1, V1).config("typo", "queue_capcity = 3\n");
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;

    // The highest READY version is champion, not the highest version.
    let resp = c.predict(request("breast-cancer", &rows(1))).await.unwrap().into_inner();
    assert_eq!(resp.version, 1);

    let meta = c
        .model_metadata(pb::ModelMetadataRequest { model: "breast-cancer".into() })
        .await
        .unwrap()
        .into_inner();
    let (ready, failed) = (pb::VersionState::Ready as i32, pb::VersionState::Failed as i32);
    assert_eq!(states(&meta), [(1, ready), (3, failed), (4, failed)]);
    assert!(
        meta.versions[1].reason.contains("ONNX Runtime rejected the model"),
        "{}",
        meta.versions[1].reason
    );
    assert!(meta.versions[2].reason.contains("no model.onnx"), "{}", meta.versions[2].reason);

    let mut pinned = request("breast-cancer", &rows(1));
    pinned.version = Some(3);
    let err = c.predict(pinned).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("version 3 of model 'breast-cancer' is FAILED"), "{}", err.message());

    let err = c.predict(request("typo", &rows(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let meta =
        c.model_metadata(pb::ModelMetadataRequest { model: "typo".into() }).await.unwrap().into_inner();
    assert!(meta.versions[0].reason.contains("unknown field `queue_capcity`"), "{}", meta.versions[0].reason);

    // The watcher's rescans keep the listing as start-up made it: the folder
    // without model.onnx stays FAILED (it used to vanish at the first
    // rescan). A new version becoming READY proves rescans ran.
    repo.add("breast-cancer", 5, V1);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let meta = loop {
        let meta = c
            .model_metadata(pb::ModelMetadataRequest { model: "breast-cancer".into() })
            .await
            .unwrap()
            .into_inner();
        if meta.versions.iter().any(|v| v.version == 5 && v.state == pb::VersionState::Ready as i32) {
            break meta;
        }
        assert!(std::time::Instant::now() < until, "version 5 never became READY: {meta:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(states(&meta), [(1, ready), (3, failed), (4, failed), (5, ready)]);
    assert!(meta.versions[2].reason.contains("no model.onnx"), "{}", meta.versions[2].reason);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_with_different_signatures_serve_side_by_side() {
    let repo = TestRepo::breast_cancer();
    repo.add("linear", 1, OTHER);
    let server = start(&repo, |_| {}).await;
    let mut c = client(&server).await;
    let req = pb::PredictRequest {
        model: "linear".into(),
        inputs: vec![raw_rows("x", &[vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 0.0, 0.0, 1.0]])],
        ..Default::default()
    };
    let resp = c.predict(req).await.unwrap().into_inner();
    assert_eq!(output(&resp, "y").data, modelgate_runtime::TensorData::Float32(vec![1.5, 4.5]));
    // breast-cancer rows sent to the other model are rejected with its signature.
    let err = c.predict(request("linear", &rows(1))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("unknown input 'input'"), "{}", err.message());
    server.stop().await.unwrap();
}
