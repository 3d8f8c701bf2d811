//! The [`StateStore`] operations on etcd: the snapshot read (falling back to
//! the local copy), the commit conditioned on the revision read, and the
//! audit events written beside it and read back by time.

use std::sync::atomic::Ordering;

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::{EtcdStore, unavailable};
use crate::store::{Snapshot, StateStore, StoreError};

impl EtcdStore {
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
