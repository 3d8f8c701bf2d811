//! Finding and loading the ONNX Runtime shared library.
//!
//! modelgate links ONNX Runtime dynamically (ort's `load-dynamic`), so the
//! library is found at start, in this order:
//! 1. an explicit path (`--ort-lib` or `ORT_DYLIB_PATH`);
//! 2. the project's cache folder, filled by `scripts/fetch-onnxruntime.sh`
//!    from the pinned `onnxruntime` wheel on PyPI;
//! 3. the system library path (`libonnxruntime.so` through the dynamic loader).

use std::path::{Path, PathBuf};

/// The ONNX Runtime version the fetch script pins and the cache folder holds.
pub const PINNED_ORT_VERSION: &str = "1.32.0";

/// File name of the library inside the cache folder.
pub fn cached_library_name() -> String {
    format!("libonnxruntime.so.{PINNED_ORT_VERSION}")
}

/// The cache folders searched, most specific first: `$MODELGATE_CACHE_DIR/onnxruntime`,
/// `.cache/onnxruntime` under the current directory, and the same folder
/// relative to the executable (`target/<profile>/modelgate` → repo root) and to
/// the source tree this binary was built from.
pub fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("MODELGATE_CACHE_DIR") {
        dirs.push(PathBuf::from(dir).join("onnxruntime"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd.join(".cache/onnxruntime"));
    }
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            dirs.push(up.join(".cache/onnxruntime"));
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/onnxruntime"));
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let key = d.canonicalize().unwrap_or_else(|_| d.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    dirs
}

/// Where the library was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    Explicit(PathBuf),
    Cache(PathBuf),
    System,
}

impl LibrarySource {
    /// What to hand to the dynamic loader.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Explicit(p) | Self::Cache(p) => p.clone(),
            Self::System => PathBuf::from("libonnxruntime.so"),
        }
    }
}

/// ONNX Runtime could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("ONNX Runtime library not found at {path} (given by --ort-lib / ORT_DYLIB_PATH)")]
    ExplicitMissing { path: PathBuf },
    #[error(
        "ONNX Runtime library not found. Looked for: {looked}. Get it with `make ort` (runs \
         scripts/fetch-onnxruntime.sh, which takes libonnxruntime from the onnxruntime=={PINNED_ORT_VERSION} \
         wheel on PyPI), or point --ort-lib / ORT_DYLIB_PATH at a libonnxruntime.so (>= 1.22)"
    )]
    NotFound { looked: String },
    #[error("failed to load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

/// Finds the library without loading it. `explicit` is `--ort-lib` /
/// `ORT_DYLIB_PATH`. The system path is tried last, by the loader itself, so
/// its presence is only known when [`crate::Runtime::init`] loads it.
pub fn locate(explicit: Option<&Path>) -> LibrarySource {
    if let Some(p) = explicit {
        return LibrarySource::Explicit(p.to_path_buf());
    }
    for dir in cache_dirs() {
        let candidate = dir.join(cached_library_name());
        if candidate.is_file() {
            return LibrarySource::Cache(candidate);
        }
    }
    LibrarySource::System
}

pub(crate) fn not_found_message() -> LibraryError {
    let mut looked: Vec<String> = vec!["--ort-lib / ORT_DYLIB_PATH (not set)".into()];
    looked.extend(cache_dirs().iter().map(|d| d.join(cached_library_name()).display().to_string()));
    looked.push("libonnxruntime.so on the system library path".into());
    LibraryError::NotFound { looked: looked.join(", ") }
}
