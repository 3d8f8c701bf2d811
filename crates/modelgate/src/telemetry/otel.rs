//! Logs and traces: a `tracing` subscriber with a human or JSON formatter on
//! stderr and, when an OTLP endpoint is configured, an OpenTelemetry layer
//! exporting spans in batches over OTLP/gRPC (off the hot path: spans are
//! queued and sent from the SDK's own thread).
//!
//! Configured like every OpenTelemetry SDK: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `_TRACES_ENDPOINT`), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`/`_ARG`
//! and `OTEL_RESOURCE_ATTRIBUTES`, with matching flags; TLS, the batch queue
//! and `OTEL_SDK_DISABLED` as [`otlp`] reads them. No endpoint, no export.
//! Incoming W3C `traceparent`/`tracestate` metadata make the gateway's spans
//! children of the client's trace ([`request_span`]).
//!
//! Server spans follow the RPC semantic conventions: `rpc.system`,
//! `rpc.service`, `rpc.method`, always `rpc.grpc.status_code`, and an ERROR
//! status only for the codes that mean the server failed ([`server_error`]).

use anyhow::Context;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::otlp;

/// How log lines are written: for people, or one JSON object a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}
pub use modelgate_runtime::SPAN_TARGET;

/// Where and how spans are exported.
#[derive(Debug, Clone, Default)]
pub struct TraceConfig {
    /// OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`; `None` (and
    /// no `traces_endpoint`): no export.
    pub endpoint: Option<String>,
    /// The traces-only endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); wins
    /// over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// `service.name`; default `modelgate`.
    pub service_name: Option<String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`
    /// (default), `parentbased_always_off`, `parentbased_traceidratio`.
    pub sampler: Option<String>,
    /// The ratio for the `*traceidratio` samplers.
    pub sampler_arg: Option<f64>,
}

/// The sampler a configuration names.
pub fn sampler(name: Option<&str>, arg: Option<f64>) -> anyhow::Result<Sampler> {
    let ratio = || -> anyhow::Result<f64> {
        match arg {
            Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
            Some(r) => anyhow::bail!("the trace sampler ratio must be between 0 and 1, got {r}"),
            None => Ok(1.0),
        }
    };
    Ok(match name.unwrap_or("parentbased_always_on") {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?))),
        other => anyhow::bail!(
            "unknown trace sampler '{other}'; expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
        ),
    })
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every queued span and stops the exporter. Blocking; call it from
    /// a blocking context (it is quick when there is nothing to send).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.force_flush() {
                tracing::warn!(error = %e, "cannot flush spans");
            }
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "cannot stop the span exporter");
            }
        }
    }
}

/// The tracer provider for `config`, unless no endpoint is set or
/// `OTEL_SDK_DISABLED` is true (read through `env`). Must be called on a
/// tokio runtime.
fn provider(config: &TraceConfig, env: otlp::Env<'_>) -> anyhow::Result<Export> {
    if otlp::bool_var(env, "OTEL_SDK_DISABLED")? == Some(true) {
        return Ok(Export::Disabled);
    }
    let Some(endpoint) = otlp::endpoint(config.endpoint.as_deref(), config.traces_endpoint.as_deref(), env)?
    else {
        return Ok(Export::NoEndpoint);
    };
    let destination = otlp::Destination::new(endpoint, env)?;
    let unused_tls_var = destination.unused_tls_var.clone();
    let processor = otlp::processor(destination, otlp::BatchSettings::from_env(env)?)?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone().unwrap_or_else(|| "modelgate".into()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config.sampler.as_deref(), config.sampler_arg)?)
        .with_resource(resource)
        .build();
    Ok(Export::To { provider, unused_tls_var })
}

/// What [`provider`] decided.
enum Export {
    Disabled,
    NoEndpoint,
    To { provider: SdkTracerProvider, unused_tls_var: Option<String> },
}

/// Installs the global subscriber: logs on stderr (`RUST_LOG`, default
/// `info`), plus span export when `trace` names an endpoint.
pub fn init(format: LogFormat, trace: &TraceConfig) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    use tracing_subscriber::Layer as _;
    // Logs: RUST_LOG (default info). Trace spans have their own target and
    // stay out of the log; with no exporter nobody wants them, so creating
    // one costs next to nothing.
    let log_filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,ort=warn"))
            .add_directive(format!("{SPAN_TARGET}=off").parse().expect("a valid directive"))
    };
    let export = provider(trace, &otlp::process_env)?;
    let provider = match &export {
        Export::To { provider, .. } => Some(provider.clone()),
        Export::Disabled | Export::NoEndpoint => None,
    };
    let otel = provider.as_ref().map(|p| {
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target(SPAN_TARGET, tracing::Level::INFO)
            .with_target("modelgate", tracing::Level::INFO);
        tracing_opentelemetry::layer().with_tracer(p.tracer("modelgate")).with_filter(spans)
    });
    // Colour only for a person at a terminal, and never with NO_COLOR set
    // (https://no-color.org): a log file or collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    // A list of layers, not `Option<Layer>`: an absent `Option` layer says
    // "always interested" in every callsite, so every INFO span (one per
    // request, and its queue and inference spans) would be built in the
    // registry for nobody. With the exporter left out of the list, trace
    // spans are disabled at their callsites and cost a branch.
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    let mut layers: Vec<Boxed> = vec![match format {
        LogFormat::Human => fmt.with_filter(log_filter()).boxed(),
        LogFormat::Json => fmt.json().with_filter(log_filter()).boxed(),
    }];
    if let Some(otel) = otel {
        layers.push(otel.boxed());
    }
    let installed = tracing_subscriber::registry().with(layers).try_init();
    installed.context("a tracing subscriber is already installed")?;
    match export {
        Export::Disabled => tracing::info!("OTEL_SDK_DISABLED is true: no spans are exported"),
        Export::To { unused_tls_var: Some(name), .. } => {
            tracing::warn!("{name} is set but the OTLP endpoint is plaintext http://; it is not used")
        }
        Export::To { .. } | Export::NoEndpoint => {}
    }
    Ok(Telemetry { provider })
}

/// HTTP/2 headers (gRPC metadata) as an OpenTelemetry propagation carrier.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` a child of the W3C trace context in `headers`, if any.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    // Nothing exports spans: no header parsing per request.
    if span.is_disabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The span of one incoming request, a child of the client's trace when the
/// metadata carries W3C trace context. `rpc` is the full method,
/// `package.Service/Method`. Its fields are filled in as the request is
/// routed and answered.
pub fn request_span(metadata: &tonic::metadata::MetadataMap, rpc: &'static str) -> tracing::Span {
    let (service, method) = rpc.split_once('/').unwrap_or(("", rpc));
    let span = tracing::info_span!(
        target: "modelgate::span",
        "request",
        otel.name = rpc,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        model = tracing::field::Empty,
        version = tracing::field::Empty,
        role = tracing::field::Empty,
        rollout.id = tracing::field::Empty,
        bucket = tracing::field::Empty,
        routing_key.hash = tracing::field::Empty,
        request_id = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // Nothing exports spans: the trace context is not read at all (two
    // header lookups and a map per request, for nobody).
    if span.is_disabled() {
        return span;
    }
    // Only the W3C keys are read; converting the whole map is not needed.
    let mut headers = http::HeaderMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = metadata.get(key).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            headers.insert(key, v);
        }
    }
    set_remote_parent(&span, &headers);
    span
}

/// Whether a status code means the server failed, per the RPC semantic
/// conventions for gRPC server spans. A client's mistake (INVALID_ARGUMENT,
/// NOT_FOUND, RESOURCE_EXHAUSTED, ...) leaves the span's status unset.
pub fn server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss)
}

/// Records how a request ended on its span.
pub fn record_status(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if server_error(code) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records a request's status on its span when it ends, and CANCELLED when
/// it is dropped unanswered (the client went away, or tonic's own deadline
/// answered first), so the status code is always set.
#[derive(Debug)]
pub struct StatusRecorder {
    span: Option<tracing::Span>,
}

impl StatusRecorder {
    pub fn new(span: tracing::Span) -> Self {
        Self { span: Some(span) }
    }

    /// Records `code`.
    pub fn finish(mut self, code: tonic::Code) {
        if let Some(span) = self.span.take() {
            record_status(&span, code);
        }
    }
}

impl Drop for StatusRecorder {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            record_status(&span, tonic::Code::Cancelled);
        }
    }
}

/// Whether `span` is sampled: its trace will be exported. False with no
/// exporter, and for a request whose `traceparent` says not sampled.
pub fn sampled(span: &tracing::Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_sampled()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_parse_and_bad_ones_say_why() {
        assert!(matches!(sampler(None, None).unwrap(), Sampler::ParentBased(_)));
        assert!(
            matches!(sampler(Some("traceidratio"), Some(0.25)).unwrap(), Sampler::TraceIdRatioBased(r) if r == 0.25)
        );
        assert!(
            sampler(Some("traceidratio"), Some(2.0)).unwrap_err().to_string().contains("between 0 and 1")
        );
        assert!(sampler(Some("sometimes"), None).unwrap_err().to_string().contains("unknown trace sampler"));
    }

    #[test]
    fn only_server_side_codes_are_errors() {
        use tonic::Code::*;
        for code in [Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss] {
            assert!(server_error(code), "{code:?}");
        }
        for code in [
            Ok,
            Cancelled,
            InvalidArgument,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unauthenticated,
        ] {
            assert!(!server_error(code), "{code:?}");
        }
    }
}
