//! Shadow (dark launch): a copy of live requests runs on the shadow executor
//! (its own low-priority threads, a small queue that drops when full), its
//! outputs are compared with the champion's and the record goes to the sink.
//! A shadow never delays, fails or changes a client's reply.

pub mod compare;
pub mod sink;
pub mod stats;

pub use compare::compare;
pub use sink::{FileSink, ShadowRecord, ShadowSink};
pub use stats::ShadowStats;

use std::sync::Arc;

use modelgate_runtime::{InferOutput, RunError, Tensor};
use modelgate_telemetry::VersionStats;

/// A shadow copy in flight and what it will be compared with. The comparer
/// thread waits for its result, so the request path spends no task, timer or
/// wakeup of its own runtime on a shadow.
#[derive(Debug)]
pub struct ShadowOutcome {
    pub model: String,
    pub champion_version: u64,
    pub shadow_version: u64,
    pub request_id: String,
    /// Hashed on the comparer thread; the raw key is never written.
    pub routing_key: Option<String>,
    pub champion_outputs: Arc<Vec<Tensor>>,
    pub champion_latency_us: u64,
    pub result: tokio::sync::oneshot::Receiver<Result<InferOutput, RunError>>,
    /// The shadow version's windows: its scores feed the same
    /// distribution-shift check as a candidate's.
    pub windows: Option<Arc<VersionStats>>,
    /// Counted here if the comparer's queue is full.
    pub dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// The first 8 bytes of SHA-256 of a routing key, hex: lets records be joined
/// per user without storing who the user is.
pub fn routing_key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..8])
}

/// Compares outcomes and writes records on its own lowest-priority thread, so
/// that neither the comparison nor the JSON encoding competes with the
/// critical path for CPU. Its queue is bounded; a full queue drops the
/// outcome and counts it as a drop of that shadow.
#[derive(Debug)]
pub struct Comparer {
    tx: crossbeam_channel::Sender<ShadowOutcome>,
}

impl Comparer {
    pub fn start(
        stats: Arc<ShadowStats>,
        sink: Option<Arc<dyn ShadowSink>>,
        capacity: usize,
        budget: Option<Arc<modelgate_runtime::CpuBudget>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<ShadowOutcome>(capacity.max(1));
        let thread_stats = Arc::clone(&stats);
        std::thread::Builder::new().name("shadow-compare".into()).spawn(move || {
            modelgate_runtime::executor::make_background();
            while let Ok(o) = rx.recv() {
                // The shadow executor finishes copies in about the order they
                // were queued, so waiting on each in turn costs little; a
                // dropped sender means the copy never ran (shut down).
                let Ok(result) = o.result.blocking_recv() else { continue };
                let process = || {
                    if let (Ok(out), Some(w)) = (&result, &o.windows) {
                        w.scores.record(crate::serving::output_scores::scores(&out.outputs));
                    }
                    let ts_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let (shadow_us, outputs, error) = match result {
                        Ok(out) => {
                            let us = (out.queue_wait + out.run_time).as_micros() as u64;
                            (us, compare(&o.champion_outputs, &out.outputs), None)
                        }
                        Err(e) => (0, Vec::new(), Some(e.to_string())),
                    };
                    // Totals after the record is offered: whoever sees a count
                    // can flush the sink and find the record.
                    let totals = (o.model.clone(), o.shadow_version, shadow_us, error.is_some());
                    let diffs = outputs.clone();
                    if let Some(sink) = &sink {
                        sink.offer(ShadowRecord {
                            ts_ms,
                            model: o.model,
                            champion_version: o.champion_version,
                            shadow_version: o.shadow_version,
                            request_id: o.request_id,
                            routing_key_hash: o.routing_key.as_deref().map(routing_key_hash),
                            champion_latency_us: o.champion_latency_us,
                            shadow_latency_us: shadow_us,
                            shadow_error: error,
                            outputs,
                        });
                    }
                    let (model, version, us, failed) = totals;
                    if failed {
                        thread_stats.record_error(&model, version);
                    } else {
                        thread_stats.record(&model, version, us, &diffs);
                    }
                };
                match &budget {
                    Some(b) => b.metered(process),
                    None => process(),
                }
            }
        })?;
        Ok(Self { tx })
    }

    pub fn offer(&self, outcome: ShadowOutcome) {
        if let Err(e) = self.tx.try_send(outcome) {
            e.into_inner().dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
