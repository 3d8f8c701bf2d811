//! The server's configuration: [`ServeConfig`], everything the server needs
//! whoever configured it (flags, tests, benches), with its defaults.
//!
//! `args` holds the command-line flags ([`ServeArgs`]) and their range
//! checks; `convert` turns flags into a config, validating what clap
//! cannot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod args;
mod convert;

pub use args::{KafkaFlags, ServeArgs, limits, seconds};

/// Everything the server needs, independent of how it was configured.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub models: PathBuf,
    pub listen: SocketAddr,
    pub ort_lib: Option<PathBuf>,
    pub threads: usize,
    pub max_request_bytes: usize,
    /// Connection caps, handshake and body limits, HTTP/2 settings.
    pub connections: crate::api::connection::ConnectionLimits,
    /// Largest response; `None`: `max_request_bytes`.
    pub max_response_bytes: Option<usize>,
    pub drain: Duration,
    /// Watch the repository for new and removed versions.
    pub watch: bool,
    pub rescan: Duration,
    pub settle: Duration,
    /// How versions are loaded: declared-size budget, run and warm-up limits
    /// (`default_sessions` is set at start from the thread counts).
    pub load: modelgate_registry::LoadSettings,
    pub state_dir: PathBuf,
    /// Fleet mode's etcd, or `None` for the file store in `state_dir`.
    pub etcd: Option<crate::store::etcd::EtcdUrl>,
    /// TLS and credentials for the fleet's etcd.
    pub etcd_access: crate::store::etcd::EtcdAccess,
    /// Audit events kept in etcd.
    pub etcd_audit_keep: u64,
    pub replica_id: String,
    pub shadow_threads: usize,
    pub shadow_queue: usize,
    /// Cores' worth of CPU the shadows may use; `None`: no budget.
    pub shadow_cpu_cores: Option<f64>,
    /// Whether the budget stays fixed (`--shadow-budget-fixed`) rather than
    /// following the machine's idle CPU.
    pub shadow_budget_fixed: bool,
    /// The file sink's directory when `records` is empty.
    pub shadow_dir: PathBuf,
    pub shadow_file_bytes: u64,
    /// Record sink URLs (`--records`, and `--shadow-dir` as `file://`);
    /// empty: the file sink in `shadow_dir`.
    pub records: Vec<String>,
    /// Records that may wait per sink.
    pub records_queue: usize,
    /// TLS/SASL for `kafka://` record sinks (`--kafka-*`).
    pub kafka_security: crate::serving::records::KafkaSecurity,
    /// MiB for request ids kept for outcome joins.
    pub outcome_join_mib: u64,
    /// MiB for the outcome sums.
    pub outcome_store_mib: u64,
    /// Distinct outcome metric names per model.
    pub outcome_metrics_per_model: usize,
    pub admin_listen: SocketAddr,
    /// Named admin tokens; empty: the admin listener needs none.
    pub admin_tokens: Vec<crate::api::auth::Token>,
    /// TLS on the Predict/KServe listener; `None`: plaintext.
    pub tls: Option<crate::api::tls::TlsFiles>,
    /// TLS (and with a client CA, mutual TLS) on the admin listener.
    pub admin_tls: Option<crate::api::tls::TlsFiles>,
    /// How often the TLS files are checked for changes.
    pub tls_poll: Duration,
    pub tick: Duration,
    /// Where `/metrics` is served; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// The default shadow CPU budget: 5% of the machine's cores (0.1 of a core on
/// two cores). The README's "Shadow isolation" numbers show why it is small.
pub fn default_shadow_cpu_cores() -> f64 {
    0.05 * default_threads() as f64
}

/// The host name and process id: unique on a host and across a fleet.
pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "modelgate".into());
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    format!("{host}-{}", std::process::id())
}

/// `modelgate-state` beside the model repository.
pub fn default_state_dir(models: &std::path::Path) -> PathBuf {
    models.parent().map_or_else(|| PathBuf::from("modelgate-state"), |p| p.join("modelgate-state"))
}

impl ServeConfig {
    /// What a client may make the gateway hold.
    pub fn limits(&self) -> crate::serving::gateway::Limits {
        crate::serving::gateway::Limits {
            max_response_bytes: self.max_response_bytes.unwrap_or(self.max_request_bytes),
            outcomes: crate::serving::outcome::OutcomeLimits {
                join_bytes: self.outcome_join_mib.saturating_mul(1024 * 1024),
                store_bytes: self.outcome_store_mib.saturating_mul(1024 * 1024),
                metrics_per_model: self.outcome_metrics_per_model,
            },
        }
    }

    /// Defaults for a repository: loopback on an ephemeral port, one thread per core.
    pub fn new(models: impl Into<PathBuf>) -> Self {
        let models = models.into();
        let state_dir = default_state_dir(&models);
        Self {
            shadow_dir: state_dir.join("shadow"),
            state_dir,
            etcd: None,
            etcd_access: crate::store::etcd::EtcdAccess::default(),
            etcd_audit_keep: crate::store::etcd::DEFAULT_AUDIT_KEEP,
            replica_id: default_replica_id(),
            shadow_threads: 1,
            shadow_queue: 16,
            shadow_cpu_cores: Some(default_shadow_cpu_cores()),
            shadow_budget_fixed: false,
            shadow_file_bytes: 64 * 1024 * 1024,
            records: Vec::new(),
            records_queue: 8192,
            kafka_security: Default::default(),
            outcome_join_mib: 32,
            outcome_store_mib: 64,
            outcome_metrics_per_model: 32,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_tokens: Vec::new(),
            tls: None,
            admin_tls: None,
            tls_poll: crate::api::tls::DEFAULT_POLL,
            tick: Duration::from_millis(500),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            models,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ort_lib: None,
            threads: default_threads(),
            max_request_bytes: 64 * 1024 * 1024,
            connections: crate::api::connection::ConnectionLimits::default(),
            max_response_bytes: None,
            drain: Duration::from_secs(10),
            watch: true,
            rescan: Duration::from_secs(2),
            settle: Duration::from_millis(500),
            load: modelgate_registry::LoadSettings::default(),
        }
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
