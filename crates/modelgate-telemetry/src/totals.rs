//! Cumulative totals of one loaded version's requests since it loaded: what
//! Triton's ModelStatistics reports. Fixed-size atomics: the request path
//! adds to them without a lock, and a version holds one set whatever its
//! traffic or its callers send.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Running totals of one version's requests.
#[derive(Debug, Default)]
pub struct RequestTotals {
    success: AtomicU64,
    success_ns: AtomicU64,
    fail: AtomicU64,
    fail_ns: AtomicU64,
    queue_ns: AtomicU64,
    compute_ns: AtomicU64,
    inferences: AtomicU64,
    last_ms: AtomicU64,
}

/// The totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TotalsSnapshot {
    /// Requests answered OK, and their time from submission to answer.
    pub success: u64,
    pub success_ns: u64,
    /// Requests routed to the version that failed, and their time.
    pub fail: u64,
    pub fail_ns: u64,
    /// Of the successful requests: time queued, and time in ONNX Runtime.
    pub queue_ns: u64,
    pub compute_ns: u64,
    /// Successful inferences: rows of batched requests each count.
    pub inferences: u64,
    /// Unix milliseconds of the last request, 0 before the first.
    pub last_ms: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RequestTotals {
    /// A request answered OK at `at_ms` after `total`, of which `queue`
    /// waiting and `compute` running, carrying `inferences` inferences.
    pub fn succeeded(
        &self,
        at_ms: u64,
        inferences: u64,
        total: Duration,
        queue: Duration,
        compute: Duration,
    ) {
        self.success.fetch_add(1, Relaxed);
        self.success_ns.fetch_add(nanos(total), Relaxed);
        self.queue_ns.fetch_add(nanos(queue), Relaxed);
        self.compute_ns.fetch_add(nanos(compute), Relaxed);
        self.inferences.fetch_add(inferences, Relaxed);
        self.last_ms.fetch_max(at_ms, Relaxed);
    }

    /// A request that failed at `at_ms` after `total`.
    pub fn failed(&self, at_ms: u64, total: Duration) {
        self.fail.fetch_add(1, Relaxed);
        self.fail_ns.fetch_add(nanos(total), Relaxed);
        self.last_ms.fetch_max(at_ms, Relaxed);
    }

    pub fn snapshot(&self) -> TotalsSnapshot {
        TotalsSnapshot {
            success: self.success.load(Relaxed),
            success_ns: self.success_ns.load(Relaxed),
            fail: self.fail.load(Relaxed),
            fail_ns: self.fail_ns.load(Relaxed),
            queue_ns: self.queue_ns.load(Relaxed),
            compute_ns: self.compute_ns.load(Relaxed),
            inferences: self.inferences.load(Relaxed),
            last_ms: self.last_ms.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_keep_the_latest_time() {
        let t = RequestTotals::default();
        let ms = Duration::from_millis;
        t.succeeded(20, 4, ms(3), ms(1), ms(2));
        t.succeeded(10, 1, ms(5), ms(2), ms(3));
        t.failed(15, ms(7));
        assert_eq!(
            t.snapshot(),
            TotalsSnapshot {
                success: 2,
                success_ns: 8_000_000,
                fail: 1,
                fail_ns: 7_000_000,
                queue_ns: 3_000_000,
                compute_ns: 5_000_000,
                inferences: 5,
                last_ms: 20,
            }
        );
    }
}
