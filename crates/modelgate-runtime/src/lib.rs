//! ONNX Runtime for modelgate: finding the library, loading model versions
//! (session pool, signature, warm-up), the tensor type, and the executor whose
//! OS threads run every inference. tokio worker threads never run ORT.

pub mod budget;
pub mod executor;
pub mod job;
pub mod library;
pub mod model;
pub mod onnx;
pub mod quote;
pub mod run_estimate;
pub mod signature;
pub mod tensor;
pub mod watchdog;

pub use budget::CpuBudget;
// FP16/BF16 elements are `half`'s types; re-exported so that users of
// TensorData name the same crate version.
pub use executor::{
    BATCH_BUCKETS, Batching, Executor, ExecutorConfig, INLINE_MISS_REASONS, InferJob, InferOutput, JobTrace,
    RunError, SPAN_TARGET, SubmitError, VersionQueue,
};
pub use half;
pub use job::StopReason;
pub use library::{LibraryError, LibrarySource};
pub use model::{DEFAULT_MAX_TENSOR_BYTES, LoadError, LoadedModel, ModelOptions};
pub use quote::quoted;
pub use signature::{Dim, InputError, Signature, TensorSpec};
pub use tensor::{DataType, Tensor, TensorData};
pub use watchdog::RunStop;

/// The text of a caught panic (`catch_unwind`'s payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A loaded ONNX Runtime: the process-wide environment every session is built in.
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    source: LibrarySource,
    version: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("source", &self.source).field("version", &self.version).finish()
    }
}

impl Runtime {
    /// Finds and loads ONNX Runtime (see [`library`] for the search order).
    /// A missing library is one error that says where it looked and how to get it.
    /// ONNX Runtime is process-wide: once loaded, later calls return the same
    /// runtime whatever path they name.
    pub fn init(explicit: Option<&std::path::Path>) -> Result<Self, LibraryError> {
        static LOADED: std::sync::Mutex<Option<Runtime>> = std::sync::Mutex::new(None);
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = loaded.as_ref() {
            return Ok(rt.clone());
        }
        let rt = Self::load(explicit)?;
        *loaded = Some(rt.clone());
        Ok(rt)
    }

    fn load(explicit: Option<&std::path::Path>) -> Result<Self, LibraryError> {
        let source = library::locate(explicit);
        if let LibrarySource::Explicit(p) = &source
            && !p.is_file()
        {
            return Err(LibraryError::ExplicitMissing { path: p.clone() });
        }
        let path = source.path();
        let builder = match ort::init_from(&path) {
            Ok(b) => b,
            Err(e) => {
                return Err(match source {
                    LibrarySource::System => library::not_found_message(),
                    _ => LibraryError::Load { path, reason: e.to_string() },
                });
            }
        };
        let env = builder
            .with_name("modelgate")
            .with_telemetry(false)
            .build()
            .map_err(|e| LibraryError::Load { path: path.clone(), reason: e.to_string() })?;
        let version = ort_version(&source);
        Ok(Self { env, source, version })
    }

    pub fn source(&self) -> &LibrarySource {
        &self.source
    }

    /// The loaded library's version string, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn env(&self) -> &ort::environment::Environment {
        &self.env
    }
}

fn ort_version(source: &LibrarySource) -> String {
    // ort::info() is the build string; release builds name their branch
    // `rel-<version>`. The wheel's build says `HEAD`, but the cache file is
    // named after the version the fetch script pinned.
    let info = ort::info();
    if let Some(v) = info.split(',').find_map(|part| part.trim().strip_prefix("git-branch=rel-")) {
        return v.to_string();
    }
    match source {
        LibrarySource::Cache(_) => library::PINNED_ORT_VERSION.to_string(),
        _ => "unknown".to_string(),
    }
}
