//! The control plane: rollout state per model, admin operations, the
//! controller tick, persistence and publishing.
//!
//! Every change follows one path under one lock: apply the operation to a
//! copy of the rollout (pure logic in `modelgate-rollout`), append its audit
//! events (fsynced), write the snapshot (atomic), then publish the derived
//! routing table to the gateway in one swap. A failure before the publish
//! leaves the live routing as it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use modelgate_registry::VersionState;
use modelgate_rollout::{
    Actor, ArmObservation, AuditEvent, Millis, Plan, PlanError, Rollout, RolloutError, RolloutSpec,
    RolloutState, StepVerdict, TriggerConfig,
};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::control::analysis;
use crate::serving::gateway::{Gateway, Policy};
use crate::store::{EtcdStore, FleetEvent, Snapshot, StateStore, StoreError};
use modelgate_rollout::analysis::PsiLevel;

pub use crate::clock::now_ms;

/// A rollout state's name in the API, metrics and the CLI.
pub fn state_name(s: &RolloutState) -> &'static str {
    match s {
        RolloutState::Running => "running",
        RolloutState::Paused => "paused",
        RolloutState::Promoted { .. } => "promoted",
        RolloutState::RolledBack { .. } => "rolled_back",
        RolloutState::Aborted { .. } => "aborted",
        RolloutState::Completed => "completed",
    }
}

/// Counts a rollout's decisions need, carried across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageCounts {
    /// The stage these counts belong to.
    pub stage: usize,
    pub stage_started_ms: Millis,
    /// Responses per version in this stage, as of the last tick.
    pub samples: BTreeMap<u64, u64>,
    /// Inference failures per version in this stage, as of the last tick.
    pub errors: BTreeMap<u64, u64>,
}

/// The format of the state snapshot this build writes.
pub const STATE_FORMAT: u32 = 0;
/// Every snapshot format this build reads. A snapshot in any other (written
/// by a newer build) stops start-up rather than being misread and then
/// overwritten.
pub const KNOWN_STATE_FORMATS: &[u32] = &[STATE_FORMAT];

/// Everything persisted: champions, rollouts, and their stage counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlState {
    pub format: u32,
    pub champions: BTreeMap<String, u64>,
    pub rollouts: BTreeMap<String, Rollout>,
    pub counts: BTreeMap<String, StageCounts>,
    /// Versions unloaded because nothing uses them any more (blue after its
    /// retention); unloaded again after a restart.
    #[serde(default)]
    pub retired: BTreeMap<String, Vec<u64>>,
}

impl Default for ControlState {
    fn default() -> Self {
        Self {
            format: STATE_FORMAT,
            champions: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            counts: BTreeMap::new(),
            retired: BTreeMap::new(),
        }
    }
}

/// Unloads a version from the registry.
pub type Retirer = Box<dyn Fn(&str, u64) + Send + Sync>;

/// This process's view of the executor counters when a stage's counting began
/// here (counters restart at zero with the process).
#[derive(Debug, Clone, Default)]
struct Baseline {
    stage: usize,
    stage_started_ms: Millis,
    carried: StageCounts,
    at_start: BTreeMap<u64, (u64, u64)>,
}

/// What a metrics scrape reads, kept outside the async lock.
#[derive(Debug, Default, Clone)]
pub struct ScrapeView {
    /// model → (strategy, state, stage) of its latest rollout.
    pub rollouts: BTreeMap<String, (String, &'static str, usize)>,
    /// (model, version) → the latest PSI against the champion.
    pub psi: BTreeMap<(String, u64), f64>,
    /// (model, version) → the latest feature-importance shift from the champion.
    pub importance_shift: BTreeMap<(String, u64), f64>,
}

/// The feature-importance checks (`importance.rs`): when each model's last
/// one started, which are running, and what they found.
#[derive(Debug, Default)]
struct ImportanceChecks {
    /// model → (rollout id, ms) of its last check.
    last: BTreeMap<String, (String, Millis)>,
    running: std::collections::BTreeSet<String>,
    /// (rollout id, version) → what the latest check found.
    found: BTreeMap<(String, u64), ImportanceFinding>,
}

#[derive(Debug, Clone)]
struct ImportanceFinding {
    shift: f64,
    rows: usize,
    /// The features whose share moved most: (index, champion's, candidate's).
    moves: Vec<(usize, f64, f64)>,
}

/// How often a running rollout's feature importance is measured again.
const IMPORTANCE_EVERY_MS: Millis = 60_000;

/// The control plane.
pub struct Controller {
    gateway: Arc<Gateway>,
    store: Arc<dyn StateStore>,
    /// Fleet mode: the same store, seen as etcd (leadership, replica counts).
    fleet: Option<Arc<EtcdStore>>,
    scrape: std::sync::Mutex<ScrapeView>,
    importance: Arc<std::sync::Mutex<ImportanceChecks>>,
    inner: tokio::sync::Mutex<Inner>,
    retirer: std::sync::OnceLock<Retirer>,
    /// Alerts raised during a tick, written when it ends.
    outbox: std::sync::Mutex<Vec<AuditEvent>>,
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
    baselines: BTreeMap<String, Baseline>,
    /// The highest PSI level already alerted per (rollout id, version).
    alerted: BTreeMap<(String, u64), PsiLevel>,
    /// Other alerts already raised, per (rollout id, version, trigger).
    raised: std::collections::BTreeSet<(String, u64, &'static str)>,
    /// What each arm served since its rollout started.
    running: analysis::RunningTotals,
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
    pub verdict: StepVerdict,
    pub metrics: Vec<analysis::MetricRow>,
    pub psi: BTreeMap<u64, f64>,
    /// version → the latest feature-importance shift from the champion.
    pub importance_shift: BTreeMap<u64, f64>,
    pub observation: ArmObservation,
}

/// Scores each side needs before PSI is computed.
const PSI_MIN_SCORES: usize = 200;
const PSI_BINS: usize = 10;

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("store", &self.store).finish()
    }
}

/// A control-plane failure, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    #[error("model '{0}' has no rollout")]
    NoRollout(String),
    #[error(
        "model '{model}' already has a running {strategy} rollout ({id}); finish, abort or roll it back first"
    )]
    Busy { model: String, strategy: String, id: String },
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    /// Another replica changed the rollout first; this change was not made.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The stored state was written in a format this build does not read.
    #[error(
        "{origin} holds rollout state in format {found}, which this build does not read (it knows format {known}); nothing was read or written: run the modelgate that wrote it, or move the state aside to start without rollout state"
    )]
    UnknownStateFormat { origin: String, found: String, known: String },
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::ModelNotFound(_) => Code::NotFound,
            ControlError::NoRollout(_) | ControlError::Busy { .. } | ControlError::Precondition(_) => {
                Code::FailedPrecondition
            }
            ControlError::Invalid(_) => Code::InvalidArgument,
            ControlError::Conflict(_) => Code::Aborted,
            ControlError::Store(_) => Code::Unavailable,
            ControlError::UnknownStateFormat { .. } => Code::FailedPrecondition,
        };
        Status::new(code, e.to_string())
    }
}

/// A plan the rollout crate refused. A plan that is wrong whatever the
/// server holds (a step out of range, a duplicate, an arm too small for a
/// bucket) is the client's mistake, INVALID_ARGUMENT; one naming a version
/// that is not READY, or the champion itself, depends on the server's state,
/// FAILED_PRECONDITION.
pub fn plan_refused(e: impl Into<RolloutError>) -> ControlError {
    let e = e.into();
    match &e {
        RolloutError::Plan(PlanError::VersionNotReady { .. } | PlanError::IsChampion { .. }) => {
            ControlError::Precondition(e.to_string())
        }
        RolloutError::Plan(_) | RolloutError::Triggers(_) | RolloutError::NestedShadow => {
            ControlError::Invalid(e.to_string())
        }
        _ => ControlError::Precondition(e.to_string()),
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

fn is_live(r: &Rollout) -> bool {
    matches!(r.state, RolloutState::Running | RolloutState::Paused)
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
            Some(snap) => (parse_state(&snap)?, snap.revision),
            None => (ControlState::default(), 0),
        };
        let mut baselines = BTreeMap::new();
        for (model, counts) in &state.counts {
            baselines.insert(
                model.clone(),
                Baseline {
                    stage: counts.stage,
                    stage_started_ms: counts.stage_started_ms,
                    carried: counts.clone(),
                    at_start: BTreeMap::new(),
                },
            );
        }
        let controller = Self {
            gateway,
            store,
            fleet,
            scrape: std::sync::Mutex::new(ScrapeView::default()),
            importance: Arc::default(),
            outbox: std::sync::Mutex::new(Vec::new()),
            pending_count: Default::default(),
            inner: tokio::sync::Mutex::new(Inner {
                state,
                revision,
                pending: Vec::new(),
                baselines,
                alerted: BTreeMap::new(),
                raised: Default::default(),
                running: Default::default(),
            }),
            retirer: std::sync::OnceLock::new(),
        };
        {
            let inner = controller.inner.try_lock().map_err(|_| ControlError::Precondition("busy".into()))?;
            for model in controller.gateway.table().models.keys() {
                controller.publish(&inner.state, model);
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

    /// Retires blue once a blue/green rollout no longer needs it.
    fn retire_unused(&self, inner: &mut Inner, model: &str, now: Millis) -> bool {
        let Some(r) = inner.state.rollouts.get(model) else { return false };
        let Plan::BlueGreen { .. } = r.plan else { return false };
        let blue = r.champion;
        if r.versions_in_use(now).contains(&blue) || resulting_champion(r) == blue {
            return false;
        }
        let retired = inner.state.retired.entry(model.to_string()).or_default();
        if retired.contains(&blue) {
            return false;
        }
        retired.push(blue);
        match self.retirer.get() {
            Some(retire) => {
                tracing::info!(model, version = blue, "blue/green retention over; unloading blue");
                retire(model, blue);
            }
            None => tracing::info!(
                model,
                version = blue,
                "blue/green retention over; blue stays loaded (repository watch is off)"
            ),
        }
        true
    }

    /// The champion of `model` as the control plane knows it.
    fn champion_of(&self, state: &ControlState, model: &str) -> Option<u64> {
        if let Some(r) = state.rollouts.get(model) {
            return Some(resulting_champion(r));
        }
        if let Some(c) = state.champions.get(model) {
            return Some(*c);
        }
        self.gateway.table().models.get(model).and_then(|m| m.champion().map(|c| c.version))
    }

    /// Publishes `model`'s policy from the state.
    fn publish(&self, state: &ControlState, model: &str) {
        {
            let mut scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
            match state.rollouts.get(model) {
                Some(r) => {
                    scrape.rollouts.insert(
                        model.to_string(),
                        (r.plan.strategy().to_string(), state_name(&r.state), r.stage),
                    );
                }
                None => {
                    scrape.rollouts.remove(model);
                }
            }
            if !state.rollouts.get(model).is_some_and(is_live) {
                scrape.psi.retain(|(m, _), _| m != model);
                scrape.importance_shift.retain(|(m, _), _| m != model);
                self.gateway.forget_input_samples(model);
            }
        }
        let Some(champion) = self.champion_of(state, model) else { return };
        let policy = match state.rollouts.get(model) {
            Some(r) if is_live(r) => {
                Policy { champion, routing: Some(r.routing_table()), rollout_id: Some(r.id.clone()) }
            }
            _ => Policy { champion, routing: None, rollout_id: None },
        };
        if policy.routing.as_ref().is_some_and(|t| t.arms().len() > 1) {
            // Requests of a traffic split are remembered for outcome joins:
            // reserve that memory (~10 ms for the default 32 MiB, once) off
            // the request path.
            // NOTE: on tokio's blocking pool, which the runtime owns and
            // waits for at shutdown, not on a thread of its own that nobody
            // joins; inline where there is no runtime (it takes ~10 ms).
            let outcomes = std::sync::Arc::clone(self.gateway.outcomes());
            if !outcomes.reserved() {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(move || outcomes.reserve())),
                    Err(_) => outcomes.reserve(),
                }
            }
        }
        self.gateway.set_policy(model, Some(policy));
    }

    /// Persists events and the snapshot in one commit conditioned on the
    /// revision `inner.state` was read at; called with the lock held. On a
    /// conflict (another replica wrote first) nothing is written, the
    /// current state is read back and published, and the caller's change is
    /// refused.
    async fn persist(
        &self,
        inner: &mut Inner,
        state: &ControlState,
        events: &[AuditEvent],
    ) -> Result<(), ControlError> {
        let lines = events
            .iter()
            .map(|e| serde_json::to_string(e).map_err(|e| ControlError::Precondition(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = serde_json::to_vec(state).map_err(|e| ControlError::Precondition(e.to_string()))?;
        match self.store.commit(inner.revision, bytes, lines).await {
            Ok(revision) => {
                inner.revision = revision;
                self.count_events(events);
                Ok(())
            }
            Err(StoreError::Conflict { current }) => {
                if let Ok(Some(snap)) = self.store.load_snapshot().await {
                    self.adopt(inner, snap);
                }
                Err(ControlError::Conflict(format!(
                    "the rollout state changed on another replica (revision {current}) before this change was written; nothing was changed here — look at the rollout again and retry"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes a state written elsewhere (another replica, or etcd after a
    /// reconnect) as this replica's, and publishes what changed.
    fn adopt(&self, inner: &mut Inner, snap: Snapshot) -> bool {
        if snap.revision <= inner.revision {
            return false;
        }
        let mut state = match parse_state(&snap) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(revision = snap.revision, error = %e, "ignoring a fleet state that does not parse");
                return false;
            }
        };
        // What this replica unloaded is its own business.
        state.retired = std::mem::take(&mut inner.state.retired);
        let old = std::mem::replace(&mut inner.state, state);
        inner.revision = snap.revision;
        let mut models: std::collections::BTreeSet<String> = old.rollouts.keys().cloned().collect();
        models.extend(inner.state.rollouts.keys().cloned());
        models.extend(old.champions.keys().cloned());
        models.extend(inner.state.champions.keys().cloned());
        let mut changed = 0;
        for model in models {
            let before = (old.rollouts.get(&model).map(rollout_key), old.champions.get(&model));
            let after =
                (inner.state.rollouts.get(&model).map(rollout_key), inner.state.champions.get(&model));
            if before != after {
                changed += 1;
                tracing::info!(model = %model, revision = snap.revision, "applying a rollout change made elsewhere in the fleet");
                inner.baselines.remove(&model);
                self.publish(&inner.state, &model);
            }
        }
        changed > 0
    }

    /// Applies what the etcd store reports, until the store goes away.
    pub fn spawn_follower(
        self: &Arc<Self>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<FleetEvent>,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    FleetEvent::Changed(snap) => {
                        let mut inner = me.inner.lock().await;
                        me.adopt(&mut inner, snap);
                    }
                    FleetEvent::Connected(snap) => {
                        let mut inner = me.inner.lock().await;
                        me.resync(&mut inner, snap).await;
                    }
                    FleetEvent::Disconnected(reason) => {
                        tracing::warn!(%reason, "fleet state store lost; serving the last known routing");
                    }
                }
            }
        })
    }

    /// After (re)connecting: writes back the rollbacks made while etcd was
    /// away, then takes the fleet's state.
    async fn resync(&self, inner: &mut Inner, snap: Option<Snapshot>) {
        let mut snap = snap;
        for p in std::mem::take(&mut inner.pending) {
            let Some(current) = &snap else { break };
            let Ok(remote) = parse_state(current) else { break };
            let lines: Vec<String> = p.events.iter().filter_map(|e| serde_json::to_string(e).ok()).collect();
            let still_live =
                remote.rollouts.get(&p.model).is_some_and(|r| r.id == p.rollout.id && is_live(r));
            let result = if still_live {
                // The fleet still runs what this replica rolled back: roll it
                // back everywhere (safety first).
                let mut next = remote.clone();
                next.champions.insert(p.model.clone(), resulting_champion(&p.rollout));
                next.rollouts.insert(p.model.clone(), p.rollout.clone());
                // Never an empty write: a state that does not serialise is
                // an internal error, logged, and the rollback stays pending.
                let bytes = match serde_json::to_vec(&next) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::error!(model = %p.model, error = %e, "cannot serialise the fleet state; the rollback stays pending");
                        inner.pending.push(p);
                        continue;
                    }
                };
                let origin = current.origin.clone();
                self.store.commit(current.revision, bytes.clone(), lines).await.map(|rev| {
                    snap = Some(Snapshot { bytes, revision: rev, origin });
                })
            } else {
                // Already over in the fleet: the local rollback is still a
                // fact for the audit log.
                self.store.append_events(lines).await
            };
            match result {
                Ok(()) => {
                    tracing::info!(model = %p.model, rollout = %p.rollout.id, written_back = still_live, "a rollback made while etcd was unreachable is recorded in the fleet")
                }
                Err(e) => {
                    tracing::warn!(model = %p.model, error = %e, "cannot write back a local rollback yet");
                    inner.pending.push(p);
                }
            }
        }
        self.pending_count.store(inner.pending.len(), std::sync::atomic::Ordering::Relaxed);
        let Some(snap) = snap else { return };
        // After a partition the fleet's revision can be anything: take it as is.
        inner.revision = 0;
        self.adopt(inner, snap);
    }

    /// Counts recorded audit events in the metrics: every action, rollbacks
    /// by trigger ("manual" for an operator's), alerts by trigger.
    fn count_events(&self, events: &[AuditEvent]) {
        let metrics = self.gateway.metrics();
        for e in events {
            let action = serde_json::to_value(e.action).ok();
            let action = action.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown");
            metrics.rollout_event(&e.model, action);
            // Each decision is its own short trace, with its numbers.
            let span = tracing::info_span!(
                target: "modelgate::span",
                parent: None,
                "rollout.decision",
                model = %e.model,
                action,
                rollout.id = %e.rollout_id,
                who = %e.actor.who,
                version = e.version.map(|v| v as i64),
                trigger = e.trigger.as_deref(),
                reason = e.reason.as_deref(),
            );
            if !span.is_disabled() {
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                for (k, v) in &e.numbers {
                    span.set_attribute(format!("numbers.{k}"), *v);
                }
            }
            drop(span);
            match e.action {
                modelgate_rollout::Action::RolledBack => {
                    metrics.rollback(&e.model, e.trigger.as_deref().unwrap_or("manual"))
                }
                modelgate_rollout::Action::Alert => {
                    metrics.alert(&e.model, e.trigger.as_deref().unwrap_or("unknown"))
                }
                _ => {}
            }
        }
    }

    fn ready_versions(&self, model: &str) -> Result<Vec<u64>, ControlError> {
        let table = self.gateway.table();
        let m = table.models.get(model).ok_or_else(|| ControlError::ModelNotFound(model.to_string()))?;
        Ok(m.ready().map(|r| r.version).collect())
    }

    /// Candidates must take the champion's inputs unchanged.
    fn check_signatures(&self, model: &str, champion: u64, versions: &[u64]) -> Result<(), ControlError> {
        let table = self.gateway.table();
        let m = table.models.get(model).ok_or_else(|| ControlError::ModelNotFound(model.to_string()))?;
        let sig = |v: u64| match m.versions.get(&v).map(|e| &e.state) {
            Some(VersionState::Ready(r)) => Some(r.model().signature().clone()),
            _ => None,
        };
        let Some(base) = sig(champion) else {
            return Err(ControlError::Precondition(format!("champion version {champion} is not READY")));
        };
        for &v in versions {
            if v == champion {
                continue;
            }
            let Some(s) = sig(v) else {
                return Err(ControlError::Precondition(format!(
                    "version {v} of model '{model}' is not READY"
                )));
            };
            if !base.inputs_compatible_with(&s) {
                return Err(ControlError::Precondition(format!(
                    "version {v} of model '{model}' does not take the champion's (v{champion}) inputs"
                )));
            }
        }
        Ok(())
    }

    /// Starts a plan for `model`.
    pub async fn start(
        &self,
        model: &str,
        plan: Plan,
        triggers: modelgate_rollout::TriggerOverrides,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<Rollout, ControlError> {
        let mut inner = self.inner.lock().await;
        let ready = self.ready_versions(model)?;
        let champion = self
            .champion_of(&inner.state, model)
            .ok_or_else(|| ControlError::Precondition(format!("model '{model}' has no READY champion")))?;
        plan.validate(champion, &ready).map_err(plan_refused)?;
        self.check_signatures(model, champion, &plan.versions(champion))?;
        // One traffic-splitting plan at a time; a shadow runs beside any of them.
        let mut side_shadow = None;
        let mut events = Vec::new();
        let mut next = inner.state.clone();
        if let Some(live) = inner.state.rollouts.get(model).filter(|r| is_live(r)) {
            match (&live.plan, &plan) {
                (Plan::Shadow(_), Plan::Shadow(_)) => {
                    return Err(ControlError::Busy {
                        model: model.to_string(),
                        strategy: live.plan.strategy().to_string(),
                        id: live.id.clone(),
                    });
                }
                (_, Plan::Shadow(shadow)) => {
                    let mut r = live.clone();
                    let ev = r
                        .attach_shadow(shadow.clone(), &ready, now_ms(), actor, reason)
                        .map_err(plan_refused)?;
                    self.commit(&mut inner, model, r, ev).await?;
                    return Ok(inner.state.rollouts[model].clone());
                }
                (Plan::Shadow(shadow), _) => {
                    // The new traffic plan takes the running shadow along.
                    let mut old = live.clone();
                    let why = format!("its shadow continues beside the new {} rollout", plan.strategy());
                    events.extend(
                        old.complete(now_ms(), actor, Some(why))
                            .map_err(|e| ControlError::Precondition(e.to_string()))?,
                    );
                    side_shadow = Some(shadow.clone());
                    next.rollouts.insert(model.to_string(), old);
                }
                _ => {
                    return Err(ControlError::Busy {
                        model: model.to_string(),
                        strategy: live.plan.strategy().to_string(),
                        id: live.id.clone(),
                    });
                }
            }
        }
        let now = now_ms();
        let salt: u64 = uuid::Uuid::new_v4().as_u64_pair().0;
        let id = format!("{model}-{now}");
        let (rollout, started) = Rollout::start(
            RolloutSpec { id, model: model.to_string(), salt, champion, plan, shadow: side_shadow, triggers },
            &ready,
            now,
            actor,
            reason,
        )
        .map_err(plan_refused)?;
        events.extend(started);
        next.rollouts.insert(model.to_string(), rollout.clone());
        next.counts.insert(
            model.to_string(),
            StageCounts {
                stage: rollout.stage,
                stage_started_ms: rollout.stage_started_ms,
                ..Default::default()
            },
        );
        self.persist(&mut inner, &next, &events).await?;
        inner.state = next;
        inner.baselines.remove(model);
        self.publish(&inner.state, model);
        Ok(rollout)
    }

    /// Applies an operator command.
    pub async fn apply(
        &self,
        model: &str,
        op: Op,
        actor: &Actor,
        reason: Option<String>,
        expected_stage: Option<usize>,
    ) -> Result<Rollout, ControlError> {
        let mut inner = self.inner.lock().await;
        let mut rollout = inner
            .state
            .rollouts
            .get(model)
            .cloned()
            .ok_or_else(|| ControlError::NoRollout(model.to_string()))?;
        if let Some(want) = expected_stage
            && (rollout.stage != want || !is_live(&rollout))
        {
            return Err(ControlError::Conflict(format!(
                "rollout {} of model '{model}' is {} at stage {}, not stage {} (stages numbered from 1): it changed since you looked; nothing was changed",
                rollout.id,
                state_name(&rollout.state),
                rollout.stage + 1,
                want + 1
            )));
        }
        let now = now_ms();
        let result = match op {
            Op::Advance => rollout.advance(now, actor, reason),
            Op::Pause => rollout.pause(now, actor, reason),
            Op::Resume => rollout.resume(now, actor, reason),
            Op::Abort => rollout.abort(now, actor, reason),
            Op::Rollback => rollout.rollback(now, actor, reason),
            Op::Promote(v) => {
                let v = v.or_else(|| rollout.candidate()).ok_or_else(|| {
                    ControlError::Invalid(
                        "this rollout has several candidates; name the version to promote".into(),
                    )
                })?;
                rollout.promote(v, now, actor, reason)
            }
            Op::SetWeights(p) => rollout.set_weights(p, now, actor, reason),
        };
        let events = result.map_err(|e| ControlError::Precondition(e.to_string()))?;
        self.commit(&mut inner, model, rollout, events).await?;
        Ok(inner.state.rollouts[model].clone())
    }

    async fn commit(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: Rollout,
        mut events: Vec<AuditEvent>,
    ) -> Result<(), ControlError> {
        // Every event carries the numbers the system had when it was made
        // (an operator's pause, rollback or promotion, blue's retention
        // ending), so a post-incident review can replay it: each arm's
        // window and running totals, as routed before the change.
        if events.iter().any(|e| e.numbers.is_empty()) {
            let shown = inner
                .state
                .rollouts
                .get(model)
                .filter(|r| r.id == rollout.id)
                .cloned()
                .unwrap_or_else(|| rollout.clone());
            let counts = inner.state.counts.get(model).cloned().unwrap_or_default();
            let numbers = analysis::event_numbers(&self.arm_numbers(inner, model, &shown, &counts));
            for e in events.iter_mut().filter(|e| e.numbers.is_empty()) {
                e.numbers = numbers.clone();
            }
        }
        let mut next = inner.state.clone();
        if !is_live(&rollout) {
            next.champions.insert(model.to_string(), resulting_champion(&rollout));
        }
        let counts = next.counts.entry(model.to_string()).or_default();
        if counts.stage != rollout.stage || counts.stage_started_ms != rollout.stage_started_ms {
            *counts = StageCounts {
                stage: rollout.stage,
                stage_started_ms: rollout.stage_started_ms,
                ..Default::default()
            };
            inner.baselines.remove(model);
        }
        next.rollouts.insert(model.to_string(), rollout);
        self.persist(inner, &next, &events).await?;
        inner.state = next;
        self.publish(&inner.state, model);
        Ok(())
    }

    /// The rollout of `model`, if any, with this stage's counts.
    pub async fn get(&self, model: &str) -> Result<(Option<Rollout>, StageCounts, u64), ControlError> {
        let others = self.fleet_reports().await;
        let mut inner = self.inner.lock().await;
        if !self.gateway.table().models.contains_key(model) && !inner.state.rollouts.contains_key(model) {
            return Err(ControlError::ModelNotFound(model.to_string()));
        }
        let champion = self.champion_of(&inner.state, model).unwrap_or(0);
        let rollout = inner.state.rollouts.get(model).cloned();
        // Live rollouts show counts as of now, not as of the last tick.
        let counts = match &rollout {
            Some(r) if is_live(r) => {
                let local = self.observe(&mut inner, model, r);
                match &others {
                    Some(o) => merge_counts(local, model, o),
                    None => local,
                }
            }
            _ => inner.state.counts.get(model).cloned().unwrap_or_default(),
        };
        Ok((rollout, counts, champion))
    }

    /// The audit log, oldest first, filtered.
    pub async fn events(
        &self,
        model: Option<&str>,
        since_ms: Millis,
        until_ms: Millis,
    ) -> Result<Vec<(AuditEvent, String)>, ControlError> {
        let mut out = Vec::new();
        for line in self.store.read_events_since(since_ms).await? {
            let Ok(e) = serde_json::from_str::<AuditEvent>(&line) else { continue };
            if model.is_some_and(|m| m != e.model)
                || e.at_ms < since_ms
                || (until_ms > 0 && e.at_ms > until_ms)
            {
                continue;
            }
            out.push((e, line));
        }
        Ok(out)
    }

    /// Counts this stage's samples and errors per version from the executor
    /// counters (plus what was carried over a restart).
    fn observe(&self, inner: &mut Inner, model: &str, rollout: &Rollout) -> StageCounts {
        let table = self.gateway.table();
        let counters = |v: u64| -> (u64, u64) {
            use std::sync::atomic::Ordering::Relaxed;
            match table.models.get(model).and_then(|m| m.versions.get(&v)).map(|e| &e.state) {
                Some(VersionState::Ready(r)) => {
                    let s = r.queue.stats();
                    (s.completed.load(Relaxed), s.failed.load(Relaxed))
                }
                _ => (0, 0),
            }
        };
        let versions = rollout.routing_table().versions();
        // In a fleet each replica counts only what it served; the leader sums.
        let carried = match self.fleet {
            None => inner.state.counts.get(model).cloned().unwrap_or_default(),
            Some(_) => StageCounts::default(),
        };
        let baseline = inner.baselines.entry(model.to_string()).or_insert_with(|| Baseline {
            stage: rollout.stage,
            stage_started_ms: rollout.stage_started_ms,
            carried: if carried.stage == rollout.stage && carried.stage_started_ms == rollout.stage_started_ms
            {
                carried
            } else {
                StageCounts::default()
            },
            at_start: BTreeMap::new(),
        });
        if baseline.stage != rollout.stage || baseline.stage_started_ms != rollout.stage_started_ms {
            *baseline = Baseline {
                stage: rollout.stage,
                stage_started_ms: rollout.stage_started_ms,
                ..Default::default()
            };
        }
        let mut counts = StageCounts {
            stage: rollout.stage,
            stage_started_ms: rollout.stage_started_ms,
            ..Default::default()
        };
        for v in versions {
            let now = counters(v);
            let start = *baseline.at_start.entry(v).or_insert(now);
            let carried_s = baseline.carried.samples.get(&v).copied().unwrap_or(0);
            let carried_e = baseline.carried.errors.get(&v).copied().unwrap_or(0);
            counts.samples.insert(v, carried_s + now.0.saturating_sub(start.0));
            counts.errors.insert(v, carried_e + now.1.saturating_sub(start.1));
        }
        counts
    }

    /// What the rollout logic sees: per-version samples in this stage and,
    /// for an automatic promotion gate, KPI means over the gate's window.
    pub fn observation(&self, model: &str, rollout: &Rollout, counts: &StageCounts) -> ArmObservation {
        let mut obs = ArmObservation::new();
        for (v, n) in &counts.samples {
            obs = obs.with_samples(*v, *n);
        }
        if let Plan::ChampionChallenger {
            gate: modelgate_rollout::PromotionGate::Automatic { kpi, window_secs, .. },
            challengers,
            ..
        } = &rollout.plan
        {
            let now = now_ms();
            let outcomes = self.gateway.outcomes();
            for v in std::iter::once(rollout.champion).chain(challengers.iter().copied()) {
                if let Some(sum) = outcomes.summary(model, v, kpi, now, window_secs.saturating_mul(1000)) {
                    obs = obs.with_kpi_variance(v, sum.mean, sum.n, sum.variance);
                }
            }
        }
        obs
    }

    /// The hard-trigger settings for `rollout`: its plan's overrides over
    /// model.toml's over the strategy notes' defaults.
    fn trigger_config(&self, model: &str, rollout: Option<&Rollout>) -> TriggerConfig {
        let model_config = self.model_trigger_config(model);
        match rollout {
            Some(r) => r.triggers.apply(model_config),
            None => model_config,
        }
    }

    fn model_trigger_config(&self, model: &str) -> TriggerConfig {
        let defaults = TriggerConfig::default();
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else { return defaults };
        route.entry.config.triggers.overrides().apply(defaults)
    }

    /// Every arm of `rollout` (champion first) with its window, its totals
    /// since the rollout started and its samples in this stage.
    fn arm_numbers(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: &Rollout,
        counts: &StageCounts,
    ) -> Vec<analysis::ArmNumbers> {
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else { return Vec::new() };
        let routing = rollout.routing_table();
        let mut arms: Vec<(u64, String, u32)> = vec![(rollout.champion, "champion".to_string(), 0)];
        for w in routing.weights() {
            match arms.iter_mut().find(|(v, _, _)| *v == w.version) {
                Some(a) => a.2 = w.basis_points,
                None => arms.push((w.version, w.name.clone(), w.basis_points)),
            }
        }
        arms.into_iter()
            .map(|(version, name, weight_bp)| {
                let (window, total) = match route.windows.get(&version) {
                    Some(stats) => {
                        (stats.window.snapshot(), inner.running.total(&rollout.id, version, stats))
                    }
                    None => {
                        let empty = modelgate_telemetry::WindowSnapshot::empty(Duration::ZERO);
                        (empty.clone(), empty)
                    }
                };
                analysis::ArmNumbers {
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

    /// The first hard trigger any candidate of `rollout` fires, judged on the
    /// versions' sliding windows against the champion's.
    fn hard_trigger(
        &self,
        model: &str,
        rollout: &Rollout,
        arms: &[analysis::ArmNumbers],
    ) -> Option<modelgate_rollout::Fired> {
        let cfg = self.trigger_config(model, Some(rollout));
        let champion = arms.iter().find(|a| a.version == rollout.champion)?.window_counts(cfg.p99_sla_ms);
        arms.iter().filter(|a| a.version != rollout.champion && a.weight_bp > 0).find_map(|a| {
            cfg.evaluate(&champion, &a.window_counts(cfg.p99_sla_ms)).map(|mut f| {
                f.numbers.insert("version".into(), a.version as f64);
                f.reason = format!("version {}: {}", a.version, f.reason);
                f
            })
        })
    }

    /// The step's safety verdict from the always-valid comparisons.
    fn verdict(&self, model: &str, rollout: &Rollout, arms: &[analysis::ArmNumbers]) -> StepVerdict {
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else {
            return StepVerdict::Waiting(format!("model {model} is not loaded"));
        };
        analysis::step_verdict(rollout.champion, arms, &analysis::Settings::of(&route.entry.config))
    }

    /// Soft triggers other than PSI: a business metric worse than the
    /// control beyond its MDE, and a candidate the sequential tests show
    /// worse than the champion beyond the margins. Each raises one ALERT
    /// event per rollout, version and trigger; `pause_on_alert` pauses.
    /// Returns whether the rollout changed.
    fn regression_alerts(
        &self,
        inner: &mut Inner,
        model: &str,
        rollout: &mut Rollout,
        verdict: &StepVerdict,
    ) -> bool {
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else { return false };
        let now = now_ms();
        let mut found: Vec<(u64, &'static str, String, BTreeMap<String, f64>)> = Vec::new();
        if let Some(plan) = analysis::metric_plan(rollout, &route.entry.config, now) {
            for row in analysis::metric_rows(self.gateway.outcomes(), model, &plan, now) {
                if let Some(reason) = analysis::kpi_regression(&row) {
                    let seq = row.result.sequential;
                    let numbers = BTreeMap::from([
                        ("version".to_string(), row.version as f64),
                        ("n".to_string(), row.result.n as f64),
                        ("mean".to_string(), row.result.mean),
                        ("diff".to_string(), seq.map_or(f64::NAN, |s| s.diff)),
                        ("always_valid_p".to_string(), seq.map_or(f64::NAN, |s| s.p_value)),
                        ("mde".to_string(), row.mde),
                    ]);
                    found.push((row.version, "kpi_regression", reason, numbers));
                }
            }
        }
        if let StepVerdict::Unhealthy(reason) = verdict {
            for part in reason.split("; ") {
                let Some(v) =
                    part.strip_prefix('v').and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok())
                else {
                    continue;
                };
                let trigger =
                    if part.contains("error rate") { "error_regression" } else { "latency_regression" };
                found.push((
                    v,
                    trigger,
                    part.to_string(),
                    BTreeMap::from([("version".to_string(), v as f64)]),
                ));
            }
        }
        let mut changed = false;
        for (version, trigger, reason, numbers) in found {
            if !inner.raised.insert((rollout.id.clone(), version, trigger)) {
                continue;
            }
            tracing::warn!(model, version, trigger, reason = %reason, "soft trigger");
            let pause = route.entry.config.triggers.pause_on_alert;
            changed |= self.raise_alert(model, rollout, trigger, reason, numbers, pause);
        }
        if changed {
            inner.state.rollouts.insert(model.to_string(), rollout.clone());
            self.publish(&inner.state, model);
        }
        changed
    }

    /// Records one ALERT audit event (and, when `pause`, pauses the rollout
    /// for a person to decide). Returns whether the rollout changed.
    fn raise_alert(
        &self,
        model: &str,
        rollout: &mut Rollout,
        trigger: &str,
        reason: String,
        numbers: BTreeMap<String, f64>,
        pause: bool,
    ) -> bool {
        let now = now_ms();
        let mut changed = false;
        let mut events = vec![rollout.alert(now, trigger, reason.clone(), numbers.clone())];
        if pause && !rollout.is_paused() {
            match rollout.pause(now, &Actor::system(), Some(format!("pause_on_alert: {reason}"))) {
                Ok(ev) => {
                    // The pause is made on the alert's numbers.
                    events.extend(ev.into_iter().map(|mut e| {
                        if e.numbers.is_empty() {
                            e.numbers = numbers.clone();
                        }
                        e
                    }));
                    changed = true;
                }
                Err(e) => tracing::warn!(model, error = %e, "pause_on_alert could not pause"),
            }
        }
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).extend(events);
        changed
    }

    /// PSI of each candidate's and shadow's recent scores against the
    /// champion's, where both have enough.
    fn psi_values(&self, model: &str, rollout: &Rollout) -> BTreeMap<u64, f64> {
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else { return BTreeMap::new() };
        let Some(champion) = route.windows.get(&rollout.champion).map(|s| s.scores.values()) else {
            return BTreeMap::new();
        };
        if champion.len() < PSI_MIN_SCORES {
            return BTreeMap::new();
        }
        let routing = rollout.routing_table();
        routing
            .versions()
            .into_iter()
            .chain(routing.shadows().iter().map(|s| s.version))
            .filter(|v| *v != rollout.champion)
            .filter_map(|v| {
                let candidate = route.windows.get(&v)?.scores.values();
                if candidate.len() < PSI_MIN_SCORES {
                    return None;
                }
                modelgate_rollout::analysis::psi(&champion, &candidate, PSI_BINS).ok().map(|p| (v, p.value))
            })
            .collect()
    }

    /// Everything the automatic decisions look at for `model`, as of now.
    pub async fn analysis(&self, model: &str) -> Result<AnalysisView, ControlError> {
        // In a fleet, any replica shows the whole fleet's numbers.
        let others = self.fleet_reports().await;
        let mut inner = self.inner.lock().await;
        if !self.gateway.table().models.contains_key(model) && !inner.state.rollouts.contains_key(model) {
            return Err(ControlError::ModelNotFound(model.to_string()));
        }
        let champion = self.champion_of(&inner.state, model).unwrap_or(0);
        let triggers = self.trigger_config(model, inner.state.rollouts.get(model));
        let settings =
            self.gateway.table().models.get(model).map(|r| analysis::Settings::of(&r.entry.config));
        let Some(rollout) = inner.state.rollouts.get(model).cloned() else {
            return Ok(AnalysisView {
                rollout: None,
                champion,
                counts: StageCounts::default(),
                arms: Vec::new(),
                settings,
                triggers,
                verdict: StepVerdict::Waiting("no rollout".into()),
                metrics: Vec::new(),
                psi: BTreeMap::new(),
                importance_shift: BTreeMap::new(),
                observation: ArmObservation::new(),
            });
        };
        let live = is_live(&rollout);
        let counts = if live {
            let local = self.observe(&mut inner, model, &rollout);
            match &others {
                Some(o) => merge_counts(local, model, o),
                None => local,
            }
        } else {
            inner.state.counts.get(model).cloned().unwrap_or_default()
        };
        let mut arms = if live { self.arm_numbers(&mut inner, model, &rollout, &counts) } else { Vec::new() };
        if let Some(o) = &others {
            merge_arms(&mut arms, model, &rollout.id, o);
        }
        let verdict = if live {
            self.verdict(model, &rollout, &arms)
        } else {
            rollout.last_verdict().cloned().unwrap_or(StepVerdict::Waiting("finished".into()))
        };
        let now = now_ms();
        let metrics = self
            .gateway
            .table()
            .models
            .get(model)
            .and_then(|r| analysis::metric_plan(&rollout, &r.entry.config, now))
            .map(|plan| analysis::metric_rows(self.gateway.outcomes(), model, &plan, now))
            .unwrap_or_default();
        let observation = self.observation(model, &rollout, &counts);
        let psi = if live { self.psi_values(model, &rollout) } else { BTreeMap::new() };
        let importance_shift = {
            let checks = self.importance.lock().unwrap_or_else(|p| p.into_inner());
            checks
                .found
                .iter()
                .filter(|((id, _), _)| *id == rollout.id)
                .map(|((_, v), f)| (*v, f.shift))
                .collect()
        };
        Ok(AnalysisView {
            rollout: Some(rollout),
            champion,
            counts,
            arms,
            settings,
            triggers,
            verdict,
            metrics,
            psi,
            importance_shift,
            observation,
        })
    }

    /// The ALERT events of rollout `rollout_id`, oldest first.
    /// The ALERT events of a rollout that started at `started_ms`.
    pub async fn alerts(&self, model: &str, rollout_id: &str, started_ms: Millis) -> Vec<AuditEvent> {
        self.events(Some(model), started_ms, 0)
            .await
            .map(|events| {
                events
                    .into_iter()
                    .map(|(e, _)| e)
                    .filter(|e| e.rollout_id == rollout_id && e.action == modelgate_rollout::Action::Alert)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Prediction-distribution shift: PSI between the champion's recent scores
    /// and each candidate's and shadow's. 0.1 warns, 0.25 alerts; each level
    /// is raised once per rollout and version as an ALERT audit event, and
    /// `pause_on_alert` pauses the rollout at ALERT. Returns whether the
    /// rollout changed.
    fn soft_triggers(&self, inner: &mut Inner, model: &str, rollout: &mut Rollout) -> bool {
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else { return false };
        let Some(champion) = route.windows.get(&rollout.champion).map(|s| s.scores.values()) else {
            return false;
        };
        if champion.len() < PSI_MIN_SCORES {
            return false;
        }
        let mut changed = false;
        for v in Self::compared_versions(rollout) {
            let Some(candidate) = route.windows.get(&v).map(|s| s.scores.values()) else { continue };
            if candidate.len() < PSI_MIN_SCORES {
                continue;
            }
            let Ok(psi) = modelgate_rollout::analysis::psi(&champion, &candidate, PSI_BINS) else { continue };
            self.scrape
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .psi
                .insert((model.to_string(), v), psi.value);
            if psi.level == PsiLevel::Ok {
                continue;
            }
            let key = (rollout.id.clone(), v);
            if inner.alerted.get(&key).is_some_and(|l| *l >= psi.level) {
                continue;
            }
            inner.alerted.insert(key, psi.level);
            let level = if psi.level == PsiLevel::Alert { "alert" } else { "warn" };
            let reason = format!(
                "prediction distribution of version {v} shifted from the champion's: PSI {:.3} ({level}; 0.1 warns, 0.25 alerts)",
                psi.value
            );
            tracing::warn!(
                model,
                version = v,
                psi = psi.value,
                level,
                "soft trigger: prediction distribution shift"
            );
            let numbers = BTreeMap::from([
                ("psi".to_string(), psi.value),
                ("version".to_string(), v as f64),
                ("champion_scores".to_string(), champion.len() as f64),
                ("candidate_scores".to_string(), candidate.len() as f64),
            ]);
            let pause = psi.level == PsiLevel::Alert && route.entry.config.triggers.pause_on_alert;
            changed |= self.raise_alert(model, rollout, "psi", reason, numbers, pause);
        }
        if changed {
            inner.state.rollouts.insert(model.to_string(), rollout.clone());
            self.publish(&inner.state, model);
        }
        changed
    }

    /// The versions a rollout compares with its champion: candidates that
    /// take traffic, and shadows.
    fn compared_versions(rollout: &Rollout) -> Vec<u64> {
        let routing = rollout.routing_table();
        let mut versions: Vec<u64> = routing
            .arms()
            .iter()
            .filter(|a| a.version != rollout.champion && a.basis_points() > 0)
            .map(|a| a.version)
            .chain(routing.shadows().iter().map(|s| s.version))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions
    }

    /// Starts a feature-importance check of a rollout's versions against
    /// its champion, in its own task, when the last one is a minute old (or
    /// there was none) and enough tabular rows were sampled.
    fn check_importance(&self, model: &str, rollout: &Rollout) {
        let versions = Self::compared_versions(rollout);
        if versions.is_empty() {
            return;
        }
        let now = now_ms();
        {
            let checks = self.importance.lock().unwrap_or_else(|p| p.into_inner());
            if checks.running.contains(model)
                || checks.last.get(model).is_some_and(|(id, at)| {
                    *id == rollout.id && now.saturating_sub(*at) < IMPORTANCE_EVERY_MS
                })
            {
                return;
            }
        }
        let Some(rows) = crate::control::importance::Rows::gather(&self.gateway.input_samples(model)) else {
            return;
        };
        {
            let mut checks = self.importance.lock().unwrap_or_else(|p| p.into_inner());
            checks.running.insert(model.to_string());
            checks.last.insert(model.to_string(), (rollout.id.clone(), now));
        }
        let (gateway, checks) = (Arc::clone(&self.gateway), Arc::clone(&self.importance));
        let (model, rollout_id, champion) = (model.to_string(), rollout.id.clone(), rollout.champion);
        tokio::spawn(async move {
            let measured = async {
                let base = crate::control::importance::profile(&gateway, &model, champion, &rows).await?;
                let mut found = Vec::new();
                for v in versions {
                    let p = crate::control::importance::profile(&gateway, &model, v, &rows).await?;
                    found.push((
                        v,
                        ImportanceFinding {
                            shift: crate::control::importance::shift(&base, &p),
                            rows: rows.len(),
                            moves: crate::control::importance::top_moves(&base, &p, 3),
                        },
                    ));
                }
                Ok::<_, String>(found)
            };
            let result = measured.await;
            let mut checks = checks.lock().unwrap_or_else(|p| p.into_inner());
            checks.running.remove(&model);
            match result {
                Ok(found) => {
                    for (v, f) in found {
                        tracing::debug!(model = %model, version = v, shift = f.shift, rows = f.rows, "feature importance measured");
                        checks.found.insert((rollout_id.clone(), v), f);
                    }
                }
                Err(e) => tracing::debug!(model = %model, error = %e, "feature importance not measured"),
            }
        });
    }

    /// Soft trigger on the latest feature-importance findings: a candidate
    /// or shadow whose reliance on the inputs moved from the champion's by
    /// the model's `importance_warn` total variation warns and by
    /// `importance_alert` alerts (each once per rollout and version;
    /// `pause_on_alert` pauses at ALERT). Returns whether the rollout
    /// changed.
    fn importance_triggers(&self, inner: &mut Inner, model: &str, rollout: &mut Rollout) -> bool {
        let table = self.gateway.table();
        let Some(route) = table.models.get(model) else { return false };
        let pause_on_alert = route.entry.config.triggers.pause_on_alert;
        let (warn, alert) = route.entry.config.triggers.importance_levels();
        let mut changed = false;
        for v in Self::compared_versions(rollout) {
            let Some(f) = self
                .importance
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .found
                .get(&(rollout.id.clone(), v))
                .cloned()
            else {
                continue;
            };
            self.scrape
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .importance_shift
                .insert((model.to_string(), v), f.shift);
            let (level, key) = if f.shift >= alert {
                ("alert", "importance_alert")
            } else if f.shift >= warn {
                ("warn", "importance_warn")
            } else {
                continue;
            };
            if !inner.raised.insert((rollout.id.clone(), v, key)) {
                continue;
            }
            if level == "warn" && inner.raised.contains(&(rollout.id.clone(), v, "importance_alert")) {
                continue;
            }
            let moved: Vec<String> = f
                .moves
                .iter()
                .map(|(j, a, b)| format!("feature {j} {:.0}% → {:.0}%", a * 100.0, b * 100.0))
                .collect();
            let reason = format!(
                "version {v} relies on the inputs differently from the champion: feature-importance shift {:.2} ({level}; {} warns, {} alerts) on {} live rows; moved most: {}",
                f.shift,
                warn,
                alert,
                f.rows,
                moved.join(", ")
            );
            tracing::warn!(
                model,
                version = v,
                shift = f.shift,
                level,
                "soft trigger: anomalous feature importance"
            );
            let mut numbers = BTreeMap::from([
                ("importance_shift".to_string(), f.shift),
                ("version".to_string(), v as f64),
                ("rows".to_string(), f.rows as f64),
            ]);
            if let Some((j, a, b)) = f.moves.first() {
                numbers.insert("top_feature".to_string(), *j as f64);
                numbers.insert("top_feature_champion_share".to_string(), *a);
                numbers.insert("top_feature_candidate_share".to_string(), *b);
            }
            let pause = level == "alert" && pause_on_alert;
            changed |= self.raise_alert(model, rollout, "feature_importance", reason, numbers, pause);
        }
        if changed {
            inner.state.rollouts.insert(model.to_string(), rollout.clone());
            self.publish(&inner.state, model);
        }
        changed
    }

    /// One controller pass over every live rollout: count, judge, decide.
    ///
    /// In a fleet every replica counts what it served and publishes it; any
    /// replica rolls back on a hard trigger its own windows show; the leader
    /// alone takes the decisions that must happen once (advance, promote,
    /// complete, alerts), on the counts of the whole fleet.
    pub async fn tick(&self) {
        let fleet = self.fleet.as_ref();
        let leader = fleet.is_none_or(|f| f.is_leader());
        // Network first, without the lock.
        let others = if leader { self.fleet_reports().await } else { None };
        // A leader that cannot see the fleet's counts does not decide on its own.
        let decide = leader && (fleet.is_none() || others.is_some());
        let mut inner = self.inner.lock().await;
        let models: Vec<String> =
            inner.state.rollouts.iter().filter(|(_, r)| is_live(r)).map(|(m, _)| m.clone()).collect();
        let mut dirty = false;
        let mut report = ReplicaReport::default();
        for model in models {
            let Some(mut rollout) = inner.state.rollouts.get(&model).cloned() else { continue };
            let mut counts = self.observe(&mut inner, &model, &rollout);
            if fleet.is_some() {
                report.counts.insert(model.clone(), counts.clone());
            }
            if let Some(others) = &others {
                counts = merge_counts(counts, &model, others);
            }
            let mut arms = self.arm_numbers(&mut inner, &model, &rollout, &counts);
            if fleet.is_some() {
                report.arms.insert(model.clone(), ArmReport::of(&rollout.id, &arms));
            }
            if let Some(others) = &others {
                // The leader judges the fleet: every replica's windows, totals
                // and samples, so sample sizes, SRM and p99 count them all.
                merge_arms(&mut arms, &model, &rollout.id, others);
            }
            // Hard triggers first: a firing one rolls back within this tick.
            if let Some(fired) = self.hard_trigger(&model, &rollout, &arms) {
                let now = now_ms();
                inner.state.counts.insert(model.clone(), counts);
                tracing::warn!(
                    model = %model,
                    rollout = %rollout.id,
                    trigger = fired.trigger,
                    reason = %fired.reason,
                    "hard trigger fired; rolling back"
                );
                let mut reason = fired.reason;
                if let Some(f) = fleet {
                    reason = format!("{reason} (seen by replica {})", f.replica());
                }
                match rollout.rollback_triggered(now, fired.trigger, reason, fired.numbers) {
                    Ok(events) => {
                        let pending = PendingRollback {
                            model: model.clone(),
                            rollout: rollout.clone(),
                            events: events.clone(),
                        };
                        match self.commit(&mut inner, &model, rollout, events).await {
                            Ok(()) => {}
                            Err(ControlError::Store(StoreError::Unavailable(e))) if fleet.is_some() => {
                                // Fail static, but safe: roll back here now and
                                // write it back when etcd returns.
                                tracing::warn!(model = %model, error = %e, "etcd unreachable: rolling back on this replica only until it returns");
                                self.count_events(&pending.events);
                                inner
                                    .state
                                    .champions
                                    .insert(model.clone(), resulting_champion(&pending.rollout));
                                inner.state.rollouts.insert(model.clone(), pending.rollout.clone());
                                self.publish(&inner.state, &model);
                                inner.pending.push(pending);
                                self.pending_count
                                    .store(inner.pending.len(), std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(e) => {
                                tracing::error!(model = %model, error = %e, "cannot persist an automatic rollback")
                            }
                        }
                    }
                    Err(e) => tracing::error!(model = %model, error = %e, "automatic rollback refused"),
                }
                continue;
            }
            let verdict = self.verdict(&model, &rollout, &arms);
            if decide && self.soft_triggers(&mut inner, &model, &mut rollout) {
                dirty = true;
            }
            if decide {
                self.check_importance(&model, &rollout);
                if self.importance_triggers(&mut inner, &model, &mut rollout) {
                    dirty = true;
                }
            }
            if decide && self.regression_alerts(&mut inner, &model, &mut rollout, &verdict) {
                dirty = true;
            }
            let obs = self.observation(&model, &rollout, &counts);
            let changed_counts = inner
                .state
                .counts
                .get(&model)
                .is_none_or(|c| c.samples != counts.samples || c.errors != counts.errors);
            inner.state.counts.insert(model.clone(), counts);
            let events = rollout.tick(now_ms(), &obs, &verdict);
            if events.is_empty() {
                // The verdict is what GetRollout's "waiting for" reports. Its
                // numbers change every tick, so it is kept in memory and
                // written with the next snapshot rather than on its own.
                let stored = inner.state.rollouts.get(&model);
                if stored.is_some_and(|s| s.last_verdict() != rollout.last_verdict()) {
                    inner.state.rollouts.insert(model.clone(), rollout);
                }
                dirty |= changed_counts;
                continue;
            }
            if !decide {
                // Not this replica's to take: the leader decides once.
                continue;
            }
            for e in &events {
                tracing::info!(model = %model, action = ?e.action, reason = ?e.reason, "rollout decision");
            }
            if let Err(e) = self.commit(&mut inner, &model, rollout, events).await {
                tracing::error!(model = %model, error = %e, "cannot persist a rollout decision; routing unchanged");
            }
        }
        let live: std::collections::BTreeSet<String> =
            inner.state.rollouts.values().filter(|r| is_live(r)).map(|r| r.id.clone()).collect();
        inner.running.retain(&live);
        // Finished blue/green rollouts too: blue goes once its retention ends,
        // however the rollout finished.
        let all: Vec<String> = inner.state.rollouts.keys().cloned().collect();
        for model in all {
            dirty |= self.retire_unused(&mut inner, &model, now_ms());
        }
        // Alerts raised this tick.
        let alerts = std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()));
        if !alerts.is_empty() {
            let lines: Vec<String> = alerts.iter().filter_map(|e| serde_json::to_string(e).ok()).collect();
            match self.store.append_events(lines).await {
                Ok(()) => self.count_events(&alerts),
                Err(e) => tracing::error!(error = %e, "cannot record soft-trigger alerts"),
            }
        }
        if dirty && fleet.is_none() {
            // Stage counts change on every tick under traffic. Writing them
            // syncs the file twice; the file store does that on the blocking
            // pool (done on a tokio worker, it stalled every request queued
            // behind it: a p99 regression measured with the shadow bench).
            // The controller lock stays held, so snapshots are written in order.
            let state = inner.state.clone();
            if let Err(e) = self.persist(&mut inner, &state, &[]).await {
                tracing::warn!(error = %e, "cannot persist stage counts");
            }
        }
        // The leader forgets dead processes' reports that nothing live
        // counts any more (their rollout ended or moved to another stage).
        let forget: Vec<String> = match (&others, decide) {
            (Some(others), true) => others
                .iter()
                .filter(|(_, r)| !r.alive && !r.counts_for(&inner.state))
                .map(|(id, _)| id.clone())
                .collect(),
            _ => Vec::new(),
        };
        drop(inner);
        if let Some(f) = fleet
            && !forget.is_empty()
        {
            match f.delete_reports(&forget).await {
                Ok(()) => tracing::debug!(reports = ?forget, "forgot the reports of dead processes"),
                Err(e) => tracing::debug!(error = %e, "cannot delete dead processes' reports"),
            }
        }
        if let Some(f) = fleet
            && f.connected()
        {
            // Never an empty report: one that does not serialise is an
            // internal error, logged, and the last published report stays.
            match serde_json::to_vec(&report) {
                Ok(bytes) => {
                    if let Err(e) = f.publish_counts(bytes).await {
                        tracing::debug!(error = %e, "cannot publish this replica's counts");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialise this replica's counts; not published")
                }
            }
        }
    }

    /// Ticks every `period` until the returned handle is aborted.
    pub fn spawn_ticker(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                me.tick().await;
            }
        })
    }

    /// Writes the current state (champions, rollouts, stage counts) now.
    /// In a fleet every decision is written when it is taken and stage
    /// counts are each replica's own, so there is nothing to save.
    pub async fn save(&self) -> Result<(), ControlError> {
        if self.fleet.is_some() {
            return Ok(());
        }
        let mut inner = self.inner.lock().await;
        let state = inner.state.clone();
        self.persist(&mut inner, &state, &[]).await
    }

    /// Fleet mode: what the other replicas last published, if etcd answers.
    async fn fleet_reports(&self) -> Option<Vec<(String, ReplicaReport)>> {
        let f = self.fleet.as_ref()?;
        match f.fleet_counts().await {
            Ok(list) => Some(parse_reports(list, f.incarnation())),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the fleet's reports");
                None
            }
        }
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
}

/// What one replica of a fleet publishes each tick under its lease: its own
/// stage counts and, per live rollout, each arm's window and running total.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ReplicaReport {
    counts: BTreeMap<String, StageCounts>,
    #[serde(default)]
    arms: BTreeMap<String, ArmReport>,
    /// Whether the process that wrote it still holds its lease; a dead
    /// one's counts and totals still count, its windows no longer do.
    #[serde(skip)]
    alive: bool,
}

impl ReplicaReport {
    /// Whether anything in it still counts: stage counts of a live
    /// rollout's current stage, or arm totals of a live rollout.
    fn counts_for(&self, state: &ControlState) -> bool {
        let live = |model: &str| state.rollouts.get(model).filter(|r| is_live(r));
        self.counts.iter().any(|(model, c)| {
            live(model).is_some_and(|r| r.stage == c.stage && r.stage_started_ms == c.stage_started_ms)
        }) || self.arms.iter().any(|(model, a)| live(model).is_some_and(|r| r.id == a.rollout_id))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ArmReport {
    rollout_id: String,
    /// version → (sliding window, total since the rollout started).
    versions: BTreeMap<u64, (modelgate_telemetry::WireSnapshot, modelgate_telemetry::WireSnapshot)>,
}

impl ArmReport {
    fn of(rollout_id: &str, arms: &[analysis::ArmNumbers]) -> Self {
        Self {
            rollout_id: rollout_id.to_string(),
            versions: arms.iter().map(|a| (a.version, (a.window.to_wire(), a.total.to_wire()))).collect(),
        }
    }
}

/// Every report but this process's own (its numbers are fresher in
/// memory), earlier incarnations of this replica included; unreadable ones
/// are skipped and logged.
fn parse_reports(list: Vec<(String, Vec<u8>, bool)>, me: &str) -> Vec<(String, ReplicaReport)> {
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
/// count the same stage.
fn merge_counts(mut mine: StageCounts, model: &str, others: &[(String, ReplicaReport)]) -> StageCounts {
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
fn merge_arms(
    arms: &mut [analysis::ArmNumbers],
    model: &str,
    rollout_id: &str,
    others: &[(String, ReplicaReport)],
) {
    for (replica, report) in others {
        let Some(theirs) = report.arms.get(model).filter(|a| a.rollout_id == rollout_id) else { continue };
        for arm in arms.iter_mut() {
            let Some((window, total)) = theirs.versions.get(&arm.version) else { continue };
            match (
                modelgate_telemetry::WindowSnapshot::from_wire(window),
                modelgate_telemetry::WindowSnapshot::from_wire(total),
            ) {
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

/// A stored snapshot, if its format is one this build reads.
fn parse_state(snap: &Snapshot) -> Result<ControlState, ControlError> {
    /// Only the format, whatever else a newer build put beside it.
    #[derive(Deserialize)]
    struct Head {
        format: Option<serde_json::Value>,
    }
    if let Ok(Head { format: Some(found) }) = serde_json::from_slice::<Head>(&snap.bytes) {
        let known = found
            .as_u64()
            .and_then(|f| u32::try_from(f).ok())
            .is_some_and(|f| KNOWN_STATE_FORMATS.contains(&f));
        if !known {
            let mut found = found.to_string();
            found.truncate(64);
            return Err(ControlError::UnknownStateFormat {
                origin: snap.origin.clone(),
                found,
                known: KNOWN_STATE_FORMATS.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            });
        }
    }
    serde_json::from_slice::<ControlState>(&snap.bytes).map_err(|e| {
        ControlError::Precondition(format!("the rollout state in {} does not parse: {e}", snap.origin))
    })
}

/// What routing depends on in a rollout (not its last verdict's numbers).
fn rollout_key(r: &Rollout) -> String {
    let mut r = r.clone();
    r.clear_verdict();
    serde_json::to_string(&r).unwrap_or_default()
}

/// The champion once a rollout is over (or now, if it is live).
fn resulting_champion(r: &Rollout) -> u64 {
    match &r.state {
        RolloutState::Promoted { version } => *version,
        _ => r.champion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: impl Into<RolloutError>) -> Code {
        Status::from(plan_refused(e)).code()
    }

    #[test]
    fn a_state_in_an_unknown_format_is_refused_naming_where_and_which() {
        let snap = |text: &str| Snapshot { bytes: text.into(), revision: 1, origin: "/s/state.json".into() };
        let written = serde_json::to_string(&ControlState::default()).unwrap();
        assert!(written.contains("\"format\":0"), "{written}");
        assert!(parse_state(&snap(&written)).is_ok());
        for (text, found) in [
            (r#"{"format":7,"champions":{},"rollouts":{},"counts":{},"future":[]}"#, "7"),
            (r#"{"format":"v2"}"#, "\"v2\""),
            (r#"{"format":-1}"#, "-1"),
            (r#"{"format":4294967296}"#, "4294967296"),
        ] {
            let e = parse_state(&snap(text)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/s/state.json holds rollout state in format {found}, "))
                    && e.contains("it knows format 0"),
                "{e}"
            );
        }
        let e = parse_state(&snap("{\"format\":0,")).unwrap_err().to_string();
        assert!(e.starts_with("the rollout state in /s/state.json does not parse"), "{e}");
    }

    #[test]
    fn a_wrong_plan_is_invalid_argument_a_missing_version_a_precondition() {
        assert_eq!(
            code(PlanError::StepsNotIncreasing { index: 1, percent: 10, previous: 50 }),
            Code::InvalidArgument
        );
        assert_eq!(code(PlanError::ZeroWeight { name: "b".into() }), Code::InvalidArgument);
        assert_eq!(code(PlanError::Empty { field: "steps" }), Code::InvalidArgument);
        assert_eq!(
            code(RolloutError::Triggers(modelgate_rollout::TriggerRangeError {
                field: "min_samples",
                expected: "between 1 and 1000000000",
                got: "0".into(),
            })),
            Code::InvalidArgument
        );
        assert_eq!(
            code(PlanError::VersionNotReady { version: 9, ready: vec![1, 2] }),
            Code::FailedPrecondition
        );
        assert_eq!(code(PlanError::IsChampion { version: 2 }), Code::FailedPrecondition);
    }
}
