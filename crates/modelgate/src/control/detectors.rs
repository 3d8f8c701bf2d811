//! The hard triggers' detectors of each live rollout: per candidate, the
//! accumulated evidence of its three triggers ([`HardTriggers`]), fed every
//! tick with what the candidate served since the previous tick (the
//! difference of its running totals, `ArmNumbers::total`; over-SLA counts
//! from the total's HDR latency histogram).
//!
//! The state lives in memory, like the running totals it is fed from, and
//! is dropped when the rollout ends. A restart starts the detectors again,
//! at zero, on totals that start again too: evidence from before the
//! restart is forgotten (a restart can delay a rollback, never cause one);
//! the budget then holds per process lifetime. In a fleet each replica
//! judges its own traffic with its own detectors, so the false-alarm budget
//! holds per replica.

use std::collections::{BTreeMap, BTreeSet};

use modelgate_rollout::{Fired, HardTriggers, TriggerConfig, TriggerState, WindowCounts};
use modelgate_telemetry::WindowSnapshot;

use crate::control::analysis::ArmNumbers;

/// `snap` as the triggers count it; `over_sla` from its latency histogram.
pub fn counts_of(snap: &WindowSnapshot, sla_ms: Option<f64>) -> WindowCounts {
    let over_sla = sla_ms.map_or(0, |sla| {
        let sla_us = (sla * 1000.0) as u64;
        let max = snap.latency_us.max();
        if max > sla_us { snap.latency_us.count_between(sla_us + 1, max) } else { 0 }
    });
    WindowCounts {
        requests: snap.requests,
        errors: snap.errors,
        nan_inf: snap.nan_inf,
        over_sla,
        p99_ms: snap.p(0.99).map(|us| us as f64 / 1000.0),
    }
}

/// One rollout's detectors, by candidate version.
#[derive(Debug, Clone, Default)]
pub struct RolloutDetectors {
    candidates: BTreeMap<u64, HardTriggers>,
}

/// The candidates the triggers judge: versions other than the champion
/// that take traffic.
fn candidates(champion: u64, arms: &[ArmNumbers]) -> impl Iterator<Item = &ArmNumbers> {
    arms.iter().filter(move |a| a.version != champion && a.weight_bp > 0)
}

impl RolloutDetectors {
    /// Feeds every candidate's detectors with its and the champion's totals
    /// as of `now_ms`.
    pub fn observe(&mut self, cfg: &TriggerConfig, champion: u64, arms: &[ArmNumbers], now_ms: u64) {
        let Some(base) = arms.iter().find(|a| a.version == champion) else { return };
        let base = counts_of(&base.total, cfg.p99_sla_ms);
        for a in candidates(champion, arms) {
            let counts = counts_of(&a.total, cfg.p99_sla_ms);
            self.candidates.entry(a.version).or_default().observe(cfg, now_ms, &base, &counts);
        }
    }

    /// The first trigger any candidate fired, as of the last observation.
    /// Its decision counts the requests each arm served since the rollout
    /// started.
    pub fn fired(&self, cfg: &TriggerConfig, champion: u64, arms: &[ArmNumbers]) -> Option<Fired> {
        let k = candidates(champion, arms).count();
        let base = arms.iter().find(|a| a.version == champion)?;
        candidates(champion, arms).find_map(|a| {
            let mut f = self.candidates.get(&a.version)?.fired(cfg, k)?;
            f.decision.n = [(champion, base.total.requests), (a.version, a.total.requests)].into();
            f.numbers.insert("version".into(), a.version as f64);
            f.reason = format!("version {}: {}", a.version, f.reason);
            Some(f)
        })
    }

    /// Each candidate's trigger states as of the last observation (all
    /// waiting for a candidate not observed yet).
    pub fn states(
        &self,
        cfg: &TriggerConfig,
        champion: u64,
        arms: &[ArmNumbers],
    ) -> BTreeMap<u64, Vec<TriggerState>> {
        let k = candidates(champion, arms).count();
        arms.iter()
            .filter(|a| a.version != champion)
            .map(|a| {
                let states = match self.candidates.get(&a.version) {
                    Some(h) => h.states(cfg, k),
                    None => HardTriggers::default().states(cfg, k),
                };
                (a.version, states)
            })
            .collect()
    }
}

/// Every live rollout's detectors, by rollout id.
#[derive(Debug, Default)]
pub struct Detectors {
    map: BTreeMap<String, RolloutDetectors>,
}

impl Detectors {
    /// `rollout_id`'s detectors, new ones at its first tick.
    pub fn of(&mut self, rollout_id: &str) -> &mut RolloutDetectors {
        self.map.entry(rollout_id.to_string()).or_default()
    }

    /// `rollout_id`'s detectors if it has been ticked.
    pub fn get(&self, rollout_id: &str) -> Option<&RolloutDetectors> {
        self.map.get(rollout_id)
    }

    /// Forgets rollouts that are no longer live.
    pub fn retain(&mut self, live: &BTreeSet<String>) {
        self.map.retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn arm(
        version: u64,
        weight_bp: u32,
        requests: u64,
        nan_inf: u64,
        latencies_ms: &[(u64, u64)],
    ) -> ArmNumbers {
        let mut total = WindowSnapshot::empty(Duration::ZERO);
        total.requests = requests;
        total.nan_inf = nan_inf;
        for (ms, count) in latencies_ms {
            total.latency_us.record_n(ms * 1000, *count).unwrap();
        }
        ArmNumbers {
            version,
            name: format!("v{version}"),
            weight_bp,
            stage_samples: 0,
            total,
            window: WindowSnapshot::empty(Duration::ZERO),
        }
    }

    #[test]
    fn over_sla_counts_come_from_the_totals_histogram() {
        let a = arm(2, 500, 100, 0, &[(1, 90), (10, 10)]);
        let c = counts_of(&a.total, Some(5.0));
        assert_eq!((c.requests, c.over_sla), (100, 10));
        assert_eq!(counts_of(&a.total, None).over_sla, 0);
    }

    #[test]
    fn each_candidate_is_fed_the_difference_of_its_totals_and_the_decision_counts_both_arms() {
        let cfg = TriggerConfig::default();
        let mut d = RolloutDetectors::default();
        // v2 healthy, v3 all NaN; the champion v1; v4 at weight 0 is not judged.
        let arms = |n: u64| {
            vec![
                arm(1, 9000, 10 * n, 0, &[]),
                arm(2, 500, n, 0, &[]),
                arm(3, 500, n, n, &[]),
                arm(4, 0, n, n, &[]),
            ]
        };
        d.observe(&cfg, 1, &arms(20), 500);
        assert!(d.fired(&cfg, 1, &arms(20)).is_none(), "20 requests: under min_samples");
        d.observe(&cfg, 1, &arms(60), 1000);
        let f = d.fired(&cfg, 1, &arms(60)).expect("v3 fires");
        assert_eq!(f.numbers["version"], 3.0);
        assert_eq!(f.numbers["requests"], 60.0, "20 + 40: the two differences");
        assert!(f.reason.starts_with("version 3: NaN/Inf outputs"), "{}", f.reason);
        assert_eq!(f.decision.n, BTreeMap::from([(1, 600), (3, 60)]));
        // Two candidates take traffic: each detector's share is a quarter.
        let b = cfg.bounds(2);
        assert_eq!(f.decision.threshold, b.sprt);
        let states = d.states(&cfg, 1, &arms(60));
        assert_eq!(states.keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(states[&2][0].status, modelgate_rollout::TriggerStatus::Ok);
        assert_eq!(states[&4][0].status, modelgate_rollout::TriggerStatus::Waiting, "never fed");
        let mut all = Detectors::default();
        all.of("r1");
        all.of("r2");
        all.retain(&BTreeSet::from(["r2".to_string()]));
        assert!(all.get("r1").is_none() && all.get("r2").is_some());
    }
}
