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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity,
    PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Snapshot, StateStore, StoreError};

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

/// How replicas reach a secured etcd. Every field is optional; none set is
/// plaintext without authentication (etcd on loopback or a private network).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// CA certificates (PEM) that signed etcd's server certificates. Set:
    /// connect with TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// An etcd user and the file holding its password (etcd auth).
    pub user: Option<(String, PathBuf)>,
}

/// What was read from an [`EtcdAccess`]'s files.
struct AccessRead {
    options: ConnectOptions,
    fingerprint: [u8; 32],
}

impl EtcdAccess {
    pub fn tls(&self) -> bool {
        self.ca.is_some()
    }

    fn read(&self) -> Result<AccessRead, StoreError> {
        fn file(path: &Path) -> Result<Vec<u8>, StoreError> {
            std::fs::read(path).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })
        }
        let mut h = Sha256::new();
        let mut part = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some(ca) = &self.ca {
            let ca = file(ca)?;
            part(&ca);
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                let (cert, key) = (file(cert)?, file(key)?);
                part(&cert);
                part(&key);
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((name, password_file)) = &self.user {
            let password = String::from_utf8(file(password_file)?).map_err(|_| StoreError::Corrupt {
                path: password_file.clone(),
                reason: "the etcd password file is not UTF-8".into(),
            })?;
            // Secret files often end with a newline the password does not have.
            let password = password.trim_end_matches(['\n', '\r']);
            part(name.as_bytes());
            part(password.as_bytes());
            // etcd's tokens expire (simple tokens after 5 minutes idle): get
            // a new one when a call is refused for that.
            options = options.with_user(name.clone(), password).with_auto_token_refresh(true);
        }
        Ok(AccessRead { options, fingerprint: h.finalize().into() })
    }
}

/// What the store's background task tells the controller.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    /// (Re)connected: the state as it is in etcd now (None: never written).
    Connected(Option<Snapshot>),
    /// Another writer changed the state.
    Changed(Snapshot),
    /// etcd stopped answering; serving goes on with the last state.
    Disconnected(String),
}

/// Where the fleet's state lives: `etcd://host:port[,host:port...]/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

impl std::str::FromStr for EtcdUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("'{s}' is not an etcd URL (etcd://host:port[,host:port]/prefix)"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let prefix = if prefix.is_empty() { "/modelgate".to_string() } else { prefix.to_string() };
        let endpoints: Vec<String> =
            hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("http://{h}")).collect();
        if endpoints.is_empty() {
            return Err(format!("'{s}' names no etcd endpoint"));
        }
        for h in hosts.split(',') {
            let ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("etcd endpoint '{h}' in '{s}' is not host:port"));
            }
        }
        Ok(Self { endpoints, prefix })
    }
}

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

/// The URL's endpoints, https:// when the access has a CA.
fn endpoints(url: &EtcdUrl, access: &EtcdAccess) -> Vec<String> {
    url.endpoints
        .iter()
        .map(|e| match (access.tls(), e.strip_prefix("http://")) {
            (true, Some(rest)) => format!("https://{rest}"),
            _ => e.clone(),
        })
        .collect()
}

/// The access's connect options without its user: connecting with them
/// does not call etcd.
fn without_user(access: &EtcdAccess) -> Result<ConnectOptions, StoreError> {
    let access = EtcdAccess { user: None, ..access.clone() };
    Ok(access.read()?.options)
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

    /// A new client from the access files as they are now.
    async fn connect(&self) -> Result<(Client, [u8; 32]), StoreError> {
        let read = self.access.read()?;
        let client = Client::connect(endpoints(&self.url, &self.access), Some(read.options))
            .await
            .map_err(unavailable)?;
        Ok((client, read.fingerprint))
    }

    /// Rebuilds the client when the access files changed, keeping the old
    /// one unless etcd accepts the new. Returns whether it was replaced.
    async fn reload_access(&self) -> bool {
        let seen = *self.access_seen.lock().unwrap_or_else(|p| p.into_inner());
        match self.access.read() {
            Ok(read) if read.fingerprint == seen => return false,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read the etcd access files; keeping the current connection");
                return false;
            }
        }
        let tried = async {
            let (client, fingerprint) = self.connect().await?;
            client
                .kv_client()
                .get(self.key("state"), Some(GetOptions::new().with_count_only()))
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>((client, fingerprint))
        };
        match tokio::time::timeout(CALL_TIMEOUT * 2, tried).await {
            Ok(Ok((client, fingerprint))) => {
                self.client.store(Some(Arc::new(client)));
                *self.access_seen.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
                tracing::info!("etcd access files changed: reconnected with them");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "etcd refused the changed access files; keeping the current connection");
                false
            }
            Err(_) => {
                tracing::error!(
                    "etcd did not answer with the changed access files; keeping the current connection"
                );
                false
            }
        }
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

    fn write_cache(&self, snap: &Snapshot) {
        let doc = serde_json::json!({
            "revision": snap.revision,
            "state": String::from_utf8_lossy(&snap.bytes),
        });
        let tmp = self.cache.with_extension("json.tmp");
        let result = std::fs::write(&tmp, doc.to_string()).and_then(|()| std::fs::rename(&tmp, &self.cache));
        if let Err(e) = result {
            tracing::warn!(path = %self.cache.display(), error = %e, "cannot keep the local copy of the fleet state");
        }
    }

    fn read_cache(&self) -> Option<Snapshot> {
        let text = std::fs::read_to_string(&self.cache).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(Snapshot {
            revision: doc.get("revision")?.as_u64()?,
            bytes: doc.get("state")?.as_str()?.as_bytes().to_vec(),
            origin: format!("{} (the local copy of the fleet state)", self.cache.display()),
        })
    }

    async fn get_state(&self) -> Result<(Option<Snapshot>, i64), StoreError> {
        let mut kv = self.client()?.kv_client();
        let resp = kv.get(self.key("state"), None).await.map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let snap = resp.kvs().first().map(|kv| Snapshot {
            bytes: kv.value().to_vec(),
            revision: kv.mod_revision() as u64,
            origin: self.state_origin(),
        });
        Ok((snap, revision))
    }

    /// Watches the state key for as long as etcd answers; reconnects forever.
    async fn follow(&self, tx: mpsc::UnboundedSender<FleetEvent>) {
        loop {
            let reason = match self.follow_once(&tx).await {
                Ok(()) => return, // the controller is gone
                Err(e) => e.to_string(),
            };
            if self.connected.swap(false, Ordering::AcqRel) {
                self.leader.store(false, Ordering::Release);
                tracing::warn!(error = %reason, "etcd unreachable: serving the last known rollout state; admin changes are refused until it returns");
                if tx.send(FleetEvent::Disconnected(reason)).is_err() {
                    return;
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    async fn follow_once(&self, tx: &mpsc::UnboundedSender<FleetEvent>) -> Result<(), StoreError> {
        if self.client.load().is_none() {
            let (client, fingerprint) = self.connect().await.inspect_err(|e| {
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            })?;
            self.client.store(Some(Arc::new(client)));
            *self.access_seen.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
        }
        let (snap, revision) = self.get_state().await?;
        let mut watch = self.client()?.watch_client();
        let mut stream = watch
            .watch(
                self.key("state"),
                Some(etcd_client::WatchOptions::new().with_start_revision(revision + 1)),
            )
            .await
            .map_err(unavailable)?;
        if let Some(s) = &snap {
            self.write_cache(s);
        }
        if !self.connected.swap(true, Ordering::AcqRel) {
            tracing::info!(endpoints = ?self.url.endpoints, prefix = %self.url.prefix, "connected to etcd");
        }
        if tx.send(FleetEvent::Connected(snap)).is_err() {
            return Ok(());
        }
        let mut poll = tokio::time::interval(ACCESS_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = poll.tick() => {
                    // The watch stays on the connection it started on; new
                    // calls take the new client.
                    self.reload_access().await;
                    continue;
                }
            };
            let Some(resp) = message.map_err(unavailable)? else {
                return Err(unavailable("the watch stream ended"));
            };
            if resp.canceled() {
                return Err(unavailable(format!("the watch was cancelled: {}", resp.cancel_reason())));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() != EventType::Put {
                    tracing::warn!(key = %self.key("state"), "the fleet state key was deleted; keeping the last state");
                    continue;
                }
                let snap = Snapshot {
                    bytes: kv.value().to_vec(),
                    revision: kv.mod_revision() as u64,
                    origin: self.state_origin(),
                };
                self.write_cache(&snap);
                if tx.send(FleetEvent::Changed(snap)).is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Keeps a lease alive and holds (or waits for) the leader key.
    async fn campaign(&self) {
        let mut keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> = None;
        let mut interval = tokio::time::interval(CAMPAIGN_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_trim: Option<tokio::time::Instant> = None;
        loop {
            interval.tick().await;
            if self.is_leader() && last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
                last_trim = Some(tokio::time::Instant::now());
                match self.trim_audit().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        deleted = n,
                        keep = self.audit_keep,
                        "trimmed the oldest audit events in etcd"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot trim the audit events in etcd"),
                }
            }
            if !self.connected() {
                keeper = None;
                self.lease.store(0, Ordering::Release);
                self.leader.store(false, Ordering::Release);
                continue;
            }
            match self.campaign_once(&mut keeper).await {
                Ok(leader) => {
                    if leader != self.leader.swap(leader, Ordering::AcqRel) {
                        tracing::info!(replica = %self.replica, leader, "fleet leadership changed");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "lease or election call failed");
                    keeper = None;
                    self.lease.store(0, Ordering::Release);
                    self.leader.store(false, Ordering::Release);
                }
            }
        }
    }

    async fn campaign_once(
        &self,
        keeper: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    ) -> Result<bool, StoreError> {
        match keeper {
            Some((k, stream)) => {
                k.keep_alive().await.map_err(unavailable)?;
                let resp = tokio::time::timeout(CALL_TIMEOUT, stream.message())
                    .await
                    .map_err(|_| unavailable("lease keep-alive timed out"))?
                    .map_err(unavailable)?
                    .ok_or_else(|| unavailable("lease keep-alive stream ended"))?;
                if resp.ttl() <= 0 {
                    return Err(unavailable("the lease expired"));
                }
            }
            None => {
                let mut lease = self.client()?.lease_client();
                let granted = lease.grant(LEASE_TTL_SECS, None).await.map_err(unavailable)?;
                let pair = lease.keep_alive(granted.id()).await.map_err(unavailable)?;
                self.client()?
                    .kv_client()
                    .put(
                        self.key(&format!("alive/{}", self.incarnation)),
                        self.replica.clone(),
                        Some(PutOptions::new().with_lease(granted.id())),
                    )
                    .await
                    .map_err(unavailable)?;
                self.lease.store(granted.id(), Ordering::Release);
                *keeper = Some(pair);
            }
        }
        let lease = self.lease.load(Ordering::Acquire);
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.replica.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client()?.kv_client().txn(txn).await.map_err(unavailable)?;
        if resp.succeeded() {
            return Ok(true);
        }
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return Ok(kv.value() == self.replica.as_bytes() && kv.lease() == lease);
            }
        }
        Ok(false)
    }

    /// Publishes what this process counted (JSON).
    pub async fn publish_counts(&self, bytes: Vec<u8>) -> Result<(), StoreError> {
        if !self.connected() || self.lease.load(Ordering::Acquire) == 0 {
            return Err(unavailable("not connected"));
        }
        let key = self.key(&format!("reports/{}", self.incarnation));
        self.client()?.kv_client().put(key, bytes, None).await.map_err(unavailable)?;
        Ok(())
    }

    /// Every report in etcd, live or not: (incarnation, JSON, alive).
    pub async fn fleet_counts(&self) -> Result<Vec<(String, Vec<u8>, bool)>, StoreError> {
        if !self.connected() {
            return Err(unavailable("not connected"));
        }
        let (reports, alive) = (self.key("reports/"), self.key("alive/"));
        let txn = Txn::new().and_then([
            TxnOp::get(reports.clone(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(alive.clone(), Some(GetOptions::new().with_prefix().with_keys_only())),
        ]);
        let resp = self.client()?.kv_client().txn(txn).await.map_err(unavailable)?;
        let mut gets = resp.op_responses().into_iter().filter_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let (Some(report_kvs), Some(alive_kvs)) = (gets.next(), gets.next()) else {
            return Err(unavailable("etcd answered the reports read without its two ranges"));
        };
        let live: std::collections::HashSet<String> = alive_kvs
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).trim_start_matches(&alive).to_string())
            .collect();
        Ok(report_kvs
            .kvs()
            .iter()
            .map(|kv| {
                let id = String::from_utf8_lossy(kv.key()).trim_start_matches(&reports).to_string();
                let alive = live.contains(&id);
                (id, kv.value().to_vec(), alive)
            })
            .collect())
    }

    /// Deletes the reports of dead incarnations nothing live counts any more.
    pub async fn delete_reports(&self, incarnations: &[String]) -> Result<(), StoreError> {
        if incarnations.is_empty() {
            return Ok(());
        }
        let ops: Vec<TxnOp> =
            incarnations.iter().map(|i| TxnOp::delete(self.key(&format!("reports/{i}")), None)).collect();
        self.client()?.kv_client().txn(Txn::new().and_then(ops)).await.map_err(unavailable)?;
        Ok(())
    }

    /// Deletes the oldest audit events beyond the `audit_keep` newest, at
    /// most 10,000 a call (a larger backlog goes over the next minutes).
    /// Keys sort by time (`<ms>-<replica>-<seq>`), so the oldest are the
    /// first keys. Returns how many were deleted.
    pub async fn trim_audit(&self) -> Result<u64, StoreError> {
        const MAX_PER_CALL: u64 = 10_000;
        let prefix = self.key("audit/");
        let mut kv = self.client()?.kv_client();
        let count = kv
            .get(prefix.clone(), Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .map_err(unavailable)?
            .count();
        let excess = (count.max(0) as u64).saturating_sub(self.audit_keep).min(MAX_PER_CALL);
        if excess == 0 {
            return Ok(0);
        }
        let oldest = kv
            .get(
                prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Key, SortOrder::Ascend)
                        .with_limit(excess as i64),
                ),
            )
            .await
            .map_err(unavailable)?;
        let Some(last) = oldest.kvs().last() else { return Ok(0) };
        // [prefix, last key + NUL): every audit key up to and including the last.
        let mut end = last.key().to_vec();
        end.push(0);
        let deleted = kv
            .delete(prefix, Some(DeleteOptions::new().with_range(end)))
            .await
            .map_err(unavailable)?
            .deleted();
        Ok(deleted.max(0) as u64)
    }

    fn audit_ops(&self, lines: Vec<String>) -> Vec<TxnOp> {
        let now = crate::clock::now_ms();
        lines
            .into_iter()
            .map(|line| {
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                TxnOp::put(self.key(&format!("audit/{now:013}-{}-{seq:08}", self.replica)), line, None)
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl StateStore for EtcdStore {
    async fn load_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        match self.get_state().await {
            Ok((snap, _)) => Ok(snap),
            Err(e) => match self.read_cache() {
                Some(snap) => {
                    tracing::warn!(error = %e, revision = snap.revision, "etcd unreachable at start: serving the fleet state last seen here");
                    Ok(Some(snap))
                }
                None => Err(match e {
                    StoreError::Unavailable(reason) => {
                        StoreError::NoFleetState { reason, cache: self.cache.clone() }
                    }
                    other => other,
                }),
            },
        }
    }

    async fn commit(&self, expected: u64, snapshot: Vec<u8>, events: Vec<String>) -> Result<u64, StoreError> {
        if !self.connected() {
            return Err(unavailable("not connected"));
        }
        let key = self.key("state");
        let cond = if expected == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected as i64)
        };
        let mut ops = vec![TxnOp::put(key.clone(), snapshot, None)];
        ops.extend(self.audit_ops(events));
        let txn = Txn::new().when([cond]).and_then(ops).or_else([TxnOp::get(key, None)]);
        let resp = self.client()?.kv_client().txn(txn).await.map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        if resp.succeeded() {
            return Ok(revision);
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision() as u64),
                _ => None,
            })
            .unwrap_or(0);
        Err(StoreError::Conflict { current })
    }

    async fn append_events(&self, lines: Vec<String>) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        if !self.connected() {
            return Err(unavailable("not connected"));
        }
        let txn = Txn::new().and_then(self.audit_ops(lines));
        self.client()?.kv_client().txn(txn).await.map_err(unavailable)?;
        Ok(())
    }

    async fn read_events(&self) -> Result<Vec<String>, StoreError> {
        self.read_events_since(0).await
    }

    /// Keys start with the writer's clock in ms, so this is a key range:
    /// `[audit/<since - 60 s>, audit0)`, the minute's slack for replicas'
    /// clocks being apart.
    async fn read_events_since(&self, since_ms: u64) -> Result<Vec<String>, StoreError> {
        let from = self.key(&format!("audit/{:013}", since_ms.saturating_sub(60_000)));
        let end = self.key("audit0"); // '0' follows '/'
        let resp = self
            .client()?
            .kv_client()
            .get(from, Some(GetOptions::new().with_range(end).with_sort(SortTarget::Key, SortOrder::Ascend)))
            .await
            .map_err(unavailable)?;
        let mut kvs: Vec<_> = resp.kvs().iter().collect();
        // Commit order; events of one transaction keep their key order.
        kvs.sort_by_key(|kv| kv.create_revision());
        Ok(kvs.into_iter().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_a_default_prefix() {
        let u: EtcdUrl = "etcd://127.0.0.1:2379/prod/gw".parse().unwrap();
        assert_eq!(u.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(u.prefix, "/prod/gw");
        let u: EtcdUrl = "etcd://a:1,b:2".parse().unwrap();
        assert_eq!(u.endpoints, vec!["http://a:1", "http://b:2"]);
        assert_eq!(u.prefix, "/modelgate");
        assert!("etcd://a/x".parse::<EtcdUrl>().unwrap_err().contains("host:port"));
        assert!("http://a:1".parse::<EtcdUrl>().unwrap_err().contains("not an etcd URL"));
        assert!("etcd:///x".parse::<EtcdUrl>().is_err());
    }
}
