//! Command-line flags. Every flag has a doc comment (its `--help` text) and an
//! environment fallback, so the same binary configures from a shell, a
//! systemd unit or a Kubernetes manifest.
//!
//! Range checks of the duration flags ([`limits`], [`seconds`], [`millis`])
//! live here too; clap refuses what is outside them (exit code 2).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags of `modelgate serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model repository: `<dir>/<model>/<version>/model.onnx`, optional `<dir>/<model>/model.toml`.
    #[arg(long, env = "MODELGATE_MODELS", default_value = "models/repository")]
    pub models: PathBuf,
    /// Address the Predict service listens on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "MODELGATE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Path of libonnxruntime.so. Unset: the project's cache folder
    /// (.cache/onnxruntime, filled by `make ort`), then the system library path.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Inference threads (each owns a session of every version). Default: the number of cores.
    #[arg(long, env = "MODELGATE_THREADS")]
    pub threads: Option<usize>,
    /// Largest request accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MODELGATE_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Connection caps, handshake and body limits, HTTP/2 settings.
    #[command(flatten)]
    pub connections: crate::api::connection::ConnectionArgs,
    /// Largest response sent, in bytes (Predict and KServe ModelInfer): a
    /// request whose outputs would be larger gets RESOURCE_EXHAUSTED, checked
    /// before the response is encoded. Default: `--max-request-bytes`.
    #[arg(long, env = "MODELGATE_MAX_RESPONSE_BYTES")]
    pub max_response_bytes: Option<usize>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish,
    /// in seconds (0 to 86400).
    #[arg(
        long,
        env = "MODELGATE_DRAIN_SECONDS",
        default_value_t = 10.0,
        allow_hyphen_values = true,
        value_parser = seconds(0.0, limits::DRAIN_SECONDS_MAX)
    )]
    pub drain_seconds: f64,
    /// The most bytes one declared input or output of a model may take at its
    /// smallest legal shape (and all inputs together); a version over it is
    /// FAILED before anything is allocated for it. model.toml
    /// `max_tensor_bytes` overrides it per model.
    #[arg(long, env = "MODELGATE_MAX_TENSOR_BYTES", default_value_t = modelgate_runtime::DEFAULT_MAX_TENSOR_BYTES,
          value_parser = clap::value_parser!(u64).range(1..=modelgate_registry::config::MAX_TENSOR_BYTES_CEILING))]
    pub max_tensor_bytes: u64,
    /// The longest one inference may run, in milliseconds, whatever the
    /// client's deadline; a longer run is stopped (DEADLINE_EXCEEDED). 0: no
    /// limit but the client's deadline. model.toml `max_run_ms` overrides it.
    #[arg(long, env = "MODELGATE_MAX_RUN_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(0..=modelgate_registry::config::MAX_RUN_MS_CEILING))]
    pub max_run_ms: u64,
    /// One-row requests to a model whose one-row runs take less than this
    /// many microseconds (measured while serving) run on the connection's
    /// thread instead of being handed to an inference thread: the hand-over
    /// costs more than such a run. 0: always hand over. model.toml
    /// `inline_run_us` overrides it per model.
    #[arg(long, env = "MODELGATE_INLINE_RUN_US", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=modelgate_registry::config::MAX_INLINE_RUN_US))]
    pub inline_run_us: u64,
    /// The longest one warm-up run of a new version may take, in seconds;
    /// over it the version is FAILED.
    #[arg(long, env = "MODELGATE_WARM_UP_LIMIT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub warm_up_limit_seconds: u64,
    /// Do not watch the model repository for new versions after start.
    #[arg(long, env = "MODELGATE_NO_WATCH")]
    pub no_watch: bool,
    /// Rescan the repository this often (seconds, 0.05 to 3600), besides filesystem events.
    #[arg(
        long,
        env = "MODELGATE_RESCAN_SECONDS",
        default_value_t = 2.0,
        allow_hyphen_values = true,
        value_parser = seconds(limits::RESCAN_SECONDS_MIN, limits::RESCAN_SECONDS_MAX)
    )]
    pub rescan_seconds: f64,
    /// A new model file must keep its size and mtime this long (ms, 0 to
    /// 600000) before it is loaded.
    #[arg(
        long,
        env = "MODELGATE_SETTLE_MS",
        default_value_t = 500,
        allow_hyphen_values = true,
        value_parser = millis(0, limits::SETTLE_MS_MAX)
    )]
    pub settle_ms: u64,
    /// Rollout state and the audit log. Default: `modelgate-state` beside the model repository.
    #[arg(long, env = "MODELGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where rollout state lives: `file` (the state directory, one process)
    /// or `etcd://host:port[,host:port]/prefix` (fleet mode: every replica
    /// with the same URL acts as one gateway).
    #[arg(long, env = "MODELGATE_STATE", default_value = "file")]
    pub state: String,
    /// This replica's name in the fleet (its leases, published counts and
    /// audit events). Default: host name and process id.
    #[arg(long, env = "MODELGATE_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// CA certificates (PEM) that signed etcd's server certificates: talk
    /// to etcd over TLS. Fleet mode only.
    #[arg(long, env = "MODELGATE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`. Needs
    /// `--etcd-ca` and `--etcd-key`; re-read when it changes.
    #[arg(long, env = "MODELGATE_ETCD_CERT", requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of `--etcd-cert`.
    #[arg(long, env = "MODELGATE_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (etcd auth). Needs `--etcd-password-file`.
    #[arg(long, env = "MODELGATE_ETCD_USER", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (a trailing newline is
    /// ignored); re-read when it changes.
    #[arg(long, env = "MODELGATE_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// Audit events kept in etcd; the leader deletes the oldest beyond this
    /// every minute.
    #[arg(long, env = "MODELGATE_ETCD_AUDIT_KEEP", default_value_t = crate::store::etcd::DEFAULT_AUDIT_KEEP)]
    pub etcd_audit_keep: u64,
    /// Threads that run shadow copies, at the lowest OS priority.
    #[arg(long, env = "MODELGATE_SHADOW_THREADS", default_value_t = 1)]
    pub shadow_threads: usize,
    /// Shadow copies that may wait per shadow version; more are dropped and counted.
    #[arg(long, env = "MODELGATE_SHADOW_QUEUE", default_value_t = 16)]
    pub shadow_queue: usize,
    /// CPU the shadows may use, in cores (e.g. 0.1), or `off` for no limit
    /// beyond idle priority. Over budget, copies are skipped (sampled) and
    /// counted as drops. Default: 5% of the machine's cores.
    #[arg(long, env = "MODELGATE_SHADOW_CPU_BUDGET", default_value = "auto")]
    pub shadow_cpu_budget: String,
    /// Keep the shadows' CPU budget whatever the load. By default it is a
    /// ceiling that shrinks as the machine's CPUs get busy: every 200 ms it
    /// is scaled by the share of CPU time that was idle (at least 2% of it),
    /// so a shadow has its whole budget on an idle machine and a small share
    /// of it on a saturated one (skipped copies count as drops).
    #[arg(long, env = "MODELGATE_SHADOW_BUDGET_FIXED")]
    pub shadow_budget_fixed: bool,
    /// A directory for shadow records as JSON lines: the same as
    /// `--records file://<dir>`. With neither flag, records go to
    /// `<state dir>/shadow`.
    #[arg(long, env = "MODELGATE_SHADOW_DIR")]
    pub shadow_dir: Option<PathBuf>,
    /// Where shadow predictions and outcomes are recorded, as a URL; repeat
    /// (or separate with spaces) for several sinks at once: `file:///dir`
    /// (JSON lines), `kafka://…`, Parquet tables at `s3://bucket/prefix`, `gs://…`, `az://…` or
    /// `parquet+file:///dir` (README "Parquet records"). Not
    /// commas: a Kafka URL lists its brokers with them.
    #[arg(long = "records", env = "MODELGATE_RECORDS", value_delimiter = ' ')]
    pub records: Vec<String>,
    /// Records that may wait per sink; more are dropped and counted
    /// (`modelgate_shadow_records_total{outcome="dropped_full"}`).
    #[arg(long, env = "MODELGATE_RECORDS_QUEUE", default_value_t = 8192)]
    pub records_queue: usize,
    /// TLS and SASL for the Kafka record sinks (over the URL's settings).
    #[command(flatten)]
    pub kafka: KafkaFlags,
    /// Address of the Admin service (rollouts). Keep it on loopback unless a token is set.
    #[arg(long, env = "MODELGATE_ADMIN_LISTEN", default_value = "127.0.0.1:50052")]
    pub admin_listen: SocketAddr,
    /// Admin bearer token (its audit name is `admin`).
    #[arg(long, env = "MODELGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File of `name token` lines: named admin tokens.
    #[arg(long, env = "MODELGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM, leaf first) of the Predict/KServe
    /// listener. Reloaded when the file's contents change. Unset: plaintext.
    #[arg(long, env = "MODELGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "MODELGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for mutual TLS on the Predict/KServe listener:
    /// every client must present a certificate they signed. Needs
    /// `--tls-cert`; reloaded with it.
    #[arg(long, env = "MODELGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// TLS certificate chain (PEM) of the admin listener. Reloaded when it changes. Unset: plaintext.
    #[arg(long, env = "MODELGATE_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--admin-tls-cert`.
    #[arg(long, env = "MODELGATE_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for mutual TLS on the admin listener: every
    /// admin client must present a certificate they signed, and its subject
    /// is the audit log's "who". Needs `--admin-tls-cert`.
    #[arg(long, env = "MODELGATE_ADMIN_CLIENT_CA", requires = "admin_tls_cert")]
    pub admin_client_ca: Option<PathBuf>,
    /// How often the controller judges running rollouts, in milliseconds
    /// (10 to 60000).
    #[arg(
        long,
        env = "MODELGATE_TICK_MS",
        default_value_t = 500,
        allow_hyphen_values = true,
        value_parser = millis(limits::TICK_MS_MIN, limits::TICK_MS_MAX)
    )]
    pub tick_ms: u64,
    /// Memory for remembering which version served each request id, so
    /// outcomes reported later (RecordOutcome) join it. Reserved in full
    /// when a rollout first splits traffic; 25 bytes an id (32 MiB keep the
    /// latest ~460k ids at least), the oldest dropped first; 0 turns it off.
    #[arg(long, env = "MODELGATE_OUTCOME_JOIN_MIB", default_value_t = 32)]
    pub outcome_join_mib: u32,
    /// Memory for the outcome sums (RecordOutcome) of running rollouts: 32
    /// bytes per metric, version and 10-second bucket kept for a day; past
    /// it the oldest buckets of any metric are dropped first.
    #[arg(long, env = "MODELGATE_OUTCOME_STORE_MIB", default_value_t = 64)]
    pub outcome_store_mib: u32,
    /// Distinct RecordOutcome metric names kept per model; a new name past
    /// it gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "MODELGATE_OUTCOME_METRICS_PER_MODEL", default_value_t = 32)]
    pub outcome_metrics_per_model: usize,
    /// Rotate a shadow record file when it reaches this many bytes.
    #[arg(long, env = "MODELGATE_SHADOW_FILE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub shadow_file_bytes: u64,
    /// Address of the Prometheus `/metrics` listener; `off` disables it.
    #[arg(long, env = "MODELGATE_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// OTLP/gRPC endpoint for traces (e.g. `http://otel-collector:4317`;
    /// `https://` or a scheme-less `host:port` is TLS). Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The traces endpoint; wins over --otlp-endpoint.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,
    /// The `service.name` of exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "modelgate")]
    pub service_name: String,
    /// Trace sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", default_value = "parentbased_always_on")]
    pub trace_sampler: String,
    /// The ratio of the `*traceidratio` samplers.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub trace_sampler_arg: Option<f64>,
}

impl ServeArgs {
    /// The tracing settings these flags name (`OTEL_RESOURCE_ATTRIBUTES` is
    /// read by the SDK itself; TLS, the batch queue and `OTEL_SDK_DISABLED`
    /// by `telemetry::otlp`).
    pub fn trace_config(&self) -> crate::telemetry::otel::TraceConfig {
        crate::telemetry::otel::TraceConfig {
            endpoint: self.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            traces_endpoint: self.otlp_traces_endpoint.clone().filter(|e| !e.is_empty()),
            service_name: Some(self.service_name.clone()),
            sampler: Some(self.trace_sampler.clone()),
            sampler_arg: self.trace_sampler_arg,
        }
    }
}

/// The ranges of the duration flags. A value outside them (negative, NaN,
/// infinite, or so large that a deadline computed from it would overflow) is
/// a usage error naming the flag and the range (exit code 2), never a panic
/// later in start-up: `--drain-seconds 1e300` once aborted in
/// `Duration::from_secs_f64`.
/// Kafka TLS and SASL flags: the same for the record sinks (`serve
/// --records kafka://…`, where they win over the URL's settings) and for
/// `shadow report --from kafka://…`.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaFlags {
    /// Kafka: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[arg(long, env = "MODELGATE_KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,
    /// Kafka: PEM file of the CA that signed the brokers' certificates.
    #[arg(long, env = "MODELGATE_KAFKA_SSL_CA")]
    pub kafka_ssl_ca: Option<PathBuf>,
    /// Kafka: client certificate (PEM), for brokers that ask for one.
    #[arg(long, env = "MODELGATE_KAFKA_SSL_CERT", requires = "kafka_ssl_key")]
    pub kafka_ssl_cert: Option<PathBuf>,
    /// Kafka: the client certificate's private key (PEM).
    #[arg(long, env = "MODELGATE_KAFKA_SSL_KEY", requires = "kafka_ssl_cert")]
    pub kafka_ssl_key: Option<PathBuf>,
    /// Kafka: SASL mechanism, `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[arg(long, env = "MODELGATE_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// Kafka: SASL user name.
    #[arg(long, env = "MODELGATE_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// Kafka: a file holding the SASL password (e.g. a mounted Secret);
    /// else the MODELGATE_KAFKA_SASL_PASSWORD variable.
    #[arg(long, env = "MODELGATE_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
}

impl From<KafkaFlags> for crate::serving::records::KafkaSecurity {
    fn from(f: KafkaFlags) -> Self {
        Self {
            protocol: f.kafka_security_protocol,
            ssl_ca: f.kafka_ssl_ca,
            ssl_cert: f.kafka_ssl_cert,
            ssl_key: f.kafka_ssl_key,
            sasl_mechanism: f.kafka_sasl_mechanism,
            sasl_username: f.kafka_sasl_username,
            sasl_password_file: f.kafka_sasl_password_file,
        }
    }
}

pub mod limits {
    /// `--drain-seconds`: a day; nothing in flight needs longer.
    pub const DRAIN_SECONDS_MAX: f64 = 86_400.0;
    /// `--rescan-seconds`: faster than 50 ms is a busy loop; an hour at most.
    pub const RESCAN_SECONDS_MIN: f64 = 0.05;
    pub const RESCAN_SECONDS_MAX: f64 = 3_600.0;
    /// `--settle-ms`: ten minutes.
    pub const SETTLE_MS_MAX: u64 = 600_000;
    /// `--tick-ms`: 10 ms to a minute (triggers judge on every tick).
    pub const TICK_MS_MIN: u64 = 10;
    pub const TICK_MS_MAX: u64 = 60_000;
    /// `modelgate predict --timeout-seconds`: 1 ms to a day.
    pub const CALL_TIMEOUT_SECONDS_MIN: f64 = 0.001;
    pub const CALL_TIMEOUT_SECONDS_MAX: f64 = 86_400.0;
}

/// A clap value parser for a number of seconds in `lo..=hi`; clap puts the
/// flag's name in front of the message.
pub fn seconds(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= lo && v <= hi => Ok(v),
        _ => Err(format!("expected a number of seconds from {lo} to {hi}")),
    }
}

/// A clap value parser for a whole number of milliseconds in `lo..=hi`.
pub fn millis(lo: u64, hi: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("expected a whole number of milliseconds from {lo} to {hi}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::server::config::ServeConfig;

    /// Every duration flag refuses what would panic or overflow later, in
    /// clap's words (exit code 2) naming the flag and the range.
    #[test]
    fn duration_flags_are_range_checked_by_clap() {
        /// `serve`'s flags alone (the CLI above wraps them in a subcommand).
        #[derive(Debug, clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let parse = |args: &[&str]| {
            let mut all = vec!["modelgate"];
            all.extend_from_slice(args);
            <Serve as clap::Parser>::try_parse_from(all)
        };
        for (flag, bad, range) in [
            ("--drain-seconds", "1e300", "from 0 to 86400"),
            ("--drain-seconds", "-1", "from 0 to 86400"),
            ("--drain-seconds", "NaN", "from 0 to 86400"),
            ("--drain-seconds", "inf", "from 0 to 86400"),
            ("--drain-seconds", "86401", "from 0 to 86400"),
            ("--rescan-seconds", "0", "from 0.05 to 3600"),
            ("--rescan-seconds", "-inf", "from 0.05 to 3600"),
            ("--settle-ms", "18446744073709551615", "from 0 to 600000"),
            ("--settle-ms", "-5", "from 0 to 600000"),
            ("--tick-ms", "0", "from 10 to 60000"),
            ("--tick-ms", "99999999999", "from 10 to 60000"),
        ] {
            let e = parse(&[flag, bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{flag} {bad}");
            let text = e.to_string();
            assert!(text.contains(flag) && text.contains(range), "{flag} {bad}: {text}");
        }
        let ok =
            parse(&["--drain-seconds", "86400", "--tick-ms", "10", "--rescan-seconds", "0.05"]).unwrap().args;
        let config = ServeConfig::try_from(ok).unwrap();
        assert_eq!((config.drain, config.tick), (Duration::from_secs(86_400), Duration::from_millis(10)));
    }

    #[test]
    fn records_flags_repeat_and_shadow_dir_is_a_file_sink() {
        #[derive(Debug, clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let args = <Serve as clap::Parser>::try_parse_from([
            "modelgate",
            "--records",
            "kafka://b1:9092,b2:9092/shadow",
            "--records",
            "file:///a s3://bucket/p",
            "--shadow-dir",
            "/d",
        ])
        .unwrap()
        .args;
        let config = ServeConfig::try_from(args).unwrap();
        assert_eq!(
            config.records,
            ["kafka://b1:9092,b2:9092/shadow", "file:///a", "s3://bucket/p", "file:///d"]
        );
        let args = <Serve as clap::Parser>::try_parse_from(["modelgate"]).unwrap().args;
        let config = ServeConfig::try_from(args).unwrap();
        assert!(config.records.is_empty(), "the default file sink in the state dir");
    }
}
