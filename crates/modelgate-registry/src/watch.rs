//! The live model directory: new versions are picked up while serving.
//!
//! A filesystem watcher (inotify through `notify`) wakes the loop, and a
//! periodic rescan catches anything it missed (network filesystems, dropped
//! events). A new `<model>/<version>/model.onnx` is loaded only once it is
//! complete: its size and modification time must stay the same for the settle
//! time (so a slow copy is waited out); the recommended way is still to write
//! elsewhere and rename the folder in. Loading happens on this thread, never
//! on the request path, and the new entries are published in one swap.
//!
//! A version whose folder disappears is unloaded only when it serves no
//! traffic; until then the removal is refused with a warning and re-checked.
//!
//! Nothing in a model file may stop the watcher: each load runs under
//! `catch_unwind` (a panic makes that version FAILED), a warm-up is stopped
//! at its time limit, and a panic anywhere else in a pass is logged,
//! reported to the listener (a metric) and the watcher goes on with its next
//! pass. Dropping the watcher stops a warm-up in progress instead of waiting
//! for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use modelgate_runtime::{RunStop, Runtime};
use notify::Watcher;

use crate::{
    LoadSettings, MODEL_FILE, ModelConfig, ModelEntry, VersionEntry, VersionState, load_version, scan,
};

/// What the registry tells the gateway, and asks it.
pub trait RepositoryListener: Send + Sync + 'static {
    /// Every model and version after a change (versions added, failed or removed).
    fn publish(&self, entries: &[ModelEntry]);
    /// Whether a version serves traffic now; such a version is never unloaded.
    fn in_use(&self, model: &str, version: u64) -> bool;
    /// A version appeared while serving and is READY (called after `publish`,
    /// so it is already routable), with its model's settings.
    fn version_ready(&self, _model: &str, _version: u64, _config: &ModelConfig) {}
    /// A pass of the watcher panicked (the message); it goes on with the next
    /// pass. Count it where an operator sees it.
    fn watcher_panicked(&self, _message: &str) {}
}

/// How often to look, and how long a new file must be still.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub rescan: Duration,
    pub settle: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self { rescan: Duration::from_secs(2), settle: Duration::from_millis(500) }
    }
}

/// Asks the watcher to unload versions; cheap to clone.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    commands: crossbeam_channel::Sender<(String, u64)>,
}

impl WatchHandle {
    /// Unloads a version that no longer serves (e.g. blue after a blue/green
    /// retention). It stays unloaded while its folder exists, until restart.
    pub fn retire(&self, model: &str, version: u64) {
        let _ = self.commands.send((model.to_string(), version));
    }
}

/// The running watcher; dropping it stops the thread.
pub struct RepositoryWatcher {
    handle: WatchHandle,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Stops a warm-up in progress when the watcher is dropped.
    runs: Option<Arc<RunStop>>,
    _fs: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for RepositoryWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryWatcher").finish()
    }
}

impl RepositoryWatcher {
    pub fn handle(&self) -> WatchHandle {
        self.handle.clone()
    }
}

/// How long dropping the watcher waits for its thread (a load may be inside
/// ONNX Runtime's session builder, which cannot be stopped).
const STOP_WAIT: Duration = Duration::from_secs(3);

impl Drop for RepositoryWatcher {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(runs) = &self.runs {
            runs.shut_down();
        }
        if let Some(t) = self.thread.take() {
            modelgate_runtime::executor::join_within(vec![t], STOP_WAIT);
        }
    }
}

/// Size and modification time: a file is complete when these stop changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    size: u64,
    modified: Option<SystemTime>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| Fingerprint { size: meta.len(), modified: meta.modified().ok() })
}

struct State {
    runtime: Runtime,
    root: PathBuf,
    load: LoadSettings,
    settings: WatchSettings,
    entries: BTreeMap<String, ModelEntry>,
    /// Files seen but not yet still for the settle time.
    pending: HashMap<PathBuf, (Fingerprint, Instant)>,
    /// Fingerprints of versions that are loaded or FAILED, to notice a replaced file.
    known: HashMap<PathBuf, Fingerprint>,
    /// Removals already warned about.
    refused: HashMap<(String, u64), Instant>,
    /// Versions unloaded on request; never loaded again by this process.
    retired: HashSet<(String, u64)>,
    /// Models whose model.toml does not parse, with the error already
    /// logged (once per distinct error).
    bad_config: HashMap<String, String>,
    /// Watches warm-ups (time limit, shutdown).
    runs: Arc<RunStop>,
}

/// Starts watching `root`. `initial` is what was loaded at start.
pub fn watch(
    runtime: Runtime,
    root: &Path,
    load: LoadSettings,
    settings: WatchSettings,
    initial: Vec<ModelEntry>,
    listener: Arc<dyn RepositoryListener>,
) -> RepositoryWatcher {
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let fs = {
        let wake = wake_tx.clone();
        let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = wake.try_send(());
            }
        });
        match w {
            Ok(mut w) => match w.watch(root, notify::RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the model repository; relying on the periodic rescan");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no filesystem watcher; relying on the periodic rescan");
                None
            }
        }
    };
    let mut known = HashMap::new();
    for m in &initial {
        for v in m.versions.values() {
            let file = v.path.join(MODEL_FILE);
            if let Some(fp) = fingerprint(&file) {
                known.insert(file, fp);
            }
        }
    }
    let runs = match RunStop::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the model repository");
            return RepositoryWatcher {
                handle: WatchHandle { commands: crossbeam_channel::unbounded().0 },
                stop: None,
                thread: None,
                runs: None,
                _fs: fs,
            };
        }
    };
    let mut state = State {
        runs,
        runtime,
        root: root.to_path_buf(),
        load,
        settings,
        entries: initial.into_iter().map(|m| (m.name.clone(), m)).collect(),
        pending: HashMap::new(),
        known,
        refused: HashMap::new(),
        retired: HashSet::new(),
        bad_config: HashMap::new(),
    };
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<(String, u64)>();
    let runs = Arc::clone(&state.runs);
    let thread = std::thread::Builder::new()
        .name("model-watch".into())
        .spawn(move || {
            loop {
                // A panic in a pass is reported and the next pass goes on:
                // the watcher never stops while the gateway serves.
                let pass = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    state.pass(listener.as_ref(), &stop_rx, &cmd_rx, &wake_rx)
                }));
                match pass {
                    Ok(Pass::Continue) => {}
                    Ok(Pass::Stop) => return,
                    Err(panic) => {
                        let message = crate::panic_message(panic.as_ref());
                        tracing::error!(%message, "the model watcher's pass panicked; it goes on with the next pass");
                        listener.watcher_panicked(&message);
                        // Never a hot loop, whatever keeps panicking.
                        std::thread::sleep(state.settings.rescan.min(Duration::from_secs(1)));
                    }
                }
            }
        })
        .map_err(|e| tracing::error!(error = %e, "cannot start the model watcher; new versions will not be loaded"))
        .ok();
    RepositoryWatcher {
        handle: WatchHandle { commands: cmd_tx },
        stop: Some(stop_tx),
        thread,
        runs: Some(runs),
        _fs: fs,
    }
}

/// What the watcher does after a pass.
enum Pass {
    Continue,
    Stop,
}

impl State {
    /// Waits for something to do (a stop, a command, a filesystem event or
    /// the rescan period) and does it.
    fn pass(
        &mut self,
        listener: &dyn RepositoryListener,
        stop_rx: &crossbeam_channel::Receiver<()>,
        cmd_rx: &crossbeam_channel::Receiver<(String, u64)>,
        wake_rx: &crossbeam_channel::Receiver<()>,
    ) -> Pass {
        let timeout = if self.pending.is_empty() { self.settings.rescan } else { self.settings.settle / 2 };
        crossbeam_channel::select! {
            recv(stop_rx) -> _ => return Pass::Stop,
            recv(cmd_rx) -> cmd => {
                if let Ok((model, version)) = cmd
                    && self.retire(&model, version)
                {
                    let entries: Vec<ModelEntry> = self.entries.values().cloned().collect();
                    listener.publish(&entries);
                }
                return Pass::Continue;
            }
            recv(wake_rx) -> _ => {
                // Let a burst of events (a copy, a rename) finish first.
                std::thread::sleep(Duration::from_millis(50));
                while wake_rx.try_recv().is_ok() {}
            }
            default(timeout) => {}
        }
        let added = self.rescan(listener);
        if let Some(added) = added {
            let entries: Vec<ModelEntry> = self.entries.values().cloned().collect();
            listener.publish(&entries);
            for (model, version) in added {
                if let Some(m) = self.entries.get(&model) {
                    listener.version_ready(&model, version, &m.config);
                }
            }
        }
        Pass::Continue
    }

    /// A live model's edited model.toml: its `[analysis]`, `[triggers]`,
    /// `[records]` and `on_new_version` replace the ones in use (published with the next
    /// snapshot, so the controller judges with them from its next tick);
    /// true if they changed. The other settings (sessions, queues,
    /// batching, the trigger window's shape) are fixed when a version
    /// loads and apply to versions loaded from then on. An edit that does
    /// not parse or validate keeps the settings in use, and says why in
    /// the log once per distinct error.
    fn reload_config(&mut self, dir: &crate::ModelDir) -> bool {
        let Some(entry) = self.entries.get_mut(&dir.name) else { return false };
        match &dir.config {
            Ok(new) => {
                if self.bad_config.remove(&dir.name).is_some() {
                    tracing::info!(model = %dir.name, "model.toml is valid again");
                }
                let mut merged = entry.config.clone();
                merged.analysis = new.analysis.clone();
                merged.triggers = new.triggers.clone();
                merged.on_new_version = new.on_new_version;
                merged.records = new.records;
                if merged == entry.config {
                    return false;
                }
                tracing::info!(
                    model = %dir.name,
                    "model.toml changed: its [analysis], [triggers] and on_new_version apply from the next controller tick, [records] from the next request"
                );
                entry.config = merged;
                true
            }
            Err(e) => {
                let why = e.to_string();
                if self.bad_config.get(&dir.name) != Some(&why) {
                    tracing::warn!(model = %dir.name, error = %why, "model.toml edit refused; keeping the settings in use");
                    self.bad_config.insert(dir.name.clone(), why);
                }
                false
            }
        }
    }

    /// Unloads a version; true if it was loaded.
    fn retire(&mut self, model: &str, version: u64) -> bool {
        self.retired.insert((model.to_string(), version));
        let removed = self.entries.get_mut(model).and_then(|m| m.versions.remove(&version)).is_some();
        if removed {
            tracing::info!(model, version, "version retired and unloaded");
        }
        removed
    }

    /// One pass over the repository: `None` if nothing changed, else the
    /// versions that became READY in this pass.
    fn rescan(&mut self, listener: &dyn RepositoryListener) -> Option<Vec<(String, u64)>> {
        let dirs = match scan(&self.root) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "rescan failed; keeping what is loaded");
                return None;
            }
        };
        let mut changed = false;
        let mut added = Vec::new();
        let now = Instant::now();
        let mut present: HashMap<(String, u64), ()> = HashMap::new();
        for dir in dirs {
            crate::warn_skipped(&dir);
            changed |= self.reload_config(&dir);
            let config = match &dir.config {
                Ok(c) => c.clone(),
                Err(_) => ModelConfig::default(),
            };
            for v in &dir.versions {
                let file = v.path.join(MODEL_FILE);
                let Some(fp) = fingerprint(&file) else {
                    // A version folder without model.onnx that start-up listed
                    // FAILED ("no model.onnx") stays listed while its folder
                    // is there, whenever the rescans run; a new one is not
                    // listed until its file arrives (it may be being copied).
                    let failed = self.entries.get(&dir.name).and_then(|m| m.versions.get(&v.version));
                    if let Some(VersionEntry { state: VersionState::Failed(_), .. }) = failed {
                        present.insert((dir.name.clone(), v.version), ());
                    }
                    continue;
                };
                if self.retired.contains(&(dir.name.clone(), v.version)) {
                    continue;
                }
                present.insert((dir.name.clone(), v.version), ());
                if self.known.get(&file) == Some(&fp) {
                    continue;
                }
                // New or replaced: wait until it has been still for the settle time.
                match self.pending.get(&file) {
                    Some((seen, since)) if *seen == fp => {
                        if now.duration_since(*since) < self.settings.settle {
                            continue;
                        }
                    }
                    _ => {
                        self.pending.insert(file.clone(), (fp, now));
                        continue;
                    }
                }
                self.pending.remove(&file);
                let loaded = self.entries.get(&dir.name).and_then(|m| m.versions.get(&v.version));
                if let Some(VersionEntry { state: VersionState::Ready(_), .. }) = loaded {
                    // A READY version's file was replaced in place: versions are
                    // immutable once served; a new model needs a new version number.
                    tracing::warn!(model = %dir.name, version = v.version, "model.onnx of a loaded version changed; ignored (publish a new version instead)");
                    self.known.insert(file, fp);
                    continue;
                }
                let state = match &dir.config {
                    Err(e) => VersionState::Failed(e.to_string()),
                    Ok(_) => match load_version(&self.runtime, v, &config, &self.load, &self.runs) {
                        Ok(ready) => {
                            tracing::info!(model = %dir.name, version = v.version, sha256 = %ready.model().sha256(), "new version READY");
                            added.push((dir.name.clone(), v.version));
                            VersionState::Ready(ready)
                        }
                        Err(reason) => {
                            tracing::error!(model = %dir.name, version = v.version, %reason, "new version FAILED; it will not be served");
                            VersionState::Failed(reason)
                        }
                    },
                };
                self.known.insert(file, fp);
                let entry = self.entries.entry(dir.name.clone()).or_insert_with(|| ModelEntry {
                    name: dir.name.clone(),
                    config: config.clone(),
                    versions: BTreeMap::new(),
                });
                entry
                    .versions
                    .insert(v.version, VersionEntry { version: v.version, path: v.path.clone(), state });
                changed = true;
            }
        }
        // Versions whose files are gone.
        for m in self.entries.values_mut() {
            let gone: Vec<u64> =
                m.versions.keys().copied().filter(|v| !present.contains_key(&(m.name.clone(), *v))).collect();
            for v in gone {
                if listener.in_use(&m.name, v) {
                    let key = (m.name.clone(), v);
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.refused.entry(key) {
                        tracing::warn!(model = %m.name, version = v, "version folder removed while it serves traffic; keeping it loaded until it is idle or retired");
                        slot.insert(now);
                    }
                    continue;
                }
                if let Some(entry) = m.versions.remove(&v) {
                    self.known.remove(&entry.path.join(MODEL_FILE));
                    tracing::info!(model = %m.name, version = v, "version removed from the repository; unloaded");
                    self.refused.remove(&(m.name.clone(), v));
                    changed = true;
                }
            }
        }
        let before = self.entries.len();
        self.entries.retain(|_, m| !m.versions.is_empty());
        changed |= self.entries.len() != before;
        changed.then_some(added)
    }
}
