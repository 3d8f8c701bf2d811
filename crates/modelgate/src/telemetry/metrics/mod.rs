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
//!
//! By job: this module holds the registry and the event families
//! ([`Metrics`]) and serves them; `labels` the label sets and gRPC code
//! names; `version` the per-version handles; `state` the scrape-time
//! [`StateSource`] and its collector.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod labels;
mod state;
mod version;

pub use labels::{
    ActionLabels, ArmLabels, ListenerLabels, ListenerReasonLabels, OutcomeLabels, RequestLabels,
    RollbackLabels, TlsReloadLabels, TriggerLabels, VersionLabels, VersionReasonLabels, code_name,
};
pub use state::{StateMetrics, StateSource};
pub use version::VersionMetrics;

use state::StateCollector;

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The label sets of one live rollout, for [`Metrics::rollout_series`].
#[derive(Debug)]
pub struct RolloutSeries<'a> {
    /// (version, role) of each arm traffic goes to.
    pub arms: &'a [(u64, &'a str)],
    /// The versions a rollback would take traffic from.
    pub candidates: &'a [u64],
    /// Hard triggers, and `manual`.
    pub rollback_triggers: &'a [&'a str],
    /// Soft triggers.
    pub alert_triggers: &'a [&'a str],
}

/// Every event metric, and the registry they are encoded from.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<ArmLabels>,
    nan_inf: Family<VersionLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
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
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        registry.register(
            "modelgate_rollbacks",
            "Rollbacks by the version they took traffic from and trigger (nan_inf_rate, error_rate, p99_latency, or manual)",
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
        registry.register(
            "modelgate_trace_spans_dropped",
            "Spans that never reached the OTLP collector, by reason (queue_full: beyond OTEL_BSP_MAX_QUEUE_SIZE; export_failed: in a batch the collector did not take)",
            super::otlp::spans_dropped().family().clone(),
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

    /// A rollback of `model` that took traffic from `version`.
    pub fn rollback(&self, model: &str, version: &str, trigger: &str) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                model: model.into(),
                version: version.into(),
                trigger: trigger.into(),
            })
            .inc();
    }

    /// Creates, at 0, the series a live rollout of `model` may count: its
    /// arms' requests by OK and by each server-error code, its candidates'
    /// rollbacks by each trigger, its soft-trigger alerts. A counter that
    /// first appears at 1 reads as no increase to `increase()` and `rate()`,
    /// so an alert on the first event (or an error ratio against a champion
    /// that never failed) needs the series there before the event.
    pub fn rollout_series(&self, model: &str, series: &RolloutSeries<'_>) {
        for (version, role) in series.arms {
            for code in ["OK", "INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED"] {
                drop(self.requests.get_or_create(&RequestLabels {
                    model: model.into(),
                    version: version.to_string(),
                    role: (*role).into(),
                    code: code.into(),
                }));
            }
        }
        for version in series.candidates {
            for trigger in series.rollback_triggers {
                drop(self.rollbacks.get_or_create(&RollbackLabels {
                    model: model.into(),
                    version: version.to_string(),
                    trigger: (*trigger).into(),
                }));
            }
        }
        for trigger in series.alert_triggers {
            drop(
                self.alerts.get_or_create(&TriggerLabels { model: model.into(), trigger: (*trigger).into() }),
            );
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use modelgate_rollout::Role;

    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        let v = m.version("iris", 3);
        v.ok(Role::Canary, Duration::from_micros(300), true);
        v.failed(Role::Canary, tonic::Code::ResourceExhausted);
        m.rejected(None, tonic::Code::NotFound);
        m.rollback("iris", "3", "nan_inf_rate");
        m.tls_reload("admin", "error");
        m.tls_not_after("predict", 1_900_000_000);
        let text = m.encode();
        for want in [
            r#"modelgate_requests_total{model="iris",version="3",role="canary",code="OK"} 1"#,
            r#"modelgate_requests_total{model="iris",version="3",role="canary",code="RESOURCE_EXHAUSTED"} 1"#,
            r#"modelgate_requests_total{model="",version="",role="",code="NOT_FOUND"} 1"#,
            r#"modelgate_request_duration_seconds_bucket{model="iris",version="3",role="canary",le="0.0005"} 1"#,
            r#"modelgate_nan_inf_outputs_total{model="iris",version="3"} 1"#,
            r#"modelgate_rollbacks_total{model="iris",version="3",trigger="nan_inf_rate"} 1"#,
            r#"modelgate_tls_reloads_total{listener="admin",outcome="error"} 1"#,
            r#"modelgate_tls_cert_not_after_seconds{listener="predict"} 1900000000"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(Arc::ptr_eq(&m.version("iris", 3), &v), "handles are cached");
    }

    #[test]
    fn a_rollouts_series_exist_at_zero_before_their_first_event() {
        let m = Metrics::new();
        let series = RolloutSeries {
            arms: &[(2, "champion"), (3, "canary")],
            candidates: &[3],
            rollback_triggers: &["nan_inf_rate", "manual"],
            alert_triggers: &["psi"],
        };
        m.rollout_series("iris", &series);
        m.rollback("iris", "3", "manual");
        let text = m.encode();
        for want in [
            r#"modelgate_requests_total{model="iris",version="2",role="champion",code="INTERNAL"} 0"#,
            r#"modelgate_requests_total{model="iris",version="3",role="canary",code="OK"} 0"#,
            r#"modelgate_rollbacks_total{model="iris",version="3",trigger="nan_inf_rate"} 0"#,
            r#"modelgate_rollbacks_total{model="iris",version="3",trigger="manual"} 1"#,
            r#"modelgate_alerts_total{model="iris",trigger="psi"} 0"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // Made again (every publish of the rollout): counts are kept.
        m.rollout_series("iris", &series);
        assert!(
            m.encode().contains(r#"modelgate_rollbacks_total{model="iris",version="3",trigger="manual"} 1"#)
        );
    }
}
