//! The model repository, in Triton's layout:
//!
//! ```text
//! <repo>/<model>/model.toml            optional per-model settings
//! <repo>/<model>/<version>/model.onnx  versions are positive integers
//! ```
//!
//! Loading reads every version, builds its sessions, reads its signature and
//! warms it up. A version that fails any step is FAILED with the reason and is
//! never served; the rest of the repository still loads.

pub mod config;
pub mod watch;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use config::{
    AnalysisSettings, ConfigError, DEFAULT_RECORD_MAX_VALUES, ModelConfig, NewVersionPlan, OnNewVersion,
    RecordSettings, TriggerSettings,
};
use modelgate_runtime::{LoadedModel, ModelOptions, RunStop, Runtime, VersionQueue};

/// File name of a version's model inside its folder.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of a model's settings.
pub const CONFIG_FILE: &str = "model.toml";

/// A version folder found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDir {
    pub version: u64,
    pub path: PathBuf,
}

/// A model folder found by [`scan`].
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub name: String,
    pub path: PathBuf,
    pub config: Result<ModelConfig, ConfigError>,
    pub versions: Vec<VersionDir>,
    /// Folders that are not versions, with why: the caller warns once each.
    pub skipped: Vec<(String, &'static str)>,
}

/// Why a folder is not a version, if it is not.
fn version_number(name: &str) -> Result<u64, &'static str> {
    const WHY: &str = "version folders are positive integers without leading zeros";
    match name.parse::<u64>() {
        Ok(n) if n > 0 && name == n.to_string() => {
            // Versions travel as int64 (Predict, pins, plans): a larger
            // number could be listed but never named by a client.
            if n > i64::MAX as u64 {
                Err("versions must be at most 9223372036854775807 (int64)")
            } else {
                Ok(n)
            }
        }
        _ => Err(WHY),
    }
}

/// The repository folder itself cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read model repository {path}: {source}")]
pub struct ScanError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Lists models and versions without loading anything. Hidden entries are
/// skipped; folders whose name is not a version are listed in
/// [`ModelDir::skipped`] for the caller to warn about (once: the watcher
/// scans every few seconds).
pub fn scan(root: &Path) -> Result<Vec<ModelDir>, ScanError> {
    let err = |source| ScanError { path: root.to_path_buf(), source };
    let mut models = Vec::new();
    for entry in std::fs::read_dir(root).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        let path = entry.path();
        let config = match std::fs::read_to_string(path.join(CONFIG_FILE)) {
            Ok(text) => ModelConfig::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelConfig::default()),
            Err(e) => Err(ConfigError::Parse(format!("cannot read: {e}"))),
        };
        let mut versions = Vec::new();
        let mut skipped = Vec::new();
        let Ok(dir) = std::fs::read_dir(&path) else {
            continue;
        };
        for v in dir.flatten() {
            let vname = v.file_name().to_string_lossy().into_owned();
            if !v.path().is_dir() || vname.starts_with('.') {
                continue;
            }
            match version_number(&vname) {
                Ok(n) => versions.push(VersionDir { version: n, path: v.path() }),
                Err(why) => skipped.push((vname, why)),
            }
        }
        versions.sort_by_key(|v| v.version);
        skipped.sort();
        models.push(ModelDir { name, path, config, versions, skipped });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Warns about `dir`'s folders that are not versions, once per folder for
/// the life of the process (the watcher rescans every few seconds).
pub fn warn_skipped(dir: &ModelDir) {
    static WARNED: std::sync::Mutex<Option<std::collections::HashSet<PathBuf>>> = std::sync::Mutex::new(None);
    if dir.skipped.is_empty() {
        return;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let warned = warned.get_or_insert_with(Default::default);
    for (folder, why) in &dir.skipped {
        if warned.insert(dir.path.join(folder)) {
            tracing::warn!(model = %dir.name, %folder, "skipping folder: {why}");
        }
    }
}

/// A version loaded, warmed and ready to serve.
#[derive(Debug)]
pub struct ReadyVersion {
    pub version: u64,
    pub queue: Arc<VersionQueue>,
    /// The slowest warm-up run across the version's sessions.
    pub warm_up: Duration,
    /// Growth of the process's resident memory while this version loaded and
    /// warmed up (versions load one at a time); 0 where it cannot be read.
    pub memory_bytes: u64,
}

/// The process's resident set size, from /proc (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl ReadyVersion {
    pub fn model(&self) -> &Arc<LoadedModel> {
        self.queue.model()
    }
}

/// Where a version stands.
#[derive(Debug, Clone)]
pub enum VersionState {
    Ready(Arc<ReadyVersion>),
    /// Never served; the reason is shown to operators and clients.
    Failed(String),
}

/// A version of a model, in whatever state.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    pub version: u64,
    pub path: PathBuf,
    pub state: VersionState,
}

/// A model and all its versions.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub config: ModelConfig,
    pub versions: BTreeMap<u64, VersionEntry>,
}

impl ModelEntry {
    /// The ready versions, lowest first.
    pub fn ready(&self) -> impl DoubleEndedIterator<Item = &Arc<ReadyVersion>> {
        self.versions.values().filter_map(|v| match &v.state {
            VersionState::Ready(r) => Some(r),
            VersionState::Failed(_) => None,
        })
    }

    /// The highest ready version: the champion until a rollout says otherwise.
    pub fn latest_ready(&self) -> Option<&Arc<ReadyVersion>> {
        self.ready().next_back()
    }
}

/// How the repository is loaded.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Sessions per version when model.toml does not say: the executor's threads.
    pub default_sessions: usize,
    /// `max_tensor_bytes` when model.toml does not say (`--max-tensor-bytes`).
    pub max_tensor_bytes: u64,
    /// `max_run_ms` when model.toml does not say (`--max-run-ms`; `None`: no
    /// limit but the client's deadline).
    pub max_run: Option<Duration>,
    /// How long one warm-up run may take (`--warm-up-limit-seconds`).
    pub warm_up_limit: Duration,
    /// `inline_run_us` when model.toml does not say (`--inline-run-us`;
    /// `None`: never inline).
    pub inline_below: Option<Duration>,
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self {
            default_sessions: 1,
            max_tensor_bytes: modelgate_runtime::DEFAULT_MAX_TENSOR_BYTES,
            max_run: Some(DEFAULT_MAX_RUN),
            warm_up_limit: DEFAULT_WARM_UP_LIMIT,
            inline_below: Some(DEFAULT_INLINE_BELOW),
        }
    }
}

/// Default `--max-run-ms`.
pub const DEFAULT_MAX_RUN: Duration = Duration::from_secs(30);
/// Default `--inline-run-us`.
pub const DEFAULT_INLINE_BELOW: Duration = Duration::from_micros(50);
/// Default `--warm-up-limit-seconds`.
pub const DEFAULT_WARM_UP_LIMIT: Duration = Duration::from_secs(60);

pub use modelgate_runtime::panic_message;

/// Loads one version: sessions, signature, budget check, warm-up (watched
/// by `stop`). A panic anywhere in it makes the version FAILED with the
/// panic's message; it never takes the caller down.
pub fn load_version(
    runtime: &Runtime,
    dir: &VersionDir,
    config: &ModelConfig,
    settings: &LoadSettings,
    stop: &RunStop,
) -> Result<Arc<ReadyVersion>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        load_version_unguarded(runtime, dir, config, settings, stop)
    }))
    .unwrap_or_else(|panic| Err(format!("loading panicked: {}", panic_message(panic.as_ref()))))
}

fn load_version_unguarded(
    runtime: &Runtime,
    dir: &VersionDir,
    config: &ModelConfig,
    settings: &LoadSettings,
    stop: &RunStop,
) -> Result<Arc<ReadyVersion>, String> {
    let file = dir.path.join(MODEL_FILE);
    if !file.is_file() {
        return Err(format!("no {MODEL_FILE} in {}", dir.path.display()));
    }
    let options = ModelOptions {
        sessions: config.sessions.unwrap_or(settings.default_sessions).max(1),
        intra_op_threads: config.intra_op_threads,
        inter_op_threads: config.inter_op_threads,
        max_tensor_bytes: config.max_tensor_bytes.unwrap_or(settings.max_tensor_bytes),
    };
    let before = resident_bytes();
    let model = LoadedModel::load(runtime, &file, &options).map_err(|e| e.to_string())?;
    let warm_up = model.warm_up(stop, settings.warm_up_limit).map_err(|e| e.to_string())?;
    let memory_bytes = match (before, resident_bytes()) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };
    let batching = modelgate_runtime::Batching {
        max_batch: config.max_batch,
        max_queue_delay: std::time::Duration::from_micros(config.max_queue_delay_us),
    };
    let max_run = config.max_run_ms.map(Duration::from_millis).or(settings.max_run);
    let mut queue = VersionQueue::with_limits(Arc::new(model), config.queue_capacity, batching, max_run);
    let inline_below = config.inline_run_us.map(Duration::from_micros).or(settings.inline_below);
    queue.set_inline_below(inline_below);
    Ok(Arc::new(ReadyVersion { version: dir.version, queue, warm_up, memory_bytes }))
}

/// Scans and loads the whole repository. Failures are per version (or per
/// model, for a bad model.toml) and logged; they never stop the others.
pub fn load_repository(
    runtime: &Runtime,
    root: &Path,
    settings: &LoadSettings,
) -> Result<Vec<ModelEntry>, ScanError> {
    let mut out = Vec::new();
    let stop = RunStop::new()
        .map_err(|e| ScanError { path: root.to_path_buf(), source: std::io::Error::other(e) })?;
    for dir in scan(root)? {
        warn_skipped(&dir);
        let (config, config_err) = match dir.config {
            Ok(c) => (c, None),
            Err(e) => (ModelConfig::default(), Some(e.to_string())),
        };
        let mut versions = BTreeMap::new();
        for v in &dir.versions {
            let state = match &config_err {
                Some(e) => VersionState::Failed(e.clone()),
                None => match load_version(runtime, v, &config, settings, &stop) {
                    Ok(ready) => {
                        tracing::info!(
                            model = %dir.name,
                            version = v.version,
                            sha256 = %ready.model().sha256(),
                            sessions = ready.model().session_count(),
                            warm_up_ms = ready.warm_up.as_secs_f64() * 1e3,
                            "version READY"
                        );
                        VersionState::Ready(ready)
                    }
                    Err(reason) => VersionState::Failed(reason),
                },
            };
            if let VersionState::Failed(reason) = &state {
                tracing::error!(model = %dir.name, version = v.version, %reason, "version FAILED; it will not be served");
            }
            versions.insert(v.version, VersionEntry { version: v.version, path: v.path.clone(), state });
        }
        out.push(ModelEntry { name: dir.name, config, versions });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_reads_layout_and_skips_non_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path().join("m");
        for v in [
            "1",
            "10",
            "2",
            "01",
            "x",
            "0",
            "18446744073709551615",
            "9223372036854775808",
            "9223372036854775807",
        ] {
            std::fs::create_dir_all(m.join(v)).unwrap();
        }
        std::fs::create_dir_all(tmp.path().join(".hidden/1")).unwrap();
        std::fs::write(m.join(CONFIG_FILE), "queue_capacity = 3\n").unwrap();
        let models = scan(tmp.path()).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].name, "m");
        let versions: Vec<u64> = models[0].versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, vec![1, 2, 10, 9223372036854775807]);
        let skipped: Vec<&str> = models[0].skipped.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(skipped, vec!["0", "01", "18446744073709551615", "9223372036854775808", "x"]);
        assert!(models[0].skipped.iter().any(|(f, why)| f == "9223372036854775808" && why.contains("int64")));
        assert_eq!(models[0].config.as_ref().unwrap().queue_capacity, 3);
    }

    #[test]
    fn scan_of_missing_folder_is_an_error_naming_it() {
        let e = scan(Path::new("/nonexistent/models")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/models"), "{e}");
    }
}
