//! Cost of recording into a version's sliding window and of taking a
//! snapshot, single-threaded and from two threads at once. One JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_telemetry::SlidingWindow;

fn record_ns(window: &SlidingWindow, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        window.record(Duration::from_micros(100 + i % 5000), i % 97 == 0, i % 89 == 0);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n = 2_000_000u64;
    let w = Arc::new(SlidingWindow::standard());
    let _ = record_ns(&w, 100_000);
    let single = record_ns(&w, n);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || record_ns(&w, n))
        })
        .collect();
    let two: Vec<f64> = handles.into_iter().map(|h| h.join().expect("bench thread")).collect();
    let reps = 200;
    let start = Instant::now();
    let mut requests = 0;
    for _ in 0..reps {
        requests = std::hint::black_box(w.snapshot()).requests;
    }
    let snapshot_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(reps);
    println!(
        "{}",
        serde_json::json!({
            "bench": "window",
            "record_ns_one_thread": single,
            "record_ns_two_threads": two,
            "snapshot_us": snapshot_us,
            "requests_in_window": requests,
        })
    );
}
