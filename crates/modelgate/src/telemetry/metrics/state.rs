//! State metrics, read at scrape time: the [`StateSource`] the server
//! connects, the [`StateMetrics`] it fills for one scrape, and the collector
//! that encodes them (queues, version load state, rollout stage and weights,
//! shadow comparisons, batches, fleet).

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::labels::{ArmLabels, VersionLabels, VersionReasonLabels};

/// What the state collector reads at scrape time.
pub trait StateSource: Send + Sync {
    /// Writes the state metrics.
    fn collect(&self, out: &mut StateMetrics);
}

/// State metrics gathered for one scrape.
#[derive(Debug, Default)]
pub struct StateMetrics {
    pub queue_depth: Vec<(VersionLabels, i64)>,
    pub queue_rejected: Vec<(VersionLabels, u64)>,
    pub queue_expired: Vec<(VersionLabels, u64)>,
    pub runs_stopped: Vec<(VersionReasonLabels, u64)>,
    /// (model, version, state) = 1 for every version the repository knows.
    pub version_state: Vec<(VersionLabels, &'static str)>,
    pub weights: Vec<(ArmLabels, f64)>,
    pub rollout_stage: Vec<(String, String, i64)>,
    pub rollout_state: Vec<(String, &'static str)>,
    pub shadow_compared: Vec<(VersionLabels, u64)>,
    pub shadow_errors: Vec<(VersionLabels, u64)>,
    pub shadow_dropped: Vec<(VersionLabels, u64)>,
    /// (sink, outcome, count): what became of the records offered to each
    /// sink (written, dropped_full, dropped_failed, retried).
    pub shadow_records: Vec<(String, &'static str, u64)>,
    pub shadow_agreement: Vec<(VersionLabels, f64)>,
    pub shadow_mean_abs_diff: Vec<(VersionLabels, f64)>,
    pub psi: Vec<(VersionLabels, f64)>,
    pub importance_shift: Vec<(VersionLabels, f64)>,
    /// model → its p99 SLA in seconds (model.toml `[triggers] p99_sla_ms`).
    pub sla: Vec<(String, f64)>,
    /// Rows per ORT run (a dynamic batch is one run): sum, count and
    /// per-bucket (non-cumulative) counts over `BATCH_BUCKETS` and +Inf.
    pub batch_rows: Vec<(VersionLabels, u64, u64, Vec<u64>)>,
    pub batch_retries: Vec<(VersionLabels, u64)>,
    /// Runs done inline on a connection's thread (`--inline-run-us`).
    pub inline_runs: Vec<(VersionLabels, u64)>,
    /// Inline-eligible one-row requests that took the queue, by reason.
    pub inline_missed: Vec<(VersionReasonLabels, u64)>,
    /// Shadow CPU: (seconds used, budget in cores), when there is a budget.
    /// Shadow CPU seconds used, the budget's ceiling and what is in effect
    /// now, in cores.
    pub shadow_cpu: Option<(f64, f64, f64)>,
    /// Fleet mode: (etcd reachable, this replica leads, local rollbacks not yet written back).
    pub fleet: Option<(bool, bool, usize)>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug)]
pub(super) struct StateCollector {
    pub(super) source: Arc<Mutex<Option<Arc<dyn StateSource>>>>,
}

impl std::fmt::Debug for dyn StateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateSource")
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    model: String,
    version: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    sink: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    model: String,
    strategy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutStateLabels {
    model: String,
    state: String,
}

fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, f64)],
) -> Result<(), std::fmt::Error> {
    if values.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in values {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    if values.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn as_f64<L: Clone>(v: &[(L, i64)]) -> Vec<(L, f64)> {
    v.iter().map(|(l, x)| (l.clone(), *x as f64)).collect()
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(source) = self.source.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Ok(());
        };
        let mut s = StateMetrics::default();
        source.collect(&mut s);
        let e = &mut encoder;
        gauges(
            e,
            "modelgate_queue_depth",
            "Requests waiting in a version's queue.",
            &as_f64(&s.queue_depth),
        )?;
        counters(
            e,
            "modelgate_queue_rejected",
            "Requests answered RESOURCE_EXHAUSTED because the version's queue was full.",
            &s.queue_rejected,
        )?;
        counters(
            e,
            "modelgate_queue_expired",
            "Requests dropped unrun because their deadline passed in the queue.",
            &s.queue_expired,
        )?;
        counters(
            e,
            "modelgate_inference_runs_stopped",
            "Requests whose inference run was stopped before it finished, by reason (deadline: the client's passed while it ran; cancelled: the client went away; time_limit: the model's max_run_ms; shutdown)",
            &s.runs_stopped,
        )?;
        let states: Vec<(StateLabels, f64)> = s
            .version_state
            .iter()
            .map(|(l, st)| {
                (StateLabels { model: l.model.clone(), version: l.version.clone(), state: (*st).into() }, 1.0)
            })
            .collect();
        gauges(
            e,
            "modelgate_model_version_state",
            "1 for each version's load state (ready, failed).",
            &states,
        )?;
        gauges(
            e,
            "modelgate_rollout_weight_ratio",
            "Share of a model's traffic routed to each version (0 to 1).",
            &s.weights,
        )?;
        let stages: Vec<(StageLabels, f64)> = s
            .rollout_stage
            .iter()
            .map(|(m, st, v)| (StageLabels { model: m.clone(), strategy: st.clone() }, *v as f64))
            .collect();
        gauges(
            e,
            "modelgate_rollout_stage",
            "The live rollout's stage, numbered from 1 as `modelgate status` shows it (stage N of M).",
            &stages,
        )?;
        let rstates: Vec<(RolloutStateLabels, f64)> = s
            .rollout_state
            .iter()
            .map(|(m, st)| (RolloutStateLabels { model: m.clone(), state: (*st).into() }, 1.0))
            .collect();
        gauges(e, "modelgate_rollout_state", "1 for the state of each model's latest rollout.", &rstates)?;
        counters(
            e,
            "modelgate_shadow_comparisons",
            "Shadow copies compared with the champion.",
            &s.shadow_compared,
        )?;
        counters(e, "modelgate_shadow_errors", "Shadow copies that failed.", &s.shadow_errors)?;
        counters(
            e,
            "modelgate_shadow_dropped",
            "Shadow copies not run: the shadow queue was full or the shadow CPU budget was spent.",
            &s.shadow_dropped,
        )?;
        let records: Vec<(RecordLabels, u64)> = s
            .shadow_records
            .iter()
            .map(|(sink, outcome, n)| (RecordLabels { sink: sink.clone(), outcome: (*outcome).into() }, *n))
            .collect();
        counters(
            e,
            "modelgate_shadow_records",
            "Shadow prediction and outcome records per sink: written, dropped_full (the sink's queue was full), dropped_failed (its batch failed past the retries), retried (batch writes retried).",
            &records,
        )?;
        if let Some((connected, leader, pending)) = s.fleet {
            let m = e.encode_descriptor(
                "modelgate_fleet_store_connected",
                "1 while the fleet's etcd answers; 0: serving the last known state (fail static).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(connected)).encode(m)?;
            let m = e.encode_descriptor(
                "modelgate_fleet_leader",
                "1 on the replica that takes the fleet's once-only decisions.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(leader)).encode(m)?;
            let m = e.encode_descriptor(
                "modelgate_fleet_pending_rollbacks",
                "Rollbacks made here while etcd was unreachable, not yet written back.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(pending as i64).encode(m)?;
        }
        if let Some((used, cores, effective)) = s.shadow_cpu {
            let m = e.encode_descriptor(
                "modelgate_shadow_cpu_seconds",
                "CPU time spent on shadow copies, their comparison and records.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(used).encode(m)?;
            let m = e.encode_descriptor(
                "modelgate_shadow_cpu_budget_cores",
                "CPU the shadows may use at most, in cores (--shadow-cpu-budget).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(cores).encode(m)?;
            let m = e.encode_descriptor(
                "modelgate_shadow_cpu_budget_effective_cores",
                "CPU the shadows may use now, in cores: the budget scaled by the machine's idle share of CPU time over the last 200 ms (equal to the budget with --shadow-budget-fixed).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(effective).encode(m)?;
        }
        gauges(
            e,
            "modelgate_shadow_agreement_ratio",
            "Mean label agreement of a shadow with the champion (0 to 1).",
            &s.shadow_agreement,
        )?;
        gauges(
            e,
            "modelgate_shadow_mean_abs_diff",
            "Mean absolute difference of a shadow's numeric outputs from the champion's.",
            &s.shadow_mean_abs_diff,
        )?;
        if !s.batch_rows.is_empty() {
            let mut m = e.encode_descriptor(
                "modelgate_batch_size_rows",
                "Rows per ONNX Runtime run; requests stacked by the dynamic batcher run as one.",
                None,
                MetricType::Histogram,
            )?;
            for (labels, sum, count, per_bucket) in &s.batch_rows {
                let mut cumulative = 0;
                let mut buckets: Vec<(f64, u64)> = modelgate_runtime::BATCH_BUCKETS
                    .iter()
                    .zip(per_bucket)
                    .map(|(&le, &n)| {
                        cumulative += n;
                        (le as f64, cumulative)
                    })
                    .collect();
                buckets.push((f64::INFINITY, *count));
                m.encode_family(labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    *sum as f64,
                    *count,
                    &buckets,
                    None,
                )?;
            }
        }
        counters(
            e,
            "modelgate_batch_retries",
            "Batched runs that failed and were retried request by request.",
            &s.batch_retries,
        )?;
        counters(
            e,
            "modelgate_inline_runs",
            "Runs done inline on the connection's thread, without the hand-over to an inference thread (--inline-run-us); the rest of modelgate_batch_size_rows_count went through the queue.",
            &s.inline_runs,
        )?;
        counters(
            e,
            "modelgate_inline_skipped",
            "One-row requests of a version that runs inline which went through the queue instead, by reason: slow (its run estimate is at or over --inline-run-us, or not measured yet), queued (requests were queued ahead of it), busy (no ONNX Runtime session was free).",
            &s.inline_missed,
        )?;
        let sla: Vec<(ModelLabels, f64)> =
            s.sla.iter().map(|(m, v)| (ModelLabels { model: m.clone() }, *v)).collect();
        gauges(
            e,
            "modelgate_p99_sla_seconds",
            "A model's p99 latency SLA (model.toml [triggers] p99_sla_ms), for alert rules.",
            &sla,
        )?;
        gauges(
            e,
            "modelgate_prediction_shift_psi",
            "PSI of a candidate's or shadow's recent scores against the champion's.",
            &s.psi,
        )?;
        gauges(
            e,
            "modelgate_feature_importance_shift",
            "Total variation between a candidate's or shadow's permutation-importance profile and the champion's, on the same live rows (0 same reliance, 1 disjoint).",
            &s.importance_shift,
        )?;
        Ok(())
    }
}
