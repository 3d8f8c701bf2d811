//! The model table the request path reads: every model's versions, its
//! champion and, while a rollout runs, the routing table's arms resolved to
//! loaded versions, its shadows, windows and metric handles. A snapshot is
//! immutable once built (the gateway swaps whole snapshots), so its fields
//! are private: the request path and the admin side read them through the
//! accessors below, and only [`ModelTable::rebuild`] makes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use modelgate_registry::{ModelEntry, ReadyVersion, VersionState};
use modelgate_rollout::{Role, RoutingTable};
use modelgate_runtime::VersionQueue;
use modelgate_telemetry::VersionStats;

use crate::serving::gateway_error::GatewayError;
use crate::serving::shadow::ShadowStats;
use crate::telemetry::metrics::{Metrics, VersionMetrics};

/// A version that receives copies of live requests.
#[derive(Debug, Clone)]
pub struct ShadowTarget {
    version: Arc<ReadyVersion>,
    /// The shadow's own small queue on the shadow executor (same sessions'
    /// model, separate admission), so shadow copies never take critical slots.
    queue: Arc<VersionQueue>,
    /// Share of requests mirrored, in basis points (10000 = all).
    fraction_bp: u32,
    /// Copies not run (queue full, CPU budget spent): counted lock-free.
    dropped: Arc<AtomicU64>,
}

impl ShadowTarget {
    pub fn version(&self) -> &Arc<ReadyVersion> {
        &self.version
    }

    pub fn queue(&self) -> &Arc<VersionQueue> {
        &self.queue
    }

    /// Share of requests mirrored, in basis points (10000 = all).
    pub fn fraction_bp(&self) -> u32 {
        self.fraction_bp
    }

    /// Copies not run (queue full, CPU budget spent).
    pub fn dropped(&self) -> &Arc<AtomicU64> {
        &self.dropped
    }
}

/// A model as the hot path sees it: its versions and who serves.
#[derive(Debug)]
pub struct ModelRoute {
    entry: ModelEntry,
    /// The version that serves unrouted traffic; `None` when no version is READY.
    champion: Option<Arc<ReadyVersion>>,
    /// The rollout's routing table; `None`: everything goes to the champion.
    routing: Option<RoutingTable>,
    /// `routing`'s arms resolved to loaded versions, in the table's order.
    arms: Vec<Arc<ReadyVersion>>,
    rollout_id: Option<String>,
    shadows: Vec<ShadowTarget>,
    /// Each READY version's sliding window of latencies, errors and NaN/Inf
    /// outputs, kept across snapshot rebuilds.
    windows: HashMap<u64, Arc<VersionStats>>,
    /// Each READY version's Prometheus handles.
    metrics: HashMap<u64, Arc<VersionMetrics>>,
}

/// What the controller decides for a model: its champion and, while a
/// rollout runs, the routing table (arms and shadows) derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub champion: u64,
    pub routing: Option<RoutingTable>,
    pub rollout_id: Option<String>,
}

impl std::ops::Deref for ModelRoute {
    type Target = ModelEntry;

    fn deref(&self) -> &ModelEntry {
        &self.entry
    }
}

impl ModelRoute {
    fn new(entry: ModelEntry, champion: Option<Arc<ReadyVersion>>) -> Self {
        Self {
            entry,
            champion,
            routing: None,
            arms: Vec::new(),
            rollout_id: None,
            shadows: Vec::new(),
            windows: HashMap::new(),
            metrics: HashMap::new(),
        }
    }

    /// The version that serves unrouted traffic; `None` when no version is READY.
    pub fn champion(&self) -> Option<&Arc<ReadyVersion>> {
        self.champion.as_ref()
    }

    /// The live rollout's routing table; `None`: everything goes to the champion.
    pub fn routing(&self) -> Option<&RoutingTable> {
        self.routing.as_ref()
    }

    /// The live rollout's id (running or paused).
    pub fn rollout_id(&self) -> Option<&str> {
        self.rollout_id.as_deref()
    }

    /// Whether a live rollout splits traffic between more than one arm.
    pub fn splits_traffic(&self) -> bool {
        self.rollout_id.is_some() && self.routing.as_ref().is_some_and(|t| t.arms().len() > 1)
    }

    /// The versions that get copies of live requests.
    pub fn shadows(&self) -> &[ShadowTarget] {
        &self.shadows
    }

    /// A READY version's sliding window.
    pub fn window(&self, version: u64) -> Option<&Arc<VersionStats>> {
        self.windows.get(&version)
    }

    /// A READY version's Prometheus handles.
    pub fn version_metrics(&self, version: u64) -> Option<&Arc<VersionMetrics>> {
        self.metrics.get(&version)
    }

    /// The model's `model.toml`.
    pub fn config(&self) -> &modelgate_registry::ModelConfig {
        &self.entry.config
    }

    /// Picks the version that serves a request: the pinned one, or the arm
    /// the routing key's bucket falls in, or the champion.
    pub fn route(&self, pinned: Option<i64>, key: &[u8]) -> Result<(Arc<ReadyVersion>, Role), GatewayError> {
        let champion = self.champion();
        let Some(v) = pinned else {
            if let Some(routing) = &self.routing {
                let arm = routing.route_key(key);
                if let Some(i) = routing.arms().iter().position(|a| std::ptr::eq(a, arm))
                    && let Some(version) = self.arms.get(i)
                {
                    return Ok((Arc::clone(version), arm.role));
                }
            }
            return champion
                .map(|c| (Arc::clone(c), Role::Champion))
                .ok_or_else(|| GatewayError::NoReadyVersion { model: self.name.clone() });
        };
        let not_found = || GatewayError::VersionNotFound {
            model: self.name.clone(),
            version: v,
            known: describe_versions(self),
        };
        let entry = u64::try_from(v).ok().and_then(|v| self.versions.get(&v)).ok_or_else(not_found)?;
        match &entry.state {
            VersionState::Ready(r) => {
                let role = if champion.is_some_and(|c| c.version == r.version) {
                    Role::Champion
                } else {
                    self.routing
                        .as_ref()
                        .and_then(|t| {
                            t.arms().iter().find(|a| a.version == r.version && a.basis_points() > 0)
                        })
                        .map_or(Role::Pinned, |a| a.role)
                };
                Ok((Arc::clone(r), role))
            }
            VersionState::Failed(reason) => Err(GatewayError::VersionFailed {
                model: self.name.clone(),
                version: entry.version,
                reason: reason.clone(),
            }),
        }
    }

    /// Whether a version serves traffic now (champion, or in the routing table).
    pub fn in_use(&self, version: u64) -> bool {
        self.champion().is_some_and(|c| c.version == version)
            || self.routing.as_ref().is_some_and(|t| t.versions().contains(&version))
    }
}

/// "1 (READY), 2 (FAILED)", or "none": the versions a NOT_FOUND names.
pub fn describe_versions(model: &ModelEntry) -> String {
    if model.versions.is_empty() {
        return "none".into();
    }
    model
        .versions
        .values()
        .map(|v| match v.state {
            VersionState::Ready(_) => format!("{} (READY)", v.version),
            VersionState::Failed(_) => format!("{} (FAILED)", v.version),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The immutable snapshot the hot path reads.
#[derive(Debug, Default)]
pub struct ModelTable {
    models: HashMap<String, Arc<ModelRoute>>,
}

impl ModelTable {
    /// Builds a snapshot; `champions` names each model's champion version. A
    /// model without one (new, or its champion is gone) gets its highest READY
    /// version: a version dropped in later never takes traffic by itself.
    pub fn new(entries: Vec<ModelEntry>, champions: &HashMap<String, u64>) -> Self {
        let models = entries
            .into_iter()
            .map(|m| {
                let chosen = champions
                    .get(&m.name)
                    .and_then(|v| m.ready().find(|r| r.version == *v))
                    .or_else(|| m.latest_ready())
                    .cloned();
                (m.name.clone(), Arc::new(ModelRoute::new(m, chosen)))
            })
            .collect();
        Self { models }
    }

    /// A served model.
    pub fn get(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models.get(name)
    }

    /// Whether `name` is served.
    pub fn serves(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    /// Every model's repository entry (a copy), for a rebuild.
    pub fn entries(&self) -> Vec<ModelEntry> {
        self.models.values().map(|m| m.entry.clone()).collect()
    }

    /// Every model, sorted by name.
    pub fn sorted(&self) -> Vec<&Arc<ModelRoute>> {
        let mut models: Vec<&Arc<ModelRoute>> = self.models.values().collect();
        models.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        models
    }

    /// A served model, or NOT_FOUND naming the models served: the one
    /// answer to an unknown model, whichever call asked.
    pub fn find(&self, name: &str) -> Result<&Arc<ModelRoute>, GatewayError> {
        self.models
            .get(name)
            .ok_or_else(|| GatewayError::ModelNotFound { model: name.to_string(), available: self.names() })
    }

    /// The champion version of every model that has one.
    pub fn champions(&self) -> HashMap<String, u64> {
        self.models.iter().filter_map(|(n, m)| m.champion().map(|c| (n.clone(), c.version))).collect()
    }

    fn names(&self) -> String {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names.is_empty() { "none".into() } else { names.join(", ") }
    }

    /// The next snapshot after this one: `entries` as loaded now, each
    /// model's champion (`champions`, overridden by its policy) and, where a
    /// policy has a routing table, its arms and shadows. Windows and shadow
    /// queues of versions still loaded carry over from this snapshot.
    pub fn rebuild(
        &self,
        entries: Vec<ModelEntry>,
        champions: &HashMap<String, u64>,
        policies: &HashMap<String, Policy>,
        metrics: &Metrics,
        shadow_queue_capacity: usize,
        shadow_stats: &ShadowStats,
    ) -> ModelTable {
        let mut champions = champions.clone();
        for (name, p) in policies {
            champions.insert(name.clone(), p.champion);
        }
        let old = self;
        let mut table = ModelTable::new(entries, &champions);
        for (name, route) in table.models.iter_mut() {
            if let Some(r) = Arc::get_mut(route) {
                // Windows follow the loaded model, not the snapshot.
                let previous = old.models.get(name);
                for ready in r.entry.ready() {
                    let kept = previous
                        .and_then(|p| p.windows.get(&ready.version).map(|w| (p, w)))
                        .filter(|(p, _)| {
                            p.ready()
                                .any(|x| x.version == ready.version && Arc::ptr_eq(x.model(), ready.model()))
                        })
                        .map(|(_, w)| Arc::clone(w));
                    let (interval, intervals) = r.entry.config.triggers.window();
                    r.windows.insert(
                        ready.version,
                        kept.unwrap_or_else(|| Arc::new(VersionStats::new(interval, intervals))),
                    );
                    r.metrics.insert(ready.version, metrics.version(name, ready.version));
                }
            }
            let Some(policy) = policies.get(name) else { continue };
            let Some(r) = Arc::get_mut(route) else { continue };
            r.rollout_id = policy.rollout_id.clone();
            let Some(routing) = policy.routing.clone() else { continue };
            let find = |v: u64| r.entry.ready().find(|x| x.version == v).cloned();
            let mut arms = Vec::with_capacity(routing.arms().len());
            for arm in routing.arms() {
                match find(arm.version).or_else(|| r.champion.clone()) {
                    Some(v) => {
                        if v.version != arm.version {
                            tracing::warn!(model = %name, version = arm.version, arm = %arm.name, "arm's version is not READY; its traffic goes to the champion");
                        }
                        arms.push(v)
                    }
                    None => break,
                }
            }
            if arms.len() != routing.arms().len() {
                continue;
            }
            let mut shadows = Vec::new();
            for target in routing.shadows() {
                let Some(ready) = find(target.version) else {
                    tracing::warn!(model = %name, version = target.version, "shadow version is not READY; not mirrored");
                    continue;
                };
                // Keep the shadow queue (and its counters) across rebuilds.
                let queue = old
                    .models
                    .get(name)
                    .and_then(|m| m.shadows.iter().find(|s| s.version.version == target.version))
                    .filter(|s| Arc::ptr_eq(s.queue.model(), ready.model()))
                    .map(|s| Arc::clone(&s.queue))
                    .unwrap_or_else(|| {
                        VersionQueue::with_limits(
                            Arc::clone(ready.model()),
                            shadow_queue_capacity,
                            ready.queue.batching(),
                            ready.queue.max_run(),
                        )
                    });
                let dropped = shadow_stats.drop_counter(name, target.version);
                shadows.push(ShadowTarget {
                    version: ready,
                    queue,
                    fraction_bp: target.fraction_bp,
                    dropped,
                });
            }
            r.arms = arms;
            r.routing = Some(routing);
            r.shadows = shadows;
        }
        table
    }
}
