//! The etcd state store: fleet mode, N replicas acting as one gateway.
//!
//! Keys under the prefix (default `/modelgate`):
//!
//! - `<prefix>/state`: the rollout snapshot (JSON). Its etcd `mod_revision`
//!   is the snapshot's revision; a commit is a transaction conditioned on
//!   it, so two replicas cannot both change the state they both read.
//! - `<prefix>/audit/<ms>-<replica>-<seq>`: one audit event each, written in
//!   the same transaction as the state change they explain; read back in
//!   creation order.
//! - `<prefix>/leader`: the elected leader's replica id, bound to its lease.
//!   Decisions that must happen once (auto-advance, promotion, alerts) are
//!   the leader's; any replica may roll back on a hard trigger.
//! - `<prefix>/reports/<replica>.<incarnation>`: what one process of a
//!   replica counted (JSON: stage counts, each arm's window and running
//!   total). Not bound to a lease: when the process dies its counts still
//!   count for the stage they were made in, and a restarted replica (a new
//!   incarnation) adds to them rather than replacing them. The leader
//!   deletes a dead incarnation's report once nothing live needs it.
//! - `<prefix>/alive/<replica>.<incarnation>`: bound to the process's lease:
//!   whose reports are live (only live windows describe current traffic).
//!
//! A background task keeps a watch on the state key and turns what it sees
//! into [`FleetEvent`]s for the controller: every change made through any
//! replica arrives within one round trip. When etcd cannot be reached the
//! store says so (`connected()` is false, commits fail with
//! [`StoreError::Unavailable`] at once), the controller keeps serving the
//! last state it knew (fail static), and on reconnect the task delivers the
//! current state again so the replica resyncs.
//!
//! The last state seen is also kept in `<state dir>/etcd-cache.json`, so a
//! replica that starts while etcd is down serves what the fleet last agreed.
//!
//! A secured etcd ([`EtcdAccess`]): TLS with the CA that signed etcd's
//! certificates, a client certificate for etcd's `--client-cert-auth`, an
//! etcd user whose password is read from a file. The files are read again
//! every second; when they change (cert-manager renewing the client
//! certificate, a rotated password) a new client is built and tried, and it
//! replaces the old one only if etcd accepts it.
//!
//! Audit events are kept in etcd up to a count (`--etcd-audit-keep`): the
//! leader deletes the oldest beyond it, so the keyspace stays inside etcd's
//! quota. etcd's own history still needs the server's auto-compaction.
//!
//! The code is split by job: `access` (the `etcd://` URL and how to reach a
//! secured etcd), `watch` (the background task following the state key,
//! reconnection, the local copy), `fleet` (lease and leader election, the
//! count reports, trimming the audit log) and `state` (the `StateStore`
//! operations). The store itself, its start and stop, is here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use etcd_client::Client;
use tokio::sync::mpsc;

use super::StoreError;

mod access;
mod fleet;
mod state;
mod watch;

pub use access::{EtcdAccess, EtcdUrl};
pub use watch::FleetEvent;

use access::{endpoints, without_user};

/// Lease time-to-live: a dead replica's leadership and published counts
/// expire this long after its last keep-alive.
const LEASE_TTL_SECS: i64 = 5;
/// How often leases are renewed and leadership is checked.
const CAMPAIGN_EVERY: Duration = Duration::from_millis(1000);
/// Wait between reconnection attempts.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Bound on one etcd call; past it the store counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the leader trims the audit log, and the access files are read.
const TRIM_EVERY: Duration = Duration::from_secs(60);
const ACCESS_POLL: Duration = Duration::from_secs(1);
/// Audit events kept in etcd by default.
pub const DEFAULT_AUDIT_KEEP: u64 = 100_000;

/// State in etcd, shared by every replica.
pub struct EtcdStore {
    /// None until the first connection succeeds (an etcd user authenticates
    /// when connecting, which needs etcd up); replaced when the access files
    /// change and the new client works.
    client: ArcSwapOption<Client>,
    /// Why the last attempt to build a client failed, for the errors of
    /// calls made before one exists.
    last_error: std::sync::Mutex<Option<String>>,
    access: EtcdAccess,
    /// The access files' fingerprint the current client was built from.
    access_seen: std::sync::Mutex<[u8; 32]>,
    audit_keep: u64,
    url: EtcdUrl,
    replica: String,
    connected: AtomicBool,
    leader: AtomicBool,
    lease: AtomicI64,
    seq: AtomicU64,
    /// `<replica>.<start ms>-<pid>`: this process's reports.
    incarnation: String,
    cache: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.url.endpoints)
            .field("prefix", &self.url.prefix)
            .field("replica", &self.replica)
            .field("connected", &self.connected())
            .field("leader", &self.is_leader())
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EtcdStore {
    /// Creates the store and starts its watch and election tasks. Waits up
    /// to two seconds for the first connection, so a replica that starts
    /// with etcd up has joined the fleet (and takes admin changes) when it
    /// says it is ready; past that an unreachable etcd means fail-static,
    /// not failure.
    ///
    /// The access files must be readable and their certificates usable: a
    /// mistake there is a deployment error, reported at start.
    pub async fn start(
        url: EtcdUrl,
        access: EtcdAccess,
        audit_keep: u64,
        replica: String,
        state_dir: PathBuf,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<FleetEvent>), StoreError> {
        std::fs::create_dir_all(&state_dir)
            .map_err(|source| StoreError::Io { path: state_dir.clone(), source })?;
        let read = access.read()?;
        let endpoints = endpoints(&url, &access);
        // Without a user, connecting only builds the channel (it connects on
        // first use), so this checks the TLS files without needing etcd.
        // With one, it authenticates, which needs etcd: the follow task
        // connects (and retries) instead, and the check is done without it.
        let probe = if access.user.is_some() { without_user(&access)? } else { read.options.clone() };
        let client = Client::connect(&endpoints, Some(probe)).await.map_err(|e| StoreError::Corrupt {
            path: PathBuf::from("--etcd-ca/--etcd-cert/--etcd-key"),
            reason: e.to_string(),
        })?;
        let mut last_error = None;
        let client = if access.user.is_some() {
            match Client::connect(&endpoints, Some(read.options)).await {
                Ok(client) => Some(client),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot log in to etcd; retrying in the background");
                    last_error = Some(e.to_string());
                    None
                }
            }
        } else {
            Some(client)
        };
        let incarnation = format!("{replica}.{}-{}", crate::clock::now_ms(), std::process::id());
        let store = Arc::new(Self {
            client: ArcSwapOption::new(client.map(Arc::new)),
            last_error: std::sync::Mutex::new(last_error),
            access_seen: std::sync::Mutex::new(read.fingerprint),
            access,
            audit_keep,
            url,
            replica,
            connected: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            seq: AtomicU64::new(0),
            incarnation,
            cache: state_dir.join("etcd-cache.json"),
            stop: tokio::sync::watch::channel(false).0,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let mut stop = store.stop.subscribe();
        let follower = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::select! {
                () = follower.follow(tx) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        let mut stop = store.stop.subscribe();
        let campaigner = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::select! {
                () = campaigner.campaign() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
        let joined = tokio::time::Instant::now() + CALL_TIMEOUT;
        while !store.connected() && tokio::time::Instant::now() < joined {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok((store, rx))
    }

    /// The client, or Unavailable before the first successful connection.
    fn client(&self) -> Result<Arc<Client>, StoreError> {
        self.client.load_full().ok_or_else(|| {
            let why = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
            unavailable(format!("not connected yet: {}", why.as_deref().unwrap_or("connecting")))
        })
    }

    /// Stops the background tasks and gives up the lease, so another
    /// replica takes the leadership at once rather than after the TTL.
    pub async fn close(&self) {
        self.stop.send_replace(true);
        self.leader.store(false, Ordering::Release);
        let lease = self.lease.swap(0, Ordering::AcqRel);
        if lease != 0
            && self.connected()
            && let Ok(client) = self.client()
        {
            let _ = tokio::time::timeout(CALL_TIMEOUT, client.lease_client().revoke(lease)).await;
        }
        self.connected.store(false, Ordering::Release);
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.url.prefix)
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// This process's report id: `<replica>.<start ms>-<pid>`.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// Whether etcd answered the last call and the watch is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether this replica holds the leader key under its live lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire) && self.connected()
    }

    /// The state key and the etcd it lives in, for messages about it.
    fn state_origin(&self) -> String {
        format!("etcd key {} at {}", self.key("state"), self.url.endpoints.join(","))
    }
}
