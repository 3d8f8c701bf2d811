//! One (model, version)'s metric handles, resolved once per role, so the
//! hot path records a request without a lock or a label map.

use std::sync::OnceLock;
use std::time::Duration;

use modelgate_rollout::Role;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::HistogramFamily;
use super::labels::{ArmLabels, RequestLabels, code_name};

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
    pub(super) model: String,
    pub(super) version: String,
    pub(super) ok: [OnceLock<Counter>; 9],
    pub(super) duration: [OnceLock<Histogram>; 9],
    pub(super) nan_inf: Counter,
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) durations: HistogramFamily<ArmLabels>,
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

    /// The request counter's labels for `role` answered with `code`.
    fn request_labels(&self, role: Role, code: &str) -> RequestLabels {
        let a = self.arm(role);
        RequestLabels { model: a.model, version: a.version, role: a.role, code: code.to_string() }
    }

    /// A request this version answered with OK after `latency`.
    pub fn ok(&self, role: Role, latency: Duration, nan_inf: bool) {
        let i = role_index(role);
        self.ok[i]
            .get_or_init(|| self.requests.get_or_create(&self.request_labels(role, "OK")).clone())
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
        self.requests.get_or_create(&self.request_labels(role, code_name(code))).inc();
    }
}
