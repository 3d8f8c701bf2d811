//! A hard CPU budget for background work (shadow copies).
//!
//! Background threads already run at `SCHED_IDLE`, so the scheduler gives them
//! only CPU that would otherwise idle. That is not enough for a p99 budget on
//! a small or virtualised machine: a core kept busy by background work still
//! slows the critical path (shared caches and execution units, SMT siblings on
//! the host, wakeups that must preempt). Measured on the 2-core bench VM, a
//! `SCHED_IDLE` spinner using all idle CPU raised the champion's p99 by
//! 1.04–1.37×; one limited to 10% of a core, by 1.02–1.08× (README,
//! "Shadow isolation").
//!
//! The budget is a rate limiter over *thread CPU time* (the generic cell rate
//! algorithm, GCRA): every piece of background work charges the CPU time it
//! used, divided by the budget in cores, to a theoretical arrival time (TAT).
//! New work is admitted while the TAT is at most `burst` ahead of now. The
//! check on the request path is one clock read and one atomic load; charging
//! happens on the background threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// CPU time background work may use: `cores` core-seconds per second, with
/// bursts of up to `burst` of budget.
#[derive(Debug)]
pub struct CpuBudget {
    cores: f64,
    burst_ns: u64,
    start: Instant,
    /// Theoretical arrival time in ns since `start`.
    tat_ns: AtomicU64,
    used_ns: AtomicU64,
}

impl CpuBudget {
    /// `cores` must be positive (e.g. 0.1: a tenth of one core).
    pub fn new(cores: f64, burst: Duration) -> Self {
        Self {
            cores: cores.max(1e-6),
            burst_ns: burst.as_nanos() as u64,
            start: Instant::now(),
            tat_ns: AtomicU64::new(0),
            used_ns: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Whether new background work may start now.
    pub fn admits(&self) -> bool {
        self.admits_at(self.now_ns())
    }

    fn admits_at(&self, now_ns: u64) -> bool {
        self.tat_ns.load(Ordering::Relaxed) <= now_ns.saturating_add(self.burst_ns)
    }

    /// Charges CPU time that background work used.
    pub fn charge(&self, cpu: Duration) {
        self.charge_at(self.now_ns(), cpu);
    }

    fn charge_at(&self, now_ns: u64, cpu: Duration) {
        let cpu_ns = cpu.as_nanos() as u64;
        self.used_ns.fetch_add(cpu_ns, Ordering::Relaxed);
        let cost = (cpu_ns as f64 / self.cores) as u64;
        let _ = self.tat_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
            Some(tat.max(now_ns).saturating_add(cost))
        });
    }

    /// The budget, in cores.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// CPU time charged so far.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// Runs `f` and charges the CPU time the calling thread spent in it.
    pub fn metered<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = thread_cpu_time();
        let out = f();
        self.charge(thread_cpu_time().saturating_sub(before));
        out
    }
}

/// CPU time the calling thread has used (not wall time: a preempted thread is
/// not charged for the time others ran).
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn work_is_admitted_at_the_budgeted_rate_after_a_burst() {
        // A tenth of a core, 10 ms burst: each 1 ms of CPU costs 10 ms of time.
        let b = CpuBudget::new(0.1, Duration::from_millis(10));
        assert!(b.admits_at(0));
        b.charge_at(0, Duration::from_millis(1)); // TAT 10 ms: still within the burst
        assert!(b.admits_at(0));
        b.charge_at(0, Duration::from_millis(1)); // TAT 20 ms
        assert!(!b.admits_at(0));
        assert!(!b.admits_at(9 * MS));
        assert!(b.admits_at(10 * MS));
        // Idle time does not bank budget beyond the burst.
        b.charge_at(1_000 * MS, Duration::from_millis(1));
        assert!(b.admits_at(1_000 * MS));
        b.charge_at(1_000 * MS, Duration::from_millis(1));
        assert!(!b.admits_at(1_000 * MS));
        assert_eq!(b.used(), Duration::from_millis(4));
        // Over a long run admitted CPU converges to the budget: 100 s at 0.1
        // cores admits ~10 s of 1 ms jobs.
        let b = CpuBudget::new(0.1, Duration::from_millis(10));
        let mut now = 0;
        let mut admitted = 0u64;
        while now < 100_000 * MS {
            if b.admits_at(now) {
                b.charge_at(now, Duration::from_millis(1));
                admitted += 1;
            }
            now += MS / 4;
        }
        assert!((9_990..=10_020).contains(&admitted), "{admitted}");
    }

    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let t0 = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - t0;
        let t1 = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - t1 < Duration::from_millis(5) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(slept < Duration::from_millis(5), "{slept:?}");
        assert!(thread_cpu_time() - t1 >= Duration::from_millis(5));
    }
}
