//! Logs and traces: a `tracing` subscriber with a human or JSON formatter on
//! stderr and, when an OTLP endpoint is configured, an OpenTelemetry layer
//! exporting spans in batches over OTLP/gRPC (off the hot path: spans are
//! queued and sent from the SDK's own thread).
//!
//! Configured like every OpenTelemetry SDK: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`/`_ARG` and
//! `OTEL_RESOURCE_ATTRIBUTES`, with matching flags. No endpoint, no export.
//! Incoming W3C `traceparent`/`tracestate` metadata make the gateway's spans
//! children of the client's trace ([`request_span`]).

use anyhow::Context;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
    /// OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`; `None`: no export.
    pub endpoint: Option<String>,
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

/// Runs OTLP exports on the gateway's tokio runtime. The SDK's batch
/// processor exports from its own OS thread, where tonic's channel (which
/// needs a tokio reactor) cannot run by itself.
#[derive(Debug)]
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    handle: tokio::runtime::Handle,
}

impl opentelemetry_sdk::trace::SpanExporter for OnRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            // Called on a runtime thread (a synchronous flush from async
            // code): blocking here would stall it, so hand the export over.
            tokio::task::block_in_place(|| self.handle.block_on(self.inner.export(batch)))
        } else {
            self.handle.block_on(self.inner.export(batch))
        };
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
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

/// The tracer provider for `config`, if it names an endpoint. Must be called
/// on a tokio runtime.
pub fn provider(config: &TraceConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))?;
    let exporter = OnRuntime {
        inner: exporter,
        handle: tokio::runtime::Handle::try_current().context("the OTLP exporter needs a tokio runtime")?,
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone().unwrap_or_else(|| "modelgate".into()))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler(config.sampler.as_deref(), config.sampler_arg)?)
            .with_resource(resource)
            .build(),
    ))
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
    let provider = provider(trace)?;
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
    let registry = tracing_subscriber::registry().with(otel);
    let installed = match format {
        LogFormat::Human => registry.with(fmt.with_filter(log_filter())).try_init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(log_filter())).try_init(),
    };
    installed.context("a tracing subscriber is already installed")?;
    Ok(Telemetry { provider })
}

/// gRPC metadata as an OpenTelemetry propagation carrier.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The span of one incoming request, a child of the client's trace when the
/// metadata carries W3C trace context. Its fields are filled in as the
/// request is routed and answered.
pub fn request_span(metadata: &tonic::metadata::MetadataMap, rpc: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        target: "modelgate::span",
        "request",
        otel.name = rpc,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = rpc,
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
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Metadata(metadata)));
    use opentelemetry::trace::TraceContextExt;
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Records how a request ended on its span.
pub fn record_status(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
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
}
