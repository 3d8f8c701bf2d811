//! From flags to a [`ServeConfig`]: the checks clap cannot make (flags that
//! need each other, the state URL, the shadow CPU budget, token files) and
//! the conversion itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    ServeArgs, ServeConfig, default_replica_id, default_shadow_cpu_cores, default_state_dir, default_threads,
};

/// `auto`, `off`, or a positive number of cores.
fn parse_cpu_budget(s: &str) -> anyhow::Result<Option<f64>> {
    match s.trim() {
        "auto" | "" => Ok(Some(default_shadow_cpu_cores())),
        "off" | "none" => Ok(None),
        v => match v.parse::<f64>() {
            Ok(c) if c.is_finite() && c > 0.0 && c <= 4096.0 => Ok(Some(c)),
            _ => anyhow::bail!(
                "--shadow-cpu-budget must be a number of cores above 0 (e.g. 0.1), auto or off, got '{v}'"
            ),
        },
    }
}

/// `file`, or an etcd URL for fleet mode.
pub fn parse_state_url(v: &str) -> anyhow::Result<Option<crate::store::etcd::EtcdUrl>> {
    match v.trim() {
        "" | "file" => Ok(None),
        url if url.starts_with("etcd://") => {
            Ok(Some(url.parse().map_err(|e: String| anyhow::anyhow!("--state: {e}"))?))
        }
        other => {
            anyhow::bail!("--state must be `file` or etcd://host:port[,host:port]/prefix, got '{other}'")
        }
    }
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = anyhow::Error;

    fn try_from(a: ServeArgs) -> anyhow::Result<Self> {
        if a.threads == Some(0) {
            anyhow::bail!("--threads must be at least 1");
        }
        let state_dir = a.state_dir.unwrap_or_else(|| default_state_dir(&a.models));
        let mut admin_tokens = Vec::new();
        if let Some(t) = a.admin_token.filter(|t| !t.is_empty()) {
            admin_tokens.push(crate::api::auth::Token::new("admin", t));
        }
        if let Some(f) = &a.admin_token_file {
            admin_tokens.extend(crate::api::auth::read_token_file(f)?);
        }
        let metrics_listen = match a.metrics_listen.trim() {
            "" | "off" | "none" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|e| {
                anyhow::anyhow!("--metrics-listen must be host:port or off, got '{addr}': {e}")
            })?),
        };
        crate::telemetry::otel::sampler(Some(&a.trace_sampler), a.trace_sampler_arg)?;
        let tls = tls_files("--tls-cert", a.tls_cert, "--tls-key", a.tls_key, a.tls_client_ca)?;
        let admin_tls = tls_files(
            "--admin-tls-cert",
            a.admin_tls_cert,
            "--admin-tls-key",
            a.admin_tls_key,
            a.admin_client_ca,
        )?;
        let etcd = parse_state_url(&a.state)?;
        let etcd_access = crate::store::etcd::EtcdAccess {
            ca: a.etcd_ca,
            identity: a.etcd_cert.zip(a.etcd_key),
            user: a.etcd_user.zip(a.etcd_password_file),
        };
        if etcd.is_none() && etcd_access != crate::store::etcd::EtcdAccess::default() {
            anyhow::bail!("--etcd-ca, --etcd-cert and --etcd-user need --state etcd://host:port/prefix");
        }
        if a.etcd_audit_keep == 0 {
            anyhow::bail!("--etcd-audit-keep must keep at least 1 audit event");
        }
        Ok(Self {
            tls,
            admin_tls,
            etcd,
            etcd_access,
            etcd_audit_keep: a.etcd_audit_keep,
            tls_poll: crate::api::tls::DEFAULT_POLL,
            metrics_listen,
            admin_listen: a.admin_listen,
            admin_tokens,
            tick: Duration::from_millis(a.tick_ms),
            records: {
                let mut urls = a.records;
                if let Some(dir) = &a.shadow_dir {
                    urls.push(format!("file://{}", std::path::absolute(dir)?.display()));
                }
                urls
            },
            records_queue: a.records_queue.max(1),
            kafka_security: a.kafka.into(),
            shadow_dir: a.shadow_dir.unwrap_or_else(|| state_dir.join("shadow")),
            state_dir,
            replica_id: match a.replica_id.filter(|r| !r.is_empty()) {
                Some(r) if r.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => r,
                Some(r) => {
                    anyhow::bail!("--replica-id may hold letters, digits, '-', '_' and '.', got '{r}'")
                }
                None => default_replica_id(),
            },
            shadow_threads: a.shadow_threads.max(1),
            shadow_queue: a.shadow_queue.max(1),
            shadow_cpu_cores: parse_cpu_budget(&a.shadow_cpu_budget)?,
            shadow_budget_fixed: a.shadow_budget_fixed,
            shadow_file_bytes: a.shadow_file_bytes,
            outcome_join_mib: u64::from(a.outcome_join_mib),
            outcome_store_mib: u64::from(a.outcome_store_mib),
            outcome_metrics_per_model: a.outcome_metrics_per_model,
            models: a.models,
            listen: a.listen,
            ort_lib: a.ort_lib,
            threads: a.threads.unwrap_or_else(default_threads),
            connections: crate::api::connection::ConnectionLimits::from_args(
                &a.connections,
                a.max_request_bytes,
            )?,
            max_request_bytes: a.max_request_bytes,
            max_response_bytes: a.max_response_bytes,
            drain: Duration::from_secs_f64(a.drain_seconds),
            watch: !a.no_watch,
            rescan: Duration::from_secs_f64(a.rescan_seconds),
            settle: Duration::from_millis(a.settle_ms),
            load: modelgate_registry::LoadSettings {
                default_sessions: 1,
                max_tensor_bytes: a.max_tensor_bytes,
                max_run: (a.max_run_ms > 0).then(|| Duration::from_millis(a.max_run_ms)),
                warm_up_limit: Duration::from_secs(a.warm_up_limit_seconds),
                inline_below: (a.inline_run_us > 0).then(|| Duration::from_micros(a.inline_run_us)),
            },
        })
    }
}

/// A listener's TLS files: both or neither of certificate and key (clap
/// checks this too; the config may come from elsewhere).
fn tls_files(
    cert_flag: &str,
    cert: Option<PathBuf>,
    key_flag: &str,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> anyhow::Result<Option<crate::api::tls::TlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::api::tls::TlsFiles { cert, key, client_ca })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => {
            let ca_flag =
                if cert_flag.starts_with("--admin") { "--admin-client-ca" } else { "--tls-client-ca" };
            anyhow::bail!("{ca_flag} needs {cert_flag} and {key_flag}")
        }
        (Some(_), None) => anyhow::bail!("{cert_flag} needs {key_flag}"),
        (None, Some(_)) => anyhow::bail!("{key_flag} needs {cert_flag}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_cpu_budget_is_auto_off_or_a_positive_number_of_cores() {
        assert_eq!(parse_cpu_budget("auto").unwrap(), Some(default_shadow_cpu_cores()));
        assert_eq!(parse_cpu_budget("off").unwrap(), None);
        assert_eq!(parse_cpu_budget("0.25").unwrap(), Some(0.25));
        for bad in ["0", "-1", "NaN", "inf", "lots"] {
            let e = parse_cpu_budget(bad).unwrap_err().to_string();
            assert!(e.contains("--shadow-cpu-budget") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let p = |s: &str| Some(PathBuf::from(s));
        let both = tls_files("--tls-cert", p("c.pem"), "--tls-key", p("k.pem"), None).unwrap().unwrap();
        assert_eq!(
            (both.cert, both.key, both.client_ca),
            (PathBuf::from("c.pem"), PathBuf::from("k.pem"), None)
        );
        assert!(tls_files("--tls-cert", None, "--tls-key", None, None).unwrap().is_none());
        let e = tls_files("--tls-cert", p("c.pem"), "--tls-key", None, None).unwrap_err().to_string();
        assert_eq!(e, "--tls-cert needs --tls-key");
        let e = tls_files("--admin-tls-cert", None, "--admin-tls-key", None, p("ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--admin-client-ca needs --admin-tls-cert"), "{e}");
    }
}
