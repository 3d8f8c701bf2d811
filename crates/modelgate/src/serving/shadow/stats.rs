//! Running totals per (model, shadow version), read over the admin RPC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Totals of every shadow, keyed by model and version. Comparisons are
/// recorded off the request path (on the comparer's background thread), so a
/// Mutex is fine for them. Drops happen on the request path and must never
/// wait for that Mutex: a background thread holding it can be preempted for a
/// long time by busy normal threads (priority inversion), so drops go to
/// lock-free counters handed out when the routing table is built.
#[derive(Debug, Default)]
pub struct ShadowStats {
    totals: Mutex<HashMap<(String, u64), ShadowTotals>>,
    drops: Mutex<HashMap<(String, u64), Arc<AtomicU64>>>,
}

impl ShadowStats {
    fn with(&self, model: &str, version: u64, f: impl FnOnce(&mut ShadowTotals)) {
        let mut map = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry((model.to_string(), version)).or_default());
    }

    /// The drop counter of one shadow, for the request path (`fetch_add`).
    pub fn drop_counter(&self, model: &str, version: u64) -> Arc<AtomicU64> {
        let mut map = self.drops.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry((model.to_string(), version)).or_default())
    }

    fn with_drops(&self, key: &(String, u64), mut t: ShadowTotals) -> ShadowTotals {
        let drops = self.drops.lock().unwrap_or_else(|p| p.into_inner());
        t.dropped = drops.get(key).map_or(0, |c| c.load(Ordering::Relaxed));
        t
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

    /// Every (model, version)'s totals.
    pub fn all(&self) -> Vec<((String, u64), ShadowTotals)> {
        let mut keys: Vec<(String, u64)> =
            self.totals.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        keys.extend(self.drops.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned());
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let t = self.get(&k.0, k.1)?;
                Some((k, t))
            })
            .collect()
    }

    /// A copy of one shadow's totals, drops included.
    pub fn get(&self, model: &str, version: u64) -> Option<ShadowTotals> {
        let key = (model.to_string(), version);
        let known = self.drops.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key);
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        match totals {
            Some(t) => Some(self.with_drops(&key, t)),
            None if known => Some(self.with_drops(&key, ShadowTotals::default())),
            None => None,
        }
    }
}
