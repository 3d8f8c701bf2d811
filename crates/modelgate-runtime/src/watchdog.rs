//! Stopping ONNX Runtime runs that outlive their time.
//!
//! A run cannot be interrupted from Rust: the thread is inside ORT. What ORT
//! offers is a terminate flag on the run's `RunOptions`, checked between
//! nodes (and between a Loop's iterations), after which the run returns an
//! error. Every executor thread and every warm-up owns one [`RunStop`]: its
//! `RunOptions`, reused run after run, and what the current run is waiting
//! for. One watchdog thread looks at all of them every [`TICK`] and sets the
//! flag when
//!
//! - the run has taken longer than its limit (`max_run_ms`, or the warm-up
//!   limit): [`StopReason::TimeLimit`];
//! - every request in the run has stopped waiting for it — its deadline
//!   passed ([`StopReason::Deadline`]) or its caller went away
//!   ([`StopReason::Cancelled`]);
//! - its owner is shutting down ([`StopReason::Shutdown`]).
//!
//! A run stuck inside a single node (one huge convolution) still ends only
//! when that node does: ORT checks the flag between nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ort::session::RunOptions;

use crate::job::{InferJob, StopReason};

/// How often the watchdog looks: the precision of every stop.
pub const TICK: Duration = Duration::from_millis(10);

/// The stop handle of one runner (an executor thread, or a warm-up).
pub struct RunStop {
    options: RunOptions,
    state: Mutex<RunState>,
}

impl std::fmt::Debug for RunStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStop").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct RunState {
    running: bool,
    /// When the current run must be over, and that limit's length.
    limit: Option<(Instant, Duration)>,
    /// The requests the current run answers (empty for a warm-up).
    jobs: Vec<InferJob>,
    /// Set by the watchdog when it terminated the current run.
    stopped: Option<StopReason>,
    shutting_down: bool,
}

impl RunStop {
    /// A stop handle, watched from now on (until it is dropped).
    pub fn new() -> Result<Arc<Self>, String> {
        let options =
            RunOptions::new().map_err(|e| format!("cannot create ONNX Runtime run options: {e}"))?;
        let stop = Arc::new(Self { options, state: Mutex::new(RunState::default()) });
        watchdog().add(&stop);
        Ok(stop)
    }

    /// The run options every run of this runner must use.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        // The state holds no invariant a panic could break half-way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `run` (which must use [`Self::options`]) while the watchdog
    /// watches it: `jobs` are moved in for the run's length (so the watchdog
    /// sees their deadlines and whether anyone still waits) and moved back
    /// before this returns. Returns `run`'s result and, if the run was
    /// terminated, why.
    pub fn watch<T>(
        &self,
        limit: Option<Duration>,
        jobs: &mut Vec<InferJob>,
        run: impl FnOnce() -> T,
    ) -> (T, Option<StopReason>) {
        let started = Instant::now();
        {
            let mut s = self.lock();
            std::mem::swap(&mut s.jobs, jobs);
            s.running = true;
            s.stopped = None;
            s.limit = limit.map(|l| (started + l, l));
            if s.shutting_down {
                s.stopped = Some(StopReason::Shutdown);
                let _ = self.options.terminate();
            }
        }
        let out = run();
        let stopped = {
            let mut s = self.lock();
            s.running = false;
            s.limit = None;
            std::mem::swap(&mut s.jobs, jobs);
            let stopped = s.stopped.take();
            if stopped.is_some() && !s.shutting_down {
                let _ = self.options.unterminate();
            }
            stopped
        };
        (out, stopped)
    }

    /// Stops the current run, and every later one at once: the owner is
    /// going away and must not wait on ORT.
    pub fn shut_down(&self) {
        let mut s = self.lock();
        s.shutting_down = true;
        if s.running && s.stopped.is_none() {
            s.stopped = Some(StopReason::Shutdown);
        }
        let _ = self.options.terminate();
    }

    /// The watchdog's look at this runner.
    fn check(&self, now: Instant) {
        let mut s = self.lock();
        if !s.running || s.stopped.is_some() {
            return;
        }
        let reason = if s.shutting_down {
            Some(StopReason::Shutdown)
        } else if let Some((at, len)) = s.limit
            && now >= at
        {
            Some(StopReason::TimeLimit(len))
        } else if !s.jobs.is_empty() && s.jobs.iter().all(|j| j.abandoned(now)) {
            let deadline = s.jobs.iter().any(|j| j.deadline.is_some_and(|d| d <= now));
            Some(if deadline { StopReason::Deadline } else { StopReason::Cancelled })
        } else {
            None
        };
        if let Some(reason) = reason {
            s.stopped = Some(reason);
            STOPS.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.options.terminate() {
                tracing::error!(error = %e, %reason, "cannot terminate an ONNX Runtime run");
            }
        }
    }
}

/// Runs the watchdog terminated, since the process started (all owners).
pub fn stops_total() -> u64 {
    STOPS.load(Ordering::Relaxed)
}

static STOPS: AtomicU64 = AtomicU64::new(0);

struct Watchdog {
    watched: Mutex<Vec<Weak<RunStop>>>,
}

impl Watchdog {
    fn add(&self, stop: &Arc<RunStop>) {
        self.watched.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(stop));
    }

    fn run(&self) {
        loop {
            std::thread::sleep(TICK);
            let live: Vec<Arc<RunStop>> = {
                let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
                watched.retain(|w| w.strong_count() > 0);
                watched.iter().filter_map(Weak::upgrade).collect()
            };
            let now = Instant::now();
            for stop in live {
                stop.check(now);
            }
        }
    }
}

/// The process's one watchdog, started on first use.
fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog { watched: Mutex::new(Vec::new()) }));
        // NOTE: if the thread cannot start, runs are simply never stopped
        // early; say so loudly rather than fail every load and request.
        if let Err(e) = std::thread::Builder::new().name("run-watchdog".into()).spawn(|| dog.run()) {
            tracing::error!(error = %e, "cannot start the run watchdog; runs will not be stopped at their limits");
        }
        dog
    })
}
