//! Hostile model files and runs (issue 14, items 1–3 and 9–11), against the
//! real binary: a model that declares a 4 TB input, a Loop that never ends,
//! a Loop whose length the client sends, an input that makes ONNX Runtime
//! allocate terabytes, folders that are not versions. None of them may
//! crash, hang, pin a core or stop the watcher.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use modelgate::hostile::onnx::{self, D, elem};
use modelgate_proto::v1 as pb;
use modelgate_tests::process::{ServeProcess, metadata_until, publish, version_state};
use modelgate_tests::*;

const FAST_WATCH: [&str; 4] = ["--rescan-seconds", "0.2", "--settle-ms", "100"];

fn int64(name: &str, v: i64) -> pb::Tensor {
    pb::Tensor {
        name: name.into(),
        dtype: pb::DataType::Int64 as i32,
        shape: vec![1],
        int64_data: vec![v],
        ..Default::default()
    }
}

fn float1(name: &str, v: f32) -> pb::Tensor {
    pb::Tensor {
        name: name.into(),
        dtype: pb::DataType::Float32 as i32,
        shape: vec![1],
        float_data: vec![v],
        ..Default::default()
    }
}

fn loop_request(model: &str, n: i64) -> pb::PredictRequest {
    pb::PredictRequest {
        model: model.into(),
        inputs: vec![int64("n", n), float1("x", 0.0)],
        ..Default::default()
    }
}

fn failed_with(m: &pb::ModelMetadataResponse, version: i64, needle: &str) -> bool {
    matches!(version_state(m, version), Some((pb::VersionState::Failed, reason)) if reason.contains(needle))
}

fn ready(m: &pb::ModelMetadataResponse, version: i64) -> bool {
    matches!(version_state(m, version), Some((pb::VersionState::Ready, _)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_shapes_over_the_budget_are_failed_and_the_gateway_lives_on() {
    let repo = TestRepo::breast_cancer();
    let mut served = ServeProcess::serve(repo.path(), &FAST_WATCH);
    let mut c = served.client().await;
    let rss_before = served.status_kib("VmRSS");

    // The 75-byte file (4 TB of float32), the one that overflowed
    // the warm-up's Vec (1 << 62 elements), a product that overflows i64,
    // and a string input that would be 2^40 Strings.
    publish(repo.path(), "huge", 1, &onnx::identity(elem::FLOAT, &[D::Fixed(1 << 40)]));
    publish(repo.path(), "huge", 2, &onnx::identity(elem::FLOAT, &[D::Fixed(1 << 62)]));
    publish(repo.path(), "huge", 3, &onnx::identity(elem::INT64, &[D::Fixed(1 << 32), D::Fixed(1 << 32)]));
    publish(repo.path(), "huge", 4, &onnx::identity(elem::STRING, &[D::Dynamic("n"), D::Fixed(1 << 40)]));
    // Within the budget: a fixed [1024, 1024] float input (4 MiB) is fine.
    publish(repo.path(), "huge", 5, &onnx::identity(elem::FLOAT, &[D::Fixed(1024), D::Fixed(1024)]));
    let m = metadata_until(&mut c, "huge", 60, |m| {
        (1..=4).all(|v| failed_with(m, v, "over the budget")) && ready(m, 5)
    })
    .await;
    let (_, reason) = version_state(&m, 1).unwrap();
    assert!(
        reason.contains("input 'x' declares shape [1099511627776] of FLOAT32: 4398046511104 bytes"),
        "{reason}"
    );
    assert!(reason.contains("max_tensor_bytes"), "{reason}");
    let (_, reason) = version_state(&m, 3).unwrap();
    assert!(reason.contains("bytes"), "{reason}");
    assert!(served.alive(), "the gateway died: {}", served.log());

    // It serves, and the watcher still works: a version dropped in after
    // the hostile ones loads.
    let resp = c.predict(request("breast-cancer", &rows(1))).await.unwrap().into_inner();
    assert_eq!(resp.version, 2);
    publish(repo.path(), "breast-cancer", 3, &std::fs::read(model_file(V1)).unwrap());
    metadata_until(&mut c, "breast-cancer", 60, |m| ready(m, 3)).await;
    let hwm = served.status_kib("VmHWM");
    eprintln!("resident memory: {rss_before} KiB before the hostile files, peak {hwm} KiB after");
    assert!(hwm < rss_before + 200 * 1024, "peak {hwm} KiB against {rss_before} KiB before");

    // No crash loop: a restart with the files still there starts and serves.
    drop(c);
    drop(served);
    let mut again = ServeProcess::serve(repo.path(), &FAST_WATCH);
    let mut c = again.client().await;
    let m =
        metadata_until(&mut c, "huge", 30, |m| (1..=4).all(|v| failed_with(m, v, "over the budget"))).await;
    assert!(ready(&m, 5));
    c.predict(request("breast-cancer", &rows(1))).await.unwrap();
    assert!(again.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_toml_budget_refuses_what_the_default_allows() {
    let repo = TestRepo::breast_cancer();
    repo.config("small", "max_tensor_bytes = 1000\n");
    let served = ServeProcess::serve(repo.path(), &FAST_WATCH);
    let mut c = served.client().await;
    publish(repo.path(), "small", 1, &onnx::identity(elem::FLOAT, &[D::Fixed(1024)]));
    let m = metadata_until(&mut c, "small", 60, |m| failed_with(m, 1, "over the budget of 1000 bytes")).await;
    let (_, reason) = version_state(&m, 1).unwrap();
    assert!(reason.contains("4096 bytes"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_that_never_ends_is_stopped_and_the_next_version_loads() {
    let repo = TestRepo::breast_cancer();
    let mut served =
        ServeProcess::serve(repo.path(), &[&FAST_WATCH[..], &["--warm-up-limit-seconds", "1"]].concat());
    let mut c = served.client().await;
    publish(repo.path(), "forever", 1, &onnx::loop_forever());
    let m = metadata_until(&mut c, "forever", 60, |m| failed_with(m, 1, "warm-up stopped")).await;
    let (_, reason) = version_state(&m, 1).unwrap();
    assert!(reason.contains("ran longer than its limit of 1000 ms"), "{reason}");

    // Versions dropped in after it load.
    publish(repo.path(), "breast-cancer", 3, &std::fs::read(model_file(V1)).unwrap());
    metadata_until(&mut c, "breast-cancer", 60, |m| ready(m, 3)).await;

    // And no core stays pinned: over the next 2 s the process is idle.
    let cpu = served.cpu_seconds();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = served.cpu_seconds() - cpu;
    eprintln!("CPU after the stopped warm-up: {used} s in {:?}", wall.elapsed());
    assert!(used < 1.0, "{used} s of CPU in 2 s: a warm-up still spins");
    assert!(served.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_endless_warm_up_exits_at_once() {
    let repo = TestRepo::breast_cancer();
    let mut served =
        ServeProcess::serve(repo.path(), &[&FAST_WATCH[..], &["--warm-up-limit-seconds", "86400"]].concat());
    publish(repo.path(), "forever", 1, &onnx::loop_forever());
    // Wait until the warm-up spins (the process burns a core).
    // A generous ceiling: on a loaded machine the process gets little CPU.
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let before = served.cpu_seconds();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if served.cpu_seconds() - before >= 0.3 {
            break;
        }
        assert!(Instant::now() < until, "the warm-up never started: {}", served.log());
    }
    served.signal("TERM");
    let status = served.wait_exit(Duration::from_secs(20));
    assert!(status.is_some(), "still running 20 s after SIGTERM: {}", served.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_a_running_inference_and_frees_its_thread() {
    let repo = TestRepo::breast_cancer();
    publish(repo.path(), "loop", 1, &onnx::loop_count());
    let served = ServeProcess::serve(repo.path(), &["--threads", "2"]);
    let mut c = served.client().await;

    // Two runs of 2^62 iterations, one per executor thread, 2 s deadlines.
    let mut calls = Vec::new();
    for _ in 0..2 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(loop_request("loop", 1 << 62));
            req.set_timeout(Duration::from_secs(2));
            c.predict(req).await
        }));
    }
    for call in calls {
        let status = call.await.unwrap().unwrap_err();
        // tonic's client applies grpc-timeout itself too: whichever side's
        // timer fires first answers. The server's answer says the run is
        // being stopped.
        match status.code() {
            // The handler's timer or the watchdog's stop, whichever is first:
            // both say the run was stopped.
            tonic::Code::DeadlineExceeded => assert!(
                status.message().contains("while the request ran; the run is being stopped")
                    || status.message().contains("the run was stopped after"),
                "{status:?}"
            ),
            tonic::Code::Cancelled => assert!(status.message().contains("Timeout expired"), "{status:?}"),
            _ => panic!("{status:?}"),
        }
    }
    // Both threads are free again: every model answers.
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.set_timeout(Duration::from_secs(30));
    c.predict(req).await.expect("an executor thread is free");
    let mut req = tonic::Request::new(loop_request("loop", 1000));
    req.set_timeout(Duration::from_secs(30));
    let resp = c.predict(req).await.expect("a short loop runs").into_inner();
    let y = output(&resp, "y");
    assert!(matches!(&y.data, modelgate_runtime::TensorData::Float32(v) if v == &[1000.0]), "{y:?}");

    // Both runs were stopped (by their deadline, or as cancelled when the
    // client's own timer reset the stream first).
    // A stop is counted when its run returns, which on a busy machine can be
    // after another thread has answered: wait for both (30 s ceiling).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let deadline =
            served.metric("modelgate_inference_runs_stopped_total", &[("reason", "deadline")]).await;
        let cancelled =
            served.metric("modelgate_inference_runs_stopped_total", &[("reason", "cancelled")]).await;
        if deadline + cancelled == 2.0 || std::time::Instant::now() > until {
            assert_eq!(deadline + cancelled, 2.0, "deadline {deadline}, cancelled {cancelled}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_run_ms_stops_a_run_without_a_client_deadline() {
    let repo = TestRepo::breast_cancer();
    publish(repo.path(), "loop", 1, &onnx::loop_count());
    repo.config("loop", "max_run_ms = 500\n");
    let served = ServeProcess::serve(repo.path(), &["--threads", "1"]);
    let mut c = served.client().await;
    let status = c.predict(loop_request("loop", 1 << 62)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("ran longer than its limit of 500 ms"), "{status:?}");
    // The only thread is free again.
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.set_timeout(Duration::from_secs(30));
    c.predict(req).await.expect("the executor thread is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_stops_its_run() {
    let repo = TestRepo::breast_cancer();
    publish(repo.path(), "loop", 1, &onnx::loop_count());
    // No deadline, no max_run_ms: only the cancellation can stop it.
    let served = ServeProcess::serve(repo.path(), &["--threads", "1", "--max-run-ms", "0"]);
    let c = served.client().await;
    let call = {
        let mut c = c.clone();
        tokio::spawn(async move { c.predict(loop_request("loop", 1 << 62)).await })
    };
    // Wait until it runs (the process burns CPU), then cancel.
    // A generous ceiling: on a loaded machine the process gets little CPU.
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let before = served.cpu_seconds();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if served.cpu_seconds() - before >= 0.2 {
            break;
        }
        assert!(Instant::now() < until, "the run never started");
    }
    call.abort();
    let mut c = c.clone();
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.set_timeout(Duration::from_secs(30));
    c.predict(req).await.expect("the cancelled run freed the only thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_onnx_runtime_refuses_is_resource_exhausted() {
    let repo = TestRepo::breast_cancer();
    publish(repo.path(), "zeros", 1, &onnx::constant_of_shape());
    let mut served = ServeProcess::serve(repo.path(), &[]);
    let mut c = served.client().await;
    let req = pb::PredictRequest {
        model: "zeros".into(),
        inputs: vec![int64("shape", 1 << 40)],
        ..Default::default()
    };
    let status = c.predict(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("could not allocate memory"), "{status:?}");
    let req =
        pb::PredictRequest { model: "zeros".into(), inputs: vec![int64("shape", 3)], ..Default::default() };
    let resp = c.predict(req).await.unwrap().into_inner();
    assert_eq!(output(&resp, "y").shape, vec![3]);
    assert!(served.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_that_are_not_versions_are_warned_about_once() {
    let repo = TestRepo::breast_cancer();
    std::fs::create_dir_all(repo.path().join("breast-cancer/notes")).unwrap();
    std::fs::create_dir_all(repo.path().join("breast-cancer/18446744073709551615")).unwrap();
    std::fs::copy(model_file(V1), repo.path().join("breast-cancer/18446744073709551615/model.onnx")).unwrap();
    std::fs::create_dir_all(repo.path().join("breast-cancer/9223372036854775808")).unwrap();
    std::fs::copy(model_file(V1), repo.path().join("breast-cancer/9223372036854775808/model.onnx")).unwrap();
    let served = ServeProcess::serve(repo.path(), &["--rescan-seconds", "0.05", "--settle-ms", "100"]);
    let mut c = served.client().await;
    // Many rescans later (a version dropped in after them is READY)...
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish(repo.path(), "breast-cancer", 3, &std::fs::read(model_file(V1)).unwrap());
    let m = metadata_until(&mut c, "breast-cancer", 60, |m| ready(m, 3)).await;
    // ...no version above int64 was listed, and each folder was warned about once.
    let versions: Vec<i64> = m.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    let log = served.log();
    let warned =
        |folder: &str| log.lines().filter(|l| l.contains("skipping folder") && l.contains(folder)).count();
    assert_eq!(warned("notes"), 1, "{log}");
    assert_eq!(warned("18446744073709551615"), 1, "{log}");
    assert_eq!(warned("9223372036854775808"), 1, "{log}");
    assert!(log.contains("versions must be at most 9223372036854775807"), "{log}");
}

/// A listener whose first publish panics: the watcher reports it and goes on.
struct PanicsOnce {
    publishes: AtomicUsize,
    panics: std::sync::Mutex<Vec<String>>,
}

impl modelgate_registry::watch::RepositoryListener for PanicsOnce {
    fn publish(&self, _entries: &[modelgate_registry::ModelEntry]) {
        if self.publishes.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a listener bug");
        }
    }

    fn in_use(&self, _model: &str, _version: u64) -> bool {
        false
    }

    fn watcher_panicked(&self, message: &str) {
        self.panics.lock().unwrap().push(message.to_string());
    }
}

#[test]
fn a_panic_in_a_watcher_pass_is_reported_and_the_watcher_goes_on() {
    let runtime = modelgate_runtime::Runtime::init(None).expect("ONNX Runtime (make ort)");
    let repo = TestRepo::new();
    let listener = Arc::new(PanicsOnce { publishes: AtomicUsize::new(0), panics: Default::default() });
    let _watcher = modelgate_registry::watch::watch(
        runtime,
        repo.path(),
        modelgate_registry::LoadSettings::default(),
        modelgate_registry::watch::WatchSettings {
            rescan: Duration::from_millis(50),
            settle: Duration::from_millis(50),
        },
        Vec::new(),
        Arc::clone(&listener) as Arc<dyn modelgate_registry::watch::RepositoryListener>,
    );
    publish(repo.path(), "m", 1, &std::fs::read(model_file(V1)).unwrap());
    let until = Instant::now() + Duration::from_secs(60);
    while listener.panics.lock().unwrap().is_empty() {
        assert!(Instant::now() < until, "the panic was never reported");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(listener.panics.lock().unwrap()[0], "a listener bug");
    // The watcher goes on: the next version is published.
    publish(repo.path(), "m", 2, &std::fs::read(model_file(V1)).unwrap());
    while listener.publishes.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < until, "the watcher stopped after the panic");
        std::thread::sleep(Duration::from_millis(20));
    }
}
