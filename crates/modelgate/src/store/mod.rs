//! State that survives a restart or a crash: the rollout snapshot and the
//! audit log. The store works in bytes and lines so that the file store (the
//! default, one process) and the etcd store (fleet mode, many replicas)
//! implement the same small trait; the typed layer above it serialises with
//! serde_json.
//!
//! Every snapshot carries a revision. A change is committed together with
//! its audit events, conditioned on the revision the writer last saw: in
//! etcd two replicas racing to change the same state cannot both win (the
//! loser gets [`StoreError::Conflict`] and re-reads); the file store has one
//! writer and counts revisions only so the layer above need not care which
//! store it has.

pub mod etcd;
pub mod file;

pub use etcd::{EtcdStore, FleetEvent};
pub use file::FileStore;

/// The state store could not read or write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store I/O on {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("state store holds unreadable data in {path}: {reason}")]
    Corrupt { path: std::path::PathBuf, reason: String },
    /// The shared store cannot be reached; nothing was written.
    #[error(
        "the fleet's etcd is unreachable ({0}): rollout changes are refused until it returns; serving goes on with the last known state"
    )]
    Unavailable(String),
    /// etcd cannot be reached at start and this replica never kept a copy
    /// of the fleet's state: it has nothing it may serve.
    #[error(
        "the fleet's etcd is unreachable ({reason}) and this replica has no copy of the fleet state ({}) to serve from; it can start once etcd answers",
        cache.display()
    )]
    NoFleetState { reason: String, cache: std::path::PathBuf },
    /// Another replica changed the state since this one last read it;
    /// nothing was written.
    #[error("the rollout state changed on another replica (now at revision {current}); re-read and retry")]
    Conflict { current: u64 },
}

/// A stored snapshot and the revision it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: Vec<u8>,
    /// Increases with every commit; 0 means no snapshot was ever written.
    pub revision: u64,
    /// Where it was read (a file's path, an etcd key), for messages about it.
    pub origin: String,
}

/// Where rollout state and audit events live.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The last snapshot written, if any.
    async fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError>;
    /// Appends `events` (one JSON document each) and replaces the snapshot,
    /// both or neither, provided the stored snapshot is still at revision
    /// `expected` (0: none yet). Durable when this returns; returns the new
    /// revision.
    async fn commit(&self, expected: u64, snapshot: Vec<u8>, events: Vec<String>) -> Result<u64, StoreError>;
    /// Appends audit events that change no state (alerts); durable when this returns.
    async fn append_events(&self, lines: Vec<String>) -> Result<(), StoreError>;
    /// Every audit event, oldest first.
    async fn read_events(&self) -> Result<Vec<String>, StoreError>;
    /// The audit events written at or after `since_ms` (and maybe some
    /// written a little before: callers filter on the event's own time),
    /// oldest first. Stores that index by time read only those.
    async fn read_events_since(&self, since_ms: u64) -> Result<Vec<String>, StoreError> {
        let _ = since_ms;
        self.read_events().await
    }
}
