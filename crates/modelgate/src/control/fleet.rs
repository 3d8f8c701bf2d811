//! Fleet mode: the replicas' published reports and how the leader merges
//! them. The etcd store is one implementation of [`Fleet`]; the merges are
//! pure functions of the reports.

use std::collections::BTreeMap;

use modelgate_telemetry::{WindowSnapshot, WireSnapshot};
use serde::{Deserialize, Serialize};

use crate::control::analysis::ArmNumbers;
use crate::control::counts::StageCounts;
use crate::control::state::ControlState;
use crate::store::{EtcdStore, StoreError};

/// What the controller needs of a fleet: leadership, and the replicas'
/// published reports.
#[async_trait::async_trait]
pub trait Fleet: Send + Sync {
    /// This replica's name.
    fn replica(&self) -> &str;
    /// This process's key among the reports.
    fn incarnation(&self) -> &str;
    /// Whether the fleet's store answers.
    fn connected(&self) -> bool;
    /// Whether this replica leads (and is connected).
    fn is_leader(&self) -> bool;
    /// Publishes this process's report under its lease.
    async fn publish_counts(&self, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Every published report: (incarnation, bytes, whether its writer lives).
    async fn fleet_counts(&self) -> Result<Vec<(String, Vec<u8>, bool)>, StoreError>;
    /// Deletes the reports of these incarnations.
    async fn delete_reports(&self, incarnations: &[String]) -> Result<(), StoreError>;
}

#[async_trait::async_trait]
impl Fleet for EtcdStore {
    fn replica(&self) -> &str {
        EtcdStore::replica(self)
    }
    fn incarnation(&self) -> &str {
        EtcdStore::incarnation(self)
    }
    fn connected(&self) -> bool {
        EtcdStore::connected(self)
    }
    fn is_leader(&self) -> bool {
        EtcdStore::is_leader(self)
    }
    async fn publish_counts(&self, bytes: Vec<u8>) -> Result<(), StoreError> {
        EtcdStore::publish_counts(self, bytes).await
    }
    async fn fleet_counts(&self) -> Result<Vec<(String, Vec<u8>, bool)>, StoreError> {
        EtcdStore::fleet_counts(self).await
    }
    async fn delete_reports(&self, incarnations: &[String]) -> Result<(), StoreError> {
        EtcdStore::delete_reports(self, incarnations).await
    }
}

/// The other replicas' reports, by incarnation.
pub type Reports = Vec<(String, ReplicaReport)>;

/// What one replica of a fleet publishes each tick under its lease: its own
/// stage counts and, per live rollout, each arm's window and running total.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub counts: BTreeMap<String, StageCounts>,
    #[serde(default)]
    pub arms: BTreeMap<String, ArmReport>,
    /// Whether the process that wrote it still holds its lease; a dead
    /// one's counts and totals still count, its windows no longer do.
    #[serde(skip)]
    pub alive: bool,
}

impl ReplicaReport {
    /// Whether anything in it still counts: stage counts of a live
    /// rollout's current epoch, or arm totals of a live rollout.
    pub fn counts_for(&self, state: &ControlState) -> bool {
        self.counts.iter().any(|(model, c)| state.live(model).is_some_and(|r| c.same_epoch(r)))
            || self.arms.iter().any(|(model, a)| state.live(model).is_some_and(|r| r.id == a.rollout_id))
    }
}

/// One replica's arms of one rollout.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ArmReport {
    pub rollout_id: String,
    /// version → (sliding window, total since the rollout started).
    pub versions: BTreeMap<u64, (WireSnapshot, WireSnapshot)>,
}

impl ArmReport {
    pub fn of(rollout_id: &str, arms: &[ArmNumbers]) -> Self {
        Self {
            rollout_id: rollout_id.to_string(),
            versions: arms.iter().map(|a| (a.version, (a.window.to_wire(), a.total.to_wire()))).collect(),
        }
    }
}

/// Every report but this process's own (its numbers are fresher in
/// memory), earlier incarnations of this replica included; unreadable ones
/// are skipped and logged.
pub fn parse_reports(list: Vec<(String, Vec<u8>, bool)>, me: &str) -> Reports {
    list.into_iter()
        .filter(|(replica, _, _)| replica != me)
        .filter_map(|(replica, bytes, alive)| match serde_json::from_slice::<ReplicaReport>(&bytes) {
            Ok(r) => Some((replica, ReplicaReport { alive, ..r })),
            Err(e) => {
                tracing::warn!(%replica, error = %e, "skipping a replica's unreadable report");
                None
            }
        })
        .collect()
}

/// This replica's counts for `model` plus every other replica's, where they
/// count the same epoch (a report of an earlier stage or rollout does not).
pub fn merge_counts(mut mine: StageCounts, model: &str, others: &[(String, ReplicaReport)]) -> StageCounts {
    for (_, report) in others {
        let Some(c) = report.counts.get(model) else { continue };
        if c.stage != mine.stage || c.stage_started_ms != mine.stage_started_ms {
            continue;
        }
        for (v, n) in &c.samples {
            *mine.samples.entry(*v).or_default() += n;
        }
        for (v, n) in &c.errors {
            *mine.errors.entry(*v).or_default() += n;
        }
    }
    mine
}

/// Adds every other replica's window and total of the same rollout to each arm.
pub fn merge_arms(
    arms: &mut [ArmNumbers],
    model: &str,
    rollout_id: &str,
    others: &[(String, ReplicaReport)],
) {
    for (replica, report) in others {
        let Some(theirs) = report.arms.get(model).filter(|a| a.rollout_id == rollout_id) else { continue };
        for arm in arms.iter_mut() {
            let Some((window, total)) = theirs.versions.get(&arm.version) else { continue };
            match (WindowSnapshot::from_wire(window), WindowSnapshot::from_wire(total)) {
                (Ok(w), Ok(t)) => {
                    // Each replica's window covers the same wall-clock span;
                    // a dead process's window no longer describes traffic.
                    if report.alive {
                        let span = arm.window.span;
                        arm.window.add(&w);
                        arm.window.span = span;
                    }
                    let span = arm.total.span;
                    arm.total.add(&t);
                    arm.total.span = span.max(t.span);
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(%replica, version = arm.version, error = %e, "skipping a replica's unreadable window")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::testing::canary;

    fn report(counts: StageCounts, arms: Option<(&str, &ArmNumbers)>) -> Vec<u8> {
        let r = ReplicaReport {
            counts: BTreeMap::from([("m".to_string(), counts)]),
            arms: arms
                .map(|(id, a)| {
                    BTreeMap::from([("m".to_string(), ArmReport::of(id, std::slice::from_ref(a)))])
                })
                .unwrap_or_default(),
            alive: false,
        };
        serde_json::to_vec(&r).unwrap()
    }

    fn arm(requests: u64) -> ArmNumbers {
        let w = modelgate_telemetry::SlidingWindow::new(std::time::Duration::from_secs(60), 1);
        for _ in 0..requests {
            w.record(std::time::Duration::from_micros(500), false, false);
        }
        let snap = w.snapshot();
        ArmNumbers {
            version: 2,
            name: "canary".into(),
            weight_bp: 1000,
            stage_samples: 0,
            total: snap.clone(),
            window: snap,
        }
    }

    #[test]
    fn the_fleet_counts_its_epoch_and_not_a_stale_report_of_another_rollout() {
        let rollout = canary(&[10, 50, 100]);
        let mut now = StageCounts::epoch_of(&rollout);
        now.samples = BTreeMap::from([(1, 90), (2, 10)]);
        // An earlier rollout's report, still under a live lease, at its own stage 0.
        let mut stale = now.clone();
        stale.stage_started_ms -= 60_000;
        stale.samples = BTreeMap::from([(1, 5000), (2, 5000)]);
        let list = vec![
            ("me".to_string(), report(now.clone(), None), true),
            ("b".to_string(), report(now.clone(), Some((&rollout.id, &arm(40)))), true),
            ("c".to_string(), report(stale, Some(("m-earlier", &arm(4000)))), true),
            ("d".to_string(), b"{not json".to_vec(), true),
        ];
        let others = parse_reports(list, "me");
        assert_eq!(others.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let mut mine = StageCounts::epoch_of(&rollout);
        mine.samples = BTreeMap::from([(1, 900), (2, 100)]);
        let merged = merge_counts(mine, "m", &others);
        assert_eq!((merged.samples[&1], merged.samples[&2]), (990, 110));
        let mut arms = vec![arm(60)];
        merge_arms(&mut arms, "m", &rollout.id, &others);
        assert_eq!((arms[0].window.requests, arms[0].total.requests), (100, 100));
    }

    #[test]
    fn a_report_counts_while_it_describes_a_live_rollout() {
        let rollout = canary(&[10, 50, 100]);
        let mut state = ControlState::default();
        state.rollouts.insert("m".into(), rollout.clone());
        let theirs = ReplicaReport {
            counts: BTreeMap::from([("m".to_string(), StageCounts::epoch_of(&rollout))]),
            ..Default::default()
        };
        assert!(theirs.counts_for(&state));
        let mut later = rollout;
        later.abort(crate::control::testing::T0 + 1, &modelgate_rollout::Actor::system(), None).unwrap();
        state.rollouts.insert("m".into(), later);
        assert!(!theirs.counts_for(&state));
    }
}
