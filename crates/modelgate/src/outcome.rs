//! Outcome feedback: business metrics reported after the fact, joined to the
//! version that served the request, and kept as rolling per-version windows
//! for experiments and promotion gates.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Mutex, OnceLock};

use modelgate_rollout::{Millis, Role};

/// Who served a request, remembered for joining outcomes by request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub version: u64,
    pub role: Role,
}

/// One metric's observations in one time bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start_ms: Millis,
    n: u64,
    sum: f64,
    sum_sq: f64,
}

/// A metric's mean and spread over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSummary {
    pub n: u64,
    pub mean: f64,
    pub variance: f64,
}

/// Rolling outcome sums per (model, version, metric), in 10-second buckets
/// kept for a day; summaries cover any window up to that.
#[derive(Debug)]
pub struct OutcomeStore {
    served: RecentIds,
    buckets: Mutex<HashMap<(String, u64, String), Vec<Bucket>>>,
    unjoined: std::sync::atomic::AtomicU64,
}

const BUCKET_MS: Millis = 10_000;
const KEEP_MS: Millis = 24 * 3600 * 1000;

impl OutcomeStore {
    /// Remembers the most recent request ids in at most `budget_bytes`.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            served: RecentIds::new(budget_bytes),
            buckets: Mutex::new(HashMap::new()),
            unjoined: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Remembers who served `request_id` of `model`.
    pub fn served(&self, model: &str, request_id: &str, served: Served) {
        self.served.insert(model, request_id, served);
    }

    /// Who served `request_id` of `model`, if it is still remembered.
    pub fn lookup(&self, model: &str, request_id: &str) -> Option<Served> {
        self.served.get(model, request_id)
    }

    /// Reserves (and touches) the memory for request ids now, if not yet
    /// done; the first remembered id does it otherwise.
    pub fn reserve(&self) {
        if self.served.per_table() > 0 {
            self.served.shards();
        }
    }

    /// Whether the memory for request ids is reserved.
    pub fn reserved(&self) -> bool {
        self.served.shards.get().is_some()
    }

    /// How many request ids are guaranteed to be remembered: the most
    /// recent this many always are (up to twice as many may be).
    pub fn join_capacity(&self) -> usize {
        self.served.guaranteed()
    }

    pub fn count_unjoined(&self) {
        self.unjoined.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn unjoined(&self) -> u64 {
        self.unjoined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds one observation of `metric` for `version` at `at_ms`.
    pub fn record(&self, model: &str, version: u64, metric: &str, value: f64, at_ms: Millis) {
        let start = at_ms - at_ms % BUCKET_MS;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = map.entry((model.to_string(), version, metric.to_string())).or_default();
        match buckets.iter_mut().find(|b| b.start_ms == start) {
            Some(b) => {
                b.n += 1;
                b.sum += value;
                b.sum_sq += value * value;
            }
            None => buckets.push(Bucket { start_ms: start, n: 1, sum: value, sum_sq: value * value }),
        }
        let oldest = at_ms.saturating_sub(KEEP_MS);
        buckets.retain(|b| b.start_ms >= oldest);
    }

    /// `metric` for `version` over the `window_ms` ending at `now_ms`.
    pub fn summary(
        &self,
        model: &str,
        version: u64,
        metric: &str,
        now_ms: Millis,
        window_ms: Millis,
    ) -> Option<MetricSummary> {
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = map.get(&(model.to_string(), version, metric.to_string()))?;
        let from = now_ms.saturating_sub(window_ms);
        let (n, sum, sum_sq) = buckets
            .iter()
            .filter(|b| b.start_ms + BUCKET_MS > from && b.start_ms <= now_ms)
            .fold((0u64, 0.0, 0.0), |(n, s, q), b| (n + b.n, s + b.sum, q + b.sum_sq));
        if n == 0 {
            return None;
        }
        let mean = sum / n as f64;
        let variance = if n > 1 { (sum_sq - n as f64 * mean * mean).max(0.0) / (n - 1) as f64 } else { 0.0 };
        Some(MetricSummary { n, mean, variance })
    }
}

/// The request ids of recent predictions and who served them, in memory
/// fixed at construction, for joining outcomes reported later.
///
/// An id is kept as a 64-bit keyed hash of (model, request id) next to the
/// version and role that served it: 24 bytes and a control byte in a hash
/// table, nothing allocated per id. The ids are spread over shards, one lock
/// each. A shard has two tables of a fixed capacity; when the current one is
/// full, the older one is cleared and becomes current. So the most recent
/// `capacity` ids of each shard are always found (and up to twice as many),
/// the oldest go first, and the tables never grow or shrink.
///
/// The memory is reserved and touched in full the first time an id is
/// remembered (a few milliseconds, once): what a pod needs shows at once,
/// not hours later as a slow climb. This replaced a moka cache keyed by the
/// id string. Its per-entry cost (the key and value allocations, the
/// access-order deques, the timer wheel) was several hundred bytes, and it
/// made resident memory climb for many minutes in the soak (`make soak`).
/// Its insert was also the costliest thing on the request path.
///
/// The hash is SipHash with a per-process random key, so clients cannot pick
/// ids that collide; by chance two ids share a hash with probability about
/// n / 2^64 for n remembered ids.
#[derive(Debug)]
struct RecentIds {
    hasher: RandomState,
    budget_bytes: u64,
    shards: OnceLock<Box<[Mutex<IdShard>]>>,
}

#[derive(Debug)]
struct IdShard {
    current: HashMap<u64, Served, KeyIsHash>,
    older: HashMap<u64, Served, KeyIsHash>,
}

const ID_SHARDS: usize = 8;

impl RecentIds {
    fn new(budget_bytes: u64) -> Self {
        Self { hasher: RandomState::new(), budget_bytes, shards: OnceLock::new() }
    }

    /// Buckets per table: the largest power of two whose tables (two per
    /// shard, an entry and a control byte per bucket) fit the budget.
    fn buckets(&self) -> usize {
        let per_bucket = (std::mem::size_of::<(u64, Served)>() + 1) as u64;
        let per_table = self.budget_bytes / (ID_SHARDS as u64 * 2 * per_bucket);
        if per_table < 16 {
            return 0;
        }
        1usize << (63 - per_table.leading_zeros())
    }

    /// Ids one table holds before it is rotated: hashbrown (std's map)
    /// fills a power-of-two table to 7/8, so a map built with this capacity
    /// has exactly `buckets()` buckets and never grows.
    fn per_table(&self) -> usize {
        self.buckets() / 8 * 7
    }

    fn guaranteed(&self) -> usize {
        self.per_table() * ID_SHARDS
    }

    fn shards(&self) -> &[Mutex<IdShard>] {
        self.shards.get_or_init(|| {
            let capacity = self.per_table();
            let table = || {
                let mut t = HashMap::with_capacity_and_hasher(capacity, KeyIsHash);
                // Touch every bucket now (keys 0..capacity land in distinct
                // buckets), so the memory is resident from the start.
                let fill = Served { version: 0, role: Role::Champion };
                t.extend((0..capacity as u64).map(|k| (k, fill)));
                t.clear();
                t
            };
            let shards: Box<[_]> =
                (0..ID_SHARDS).map(|_| Mutex::new(IdShard { current: table(), older: table() })).collect();
            tracing::info!(
                ids = capacity * ID_SHARDS,
                mib = (self.buckets() * ID_SHARDS * 2 * (std::mem::size_of::<(u64, Served)>() + 1)) as f64
                    / (1024.0 * 1024.0),
                "reserved memory for joining outcomes to request ids"
            );
            shards
        })
    }

    fn key(&self, model: &str, request_id: &str) -> (u64, usize) {
        let h = self.hasher.hash_one((model, request_id));
        // The shard comes from middle bits: the table uses the low bits for
        // the bucket and the top seven for its control tag.
        (h, (h >> 32) as usize % ID_SHARDS)
    }

    fn insert(&self, model: &str, request_id: &str, served: Served) {
        let capacity = self.per_table();
        if capacity == 0 {
            return;
        }
        let (key, shard) = self.key(model, request_id);
        let mut s = self.shards()[shard].lock().unwrap_or_else(|p| p.into_inner());
        if s.current.len() >= capacity && !s.current.contains_key(&key) {
            let s = &mut *s;
            std::mem::swap(&mut s.current, &mut s.older);
            s.current.clear();
        }
        s.current.insert(key, served);
    }

    fn get(&self, model: &str, request_id: &str) -> Option<Served> {
        let shards = self.shards.get()?;
        let (key, shard) = self.key(model, request_id);
        let s = shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        s.current.get(&key).or_else(|| s.older.get(&key)).copied()
    }

    #[cfg(test)]
    fn table_capacities(&self) -> Vec<usize> {
        self.shards
            .get()
            .map(|shards| {
                shards
                    .iter()
                    .flat_map(|s| {
                        let s = s.lock().unwrap();
                        [s.current.capacity(), s.older.capacity()]
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Keys that are already keyed hashes are their own hash.
#[derive(Debug, Clone, Copy, Default)]
struct KeyIsHash;

impl BuildHasher for KeyIsHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this keeps any other use correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_cover_the_window_only() {
        let s = OutcomeStore::new(1 << 20);
        let t = 1_000_000_000;
        for v in [1.0, 2.0, 3.0] {
            s.record("m", 1, "ctr", v, t);
        }
        s.record("m", 1, "ctr", 100.0, t - 3_600_000);
        let sum = s.summary("m", 1, "ctr", t, 60_000).unwrap();
        assert_eq!(sum.n, 3);
        assert!((sum.mean - 2.0).abs() < 1e-12);
        assert!((sum.variance - 1.0).abs() < 1e-12);
        assert_eq!(s.summary("m", 1, "ctr", t, 7_200_000).unwrap().n, 4);
        assert!(s.summary("m", 2, "ctr", t, 60_000).is_none());
    }

    #[test]
    fn request_ids_are_remembered_per_model() {
        let s = OutcomeStore::new(1 << 20);
        assert!(s.lookup("m", "r1").is_none(), "nothing remembered, nothing reserved");
        assert!(!s.reserved());
        s.served("m", "r1", Served { version: 3, role: Role::Canary });
        assert!(s.reserved(), "the first id reserves the memory");
        assert_eq!(s.lookup("m", "r1"), Some(Served { version: 3, role: Role::Canary }));
        assert!(s.lookup("m", "r2").is_none());
        assert!(s.lookup("other", "r1").is_none(), "the same id of another model is another request");
        s.served("m", "r1", Served { version: 4, role: Role::Champion });
        assert_eq!(s.lookup("m", "r1").map(|x| x.version), Some(4), "the latest answer wins");
    }

    #[test]
    fn the_most_recent_ids_are_kept_in_memory_that_never_grows() {
        // 1 MiB: 8 shards x 2 tables of 2048 buckets (25 bytes each).
        let s = OutcomeStore::new(1 << 20);
        let guaranteed = s.join_capacity();
        assert_eq!(guaranteed, 8 * 2048 / 8 * 7);
        let id = |i: usize| format!("req-{i}");
        s.served("m", &id(0), Served { version: 1, role: Role::Champion });
        let before = s.served.table_capacities();
        assert_eq!(before.len(), 16);
        let n = guaranteed * 5;
        for i in 0..n {
            s.served("m", &id(i), Served { version: i as u64, role: Role::Canary });
        }
        assert_eq!(s.served.table_capacities(), before, "no table grew");
        // Shards fill unevenly, so "the most recent per shard" is at least the
        // most recent (guaranteed - a few hundred) overall; check a safe tail.
        for i in n - guaranteed / 2..n {
            assert_eq!(s.lookup("m", &id(i)).map(|x| x.version), Some(i as u64), "recent id {i} forgotten");
        }
        let old_found = (0..guaranteed).filter(|&i| s.lookup("m", &id(i)).is_some()).count();
        assert_eq!(old_found, 0, "ids from {} inserts ago are gone", n - guaranteed);
    }

    #[test]
    fn a_budget_too_small_for_a_table_remembers_nothing() {
        let s = OutcomeStore::new(1000);
        assert_eq!(s.join_capacity(), 0);
        s.served("m", "r1", Served { version: 3, role: Role::Canary });
        assert!(s.lookup("m", "r1").is_none());
    }
}
