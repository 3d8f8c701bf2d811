//! Dynamic batching: concurrent requests for one version run as one ORT
//! call, each gets exactly its own rows back, and a failure inside a batch
//! lands only on the request that caused it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use modelgate_proto::v1 as pb;
use modelgate_tests::*;

fn probs(resp: &pb::PredictResponse) -> Vec<f32> {
    match output(resp, "probabilities").data {
        modelgate_runtime::TensorData::Float32(v) => v,
        other => panic!("{other:?}"),
    }
}

/// (runs, rows) of a version, from the batch histogram on /metrics.
async fn runs_and_rows(server: &modelgate::RunningServer, model: &str, version: &str) -> (f64, f64) {
    let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    let find = |name: &str| {
        body.lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains(&format!("model=\"{model}\""))
                    && l.contains(&format!("version=\"{version}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (find("modelgate_batch_size_rows_count"), find("modelgate_batch_size_rows_sum"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_run_and_get_their_own_rows() {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, V1)
        .config("breast-cancer", "max_batch = 32\nmax_queue_delay_us = 20000\nqueue_capacity = 1024\n");
    // One inference thread, so requests queue up behind each other.
    let server = start(&repo, |c| c.threads = 1).await;
    let g = golden(1);
    let mut tasks = Vec::new();
    for i in 0..96 {
        let mut c = client(&server).await;
        let row = g.rows[i % 16].clone();
        tasks.push(tokio::spawn(async move {
            let resp = c.predict(request("breast-cancer", &[row])).await.unwrap().into_inner();
            (i, resp)
        }));
    }
    for t in tasks {
        let (i, resp) = t.await.unwrap();
        let got = probs(&resp);
        let want = &g.probabilities[i % 16];
        assert_eq!(got.len(), 2);
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "request {i}: {got:?} vs {want:?}");
        }
    }
    let (runs, rows) = runs_and_rows(&server, "breast-cancer", "1").await;
    // Warm-up ran outside the queue; 96 requests of one row each.
    assert_eq!(rows, 96.0);
    assert!(runs < 96.0 / 2.0, "{runs} runs for 96 requests: batching did not happen");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_a_batch_lands_only_on_its_request() {
    let repo = TestRepo::new();
    // The fault model fails at run time when feature 0 < 0.
    repo.add("faulty", 1, FAIL).config("faulty", "max_batch = 64\nmax_queue_delay_us = 20000\n");
    let server = start(&repo, |c| c.threads = 1).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut c = client(&server).await;
        let mut row = vec![1.0f32; 30];
        if i == 17 {
            row[0] = -1.0;
        }
        tasks.push(tokio::spawn(async move { (i, c.predict(request("faulty", &[row])).await) }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i == 17 {
            let e = r.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
        } else {
            assert!(r.is_ok(), "request {i}: {r:?}");
        }
    }
    let (_, body) = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        body.lines()
            .any(|l| l.starts_with("modelgate_batch_retries_total{model=\"faulty\"") && !l.ends_with(" 0")),
        "no batch was retried:\n{body}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_one_runs_each_request_alone() {
    let repo = TestRepo::new();
    repo.add("breast-cancer", 1, V1).config("breast-cancer", "max_batch = 1\n");
    let server = start(&repo, |c| c.threads = 1).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = client(&server).await;
        tasks.push(tokio::spawn(async move { c.predict(request("breast-cancer", &rows(2))).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(runs_and_rows(&server, "breast-cancer", "1").await, (20.0, 40.0));
    server.stop().await.unwrap();
}
