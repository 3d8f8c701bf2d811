//! A sliding window of request outcomes per version: a ring of interval HDR
//! histograms (default 6 × 10 s) with request, error and NaN/Inf counters.
//!
//! Recording must not contend: the window is sharded, and a recording thread
//! locks only its own shard (threads are spread over shards by a per-thread
//! index), so two threads rarely touch the same lock. Reading merges the ring
//! of every shard into a [`WindowSnapshot`], plain data for the rollout logic.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const SHARDS: usize = 8;
/// Latencies from 1 µs to 10 minutes at 3 significant digits.
const MAX_US: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("1 µs to 10 min at 3 significant digits are valid bounds")
}

#[derive(Debug, Clone)]
struct Interval {
    /// Index of the interval since the window's epoch.
    index: u64,
    latency_us: Histogram<u64>,
    requests: u64,
    errors: u64,
    nan_inf: u64,
}

impl Interval {
    fn new(index: u64) -> Self {
        Self { index, latency_us: histogram(), requests: 0, errors: 0, nan_inf: 0 }
    }
}

#[derive(Debug)]
struct Shard {
    ring: Vec<Interval>,
}

/// The window's merged contents at one moment.
#[derive(Debug, Clone)]
pub struct WindowSnapshot {
    pub requests: u64,
    pub errors: u64,
    /// Requests whose outputs held a NaN or an infinity.
    pub nan_inf: u64,
    pub latency_us: Histogram<u64>,
    /// How much time the snapshot covers.
    pub span: Duration,
}

/// A [`WindowSnapshot`] as it travels between replicas of a fleet: the
/// counts, and the latency histogram in HDR's own V2 encoding (base64), so
/// the receiver merges full distributions, not quantiles.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireSnapshot {
    pub requests: u64,
    pub errors: u64,
    pub nan_inf: u64,
    pub span_ms: u64,
    pub latency_us: String,
}

impl WindowSnapshot {
    /// The snapshot in its wire form.
    pub fn to_wire(&self) -> WireSnapshot {
        use base64::Engine;
        use hdrhistogram::serialization::Serializer;
        let mut buf = Vec::new();
        // V2 serialization of an in-memory histogram into a Vec cannot fail
        // but for a histogram it cannot represent; an empty one is sent then.
        if hdrhistogram::serialization::V2Serializer::new().serialize(&self.latency_us, &mut buf).is_err() {
            buf.clear();
        }
        WireSnapshot {
            requests: self.requests,
            errors: self.errors,
            nan_inf: self.nan_inf,
            span_ms: self.span.as_millis() as u64,
            latency_us: base64::engine::general_purpose::STANDARD.encode(buf),
        }
    }

    /// Reads a snapshot another replica sent.
    pub fn from_wire(w: &WireSnapshot) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&w.latency_us)
            .map_err(|e| format!("latency histogram is not base64: {e}"))?;
        let mut latency_us = histogram();
        if !bytes.is_empty() {
            let h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| format!("latency histogram does not decode: {e:?}"))?;
            latency_us.add(&h).map_err(|e| format!("latency histogram out of range: {e:?}"))?;
        }
        Ok(Self {
            requests: w.requests,
            errors: w.errors,
            nan_inf: w.nan_inf,
            latency_us,
            span: Duration::from_millis(w.span_ms),
        })
    }

    /// Nothing recorded, covering `span`.
    pub fn empty(span: Duration) -> Self {
        Self { requests: 0, errors: 0, nan_inf: 0, latency_us: histogram(), span }
    }

    fn add_interval(&mut self, iv: &Interval, latency: bool) {
        self.requests += iv.requests;
        self.errors += iv.errors;
        self.nan_inf += iv.nan_inf;
        if latency {
            let _ = self.latency_us.add(&iv.latency_us);
        }
    }

    /// Adds `other`'s counts and latencies to this one's.
    pub fn add(&mut self, other: &WindowSnapshot) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.nan_inf += other.nan_inf;
        let _ = self.latency_us.add(&other.latency_us);
        self.span += other.span;
    }

    /// Mean latency of the successful requests, in microseconds.
    pub fn mean_us(&self) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.mean())
    }

    /// Sample variance of the successful requests' latency, in µs².
    pub fn variance_us2(&self) -> Option<f64> {
        let n = self.latency_us.len();
        (n > 1).then(|| {
            let sd = self.latency_us.stdev();
            // hdrhistogram's stdev is the population one.
            sd * sd * n as f64 / (n - 1) as f64
        })
    }

    pub fn p(&self, quantile: f64) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(quantile))
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    pub fn nan_inf_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.nan_inf as f64 / self.requests as f64 }
    }
}

/// One version's sliding window.
#[derive(Debug)]
pub struct SlidingWindow {
    epoch: Instant,
    interval: Duration,
    intervals: usize,
    shards: Vec<Mutex<Shard>>,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn my_shard() -> usize {
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}

impl SlidingWindow {
    /// A window of `intervals` intervals of `interval` each.
    pub fn new(interval: Duration, intervals: usize) -> Self {
        let intervals = intervals.max(1);
        let interval = interval.max(Duration::from_millis(1));
        Self {
            epoch: Instant::now(),
            interval,
            intervals,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { ring: Vec::with_capacity(intervals) })).collect(),
        }
    }

    /// When the window began: intervals are numbered from it, so a caller
    /// with its own clock (the decision simulator) records and reads at
    /// `epoch() + simulated time`.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The default: 6 intervals of 10 s.
    pub fn standard() -> Self {
        Self::new(Duration::from_secs(10), 6)
    }

    fn index_at(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_nanos() / self.interval.as_nanos().max(1)) as u64
    }

    /// Records one request: its latency, whether it failed, and whether its
    /// outputs held a NaN or an infinity.
    pub fn record(&self, latency: Duration, error: bool, nan_inf: bool) {
        self.record_at(Instant::now(), latency, error, nan_inf);
    }

    pub fn record_at(&self, at: Instant, latency: Duration, error: bool, nan_inf: bool) {
        let index = self.index_at(at);
        let mut shard = self.shards[my_shard()].lock().unwrap_or_else(|p| p.into_inner());
        let slot = (index % self.intervals as u64) as usize;
        if shard.ring.len() < self.intervals {
            shard.ring.resize_with(self.intervals, || Interval::new(u64::MAX));
        }
        let iv = &mut shard.ring[slot];
        if iv.index != index {
            *iv = Interval::new(index);
        }
        iv.requests += 1;
        iv.errors += u64::from(error);
        iv.nan_inf += u64::from(nan_inf);
        if !error {
            iv.latency_us.saturating_record((latency.as_micros() as u64).clamp(1, MAX_US));
        }
    }

    /// The index of the interval `at` falls in; intervals are numbered from
    /// the window's creation.
    pub fn index_of(&self, at: Instant) -> u64 {
        self.index_at(at)
    }

    /// Merges the intervals numbered `from..=to` that are still in the ring
    /// (an interval leaves it `intervals` intervals after it began). The
    /// controller uses it to fold closed intervals into running totals that
    /// outlive the window.
    pub fn merge_range(&self, from: u64, to: u64) -> WindowSnapshot {
        self.merge(from, to, true)
    }

    fn merge(&self, from: u64, to: u64, latency: bool) -> WindowSnapshot {
        let mut snap = WindowSnapshot::empty(self.interval * (to.saturating_sub(from) + 1) as u32);
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for iv in
                shard.ring.iter().filter(|iv| iv.index != u64::MAX && iv.index >= from && iv.index <= to)
            {
                snap.add_interval(iv, latency);
            }
        }
        snap
    }

    /// Merges every interval still inside the window.
    pub fn snapshot(&self) -> WindowSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub fn snapshot_at(&self, at: Instant) -> WindowSnapshot {
        self.window_at(at, true)
    }

    /// [`Self::snapshot_at`] with the latency histogram left empty: the
    /// request, error and NaN/Inf counts, without merging histograms (tens
    /// of thousands of counters each). For judges that read counts only,
    /// like the decision simulator's millions of ticks.
    pub fn counts_at(&self, at: Instant) -> WindowSnapshot {
        self.window_at(at, false)
    }

    fn window_at(&self, at: Instant, latency: bool) -> WindowSnapshot {
        let now = self.index_at(at);
        let oldest = now.saturating_sub(self.intervals as u64 - 1);
        let mut snap = self.merge(oldest, now, latency);
        snap.span = self.interval * self.intervals as u32;
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_cross_the_wire_whole_and_merge_like_local_ones() {
        let w = SlidingWindow::new(Duration::from_secs(1), 3);
        let t0 = w.epoch;
        for i in 1..=500u64 {
            w.record_at(t0, Duration::from_micros(i * 7), i % 50 == 0, i % 100 == 0);
        }
        let s = w.snapshot_at(t0);
        let wire = s.to_wire();
        // As JSON, as replicas publish it.
        let json = serde_json::to_string(&wire).unwrap();
        let back = WindowSnapshot::from_wire(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!((back.requests, back.errors, back.nan_inf), (s.requests, s.errors, s.nan_inf));
        assert_eq!(back.latency_us, s.latency_us);
        assert_eq!(back.p(0.99), s.p(0.99));
        // Two replicas' halves add up to the whole.
        let mut merged = WindowSnapshot::from_wire(&wire).unwrap();
        merged.add(&back);
        assert_eq!(merged.requests, 2 * s.requests);
        assert_eq!(merged.p(0.99), s.p(0.99));
        // An empty one and a damaged one.
        let empty = WindowSnapshot::empty(Duration::ZERO);
        assert_eq!(WindowSnapshot::from_wire(&empty.to_wire()).unwrap().requests, 0);
        let mut bad = wire.clone();
        bad.latency_us = "not base64!".into();
        assert!(WindowSnapshot::from_wire(&bad).unwrap_err().contains("base64"));
    }

    #[test]
    fn records_merge_and_age_out() {
        let w = SlidingWindow::new(Duration::from_secs(1), 3);
        let t0 = w.epoch;
        for i in 1..=100u64 {
            w.record_at(t0, Duration::from_micros(i * 10), false, false);
        }
        w.record_at(t0, Duration::ZERO, true, false);
        w.record_at(t0 + Duration::from_millis(1500), Duration::from_micros(5), false, true);
        let s = w.snapshot_at(t0 + Duration::from_millis(1600));
        assert_eq!((s.requests, s.errors, s.nan_inf), (102, 1, 1));
        let c = w.counts_at(t0 + Duration::from_millis(1600));
        assert_eq!((c.requests, c.errors, c.nan_inf, c.span), (102, 1, 1, s.span));
        assert!(c.latency_us.is_empty());
        assert_eq!(w.epoch(), t0);
        let p99 = s.p(0.99).unwrap();
        assert!((980..=1000).contains(&p99), "{p99}");
        // Three seconds later the first interval has left the window.
        let s = w.snapshot_at(t0 + Duration::from_millis(3200));
        assert_eq!(s.requests, 1);
        let s = w.snapshot_at(t0 + Duration::from_secs(10));
        assert_eq!(s.requests, 0);
        assert_eq!(s.p(0.5), None);
    }

    #[test]
    fn ranges_fold_into_running_totals() {
        let w = SlidingWindow::new(Duration::from_secs(1), 3);
        let t0 = w.epoch;
        for i in 0..5u64 {
            let at = t0 + Duration::from_millis(i * 1000 + 10);
            assert_eq!(w.index_of(at), i);
            for _ in 0..=i {
                w.record_at(at, Duration::from_micros(100 * (i + 1)), false, false);
            }
        }
        // Intervals 2..=4 are in the ring; 0 and 1 have been overwritten.
        let s = w.merge_range(0, 4);
        assert_eq!(s.requests, 3 + 4 + 5);
        let mut total = w.merge_range(2, 3);
        total.add(&w.merge_range(4, 4));
        assert_eq!(total.requests, 12);
        let mean = total.mean_us().unwrap();
        let want = (3.0 * 300.0 + 4.0 * 400.0 + 5.0 * 500.0) / 12.0;
        assert!((mean - want).abs() < 1.0, "{mean} vs {want}");
        assert!(total.variance_us2().unwrap() > 0.0);
        assert_eq!(WindowSnapshot::empty(Duration::ZERO).mean_us(), None);
    }

    #[test]
    fn threads_record_without_losing_counts() {
        let w = std::sync::Arc::new(SlidingWindow::standard());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.record(Duration::from_micros(100), false, false);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(w.snapshot().requests, 40_000);
    }
}
