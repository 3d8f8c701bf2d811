//! Shared pieces of the bench binaries: latency summaries as one JSON line.

use hdrhistogram::Histogram;

/// A new histogram of latencies in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One JSON line: counts, rate and percentiles (µs).
pub fn summary(
    label: &str,
    extra: serde_json::Value,
    hist: &Histogram<u64>,
    errors: u64,
    seconds: f64,
    rows_per_request: usize,
) -> serde_json::Value {
    let n = hist.len();
    let mut doc = serde_json::json!({
        "bench": label,
        "requests": n,
        "errors": errors,
        "seconds": seconds,
        "rps": n as f64 / seconds,
        "rows_per_s": (n as f64 * rows_per_request as f64) / seconds,
        "p50_us": hist.value_at_quantile(0.50),
        "p90_us": hist.value_at_quantile(0.90),
        "p99_us": hist.value_at_quantile(0.99),
        "p999_us": hist.value_at_quantile(0.999),
        "max_us": hist.max(),
        "mean_us": hist.mean(),
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (doc.as_object_mut(), extra) {
        obj.extend(more);
    }
    doc
}

/// Deterministic feature values for `rows × width` inputs.
pub fn features(rows: usize, width: usize) -> Vec<f32> {
    (0..rows * width).map(|i| ((i * 7919) % 1000) as f32 / 100.0).collect()
}

pub mod decisions;
