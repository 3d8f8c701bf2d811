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
//!
//! The budget is a ceiling, not a reservation: by default it also follows the
//! load ([`follow_idle_cpu`]). Measured on the same VM (README "Shadow
//! isolation"), the champion's cost follows the CPU time the shadow spends
//! even at `SCHED_IDLE`: budgets of 0.02, 0.1 and 0.3 cores cost its p50
//! 6%, 8–14% and 13% at concurrency 8 on a saturated machine, while on an
//! idle machine there is nothing to slow. So every 200 ms the budget is
//! scaled by the share of the machine's CPU time that was idle (the shadow's
//! own time counted as idle: it is what the shadow may take back): all of it
//! on an idle machine, a tenth of it when nine tenths of the CPUs are busy,
//! and never less than [`MIN_SCALE`] of it, so a shadow keeps comparing a
//! sample on a saturated machine. It yields at once when the machine gets
//! busy and comes back over about a second.

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
    /// The share of `cores` in effect, in millionths ([`Self::set_scale`]).
    scale_ppm: AtomicU64,
}

/// The smallest share of its budget a shadow keeps however busy the machine.
pub const MIN_SCALE: f64 = 0.02;

impl CpuBudget {
    /// `cores` must be positive (e.g. 0.1: a tenth of one core).
    pub fn new(cores: f64, burst: Duration) -> Self {
        Self {
            cores: cores.max(1e-6),
            burst_ns: burst.as_nanos() as u64,
            start: Instant::now(),
            tat_ns: AtomicU64::new(0),
            used_ns: AtomicU64::new(0),
            scale_ppm: AtomicU64::new(PPM),
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
        let cost = (cpu_ns as f64 / self.effective_cores()) as u64;
        let _ = self.tat_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
            Some(tat.max(now_ns).saturating_add(cost))
        });
    }

    /// The budget, in cores: the ceiling.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// The budget in effect now, in cores: the ceiling × [`Self::scale`].
    pub fn effective_cores(&self) -> f64 {
        self.cores * self.scale()
    }

    /// The share of the ceiling in effect, in [`MIN_SCALE`]..=1.
    pub fn scale(&self) -> f64 {
        self.scale_ppm.load(Ordering::Relaxed) as f64 / PPM as f64
    }

    /// Sets the share of the ceiling in effect (clamped to
    /// [`MIN_SCALE`]..=1); work charged from now on costs accordingly.
    pub fn set_scale(&self, scale: f64) {
        let scale = if scale.is_finite() { scale.clamp(MIN_SCALE, 1.0) } else { 1.0 };
        self.scale_ppm.store((scale * PPM as f64).round() as u64, Ordering::Relaxed);
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

const PPM: u64 = 1_000_000;

/// How often [`follow_idle_cpu`] rescales a budget.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// The machine's CPU time so far, from the first line of `/proc/stat`, in
/// clock ticks: (idle incl. iowait, total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub idle: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Parses the aggregate `cpu` line of `/proc/stat`. Steal time counts as
    /// busy: the host took it, it was not there to give.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user and nice).
        let v: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
        if v.len() < 4 {
            return None;
        }
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        Some(Self { idle, total: v.iter().sum() })
    }

    /// Reads `/proc/stat` (Linux); `None` elsewhere or when unreadable.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }
}

/// Ticks per second of `/proc/stat` (USER_HZ: 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// The share of the machine's CPU time between `before` and `after` that a
/// shadow may use: what was idle, plus what `shadow` (the budget's own CPU
/// time in that interval) used, which `/proc/stat` counts as busy. `None`
/// when no tick passed.
pub fn headroom(before: CpuTimes, after: CpuTimes, shadow: Duration) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|&t| t > 0)?;
    let idle = after.idle.saturating_sub(before.idle);
    let shadow_ticks = shadow.as_nanos() as f64 * USER_HZ as f64 / 1e9;
    Some(((idle as f64 + shadow_ticks) / total as f64).clamp(0.0, 1.0))
}

/// The next scale from the last one and the headroom just measured: down
/// at once when the machine got busier, up by a quarter of the gap when it
/// got idler (so a lull of one interval does not hand the shadow its whole
/// budget back).
pub fn next_scale(old: f64, headroom: f64) -> f64 {
    let next = if headroom <= old { headroom } else { old + (headroom - old) / 4.0 };
    next.clamp(MIN_SCALE, 1.0)
}

/// Rescales `budget` every [`FOLLOW_INTERVAL`] to the machine's idle CPU
/// ([`headroom`], [`next_scale`]) on a thread of its own, until the budget
/// is dropped. Does nothing where `/proc/stat` cannot be read (the budget
/// then stays a fixed ceiling).
pub fn follow_idle_cpu(budget: &std::sync::Arc<CpuBudget>) -> std::io::Result<()> {
    let Some(mut before) = CpuTimes::read() else {
        tracing::info!("no /proc/stat: the shadow CPU budget stays fixed");
        return Ok(());
    };
    let weak = std::sync::Arc::downgrade(budget);
    let mut used_before = budget.used();
    std::thread::Builder::new().name("shadow-budget".into()).spawn(move || {
        loop {
            std::thread::sleep(FOLLOW_INTERVAL);
            let Some(budget) = weak.upgrade() else { return };
            let Some(now) = CpuTimes::read() else { return };
            let used = budget.used();
            if let Some(h) = headroom(before, now, used.saturating_sub(used_before)) {
                budget.set_scale(next_scale(budget.scale(), h));
                before = now;
                used_before = used;
            }
        }
    })?;
    Ok(())
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
    fn a_scaled_budget_admits_that_share_of_the_work() {
        // A tenth of a core at half scale: each 1 ms of CPU costs 20 ms.
        let b = CpuBudget::new(0.1, Duration::ZERO);
        b.set_scale(0.5);
        assert_eq!(b.effective_cores(), 0.05);
        b.charge_at(0, Duration::from_millis(1));
        assert!(!b.admits_at(19 * MS));
        assert!(b.admits_at(20 * MS));
        // Clamped: never below MIN_SCALE, never above the ceiling.
        b.set_scale(0.0);
        assert_eq!(b.scale(), MIN_SCALE);
        b.set_scale(7.0);
        assert_eq!(b.scale(), 1.0);
        b.set_scale(f64::NAN);
        assert_eq!(b.scale(), 1.0);
    }

    #[test]
    fn proc_stat_is_read_with_iowait_as_idle_and_steal_as_busy() {
        let stat = "cpu  100 5 50 800 20 3 2 20 0 0\ncpu0 50 2 25 400 10 1 1 10 0 0\nintr 1\n";
        assert_eq!(CpuTimes::parse(stat), Some(CpuTimes { idle: 820, total: 1000 }));
        // Old kernels print fewer columns.
        assert_eq!(CpuTimes::parse("cpu 1 2 3 4\n"), Some(CpuTimes { idle: 4, total: 10 }));
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu 1 x 3 4\n"), None);
        assert_eq!(CpuTimes::parse(""), None);
        // This machine's, when it has one.
        if let Some(t) = CpuTimes::read() {
            assert!(t.idle <= t.total);
        }
    }

    #[test]
    fn headroom_is_the_idle_share_plus_the_shadows_own() {
        let at = |idle, total| CpuTimes { idle, total };
        // 2 cores for 200 ms = 40 ticks; 4 idle: 10%.
        assert_eq!(headroom(at(0, 0), at(4, 40), Duration::ZERO), Some(0.1));
        // The shadow used 40 ms (4 ticks) of the 36 busy ones: it may take
        // them back.
        assert_eq!(headroom(at(0, 0), at(4, 40), Duration::from_millis(40)), Some(0.2));
        assert_eq!(headroom(at(0, 0), at(40, 40), Duration::from_millis(40)), Some(1.0));
        assert_eq!(headroom(at(5, 40), at(5, 40), Duration::ZERO), None, "no tick passed");
    }

    #[test]
    fn the_scale_drops_at_once_and_recovers_gradually() {
        assert_eq!(next_scale(1.0, 0.1), 0.1);
        assert_eq!(next_scale(0.1, 0.0), MIN_SCALE);
        // Idle again: a quarter of the way per interval, most of the way
        // back within a second (5 intervals).
        let mut s = 0.1;
        let mut steps = Vec::new();
        for _ in 0..5 {
            s = next_scale(s, 1.0);
            steps.push(s);
        }
        assert!((steps[0] - 0.325).abs() < 1e-9, "{steps:?}");
        assert!(steps.windows(2).all(|w| w[1] > w[0]));
        assert!(s > 0.75 && s < 1.0, "{steps:?}");
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
