//! Shadow (dark launch): a copy of live requests runs on the shadow executor
//! (its own low-priority threads, a small queue that drops when full), its
//! outputs are compared with the champion's and a
//! [`PredictionRecord`](crate::serving::records::PredictionRecord) goes to
//! the record sinks. A shadow never delays, fails or changes a client's reply.

pub mod compare;
pub mod stats;

pub use compare::compare;
pub use stats::ShadowStats;

use std::sync::Arc;

use modelgate_runtime::{InferOutput, RunError, Tensor};
use modelgate_telemetry::VersionStats;

use crate::serving::records::{
    OutputRecord, PredictionRecord, Record, RecordSinks, SCHEMA_VERSION, TensorValues,
};

/// A shadow copy in flight and what it will be compared with. The comparer
/// thread waits for its result, so the request path spends no task, timer or
/// wakeup of its own runtime on a shadow.
#[derive(Debug)]
pub struct ShadowOutcome {
    pub model: String,
    pub champion_version: u64,
    /// The role of the version that answered the client.
    pub champion_role: &'static str,
    pub shadow_version: u64,
    pub request_id: String,
    /// Hashed on the comparer thread; the raw key is never written.
    pub routing_key: Option<String>,
    pub champion_outputs: Arc<Vec<Tensor>>,
    pub champion_latency_us: u64,
    /// The request's inputs, when the model's `[records] inputs` asks for them.
    pub inputs: Option<Arc<[Tensor]>>,
    /// Elements kept per tensor in the record (`[records] max_values`).
    pub max_values: usize,
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
/// that neither the comparison nor building the record competes with the
/// critical path for CPU. Its queue is bounded; a full queue drops the
/// outcome and counts it as a drop of that shadow.
#[derive(Debug)]
pub struct Comparer {
    tx: crossbeam_channel::Sender<ShadowOutcome>,
}

impl Comparer {
    /// `replica` is written in every record.
    pub fn start(
        stats: Arc<ShadowStats>,
        records: Option<Arc<RecordSinks>>,
        replica: String,
        capacity: usize,
        budget: Option<Arc<modelgate_runtime::CpuBudget>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<ShadowOutcome>(capacity.max(1));
        let thread_stats = Arc::clone(&stats);
        std::thread::Builder::new().name("shadow-compare".into()).spawn(move || {
            modelgate_runtime::executor::make_background();
            while let Ok(mut o) = rx.recv() {
                // The shadow executor finishes copies in about the order they
                // were queued, so waiting on each in turn costs little; a
                // dropped sender means the copy never ran (shut down). Taken
                // out (a closed receiver left behind) so `o` stays whole for
                // the record.
                let pending = std::mem::replace(&mut o.result, tokio::sync::oneshot::channel().1);
                let Ok(result) = pending.blocking_recv() else { continue };
                let process = || {
                    if let (Ok(out), Some(w)) = (&result, &o.windows) {
                        w.scores.record(crate::serving::output_scores::score_iter(&out.outputs));
                    }
                    let (shadow_us, diffs, error) = match &result {
                        Ok(out) => {
                            let us = (out.queue_wait + out.run_time).as_micros() as u64;
                            (us, compare(&o.champion_outputs, &out.outputs), None)
                        }
                        Err(e) => (0, Vec::new(), Some(e.to_string())),
                    };
                    // Totals after the record is offered: whoever sees a count
                    // can flush the sinks and find the record.
                    if let Some(records) = &records {
                        records.offer(Record::Prediction(prediction(
                            &o,
                            &result,
                            shadow_us,
                            &diffs,
                            error.clone(),
                            &replica,
                        )));
                    }
                    if error.is_some() {
                        thread_stats.record_error(&o.model, o.shadow_version);
                    } else {
                        thread_stats.record(&o.model, o.shadow_version, shadow_us, &diffs);
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

/// The record of one shadow copy: both outputs (capped), how they differ.
fn prediction(
    o: &ShadowOutcome,
    result: &Result<InferOutput, RunError>,
    shadow_latency_us: u64,
    diffs: &[compare::OutputDiff],
    shadow_error: Option<String>,
    replica: &str,
) -> PredictionRecord {
    let shadow_outputs: &[Tensor] = result.as_ref().map_or(&[], |out| &out.outputs);
    let outputs = o
        .champion_outputs
        .iter()
        .map(|c| {
            let diff = diffs.iter().find(|d| d.name == c.name);
            OutputRecord {
                name: c.name.clone(),
                champion: TensorValues::of(c, o.max_values),
                shadow: shadow_outputs
                    .iter()
                    .find(|s| s.name == c.name)
                    .map(|s| TensorValues::of(s, o.max_values)),
                elements: diff.map_or(0, |d| d.elements as u64),
                max_abs_diff: diff.and_then(|d| d.max_abs_diff),
                mean_abs_diff: diff.and_then(|d| d.mean_abs_diff),
                agreement: diff.and_then(|d| d.agreement),
                champion_nan_inf: diff.map_or(0, |d| d.champion_nan_inf as u64),
                shadow_nan_inf: diff.map_or(0, |d| d.shadow_nan_inf as u64),
                mismatch: diff.and_then(|d| d.mismatch.clone()),
            }
        })
        .collect();
    PredictionRecord {
        schema: SCHEMA_VERSION,
        ts_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        request_id: o.request_id.clone(),
        model: o.model.clone(),
        replica: replica.to_string(),
        champion_version: o.champion_version,
        champion_role: o.champion_role.to_string(),
        shadow_version: o.shadow_version,
        shadow_role: modelgate_rollout::Role::Shadow.as_str().into(),
        routing_key_hash: o.routing_key.as_deref().map(routing_key_hash),
        champion_latency_us: o.champion_latency_us,
        shadow_latency_us,
        shadow_error,
        outputs,
        inputs: o.inputs.as_ref().map(|ins| ins.iter().map(|t| TensorValues::of(t, o.max_values)).collect()),
    }
}
