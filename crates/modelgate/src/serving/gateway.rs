//! The request path: [`Gateway::infer`] reads the model table's snapshot
//! (one atomic load, no lock), routes, checks the inputs against the served
//! version's signature, offers shadow copies, runs the request on the
//! version's bounded queue and records what happened. Read it top-down:
//! `infer` → `infer_on` → `offer_shadows` / `compare_shadows`. The snapshot's
//! making is [`crate::serving::routing`], the checks are
//! [`crate::serving::request`], the sampling for the importance check is
//! [`crate::serving::input_samples`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use modelgate_registry::{ModelEntry, ReadyVersion, VersionState};
use modelgate_rollout::{Role, RoutingTable};
use modelgate_runtime::{Executor, InferJob, InferOutput, RunError, StopReason, Tensor};

use crate::clock::now_ms;
use crate::serving::gateway_error::GatewayError;
use crate::serving::input_samples::InputSamples;
use crate::serving::outcome::{OutcomeLimits, OutcomeStore, Served};
use crate::serving::output_scores::{has_nan_inf, score_iter};
use crate::serving::records::{OutcomeRecord, Record, RecordSinks, SCHEMA_VERSION};
use crate::serving::request::{
    InferRequest, InferResponse, MAX_REQUEST_ID_BYTES, check_request, response_bytes,
};
use crate::serving::routing::{ModelRoute, ModelTable, Policy, describe_versions};
use crate::serving::shadow::{Comparer, ShadowOutcome, ShadowStats, routing_key_hash};
use crate::telemetry::metrics::{Metrics, VersionMetrics};

// control/ (controller.rs: `Policy`) and hostile/ (`check_request`) import
// these from here; kept until those files, outside this change, import them
// from `routing` and `request`.

/// The gateway: routes, validates and runs requests.
pub struct Gateway {
    table: ArcSwap<ModelTable>,
    executor: Executor,
    shadow: ShadowRunner,
    publish_lock: std::sync::Mutex<()>,
    /// The controller's policy per model; applied on every publish.
    policies: std::sync::Mutex<HashMap<String, Policy>>,
    outcomes: Arc<OutcomeStore>,
    metrics: Arc<Metrics>,
    input_samples: InputSamples,
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

/// The shadow side: its executor, where records go, and running totals.
pub struct ShadowRunner {
    pub executor: Executor,
    pub queue_capacity: usize,
    /// Where shadow predictions and outcomes are recorded.
    pub records: Option<Arc<RecordSinks>>,
    /// This replica's id, written in every record.
    pub replica: String,
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
            metrics: Arc::new(Metrics::new()),
            input_samples: InputSamples::default(),
            max_response_bytes: limits.max_response_bytes,
        }
    }
}

/// The request path.
impl Gateway {
    /// Serves one request. Validation happens before queueing, so a bad
    /// request never occupies a queue slot or an executor thread.
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse, GatewayError> {
        let model = self.model(&req.model).inspect_err(|e| self.metrics.rejected(None, e.code()))?;
        let key = req.routing_key.as_deref().unwrap_or(&req.request_id).as_bytes();
        let (version, role) = model
            .route(req.version, key)
            .inspect_err(|e| self.metrics.rejected(Some(&model.name), e.code()))?;
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("model", model.name.as_str());
            // Signed: OpenTelemetry has no unsigned integers (u64 would be a string).
            span.record("version", version.version as i64);
            span.record("role", role.as_str());
            span.record("request_id", req.request_id.as_str());
            if let Some(id) = model.rollout_id() {
                span.record("rollout.id", id);
            }
            if let Some(routing) = model.routing() {
                span.record("bucket", i64::from(modelgate_rollout::bucket(routing.salt(), key)));
            }
            if let Some(k) = &req.routing_key {
                // Never the key itself: it may identify a user.
                span.record("routing_key.hash", routing_key_hash(k).as_str());
            }
        }
        let metrics = model.version_metrics(version.version).cloned();
        let (served, started) = (version.version, Instant::now());
        let result = self.infer_on(&model, version, role, req, metrics.as_deref()).await;
        if let Err(e) = &result {
            if let Some(m) = &metrics {
                m.failed(role, e.code());
            }
            if let Some(stats) = model.window(served) {
                stats.totals.failed(now_ms(), started.elapsed());
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
        metrics: Option<&VersionMetrics>,
    ) -> Result<InferResponse, GatewayError> {
        let signature = version.model().signature();
        check_request(signature, &mut req.inputs, &req.outputs).map_err(|error| GatewayError::Input {
            model: model.name.clone(),
            version: version.version,
            error,
        })?;

        // Triton counts each row of a batched request as an inference.
        let inferences = match version.queue.batching().max_batch {
            1 => 1,
            _ => req.inputs.first().map_or(1, Tensor::rows) as u64,
        };
        let submitted = Instant::now();
        let inputs: Arc<[Tensor]> = req.inputs.into();
        if model.rollout_id().is_some() {
            self.input_samples.offer(&model.name, &inputs);
        }
        let shadows = self.offer_shadows(model, &inputs, &req.request_id);
        // Kept for the records only when model.toml asks: inputs may be large
        // or personal.
        let record_inputs =
            (!shadows.is_empty() && model.config().records.inputs).then(|| Arc::clone(&inputs));
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
            .submit_or_run(&version.queue, job)
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
        if let Some(stats) = model.window(version.version) {
            match &result {
                Ok(out) => {
                    stats.window.record(latency, false, nan_inf);
                    stats.scores.record(score_iter(&out.outputs));
                    stats.totals.succeeded(now_ms(), inferences, latency, out.queue_wait, out.run_time);
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
        if model.splits_traffic() {
            self.outcomes.served(&model.name, &req.request_id, Served { version: version.version, role });
        }
        if !shadows.is_empty() {
            self.compare_shadows(
                model,
                version.version,
                role,
                &req.request_id,
                req.routing_key.as_deref(),
                &output,
                record_inputs,
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
            // The name the client sent is the route's (models are found by
            // exact name): moved, not copied.
            model: req.model,
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
    dropped: Arc<AtomicU64>,
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
        let salt = model.routing().map_or(0, RoutingTable::salt);
        for target in model.shadows() {
            // Sampled by request id, with a seed apart from the arms' hash, so
            // which requests are mirrored is independent of who is in which arm.
            if !modelgate_rollout::shadow_sampled(salt, request_id.as_bytes(), target.fraction_bp()) {
                continue;
            }
            // Over the CPU budget: skip the copy (sampling by budget) rather
            // than queue work the shadow threads may not spend.
            if !self.shadow.executor.admits() {
                target.dropped().fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (mut job, rx) = InferJob::new(Arc::clone(inputs), Vec::new(), None);
            let request = tracing::Span::current();
            // Traced only when the request is: a shadow span of an unsampled
            // request would link to a span that is never exported.
            if crate::telemetry::otel::sampled(&request) {
                // Its own trace, linked to the request's: the shadow is off the
                // request's critical path and may finish after the reply.
                let span = tracing::info_span!(
                    target: "modelgate::span",
                    parent: None,
                    "shadow",
                    model = %model.name,
                    version = target.version().version as i64,
                    role = "shadow",
                );
                span.follows_from(&request);
                job = job.traced(span);
            }
            match self.shadow.executor.submit(target.queue(), job) {
                Ok(()) => pending.push(PendingShadow {
                    version: target.version().version,
                    dropped: Arc::clone(target.dropped()),
                    rx,
                }),
                Err(_) => {
                    target.dropped().fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        pending
    }

    /// Compares the shadows' outputs with the champion's off the request path.
    #[allow(clippy::too_many_arguments)]
    fn compare_shadows(
        &self,
        model: &ModelRoute,
        champion_version: u64,
        champion_role: Role,
        request_id: &str,
        routing_key: Option<&str>,
        champion: &InferOutput,
        inputs: Option<Arc<[Tensor]>>,
        shadows: Vec<PendingShadow>,
    ) {
        let max_values = model.config().records.max_values();
        let champion_outputs = Arc::new(champion.outputs.clone());
        let champion_latency_us = (champion.queue_wait + champion.run_time).as_micros() as u64;
        // Only handing over happens here: the comparer's background thread
        // waits for each shadow, compares and writes.
        for s in shadows {
            self.shadow.comparer.offer(ShadowOutcome {
                model: model.name.clone(),
                champion_version,
                champion_role: champion_role.as_str(),
                shadow_version: s.version,
                request_id: request_id.to_string(),
                routing_key: routing_key.map(str::to_string),
                champion_outputs: Arc::clone(&champion_outputs),
                champion_latency_us,
                inputs: inputs.clone(),
                max_values,
                result: s.rx,
                windows: model.window(s.version).map(Arc::clone),
                dropped: s.dropped,
            });
        }
    }
}

/// The model table: lookups and publishing new snapshots.
impl Gateway {
    /// The current snapshot of models.
    pub fn table(&self) -> Arc<ModelTable> {
        self.table.load_full()
    }

    /// `NOT_FOUND` (naming the models served) unless `name` is served; lets
    /// a handler answer the most basic mistake before decoding tensors.
    pub fn check_model(&self, name: &str) -> Result<(), GatewayError> {
        self.table.load().find(name).map(|_| ())
    }

    /// Whether `name` is served now.
    pub fn serves(&self, name: &str) -> bool {
        self.table.load().serves(name)
    }

    fn model(&self, name: &str) -> Result<Arc<ModelRoute>, GatewayError> {
        self.table.load().find(name).cloned()
    }

    /// Whether a version serves traffic now (champion, an arm with weight, or a shadow).
    pub fn in_use(&self, model: &str, version: u64) -> bool {
        self.table.load().get(model).is_some_and(|m| m.in_use(version))
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
        let entries = current.entries();
        self.publish(entries, &current.champions(), &policies);
    }

    /// Rebuilds the snapshot from the repository's entries, keeping every
    /// model's champion.
    pub fn publish_entries(&self, entries: Vec<ModelEntry>) {
        // Serialise publishers so two rebuilds cannot interleave and lose one.
        let _guard = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let champions = self.table.load().champions();
        let policies = self.policies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.publish(entries, &champions, &policies);
    }

    /// Swaps in the next snapshot; the caller holds `publish_lock`.
    fn publish(
        &self,
        entries: Vec<ModelEntry>,
        champions: &HashMap<String, u64>,
        policies: &HashMap<String, Policy>,
    ) {
        let next = self.table.load().rebuild(
            entries,
            champions,
            policies,
            &self.metrics,
            self.shadow.queue_capacity,
            &self.shadow.stats,
        );
        self.table.store(Arc::new(next));
    }
}

/// What the control side and the admin API read or ask of the gateway, off
/// the request path.
impl Gateway {
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

    /// The Prometheus metrics every part of the gateway records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn outcomes(&self) -> &Arc<OutcomeStore> {
        &self.outcomes
    }

    /// The shadows' CPU budget, if they have one.
    pub fn shadow_cpu_budget(&self) -> Option<&Arc<modelgate_runtime::CpuBudget>> {
        self.shadow.executor.cpu_budget()
    }

    pub fn shadow_stats(&self) -> &Arc<ShadowStats> {
        &self.shadow.stats
    }

    pub fn record_sinks(&self) -> Option<&Arc<RecordSinks>> {
        self.shadow.records.as_ref()
    }

    /// This replica's id, as records carry it.
    pub fn replica(&self) -> &str {
        &self.shadow.replica
    }

    /// The model's recently sampled inputs, oldest first.
    pub fn input_samples(&self, model: &str) -> Vec<Arc<[Tensor]>> {
        self.input_samples.of(model)
    }

    /// Forgets a model's sampled inputs (its rollout is over).
    pub fn forget_input_samples(&self, model: &str) {
        self.input_samples.forget(model)
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
        if route.rollout_id().is_none() {
            self.metrics.outcome(model, false);
            self.outcomes.count_unjoined();
            self.record_outcome_record(model, request_id, routing_key, metric, value, at_ms, None);
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
                match route.routing() {
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
                self.record_outcome_record(
                    model,
                    request_id,
                    routing_key,
                    metric,
                    value,
                    at_ms,
                    Some((version, role)),
                );
                Ok(Some((version, role)))
            }
            None => {
                self.metrics.outcome(model, false);
                self.outcomes.count_unjoined();
                self.record_outcome_record(model, request_id, routing_key, metric, value, at_ms, None);
                Ok(None)
            }
        }
    }

    /// Offers an accepted outcome to the record sinks (never blocks), joined
    /// or not, so outcomes and predictions join offline on the request id.
    #[allow(clippy::too_many_arguments)]
    fn record_outcome_record(
        &self,
        model: &str,
        request_id: &str,
        routing_key: &str,
        metric: &str,
        value: f64,
        at_ms: u64,
        joined: Option<(u64, Role)>,
    ) {
        let Some(records) = &self.shadow.records else { return };
        records.offer(Record::Outcome(OutcomeRecord {
            schema: SCHEMA_VERSION,
            ts_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
            request_id: request_id.to_string(),
            model: model.to_string(),
            replica: self.shadow.replica.clone(),
            routing_key_hash: (!routing_key.is_empty()).then(|| routing_key_hash(routing_key)),
            metric: metric.to_string(),
            value,
            joined: joined.is_some(),
            version: joined.map(|(v, _)| v),
            role: joined.map(|(_, r)| r.as_str().to_string()),
        }));
    }
}
