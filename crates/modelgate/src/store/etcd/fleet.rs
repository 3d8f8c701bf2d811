//! What replicas share besides the state: a lease per process and the
//! leader key held under it (the campaign), the count reports each process
//! publishes and the leader reads and cleans up, and the leader's trimming
//! of the audit log to `--etcd-audit-keep` events.

use std::sync::atomic::Ordering;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use super::{CALL_TIMEOUT, CAMPAIGN_EVERY, EtcdStore, LEASE_TTL_SECS, TRIM_EVERY, unavailable};
use crate::store::StoreError;

impl EtcdStore {
    /// Keeps a lease alive and holds (or waits for) the leader key.
    pub(super) async fn campaign(&self) {
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
}
