//! Prometheus metrics, served as text on `--metrics-listen` (`/metrics`).
//!
//! Names follow Prometheus conventions: a `modelgate_` prefix, base units
//! (seconds), `_total` on counters. Two kinds:
//!
//! - **events** counted where they happen: requests by model, version, role
//!   and gRPC status code, their latency histogram, NaN/Inf outputs,
//!   rollbacks by trigger, alerts, rollout decisions, outcomes;
//! - **state** read at scrape time by [`StateCollector`] from the live
//!   snapshot: queue depth and rejections, version load state, rollout stage
//!   and weights, shadow comparisons. Reading at scrape time means a version
//!   that is gone leaves no stale series behind.
//!
//! The hot path touches no label map: each (model, version) keeps handles to
//! its counters and histograms ([`VersionMetrics`]), resolved once per role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use modelgate_rollout::Role;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    pub role: String,
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ArmLabels {
    pub model: String,
    pub version: String,
    pub role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub model: String,
    pub trigger: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StopLabels {
    pub model: String,
    pub version: String,
    /// `deadline`, `cancelled`, `time_limit` or `shutdown`.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub model: String,
    pub action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub model: String,
    pub joined: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsReloadLabels {
    pub listener: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    pub listener: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every event metric, and the registry they are encoded from.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<ArmLabels>,
    nan_inf: Family<VersionLabels, Counter>,
    rollbacks: Family<TriggerLabels, Counter>,
    alerts: Family<TriggerLabels, Counter>,
    decisions: Family<ActionLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    tls_reloads: Family<TlsReloadLabels, Counter>,
    tls_not_after: Family<ListenerLabels, Gauge>,
    /// Passes of the model-repository watcher that panicked (and were
    /// survived: the watcher goes on).
    pub watcher_panics: Counter,
    connections_refused: Family<ListenerReasonLabels, Counter>,
    connections_closed: Family<ListenerReasonLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_limit: Family<ListenerLabels, Gauge>,
    bodies_refused: Family<ListenerReasonLabels, Counter>,
    versions: RwLock<HashMap<(String, u64), Arc<VersionMetrics>>>,
    collector: Arc<Mutex<Option<Arc<dyn StateSource>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const ROLES: [Role; 9] = [
    Role::Champion,
    Role::Canary,
    Role::Challenger,
    Role::Blue,
    Role::Green,
    Role::Control,
    Role::Treatment,
    Role::Shadow,
    Role::Pinned,
];

fn role_index(role: Role) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(ROLES.len() - 1)
}

/// One version's handles, so recording a request takes no lock and no
/// allocation after the first request of each role.
pub struct VersionMetrics {
    model: String,
    version: String,
    ok: [OnceLock<Counter>; 9],
    duration: [OnceLock<Histogram>; 9],
    nan_inf: Counter,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<ArmLabels>,
}

impl std::fmt::Debug for VersionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionMetrics").field("model", &self.model).field("version", &self.version).finish()
    }
}

impl VersionMetrics {
    fn arm(&self, role: Role) -> ArmLabels {
        ArmLabels {
            model: self.model.clone(),
            version: self.version.clone(),
            role: role.as_str().to_string(),
        }
    }

    /// A request this version answered with OK after `latency`.
    pub fn ok(&self, role: Role, latency: Duration, nan_inf: bool) {
        let i = role_index(role);
        self.ok[i]
            .get_or_init(|| {
                let a = self.arm(role);
                self.requests
                    .get_or_create(&RequestLabels {
                        model: a.model,
                        version: a.version,
                        role: a.role,
                        code: "OK".into(),
                    })
                    .clone()
            })
            .inc();
        self.duration[i]
            .get_or_init(|| self.durations.get_or_create(&self.arm(role)).clone())
            .observe(latency.as_secs_f64());
        if nan_inf {
            self.nan_inf.inc();
        }
    }

    /// A request routed to this version that failed with `code`.
    pub fn failed(&self, role: Role, code: tonic::Code) {
        let a = self.arm(role);
        self.requests
            .get_or_create(&RequestLabels {
                model: a.model,
                version: a.version,
                role: a.role,
                code: code_name(code).to_string(),
            })
            .inc();
    }
}

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
    pub runs_stopped: Vec<(StopLabels, u64)>,
    /// (model, version, state) = 1 for every version the repository knows.
    pub version_state: Vec<(VersionLabels, &'static str)>,
    pub weights: Vec<(ArmLabels, f64)>,
    pub rollout_stage: Vec<(String, String, i64)>,
    pub rollout_state: Vec<(String, &'static str)>,
    pub shadow_compared: Vec<(VersionLabels, u64)>,
    pub shadow_errors: Vec<(VersionLabels, u64)>,
    pub shadow_dropped: Vec<(VersionLabels, u64)>,
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
    /// Shadow CPU: (seconds used, budget in cores), when there is a budget.
    pub shadow_cpu: Option<(f64, f64)>,
    /// Fleet mode: (etcd reachable, this replica leads, local rollbacks not yet written back).
    pub fleet: Option<(bool, bool, usize)>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug)]
struct StateCollector {
    source: Arc<Mutex<Option<Arc<dyn StateSource>>>>,
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
        if let Some((used, cores)) = s.shadow_cpu {
            let m = e.encode_descriptor(
                "modelgate_shadow_cpu_seconds",
                "CPU time spent on shadow copies, their comparison and records.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(used).encode(m)?;
            let m = e.encode_descriptor(
                "modelgate_shadow_cpu_budget_cores",
                "CPU the shadows may use, in cores (--shadow-cpu-budget).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(cores).encode(m)?;
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "modelgate_requests",
            "Requests by model, version, role and gRPC status code",
            requests.clone(),
        );
        let duration: HistogramFamily<ArmLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "modelgate_request_duration_seconds",
            "Time from a request's submission to its answer (queue wait plus inference), successful requests",
            duration.clone(),
        );
        let nan_inf = Family::<VersionLabels, Counter>::default();
        registry.register(
            "modelgate_nan_inf_outputs",
            "Successful requests whose outputs held a NaN or an infinity",
            nan_inf.clone(),
        );
        let rollbacks = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "modelgate_rollbacks",
            "Rollbacks by trigger (nan_inf_rate, error_rate, p99_latency, or manual)",
            rollbacks.clone(),
        );
        let alerts = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "modelgate_alerts",
            "Soft-trigger alerts raised (psi, kpi_regression, latency_regression, error_regression)",
            alerts.clone(),
        );
        let decisions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "modelgate_rollout_events",
            "Rollout audit events by action (started, advanced, promoted, rolled_back, ...)",
            decisions.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "modelgate_outcomes",
            "Outcomes reported with RecordOutcome, by whether they joined a served request",
            outcomes.clone(),
        );
        let tls_reloads = Family::<TlsReloadLabels, Counter>::default();
        registry.register(
            "modelgate_tls_reloads",
            "TLS certificate reloads by listener and outcome (ok, or error: the old certificate kept serving)",
            tls_reloads.clone(),
        );
        let tls_not_after = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "modelgate_tls_cert_not_after_seconds",
            "The serving certificate's notAfter, unix seconds, by listener",
            tls_not_after.clone(),
        );
        let watcher_panics = Counter::default();
        registry.register(
            "modelgate_model_watcher_panics",
            "Passes of the model-repository watcher that panicked; the watcher goes on with the next pass (the log has the message)",
            watcher_panics.clone(),
        );
        let connections_refused = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "modelgate_connections_refused",
            "Connections refused at accept, by listener and reason (limit: over --max-connections, accepted and closed; out_of_files: accept failed for want of descriptors or memory, retried after a pause)",
            connections_refused.clone(),
        );
        let connections_closed = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "modelgate_connections_closed",
            "Connections closed before serving, by listener and reason (handshake_timeout: no TLS handshake and HTTP/2 preface within --handshake-timeout-seconds; bad_handshake)",
            connections_closed.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "modelgate_connections_open",
            "Connections holding a listener slot now, by listener",
            connections_open.clone(),
        );
        let connections_limit = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "modelgate_connections_limit",
            "The listener's connection cap in force (after fitting the open-file limit)",
            connections_limit.clone(),
        );
        let bodies_refused = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "modelgate_request_bodies_refused",
            "Requests ended while their body arrived, by listener and reason (connection_budget, listener_budget, body_timeout)",
            bodies_refused.clone(),
        );
        let collector = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(StateCollector { source: Arc::clone(&collector) }));
        Self {
            registry,
            requests,
            duration,
            nan_inf,
            rollbacks,
            alerts,
            decisions,
            outcomes,
            tls_reloads,
            tls_not_after,
            watcher_panics,
            connections_refused,
            connections_closed,
            connections_open,
            connections_limit,
            bodies_refused,
            versions: RwLock::new(HashMap::new()),
            collector,
        }
    }

    /// Connects the state read at scrape time.
    pub fn set_state_source(&self, source: Arc<dyn StateSource>) {
        *self.collector.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The handles of `model` `version`, created on first use.
    pub fn version(&self, model: &str, version: u64) -> Arc<VersionMetrics> {
        let key = (model.to_string(), version);
        if let Some(v) = self.versions.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Arc::clone(v);
        }
        let mut map = self.versions.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key).or_insert_with(|| {
            let labels = VersionLabels { model: model.to_string(), version: version.to_string() };
            Arc::new(VersionMetrics {
                model: model.to_string(),
                version: version.to_string(),
                ok: Default::default(),
                duration: Default::default(),
                nan_inf: self.nan_inf.get_or_create(&labels).clone(),
                requests: self.requests.clone(),
                durations: self.duration.clone(),
            })
        }))
    }

    /// A request that failed before a version was chosen. The model label is
    /// kept only for models the gateway serves, so a client cannot create
    /// series by sending made-up names.
    pub fn rejected(&self, known_model: Option<&str>, code: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels {
                model: known_model.unwrap_or("").to_string(),
                version: String::new(),
                role: String::new(),
                code: code_name(code).to_string(),
            })
            .inc();
    }

    pub fn rollback(&self, model: &str, trigger: &str) {
        self.rollbacks.get_or_create(&TriggerLabels { model: model.into(), trigger: trigger.into() }).inc();
    }

    pub fn alert(&self, model: &str, trigger: &str) {
        self.alerts.get_or_create(&TriggerLabels { model: model.into(), trigger: trigger.into() }).inc();
    }

    pub fn rollout_event(&self, model: &str, action: &str) {
        self.decisions.get_or_create(&ActionLabels { model: model.into(), action: action.into() }).inc();
    }

    pub fn outcome(&self, model: &str, joined: bool) {
        self.outcomes.get_or_create(&OutcomeLabels { model: model.into(), joined: joined.to_string() }).inc();
    }

    /// A TLS reload attempt on `listener`: `ok` or `error`.
    pub fn tls_reload(&self, listener: &str, outcome: &str) {
        self.tls_reloads
            .get_or_create(&TlsReloadLabels { listener: listener.into(), outcome: outcome.into() })
            .inc();
    }

    /// The notAfter of the certificate `listener` serves, unix seconds.
    pub fn tls_not_after(&self, listener: &str, unix_seconds: i64) {
        self.tls_not_after.get_or_create(&ListenerLabels { listener: listener.into() }).set(unix_seconds);
    }

    /// A connection refused at accept on `listener`.
    pub fn connection_refused(&self, listener: &str, reason: &str) {
        self.connections_refused
            .get_or_create(&ListenerReasonLabels { listener: listener.into(), reason: reason.into() })
            .inc();
    }

    /// A connection closed before it was served.
    pub fn connection_closed(&self, listener: &str, reason: &str) {
        self.connections_closed
            .get_or_create(&ListenerReasonLabels { listener: listener.into(), reason: reason.into() })
            .inc();
    }

    pub fn connection_opened(&self, listener: &str) {
        self.connections_open.get_or_create(&ListenerLabels { listener: listener.into() }).inc();
    }

    pub fn connection_ended(&self, listener: &str) {
        self.connections_open.get_or_create(&ListenerLabels { listener: listener.into() }).dec();
    }

    pub fn connection_limit(&self, listener: &str, limit: usize) {
        self.connections_limit
            .get_or_create(&ListenerLabels { listener: listener.into() })
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// A request ended while its body arrived: over a budget or too slow.
    pub fn request_body_refused(&self, listener: &str, reason: &str) {
        self.bodies_refused
            .get_or_create(&ListenerReasonLabels { listener: listener.into(), reason: reason.into() })
            .inc();
    }

    /// Everything, in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Serves `GET /metrics` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode()) }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(stop).await
}

/// gRPC's canonical name of a status code, e.g. `INVALID_ARGUMENT`.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        let v = m.version("iris", 3);
        v.ok(Role::Canary, Duration::from_micros(300), true);
        v.failed(Role::Canary, tonic::Code::ResourceExhausted);
        m.rejected(None, tonic::Code::NotFound);
        m.rollback("iris", "nan_inf_rate");
        m.tls_reload("admin", "error");
        m.tls_not_after("predict", 1_900_000_000);
        let text = m.encode();
        for want in [
            r#"modelgate_requests_total{model="iris",version="3",role="canary",code="OK"} 1"#,
            r#"modelgate_requests_total{model="iris",version="3",role="canary",code="RESOURCE_EXHAUSTED"} 1"#,
            r#"modelgate_requests_total{model="",version="",role="",code="NOT_FOUND"} 1"#,
            r#"modelgate_request_duration_seconds_bucket{model="iris",version="3",role="canary",le="0.0005"} 1"#,
            r#"modelgate_nan_inf_outputs_total{model="iris",version="3"} 1"#,
            r#"modelgate_rollbacks_total{model="iris",trigger="nan_inf_rate"} 1"#,
            r#"modelgate_tls_reloads_total{listener="admin",outcome="error"} 1"#,
            r#"modelgate_tls_cert_not_after_seconds{listener="predict"} 1900000000"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(Arc::ptr_eq(&m.version("iris", 3), &v), "handles are cached");
    }
}
