//! One inference request as it crosses from the request path to an
//! executor thread, and how it can end: the job, its outputs, why it
//! produced none, and why a run was stopped. The executor runs jobs; the
//! watchdog watches them; neither is needed to describe them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

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
    /// Whether the job is traffic: the gateway's own checks (feature
    /// importance) are not, and do not count as completed or failed.
    pub traffic: bool,
    /// Tracing: the span the job's work belongs under, and the queue-wait
    /// span (closed when a thread picks the job up). `None` when no one
    /// collects spans.
    pub trace: Option<JobTrace>,
    /// Set when a thread starts running the job, for a caller that stops
    /// waiting (its deadline) to say whether the request ran. `None`: no one
    /// asks (see [`InferJob::report_start`]).
    pub started: Option<Arc<AtomicBool>>,
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
        (
            Self {
                inputs,
                outputs,
                deadline,
                enqueued: Instant::now(),
                reply,
                trace: None,
                traffic: true,
                started: None,
            },
            rx,
        )
    }

    /// The same job, setting the returned flag when a thread starts running
    /// it (one allocation: only for callers that may stop waiting early).
    pub fn report_start(mut self) -> (Self, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        self.started = Some(Arc::clone(&flag));
        (self, flag)
    }

    /// Whether nobody waits for the job any more at `now`: its caller went
    /// away, or its deadline passed.
    pub fn abandoned(&self, now: Instant) -> bool {
        self.reply.is_closed() || self.deadline.is_some_and(|d| d <= now)
    }

    /// The same job, not counted as traffic (the gateway's own checks).
    pub fn internal(mut self) -> Self {
        self.traffic = false;
        self
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
    /// The run was terminated through ONNX Runtime's terminate flag.
    #[error("the run was stopped after {ran:?}: {reason}")]
    Stopped { reason: StopReason, ran: Duration },
    /// ONNX Runtime could not allocate what the run needed (a tensor sized by
    /// the request, most often).
    #[error("ONNX Runtime could not allocate memory for this request: {0}")]
    OutOfMemory(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

impl RunError {
    /// The error for a failed ORT run, by what ORT said.
    pub(crate) fn from_ort(message: String) -> Self {
        const OOM: [&str; 4] = ["Failed to allocate memory", "bad_alloc", "bad allocation", "out of memory"];
        if OOM.iter().any(|m| message.contains(m)) {
            Self::OutOfMemory(message)
        } else {
            Self::Inference(message)
        }
    }
}

/// Why a run was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The request's deadline passed while it ran.
    Deadline,
    /// The caller stopped waiting (cancelled, or its connection closed).
    Cancelled,
    /// The run took longer than the limit it was given.
    TimeLimit(Duration),
    /// The executor or warm-up owner is shutting down.
    Shutdown,
}

impl StopReason {
    /// Every reason's name, in [`Self::index`] order (metric labels).
    pub const NAMES: [&'static str; 4] = ["deadline", "cancelled", "time_limit", "shutdown"];

    /// The reason's slot in per-reason counters.
    pub fn index(self) -> usize {
        match self {
            Self::Deadline => 0,
            Self::Cancelled => 1,
            Self::TimeLimit(_) => 2,
            Self::Shutdown => 3,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deadline => write!(f, "the request's deadline passed"),
            Self::Cancelled => write!(f, "the client cancelled the request"),
            Self::TimeLimit(limit) => write!(f, "it ran longer than its limit of {} ms", limit.as_millis()),
            Self::Shutdown => write!(f, "the gateway is shutting down"),
        }
    }
}
