//! State that survives a restart or a crash: the rollout snapshot and the
//! audit log. The store works in bytes and lines so that the file store (the
//! default) and the etcd store (fleet mode) implement the same small trait;
//! the typed layer above it serialises with serde_json.

pub mod file;

pub use file::FileStore;

/// The state store could not read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store I/O on {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("state store holds unreadable data in {path}: {reason}")]
    Corrupt { path: std::path::PathBuf, reason: String },
}

/// Where rollout state and audit events live.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The last snapshot written, if any.
    fn load_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the snapshot atomically: a crash leaves the old or the new one, whole.
    fn save_snapshot(&self, bytes: &[u8]) -> Result<(), StoreError>;
    /// Appends audit events, one JSON document per line; durable when this returns.
    fn append_events(&self, lines: &[String]) -> Result<(), StoreError>;
    /// Every audit event, oldest first.
    fn read_events(&self) -> Result<Vec<String>, StoreError>;
}
