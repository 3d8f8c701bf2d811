//! Sticky routing: a request's key maps to one of [`BUCKETS`] buckets, and a
//! [`RoutingTable`] maps every bucket to exactly one [`Arm`].
//!
//! # The hash contract
//!
//! `bucket(salt, key) = xxh3_64_with_seed(key, seed = salt) % 10_000`, where
//! `key` is the routing key's UTF-8 bytes exactly as received (no
//! normalisation, no terminator) and XXH3 is the 64-bit variant of xxHash
//! (XXH3_64bits_withSeed in the reference C library). Any replica, in any
//! language, that applies this formula puts a user in the same bucket, so a
//! fleet agrees on arms without talking. The golden vectors in the tests pin
//! it: changing them moves users between arms mid-rollout.
//!
//! # Layouts
//!
//! A candidate's share always grows from the start of the bucket space: a
//! canary at p% owns `[0, p*100)` and the champion owns the rest. Growing
//! 5% → 20% → 50% therefore never moves a user out of the canary, and
//! shrinking never moves a user into it.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The number of buckets; a bucket is one basis point of traffic.
pub const BUCKETS: u32 = 10_000;

/// XORed into the salt to seed the shadow-sampling hash, so the requests
/// picked for shadowing are independent of the arm they were routed to.
/// The value is ASCII "SHADOW_1" read as a big-endian u64; it is part of the
/// hash contract and must never change.
pub const SHADOW_SEED_XOR: u64 = 0x5348_4144_4f57_5f31;

/// The bucket in `[0, BUCKETS)` for `key` under `salt`; see the module docs
/// for the exact, cross-language contract.
pub fn bucket(salt: u64, key: &[u8]) -> u32 {
    // The remainder is below 10_000, so the narrowing cannot truncate.
    (xxh3_64_with_seed(key, salt) % u64::from(BUCKETS)) as u32
}

/// Whether the request with `request_key` gets a shadow copy, for a shadow
/// taking `fraction_bp` basis points (of 10_000) of requests.
///
/// The hash is `xxh3_64_with_seed(request_key, salt ^ SHADOW_SEED_XOR) %
/// 10_000 < fraction_bp`: a different seed from [`bucket`], so which requests
/// are shadowed does not correlate with which arm served them.
pub fn shadow_sampled(salt: u64, request_key: &[u8], fraction_bp: u32) -> bool {
    fraction_bp >= BUCKETS
        || xxh3_64_with_seed(request_key, salt ^ SHADOW_SEED_XOR) % u64::from(BUCKETS)
            < u64::from(fraction_bp)
}

/// What an arm is for; the gateway reports it with every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The version serving by default.
    Champion,
    /// A canary candidate taking a growing slice.
    Canary,
    /// A champion-challenger challenger on a fixed slice.
    Challenger,
    /// The current environment of a blue/green switch.
    Blue,
    /// The new environment of a blue/green switch.
    Green,
    /// The A/B arm running the champion.
    Control,
    /// An A/B arm running a new version.
    Treatment,
    /// A version receiving copies of requests; never answers a client.
    Shadow,
    /// A version the client asked for explicitly, bypassing the table.
    Pinned,
}

impl Role {
    /// The lowercase name used in replies, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Canary => "canary",
            Role::Challenger => "challenger",
            Role::Blue => "blue",
            Role::Green => "green",
            Role::Control => "control",
            Role::Treatment => "treatment",
            Role::Shadow => "shadow",
            Role::Pinned => "pinned",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One destination in a routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// The model version this arm serves.
    pub version: u64,
    /// What the arm is for.
    pub role: Role,
    /// Unique within the table: "champion", "canary", "challenger-3", "blue",
    /// "green", or an A/B arm's name.
    pub name: String,
    /// Half-open bucket ranges `[start, end)`. May be empty: a 0% arm is kept
    /// in the table so its weight shows as 0 rather than vanishing.
    pub ranges: Vec<(u32, u32)>,
}

impl Arm {
    /// The arm's share of traffic in basis points (buckets).
    pub fn basis_points(&self) -> u32 {
        self.ranges.iter().map(|(s, e)| e.saturating_sub(*s)).sum()
    }

    /// Whether `bucket` falls in one of the arm's ranges.
    pub fn contains(&self, bucket: u32) -> bool {
        self.ranges.iter().any(|(s, e)| *s <= bucket && bucket < *e)
    }
}

/// A version that receives copies of a sampled fraction of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowTarget {
    /// The shadowed version.
    pub version: u64,
    /// Basis points of 10_000 requests that are copied to it.
    pub fraction_bp: u32,
}

/// An arm's share, as shown to operators and written into audit events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmWeight {
    /// The arm's name.
    pub name: String,
    /// The arm's version.
    pub version: u64,
    /// The arm's role.
    pub role: Role,
    /// Its share in basis points of 10_000.
    pub basis_points: u32,
}

/// Why a routing table is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoutingError {
    /// A table needs somewhere to send traffic.
    #[error("routing table has no arms; expected at least one")]
    NoArms,
    /// A range is empty, reversed or reaches past the bucket space.
    #[error("arm '{arm}' has range [{start}, {end}); expected 0 <= start < end <= 10000")]
    RangeOutOfBounds {
        /// The arm's name.
        arm: String,
        /// Range start.
        start: u32,
        /// Range end.
        end: u32,
    },
    /// Two ranges claim the same bucket.
    #[error(
        "bucket {bucket} is covered by arm '{first}' and arm '{second}'; expected exactly one arm per bucket"
    )]
    Overlap {
        /// The first doubly-covered bucket.
        bucket: u32,
        /// One arm covering it.
        first: String,
        /// The other arm covering it.
        second: String,
    },
    /// Some bucket would have nowhere to go.
    #[error("bucket {bucket} is covered by no arm; expected every bucket in [0, 10000) covered")]
    Gap {
        /// The first uncovered bucket.
        bucket: u32,
    },
    /// Arm names identify arms in replies and audit events.
    #[error("arm name '{name}' is used twice; expected unique arm names")]
    DuplicateArmName {
        /// The repeated name.
        name: String,
    },
    /// A shadow cannot take more than every request.
    #[error("shadow of version {version} samples {fraction_bp} basis points; expected 0 to 10000")]
    ShadowFraction {
        /// The shadowed version.
        version: u64,
        /// The offending fraction.
        fraction_bp: u32,
    },
    /// Weighted layouts need some weight to divide.
    #[error("arm weights sum to 0; expected at least one positive weight")]
    ZeroTotalWeight,
}

/// The live mapping from buckets to arms for one model, plus its shadows.
///
/// Always valid: every constructor and deserialisation checks that each
/// bucket in `[0, BUCKETS)` belongs to exactly one arm, so [`Self::route`]
/// cannot fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRoutingTable")]
pub struct RoutingTable {
    salt: u64,
    arms: Vec<Arm>,
    shadows: Vec<ShadowTarget>,
}

/// The unchecked wire form of a [`RoutingTable`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutingTable {
    salt: u64,
    arms: Vec<Arm>,
    #[serde(default)]
    shadows: Vec<ShadowTarget>,
}

impl TryFrom<RawRoutingTable> for RoutingTable {
    type Error = RoutingError;

    fn try_from(raw: RawRoutingTable) -> Result<Self, Self::Error> {
        RoutingTable::new(raw.salt, raw.arms, raw.shadows)
    }
}

impl RoutingTable {
    /// A table from explicit arms, checked by [`Self::validate`].
    pub fn new(salt: u64, arms: Vec<Arm>, shadows: Vec<ShadowTarget>) -> Result<Self, RoutingError> {
        let table = RoutingTable { salt, arms, shadows };
        table.validate()?;
        Ok(table)
    }

    /// Every bucket to one version, the champion.
    pub fn champion_only(version: u64, salt: u64) -> Self {
        RoutingTable {
            salt,
            arms: vec![arm(version, Role::Champion, "champion", 0, BUCKETS)],
            shadows: Vec::new(),
        }
    }

    /// A canary owning `[0, candidate_bp)`, the champion the rest. Values
    /// above [`BUCKETS`] are clamped.
    pub fn canary(salt: u64, champion: u64, candidate: u64, candidate_bp: u32) -> Self {
        let cut = candidate_bp.min(BUCKETS);
        RoutingTable {
            salt,
            arms: vec![
                arm(candidate, Role::Canary, "canary", 0, cut),
                arm(champion, Role::Champion, "champion", cut, BUCKETS),
            ],
            shadows: Vec::new(),
        }
    }

    /// Blue/green: everything to blue until `switched`, then everything to
    /// green. Both arms stay listed so the idle one shows at 0%.
    pub fn blue_green(salt: u64, blue: u64, green: u64, switched: bool) -> Self {
        let cut = if switched { BUCKETS } else { 0 };
        RoutingTable {
            salt,
            arms: vec![arm(green, Role::Green, "green", 0, cut), arm(blue, Role::Blue, "blue", cut, BUCKETS)],
            shadows: Vec::new(),
        }
    }

    /// Champion-challenger: `fraction_bp` split evenly between the
    /// challengers in contiguous sub-ranges of `[0, fraction_bp)`, in the
    /// given order (the first `fraction_bp % n` challengers get one extra
    /// bucket); the champion owns the rest.
    pub fn champion_challenger(salt: u64, champion: u64, challengers: &[u64], fraction_bp: u32) -> Self {
        let total = fraction_bp.min(BUCKETS);
        let Ok(n) = u32::try_from(challengers.len()) else {
            return Self::champion_only(champion, salt);
        };
        if n == 0 {
            return Self::champion_only(champion, salt);
        }
        let (base, extra) = (total / n, total % n);
        let mut arms = Vec::with_capacity(challengers.len() + 1);
        let mut start = 0;
        for (i, version) in (0..n).zip(challengers) {
            let size = base + u32::from(i < extra);
            let name = format!("challenger-{version}");
            arms.push(arm(*version, Role::Challenger, &name, start, start + size));
            start += size;
        }
        arms.push(arm(champion, Role::Champion, "champion", total, BUCKETS));
        RoutingTable { salt, arms, shadows: Vec::new() }
    }

    /// Arms in declared order on contiguous ranges sized by weight, rounded
    /// with the largest-remainder method so the sizes sum to exactly
    /// [`BUCKETS`] (ties go to the earlier arm). Each entry is
    /// `(name, version, role, weight)`.
    pub fn weighted(salt: u64, arms: &[(String, u64, Role, u32)]) -> Result<Self, RoutingError> {
        let weights: Vec<u32> = arms.iter().map(|a| a.3).collect();
        let sizes = split_by_weight(&weights).ok_or(RoutingError::ZeroTotalWeight)?;
        let mut start = 0;
        let arms = arms
            .iter()
            .zip(sizes)
            .map(|((name, version, role, _), size)| {
                let a = arm(*version, *role, name, start, start + size);
                start += size;
                a
            })
            .collect();
        RoutingTable::new(salt, arms, Vec::new())
    }

    /// The same table with `shadows` attached; fractions above [`BUCKETS`]
    /// are clamped to every request.
    pub fn with_shadows(mut self, shadows: Vec<ShadowTarget>) -> Self {
        self.shadows = shadows
            .into_iter()
            .map(|s| ShadowTarget { version: s.version, fraction_bp: s.fraction_bp.min(BUCKETS) })
            .collect();
        self
    }

    /// Checks that every bucket belongs to exactly one arm, names are unique
    /// and shadow fractions are in range.
    pub fn validate(&self) -> Result<(), RoutingError> {
        if self.arms.is_empty() {
            return Err(RoutingError::NoArms);
        }
        let mut names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(RoutingError::DuplicateArmName { name: w[0].to_owned() });
        }
        let mut ranges = Vec::new();
        for a in &self.arms {
            for &(start, end) in &a.ranges {
                if start >= end || end > BUCKETS {
                    return Err(RoutingError::RangeOutOfBounds { arm: a.name.clone(), start, end });
                }
                ranges.push((start, end, a.name.as_str()));
            }
        }
        ranges.sort_unstable();
        let mut next = 0;
        let mut previous = "";
        for (start, end, name) in ranges {
            if start < next {
                return Err(RoutingError::Overlap {
                    bucket: start,
                    first: previous.to_owned(),
                    second: name.to_owned(),
                });
            }
            if start > next {
                return Err(RoutingError::Gap { bucket: next });
            }
            next = end;
            previous = name;
        }
        if next < BUCKETS {
            return Err(RoutingError::Gap { bucket: next });
        }
        if let Some(s) = self.shadows.iter().find(|s| s.fraction_bp > BUCKETS) {
            return Err(RoutingError::ShadowFraction { version: s.version, fraction_bp: s.fraction_bp });
        }
        Ok(())
    }

    /// The arm owning `bucket` (taken modulo [`BUCKETS`]).
    pub fn route(&self, bucket: u32) -> &Arm {
        let b = bucket % BUCKETS;
        self.arms
            .iter()
            .find(|a| a.contains(b))
            // Unreachable for a validated table (every constructor validates
            // or builds full coverage); the champion-side fallback keeps the
            // hot path panic-free regardless.
            .unwrap_or_else(|| &self.arms[self.arms.len() - 1])
    }

    /// The arm for a routing key: `route(bucket(salt, key))`.
    pub fn route_key(&self, key: &[u8]) -> &Arm {
        self.route(bucket(self.salt, key))
    }

    /// The versions that get a shadow copy of the request with `request_key`.
    pub fn shadows_for<'a>(&'a self, request_key: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
        self.shadows
            .iter()
            .filter(move |s| shadow_sampled(self.salt, request_key, s.fraction_bp))
            .map(|s| s.version)
    }

    /// Each arm's share, in table order.
    pub fn weights(&self) -> Vec<ArmWeight> {
        self.arms
            .iter()
            .map(|a| ArmWeight {
                name: a.name.clone(),
                version: a.version,
                role: a.role,
                basis_points: a.basis_points(),
            })
            .collect()
    }

    /// The hash salt keys are bucketed with.
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The arms, in table order.
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// The shadow targets.
    pub fn shadows(&self) -> &[ShadowTarget] {
        &self.shadows
    }

    /// Distinct versions that take live traffic (weight above 0) or shadow
    /// copies, ascending.
    pub fn versions(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .arms
            .iter()
            .filter(|a| a.basis_points() > 0)
            .map(|a| a.version)
            .chain(self.shadows.iter().map(|s| s.version))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Sizes summing to exactly [`BUCKETS`], proportional to `weights` by the
/// largest-remainder method; `None` when the weights sum to 0.
pub fn split_by_weight(weights: &[u32]) -> Option<Vec<u32>> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let scaled: Vec<u64> = weights.iter().map(|w| u64::from(*w) * u64::from(BUCKETS)).collect();
    let mut sizes: Vec<u64> = scaled.iter().map(|s| s / total).collect();
    let assigned: u64 = sizes.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest remainder first; the stable sort keeps declared order on ties.
    order.sort_by_key(|&i| std::cmp::Reverse(scaled[i] % total));
    for &i in order.iter().take((u64::from(BUCKETS) - assigned) as usize) {
        sizes[i] += 1;
    }
    // Each size is at most BUCKETS, so it fits in u32.
    Some(sizes.into_iter().map(|s| s as u32).collect())
}

fn arm(version: u64, role: Role, name: &str, start: u32, end: u32) -> Arm {
    Arm {
        version,
        role,
        name: name.to_owned(),
        ranges: if start < end { vec![(start, end)] } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests;
