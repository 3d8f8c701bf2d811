//! The OTLP/gRPC span exporter and its bounded queue, configured from the
//! OpenTelemetry SDK's environment variables as the specification names them
//! (a signal-specific `OTEL_EXPORTER_OTLP_TRACES_*` variable wins over its
//! generic `OTEL_EXPORTER_OTLP_*` one):
//!
//! - the endpoint: `http://` is plaintext, `https://` is TLS, and a
//!   scheme-less `host:port` is TLS unless `OTEL_EXPORTER_OTLP_INSECURE` is
//!   `true` (the specification's rule, as the Go SDK and the collector do);
//! - TLS: `_CERTIFICATE` (the CA that signs the collector's certificate;
//!   unset, the system's roots), `_CLIENT_CERTIFICATE` and `_CLIENT_KEY`
//!   (mutual TLS);
//! - `_PROTOCOL` (`grpc` only), `_COMPRESSION` (`gzip` or `none`) and
//!   `_TIMEOUT` (ms), checked here and applied by the SDK (with `_HEADERS`);
//! - the batch queue: `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`,
//!   `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT`.
//!
//! A value that cannot be used stops start-up with a message naming the
//! variable (the SDK itself would ignore it silently). Spans beyond a full
//! queue are dropped, counted in [`spans_dropped`] and logged; so are the
//! spans of a batch the collector did not take.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Reads one environment variable (a function, so tests need not touch the
/// process's environment).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A variable's value; empty counts as unset, as the specification says.
fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `OTEL_EXPORTER_OTLP_TRACES_<suffix>`, else `OTEL_EXPORTER_OTLP_<suffix>`:
/// the variable that was set and its value.
fn signal_var(env: Env<'_>, suffix: &str) -> Option<(String, String)> {
    [format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"), format!("OTEL_EXPORTER_OTLP_{suffix}")]
        .into_iter()
        .find_map(|name| var(env, &name).map(|v| (name, v)))
}

/// A boolean variable: `true` or `false` (any case); anything else is an
/// error rather than the specification's silent `false`, so a typo in
/// `OTEL_SDK_DISABLED` cannot leave export on unnoticed.
pub fn bool_var(env: Env<'_>, name: &str) -> anyhow::Result<Option<bool>> {
    match var(env, name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => anyhow::bail!("{name} must be true or false, got '{v}'"),
    }
}

/// A whole-number variable within `min..=max`.
fn number_var(env: Env<'_>, name: &str, min: u64, max: u64) -> anyhow::Result<Option<u64>> {
    let Some(v) = var(env, name) else { return Ok(None) };
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => anyhow::bail!("{name} must be a whole number from {min} to {max}, got '{v}'"),
    }
}

/// The batch span processor's settings (the specification's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Spans held for export at most; more are dropped.
    pub max_queue_size: usize,
    pub schedule_delay: Duration,
    pub max_export_batch_size: usize,
    pub export_timeout: Duration,
}

/// The largest queue accepted: the SDK allocates the whole queue up front,
/// and a million spans is already hundreds of MiB.
const MAX_QUEUE_SIZE: u64 = 1 << 20;
/// A day, in milliseconds: the ceiling of the delay and timeout variables.
const MAX_MILLIS: u64 = 86_400_000;

impl BatchSettings {
    /// From `OTEL_BSP_*`.
    pub fn from_env(env: Env<'_>) -> anyhow::Result<Self> {
        let max_queue_size = number_var(env, "OTEL_BSP_MAX_QUEUE_SIZE", 1, MAX_QUEUE_SIZE)?.unwrap_or(2048);
        let schedule_delay = number_var(env, "OTEL_BSP_SCHEDULE_DELAY", 1, MAX_MILLIS)?.unwrap_or(5000);
        let batch = number_var(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, MAX_QUEUE_SIZE)?;
        let export_timeout = number_var(env, "OTEL_BSP_EXPORT_TIMEOUT", 1, MAX_MILLIS)?.unwrap_or(30_000);
        if let Some(b) = batch
            && b > max_queue_size
        {
            anyhow::bail!(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({b}) must not be larger than OTEL_BSP_MAX_QUEUE_SIZE ({max_queue_size})"
            );
        }
        Ok(Self {
            max_queue_size: max_queue_size as usize,
            schedule_delay: Duration::from_millis(schedule_delay),
            // The default batch is cut to a smaller queue, as the SDK does.
            max_export_batch_size: batch.unwrap_or(512).min(max_queue_size) as usize,
            export_timeout: Duration::from_millis(export_timeout),
        })
    }
}

/// Where spans go: the endpoint URL (with its scheme) and, for TLS, the
/// client configuration.
#[derive(Debug)]
pub struct Destination {
    pub endpoint: String,
    pub tls: Option<ClientTlsConfig>,
    /// A TLS variable set for a plaintext endpoint, to be logged once the
    /// log is up (this is read before it is).
    pub unused_tls_var: Option<String>,
}

/// The endpoint to export to: `traces` (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
/// wins over `generic`; `None` when neither is set. A scheme-less endpoint
/// gets `https://`, or `http://` when `OTEL_EXPORTER_OTLP_[TRACES_]INSECURE`
/// is true.
pub fn endpoint(generic: Option<&str>, traces: Option<&str>, env: Env<'_>) -> anyhow::Result<Option<String>> {
    let Some(endpoint) = [traces, generic].into_iter().flatten().map(str::trim).find(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    let scheme = endpoint.split_once("://").map(|(s, _)| s).filter(|s| !s.contains(['/', '?', '#']));
    Ok(Some(match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => endpoint.to_string(),
        Some(s) => anyhow::bail!(
            "the OTLP endpoint '{endpoint}' has scheme '{s}'; expected http:// (plaintext), https:// (TLS) or host:port"
        ),
        None => {
            let insecure = match signal_var(env, "INSECURE") {
                Some((name, _)) => bool_var(env, &name)?.unwrap_or(false),
                None => false,
            };
            format!("{}://{endpoint}", if insecure { "http" } else { "https" })
        }
    }))
}

/// Reads a PEM file a variable names, with an error naming both.
fn read_pem(name: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {name} '{path}'"))
}

/// The certificates in a PEM file; an error when there is none.
fn certificates(name: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = read_pem(name, path)?;
    let found = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{name} '{path}' is not valid PEM"))?;
    anyhow::ensure!(!found.is_empty(), "{name} '{path}' holds no PEM certificate");
    Ok(pem)
}

/// The TLS settings for an `https://` endpoint.
fn tls(env: Env<'_>) -> anyhow::Result<ClientTlsConfig> {
    let mut tls = ClientTlsConfig::new();
    tls = match signal_var(env, "CERTIFICATE") {
        Some((name, path)) => tls.ca_certificate(Certificate::from_pem(certificates(&name, &path)?)),
        None => tls.with_native_roots(),
    };
    match (signal_var(env, "CLIENT_CERTIFICATE"), signal_var(env, "CLIENT_KEY")) {
        (Some((cert_var, cert)), Some((key_var, key))) => {
            use rustls_pki_types::PrivateKeyDer;
            use rustls_pki_types::pem::PemObject;
            let cert = certificates(&cert_var, &cert)?;
            let key_pem = read_pem(&key_var, &key)?;
            PrivateKeyDer::from_pem_slice(&key_pem)
                .with_context(|| format!("{key_var} '{key}' holds no PEM private key"))?;
            tls = tls.identity(Identity::from_pem(cert, key_pem));
        }
        (Some((name, _)), None) => {
            anyhow::bail!(
                "{name} is set but OTEL_EXPORTER_OTLP_CLIENT_KEY is not: a client certificate needs its key"
            )
        }
        (None, Some((name, _))) => anyhow::bail!(
            "{name} is set but OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is not: a client key needs its certificate"
        ),
        (None, None) => {}
    }
    Ok(tls)
}

impl Destination {
    /// TLS settings for `endpoint` (from [`endpoint`]) when it is `https://`.
    pub fn new(endpoint: String, env: Env<'_>) -> anyhow::Result<Self> {
        // The SDK reads these itself but skips a value it cannot use with
        // only a warning, before the log is up: check them here.
        if let Some((name, p)) = signal_var(env, "PROTOCOL").filter(|(_, p)| p != "grpc") {
            anyhow::bail!("{name} is '{p}'; modelgate exports OTLP over gRPC only (grpc)");
        }
        if let Some((name, c)) = signal_var(env, "COMPRESSION")
            && !c.eq_ignore_ascii_case("gzip")
            && !c.eq_ignore_ascii_case("none")
        {
            anyhow::bail!("{name} is '{c}'; expected gzip or none");
        }
        if let Some((name, _)) = signal_var(env, "TIMEOUT") {
            number_var(env, &name, 1, MAX_MILLIS)?;
        }
        let secure = endpoint.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if secure {
            return Ok(Self { endpoint, tls: Some(tls(env)?), unused_tls_var: None });
        }
        let unused_tls_var = signal_var(env, "CERTIFICATE")
            .or_else(|| signal_var(env, "CLIENT_CERTIFICATE"))
            .map(|(name, _)| name);
        Ok(Self { endpoint, tls: None, unused_tls_var })
    }
}

/// The label of `modelgate_trace_spans_dropped_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full` or `export_failed`.
    pub reason: String,
}

/// Spans that never reached the collector, since the process started: a
/// process-wide count, like the tracer provider it belongs to. Both series
/// exist from the start, at 0, so a rate over them is never empty.
#[derive(Debug)]
pub struct SpansDropped {
    family: Family<DropLabels, Counter>,
    /// Beyond `OTEL_BSP_MAX_QUEUE_SIZE`.
    queue_full: Counter,
    /// In a batch the collector did not take (after the SDK's retries).
    export_failed: Counter,
}

impl SpansDropped {
    /// The family to register.
    pub fn family(&self) -> &Family<DropLabels, Counter> {
        &self.family
    }
}

/// The process's count of dropped spans.
pub fn spans_dropped() -> &'static SpansDropped {
    static DROPPED: LazyLock<SpansDropped> = LazyLock::new(|| {
        let family = Family::<DropLabels, Counter>::default();
        let counter = |reason: &str| family.get_or_create(&DropLabels { reason: reason.into() }).clone();
        SpansDropped { queue_full: counter("queue_full"), export_failed: counter("export_failed"), family }
    });
    &DROPPED
}

/// Runs OTLP exports on the gateway's tokio runtime. The SDK's batch
/// processor exports from its own OS thread, where tonic's channel (which
/// needs a tokio reactor) cannot run by itself. Also gives spans back to the
/// queue's bound once sent, and logs drops from this thread (never from
/// inside a span's end, which runs in the tracing subscriber).
#[derive(Debug)]
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    handle: tokio::runtime::Handle,
    timeout: Duration,
    held: Arc<AtomicUsize>,
    max_queue_size: usize,
    dropped_logged: AtomicU64,
}

impl OnRuntime {
    /// Logs spans dropped since the last time, at most once per export.
    fn log_drops(&self) {
        let dropped = spans_dropped().queue_full.get();
        let before = self.dropped_logged.swap(dropped, Ordering::Relaxed);
        if dropped > before {
            tracing::warn!(
                dropped = dropped - before,
                total = dropped,
                max_queue_size = self.max_queue_size,
                "the span export queue was full: spans dropped (raise OTEL_BSP_MAX_QUEUE_SIZE; modelgate_trace_spans_dropped_total counts them)"
            );
        }
    }
}

impl opentelemetry_sdk::trace::SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let sent = batch.len();
        let export = async {
            tokio::time::timeout(self.timeout, self.inner.export(batch))
                .await
                .unwrap_or(Err(OTelSdkError::Timeout(self.timeout)))
        };
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            // Called on a runtime thread (a synchronous flush from async
            // code): blocking here would stall it, so hand the export over.
            tokio::task::block_in_place(|| self.handle.block_on(export))
        } else {
            self.handle.block_on(export)
        };
        self.held.fetch_sub(sent, Ordering::AcqRel);
        if result.is_err() {
            // The SDK logs the error; the count is what an alert can use.
            spans_dropped().export_failed.inc_by(sent as u64);
        }
        self.log_drops();
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.log_drops();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The SDK's batch processor behind a bound that counts what it drops: a
/// span is admitted while fewer than `max_queue_size` are waiting or being
/// sent, else dropped and counted. The SDK keeps its own count private; with
/// this bound its queue (as large) never fills, so every drop is seen here.
#[derive(Debug)]
struct BoundedQueue {
    inner: BatchSpanProcessor,
    held: Arc<AtomicUsize>,
    max_queue_size: usize,
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.max_queue_size {
            self.held.fetch_sub(1, Ordering::AcqRel);
            spans_dropped().queue_full.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The span processor exporting to `destination` with `batch`. Must be
/// called on a tokio runtime.
pub fn processor(destination: Destination, batch: BatchSettings) -> anyhow::Result<impl SpanProcessor> {
    let Destination { endpoint, tls, .. } = destination;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(&endpoint);
    if let Some(tls) = tls {
        builder = builder.with_tls_config(tls);
    }
    let exporter =
        builder.build().with_context(|| format!("cannot set up the OTLP exporter for {endpoint}"))?;
    let held = Arc::new(AtomicUsize::new(0));
    let exporter = OnRuntime {
        inner: exporter,
        handle: tokio::runtime::Handle::try_current().context("the OTLP exporter needs a tokio runtime")?,
        timeout: batch.export_timeout,
        held: Arc::clone(&held),
        max_queue_size: batch.max_queue_size,
        dropped_logged: AtomicU64::new(spans_dropped().queue_full.get()),
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(batch.max_queue_size)
        .with_scheduled_delay(batch.schedule_delay)
        .with_max_export_batch_size(batch.max_export_batch_size)
        .build();
    Ok(BoundedQueue {
        inner: BatchSpanProcessor::builder(exporter).with_batch_config(config).build(),
        held,
        max_queue_size: batch.max_queue_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_traces_endpoint_wins_and_a_scheme_less_one_is_tls_unless_insecure() {
        let none = env(&[]);
        assert_eq!(endpoint(None, None, &none).unwrap(), None);
        assert_eq!(endpoint(Some(""), Some(" "), &none).unwrap(), None);
        assert_eq!(
            endpoint(Some("http://a:4317"), Some("http://b:4317"), &none).unwrap().as_deref(),
            Some("http://b:4317")
        );
        assert_eq!(
            endpoint(Some("collector:4317"), None, &none).unwrap().as_deref(),
            Some("https://collector:4317")
        );
        let insecure = env(&[("OTEL_EXPORTER_OTLP_INSECURE", "TRUE")]);
        assert_eq!(
            endpoint(Some("collector:4317"), None, &insecure).unwrap().as_deref(),
            Some("http://collector:4317")
        );
        // The signal's own variable wins over the generic one.
        let traces_secure =
            env(&[("OTEL_EXPORTER_OTLP_INSECURE", "true"), ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "false")]);
        assert_eq!(endpoint(None, Some("c:1"), &traces_secure).unwrap().as_deref(), Some("https://c:1"));
        // An explicit scheme is never rewritten.
        assert_eq!(endpoint(Some("https://c:1"), None, &insecure).unwrap().as_deref(), Some("https://c:1"));
        let e = endpoint(Some("unix:///tmp/otel.sock"), None, &none).unwrap_err().to_string();
        assert!(e.contains("scheme 'unix'"), "{e}");
        let bad = env(&[("OTEL_EXPORTER_OTLP_INSECURE", "yes")]);
        let e = endpoint(Some("c:1"), None, &bad).unwrap_err().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_INSECURE must be true or false, got 'yes'"), "{e}");
    }

    #[test]
    fn batch_settings_default_as_the_spec_says_and_bad_values_name_their_variable() {
        let s = BatchSettings::from_env(&env(&[])).unwrap();
        assert_eq!(
            s,
            BatchSettings {
                max_queue_size: 2048,
                schedule_delay: Duration::from_millis(5000),
                max_export_batch_size: 512,
                export_timeout: Duration::from_millis(30_000),
            }
        );
        let small = BatchSettings::from_env(&env(&[("OTEL_BSP_MAX_QUEUE_SIZE", "100")])).unwrap();
        assert_eq!((small.max_queue_size, small.max_export_batch_size), (100, 100));
        for (name, value) in [
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-5"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1.5"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "soon"),
        ] {
            let e = BatchSettings::from_env(&env(&[(name, value)])).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{name} must be a whole number from")), "{e}");
            assert!(e.contains(&format!("got '{value}'")), "{e}");
        }
        let e = BatchSettings::from_env(&env(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("must not be larger than OTEL_BSP_MAX_QUEUE_SIZE"), "{e}");
    }

    #[test]
    fn tls_settings_need_readable_files_and_a_key_with_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let e = Destination::new(
            "https://c:1".into(),
            &env(&[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", missing.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("cannot read OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"), "{e:#}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = Destination::new(
            "https://c:1".into(),
            &env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", junk.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("holds no PEM certificate"), "{e:#}");
        let e = Destination::new(
            "https://c:1".into(),
            &env(&[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", junk.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but"), "{e}");
        let e =
            Destination::new("http://c:1".into(), &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]))
                .unwrap_err();
        assert!(e.to_string().contains("over gRPC only"), "{e}");
        let e =
            Destination::new("http://c:1".into(), &env(&[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd")]))
                .unwrap_err();
        assert_eq!(e.to_string(), "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION is 'zstd'; expected gzip or none");
        let e = Destination::new("http://c:1".into(), &env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]))
            .unwrap_err();
        assert!(e.to_string().starts_with("OTEL_EXPORTER_OTLP_TIMEOUT must be a whole number"), "{e}");
        assert!(
            Destination::new("http://c:1".into(), &env(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP")]))
                .is_ok()
        );
        // Plaintext needs no TLS (a certificate set for it is reported, not
        // read); https:// with no CA trusts the system's roots.
        assert!(Destination::new("http://c:1".into(), &env(&[])).unwrap().tls.is_none());
        let plain =
            Destination::new("http://c:1".into(), &env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nowhere")]))
                .unwrap();
        assert_eq!(plain.unused_tls_var.as_deref(), Some("OTEL_EXPORTER_OTLP_CERTIFICATE"));
        assert!(Destination::new("https://c:1".into(), &env(&[])).unwrap().tls.is_some());
    }

    #[test]
    fn sdk_disabled_is_strictly_boolean() {
        assert_eq!(
            bool_var(&env(&[("OTEL_SDK_DISABLED", "True")]), "OTEL_SDK_DISABLED").unwrap(),
            Some(true)
        );
        assert_eq!(bool_var(&env(&[("OTEL_SDK_DISABLED", "")]), "OTEL_SDK_DISABLED").unwrap(), None);
        let e = bool_var(&env(&[("OTEL_SDK_DISABLED", "1")]), "OTEL_SDK_DISABLED").unwrap_err().to_string();
        assert_eq!(e, "OTEL_SDK_DISABLED must be true or false, got '1'");
    }
}
