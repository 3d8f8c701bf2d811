//! OTEL_BSP_MAX_QUEUE_SIZE on a real `modelgate serve`: with a small queue
//! and a collector that has stalled, a burst of requests is served in full,
//! the spans beyond the queue are dropped, counted in
//! `modelgate_trace_spans_dropped_total{reason="queue_full"}` and logged, and
//! export resumes when the collector does.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use modelgate_tests::otlp::{Receiver, hex, serve_with};
use modelgate_tests::*;

const QUEUE: usize = 8;
const BURST: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_span_queue_drops_and_counts_spans_and_the_server_keeps_serving() {
    // A collector that holds every export until released.
    let (otlp, receiver) = Receiver::start(None, true).await;
    let repo = TestRepo::breast_cancer();
    let served = serve_with(
        &repo,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            ("OTEL_BSP_MAX_QUEUE_SIZE", QUEUE.to_string()),
            // The held export must stay held until the test releases it.
            ("OTEL_BSP_EXPORT_TIMEOUT", "600000".into()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "600000".into()),
        ],
    );
    let mut c = served.client().await;

    // Requests until an export reaches the stalled collector: from then on
    // the queue holds spans that cannot leave.
    let until = Instant::now() + Duration::from_secs(120);
    while receiver.started() == 0 {
        assert!(Instant::now() < until, "no export reached the collector");
        c.predict(request("breast-cancer", &rows(1))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped_before =
        served.metric("modelgate_trace_spans_dropped_total", &[("reason", "queue_full")]).await;

    // The burst: every request is served.
    let burst = (0..BURST).map(|_| {
        let mut c = c.clone();
        async move { c.predict(request("breast-cancer", &rows(1))).await }
    });
    for answer in futures::future::join_all(burst).await {
        answer.unwrap();
    }
    // The queue is full and held, so each request's span (at least) is
    // dropped and counted (a span ends just after its answer is sent, so
    // the count is polled).
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let dropped = served.metric("modelgate_trace_spans_dropped_total", &[("reason", "queue_full")]).await;
        if dropped - dropped_before >= BURST as f64 {
            break;
        }
        assert!(Instant::now() < until, "dropped {dropped_before} then only {dropped}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The collector recovers: the held batch goes out, which frees the
    // queue, and the drops are logged (after the queue is freed).
    receiver.release();
    let until = Instant::now() + Duration::from_secs(120);
    while !served.log().contains("the span export queue was full: spans dropped") {
        assert!(Instant::now() < until, "the drops were never logged; log:\n{}", served.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served.log().contains(&format!("max_queue_size={QUEUE}")), "{}", served.log());
    // New spans are exported again.
    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4736";
    let mut req = tonic::Request::new(request("breast-cancer", &rows(1)));
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    c.predict(req).await.unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    while !receiver
        .spans()
        .iter()
        .any(|s| s.name == "modelgate.v1.Predict/Predict" && hex(&s.trace_id) == trace_id)
    {
        assert!(
            Instant::now() < until,
            "no span exported after the collector recovered; log:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
