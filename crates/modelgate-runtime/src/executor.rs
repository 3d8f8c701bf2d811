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
use tokio::sync::oneshot;

use crate::model::LoadedModel;
use crate::tensor::Tensor;

/// One inference request, validated and ready to run.
pub struct InferJob {
    /// Shared, so a shadow copy of a request costs a reference count, not a copy.
    pub inputs: Arc<[Tensor]>,
    /// Outputs wanted; empty means all.
    pub outputs: Vec<String>,
    /// When the client stops waiting; a job still queued then is not run.
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<InferOutput, RunError>>,
    /// Tracing: the span the job's work belongs under, and the queue-wait
    /// span (closed when a thread picks the job up). `None` when no one
    /// collects spans.
    pub trace: Option<JobTrace>,
}

/// The spans a job carries across to the executor thread.
#[derive(Debug)]
pub struct JobTrace {
    pub parent: tracing::Span,
    pub queue: tracing::Span,
}

/// Target of the spans exported as traces (kept out of the log output).
pub const SPAN_TARGET: &str = "modelgate::span";

impl JobTrace {
    /// Spans under `parent`, or `None` when `parent` is not recorded.
    pub fn under(parent: tracing::Span) -> Option<Self> {
        if parent.is_disabled() {
            return None;
        }
        let queue = tracing::info_span!(target: "modelgate::span", parent: &parent, "queue");
        Some(Self { parent, queue })
    }
}

impl InferJob {
    pub fn new(
        inputs: Arc<[Tensor]>,
        outputs: Vec<String>,
        deadline: Option<Instant>,
    ) -> (Self, oneshot::Receiver<Result<InferOutput, RunError>>) {
        let (reply, rx) = oneshot::channel();
        (Self { inputs, outputs, deadline, enqueued: Instant::now(), reply, trace: None }, rx)
    }

    /// The same job, traced under `parent`.
    pub fn traced(mut self, parent: tracing::Span) -> Self {
        self.trace = JobTrace::under(parent);
        self
    }
}

/// A finished inference.
#[derive(Debug)]
pub struct InferOutput {
    pub outputs: Vec<Tensor>,
    /// Time between submission and the start of the run.
    pub queue_wait: Duration,
    /// Time ORT took.
    pub run_time: Duration,
}

/// Why a queued job produced no outputs.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error("deadline exceeded after {waited:?} in the queue; the request was not run")]
    DeadlineExceeded { waited: Duration },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A job could not be queued.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("queue of {capacity} requests is full")]
    QueueFull { capacity: usize },
    #[error("the executor has shut down")]
    Shutdown,
}

/// Counters of one version queue, readable at any time.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
    pub expired: AtomicU64,
    pub abandoned: AtomicU64,
}

/// The bounded queue of one model version.
pub struct VersionQueue {
    model: Arc<LoadedModel>,
    jobs: ArrayQueue<InferJob>,
    stats: QueueStats,
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
        Arc::new(Self { model, jobs: ArrayQueue::new(capacity.max(1)), stats: QueueStats::default() })
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
    /// Nice value for the threads (Linux: 19 is the lowest priority); `None`
    /// leaves them at the process's. The shadow executor runs at 19 so that it
    /// only gets the CPU the critical path leaves.
    pub niceness: Option<i32>,
    /// Added to each thread's index to pick its session: the shadow executor's
    /// threads start after the critical ones, so with `threads + shadow
    /// threads` sessions per version they never share a session.
    pub slot_offset: usize,
}

/// A fixed pool of OS threads running inference.
pub struct Executor {
    tickets: crossbeam_channel::Sender<Arc<VersionQueue>>,
    threads: Vec<JoinHandle<()>>,
    size: usize,
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
        for slot in 0..size {
            let rx = rx.clone();
            let niceness = config.niceness;
            let session_slot = slot + config.slot_offset;
            let handle =
                std::thread::Builder::new().name(format!("{}-{slot}", config.name)).spawn(move || {
                    if let Some(nice) = niceness {
                        set_niceness(nice);
                    }
                    worker(session_slot, rx)
                })?;
            threads.push(handle);
        }
        Ok(Self { tickets: tx, threads, size })
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

    /// Stops accepting work, lets the threads finish what is queued, and joins them.
    pub fn shutdown(self) {
        let Self { tickets, threads, .. } = self;
        drop(tickets);
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Lowers this thread's priority (Linux: a thread id is a pid for setpriority).
pub fn set_niceness(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(nice, error = %e, "cannot lower the thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!(nice, "thread priority is only set on Linux");
}

/// This thread's nice value (for tests and diagnostics).
pub fn current_niceness() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

fn worker(slot: usize, tickets: crossbeam_channel::Receiver<Arc<VersionQueue>>) {
    while let Ok(queue) = tickets.recv() {
        // Another thread may have taken this ticket's job already; a ticket is
        // a hint that the queue has work, not a claim on a particular job.
        let Some(job) = queue.jobs.pop() else { continue };
        run_job(slot, &queue, job);
    }
}

fn run_job(slot: usize, queue: &VersionQueue, mut job: InferJob) {
    let started = Instant::now();
    // The queue wait ends here; the run gets its own span.
    let span = job.trace.take().map(|t| {
        drop(t.queue);
        let rows = job.inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1);
        tracing::info_span!(
            target: "modelgate::span",
            parent: &t.parent,
            "inference",
            batch_size = rows,
            thread = slot,
        )
    });
    let _entered = span.as_ref().map(tracing::Span::enter);
    let queue_wait = started.duration_since(job.enqueued);
    if job.reply.is_closed() {
        // The client went away (cancelled, or its deadline fired in the handler).
        queue.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if job.deadline.is_some_and(|d| d <= started) {
        queue.stats.expired.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(Err(RunError::DeadlineExceeded { waited: queue_wait }));
        return;
    }
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| queue.model.run(slot, &job.inputs, &job.outputs)))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(format!("panic inside inference: {msg}"))
            });
    let run_time = started.elapsed();
    let reply = match result {
        Ok(outputs) => {
            queue.stats.completed.fetch_add(1, Ordering::Relaxed);
            Ok(InferOutput { outputs, queue_wait, run_time })
        }
        Err(e) => {
            queue.stats.failed.fetch_add(1, Ordering::Relaxed);
            Err(RunError::Inference(e))
        }
    };
    let _ = job.reply.send(reply);
}
