//! Outcome feedback: business metrics reported after the fact, joined to the
//! version that served the request, and kept as rolling per-version windows
//! for experiments and promotion gates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use modelgate_rollout::{Millis, Role};

/// Who served a request, remembered for joining outcomes by request id.
#[derive(Debug, Clone)]
pub struct Served {
    pub model: String,
    pub version: u64,
    pub role: Role,
}

/// One metric's observations in one time bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start_ms: Millis,
    n: u64,
    sum: f64,
    sum_sq: f64,
}

/// A metric's mean and spread over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSummary {
    pub n: u64,
    pub mean: f64,
    pub variance: f64,
}

/// Rolling outcome sums per (model, version, metric), in 10-second buckets
/// kept for a day; summaries cover any window up to that.
#[derive(Debug)]
pub struct OutcomeStore {
    served: moka::sync::Cache<String, Served>,
    buckets: Mutex<HashMap<(String, u64, String), Vec<Bucket>>>,
    unjoined: std::sync::atomic::AtomicU64,
}

const BUCKET_MS: Millis = 10_000;
const KEEP_MS: Millis = 24 * 3600 * 1000;

impl OutcomeStore {
    /// Remembers request ids for `ttl`, in at most about `budget_bytes` of
    /// memory (the oldest go first). Counted in bytes, not entries: the soak
    /// showed a count bound (it was a million ids) let resident memory climb
    /// by ~4 MiB a minute for many minutes before reaching it.
    pub fn new(budget_bytes: u64, ttl: Duration) -> Self {
        Self {
            served: moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|id: &String, s: &Served| {
                    // The two strings plus an estimate of the entry's own cost
                    // in the cache (value, key and node allocations, deque
                    // and hash slots).
                    u32::try_from(id.len() + s.model.len() + 192).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build(),
            buckets: Mutex::new(HashMap::new()),
            unjoined: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Remembers who served `request_id`.
    pub fn served(&self, request_id: &str, served: Served) {
        self.served.insert(request_id.to_string(), served);
    }

    pub fn lookup(&self, request_id: &str) -> Option<Served> {
        self.served.get(request_id)
    }

    pub fn count_unjoined(&self) {
        self.unjoined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn unjoined(&self) -> u64 {
        self.unjoined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds one observation of `metric` for `version` at `at_ms`.
    pub fn record(&self, model: &str, version: u64, metric: &str, value: f64, at_ms: Millis) {
        let start = at_ms - at_ms % BUCKET_MS;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = map.entry((model.to_string(), version, metric.to_string())).or_default();
        match buckets.iter_mut().find(|b| b.start_ms == start) {
            Some(b) => {
                b.n += 1;
                b.sum += value;
                b.sum_sq += value * value;
            }
            None => buckets.push(Bucket { start_ms: start, n: 1, sum: value, sum_sq: value * value }),
        }
        let oldest = at_ms.saturating_sub(KEEP_MS);
        buckets.retain(|b| b.start_ms >= oldest);
    }

    /// `metric` for `version` over the `window_ms` ending at `now_ms`.
    pub fn summary(
        &self,
        model: &str,
        version: u64,
        metric: &str,
        now_ms: Millis,
        window_ms: Millis,
    ) -> Option<MetricSummary> {
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = map.get(&(model.to_string(), version, metric.to_string()))?;
        let from = now_ms.saturating_sub(window_ms);
        let (n, sum, sum_sq) = buckets
            .iter()
            .filter(|b| b.start_ms + BUCKET_MS > from && b.start_ms <= now_ms)
            .fold((0u64, 0.0, 0.0), |(n, s, q), b| (n + b.n, s + b.sum, q + b.sum_sq));
        if n == 0 {
            return None;
        }
        let mean = sum / n as f64;
        let variance = if n > 1 { (sum_sq - n as f64 * mean * mean).max(0.0) / (n - 1) as f64 } else { 0.0 };
        Some(MetricSummary { n, mean, variance })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_cover_the_window_only() {
        let s = OutcomeStore::new(1 << 20, Duration::from_secs(60));
        let t = 1_000_000_000;
        for v in [1.0, 2.0, 3.0] {
            s.record("m", 1, "ctr", v, t);
        }
        s.record("m", 1, "ctr", 100.0, t - 3_600_000);
        let sum = s.summary("m", 1, "ctr", t, 60_000).unwrap();
        assert_eq!(sum.n, 3);
        assert!((sum.mean - 2.0).abs() < 1e-12);
        assert!((sum.variance - 1.0).abs() < 1e-12);
        assert_eq!(s.summary("m", 1, "ctr", t, 7_200_000).unwrap().n, 4);
        assert!(s.summary("m", 2, "ctr", t, 60_000).is_none());
    }

    #[test]
    fn request_ids_are_remembered() {
        let s = OutcomeStore::new(1 << 20, Duration::from_secs(60));
        s.served("r1", Served { model: "m".into(), version: 3, role: Role::Canary });
        assert_eq!(s.lookup("r1").map(|x| x.version), Some(3));
        assert!(s.lookup("r2").is_none());
    }
}
