//! Layer 4, control: the decisions. [`Controller`] is the facade the API and
//! the server use; behind it each job has its module:
//!
//! - [`state`]: the persisted control state (format, parse, encode, adopt);
//! - [`counts`]: stage counting per counting epoch, and each arm's numbers;
//! - [`judge`]: hard triggers and the decision a tick takes;
//! - [`detectors`]: the hard triggers' accumulated evidence per rollout;
//! - [`alerts`]: one ledger of typed soft-trigger alerts;
//! - [`analysis`]: the always-valid comparisons and business metrics;
//! - [`importance`]: per-feature drift of a challenger;
//! - [`fleet`]: the fleet seam and the pure merges of replicas' reports;
//! - [`error`]: `ControlError` (api/error.rs maps it to statuses).
//!
//! The controller's own work is split the same way: `commands` (operator
//! commands and the one commit path), `sync` (persisting, publishing,
//! following the fleet) and `tick` (count → judge → alert → decide →
//! persist → publish).
//!
//! Every change follows one path under one lock: apply the operation to a
//! copy of the rollout (pure logic in `modelgate-rollout`), append its audit
//! events (fsynced), write the snapshot (atomic), then publish the derived
//! routing table to the gateway in one swap. A failure before the publish
//! leaves the live routing as it was.

pub mod alerts;
pub mod analysis;
mod commands;
pub mod counts;
pub mod detectors;
pub mod error;
pub mod fleet;
pub mod importance;
pub mod judge;
pub mod state;
mod sync;
#[cfg(test)]
mod testing;
mod tick;
mod views;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelgate_registry::VersionState;
use modelgate_rollout::{ArmObservation, AuditEvent, Plan, Rollout, StepVerdict, TriggerConfig};

pub use crate::clock::now_ms;
use crate::control::counts::{Baselines, StageCounts};
pub use crate::control::error::{ControlError, plan_refused};
use crate::control::fleet::{Fleet, Reports};
pub use crate::control::state::{ControlState, Phase, state_name};
use crate::serving::gateway::Gateway;
use crate::store::{EtcdStore, StateStore};

/// Unloads a version from the registry.
pub type Retirer = Box<dyn Fn(&str, u64) + Send + Sync>;

/// What a metrics scrape reads, kept outside the async lock.
#[derive(Debug, Default, Clone)]
pub struct ScrapeView {
    /// model → (strategy, state, stage) of its latest rollout.
    pub rollouts: BTreeMap<String, (String, Phase, usize)>,
    /// (model, version) → the latest PSI against the champion.
    pub psi: BTreeMap<(String, u64), f64>,
    /// (model, version) → the latest feature-importance shift from the champion.
    pub importance_shift: BTreeMap<(String, u64), f64>,
}

/// The control plane.
pub struct Controller {
    gateway: Arc<Gateway>,
    store: Arc<dyn StateStore>,
    /// Fleet mode: leadership and the replicas' reports.
    fleet: Option<Arc<dyn Fleet>>,
    scrape: Mutex<ScrapeView>,
    importance: Arc<Mutex<importance::Checks>>,
    inner: tokio::sync::Mutex<Inner>,
    retirer: std::sync::OnceLock<Retirer>,
    /// `inner.pending.len()`, for scrapes that must not wait for the lock.
    pending_count: std::sync::atomic::AtomicUsize,
}

/// A rollback this replica made while etcd was unreachable, to be written
/// back when it returns.
#[derive(Debug, Clone)]
struct PendingRollback {
    model: String,
    rollout: Rollout,
    events: Vec<AuditEvent>,
}

struct Inner {
    state: ControlState,
    /// The store revision `state` was read at or last written as.
    revision: u64,
    /// Fleet mode: local rollbacks etcd has not seen yet.
    pending: Vec<PendingRollback>,
    baselines: Baselines,
    /// The soft-trigger alerts already raised.
    ledger: alerts::Ledger,
    /// What each arm served since its rollout started.
    running: analysis::RunningTotals,
    /// The hard triggers' detectors of each live rollout.
    detectors: detectors::Detectors,
}

/// A live rollout's numbers as of now: this replica's, and the fleet's.
struct Counted {
    /// This replica's stage counts and arms' windows (what it publishes).
    local: StageCounts,
    local_arms: Vec<analysis::ArmNumbers>,
    /// With every other replica's of the same epoch and rollout.
    counts: StageCounts,
    arms: Vec<analysis::ArmNumbers>,
}

/// Everything GetAnalysis shows for one model.
#[derive(Debug, Clone)]
pub struct AnalysisView {
    pub rollout: Option<Rollout>,
    pub champion: u64,
    pub counts: StageCounts,
    pub arms: Vec<analysis::ArmNumbers>,
    pub settings: Option<analysis::Settings>,
    pub triggers: TriggerConfig,
    /// Candidate version → its hard triggers' states on this replica, as of
    /// the last tick.
    pub trigger_states: BTreeMap<u64, Vec<modelgate_rollout::TriggerState>>,
    pub verdict: StepVerdict,
    pub metrics: Vec<analysis::MetricRow>,
    pub psi: BTreeMap<u64, f64>,
    /// version → the latest feature-importance shift from the champion.
    pub importance_shift: BTreeMap<u64, f64>,
    pub observation: ArmObservation,
}

/// A rollout as GetRollout shows it: the stage's counts, and each arm's
/// numbers (its totals since the rollout started stay visible when a
/// switch starts a new counting epoch).
#[derive(Debug, Clone, Default)]
pub struct RolloutView {
    pub rollout: Option<Rollout>,
    pub counts: StageCounts,
    pub arms: Vec<analysis::ArmNumbers>,
    pub champion: u64,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("store", &self.store).finish()
    }
}

/// An operator command on a running rollout.
#[derive(Debug, Clone)]
pub enum Op {
    Advance,
    Pause,
    Resume,
    Abort,
    Rollback,
    Promote(Option<u64>),
    SetWeights(u32),
}

impl Controller {
    /// Restores the persisted state (champions, rollouts, counts) and
    /// publishes every model's routing.
    pub async fn open(
        gateway: Arc<Gateway>,
        store: Arc<dyn StateStore>,
        fleet: Option<Arc<EtcdStore>>,
    ) -> Result<Self, ControlError> {
        let (state, revision) = match store.load_snapshot().await? {
            Some(snap) => (state::parse_state(&snap)?, snap.revision),
            None => (ControlState::default(), 0),
        };
        let controller = Self {
            gateway,
            store,
            fleet: fleet.map(|f| f as Arc<dyn Fleet>),
            scrape: Mutex::default(),
            importance: Arc::default(),
            pending_count: Default::default(),
            inner: tokio::sync::Mutex::new(Inner {
                baselines: Baselines::restored(&state.counts),
                state,
                revision,
                pending: Vec::new(),
                ledger: Default::default(),
                running: Default::default(),
                detectors: Default::default(),
            }),
            retirer: std::sync::OnceLock::new(),
        };
        {
            let inner = controller.inner.try_lock().map_err(|_| {
                ControlError::Internal("the controller's state is held by another task while it opens".into())
            })?;
            for route in controller.gateway.table().sorted() {
                controller.publish(&inner.state, &route.name);
            }
        }
        Ok(controller)
    }

    /// Connects the registry's unload call, and unloads what was retired
    /// before a restart.
    pub async fn set_retirer(&self, retirer: Retirer) {
        let inner = self.inner.lock().await;
        for (model, versions) in &inner.state.retired {
            for v in versions {
                retirer(model, *v);
            }
        }
        let _ = self.retirer.set(retirer);
    }

    /// The champion of `model` as the control plane knows it.
    fn champion_of(&self, state: &ControlState, model: &str) -> Option<u64> {
        if let Some(r) = state.rollouts.get(model) {
            return Some(r.current_champion());
        }
        if let Some(c) = state.champions.get(model) {
            return Some(*c);
        }
        self.gateway.table().get(model).and_then(|m| m.champion().map(|c| c.version))
    }

    /// Counts `rollout`'s epoch here, takes each arm's numbers, and adds
    /// the fleet's (`others`) to both.
    fn counted(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: &Rollout,
        others: Option<&Reports>,
    ) -> Counted {
        use std::sync::atomic::Ordering::Relaxed;
        let table = self.gateway.table();
        let route = table.get(model);
        let counters = |v: u64| match route.and_then(|m| m.versions.get(&v)).map(|e| &e.state) {
            Some(VersionState::Ready(r)) => {
                let s = r.queue.stats();
                (s.completed.load(Relaxed), s.failed.load(Relaxed))
            }
            _ => (0, 0),
        };
        // In a fleet each replica counts only what it served; the leader sums.
        let carried = match self.fleet {
            None => inner.state.counts.get(model).cloned().unwrap_or_default(),
            Some(_) => StageCounts::default(),
        };
        let local = inner.baselines.count(model, rollout, carried, counters);
        let counts = match others {
            Some(others) => fleet::merge_counts(local.clone(), model, others),
            None => local.clone(),
        };
        let local_arms = self.arm_numbers(&mut inner.running, model, rollout, &counts);
        let mut arms = local_arms.clone();
        if let Some(others) = others {
            // The fleet's windows, totals and samples, so sample sizes, SRM
            // and p99 count them all.
            fleet::merge_arms(&mut arms, model, &rollout.id, others);
        }
        Counted { local, local_arms, counts, arms }
    }

    /// Every arm of `rollout` with its window, its total since the rollout
    /// started and its samples in this epoch; none for a model not loaded.
    fn arm_numbers(
        &self,
        running: &mut analysis::RunningTotals,
        model: &str,
        rollout: &Rollout,
        counts: &StageCounts,
    ) -> Vec<analysis::ArmNumbers> {
        let table = self.gateway.table();
        let Some(route) = table.get(model) else { return Vec::new() };
        counts::arm_numbers(rollout, counts, |v| {
            let stats = route.window(v)?;
            Some((stats.window.snapshot(), running.total(&rollout.id, v, stats, std::time::Instant::now())))
        })
    }

    /// What the rollout logic sees: per-version samples in this stage and,
    /// for an automatic promotion gate, the KPI since the current
    /// evaluation period began ([`observation_of`]), from the outcome store
    /// (which keeps a day: the longest period).
    pub fn observation(&self, model: &str, rollout: &Rollout, counts: &StageCounts) -> ArmObservation {
        let alpha = self.gateway.table().get(model).map(|route| route.config().analysis.alpha);
        let outcomes = self.gateway.outcomes();
        let now = now_ms();
        observation_of(rollout, alpha, counts, now, |version, kpi, since_ms| {
            outcomes.summary(model, version, kpi, now, now.saturating_sub(since_ms))
        })
    }

    /// The hard-trigger settings for `rollout`: its plan's overrides over
    /// model.toml's over the strategy notes' defaults.
    fn trigger_config(&self, model: &str, rollout: Option<&Rollout>) -> TriggerConfig {
        let defaults = TriggerConfig::default();
        let table = self.gateway.table();
        let model_config = match table.get(model) {
            Some(route) => route.config().triggers.overrides().apply(defaults),
            None => defaults,
        };
        match rollout {
            Some(r) => r.triggers.apply(model_config),
            None => model_config,
        }
    }

    /// The step's safety verdict from the always-valid comparisons, and for
    /// a healthy one the comparison that decided it.
    fn verdict(
        &self,
        model: &str,
        rollout: &Rollout,
        arms: &[analysis::ArmNumbers],
    ) -> (StepVerdict, Option<modelgate_rollout::DecidingTest>) {
        let table = self.gateway.table();
        let Some(route) = table.get(model) else {
            return (StepVerdict::Waiting(format!("model {model} is not loaded")), None);
        };
        let step = analysis::StepProgress::of(rollout, now_ms());
        analysis::judge_step(rollout.champion, arms, &analysis::Settings::of(route.config()), step.as_ref())
    }

    /// PSI of each version `rollout` compares with its champion (candidates
    /// that take traffic, and shadows).
    fn prediction_shifts(&self, model: &str, rollout: &Rollout) -> BTreeMap<u64, alerts::Shift> {
        let table = self.gateway.table();
        let Some(route) = table.get(model) else { return BTreeMap::new() };
        let scores = |v: u64| route.window(v).map(|s| s.scores.values());
        let Some(champion) = scores(rollout.champion) else { return BTreeMap::new() };
        let compared = compared_versions(rollout).into_iter().filter_map(|v| Some((v, scores(v)?)));
        alerts::psi_per_version(&champion, compared)
    }

    /// Fleet mode: rollbacks made while etcd was unreachable, not yet written back.
    pub fn pending_rollbacks(&self) -> usize {
        self.pending_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fleet mode: whether etcd is reachable and whether this replica leads.
    pub fn fleet_status(&self) -> Option<(bool, bool)> {
        self.fleet.as_ref().map(|f| (f.connected(), f.is_leader()))
    }

    /// What a metrics scrape shows about rollouts.
    pub fn scrape_view(&self) -> ScrapeView {
        self.scrape.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `model`'s rollout needs `version` loaded now: the one answer
    /// of [`Rollout::versions_in_use`] (while live every version of the plan,
    /// even at 0% weight, such as green before its switch; after a blue/green
    /// promotion blue until its retention ends). Busy state says yes: never
    /// unload on a guess.
    pub fn version_in_use(&self, model: &str, version: u64) -> bool {
        self.inner
            .try_lock()
            .map(|inner| {
                inner
                    .state
                    .rollouts
                    .get(model)
                    .is_some_and(|r| r.versions_in_use(now_ms()).contains(&version))
            })
            .unwrap_or(true)
    }

    /// Ticks every `period` until `shutdown` is cancelled. A tick under way
    /// finishes first (it may be writing state), then the task ends.
    pub fn spawn_ticker(
        self: &Arc<Self>,
        period: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = interval.tick() => me.tick().await,
                }
            }
        })
    }
}

/// The versions a rollout compares with its champion: candidates that take
/// traffic, and shadows.
pub fn compared_versions(rollout: &Rollout) -> Vec<u64> {
    rollout.routing_table().versions().into_iter().filter(|v| *v != rollout.champion).collect()
}

/// The observation [`Controller::observation`] gives `Rollout::tick`:
/// `alpha` (the model's), this epoch's samples and, for an automatic
/// champion-challenger gate, each arm's KPI summary since the current
/// evaluation period started (`summary(version, kpi, since_ms)`; the
/// controller reads the outcome store, the decision simulator running sums).
/// A new period is a new sample: the gate's test restarts, it never slides.
pub fn observation_of(
    rollout: &Rollout,
    alpha: Option<f64>,
    counts: &StageCounts,
    now: modelgate_rollout::Millis,
    mut summary: impl FnMut(
        u64,
        &str,
        modelgate_rollout::Millis,
    ) -> Option<crate::serving::outcome::MetricSummary>,
) -> ArmObservation {
    let mut obs = ArmObservation::new();
    if let Some(alpha) = alpha {
        obs = obs.with_alpha(alpha);
    }
    for (v, n) in &counts.samples {
        obs = obs.with_samples(*v, *n);
    }
    if let (
        Plan::ChampionChallenger {
            gate: modelgate_rollout::PromotionGate::Automatic { kpi, .. },
            challengers,
            ..
        },
        Some(period),
    ) = (&rollout.plan, rollout.evaluation_period(now))
    {
        for v in std::iter::once(rollout.champion).chain(challengers.iter().copied()) {
            if let Some(sum) = summary(v, kpi, period.start_ms) {
                obs = obs.with_kpi_variance(v, sum.mean, sum.n, sum.variance);
            }
        }
    }
    obs
}

#[cfg(test)]
mod observation_tests {
    use modelgate_rollout::{Actor, PromotionGate, RolloutSpec};

    use super::*;
    use crate::serving::outcome::MetricSummary;

    #[test]
    fn the_gate_sees_the_kpi_since_its_period_began() {
        const T0: u64 = 1_700_000_000_000;
        let plan = Plan::ChampionChallenger {
            challengers: vec![2],
            fraction_percent: 10.0,
            gate: PromotionGate::Automatic {
                kpi: "conversion".into(),
                threshold: 0.0,
                window_secs: 3600,
                min_samples: 500,
                higher_is_better: true,
            },
        };
        let spec = RolloutSpec {
            id: "r".into(),
            model: "m".into(),
            salt: 1,
            champion: 1,
            plan,
            shadow: None,
            triggers: Default::default(),
        };
        let rollout = Rollout::start(spec, &[1, 2], T0, &Actor::system(), None).unwrap().0;
        let mut asked = Vec::new();
        let now = T0 + 3_600_000 + 5_000;
        let obs =
            observation_of(&rollout, Some(0.01), &StageCounts::epoch_of(&rollout), now, |v, kpi, since| {
                asked.push((v, kpi.to_owned(), since));
                Some(MetricSummary { n: 600, mean: 0.1, variance: 0.09 })
            });
        // The second hour's period: from T0 + 1 h, not a sliding hour.
        assert_eq!(
            asked,
            [(1, "conversion".to_owned(), T0 + 3_600_000), (2, "conversion".to_owned(), T0 + 3_600_000)]
        );
        assert_eq!(obs.alpha(), 0.01);
        assert_eq!(obs.kpi(2).map(|k| (k.n, k.variance)), Some((600, Some(0.09))));
    }
}
