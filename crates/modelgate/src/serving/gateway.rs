//! The request path: one internal request type for every protocol, the model
//! table swapped atomically, validation, admission, and the executor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use modelgate_registry::{ModelEntry, ReadyVersion, VersionState};
use modelgate_runtime::{Executor, InferJob, InferOutput, RunError, StopReason, Tensor, VersionQueue};

use modelgate_telemetry::VersionStats;

use crate::serving::outcome::{OutcomeLimits, OutcomeStore, Served};

use crate::serving::shadow::{Comparer, ShadowOutcome, ShadowSink, ShadowStats, routing_key_hash};

use crate::serving::gateway_error::GatewayError;

pub use modelgate_rollout::Role;
use modelgate_rollout::RoutingTable;

/// Longest request id accepted; ids are echoed and logged.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// A request, decoded from whichever protocol it came in on.
#[derive(Debug)]
pub struct InferRequest {
    pub model: String,
    /// A pinned version; `None` lets the gateway route.
    pub version: Option<i64>,
    /// The sticky key; `None` falls back to the request id.
    pub routing_key: Option<String>,
    pub request_id: String,
    pub inputs: Vec<Tensor>,
    /// Outputs wanted; empty means all.
    pub outputs: Vec<String>,
    pub deadline: Option<Instant>,
}

/// A served request.
#[derive(Debug)]
pub struct InferResponse {
    pub model: String,
    pub version: u64,
    pub role: Role,
    pub request_id: String,
    pub outputs: Vec<Tensor>,
}

/// A version that receives copies of live requests.
#[derive(Debug, Clone)]
pub struct ShadowTarget {
    pub version: Arc<ReadyVersion>,
    /// The shadow's own small queue on the shadow executor (same sessions'
    /// model, separate admission), so shadow copies never take critical slots.
    pub queue: Arc<VersionQueue>,
    /// Share of requests mirrored, in basis points (10000 = all).
    pub fraction_bp: u32,
    /// Copies not run (queue full, CPU budget spent): counted lock-free.
    pub dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// A model as the hot path sees it: its versions and who serves.
#[derive(Debug)]
pub struct ModelRoute {
    pub entry: ModelEntry,
    /// The version that serves unrouted traffic; `None` when no version is READY.
    pub champion: Option<Arc<ReadyVersion>>,
    /// The rollout's routing table; `None`: everything goes to the champion.
    pub routing: Option<RoutingTable>,
    /// `routing`'s arms resolved to loaded versions, in the table's order.
    pub arms: Vec<Arc<ReadyVersion>>,
    pub rollout_id: Option<String>,
    pub shadows: Vec<ShadowTarget>,
    /// Each READY version's sliding window of latencies, errors and NaN/Inf
    /// outputs, kept across snapshot rebuilds.
    pub windows: HashMap<u64, Arc<VersionStats>>,
    /// Each READY version's Prometheus handles.
    pub metrics: HashMap<u64, Arc<crate::telemetry::metrics::VersionMetrics>>,
}

/// What the controller decides for a model: its champion and, while a
/// rollout runs, the routing table (arms and shadows) derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub champion: u64,
    pub routing: Option<RoutingTable>,
    pub rollout_id: Option<String>,
}

impl std::ops::Deref for ModelRoute {
    type Target = ModelEntry;

    fn deref(&self) -> &ModelEntry {
        &self.entry
    }
}

impl ModelRoute {
    pub fn champion(&self) -> Option<&Arc<ReadyVersion>> {
        self.champion.as_ref()
    }
}

/// The immutable snapshot the hot path reads.
#[derive(Debug, Default)]
pub struct ModelTable {
    pub models: HashMap<String, Arc<ModelRoute>>,
}

impl ModelTable {
    /// Builds a snapshot; `champions` names each model's champion version. A
    /// model without one (new, or its champion is gone) gets its highest READY
    /// version: a version dropped in later never takes traffic by itself.
    pub fn new(entries: Vec<ModelEntry>, champions: &HashMap<String, u64>) -> Self {
        let models = entries
            .into_iter()
            .map(|m| {
                let chosen = champions
                    .get(&m.name)
                    .and_then(|v| m.ready().find(|r| r.version == *v))
                    .or_else(|| m.latest_ready())
                    .cloned();
                (
                    m.name.clone(),
                    Arc::new(ModelRoute {
                        entry: m,
                        champion: chosen,
                        routing: None,
                        arms: Vec::new(),
                        rollout_id: None,
                        shadows: Vec::new(),
                        windows: HashMap::new(),
                        metrics: HashMap::new(),
                    }),
                )
            })
            .collect();
        Self { models }
    }

    /// The champion version of every model that has one.
    pub fn champions(&self) -> HashMap<String, u64> {
        self.models.iter().filter_map(|(n, m)| m.champion().map(|c| (n.clone(), c.version))).collect()
    }

    fn names(&self) -> String {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names.is_empty() { "none".into() } else { names.join(", ") }
    }
}

/// The gateway: routes, validates and runs requests.
pub struct Gateway {
    table: ArcSwap<ModelTable>,
    executor: Executor,
    shadow: ShadowRunner,
    publish_lock: std::sync::Mutex<()>,
    /// The controller's policy per model; applied on every publish.
    policies: std::sync::Mutex<HashMap<String, Policy>>,
    outcomes: Arc<OutcomeStore>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Recent inputs per model while a rollout runs, sampled for the
    /// feature-importance check (`importance.rs`): the requests' own tensors,
    /// shared, not copied.
    input_samples: std::sync::Mutex<HashMap<String, std::collections::VecDeque<Arc<[Tensor]>>>>,
    input_counter: std::sync::atomic::AtomicU64,
    max_response_bytes: usize,
}

/// What a client may make the gateway hold, fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest response, in bytes (`--max-response-bytes`).
    pub max_response_bytes: usize,
    pub outcomes: OutcomeLimits,
}

impl Default for Limits {
    /// The flags' defaults: 64 MiB responses, 32 MiB of request ids for
    /// outcome joins.
    fn default() -> Self {
        Self { max_response_bytes: 64 << 20, outcomes: OutcomeLimits::with_join_bytes(32 << 20) }
    }
}

/// One request in this many is sampled for the feature-importance check,
/// and this many are kept per model.
const INPUT_SAMPLE_EVERY: u64 = 8;
const INPUT_SAMPLE_KEEP: usize = 128;
/// A sampled request larger than this keeps only its first rows (so a
/// model's samples stay under ~0.5 MiB).
const INPUT_SAMPLE_BYTES: usize = 4096;

/// The shadow side: its executor, where records go, and running totals.
pub struct ShadowRunner {
    pub executor: Executor,
    pub queue_capacity: usize,
    pub sink: Option<Arc<dyn ShadowSink>>,
    pub stats: Arc<ShadowStats>,
    pub comparer: Arc<Comparer>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("executor", &self.executor).finish()
    }
}

impl Gateway {
    pub fn new(table: ModelTable, executor: Executor, shadow: ShadowRunner, limits: Limits) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            executor,
            shadow,
            publish_lock: std::sync::Mutex::new(()),
            policies: std::sync::Mutex::new(HashMap::new()),
            outcomes: Arc::new(OutcomeStore::new(limits.outcomes)),
            metrics: Arc::new(crate::telemetry::metrics::Metrics::new()),
            input_samples: std::sync::Mutex::new(HashMap::new()),
            input_counter: std::sync::atomic::AtomicU64::new(0),
            max_response_bytes: limits.max_response_bytes,
        }
    }

    /// Largest response sent, in bytes (`--max-response-bytes`).
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// RESOURCE_EXHAUSTED when a response of `bytes` would be over
    /// `--max-response-bytes`.
    pub fn check_response_size(&self, model: &str, version: u64, bytes: usize) -> Result<(), GatewayError> {
        if bytes > self.max_response_bytes {
            return Err(GatewayError::ResponseTooLarge {
                model: model.to_string(),
                version,
                bytes,
                limit: self.max_response_bytes,
            });
        }
        Ok(())
    }

    /// Keeps one request in [`INPUT_SAMPLE_EVERY`] of a model in a rollout,
    /// if it is one 2-D input (a tabular model's rows).
    fn sample_inputs(&self, model: &str, inputs: &Arc<[Tensor]>) {
        if inputs.len() != 1
            || inputs[0].shape.len() != 2
            || !self
                .input_counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .is_multiple_of(INPUT_SAMPLE_EVERY)
        {
            return;
        }
        let t = &inputs[0];
        let width = t.shape[1].max(1) as usize;
        let rows = t.shape[0].max(0) as usize;
        // A big request is not kept whole: its first rows are copied out.
        let sample = if rows * width * 4 <= INPUT_SAMPLE_BYTES {
            Arc::clone(inputs)
        } else {
            let data = t.data.owned();
            let modelgate_runtime::TensorData::Float32(v) = &*data else { return };
            let keep = (INPUT_SAMPLE_BYTES / 4 / width).max(1).min(rows);
            let Some(head) = v.get(..keep * width) else { return };
            Arc::from(vec![Tensor::new(
                t.name.clone(),
                vec![keep as i64, width as i64],
                modelgate_runtime::TensorData::Float32(head.to_vec()),
            )])
        };
        let mut samples = self.input_samples.lock().unwrap_or_else(|p| p.into_inner());
        let kept = match samples.get_mut(model) {
            Some(kept) => kept,
            None => samples.entry(model.to_string()).or_default(),
        };
        if kept.len() >= INPUT_SAMPLE_KEEP {
            kept.pop_front();
        }
        kept.push_back(sample);
    }

    /// The model's recently sampled inputs, oldest first.
    pub fn input_samples(&self, model: &str) -> Vec<Arc<[Tensor]>> {
        let samples = self.input_samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.get(model).map(|k| k.iter().cloned().collect()).unwrap_or_default()
    }

    /// Forgets a model's sampled inputs (its rollout is over).
    pub fn forget_input_samples(&self, model: &str) {
        self.input_samples.lock().unwrap_or_else(|p| p.into_inner()).remove(model);
    }

    /// Runs `inputs` on one READY version of `model` through its queue,
    /// outside any routing, metrics or windows: the controller's own checks.
    pub async fn run_version(
        &self,
        model: &str,
        version: u64,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, GatewayError> {
        let route = self.model(model)?;
        let ready = match route.versions.get(&version).map(|e| &e.state) {
            Some(VersionState::Ready(r)) => Arc::clone(r),
            _ => {
                return Err(GatewayError::VersionNotFound {
                    model: model.to_string(),
                    version: version as i64,
                    known: describe_versions(&route),
                });
            }
        };
        let (job, rx) = InferJob::new(inputs.into(), Vec::new(), None);
        self.executor
            .submit(&ready.queue, job.internal())
            .map_err(|e| GatewayError::from_submit(model, version, e))?;
        match rx.await.map_err(|_| GatewayError::ShuttingDown)? {
            Ok(out) => Ok(out.outputs),
            Err(e) => Err(GatewayError::from_run(model, version, e)),
        }
    }

    /// The Prometheus metrics every part of the gateway records into.
    pub fn metrics(&self) -> &Arc<crate::telemetry::metrics::Metrics> {
        &self.metrics
    }

    /// The current snapshot of models.
    pub fn table(&self) -> Arc<ModelTable> {
        self.table.load_full()
    }

    pub fn outcomes(&self) -> &Arc<OutcomeStore> {
        &self.outcomes
    }

    /// Joins an outcome to the version that served the request: by request
    /// id if it is remembered, else by re-hashing the routing key with the
    /// live routing table. Returns who served it, or `None` (counted) when
    /// it cannot be joined.
    ///
    /// Outcomes are stored only while the model has a live rollout (running
    /// or paused): only a rollout's analysis and gates read them. Without
    /// one the call still succeeds, as an A/B client reporting after an
    /// experiment ended expects, but answers `joined: false` and is counted
    /// (`modelgate_outcomes_total{joined="false"}`), so a stream of
    /// outcomes, or of made-up metric names, costs no memory.
    #[allow(clippy::too_many_arguments)]
    pub fn record_outcome(
        &self,
        model: &str,
        request_id: &str,
        routing_key: &str,
        metric: &str,
        value: f64,
        at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Option<(u64, Role)>, GatewayError> {
        use crate::serving::outcome::{KEEP_MS, MAX_FUTURE_MS, MAX_METRIC_BYTES};
        let bad = |m: String| GatewayError::BadRequest(crate::serving::convert::BadRequest(m));
        if metric.is_empty() {
            return Err(bad("metric is not set".into()));
        }
        if metric.len() > MAX_METRIC_BYTES {
            return Err(bad(format!(
                "metric name is {} bytes, at most {MAX_METRIC_BYTES} allowed",
                metric.len()
            )));
        }
        if !value.is_finite() {
            return Err(bad(format!("value must be a finite number, got {value}")));
        }
        if request_id.is_empty() && routing_key.is_empty() {
            return Err(bad("give the request_id or the routing_key the outcome belongs to".into()));
        }
        if request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(bad(format!(
                "request_id is {} bytes, at most {} allowed",
                request_id.len(),
                MAX_REQUEST_ID_BYTES
            )));
        }
        let at_ms = at_ms.unwrap_or(now_ms);
        if at_ms < now_ms.saturating_sub(KEEP_MS) || at_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
            return Err(bad(format!(
                "timestamp_ms {at_ms} is outside the last 24 hours (server time {now_ms}, up to {} s ahead allowed); 0 means now",
                MAX_FUTURE_MS / 1000
            )));
        }
        let route = self.model(model)?;
        if route.rollout_id.is_none() {
            self.metrics.outcome(model, false);
            self.outcomes.count_unjoined();
            return Ok(None);
        }
        let joined = self
            .outcomes
            .lookup(model, request_id)
            .filter(|_| !request_id.is_empty())
            .map(|s| (s.version, s.role))
            .or_else(|| {
                if routing_key.is_empty() {
                    return None;
                }
                match &route.routing {
                    Some(t) => {
                        let arm = t.route_key(routing_key.as_bytes());
                        Some((arm.version, arm.role))
                    }
                    None => route.champion().map(|c| (c.version, Role::Champion)),
                }
            });
        match joined {
            Some((version, role)) => {
                self.outcomes.record(model, version, metric, value, at_ms, now_ms)?;
                self.metrics.outcome(model, true);
                Ok(Some((version, role)))
            }
            None => {
                self.metrics.outcome(model, false);
                self.outcomes.count_unjoined();
                Ok(None)
            }
        }
    }

    /// The shadows' CPU budget, if they have one.
    pub fn shadow_cpu_budget(&self) -> Option<&Arc<modelgate_runtime::CpuBudget>> {
        self.shadow.executor.cpu_budget()
    }

    pub fn shadow_stats(&self) -> &Arc<ShadowStats> {
        &self.shadow.stats
    }

    pub fn shadow_sink(&self) -> Option<&Arc<dyn ShadowSink>> {
        self.shadow.sink.as_ref()
    }

    /// Sets (or clears) the controller's policy for `model` and publishes a
    /// new snapshot in one swap.
    pub fn set_policy(&self, model: &str, policy: Option<Policy>) {
        let _guard = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut policies = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        match policy {
            Some(p) => policies.insert(model.to_string(), p),
            None => policies.remove(model),
        };
        let current = self.table.load_full();
        let entries = current.models.values().map(|m| m.entry.clone()).collect();
        self.table.store(Arc::new(self.build_table(entries, &current.champions(), &policies)));
    }

    fn build_table(
        &self,
        entries: Vec<ModelEntry>,
        champions: &HashMap<String, u64>,
        policies: &HashMap<String, Policy>,
    ) -> ModelTable {
        let mut champions = champions.clone();
        for (name, p) in policies {
            champions.insert(name.clone(), p.champion);
        }
        let old = self.table.load();
        let mut table = ModelTable::new(entries, &champions);
        for (name, route) in table.models.iter_mut() {
            if let Some(r) = Arc::get_mut(route) {
                // Windows follow the loaded model, not the snapshot.
                let previous = old.models.get(name);
                for ready in r.entry.ready() {
                    let kept = previous
                        .and_then(|p| p.windows.get(&ready.version).map(|w| (p, w)))
                        .filter(|(p, _)| {
                            p.ready()
                                .any(|x| x.version == ready.version && Arc::ptr_eq(x.model(), ready.model()))
                        })
                        .map(|(_, w)| Arc::clone(w));
                    let (interval, intervals) = r.entry.config.triggers.window();
                    r.windows.insert(
                        ready.version,
                        kept.unwrap_or_else(|| Arc::new(VersionStats::new(interval, intervals))),
                    );
                    r.metrics.insert(ready.version, self.metrics.version(name, ready.version));
                }
            }
            let Some(policy) = policies.get(name) else { continue };
            let Some(r) = Arc::get_mut(route) else { continue };
            r.rollout_id = policy.rollout_id.clone();
            let Some(routing) = policy.routing.clone() else { continue };
            let find = |v: u64| r.entry.ready().find(|x| x.version == v).cloned();
            let mut arms = Vec::with_capacity(routing.arms().len());
            for arm in routing.arms() {
                match find(arm.version).or_else(|| r.champion.clone()) {
                    Some(v) => {
                        if v.version != arm.version {
                            tracing::warn!(model = %name, version = arm.version, arm = %arm.name, "arm's version is not READY; its traffic goes to the champion");
                        }
                        arms.push(v)
                    }
                    None => break,
                }
            }
            if arms.len() != routing.arms().len() {
                continue;
            }
            let mut shadows = Vec::new();
            for target in routing.shadows() {
                let Some(ready) = find(target.version) else {
                    tracing::warn!(model = %name, version = target.version, "shadow version is not READY; not mirrored");
                    continue;
                };
                // Keep the shadow queue (and its counters) across rebuilds.
                let queue = old
                    .models
                    .get(name)
                    .and_then(|m| m.shadows.iter().find(|s| s.version.version == target.version))
                    .filter(|s| Arc::ptr_eq(s.queue.model(), ready.model()))
                    .map(|s| Arc::clone(&s.queue))
                    .unwrap_or_else(|| {
                        VersionQueue::with_limits(
                            Arc::clone(ready.model()),
                            self.shadow.queue_capacity,
                            ready.queue.batching(),
                            ready.queue.max_run(),
                        )
                    });
                let dropped = self.shadow.stats.drop_counter(name, target.version);
                shadows.push(ShadowTarget {
                    version: ready,
                    queue,
                    fraction_bp: target.fraction_bp,
                    dropped,
                });
            }
            r.arms = arms;
            r.routing = Some(routing);
            r.shadows = shadows;
        }
        table
    }

    /// Rebuilds the snapshot from the repository's entries, keeping every
    /// model's champion.
    pub fn publish_entries(&self, entries: Vec<ModelEntry>) {
        // Serialise publishers so two rebuilds cannot interleave and lose one.
        let _guard = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let champions = self.table.load().champions();
        let policies = self.policies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.table.store(Arc::new(self.build_table(entries, &champions, &policies)));
    }

    /// `NOT_FOUND` (naming the models served) unless `name` is served; lets
    /// a handler answer the most basic mistake before decoding tensors.
    pub fn check_model(&self, name: &str) -> Result<(), GatewayError> {
        self.model(name).map(|_| ())
    }

    fn model(&self, name: &str) -> Result<Arc<ModelRoute>, GatewayError> {
        let table = self.table.load();
        table
            .models
            .get(name)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound { model: name.to_string(), available: table.names() })
    }

    /// Picks the version that serves a request: the pinned one, or the arm
    /// the routing key's bucket falls in, or the champion.
    fn route(
        model: &ModelRoute,
        pinned: Option<i64>,
        key: &[u8],
    ) -> Result<(Arc<ReadyVersion>, Role), GatewayError> {
        let champion = model.champion();
        let Some(v) = pinned else {
            if let Some(routing) = &model.routing {
                let arm = routing.route_key(key);
                if let Some(i) = routing.arms().iter().position(|a| std::ptr::eq(a, arm))
                    && let Some(version) = model.arms.get(i)
                {
                    return Ok((Arc::clone(version), arm.role));
                }
            }
            return champion
                .map(|c| (Arc::clone(c), Role::Champion))
                .ok_or_else(|| GatewayError::NoReadyVersion { model: model.name.clone() });
        };
        let not_found = || GatewayError::VersionNotFound {
            model: model.name.clone(),
            version: v,
            known: describe_versions(model),
        };
        let entry = u64::try_from(v).ok().and_then(|v| model.versions.get(&v)).ok_or_else(not_found)?;
        match &entry.state {
            VersionState::Ready(r) => {
                let role = if champion.is_some_and(|c| c.version == r.version) {
                    Role::Champion
                } else {
                    model
                        .routing
                        .as_ref()
                        .and_then(|t| {
                            t.arms().iter().find(|a| a.version == r.version && a.basis_points() > 0)
                        })
                        .map_or(Role::Pinned, |a| a.role)
                };
                Ok((Arc::clone(r), role))
            }
            VersionState::Failed(reason) => Err(GatewayError::VersionFailed {
                model: model.name.clone(),
                version: entry.version,
                reason: reason.clone(),
            }),
        }
    }

    /// Serves one request. Validation happens before queueing, so a bad
    /// request never occupies a queue slot or an executor thread.
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse, GatewayError> {
        let model = self.model(&req.model).inspect_err(|e| self.metrics.rejected(None, e.code()))?;
        let key = req.routing_key.as_deref().unwrap_or(&req.request_id).as_bytes();
        let (version, role) = Self::route(&model, req.version, key)
            .inspect_err(|e| self.metrics.rejected(Some(&model.name), e.code()))?;
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("model", model.name.as_str());
            // Signed: OpenTelemetry has no unsigned integers (u64 would be a string).
            span.record("version", version.version as i64);
            span.record("role", role.as_str());
            span.record("request_id", req.request_id.as_str());
            if let Some(id) = &model.rollout_id {
                span.record("rollout.id", id.as_str());
            }
            if let Some(routing) = &model.routing {
                span.record("bucket", i64::from(modelgate_rollout::bucket(routing.salt(), key)));
            }
            if let Some(k) = &req.routing_key {
                // Never the key itself: it may identify a user.
                span.record("routing_key.hash", routing_key_hash(k).as_str());
            }
        }
        let metrics = model.metrics.get(&version.version).cloned();
        let result = self.infer_on(&model, version, role, req, metrics.as_deref()).await;
        if let Err(e) = &result {
            if let Some(m) = &metrics {
                m.failed(role, e.code());
            }
            // Requests log at DEBUG; a failure of the model itself is WARN.
            if e.code() == tonic::Code::Internal {
                tracing::warn!(model = %model.name, role = role.as_str(), error = %e, "inference failed");
            } else {
                tracing::debug!(model = %model.name, role = role.as_str(), error = %e, "request refused");
            }
        }
        result
    }

    /// Serves a request on the version routing chose.
    async fn infer_on(
        &self,
        model: &Arc<ModelRoute>,
        version: Arc<ReadyVersion>,
        role: Role,
        mut req: InferRequest,
        metrics: Option<&crate::telemetry::metrics::VersionMetrics>,
    ) -> Result<InferResponse, GatewayError> {
        let signature = version.model().signature();
        check_request(signature, &mut req.inputs, &req.outputs).map_err(|error| GatewayError::Input {
            model: model.name.clone(),
            version: version.version,
            error,
        })?;

        let submitted = Instant::now();
        let inputs: Arc<[Tensor]> = req.inputs.into();
        if model.rollout_id.is_some() {
            self.sample_inputs(&model.name, &inputs);
        }
        let shadows = self.offer_shadows(model, &inputs, &req.request_id);
        let (job, rx) = InferJob::new(inputs, req.outputs, req.deadline);
        let job = job.traced(tracing::Span::current());
        // With a deadline, the handler may stop waiting before the executor
        // answers; it then says whether the request had started to run (the
        // run itself is stopped by the executor's watchdog).
        let (job, started) = match req.deadline {
            Some(_) => {
                let (job, flag) = job.report_start();
                (job, Some(flag))
            }
            None => (job, None),
        };
        self.executor
            .submit(&version.queue, job)
            .map_err(|e| GatewayError::from_submit(&model.name, version.version, e))?;
        let wait = async { rx.await.map_err(|_| GatewayError::ShuttingDown) };
        let result = match req.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), wait).await {
                Ok(r) => r?,
                Err(_) if started.as_ref().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) => {
                    return Err(GatewayError::DeadlineExceededRunning {
                        model: model.name.clone(),
                        version: version.version,
                        after: submitted.elapsed(),
                    });
                }
                Err(_) => Err(RunError::DeadlineExceeded { waited: submitted.elapsed() }),
            },
            None => wait.await?,
        };
        // A reply over the limit is refused before it is encoded: the outputs
        // exist already (ONNX Runtime made them), but no response copy does.
        if let Ok(out) = &result {
            self.check_response_size(&model.name, version.version, response_bytes(&out.outputs))?;
        }
        let latency = submitted.elapsed();
        let nan_inf = matches!(&result, Ok(out) if has_nan_inf(&out.outputs));
        if let (Ok(_), Some(m)) = (&result, metrics) {
            m.ok(role, latency, nan_inf);
        }
        if let Some(stats) = model.windows.get(&version.version) {
            match &result {
                Ok(out) => {
                    stats.window.record(latency, false, nan_inf);
                    stats.scores.record(scores(&out.outputs));
                }
                // A run stopped at the model's own time limit is the
                // version's failure; one the client stopped waiting for is not.
                Err(RunError::Inference(_) | RunError::Stopped { reason: StopReason::TimeLimit(_), .. }) => {
                    stats.window.record(latency, true, false)
                }
                Err(
                    RunError::DeadlineExceeded { .. } | RunError::Stopped { .. } | RunError::OutOfMemory(_),
                ) => {}
            }
        }
        let output = result.map_err(|e| GatewayError::from_run(&model.name, version.version, e))?;
        // Remembered for joining outcomes by request id only while a rollout
        // splits traffic between arms: outside one (or in a shadow-only
        // rollout, where every reply is the champion's) there is nothing to
        // compare them with, and a gateway that never splits traffic never
        // reserves the memory (`OutcomeStore`).
        if model.rollout_id.is_some() && model.routing.as_ref().is_some_and(|t| t.arms().len() > 1) {
            self.outcomes.served(&model.name, &req.request_id, Served { version: version.version, role });
        }
        if !shadows.is_empty() {
            self.compare_shadows(
                model,
                version.version,
                &req.request_id,
                req.routing_key.as_deref(),
                &output,
                shadows,
            );
        }
        tracing::debug!(
            model = %model.name,
            version = version.version,
            role = role.as_str(),
            request_id = %req.request_id,
            queue_us = output.queue_wait.as_micros() as u64,
            run_us = output.run_time.as_micros() as u64,
            "served"
        );
        Ok(InferResponse {
            model: model.name.clone(),
            version: version.version,
            role,
            request_id: req.request_id,
            outputs: output.outputs,
        })
    }
}

/// A shadow copy in flight.
struct PendingShadow {
    version: u64,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    rx: tokio::sync::oneshot::Receiver<Result<InferOutput, RunError>>,
}

impl Gateway {
    /// Offers the request to every shadow of the model: never waits, and a
    /// full shadow queue only drops the copy (counted).
    fn offer_shadows(
        &self,
        model: &ModelRoute,
        inputs: &Arc<[Tensor]>,
        request_id: &str,
    ) -> Vec<PendingShadow> {
        let mut pending = Vec::new();
        let salt = model.routing.as_ref().map_or(0, RoutingTable::salt);
        for target in &model.shadows {
            // Sampled by request id, with a seed apart from the arms' hash, so
            // which requests are mirrored is independent of who is in which arm.
            if !modelgate_rollout::shadow_sampled(salt, request_id.as_bytes(), target.fraction_bp) {
                continue;
            }
            // Over the CPU budget: skip the copy (sampling by budget) rather
            // than queue work the shadow threads may not spend.
            if !self.shadow.executor.admits() {
                target.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            let (mut job, rx) = InferJob::new(Arc::clone(inputs), Vec::new(), None);
            let request = tracing::Span::current();
            if !request.is_disabled() {
                // Its own trace, linked to the request's: the shadow is off the
                // request's critical path and may finish after the reply.
                let span = tracing::info_span!(
                    target: "modelgate::span",
                    parent: None,
                    "shadow",
                    model = %model.name,
                    version = target.version.version as i64,
                    role = "shadow",
                );
                span.follows_from(&request);
                job = job.traced(span);
            }
            match self.shadow.executor.submit(&target.queue, job) {
                Ok(()) => pending.push(PendingShadow {
                    version: target.version.version,
                    dropped: Arc::clone(&target.dropped),
                    rx,
                }),
                Err(_) => {
                    target.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        pending
    }

    /// Compares the shadows' outputs with the champion's off the request path.
    fn compare_shadows(
        &self,
        model: &ModelRoute,
        champion_version: u64,
        request_id: &str,
        routing_key: Option<&str>,
        champion: &InferOutput,
        shadows: Vec<PendingShadow>,
    ) {
        let champion_outputs = Arc::new(champion.outputs.clone());
        let champion_latency_us = (champion.queue_wait + champion.run_time).as_micros() as u64;
        // Only handing over happens here: the comparer's background thread
        // waits for each shadow, compares and writes.
        for s in shadows {
            self.shadow.comparer.offer(ShadowOutcome {
                model: model.name.clone(),
                champion_version,
                shadow_version: s.version,
                request_id: request_id.to_string(),
                routing_key: routing_key.map(str::to_string),
                champion_outputs: Arc::clone(&champion_outputs),
                champion_latency_us,
                result: s.rx,
                windows: model.windows.get(&s.version).map(Arc::clone),
                dropped: s.dropped,
            });
        }
    }
}

pub use crate::serving::output_scores::scores;

/// What `outputs` take in a response: their elements in the raw layout
/// (strings with their 4-byte length) plus each tensor's name and shape. A
/// typed Predict response can be larger still; its handler checks the exact
/// encoded size too.
pub fn response_bytes(outputs: &[Tensor]) -> usize {
    outputs
        .iter()
        .map(|t| {
            let data = match &t.data {
                modelgate_runtime::TensorData::String(v) => v.iter().map(|s| s.len() + 4).sum(),
                modelgate_runtime::TensorData::Raw { bytes, .. } => bytes.len(),
                d => d.len() * d.dtype().element_size().unwrap_or(1),
            };
            data + t.name.len() + t.shape.len() * 10 + 16
        })
        .sum()
}

/// Whether any floating-point output holds a NaN or an infinity.
fn has_nan_inf(outputs: &[Tensor]) -> bool {
    outputs.iter().any(|t| match &t.data {
        modelgate_runtime::TensorData::Float32(v) => v.iter().any(|x| !x.is_finite()),
        modelgate_runtime::TensorData::Float64(v) => v.iter().any(|x| !x.is_finite()),
        _ => false,
    })
}

fn describe_versions(model: &ModelEntry) -> String {
    if model.versions.is_empty() {
        return "none".into();
    }
    model
        .versions
        .values()
        .map(|v| match v.state {
            VersionState::Ready(_) => format!("{} (READY)", v.version),
            VersionState::Failed(_) => format!("{} (FAILED)", v.version),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Gateway {
    /// Whether a version serves traffic now (champion, an arm with weight, or a shadow).
    pub fn in_use(&self, model: &str, version: u64) -> bool {
        let table = self.table.load();
        let Some(m) = table.models.get(model) else { return false };
        m.champion().is_some_and(|c| c.version == version)
            || m.routing.as_ref().is_some_and(|t| t.versions().contains(&version))
    }
}

/// The checks a decoded request passes against the version's signature
/// before it is queued. An unnamed single input binds to the model's only
/// input, so simple clients need not know its name. Pure: the fuzz targets
/// (see [`crate::hostile`]) call exactly this.
pub fn check_request(
    signature: &modelgate_runtime::Signature,
    inputs: &mut [Tensor],
    outputs: &[String],
) -> Result<(), modelgate_runtime::InputError> {
    if let [only] = inputs
        && only.name.is_empty()
        && let [spec] = signature.inputs.as_slice()
    {
        only.name = spec.name.clone();
    }
    signature.check_inputs(inputs)?;
    signature.check_outputs(outputs)
}
