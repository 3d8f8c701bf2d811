//! The background task that follows the fleet's state key: it (re)connects,
//! turns what the watch sees into [`FleetEvent`]s for the controller, reloads
//! the access files when they change, and keeps the local copy of the last
//! state seen (`etcd-cache.json`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use etcd_client::{Client, EventType, GetOptions};
use tokio::sync::mpsc;

use super::{ACCESS_POLL, CALL_TIMEOUT, EtcdStore, RETRY_EVERY, endpoints, unavailable};
use crate::store::{Snapshot, StoreError};

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

impl EtcdStore {
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

    pub(super) fn read_cache(&self) -> Option<Snapshot> {
        let text = std::fs::read_to_string(&self.cache).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(Snapshot {
            revision: doc.get("revision")?.as_u64()?,
            bytes: doc.get("state")?.as_str()?.as_bytes().to_vec(),
            origin: format!("{} (the local copy of the fleet state)", self.cache.display()),
        })
    }

    pub(super) async fn get_state(&self) -> Result<(Option<Snapshot>, i64), StoreError> {
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
    pub(super) async fn follow(&self, tx: mpsc::UnboundedSender<FleetEvent>) {
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
}
