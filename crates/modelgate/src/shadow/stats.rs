//! Running totals per (model, shadow version), read over the admin RPC.

use std::collections::HashMap;
use std::sync::Mutex;

use super::compare::OutputDiff;

/// What a shadow has done so far.
#[derive(Debug, Clone)]
pub struct ShadowTotals {
    pub compared: u64,
    pub errors: u64,
    /// Copies not run because the shadow queue was full.
    pub dropped: u64,
    /// Mean label agreement over compared requests that had a discrete output.
    pub agreement_sum: f64,
    pub agreement_n: u64,
    pub abs_diff_sum: f64,
    pub abs_diff_n: u64,
    pub shadow_nan_inf: u64,
    latency_us: hdrhistogram::Histogram<u64>,
}

impl Default for ShadowTotals {
    fn default() -> Self {
        Self {
            compared: 0,
            errors: 0,
            dropped: 0,
            agreement_sum: 0.0,
            agreement_n: 0,
            abs_diff_sum: 0.0,
            abs_diff_n: 0,
            shadow_nan_inf: 0,
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("1 µs to 10 min at 3 significant digits are valid bounds"),
        }
    }
}

impl ShadowTotals {
    pub fn agreement_rate(&self) -> Option<f64> {
        (self.agreement_n > 0).then(|| self.agreement_sum / self.agreement_n as f64)
    }

    pub fn mean_abs_diff(&self) -> Option<f64> {
        (self.abs_diff_n > 0).then(|| self.abs_diff_sum / self.abs_diff_n as f64)
    }

    pub fn latency_p99_us(&self) -> u64 {
        self.latency_us.value_at_quantile(0.99)
    }
}

/// Totals of every shadow, keyed by model and version. Updated off the
/// request path (in the comparison task), so a Mutex is fine here.
#[derive(Debug, Default)]
pub struct ShadowStats {
    totals: Mutex<HashMap<(String, u64), ShadowTotals>>,
}

impl ShadowStats {
    fn with(&self, model: &str, version: u64, f: impl FnOnce(&mut ShadowTotals)) {
        let mut map = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry((model.to_string(), version)).or_default());
    }

    pub fn record_drop(&self, model: &str, version: u64) {
        self.with(model, version, |t| t.dropped += 1);
    }

    pub fn record_error(&self, model: &str, version: u64) {
        self.with(model, version, |t| t.errors += 1);
    }

    pub fn record(&self, model: &str, version: u64, latency_us: u64, diffs: &[OutputDiff]) {
        self.with(model, version, |t| {
            t.compared += 1;
            let _ = t.latency_us.record(latency_us.max(1));
            for d in diffs {
                if let Some(a) = d.agreement {
                    t.agreement_sum += a;
                    t.agreement_n += 1;
                }
                if let Some(m) = d.mean_abs_diff {
                    t.abs_diff_sum += m;
                    t.abs_diff_n += 1;
                }
                t.shadow_nan_inf += d.shadow_nan_inf as u64;
            }
        });
    }

    /// A copy of one shadow's totals.
    /// Every (model, version)'s totals.
    pub fn all(&self) -> Vec<((String, u64), ShadowTotals)> {
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn get(&self, model: &str, version: u64) -> Option<ShadowTotals> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner()).get(&(model.to_string(), version)).cloned()
    }
}
