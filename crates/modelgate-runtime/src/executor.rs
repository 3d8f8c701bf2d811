//! The inference executor: a fixed set of OS threads that run every ORT call.
//!
//! Each model version has its own bounded [`VersionQueue`]. Submitting pushes
//! the job onto that queue (full → [`SubmitError::QueueFull`] at once, never a
//! wait) and hands the executor a ticket naming the queue. An executor thread
//! takes a ticket, pops a job from that version's queue and runs it on its own
//! session of that version (thread `i` uses session `i % sessions`). The ticket
//! channel holds at most one ticket per admitted job, so it is bounded by the
//! sum of the version queues' capacities. Per-version queues are also where
//! dynamic batching will gather requests of one version.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::budget::CpuBudget;
pub use crate::job::{InferJob, InferOutput, JobTrace, RunError, SPAN_TARGET, StopReason};
use crate::model::LoadedModel;
use crate::run_estimate::RunEstimate;
use crate::tensor::Tensor;
use crate::watchdog::RunStop;

/// A job could not be queued.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("queue of {capacity} requests is full")]
    QueueFull { capacity: usize },
    #[error("the executor has shut down")]
    Shutdown,
}

/// Upper bounds of the batch-size histogram's buckets (rows per run).
pub const BATCH_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Counters of one version queue, readable at any time.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
    pub expired: AtomicU64,
    pub abandoned: AtomicU64,
    /// ORT runs, and the rows they carried (a batch of requests is one run).
    pub runs: AtomicU64,
    pub run_rows: AtomicU64,
    /// Runs that carried at least one request of traffic (the gateway's own
    /// checks left out): Triton's `execution_count`.
    pub traffic_runs: AtomicU64,
    /// Runs by rows, cumulative-free: `run_rows_buckets[i]` counts runs with
    /// rows ≤ `BATCH_BUCKETS[i]` and more than the bucket before; the last
    /// slot counts larger runs.
    pub run_rows_buckets: [AtomicU64; 9],
    /// Batched runs that failed and were retried request by request.
    pub batch_retries: AtomicU64,
    /// Requests whose run was stopped, by [`StopReason::index`].
    pub stopped: [AtomicU64; 4],
    /// Runs done inline on the submitting thread ([`Executor::submit_or_run`]).
    pub inline_runs: AtomicU64,
    /// One-row requests of an inline-eligible version that went through the
    /// queue instead, by [`INLINE_MISS_REASONS`].
    pub inline_missed: [AtomicU64; 3],
}

/// Why an inline-eligible one-row request went through the queue: `slow`
/// (the version's run estimate is at or over its threshold, or nothing was
/// measured yet), `queued` (requests were queued ahead of it) or `busy` (no
/// ORT session was free).
pub const INLINE_MISS_REASONS: [&str; 3] = ["slow", "queued", "busy"];
const MISS_SLOW: usize = 0;
const MISS_QUEUED: usize = 1;
const MISS_BUSY: usize = 2;

impl QueueStats {
    fn record_run(&self, rows: usize, traffic: bool) {
        let rows = rows as u64;
        self.runs.fetch_add(1, Ordering::Relaxed);
        if traffic {
            self.traffic_runs.fetch_add(1, Ordering::Relaxed);
        }
        self.run_rows.fetch_add(rows, Ordering::Relaxed);
        let i = BATCH_BUCKETS.iter().position(|&b| rows <= b).unwrap_or(BATCH_BUCKETS.len());
        self.run_rows_buckets[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Dynamic batching of one version, the way Triton's dynamic batcher works:
/// requests queued for the version are stacked along the first dimension up
/// to `max_batch` rows, waiting at most `max_queue_delay` for more, run once
/// and split back per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Rows per run; 1 turns batching off.
    pub max_batch: usize,
    /// How long a partial batch waits for more requests (0: take what is queued).
    pub max_queue_delay: Duration,
}

impl Batching {
    pub const OFF: Batching = Batching { max_batch: 1, max_queue_delay: Duration::ZERO };
}

/// The bounded queue of one model version.
pub struct VersionQueue {
    model: Arc<LoadedModel>,
    jobs: ArrayQueue<InferJob>,
    stats: QueueStats,
    batching: Batching,
    /// A run longer than this is stopped (model.toml `max_run_ms`).
    max_run: Option<Duration>,
    /// One-row runs estimated shorter than this run inline on the caller's
    /// thread ([`Executor::submit_or_run`]); `None`: never.
    inline_below: Option<Duration>,
    /// Whether the model's one-row requests all carry the same work: rows
    /// of a fixed size and no control flow in the graph.
    fixed_rows: bool,
    /// The estimate of a one-row run that decides the inline path
    /// ([`RunEstimate`]: a decaying maximum that ignores a lone preempted run).
    run_estimate: RunEstimate,
}

impl std::fmt::Debug for VersionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionQueue")
            .field("model", &self.model)
            .field("len", &self.jobs.len())
            .field("capacity", &self.jobs.capacity())
            .finish()
    }
}

impl VersionQueue {
    pub fn new(model: Arc<LoadedModel>, capacity: usize) -> Arc<Self> {
        Self::with_batching(model, capacity, Batching::OFF)
    }

    /// A queue that batches as `batching` says, if the model allows it: every
    /// input and output must have a dynamic first dimension (else it runs
    /// requests one by one).
    pub fn with_batching(model: Arc<LoadedModel>, capacity: usize, batching: Batching) -> Arc<Self> {
        let batching =
            if model.signature().batchable() && batching.max_batch > 1 { batching } else { Batching::OFF };
        let fixed_rows = model.signature().fixed_row_size() && !model.has_control_flow();
        Arc::new(Self {
            model,
            jobs: ArrayQueue::new(capacity.max(1)),
            stats: QueueStats::default(),
            batching,
            max_run: None,
            inline_below: None,
            fixed_rows,
            run_estimate: RunEstimate::default(),
        })
    }

    /// A queue as [`Self::with_batching`] whose runs are stopped after
    /// `max_run` (none: only deadlines and cancellation stop them).
    pub fn with_limits(
        model: Arc<LoadedModel>,
        capacity: usize,
        batching: Batching,
        max_run: Option<Duration>,
    ) -> Arc<Self> {
        let mut queue = Self::with_batching(model, capacity, batching);
        if let Some(q) = Arc::get_mut(&mut queue) {
            q.max_run = max_run;
        }
        queue
    }

    /// Lets one-row requests run inline on the submitting thread while the
    /// version's one-row runs are estimated shorter than `below` (see
    /// [`Executor::submit_or_run`]). Only before the queue is shared.
    pub fn set_inline_below(self: &mut Arc<Self>, below: Option<Duration>) {
        if let Some(q) = Arc::get_mut(self) {
            q.inline_below = below.filter(|d| !d.is_zero());
        }
    }

    /// The inline threshold in effect.
    pub fn inline_below(&self) -> Option<Duration> {
        self.inline_below
    }

    /// The current estimate of a one-row run (a decaying maximum); `None`
    /// before one was measured.
    pub fn run_estimate(&self) -> Option<Duration> {
        self.run_estimate.get()
    }

    /// Folds one run's time into the estimate of a one-row run. A run of
    /// several rows (a batch) bounds a one-row run from above, so it counts
    /// only when it was under the threshold, where it can only lower the
    /// estimate. Without it, a version whose requests all went to the queue
    /// and were batched there would never be measured again and would stay
    /// off the inline path (seen on a saturated machine: ~12% of one-row
    /// requests queued for that reason alone).
    fn note_run(&self, rows: usize, took: Duration) {
        let Some(below) = self.inline_below else { return };
        if rows == 1 || took < below {
            self.run_estimate.note(took, below);
        }
    }

    /// Whether `job` may run inline: the feature is on for this version, the
    /// model's rows are fixed-size, the job is one row, the estimate is
    /// under the threshold and nothing is queued ahead of it (FIFO and
    /// batching keep their meaning). A job that could but may not now is
    /// counted by reason ([`INLINE_MISS_REASONS`]).
    fn inline_fits(&self, job: &InferJob) -> bool {
        let Some(below) = self.inline_below else { return false };
        if !self.fixed_rows || job.rows() != 1 {
            return false;
        }
        let miss = if !self.run_estimate.under(below) {
            MISS_SLOW
        } else if !self.jobs.is_empty() {
            MISS_QUEUED
        } else {
            return true;
        };
        self.stats.inline_missed[miss].fetch_add(1, Ordering::Relaxed);
        false
    }

    /// How long one run may take before it is stopped.
    pub fn max_run(&self) -> Option<Duration> {
        self.max_run
    }

    /// The batching in effect.
    pub fn batching(&self) -> Batching {
        self.batching
    }

    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.model
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.jobs.capacity()
    }

    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

/// Settings of one executor.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Thread name prefix, e.g. `infer` → `infer-0`, `infer-1`, ...
    pub name: String,
    pub threads: usize,
    /// Background threads run only on CPU the rest of the process leaves idle
    /// (see [`make_background`]): the shadow executor's.
    pub background: bool,
    /// CPU time the threads may use (see [`CpuBudget`]); every run is charged
    /// to it, and [`Executor::admits`] says whether more work fits.
    pub cpu_budget: Option<Arc<CpuBudget>>,
    /// Added to each thread's index to pick its session: the shadow executor's
    /// threads start after the critical ones, so with `threads + shadow
    /// threads` sessions per version they never share a session.
    pub slot_offset: usize,
}

/// A fixed pool of OS threads running inference.
pub struct Executor {
    tickets: crossbeam_channel::Sender<Arc<VersionQueue>>,
    threads: Vec<JoinHandle<()>>,
    /// Each thread's stop handle: how shutdown ends runs still going.
    stops: Vec<Arc<RunStop>>,
    size: usize,
    budget: Option<Arc<CpuBudget>>,
    /// The first session slot of this executor's threads.
    slot_offset: usize,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("threads", &self.size).finish()
    }
}

impl Executor {
    /// Starts `config.threads` threads (at least one).
    pub fn start(config: ExecutorConfig) -> std::io::Result<Self> {
        let size = config.threads.max(1);
        let (tx, rx) = crossbeam_channel::unbounded::<Arc<VersionQueue>>();
        let mut threads = Vec::with_capacity(size);
        let mut stops = Vec::with_capacity(size);
        for slot in 0..size {
            let rx = rx.clone();
            let background = config.background;
            let budget = config.cpu_budget.clone();
            let session_slot = slot + config.slot_offset;
            let stop = RunStop::new().map_err(std::io::Error::other)?;
            stops.push(Arc::clone(&stop));
            let handle =
                std::thread::Builder::new().name(format!("{}-{slot}", config.name)).spawn(move || {
                    if background {
                        make_background();
                    }
                    let mut runner = Runner { slot: session_slot, stop, pending: Vec::new() };
                    worker(&mut runner, rx, budget.as_deref())
                })?;
            threads.push(handle);
        }
        Ok(Self {
            tickets: tx,
            threads,
            stops,
            size,
            budget: config.cpu_budget,
            slot_offset: config.slot_offset,
        })
    }

    /// Whether the CPU budget (if any) has room for more work.
    pub fn admits(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| b.admits())
    }

    /// The CPU budget, if the threads have one.
    pub fn cpu_budget(&self) -> Option<&Arc<CpuBudget>> {
        self.budget.as_ref()
    }

    /// Number of threads: also how many sessions a version needs so that no
    /// two threads share one.
    pub fn threads(&self) -> usize {
        self.size
    }

    /// Queues `job` on `queue`; never waits.
    pub fn submit(&self, queue: &Arc<VersionQueue>, job: InferJob) -> Result<(), SubmitError> {
        if queue.jobs.push(job).is_err() {
            queue.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::QueueFull { capacity: queue.capacity() });
        }
        self.tickets.send(Arc::clone(queue)).map_err(|_| SubmitError::Shutdown)
    }

    /// Runs `job` at once on the calling thread when the version allows it
    /// and that is cheaper than the hand-over to an executor thread (the
    /// reply is then ready before this returns); else [`Self::submit`].
    ///
    /// The hand-over (queue, wake an executor thread, wake the caller back)
    /// costs tens of µs of CPU and two context switches: for a model whose
    /// run takes a few µs that is most of the request's cost. Inline runs
    /// are bounded so they can never hold the caller's thread (a tokio
    /// worker) for long: only one-row requests to a model whose rows are
    /// fixed-size and whose graph has no control flow (the same work every
    /// time: a `Loop` could run as long as its input says, and an inline run
    /// is not watched by `max_run_ms`), only while the version's
    /// one-row runs are estimated under its threshold ([`RunEstimate`]: a
    /// decaying maximum, so two slow runs close together send the next
    /// requests back to the executor), only
    /// when nothing is queued ahead, and only on a session no executor
    /// thread is using (never waits for one). Deadlines and cancellation
    /// are checked before the run as the executor checks them; a run this
    /// short is not watched.
    pub fn submit_or_run(&self, queue: &Arc<VersionQueue>, job: InferJob) -> Result<(), SubmitError> {
        if !queue.inline_fits(&job) {
            return self.submit(queue, job);
        }
        let slots = self.slot_offset..self.slot_offset + self.size;
        let Some(mut session) = queue.model.try_session(slots) else {
            queue.stats.inline_missed[MISS_BUSY].fetch_add(1, Ordering::Relaxed);
            return self.submit(queue, job);
        };
        let started = Instant::now();
        let Some(mut job) = admit_one(queue, job, started) else { return Ok(()) };
        if let Some(flag) = &job.started {
            flag.store(true, Ordering::Relaxed);
        }
        let spans = inference_span(&mut job, 1, session.slot());
        let entered = spans.as_ref().map(|(span, _)| span.enter());
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| session.run(&job.inputs, &job.outputs)))
            .unwrap_or_else(|panic| {
                Err(format!("panic inside inference: {}", crate::panic_message(panic.as_ref())))
            })
            .map_err(RunError::from_ort);
        drop(session);
        let run_time = started.elapsed();
        drop(entered);
        drop(spans);
        queue.note_run(1, run_time);
        queue.stats.record_run(1, job.traffic);
        queue.stats.inline_runs.fetch_add(1, Ordering::Relaxed);
        reply(queue, job, result, started, run_time);
        Ok(())
    }

    /// Stops accepting work, stops runs still going (ORT's terminate flag;
    /// what is still queued is answered at once) and joins the threads,
    /// waiting at most `SHUTDOWN_JOIN` for them: a run stuck inside one node
    /// cannot be stopped, and shutdown must not wait on it.
    pub fn shutdown(self) {
        let Self { tickets, threads, stops, .. } = self;
        drop(tickets);
        for stop in &stops {
            stop.shut_down();
        }
        join_within(threads, SHUTDOWN_JOIN);
    }
}

/// Makes the calling thread a background thread: on Linux it moves to
/// `SCHED_IDLE`, so it runs only when a core would otherwise idle and any
/// normal thread that wakes up preempts it at once. Nice 19 alone is not
/// enough for a p99 budget: under the EEVDF scheduler (Linux 6.6+) a running
/// nice-19 thread may keep the core until its slice ends, which delays a
/// critical thread's wakeup by up to a slice (~1.5 ms on two cores). Falls back
/// to nice 19 where `SCHED_IDLE` is refused, and logs when neither works.
pub fn make_background() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            tracing::warn!(error = ?e, "cannot move the thread to SCHED_IDLE; lowering its nice value instead");
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
                tracing::warn!(error = %e, "cannot lower the thread's priority");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!("background thread priority is only set on Linux");
}

/// Whether the calling thread is a background thread (`SCHED_IDLE` or nice
/// 19): for tests and diagnostics.
pub fn is_background() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};
        let idle = matches!(
            thread_schedule_policy(),
            Ok(ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))
        );
        idle || rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok() == Some(19)
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// How long [`Executor::shutdown`] waits for its threads.
pub const SHUTDOWN_JOIN: Duration = Duration::from_secs(3);

/// Joins `threads`, giving up (and leaving them detached) after `within`.
pub fn join_within(threads: Vec<JoinHandle<()>>, within: Duration) {
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
    let joiner = std::thread::Builder::new().name("join".into()).spawn(move || {
        for t in threads {
            let _ = t.join();
        }
        let _ = done_tx.send(());
    });
    if joiner.is_ok() && done_rx.recv_timeout(within).is_err() {
        tracing::warn!(
            seconds = within.as_secs_f64(),
            "inference threads still busy in ONNX Runtime after shutdown; not waiting for them"
        );
    }
}

/// One executor thread's own state.
struct Runner {
    /// The session slot this thread uses.
    slot: usize,
    stop: Arc<RunStop>,
    /// The jobs of the run in progress, while the watchdog does not hold
    /// them (kept to reuse its allocation).
    pending: Vec<InferJob>,
}

fn worker(
    runner: &mut Runner,
    tickets: crossbeam_channel::Receiver<Arc<VersionQueue>>,
    budget: Option<&CpuBudget>,
) {
    while let Ok(queue) = tickets.recv() {
        // Another thread may have taken this ticket's job already; a ticket is
        // a hint that the queue has work, not a claim on a particular job.
        let Some(job) = queue.jobs.pop() else { continue };
        let run = || {
            if queue.batching.max_batch <= 1 {
                run_jobs(runner, &queue, job, Vec::new());
            } else {
                run_batches(runner, &queue, job);
            }
        };
        match budget {
            Some(b) => b.metered(run),
            None => run(),
        }
    }
}

/// Gathers batches starting with `first` and runs them until no job is left
/// over. A job that would overflow a batch starts the next one.
fn run_batches(runner: &mut Runner, queue: &VersionQueue, first: InferJob) {
    let b = queue.batching;
    let mut next = Some(first);
    while let Some(first) = next.take() {
        let mut rows = first.rows();
        // The rest of the batch: no allocation when the first job is alone.
        let mut rest = Vec::new();
        let until = Instant::now() + b.max_queue_delay;
        'gather: loop {
            while rows < b.max_batch {
                match queue.jobs.pop() {
                    Some(j) if rows + j.rows() <= b.max_batch => {
                        rows += j.rows();
                        rest.push(j);
                    }
                    Some(j) => {
                        next = Some(j);
                        break 'gather;
                    }
                    None => break,
                }
            }
            let now = Instant::now();
            if rows >= b.max_batch || now >= until {
                break;
            }
            // Waiting for more (max_queue_delay > 0): a short sleep, not a spin.
            std::thread::sleep((until - now).min(Duration::from_micros(50)));
        }
        run_jobs(runner, queue, first, rest);
    }
}

impl InferJob {
    /// Rows of the job's first input (its batch size).
    pub fn rows(&self) -> usize {
        self.inputs.first().map_or(1, Tensor::rows).max(1)
    }
}

/// Drops jobs nobody waits for any more and answers those whose deadline
/// passed; returns the rest.
fn admit(queue: &VersionQueue, jobs: Vec<InferJob>, started: Instant) -> Vec<InferJob> {
    jobs.into_iter().filter_map(|job| admit_one(queue, job, started)).collect()
}

/// The job, unless nobody waits for it any more or its deadline passed.
fn admit_one(queue: &VersionQueue, job: InferJob, started: Instant) -> Option<InferJob> {
    if job.reply.is_closed() {
        // The client went away (cancelled, or its deadline fired in the handler).
        queue.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if job.deadline.is_some_and(|d| d <= started) {
        queue.stats.expired.fetch_add(1, Ordering::Relaxed);
        let waited = started.duration_since(job.enqueued);
        let _ = job.reply.send(Err(RunError::DeadlineExceeded { waited }));
        return None;
    }
    Some(job)
}

/// The inference span of one job (its queue wait ends here), and the job's
/// parent span, kept open until the run is over (a shadow's parent is owned
/// by the job alone).
fn inference_span(
    job: &mut InferJob,
    batch_rows: usize,
    slot: usize,
) -> Option<(tracing::Span, tracing::Span)> {
    job.trace.take().map(|t| {
        drop(t.queue);
        let span = tracing::info_span!(
            target: "modelgate::span",
            parent: &t.parent,
            "inference",
            batch_size = batch_rows as i64,
            requests_in_batch = tracing::field::Empty,
            thread = slot as i64,
        );
        (span, t.parent)
    })
}

/// Runs ORT under `runner`'s watch (the jobs it answers are in
/// `runner.pending`), turning a panic inside it into an error and a stop
/// into [`RunError::Stopped`] for each job, by what that job was waiting for.
fn watched_run(
    runner: &mut Runner,
    queue: &VersionQueue,
    inputs: &[Tensor],
    outputs: &[String],
) -> (Result<Vec<Tensor>, RunError>, Option<StopReason>) {
    let started = Instant::now();
    for job in &runner.pending {
        if let Some(flag) = &job.started {
            flag.store(true, Ordering::Relaxed);
        }
    }
    let slot = runner.slot;
    let options = runner.stop.options();
    let (result, stopped) = runner
        .stop
        .watch(queue.max_run, &mut runner.pending, || guarded_run(slot, queue, inputs, outputs, options));
    let result = match stopped {
        // Terminated: whatever ORT said, the reason is ours (a run that
        // finished just as the flag was set still answers its result).
        Some(reason) if result.is_err() => Err(RunError::Stopped { reason, ran: started.elapsed() }),
        _ => result.map_err(RunError::from_ort),
    };
    (result, stopped)
}

/// The error a stopped run gives `job`: the run's own limit or shutdown
/// if that stopped it, else what this job was waiting for.
fn stop_for(job: &InferJob, error: &RunError, now: Instant) -> RunError {
    match error {
        RunError::Stopped { reason: reason @ (StopReason::Deadline | StopReason::Cancelled), ran } => {
            let reason = if job.deadline.is_some_and(|d| d <= now) {
                StopReason::Deadline
            } else if job.reply.is_closed() {
                StopReason::Cancelled
            } else {
                *reason
            };
            RunError::Stopped { reason, ran: *ran }
        }
        other => other.clone(),
    }
}

/// Runs ORT, turning a panic inside it into an error.
fn guarded_run(
    slot: usize,
    queue: &VersionQueue,
    inputs: &[Tensor],
    outputs: &[String],
    options: &ort::session::RunOptions,
) -> Result<Vec<Tensor>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| queue.model.run_with(slot, inputs, outputs, Some(options))))
        .unwrap_or_else(|panic| {
            Err(format!("panic inside inference: {}", crate::panic_message(panic.as_ref())))
        })
}

fn reply(
    queue: &VersionQueue,
    job: InferJob,
    result: Result<Vec<Tensor>, RunError>,
    started: Instant,
    run_time: Duration,
) {
    let queue_wait = started.duration_since(job.enqueued);
    let reply = match result {
        Ok(outputs) => {
            if job.traffic {
                queue.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(InferOutput { outputs, queue_wait, run_time })
        }
        Err(e) => {
            if job.traffic {
                queue.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            let e = stop_for(&job, &e, Instant::now());
            if let RunError::Stopped { reason, .. } = &e {
                queue.stats.stopped[reason.index()].fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
    };
    let _ = job.reply.send(reply);
}

/// Runs one job on its own.
fn run_one(runner: &mut Runner, queue: &VersionQueue, mut job: InferJob, started: Instant) {
    let rows = job.rows();
    let spans = inference_span(&mut job, rows, runner.slot);
    let entered = spans.as_ref().map(|(span, _)| span.enter());
    // The watchdog holds the job while it runs; its inputs and outputs stay here.
    let inputs = Arc::clone(&job.inputs);
    let outputs = std::mem::take(&mut job.outputs);
    runner.pending.push(job);
    let (result, _) = watched_run(runner, queue, &inputs, &outputs);
    let Some(mut job) = runner.pending.pop() else { return };
    job.outputs = outputs;
    // The spans end before the reply, so they end inside the request's.
    drop(entered);
    drop(spans);
    let run_time = started.elapsed();
    queue.note_run(rows, run_time);
    queue.stats.record_run(rows, job.traffic);
    reply(queue, job, result, started, run_time);
}

/// Runs `jobs` (all of `queue`'s version): alone when there is one, else as
/// one batch. A batch that cannot be stacked, or that fails, is run request
/// by request, so an error lands only on the request that caused it.
fn run_jobs(runner: &mut Runner, queue: &VersionQueue, first: InferJob, rest: Vec<InferJob>) {
    let started = Instant::now();
    if rest.is_empty() {
        if let Some(job) = admit_one(queue, first, started) {
            run_one(runner, queue, job, started);
        }
        return;
    }
    let mut jobs = rest;
    jobs.insert(0, first);
    let mut jobs = admit(queue, jobs, started);
    if jobs.len() <= 1 {
        if let Some(job) = jobs.pop() {
            run_one(runner, queue, job, started);
        }
        return;
    }
    let Some(batch) = stack(queue, &jobs) else {
        for job in jobs {
            run_one(runner, queue, job, Instant::now());
        }
        return;
    };
    let rows: Vec<usize> = jobs.iter().map(InferJob::rows).collect();
    let total: usize = rows.iter().sum();
    let spans: Vec<_> = jobs.iter_mut().map(|j| inference_span(j, total, runner.slot)).collect();
    for (span, _) in spans.iter().flatten() {
        span.record("requests_in_batch", jobs.len() as i64);
    }
    // The watchdog holds the batch's jobs while it runs.
    let mut watched = std::mem::replace(&mut runner.pending, jobs);
    let (result, stopped) = watched_run(runner, queue, &batch.inputs, &batch.outputs);
    std::mem::swap(&mut runner.pending, &mut watched);
    let jobs = watched;
    let run_time = started.elapsed();
    drop(spans);
    let traffic = jobs.iter().any(|j| j.traffic);
    if let (Some(_), Err(error)) = (stopped, &result) {
        // Stopped: every job gets the stop, none is retried.
        queue.stats.record_run(total, traffic);
        for job in jobs {
            reply(queue, job, Err(error.clone()), started, run_time);
        }
        return;
    }
    let split = result.ok().and_then(|outputs| unstack(&outputs, &rows));
    match split {
        Some(per_job) => {
            queue.note_run(total, run_time);
            queue.stats.record_run(total, traffic);
            for (job, outputs) in jobs.into_iter().zip(per_job) {
                let wanted = select(outputs, &job.outputs);
                reply(queue, job, Ok(wanted), started, run_time);
            }
        }
        None => {
            queue.stats.batch_retries.fetch_add(1, Ordering::Relaxed);
            for job in jobs {
                run_one(runner, queue, job, Instant::now());
            }
        }
    }
}

/// A batch's stacked inputs and the outputs it asks for.
struct Stacked {
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
}

/// Stacks the jobs' inputs by name, in the model's input order. `None` when
/// they cannot be stacked (a non-batch dimension differs).
fn stack(queue: &VersionQueue, jobs: &[InferJob]) -> Option<Stacked> {
    let signature = queue.model.signature();
    let inputs = signature
        .inputs
        .iter()
        .map(|spec| {
            let parts: Vec<&Tensor> =
                jobs.iter().map(|j| j.inputs.iter().find(|t| t.name == spec.name)).collect::<Option<_>>()?;
            Tensor::concat_rows(&parts)
        })
        .collect::<Option<Vec<_>>>()?;
    // The same outputs for every job, or all of them (each job then gets
    // what it asked for).
    let outputs =
        if jobs.iter().all(|j| j.outputs == jobs[0].outputs) { jobs[0].outputs.clone() } else { Vec::new() };
    Some(Stacked { inputs, outputs })
}

/// Splits a batch's outputs back per job. `None` when an output's first
/// dimension is not the batch's rows.
fn unstack(outputs: &[Tensor], rows: &[usize]) -> Option<Vec<Vec<Tensor>>> {
    let mut per_job: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        for (i, piece) in out.split_rows(rows)?.into_iter().enumerate() {
            per_job[i].push(piece);
        }
    }
    Some(per_job)
}

/// The outputs a job asked for (all when it named none), in its order.
fn select(outputs: Vec<Tensor>, wanted: &[String]) -> Vec<Tensor> {
    if wanted.is_empty() {
        return outputs;
    }
    let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    wanted
        .iter()
        .filter_map(|name| outputs.iter_mut().find(|o| o.as_ref().is_some_and(|t| &t.name == name))?.take())
        .collect()
}
