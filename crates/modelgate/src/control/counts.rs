//! Stage counting: what each version served in the rollout's current
//! counting epoch (its stage and the stage's start, which set-weights and a
//! blue/green switch move too), from the executors' counters, which restart
//! at zero with the process; and each arm's numbers for judging.

use std::collections::BTreeMap;

use modelgate_rollout::{Millis, Rollout};
use modelgate_telemetry::WindowSnapshot;
use serde::{Deserialize, Serialize};

use crate::control::analysis::ArmNumbers;

/// Counts a rollout's decisions need, carried across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageCounts {
    /// The stage these counts belong to.
    pub stage: usize,
    pub stage_started_ms: Millis,
    /// Responses per version in this stage, as of the last tick.
    pub samples: BTreeMap<u64, u64>,
    /// Inference failures per version in this stage, as of the last tick.
    pub errors: BTreeMap<u64, u64>,
}

impl StageCounts {
    /// No counts yet, in `rollout`'s current epoch.
    pub fn epoch_of(rollout: &Rollout) -> Self {
        Self { stage: rollout.stage, stage_started_ms: rollout.stage_started_ms, ..Default::default() }
    }

    /// Whether these counts were made in `rollout`'s current epoch.
    pub fn same_epoch(&self, rollout: &Rollout) -> bool {
        self.stage == rollout.stage && self.stage_started_ms == rollout.stage_started_ms
    }
}

/// The versions counted for `rollout`: those routed or shadowed, and the
/// champion, whose count stays truthful when its weight drops to 0 (blue
/// after the switch).
pub fn counted_versions(rollout: &Rollout) -> Vec<u64> {
    let mut versions = rollout.routing_table().versions();
    versions.push(rollout.champion);
    versions.sort_unstable();
    versions.dedup();
    versions
}

/// This process's view of the executor counters when an epoch's counting
/// began here.
#[derive(Debug, Clone, Default)]
struct Baseline {
    epoch: StageCounts,
    /// Counted before a restart, in the same epoch.
    carried: StageCounts,
    /// version → (completed, failed) when this process first counted it.
    at_start: BTreeMap<u64, (u64, u64)>,
}

/// Each model's baseline.
#[derive(Debug, Default)]
pub struct Baselines(BTreeMap<String, Baseline>);

impl Baselines {
    /// Baselines that carry the persisted counts over a restart.
    pub fn restored(counts: &BTreeMap<String, StageCounts>) -> Self {
        Self(
            counts
                .iter()
                .map(|(model, c)| {
                    let epoch = StageCounts {
                        stage: c.stage,
                        stage_started_ms: c.stage_started_ms,
                        ..Default::default()
                    };
                    (model.clone(), Baseline { epoch, carried: c.clone(), at_start: BTreeMap::new() })
                })
                .collect(),
        )
    }

    /// Starts `model`'s counting again at the next count.
    pub fn forget(&mut self, model: &str) {
        self.0.remove(model);
    }

    /// `rollout`'s counts in its current epoch: `carried` (persisted before
    /// a restart; used only when of the same epoch) plus what the counters
    /// (`version → (completed, failed)`) moved since this process began
    /// counting the epoch. A new epoch starts from the counters as they are.
    pub fn count(
        &mut self,
        model: &str,
        rollout: &Rollout,
        carried: StageCounts,
        counters: impl Fn(u64) -> (u64, u64),
    ) -> StageCounts {
        let epoch = StageCounts::epoch_of(rollout);
        let baseline = self.0.entry(model.to_string()).or_insert_with(|| Baseline {
            epoch: epoch.clone(),
            carried: if carried.same_epoch(rollout) { carried } else { StageCounts::default() },
            at_start: BTreeMap::new(),
        });
        if !baseline.epoch.same_epoch(rollout) {
            *baseline = Baseline { epoch: epoch.clone(), ..Default::default() };
        }
        let mut counts = epoch;
        for v in counted_versions(rollout) {
            let now = counters(v);
            let start = *baseline.at_start.entry(v).or_insert(now);
            let carried_s = baseline.carried.samples.get(&v).copied().unwrap_or(0);
            let carried_e = baseline.carried.errors.get(&v).copied().unwrap_or(0);
            counts.samples.insert(v, carried_s + now.0.saturating_sub(start.0));
            counts.errors.insert(v, carried_e + now.1.saturating_sub(start.1));
        }
        counts
    }
}

/// Every arm of `rollout` (champion first, then each routed arm) with its
/// weight and samples this epoch; `windows(version)` gives its sliding
/// window and its total since the rollout started.
pub fn arm_numbers(
    rollout: &Rollout,
    counts: &StageCounts,
    mut windows: impl FnMut(u64) -> Option<(WindowSnapshot, WindowSnapshot)>,
) -> Vec<ArmNumbers> {
    let mut arms: Vec<(u64, String, u32)> = vec![(rollout.champion, "champion".to_string(), 0)];
    for w in rollout.routing_table().weights() {
        match arms.iter_mut().find(|(v, _, _)| *v == w.version) {
            Some(a) => a.2 = w.basis_points,
            None => arms.push((w.version, w.name.clone(), w.basis_points)),
        }
    }
    arms.into_iter()
        .map(|(version, name, weight_bp)| {
            let (window, total) = windows(version).unwrap_or_else(|| {
                let empty = WindowSnapshot::empty(std::time::Duration::ZERO);
                (empty.clone(), empty)
            });
            ArmNumbers {
                version,
                name,
                weight_bp,
                stage_samples: counts.samples.get(&version).copied().unwrap_or(0),
                total,
                window,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::testing::{T0, blue_green, canary};
    use modelgate_rollout::Actor;

    #[test]
    fn set_weights_starts_a_new_epoch_counted_from_the_counters_as_they_are() {
        let mut rollout = canary(&[10, 50, 100]);
        let mut baselines = Baselines::default();
        let counters = |c: [(u64, u64); 2]| move |v: u64| c[(v - 1) as usize];
        // The process has served before the rollout: its counters are not at 0.
        let first = baselines.count("m", &rollout, StageCounts::default(), counters([(1000, 3), (0, 0)]));
        assert_eq!((first.samples[&1], first.samples[&2]), (0, 0));
        let c = baselines.count("m", &rollout, StageCounts::default(), counters([(1090, 4), (10, 1)]));
        assert_eq!((c.samples[&1], c.samples[&2], c.errors[&1], c.errors[&2]), (90, 10, 1, 1));
        rollout.set_weights(50, T0 + 5_000, &Actor::system(), None).unwrap();
        // The new epoch: nothing counted under the old weights carries over.
        let c = baselines.count("m", &rollout, first.clone(), counters([(1090, 4), (10, 1)]));
        assert_eq!((c.stage_started_ms, c.samples[&1], c.samples[&2]), (T0 + 5_000, 0, 0));
        let c = baselines.count("m", &rollout, StageCounts::default(), counters([(1140, 4), (60, 1)]));
        assert_eq!((c.samples[&1], c.samples[&2], c.errors[&2]), (50, 50, 0));
    }

    #[test]
    fn counts_persisted_before_a_restart_carry_over_only_within_their_epoch() {
        let rollout = canary(&[10, 50, 100]);
        let mut carried = StageCounts::epoch_of(&rollout);
        carried.samples = BTreeMap::from([(1, 900), (2, 100)]);
        let mut baselines = Baselines::restored(&BTreeMap::from([("m".to_string(), carried.clone())]));
        let c = baselines.count("m", &rollout, carried.clone(), |_| (0, 0));
        assert_eq!((c.samples[&1], c.samples[&2]), (900, 100));
        let mut stale = carried;
        stale.stage_started_ms -= 1;
        let c = Baselines::default().count("m", &rollout, stale, |_| (0, 0));
        assert_eq!((c.samples[&1], c.samples[&2]), (0, 0));
    }

    #[test]
    fn blue_keeps_a_count_after_the_switch() {
        let mut rollout = blue_green();
        rollout.advance(T0 + 1_000, &Actor::system(), None).unwrap();
        assert!(!rollout.routing_table().versions().contains(&1), "blue takes no traffic after the switch");
        assert_eq!(counted_versions(&rollout), [1, 2]);
    }
}
